//! The payments service's copy of each order, kept from the orders service's events, in the
//! `payments` store:
//!
//! - `order:<id>` → `{id, version, userId, price, status, expiresAt}`
//!
//! `order.created` inserts the copy (a redelivery finds it and changes nothing);
//! `order.cancelled` applies to it by the versioned-apply rule.

use serde::{Deserialize, Serialize};
use ticketing_common::{
    clock,
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
    /// RFC 3339; absent in copies made before copies kept it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
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
            expires_at: Some(event.expires_at),
        }
    }
}

impl OrderCopy {
    /// Whether the order's status allows paying it: a cancelled order cannot be paid
    /// (whether it is paid already is the payment claim's business).
    pub fn is_payable(&self) -> bool {
        self.status != OrderStatus::Cancelled
    }

    /// Whether the order's time is up at `now_ms`: from `expiresAt` on, no payment is taken.
    pub fn has_expired(&self, now_ms: i64) -> bool {
        self.expires_at
            .as_deref()
            .and_then(clock::rfc3339_ms)
            .is_some_and(|expires| now_ms >= expires)
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
                   "userId": "64f0c0de0123456789abcdef", "price": 20.1, "status": "created",
                   "expiresAt": "2026-11-25T12:15:00.000Z"})
        );
    }

    #[test]
    fn an_order_is_expired_from_its_expiry_time_on() {
        let copy = OrderCopy::from(created());
        // 2026-11-25T12:15:00Z
        let expiry = 1_795_608_900_000;
        assert!(!copy.has_expired(expiry - 1));
        assert!(copy.has_expired(expiry));
        let old = OrderCopy {
            expires_at: None,
            ..copy
        };
        assert!(
            !old.has_expired(i64::MAX),
            "a copy without the time is never refused for it"
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
