//! The order model, its rules and its keys in the `orders` store:
//!
//! - `order:<id>` → the order JSON as the API shows it (with the ticket as it was when the
//!   order was placed); a cancellation writes its `order.cancelled` with it (the outbox)
//! - `user-orders:<userId>:count`, `user-orders:<userId>:<n>` → the ids of the user's
//!   orders, oldest first (the listing index, see `Store::append_to_index`)
//! - `reservation:<ticketId>` → the id of the order holding the ticket, `null` once that
//!   order released it. Created with `insert_new` (a claim, then the write) and taken over
//!   only by compare-and-swap, so of concurrent orders for one ticket exactly one holds it.
//!   The write that wins it records the order's `order.created` (the outbox): an order is
//!   announced exactly when it holds its ticket. Never deleted.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use ticketing_common::{
    events::{self, OrderCancelled, OrderCreated, OrderStatus, OrderedTicket, Outgoing, TicketRef},
    ids::is_valid_id,
    paging,
    store::{Store, Updated},
    ApiError,
};

use crate::ticket::TicketCopy;

/// The label of the service's key-value store.
pub const STORE_LABEL: &str = "orders";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    pub id: String,
    pub user_id: String,
    pub status: OrderStatus,
    /// RFC 3339, UTC.
    pub expires_at: String,
    pub version: u64,
    pub ticket: TicketCopy,
    /// Present (true) once a payment of the order was refunded: the order was cancelled by
    /// its user while the payment went through.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub refunded: bool,
}

/// What cancelling an order comes to.
#[derive(Debug, Clone, PartialEq)]
pub enum Cancellation {
    /// The order as cancelled now, one version later.
    Cancel(Order),
    /// Cancelled before: nothing changes, no new event.
    AlreadyCancelled,
    /// Paid: a complete order is never cancelled.
    Complete,
}

/// What a payment does to an order.
#[derive(Debug, Clone, PartialEq)]
pub enum Completion {
    /// The order as complete now, one version later.
    Complete(Order),
    /// Complete before (a redelivered payment.created).
    AlreadyComplete,
    /// Cancelled before the payment arrived: it stays cancelled.
    Cancelled,
}

impl Order {
    /// A new order for `ticket`: status created, version 0.
    pub fn new(id: String, user_id: String, ticket: TicketCopy, expires_at: String) -> Self {
        Self {
            id,
            user_id,
            status: OrderStatus::Created,
            expires_at,
            version: 0,
            ticket,
            refunded: false,
        }
    }

    /// The order noting that its payment was refunded, one version later.
    pub fn marked_refunded(&self) -> Order {
        Order {
            refunded: true,
            version: self.version + 1,
            ..self.clone()
        }
    }

    /// Whether the order holds its ticket: every order that is not cancelled does (a
    /// complete one for good).
    pub fn holds_ticket(&self) -> bool {
        self.status != OrderStatus::Cancelled
    }

    pub fn cancellation(&self) -> Cancellation {
        match self.status {
            OrderStatus::Cancelled => Cancellation::AlreadyCancelled,
            OrderStatus::Complete => Cancellation::Complete,
            OrderStatus::Created | OrderStatus::AwaitingPayment => {
                Cancellation::Cancel(self.with_status(OrderStatus::Cancelled))
            }
        }
    }

    pub fn completion(&self) -> Completion {
        match self.status {
            OrderStatus::Complete => Completion::AlreadyComplete,
            OrderStatus::Cancelled => Completion::Cancelled,
            OrderStatus::Created | OrderStatus::AwaitingPayment => {
                Completion::Complete(self.with_status(OrderStatus::Complete))
            }
        }
    }

    fn with_status(&self, status: OrderStatus) -> Order {
        Order {
            status,
            version: self.version + 1,
            ..self.clone()
        }
    }

    pub fn created_event(&self) -> OrderCreated {
        OrderCreated {
            id: self.id.clone(),
            version: self.version,
            status: self.status,
            user_id: self.user_id.clone(),
            expires_at: self.expires_at.clone(),
            ticket: OrderedTicket {
                id: self.ticket.id.clone(),
                price: self.ticket.price,
            },
        }
    }

