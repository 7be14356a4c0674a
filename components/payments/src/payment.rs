//! Payments and their keys in the `payments` store:
//!
//! - `payment:<id>` → `{id, orderId, stripeId, refundId?}`
//! - `payment-for:<orderId>` → who has the order (see [`Claim`]): a charge under way, the
//!   order's payment, or the order closed to payment (expired, or cancelled by its user).
//!   Created with `insert_new`, so of concurrent payments, and of a payment and the order's
//!   expiry, exactly one gets the order first; a failed charge withdraws its claim.

use serde::{Deserialize, Serialize};
use ticketing_common::{
    clock::now_ms,
    events::{self, Outgoing, PaymentCreated, PaymentRefunded},
    store::Store,
    ApiError,
};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Payment {
    pub id: String,
    pub order_id: String,
    pub stripe_id: String,
    /// Set once the payment was refunded (its order was cancelled meanwhile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_id: Option<String>,
}

impl Payment {
    pub fn created_event(&self) -> PaymentCreated {
        PaymentCreated {
            id: self.id.clone(),
            order_id: self.order_id.clone(),
            stripe_id: self.stripe_id.clone(),
        }
    }

    pub fn refunded_event(&self, refund_id: &str) -> PaymentRefunded {
        PaymentRefunded {
            id: self.id.clone(),
            order_id: self.order_id.clone(),
            stripe_id: self.stripe_id.clone(),
            refund_id: refund_id.to_owned(),
        }
    }
}

/// Why an order can no longer be paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Closure {
    Expired,
    Cancelled,
}

/// Who has an order, as `payment-for:<orderId>` says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Claim {
    /// Paid: the payment's id.
    Paid(String),
    /// Closed to payment.
    Closed { closed: Closure },
    /// A charge is under way since `since` (unix ms), with this card token: a charge whose
    /// payer died can be asked for again with the same idempotency key (see `recovery`).
    Charging { since: i64, token: String },
    /// A charge under way, as stored before charges recorded when and how.
    ChargingUnknown,
}

/// A charge under way for longer than this was left by a payer that died: a request
/// never runs that long.
pub const STALE_CHARGE_MS: i64 = 60_000;

impl Claim {
    /// A charge under way whose payer is surely gone.
    pub fn stale_charge(&self, now_ms: i64) -> Option<&str> {
        match self {
            Self::Charging { since, token } if now_ms - since > STALE_CHARGE_MS => Some(token),
            _ => None,
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

    pub fn store(&self) -> &Store {
        self.store
    }

    /// Takes the order for a charge with card `token`: `Ok(None)` if this call has it,
    /// else who has it (a claim whose value is not written yet is a charge under way).
    pub fn claim(&self, order_id: &str, token: &str) -> Result<Option<Claim>, ApiError> {
        let charging = Claim::Charging {
            since: now_ms()?,
            token: token.to_owned(),
        };
        if self
            .store
            .insert_new(&payment_for_key(order_id), &charging)?
        {
            return Ok(None);
        }
        Ok(Some(self.holder(order_id)?))
    }

    /// Closes the order to payment (`closure`), recording `events` with the write, unless
    /// someone has it already: `Ok(None)` if this call closed it, else who has it.
    pub fn close(
        &self,
        order_id: &str,
        closure: Closure,
        events: Vec<Outgoing>,
    ) -> Result<Option<Claim>, ApiError> {
        let closed = Claim::Closed { closed: closure };
        if self
            .store
            .insert_new_announcing(&payment_for_key(order_id), &closed, events)?
        {
            return Ok(None);
        }
        Ok(Some(self.holder(order_id)?))
    }

    /// Who has the order now; a claim not written yet reads as a charge under way.
    pub fn holder(&self, order_id: &str) -> Result<Claim, ApiError> {
        Ok(self
            .store
            .get(&payment_for_key(order_id))?
            .unwrap_or(Claim::ChargingUnknown))
    }

    /// Gives up a claim whose charge failed, so the order can be paid (or closed) again.
    pub fn release_claim(&self, order_id: &str) -> Result<(), ApiError> {
        self.store.withdraw(&payment_for_key(order_id))
    }

    /// Stores a payment and makes it the order's.
    pub fn record(&self, payment: &Payment) -> Result<(), ApiError> {
        let created = events::outgoing(&payment.created_event())?;
        self.store
            .put_announcing(&payment_key(&payment.id), payment, vec![created])?;
        self.store.put(
            &payment_for_key(&payment.order_id),
            &Claim::Paid(payment.id.clone()),
        )
    }

    pub fn find(&self, id: &str) -> Result<Option<Payment>, ApiError> {
        self.store.get(&payment_key(id))
    }

    /// Records a payment's refund, with its `payment.refunded`.
    pub fn record_refund(&self, payment: &Payment, refund_id: &str) -> Result<(), ApiError> {
        let refunded = events::outgoing(&payment.refunded_event(refund_id))?;
        self.store.update_if_announcing(
            &payment_key(&payment.id),
            |stored: &Payment| {
                Ok(stored.refund_id.is_none().then(|| Payment {
                    refund_id: Some(refund_id.to_owned()),
                    ..stored.clone()
                }))
            },
            |_| Ok(vec![refunded.clone()]),
        )?;
        Ok(())
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
            refund_id: None,
        };
        let expected = json!({"id": "66000000000000000000000b",
                              "orderId": "6500000000000000000000aa", "stripeId": "ch_123"});
        assert_eq!(serde_json::to_value(&payment).unwrap(), expected);
        assert_eq!(
            serde_json::to_value(payment.created_event()).unwrap(),
            expected
        );
        assert_eq!(
            serde_json::to_value(payment.refunded_event("re_1")).unwrap()["refundId"],
            "re_1"
        );
    }

    #[test]
    fn claims_read_back_including_those_stored_before_closures() {
        for (stored, claim) in [
            (
                json!("66000000000000000000000b"),
                Claim::Paid("66000000000000000000000b".into()),
            ),
            (
                json!({"closed": "expired"}),
                Claim::Closed {
                    closed: Closure::Expired,
                },
            ),
            (
                json!({"closed": "cancelled"}),
                Claim::Closed {
                    closed: Closure::Cancelled,
                },
            ),
            (
                json!({"since": 5, "token": "tok_visa"}),
                Claim::Charging {
                    since: 5,
                    token: "tok_visa".into(),
                },
            ),
            (json!(null), Claim::ChargingUnknown),
        ] {
            assert_eq!(
                serde_json::from_value::<Claim>(stored.clone()).unwrap(),
                claim
            );
            assert_eq!(serde_json::to_value(&claim).unwrap(), stored);
        }
    }

    #[test]
    fn only_an_old_charge_is_stale() {
        let charging = Claim::Charging {
            since: 1_000,
            token: "tok_visa".into(),
        };
        assert_eq!(charging.stale_charge(1_000 + STALE_CHARGE_MS), None);
        assert_eq!(
            charging.stale_charge(1_001 + STALE_CHARGE_MS),
            Some("tok_visa")
        );
        assert_eq!(Claim::ChargingUnknown.stale_charge(i64::MAX), None);
    }
}
