//! The ticket model and its keys in the `tickets` store:
//!
//! - `ticket:<id>` → the ticket JSON as the API shows it, plus `position`: where the ticket
//!   is in the catalogue (see `listing`)
//! - `ticket-ids:count`, `ticket-ids:<n>` → the ids of all tickets, oldest first: the
//!   append-only index that numbers the catalogue's positions (see `Store::append_to_index`)
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
/// The index numbering the tickets in creation order (their catalogue positions).
pub const INDEX_KEY: &str = "ticket-ids";

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

/// A ticket as stored: the API's JSON plus its position in the catalogue (absent in tickets
/// stored before the catalogue had positions in its records; the listing's sweep adds it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredTicket {
    #[serde(flatten)]
    pub ticket: Ticket,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<i64>,
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

    pub fn store(&self) -> &Store {
        &self.store
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
        // The index first: it gives the ticket its position. A record written (and
        // announced) is always listed; a position without a record (the write failed) is
        // skipped by the listing. The record carries its `ticket.created` (the outbox).
        let position = self.store.append_to_index(INDEX_KEY, &ticket.id)?;
        let created = events::outgoing(&ticket.created_event())?;
        let stored = StoredTicket {
            ticket,
            position: Some(position),
        };
        self.store
            .put_announcing(&ticket_key(&stored.ticket.id), &stored, vec![created])?;
        Ok(stored.ticket)
    }

    /// The ticket with this id; an id not in the id format names no ticket.
    pub fn find(&self, id: &str) -> Result<Option<Ticket>, ApiError> {
        Ok(self.find_stored(id)?.map(|stored| stored.ticket))
    }

    /// The ticket with this id as stored, with its position.
    pub fn find_stored(&self, id: &str) -> Result<Option<StoredTicket>, ApiError> {
        if !is_valid_id(id) {
            return Ok(None);
        }
        self.store.get(&ticket_key(id))
    }

    /// Changes a ticket with the store's versioned update (see `Store::update`), recording
    /// its `ticket.updated` with the write; an unknown or malformed id is
    /// `ApiError::NotFound`.
    pub fn update(
        &self,
        id: &str,
        mut change: impl FnMut(Ticket) -> Result<Ticket, ApiError>,
    ) -> Result<Ticket, ApiError> {
        if !is_valid_id(id) {
            return Err(ApiError::NotFound);
        }
        let stored = self.store.update_announcing(
            &ticket_key(id),
            |stored: StoredTicket| {
                Ok(StoredTicket {
                    ticket: change(stored.ticket)?,
                    position: stored.position,
                })
            },
            updated_event,
        )?;
        Ok(stored.ticket)
    }

    /// Changes a ticket only where `change` says so (see `Store::update_if`), recording its
    /// `ticket.updated` with the write. Returns the ticket as now stored, with its position.
    pub fn update_if(
        &self,
        id: &str,
        mut change: impl FnMut(&Ticket) -> Result<Option<Ticket>, ApiError>,
    ) -> Result<Updated<StoredTicket>, ApiError> {
        if !is_valid_id(id) {
            return Err(ApiError::NotFound);
        }
        self.store.update_if_announcing(
            &ticket_key(id),
            |stored: &StoredTicket| {
                Ok(change(&stored.ticket)?.map(|ticket| StoredTicket {
                    ticket,
                    position: stored.position,
                }))
            },
            updated_event,
        )
    }

    /// Records a ticket's position (for tickets stored before records had it); the
    /// ticket's version and event stay as they are.
    pub fn set_position(&self, id: &str, position: i64) -> Result<StoredTicket, ApiError> {
        let updated = self
            .store
            .update_if(&ticket_key(id), |stored: &StoredTicket| {
                Ok((stored.position.is_none()).then(|| StoredTicket {
                    position: Some(position),
                    ..stored.clone()
                }))
            })?;
        Ok(updated.value)
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
fn updated_event(stored: &StoredTicket) -> Result<Vec<Outgoing>, ApiError> {
    Ok(vec![events::outgoing(&stored.ticket.updated_event())?])
}

fn cancelled_order_key(order_id: &str) -> String {
    format!("cancelled-order:{order_id}")
}

pub fn ticket_key(id: &str) -> String {
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