    pub fn cancelled_event(&self) -> OrderCancelled {
        OrderCancelled {
            id: self.id.clone(),
            version: self.version,
            ticket: TicketRef {
                id: self.ticket.id.clone(),
            },
        }
    }
}

/// When an order placed at `now_unix_ms` expires: `window_seconds` later, as RFC 3339 UTC
/// with milliseconds (`2026-11-25T12:00:00.000Z`, JavaScript's `toISOString` form).
pub fn expires_at(now_unix_ms: i64, window_seconds: u64) -> Result<String, ApiError> {
    let due = i64::try_from(window_seconds)
        .ok()
        .and_then(|seconds| seconds.checked_mul(1000))
        .and_then(|window_ms| now_unix_ms.checked_add(window_ms))
        .and_then(DateTime::<Utc>::from_timestamp_millis)
        .ok_or_else(|| anyhow::anyhow!("expiration_window_seconds {window_seconds} is too far"))?;
    Ok(due.to_rfc3339_opts(SecondsFormat::Millis, true))
}

/// The orders in the service's store.
pub struct Orders<'a> {
    store: &'a Store,
}

impl<'a> Orders<'a> {
    pub fn new(store: &'a Store) -> Self {
        Self { store }
    }

    /// The order with this id; an id not in the id format names no order.
    pub fn find(&self, id: &str) -> Result<Option<Order>, ApiError> {
        if !is_valid_id(id) {
            return Ok(None);
        }
        self.store.get(&order_key(id))
    }

    /// The order with this id if it was placed (see `was_placed`): what the API shows.
    pub fn find_placed(&self, id: &str) -> Result<Option<Order>, ApiError> {
        match self.find(id)? {
            Some(order) if self.was_placed(&order)? => Ok(Some(order)),
            _ => Ok(None),
        }
    }

    /// Whether `order` won its ticket. Its record is written before the race for the
    /// reservation (a rival must be able to read the holder), so a record may remain of an
    /// order that lost, or whose placing stopped half-way (a store error, a host killed),
    /// if deleting it failed too: such an order never held its ticket and was never
    /// announced. An order that is still `created` won exactly if the reservation names it;
    /// any other status was reached by a placed order.
    pub fn was_placed(&self, order: &Order) -> Result<bool, ApiError> {
        if !matches!(
            order.status,
            OrderStatus::Created | OrderStatus::AwaitingPayment
        ) {
            return Ok(true);
        }
        let holder = self
            .store
            .get::<Option<String>>(&reservation_key(&order.ticket.id))?;
        Ok(holder.flatten().as_deref() == Some(order.id.as_str()))
    }

    /// Up to `limit` of the user's orders after position `after` of their index, oldest
    /// first, and the position of the page's last order when more follow. An index entry
    /// whose order was not kept (it lost its ticket's race) is passed over.
    pub fn page_of_user(
        &self,
        user_id: &str,
        after: i64,
        limit: usize,
    ) -> Result<(Vec<Order>, Option<i64>), ApiError> {
        let index = user_orders_key(user_id);
        let count = self.store.index_len(&index)?;
        if after > count {
            return Err(paging::stale_cursor());
        }
        // One more than the page holds: whether a next page exists.
        let mut found = Vec::new();
        for position in after + 1..=count {
            let Some(id) = self.store.index_entry(&index, position)? else {
                continue;
            };
            if let Some(order) = self.find_placed(&id)? {
                found.push((position, order));
                if found.len() > limit {
                    break;
                }
            }
        }
        let next = (found.len() > limit).then(|| found[limit - 1].0);
        found.truncate(limit);
        Ok((found.into_iter().map(|(_, order)| order).collect(), next))
    }

