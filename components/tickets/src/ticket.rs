//! The ticket model and its keys in the `tickets` store:
//!
//! - `ticket:<id>` → the ticket JSON, exactly as the API shows it
//! - `ticket-ids:count`, `ticket-ids:<n>` → the ids of all tickets, oldest first (the
//!   append-only index for listing, see `Store::append_to_index`)
//! - `cancelled-order:<orderId>` → the id of the order's ticket: orders known to be
//!   cancelled, so that an `order.created` delivered after its `order.cancelled` does not
//!   reserve the ticket again

use serde::{Deserialize, Serialize};
use ticketing_common::{
    events::{self, Outgoing, TicketCreated, TicketUpdated},
    ids::{is_valid_id, new_id},
    store::{Store, Updated},
    ApiError,
};

pub const STORE_LABEL: &str = "tickets";
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

impl Ticket {
    /// The `ticket.created` event of a new ticket.
    pub fn created_event(&self) -> TicketCreated {
        TicketCreated {
            id: self.id.clone(),
            version: self.version,
            title: self.title.clone(),
            price: self.price,
            user_id: self.user_id.clone(),
        }
    }

    /// The `ticket.updated` event of the ticket as it is now.
    pub fn updated_event(&self) -> TicketUpdated {
        TicketUpdated {
            id: self.id.clone(),
            version: self.version,
            title: self.title.clone(),
            price: self.price,
            user_id: self.user_id.clone(),
            order_id: self.order_id.clone(),
        }
    }

    /// The ticket reserved by `order_id`, one version later; `None` when that order already
    /// reserves it (a redelivered `order.created`).
    pub fn reserved_by(&self, order_id: &str) -> Option<Ticket> {
        (self.order_id.as_deref() != Some(order_id)).then(|| Ticket {
            order_id: Some(order_id.to_owned()),
            version: self.version + 1,
            ..self.clone()
        })
    }

    /// The ticket released by `order_id`, one version later; `None` unless that very order
    /// reserves it (a later order's reservation stands).
    pub fn released_by(&self, order_id: &str) -> Option<Ticket> {
        (self.order_id.as_deref() == Some(order_id)).then(|| Ticket {
            order_id: None,
            version: self.version + 1,
            ..self.clone()
        })
    }
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
        // The index first: a record written (and announced) is always listed; an id
        // listed without a record (the write failed) is skipped by the listing. The record
        // carries its `ticket.created` (the outbox).
        self.store.append_to_index(INDEX_KEY, &ticket.id)?;
        let created = events::outgoing(&ticket.created_event())?;
        self.store
            .put_announcing(&ticket_key(&ticket.id), &ticket, vec![created])?;
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
        let keys: Vec<String> = self
            .store
            .read_index(INDEX_KEY)?
            .iter()
            .map(|id| ticket_key(id))
            .collect();
        Ok(self.store.get_many(&keys)?.into_iter().flatten().collect())
    }

    /// Changes a ticket with the store's versioned update (see `Store::update`), recording
    /// its `ticket.updated` with the write; an unknown or malformed id is
    /// `ApiError::NotFound`.
    pub fn update(
        &self,
        id: &str,
        change: impl FnMut(Ticket) -> Result<Ticket, ApiError>,
    ) -> Result<Ticket, ApiError> {
        if !is_valid_id(id) {
            return Err(ApiError::NotFound);
        }
        self.store
            .update_announcing(&ticket_key(id), change, updated_event)
    }

    /// Changes a ticket only where `change` says so (see `Store::update_if`), recording its
    /// `ticket.updated` with the write.
    pub fn update_if(
        &self,
        id: &str,
        change: impl FnMut(&Ticket) -> Result<Option<Ticket>, ApiError>,
    ) -> Result<Updated<Ticket>, ApiError> {
        if !is_valid_id(id) {
            return Err(ApiError::NotFound);
        }
        self.store
            .update_if_announcing(&ticket_key(id), change, updated_event)
    }

    /// Remembers that an order (of this ticket) is cancelled.
    pub fn mark_order_cancelled(&self, order_id: &str, ticket_id: &str) -> Result<(), ApiError> {
        self.store.put(&cancelled_order_key(order_id), &ticket_id)
    }

    pub fn is_order_cancelled(&self, order_id: &str) -> Result<bool, ApiError> {
        Ok(self
            .store
            .get::<String>(&cancelled_order_key(order_id))?
            .is_some())
    }
}

/// Every change of a ticket is announced as `ticket.updated`.
fn updated_event(ticket: &Ticket) -> Result<Vec<Outgoing>, ApiError> {
    Ok(vec![events::outgoing(&ticket.updated_event())?])
}

fn cancelled_order_key(order_id: &str) -> String {
    format!("cancelled-order:{order_id}")
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
    fn an_order_reserves_a_ticket_once() {
        let reserved = ticket(None)
            .reserved_by("6500000000000000000000aa")
            .unwrap();
        assert_eq!(
            reserved.order_id.as_deref(),
            Some("6500000000000000000000aa")
        );
        assert_eq!(reserved.version, 4);
        assert_eq!(reserved.reserved_by("6500000000000000000000aa"), None);
        // A newer order takes over a reservation whose cancellation has not arrived yet.
        let taken_over = reserved.reserved_by("6500000000000000000000bb").unwrap();
        assert_eq!(
            taken_over.order_id.as_deref(),
            Some("6500000000000000000000bb")
        );
        assert_eq!(taken_over.version, 5);
    }

    #[test]
    fn only_the_reserving_order_releases_a_ticket() {
        let reserved = ticket(Some("6500000000000000000000aa"));
        assert_eq!(reserved.released_by("6500000000000000000000bb"), None);
        let released = reserved.released_by("6500000000000000000000aa").unwrap();
        assert_eq!((released.order_id, released.version), (None, 4));
        assert_eq!(ticket(None).released_by("6500000000000000000000aa"), None);
    }

    #[test]
    fn events_carry_the_ticket_as_it_is() {
        let reserved = ticket(Some("6500000000000000000000aa"));
        assert_eq!(
            serde_json::to_value(reserved.updated_event()).unwrap(),
            serde_json::to_value(&reserved).unwrap(),
            "ticket.updated has the ticket's own fields"
        );
        let created = serde_json::to_value(ticket(None).created_event()).unwrap();
        assert_eq!(created, serde_json::to_value(ticket(None)).unwrap());
    }

    #[test]
    fn stored_tickets_read_back_with_or_without_order_id() {
        for original in [ticket(None), ticket(Some("6500000000000000000000aa"))] {
            let bytes = serde_json::to_vec(&original).unwrap();
            assert_eq!(serde_json::from_slice::<Ticket>(&bytes).unwrap(), original);
        }
    }
}
