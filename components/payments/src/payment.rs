//! Payments and their keys in the `payments` store:
//!
//! - `payment:<id>` → `{id, orderId, stripeId}`
//! - `payment-for:<orderId>` → `null` while the order's charge is under way, then the id of
//!   its payment. Created with `insert_new` before charging, so of concurrent payments for
//!   one order exactly one charges; withdrawn (value and claim) if the charge fails.

use serde::{Deserialize, Serialize};
use ticketing_common::{
    events::{self, PaymentCreated},
    store::Store,
    ApiError,
};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Payment {
    pub id: String,
    pub order_id: String,
    pub stripe_id: String,
}

impl Payment {
    pub fn created_event(&self) -> PaymentCreated {
        PaymentCreated {
            id: self.id.clone(),
            order_id: self.order_id.clone(),
            stripe_id: self.stripe_id.clone(),
        }
    }
}

/// The payments in the service's store.
pub struct Payments<'a> {
    store: &'a Store,
}

impl<'a> Payments<'a> {
    pub fn new(store: &'a Store) -> Self {
        Self { store }
    }

    /// Claims the right to charge an order: `false` if it is paid or being paid.
    pub fn claim(&self, order_id: &str) -> Result<bool, ApiError> {
        self.store
            .insert_new(&payment_for_key(order_id), &None::<String>)
    }

    /// Gives up a claim whose charge failed, so the order can be paid again.
    pub fn release_claim(&self, order_id: &str) -> Result<(), ApiError> {
        self.store.withdraw(&payment_for_key(order_id))
    }

    /// Stores a payment and makes it the order's.
    pub fn record(&self, payment: &Payment) -> Result<(), ApiError> {
        let created = events::outgoing(&payment.created_event())?;
        self.store
            .put_announcing(&payment_key(&payment.id), payment, vec![created])?;
        self.store
            .put(&payment_for_key(&payment.order_id), &Some(&payment.id))
    }
}

fn payment_key(id: &str) -> String {
    format!("payment:{id}")
}

fn payment_for_key(order_id: &str) -> String {
    format!("payment-for:{order_id}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn payments_and_their_event_use_the_contract_field_names() {
        let payment = Payment {
            id: "66000000000000000000000b".into(),
            order_id: "6500000000000000000000aa".into(),
            stripe_id: "ch_123".into(),
        };
        let expected = json!({"id": "66000000000000000000000b",
                              "orderId": "6500000000000000000000aa", "stripeId": "ch_123"});
        assert_eq!(serde_json::to_value(&payment).unwrap(), expected);
        assert_eq!(
            serde_json::to_value(payment.created_event()).unwrap(),
            expected
        );
    }
}
