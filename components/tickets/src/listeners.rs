//! The events the tickets service consumes: orders reserve and release tickets, and its own
//! `ticket.updated` keeps the catalogue's blocks in step (see `listing`).
//!
//! Every change of a ticket takes the next version and records its `ticket.updated` in the
//! same write (the outbox), so a change is never left unannounced, even if the host dies
//! right after it. The outbox relay tick lands here too, and sweeps new tickets into the
//! catalogue's blocks.

use ticketing_common::{
    events::{self, Event, OrderCancelled, OrderCreated, TicketUpdated},
    listener::{self, decode, unknown_event, ListenerError},
    store::Updated,
    ApiError,
};

use crate::listing::Listing;
use crate::ticket::{StoredTicket, Tickets};

pub fn on_event(name: &str, payload: &[u8]) -> Result<(), ListenerError> {
    let tickets = Tickets::open()?;
    match name {
        OrderCreated::NAME => order_created(&tickets, decode(payload)?),
        OrderCancelled::NAME => order_cancelled(&tickets, decode(payload)?),
        TicketUpdated::NAME => {
            let updated: TicketUpdated = decode(payload)?;
            Listing::new(&tickets).follow(&updated.id)
        }
        events::OUTBOX_RELAY => {
            listener::relay_outbox(tickets.store())?;
            let swept = Listing::new(&tickets).sweep()?;
            if swept.holes > 0 {
                eprintln!(
                    "catalogue: {} positions whose ticket was never stored are left out",
                    swept.holes
                );
            }
            Ok(())
        }
        other => Err(unknown_event(other)),
    }
}

/// An order reserves its ticket (unless the order is already known to be cancelled).
///
/// The cancellation may be handled at the same moment: it marks the order cancelled, then
/// releases the ticket if it sees the reservation. Checking the mark again after reserving
/// closes the gap between the two: either the cancellation saw the reservation and released
/// it, or it marked the order before this check, which then releases it here.
///
/// A ticket held by another order is taken over only once that order is known to be
/// cancelled. The orders service gives a ticket to a new order only after the order holding
/// it is cancelled, so the holder's `order.cancelled` is on its way, or this event is the late
/// one (its order was cancelled before the holder got the ticket: its own cancellation is on
/// its way). Either way it is retried later. The `order.created` of one ticket are published
/// in order, but handled concurrently (several handlers, several hosts), most after an outage
/// of the bus, when they come in a burst: taking the ticket over regardless let a late one
/// undo the reservation of the order that paid.
fn order_created(tickets: &Tickets, order: OrderCreated) -> Result<(), ListenerError> {
    let mut held_by = None;
    let outcome = tickets.update_if(&order.ticket.id, |ticket| {
        held_by = None;
        if tickets.is_order_cancelled(&order.id)? {
            return Ok(None);
        }
        if let Some(holder) = ticket.order_id.as_deref() {
            if holder != order.id && !tickets.is_order_cancelled(holder)? {
                held_by = Some(holder.to_owned());
                return Ok(None);
            }
        }
        Ok(ticket.reserved_by(&order.id))
    });
    known_ticket(&order.ticket.id, outcome)?;
    if let Some(holder) = held_by {
        return Err(ListenerError::RetryLater(format!(
            "ticket {} is held by order {holder}: waiting for the cancellation of one of the two",
            order.ticket.id
        )));
    }
    if tickets.is_order_cancelled(&order.id)? {
        release(tickets, &order.ticket.id, &order.id)?;
    }
    Ok(())
}

/// A cancelled order releases its ticket, if that order is the one reserving it.
fn order_cancelled(tickets: &Tickets, order: OrderCancelled) -> Result<(), ListenerError> {
    tickets.mark_order_cancelled(&order.id, &order.ticket.id)?;
    release(tickets, &order.ticket.id, &order.id)
}

/// Releases the ticket if `order_id` reserves it. The catalogue shows it on sale again
/// first (see `listing`): a ticket on sale is never missing from it.
fn release(tickets: &Tickets, ticket_id: &str, order_id: &str) -> Result<(), ListenerError> {
    if let Some(StoredTicket {
        ticket,
        position: Some(position),
    }) = tickets.find_stored(ticket_id)?
    {
        if let Some(released) = ticket.released_by(order_id) {
            Listing::new(tickets).put(position, &released)?;
        }
    }
    let outcome = tickets.update_if(ticket_id, |ticket| Ok(ticket.released_by(order_id)));
    known_ticket(ticket_id, outcome)
}

/// An order event for a ticket that does not exist never will be handled.
fn known_ticket(
    ticket_id: &str,
    outcome: Result<Updated<StoredTicket>, ApiError>,
) -> Result<(), ListenerError> {
    match outcome {
        Ok(_) => Ok(()),
        Err(ApiError::NotFound) => Err(ListenerError::Never(format!(
            "an order event for ticket {ticket_id}, which does not exist"
        ))),
        Err(error) => Err(error.into()),
    }
}
