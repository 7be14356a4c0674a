//! The ticket model and its keys in the `tickets` store:
//!
//! - `ticket:<id>` → the ticket JSON, exactly as the API shows it
//! - `ticket-ids` → the ids of all tickets, oldest first (append-only index for listing)

use serde::{Deserialize, Serialize};
use ticketing_common::{
    ids::{is_valid_id, new_id},
    store::Store,
    ApiError,
};

const STORE_LABEL: &str = "tickets";
const INDEX_KEY: &str = "ticket-ids";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ticket {
    pub id: String,
    pub title: String,
    #[serde(serialize_with = "ticketing_common::price::serialize")]
    pub price: f64,
    pub user_id: String,
    /// Starts at 0 and goes up by one with every change; event consumers apply changes in
    /// this order.
    pub version: u64,
    /// The order that reserves the ticket; absent while the ticket is for sale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
}

/// The tickets in the store.
pub struct Tickets {
    store: Store,
}

impl Tickets {
    pub fn open() -> Result<Self, ApiError> {
        Ok(Self {
            store: Store::open(STORE_LABEL)?,
        })
    }

    pub fn create(&self, title: String, price: f64, user_id: String) -> Result<Ticket, ApiError> {
        let ticket = Ticket {
            id: new_id()?,
            title,
            price,
            user_id,
            version: 0,
            order_id: None,
        };
        // The record first, then the index: a listed id always has its record.
        self.store.put(&ticket_key(&ticket.id), &ticket)?;
        self.store.append_to_index(INDEX_KEY, &ticket.id)?;
        Ok(ticket)
    }

    /// The ticket with this id; an id not in the id format names no ticket.
    pub fn find(&self, id: &str) -> Result<Option<Ticket>, ApiError> {
        if !is_valid_id(id) {
            return Ok(None);
        }
        self.store.get(&ticket_key(id))
    }

    /// All tickets, oldest first.
    pub fn all(&self) -> Result<Vec<Ticket>, ApiError> {
        let mut tickets = Vec::new();
        for id in self.store.read_index(INDEX_KEY)? {
            if let Some(ticket) = self.store.get(&ticket_key(&id))? {
                tickets.push(ticket);
            }
        }
        Ok(tickets)
    }

    /// Changes a ticket with the store's versioned update (see `Store::update`); an unknown
    /// or malformed id is `ApiError::NotFound`.
    pub fn update(
        &self,
        id: &str,
        change: impl FnMut(Ticket) -> Result<Ticket, ApiError>,
    ) -> Result<Ticket, ApiError> {
        if !is_valid_id(id) {
            return Err(ApiError::NotFound);
        }
        self.store.update(&ticket_key(id), change)
    }
}

fn ticket_key(id: &str) -> String {
    format!("ticket:{id}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ticket(order_id: Option<&str>) -> Ticket {
        Ticket {
            id: "507f1f77bcf86cd799439011".into(),
            title: "concert".into(),
            price: 20.5,
            user_id: "64f0c0de0123456789abcdef".into(),
            version: 3,
            order_id: order_id.map(str::to_owned),
        }
    }

    #[test]
    fn ticket_json_has_the_contract_fields_and_omits_a_missing_order_id() {
        assert_eq!(
            serde_json::to_value(ticket(None)).unwrap(),
            json!({
                "id": "507f1f77bcf86cd799439011",
                "title": "concert",
                "price": 20.5,
                "userId": "64f0c0de0123456789abcdef",
                "version": 3
            })
        );
        assert_eq!(
            serde_json::to_value(ticket(Some("6500000000000000000000aa"))).unwrap()["orderId"],
            "6500000000000000000000aa"
        );
    }

    #[test]
    fn stored_tickets_read_back_with_or_without_order_id() {
        for original in [ticket(None), ticket(Some("6500000000000000000000aa"))] {
            let bytes = serde_json::to_vec(&original).unwrap();
            assert_eq!(serde_json::from_slice::<Ticket>(&bytes).unwrap(), original);
        }
    }
}
