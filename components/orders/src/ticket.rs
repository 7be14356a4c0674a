//! The orders service's copy of each ticket, kept from the tickets service's events, in the
//! `orders` store:
//!
//! - `ticket:<id>` → `{id, title, price, version}`, the ticket as an order shows it
//!
//! `ticket.created` inserts the copy (a redelivery finds it there and changes nothing);
//! `ticket.updated` applies to it by the versioned-apply rule.

use serde::{Deserialize, Serialize};
use ticketing_common::{
    events::{TicketCreated, TicketUpdated},
    ids::is_valid_id,
    listener::{apply_in_order, ListenerError, Versioned},
    store::Store,
    ApiError,
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

/// The ticket copies in the service's store.
pub struct Tickets<'a> {
    store: &'a Store,
}

impl<'a> Tickets<'a> {
    pub fn new(store: &'a Store) -> Self {
        Self { store }
    }

    /// The copy of a ticket; an id not in the id format names no ticket.
    pub fn find(&self, id: &str) -> Result<Option<TicketCopy>, ApiError> {
        if !is_valid_id(id) {
            return Ok(None);
        }
        self.store.get(&ticket_key(id))
    }

    /// Stores the copy of a new ticket unless there is one already.
    pub fn insert(&self, ticket: &TicketCopy) -> Result<(), ApiError> {
        self.store.insert_new(&ticket_key(&ticket.id), ticket)?;
        Ok(())
    }

    /// Applies a `ticket.updated` to the copy, in version order.
    pub fn apply_update(&self, event: &TicketUpdated) -> Result<(), ListenerError> {
        apply_in_order(
            self.store,
            &ticket_key(&event.id),
            event.version,
            |copy: &TicketCopy| copy.updated_by(event),
        )?;
        Ok(())
    }
}

fn ticket_key(id: &str) -> String {
    format!("ticket:{id}")
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
