//! The expiration service: a listener only (no HTTP). For every new order it keeps a durable
//! timer, named by the order id, that fires `expiration.complete {orderId}` at the order's
//! `expiresAt`; a cancelled or paid order's timer is dropped. The timers live in the host
//! (`ticketing:platform/scheduler`), so this service keeps no state of its own, and every
//! handler is idempotent: scheduling is an upsert by key, cancelling an absent timer is fine.

use ticketing_common::{
    clock,
    events::{self, Event, ExpirationComplete, OrderCancelled, OrderCreated, PaymentCreated},
    listener::{decode, scheduler, unknown_event, ListenerError},
};

ticketing_common::export_listener!(on_event);

fn on_event(name: &str, payload: &[u8]) -> Result<(), ListenerError> {
    match name {
        OrderCreated::NAME => schedule_expiration(decode(payload)?),
        OrderCancelled::NAME => drop_timer(&decode::<OrderCancelled>(payload)?.id),
        PaymentCreated::NAME => drop_timer(&decode::<PaymentCreated>(payload)?.order_id),
        other => Err(unknown_event(other)),
    }
}

/// A new order: `expiration.complete` for it is due at its `expiresAt`.
fn schedule_expiration(order: OrderCreated) -> Result<(), ListenerError> {
    let due = due_unix_ms(&order.expires_at).ok_or_else(|| {
        ListenerError::Never(format!(
            "order {} expires at {:?}, which is not an RFC 3339 time",
            order.id, order.expires_at
        ))
    })?;
    let subject = events::subject_of::<ExpirationComplete>()?;
    let payload = expiration_payload(&order.id);
    scheduler::schedule(&order.id, due, &subject, &payload)
        .map_err(|e| scheduler_failed("scheduling", &order.id, e))
}

/// A cancelled or paid order never expires.
fn drop_timer(order_id: &str) -> Result<(), ListenerError> {
    scheduler::cancel(order_id).map_err(|e| scheduler_failed("cancelling", order_id, e))
}

fn scheduler_failed(doing: &str, order_id: &str, error: scheduler::Error) -> ListenerError {
    let scheduler::Error::Other(reason) = error;
    ListenerError::RetryLater(format!("{doing} the timer of order {order_id}: {reason}"))
}

/// The body of the event the timer publishes.
fn expiration_payload(order_id: &str) -> Vec<u8> {
    let event = ExpirationComplete {
        order_id: order_id.to_owned(),
    };
    serde_json::to_vec(&event).expect("an event of one string always serializes")
}

/// Milliseconds since the Unix epoch of an RFC 3339 time; a time before 1970 is due at once.
fn due_unix_ms(rfc3339: &str) -> Option<u64> {
    Some(u64::try_from(clock::rfc3339_ms(rfc3339)?).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_times_are_due_in_unix_milliseconds_and_the_past_at_once() {
        // 2026-11-25T12:00:00.123Z (reading RFC 3339 itself is `clock`'s, tested there)
        assert_eq!(
            due_unix_ms("2026-11-25T12:00:00.123Z"),
            Some(1_795_608_000_123)
        );
        assert_eq!(due_unix_ms("1969-12-31T23:59:59Z"), Some(0));
        assert_eq!(due_unix_ms("2026-11-25 12:00:00"), None);
    }

    #[test]
    fn the_timer_publishes_the_order_id() {
        assert_eq!(
            expiration_payload("6500000000000000000000aa"),
            br#"{"orderId":"6500000000000000000000aa"}"#
        );
    }
}