    /// Saves a new order if it wins its ticket's reservation, and publishes its
    /// `order.created` (recorded with the reservation); `false` (and nothing saved) when an
    /// order that is not cancelled holds the ticket.
    pub fn place(&self, order: &Order) -> Result<bool, ApiError> {
        // In a rush most orders are for tickets someone holds already: those are told so
        // from reads alone, writing nothing. (The reservation below decides the races.)
        if self.is_held(&order.ticket.id)? {
            return Ok(false);
        }
        // The record goes first: a reservation always names an order that exists, so a
        // rival reading the reservation can tell whether it is still held. Then the index:
        // an order that wins (and is announced) is always listed; a losing one is deleted
        // and its index entry skipped by the listing.
        self.store.put(&order_key(&order.id), order)?;
        self.store
            .append_to_index(&user_orders_key(&order.user_id), &order.id)?;
        if !self.reserve(order)? {
            self.store.delete(&order_key(&order.id))?;
            return Ok(false);
        }
        Ok(true)
    }

    /// Whether an order that is not cancelled holds the ticket's reservation.
    fn is_held(&self, ticket_id: &str) -> Result<bool, ApiError> {
        match self
            .store
            .get::<Option<String>>(&reservation_key(ticket_id))?
        {
            Some(Some(holder)) => Ok(self.find(&holder)?.is_some_and(|o| o.holds_ticket())),
            _ => Ok(false),
        }
    }

