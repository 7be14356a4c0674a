//! The events the tickets service consumes: orders reserve and release tickets.
//!
//! Every change of a ticket takes the next version and is published as `ticket.updated`.
//! After handling an order event the ticket's current state is published even when nothing
//! changed: a redelivery then re-publishes what the first delivery may have failed to
//! publish, with the same content and so the same message id (the bus drops the duplicate),
//! and a consumer that already has that version ignores it.

use ticketing_common::{
    events::{self, Event, OrderCancelled, OrderCreated},
    listener::{decode, unknown_event, ListenerError},
    ApiError,
};

use crate::ticket::{Ticket, Tickets};

pub fn on_event(name: &str, payload: &[u8]) -> Result<(), ListenerError> {
    match name {
        OrderCreated::NAME => order_created(decode(payload)?),
        OrderCancelled::NAME => order_cancelled(decode(payload)?),
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
    // Each version is published, so listeners applying them in order never meet a gap.
    publish_state(&order.ticket.id, outcome.map(|updated| updated.value))?;
    if tickets.is_order_cancelled(&order.id)? {
        let outcome =
            tickets.update_if(&order.ticket.id, |ticket| Ok(ticket.released_by(&order.id)));
        publish_state(&order.ticket.id, outcome.map(|updated| updated.value))?;
    }
    Ok(())
}

/// A cancelled order releases its ticket, if that order is the one reserving it.
fn order_cancelled(order: OrderCancelled) -> Result<(), ListenerError> {
    let tickets = Tickets::open()?;
    tickets.mark_order_cancelled(&order.id, &order.ticket.id)?;
    let outcome = tickets.update_if(&order.ticket.id, |ticket| Ok(ticket.released_by(&order.id)));
    publish_state(&order.ticket.id, outcome.map(|updated| updated.value))
}

/// Publishes the ticket's state after an order event (version 0 is `ticket.created`'s).
fn publish_state(ticket_id: &str, outcome: Result<Ticket, ApiError>) -> Result<(), ListenerError> {
    match outcome {
        Ok(ticket) if ticket.version > 0 => Ok(events::publish(&ticket.updated_event())?),
        Ok(_) => Ok(()),
        Err(ApiError::NotFound) => Err(ListenerError::Never(format!(
            "an order event for ticket {ticket_id}, which does not exist"
        ))),
        Err(error) => Err(error.into()),
    }
}
