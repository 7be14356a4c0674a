//! Cancelling an order, by its user (`DELETE /api/orders/:id`) or because it expired
//! (`expiration.complete`): the order becomes cancelled (version + 1), its ticket's
//! reservation is released and `order.cancelled` is published.
//!
//! The cancellation is written together with an "event pending" flag, cleared once the event
//! is out; a cancellation whose publish failed is therefore published by the next attempt (a
//! redelivered expiration, the user cancelling again), with the same content, and an order
//! cancelled before with its event out changes nothing and publishes nothing.

use ticketing_common::{events, store::Store, ApiError};

use crate::order::{Cancellation, Order, Orders, StoredOrder};

/// How a cancellation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The order is cancelled (now or before) and its event published.
    Cancelled,
    /// The order is complete and stays so.
    Complete,
}

/// Cancels order `id` after `check` accepts it (the owner check of DELETE; an error from it
/// is returned as is). An unknown order is `ApiError::NotFound`.
pub fn cancel(
    store: &Store,
    id: &str,
    check: impl Fn(&Order) -> Result<(), ApiError>,
) -> Result<Outcome, ApiError> {
    let orders = Orders::new(store);
    let now = orders.update_if(id, |stored| {
        check(&stored.order)?;
        Ok(match stored.order.cancellation() {
            Cancellation::Cancel(order) => Some(StoredOrder {
                order,
                event_pending: true,
            }),
            Cancellation::AlreadyCancelled | Cancellation::Complete => None,
        })
    })?;
    if now.value.order.cancellation() == Cancellation::Complete {
        return Ok(Outcome::Complete);
    }
    if now.value.event_pending {
        announce(&orders, &now.value.order)?;
    }
    Ok(Outcome::Cancelled)
}

/// Releases the cancelled order's ticket, publishes `order.cancelled`, then clears the
/// order's pending flag (unless the order changed meanwhile).
fn announce(orders: &Orders, order: &Order) -> Result<(), ApiError> {
    orders.release(&order.ticket.id, &order.id)?;
    events::publish(&order.cancelled_event())?;
    orders.update_if(&order.id, |stored| {
        let published = stored.event_pending && stored.order.version == order.version;
        Ok(published.then(|| StoredOrder {
            order: stored.order.clone(),
            event_pending: false,
        }))
    })?;
    Ok(())
}

/// Cancels a just-placed order whose `order.created` could not be published, without an
/// event: no other service has heard of it.
pub fn withdraw_unannounced(store: &Store, order: &Order) -> Result<(), ApiError> {
    let orders = Orders::new(store);
    orders.update_if(&order.id, |stored| {
        Ok(match stored.order.cancellation() {
            Cancellation::Cancel(order) => Some(StoredOrder {
                order,
                event_pending: false,
            }),
            Cancellation::AlreadyCancelled | Cancellation::Complete => None,
        })
    })?;
    orders.release(&order.ticket.id, &order.id)
}
