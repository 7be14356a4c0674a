//! Cancelling an order, by its user (`DELETE /api/orders/:id`) or because it expired
//! (`expiration.complete`): the order becomes cancelled (version + 1) and records its
//! `order.cancelled` in the same write (the outbox), then its ticket's reservation is
//! released. An order cancelled before changes nothing and publishes nothing.

use ticketing_common::{events, store::Store, ApiError};

use crate::order::{Cancellation, Order, Orders};

/// How a cancellation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The order is cancelled (now or before).
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
    let now = orders.update_if(
        id,
        |order| {
            if !orders.was_placed(order)? {
                return Err(ApiError::NotFound);
            }
            check(order)?;
            Ok(match order.cancellation() {
                Cancellation::Cancel(cancelled) => Some(cancelled),
                Cancellation::AlreadyCancelled | Cancellation::Complete => None,
            })
        },
        |cancelled| Ok(vec![events::outgoing(&cancelled.cancelled_event())?]),
    )?;
    if now.value.cancellation() == Cancellation::Complete {
        return Ok(Outcome::Complete);
    }
    // A redelivered expiration or a second DELETE releases it again: a no-op once done.
    // (Until then a new order may still take the ticket over: the reservation names an
    // order that no longer holds it.)
    orders.release(&now.value.ticket.id, &now.value.id)?;
    Ok(Outcome::Cancelled)
}