    /// Takes the ticket's reservation for `order`, atomically, with its `order.created`: a
    /// new reservation key is created with `insert_new`; an existing one is taken over by
    /// compare-and-swap only if the order holding it no longer holds the ticket.
    fn reserve(&self, order: &Order) -> Result<bool, ApiError> {
        let key = reservation_key(&order.ticket.id);
        let created = || -> Result<Vec<Outgoing>, ApiError> {
            Ok(vec![events::outgoing(&order.created_event())?])
        };
        if self
            .store
            .insert_new_announcing(&key, &Some(&order.id), created()?)?
        {
            return Ok(true);
        }
        let change = |holder: &Option<String>| {
            let held = match holder {
                Some(holder) => self.find(holder)?.is_some_and(|order| order.holds_ticket()),
                None => false,
            };
            Ok((!held).then(|| Some(order.id.clone())))
        };
        let taken = self.store.update_if_announcing(&key, change, |_| created());
        match taken {
            Ok(updated) => Ok(updated.written),
            // Claimed by a rival whose write has not landed yet: that order holds the ticket.
            // (Reservation keys are never deleted.)
            Err(ApiError::NotFound) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Clears the ticket's reservation if `order_id` holds it (a later order's stands).
    pub fn release(&self, ticket_id: &str, order_id: &str) -> Result<(), ApiError> {
        self.store
            .update_if(&reservation_key(ticket_id), |holder: &Option<String>| {
                Ok((holder.as_deref() == Some(order_id)).then_some(None))
            })?;
        Ok(())
    }

    /// Changes an order where `change` says so (see `Store::update_if`), recording the
    /// `events` of the new order with the write; an unknown or malformed id is
    /// `ApiError::NotFound`.
    pub fn update_if(
        &self,
        id: &str,
        change: impl FnMut(&Order) -> Result<Option<Order>, ApiError>,
        events: impl Fn(&Order) -> Result<Vec<Outgoing>, ApiError>,
    ) -> Result<Updated<Order>, ApiError> {
        if !is_valid_id(id) {
            return Err(ApiError::NotFound);
        }
        self.store
            .update_if_announcing(&order_key(id), change, events)
    }
}

fn order_key(id: &str) -> String {
    format!("order:{id}")
}

fn user_orders_key(user_id: &str) -> String {
    format!("user-orders:{user_id}")
}

fn reservation_key(ticket_id: &str) -> String {
    format!("reservation:{ticket_id}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn order(status: OrderStatus) -> Order {
        Order {
            id: "6500000000000000000000aa".into(),
            user_id: "64f0c0de0123456789abcdef".into(),
            status,
            expires_at: "2026-11-25T12:15:00.000Z".into(),
            version: 0,
            ticket: TicketCopy {
                id: "507f1f77bcf86cd799439011".into(),
                title: "Opera".into(),
                price: 20.1,
                version: 0,
            },
            refunded: false,
        }
    }

    #[test]
    fn order_json_has_the_contract_fields() {
        assert_eq!(
            serde_json::to_value(order(OrderStatus::Created)).unwrap(),
            json!({
                "id": "6500000000000000000000aa",
                "userId": "64f0c0de0123456789abcdef",
                "status": "created",
                "expiresAt": "2026-11-25T12:15:00.000Z",
                "version": 0,
                "ticket": {"id": "507f1f77bcf86cd799439011", "title": "Opera", "price": 20.1, "version": 0}
            })
        );
    }

    #[test]
    fn a_refund_shows_on_the_order_and_bumps_its_version() {
        let refunded = order(OrderStatus::Cancelled).marked_refunded();
        assert_eq!(refunded.version, 1);
        assert_eq!(serde_json::to_value(&refunded).unwrap()["refunded"], true);
        assert!(serde_json::to_value(order(OrderStatus::Created))
            .unwrap()
            .get("refunded")
            .is_none());
    }

    #[test]
    fn open_orders_can_be_cancelled_once_and_paid_ones_never() {
        for status in [OrderStatus::Created, OrderStatus::AwaitingPayment] {
            let Cancellation::Cancel(cancelled) = order(status).cancellation() else {
                panic!("{status:?} can be cancelled");
            };
            assert_eq!(
                (cancelled.status, cancelled.version),
                (OrderStatus::Cancelled, 1)
            );
            assert_eq!(cancelled.cancellation(), Cancellation::AlreadyCancelled);
        }
        assert_eq!(
            order(OrderStatus::Complete).cancellation(),
            Cancellation::Complete
        );
    }

    #[test]
    fn open_orders_can_be_paid_once_and_cancelled_ones_never() {
        for status in [OrderStatus::Created, OrderStatus::AwaitingPayment] {
            let Completion::Complete(paid) = order(status).completion() else {
                panic!("{status:?} can be paid");
            };
            assert_eq!((paid.status, paid.version), (OrderStatus::Complete, 1));
            assert_eq!(paid.completion(), Completion::AlreadyComplete);
        }
        assert_eq!(
            order(OrderStatus::Cancelled).completion(),
            Completion::Cancelled
        );
    }

    #[test]
    fn only_cancelled_orders_give_their_ticket_back() {
        assert!(order(OrderStatus::Created).holds_ticket());
        assert!(order(OrderStatus::AwaitingPayment).holds_ticket());
        assert!(order(OrderStatus::Complete).holds_ticket());
        assert!(!order(OrderStatus::Cancelled).holds_ticket());
    }

    #[test]
    fn events_carry_the_order_as_it_is() {
        let placed = order(OrderStatus::Created);
        assert_eq!(
            serde_json::to_value(placed.created_event()).unwrap(),
            json!({
                "id": "6500000000000000000000aa", "version": 0, "status": "created",
                "userId": "64f0c0de0123456789abcdef", "expiresAt": "2026-11-25T12:15:00.000Z",
                "ticket": {"id": "507f1f77bcf86cd799439011", "price": 20.1}
            })
        );
        let Cancellation::Cancel(cancelled) = placed.cancellation() else {
            unreachable!()
        };
        assert_eq!(
            serde_json::to_value(cancelled.cancelled_event()).unwrap(),
            json!({"id": "6500000000000000000000aa", "version": 1,
                   "ticket": {"id": "507f1f77bcf86cd799439011"}})
        );
    }

    #[test]
    fn orders_expire_a_window_after_they_are_placed() {
        // 2026-11-25T12:00:00Z
        let noon = 1_795_608_000_000;
        assert_eq!(expires_at(noon, 900).unwrap(), "2026-11-25T12:15:00.000Z");
        assert_eq!(
            expires_at(noon + 123, 0).unwrap(),
            "2026-11-25T12:00:00.123Z"
        );
        assert!(expires_at(noon, u64::MAX).is_err());
    }
}
