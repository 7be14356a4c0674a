//! The events the tickets service consumes: orders reserve and release tickets.
//!
//! Every change of a ticket takes the next version and records its `ticket.updated` in the
//! same write (the outbox), so a change is never left unannounced, even if the host dies
//! right after it. The outbox relay tick lands here too.

use ticketing_common::{
    events::{self, Event, OrderCancelled, OrderCreated},
    listener::{self, decode, unknown_event, ListenerError},
    store::{Store, Updated},
    ApiError,
};

use crate::ticket::{Ticket, Tickets, STORE_LABEL};

pub fn on_event(name: &str, payload: &[u8]) -> Result<(), ListenerError> {
    match name {
        OrderCreated::NAME => order_created(decode(payload)?),
        OrderCancelled::NAME => order_cancelled(decode(payload)?),
        events::OUTBOX_RELAY => listener::relay_outbox(&Store::open(STORE_LABEL)?),
        other => Err(unknown_event(other)),
    }
}

/// An order reserves its ticket (unless the order is already known to be cancelled).
///
/// The cancellation may be handled at the same moment: it marks the order cancelled, then
/// releases the ticket if it sees the reservation. Checking the mark again after reserving
/// closes the gap between the two: either the cancellation saw the reservation and released
/// it, or it marked the order before this check, which then releases it here.
fn order_created(order: OrderCreated) -> Result<(), ListenerError> {
    let tickets = Tickets::open()?;
    let outcome = tickets.update_if(&order.ticket.id, |ticket| {
        if tickets.is_order_cancelled(&order.id)? {
            return Ok(None);
        }
        Ok(ticket.reserved_by(&order.id))
    });
    known_ticket(&order.ticket.id, outcome)?;
    if tickets.is_order_cancelled(&order.id)? {
        let outcome =
            tickets.update_if(&order.ticket.id, |ticket| Ok(ticket.released_by(&order.id)));
        known_ticket(&order.ticket.id, outcome)?;
    }
    Ok(())
}

/// A cancelled order releases its ticket, if that order is the one reserving it.
fn order_cancelled(order: OrderCancelled) -> Result<(), ListenerError> {
    let tickets = Tickets::open()?;
    tickets.mark_order_cancelled(&order.id, &order.ticket.id)?;
    let outcome = tickets.update_if(&order.ticket.id, |ticket| Ok(ticket.released_by(&order.id)));
    known_ticket(&order.ticket.id, outcome)
}

/// An order event for a ticket that does not exist never will be handled.
fn known_ticket(
    ticket_id: &str,
    outcome: Result<Updated<Ticket>, ApiError>,
) -> Result<(), ListenerError> {
    match outcome {
        Ok(_) => Ok(()),
        Err(ApiError::NotFound) => Err(ListenerError::Never(format!(
            "an order event for ticket {ticket_id}, which does not exist"
        ))),
        Err(error) => Err(error.into()),
    }
}
