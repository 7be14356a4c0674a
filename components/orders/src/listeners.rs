//! The events the orders service consumes: ticket copies from the tickets service, and from
//! the payments service its decisions on each order: paid (`payment.created`), expired
//! unpaid (`payment.expired`: the payments service closed it to payment, so no payment taken
//! before its time is lost to the expiry), or a payment refunded (`payment.refunded`).

use ticketing_common::{
    events::{
        self, Event, PaymentCreated, PaymentExpired, PaymentRefunded, TicketCreated, TicketUpdated,
    },
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
        PaymentExpired::NAME => payment_expired(&store, decode(payload)?),
        PaymentCreated::NAME => payment_created(&store, decode(payload)?),
        PaymentRefunded::NAME => payment_refunded(&store, decode(payload)?),
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

/// An order's time is up and no payment has it: it is cancelled unless it is complete or
/// cancelled already.
fn payment_expired(store: &Store, event: PaymentExpired) -> Result<(), ListenerError> {
    match cancel::cancel(store, &event.order_id, |_| Ok(())) {
        Ok(_) => Ok(()),
        Err(ApiError::NotFound) => Err(no_such_order(&event.order_id)),
        Err(error) => Err(error.into()),
    }
}

/// An order was paid: it is complete. A payment for an order its user cancelled meanwhile
/// leaves it cancelled (its ticket may be someone else's by now): the payments service
/// refunds it (`payment.refunded`).
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
        Ok(_) => Ok(()),
        Err(ApiError::NotFound) => Err(no_such_order(&event.order_id)),
        Err(error) => Err(error.into()),
    }
}

/// A payment of a cancelled order was refunded: the order says so.
fn payment_refunded(store: &Store, event: PaymentRefunded) -> Result<(), ListenerError> {
    let outcome = Orders::new(store).update_if(
        &event.order_id,
        |order| Ok((!order.refunded).then(|| order.marked_refunded())),
        |_| Ok(Vec::new()),
    );
    match outcome {
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
