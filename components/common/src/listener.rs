//! Receiving events: the platform's `ticketing:platform/listener` export and the dispatch of
//! a message to a service's handler (the versioned-apply rule is in `copies`).
//!
//! A service writes one function, `fn on_event(name: &str, payload: &[u8]) -> Result<(),
//! ListenerError>`, matching on the event names it consumes, and exports it with
//! `ticketing_common::export_listener!(on_event);`. The NATS trigger calls the export for
//! each delivery: `Ok` acknowledges the message, `RetryLater` has it delivered again later,
//! `Never` sends it to the dead-letter subject. A subject outside the configured prefix, an
//! event name the service does not handle and a payload that does not decode are `Never`.
//!
//! The bindings are generated once, here, for the `event-scheduler` world; a component
//! imports the scheduler only if it calls it (wit-component drops unused imports), so only
//! the expiration service does.

use crate::{
    errors::ApiError,
    events::{self, Event},
    store::Store,
};

/// The generated bindings of `ticketing:platform/event-scheduler`.
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "ticketing:platform/event-scheduler",
        pub_export_macro: true,
        export_macro_name: "export_event_listener",
        default_bindings_module: "ticketing_common::listener::bindings",
    });
}

pub use bindings::exports::ticketing::platform::listener::{Error as DeliveryError, Message};
/// The durable timers (imported only by components that call them).
pub use bindings::ticketing::platform::scheduler;

/// Why an event was not handled now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenerError {
    /// Not yet (an event ahead of the one it follows, a store or bus failure): deliver it
    /// again later.
    RetryLater(String),
    /// Never (malformed, unknown, refers to something that cannot exist): dead-letter it.
    Never(String),
}

/// Store and publishing failures are worth another try.
impl From<ApiError> for ListenerError {
    fn from(error: ApiError) -> Self {
        Self::RetryLater(error.to_string())
    }
}

impl From<ListenerError> for DeliveryError {
    fn from(error: ListenerError) -> Self {
        match error {
            ListenerError::RetryLater(reason) => Self::RetryLater(reason),
            ListenerError::Never(reason) => Self::Never(reason),
        }
    }
}

/// The handler of the outbox relay tick (`events::OUTBOX_RELAY`): publishes what writers
/// left in `store`'s outbox (see `Store::relay_outbox`), logged when there was any.
pub fn relay_outbox(store: &Store) -> Result<(), ListenerError> {
    let relayed = store.relay_outbox()?;
    if relayed.published > 0 || relayed.abandoned > 0 {
        eprintln!(
            "outbox relay: published the events of {} writes, dropped {} writes that never \
             landed ({} journal entries looked at)",
            relayed.published, relayed.abandoned, relayed.scanned
        );
    }
    Ok(())
}

/// The payload of an event; one that does not decode never will.
pub fn decode<E: Event>(payload: &[u8]) -> Result<E, ListenerError> {
    serde_json::from_slice(payload)
        .map_err(|e| ListenerError::Never(format!("{} payload does not decode: {e}", E::NAME)))
}

/// The answer for an event name a service does not handle.
pub fn unknown_event(name: &str) -> ListenerError {
    ListenerError::Never(format!("no handler for event {name:?}"))
}

/// Routes a message on `subject` to `on_event` with its event name under `prefix`.
pub fn dispatch(
    prefix: &str,
    subject: &str,
    payload: &[u8],
    on_event: impl FnOnce(&str, &[u8]) -> Result<(), ListenerError>,
) -> Result<(), ListenerError> {
    match events::event_name(prefix, subject) {
        Some(name) => on_event(name, payload),
        None => Err(ListenerError::Never(format!(
            "subject {subject:?} is not under the prefix {prefix:?}"
        ))),
    }
}

/// The body of the exported `handle`: dispatches the message under the configured prefix.
/// The trigger logs every message that is not acknowledged, with the reason given here.
pub fn handle(
    message: Message,
    on_event: impl FnOnce(&str, &[u8]) -> Result<(), ListenerError>,
) -> Result<(), DeliveryError> {
    events::events_prefix()
        .map_err(ListenerError::from)
        .and_then(|prefix| dispatch(&prefix, &message.subject, &message.payload, on_event))
        .map_err(DeliveryError::from)
}

/// Exports a service's event handler as the component's `ticketing:platform/listener`:
/// `ticketing_common::export_listener!(on_event);` with
/// `fn on_event(name: &str, payload: &[u8]) -> Result<(), ListenerError>`.
#[macro_export]
macro_rules! export_listener {
    ($on_event:path) => {
        struct EventListener;

        impl $crate::listener::bindings::exports::ticketing::platform::listener::Guest
            for EventListener
        {
            fn handle(
                message: $crate::listener::Message,
            ) -> ::core::result::Result<(), $crate::listener::DeliveryError> {
                $crate::listener::handle(message, $on_event)
            }
        }

        $crate::listener::bindings::export_event_listener!(
            EventListener with_types_in $crate::listener::bindings
        );
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{ExpirationComplete, OrderCreated, TicketCreated};

    fn accept(name: &str, payload: &[u8]) -> Result<(), ListenerError> {
        match name {
            OrderCreated::NAME => decode::<OrderCreated>(payload).map(drop),
            ExpirationComplete::NAME => decode::<ExpirationComplete>(payload).map(drop),
            other => Err(unknown_event(other)),
        }
    }

    fn is_never(outcome: Result<(), ListenerError>) -> bool {
        matches!(outcome, Err(ListenerError::Never(_)))
    }

    #[test]
    fn known_events_reach_their_handler() {
        let payload = br#"{"orderId": "6500000000000000000000aa"}"#;
        assert_eq!(
            dispatch(
                "ticketing",
                "ticketing.expiration.complete",
                payload,
                accept
            ),
            Ok(())
        );
    }

    #[test]
    fn unknown_subjects_and_events_are_never_handled() {
        let payload = br#"{"orderId": "6500000000000000000000aa"}"#;
        assert!(is_never(dispatch(
            "ticketing",
            "other.expiration.complete",
            payload,
            accept
        )));
        assert!(is_never(dispatch(
            "ticketing",
            "ticketing.order.shipped",
            payload,
            accept
        )));
        assert!(is_never(dispatch(
            "ticketing",
            &format!("ticketing.{}", TicketCreated::NAME),
            payload,
            accept
        )));
    }

    #[test]
    fn payloads_that_do_not_decode_are_never_handled() {
        for payload in [
            &b"{not json"[..],
            b"",
            b"[]",
            br#"{"order": "x"}"#,
            br#"{"orderId": 7}"#,
        ] {
            assert!(
                is_never(dispatch(
                    "ticketing",
                    "ticketing.expiration.complete",
                    payload,
                    accept
                )),
                "{}",
                String::from_utf8_lossy(payload)
            );
        }
    }

    #[test]
    fn store_and_bus_failures_are_retried() {
        let error = ListenerError::from(ApiError::from(anyhow::anyhow!("bus down")));
        assert_eq!(error, ListenerError::RetryLater("bus down".into()));
        assert!(matches!(
            DeliveryError::from(error),
            DeliveryError::RetryLater(reason) if reason == "bus down"
        ));
        assert!(matches!(
            DeliveryError::from(ListenerError::Never("bad".into())),
            DeliveryError::Never(reason) if reason == "bad"
        ));
    }
}
