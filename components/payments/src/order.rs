//! The payments service's copy of each order, kept from the orders service's events, in the
//! `payments` store:
//!
//! - `order:<id>` → `{id, version, userId, price, status}`
//!
//! `order.created` inserts the copy (a redelivery finds it and changes nothing);
//! `order.cancelled` applies to it by the versioned-apply rule.

use serde::{Deserialize, Serialize};
use ticketing_common::{
    copies::{Copies, Versioned},
    events::{OrderCreated, OrderStatus},
    store::Store,
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderCopy {
    pub id: String,
    pub version: u64,
    pub user_id: String,
    #[serde(serialize_with = "ticketing_common::price::serialize")]
    pub price: f64,
    pub status: OrderStatus,
}

impl Versioned for OrderCopy {
    fn version(&self) -> u64 {
        self.version
    }

    fn set_version(&mut self, version: u64) {
        self.version = version;
    }
}

impl From<OrderCreated> for OrderCopy {
    fn from(event: OrderCreated) -> Self {
        Self {
            id: event.id,
            version: event.version,
            user_id: event.user_id,
            price: event.ticket.price,
            status: event.status,
        }
    }
}

impl OrderCopy {
    /// Whether the order's status allows paying it: a cancelled order cannot be paid
    /// (whether it is paid already is the payment claim's business).
    pub fn is_payable(&self) -> bool {
        self.status != OrderStatus::Cancelled
    }

    /// The copy cancelled (the version is the caller's business).
    pub fn cancelled(&self) -> OrderCopy {
        OrderCopy {
            status: OrderStatus::Cancelled,
            ..self.clone()
        }
    }
}

/// The order copies in the service's store, under `order:<id>`.
pub fn copies(store: &Store) -> Copies<'_, OrderCopy> {
    Copies::new(store, "order")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use ticketing_common::events::OrderedTicket;

    fn created() -> OrderCreated {
        OrderCreated {
            id: "6500000000000000000000aa".into(),
            version: 0,
            status: OrderStatus::Created,
            user_id: "64f0c0de0123456789abcdef".into(),
            expires_at: "2026-11-25T12:15:00.000Z".into(),
            ticket: OrderedTicket {
                id: "507f1f77bcf86cd799439011".into(),
                price: 20.1,
            },
        }
    }

    #[test]
    fn a_copy_keeps_what_a_payment_needs() {
        assert_eq!(
            serde_json::to_value(OrderCopy::from(created())).unwrap(),
            json!({"id": "6500000000000000000000aa", "version": 0,
                   "userId": "64f0c0de0123456789abcdef", "price": 20.1, "status": "created"})
        );
    }

    #[test]
    fn only_orders_that_are_not_cancelled_are_payable() {
        let copy = OrderCopy::from(created());
        assert!(copy.is_payable());
        let cancelled = copy.cancelled();
        assert!(!cancelled.is_payable());
        assert_eq!(cancelled.version, 0, "the versioned apply sets the version");
    }
}
