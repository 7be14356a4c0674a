//! The orders service's copy of each ticket, kept from the tickets service's events, in the
//! `orders` store:
//!
//! - `ticket:<id>` → `{id, title, price, version}`, the ticket as an order shows it
//!
//! `ticket.created` inserts the copy (a redelivery finds it there and changes nothing);
//! `ticket.updated` applies to it by the versioned-apply rule.

use serde::{Deserialize, Serialize};
use ticketing_common::{
    copies::{Copies, Versioned},
    events::{TicketCreated, TicketUpdated},
    store::Store,
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TicketCopy {
    pub id: String,
    pub title: String,
    #[serde(serialize_with = "ticketing_common::price::serialize")]
    pub price: f64,
    pub version: u64,
}

impl Versioned for TicketCopy {
    fn version(&self) -> u64 {
        self.version
    }

    fn set_version(&mut self, version: u64) {
        self.version = version;
    }
}

impl From<TicketCreated> for TicketCopy {
    fn from(event: TicketCreated) -> Self {
        Self {
            id: event.id,
            title: event.title,
            price: event.price,
            version: event.version,
        }
    }
}

impl TicketCopy {
    /// The copy with an update's fields (the version is the caller's business).
    pub fn updated_by(&self, event: &TicketUpdated) -> TicketCopy {
        TicketCopy {
            title: event.title.clone(),
            price: event.price,
            ..self.clone()
        }
    }
}

/// The ticket copies in the service's store, under `ticket:<id>`.
pub fn copies(store: &Store) -> Copies<'_, TicketCopy> {
    Copies::new(store, "ticket")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_copy_takes_what_an_order_shows_of_the_ticket() {
        let created = TicketCreated {
            id: "507f1f77bcf86cd799439011".into(),
            version: 0,
            title: "Opera".into(),
            price: 20.1,
            user_id: "64f0c0de0123456789abcdef".into(),
        };
        let copy = TicketCopy::from(created);
        assert_eq!(
            serde_json::to_value(&copy).unwrap(),
            json!({"id": "507f1f77bcf86cd799439011", "title": "Opera", "price": 20.1, "version": 0})
        );

        let update = TicketUpdated {
            id: copy.id.clone(),
            version: 1,
            title: "Opera, second night".into(),
            price: 25.0,
            user_id: "64f0c0de0123456789abcdef".into(),
            order_id: None,
        };
        let updated = copy.updated_by(&update);
        assert_eq!(
            (updated.title.as_str(), updated.price),
            ("Opera, second night", 25.0)
        );
        assert_eq!(updated.version, 0, "the versioned apply sets the version");
    }
}
