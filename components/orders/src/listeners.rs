//! The events the orders service consumes: ticket copies from the tickets service, order
//! expirations from the expiration service, payments from the payments service.

use ticketing_common::{
    events::{self, Event, ExpirationComplete, PaymentCreated, TicketCreated, TicketUpdated},
    listener::{self, decode, unknown_event, ListenerError},
    store::Store,
    ApiError,
};

use crate::{
    cancel,
    order::{Completion, Orders, STORE_LABEL},
    ticket::{self, TicketCopy},
};

pub fn on_event(name: &str, payload: &[u8]) -> Result<(), ListenerError> {
    let store = Store::open(STORE_LABEL)?;
    match name {
        TicketCreated::NAME => ticket_created(&store, decode(payload)?),
        TicketUpdated::NAME => ticket_updated(&store, decode(payload)?),
        ExpirationComplete::NAME => expiration_complete(&store, decode(payload)?),
        PaymentCreated::NAME => payment_created(&store, decode(payload)?),
        events::OUTBOX_RELAY => listener::relay_outbox(&store),
        other => Err(unknown_event(other)),
    }
}

/// A new ticket: its copy is created (a redelivery finds it and changes nothing).
fn ticket_created(store: &Store, event: TicketCreated) -> Result<(), ListenerError> {
    let id = event.id.clone();
    Ok(ticket::copies(store).insert(&id, &TicketCopy::from(event))?)
}

/// A changed ticket: applied to the copy in version order.
fn ticket_updated(store: &Store, event: TicketUpdated) -> Result<(), ListenerError> {
    ticket::copies(store).apply(&event.id, event.version, |copy| copy.updated_by(&event))?;
    Ok(())
}

/// An order's time is up: it is cancelled unless it is complete or cancelled already.
fn expiration_complete(store: &Store, event: ExpirationComplete) -> Result<(), ListenerError> {
    match cancel::cancel(store, &event.order_id, |_| Ok(())) {
        Ok(_) => Ok(()),
        Err(ApiError::NotFound) => Err(no_such_order(&event.order_id)),
        Err(error) => Err(error.into()),
    }
}

/// An order was paid: it is complete. A payment for an order cancelled meanwhile leaves it
/// cancelled (its ticket may be someone else's by now) and is logged for a refund.
fn payment_created(store: &Store, event: PaymentCreated) -> Result<(), ListenerError> {
    let orders = Orders::new(store);
    let outcome = orders.update_if(
        &event.order_id,
        |order| {
            Ok(match order.completion() {
                Completion::Complete(paid) => Some(paid),
                Completion::AlreadyComplete | Completion::Cancelled => None,
            })
        },
        |_| Ok(Vec::new()),
    );
    match outcome {
        Ok(now) if now.value.completion() == Completion::Cancelled => {
            eprintln!(
                "payment {} (charge {}) is for order {}, which was cancelled: refund it",
                event.id, event.stripe_id, event.order_id
            );
            Ok(())
        }
        Ok(_) => Ok(()),
        Err(ApiError::NotFound) => Err(no_such_order(&event.order_id)),
        Err(error) => Err(error.into()),
    }
}

/// Orders are saved before their first event, so an event about an unknown order is not
/// going to become valid.
fn no_such_order(order_id: &str) -> ListenerError {
    ListenerError::Never(format!("order {order_id} does not exist"))
}
