//! Receiving events: the platform's `ticketing:platform/listener` export, the dispatch of a
//! message to a service's handler, and the versioned-apply rule every event consumer follows.
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

use serde::{de::DeserializeOwned, Serialize};

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

/// The body of the exported `handle`: dispatches the message under the configured prefix
/// and logs every message that is not acknowledged.
pub fn handle(
    message: Message,
    on_event: impl FnOnce(&str, &[u8]) -> Result<(), ListenerError>,
) -> Result<(), DeliveryError> {
    let outcome = events::events_prefix()
        .map_err(ListenerError::from)
        .and_then(|prefix| dispatch(&prefix, &message.subject, &message.payload, on_event));
    if let Err(error) = &outcome {
        let (verdict, reason) = match error {
            ListenerError::RetryLater(reason) => ("retry later", reason),
            ListenerError::Never(reason) => ("never", reason),
        };
        eprintln!(
            "event {} (delivery {}): {verdict}: {reason}",
            message.subject, message.delivery
        );
    }
    outcome.map_err(DeliveryError::from)
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

/// Where an event stands against a local copy of its entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionOrder {
    /// The copy is at `version - 1`: apply the event now.
    Next,
    /// The copy is at the event's version or later: it was applied before (a redelivery).
    AlreadyApplied,
    /// The copy is behind by more than one: an earlier event has not arrived yet.
    TooEarly,
}

/// The versioned-apply rule: apply an event only to a copy at `version - 1`.
pub fn version_order(copy_version: u64, event_version: u64) -> VersionOrder {
    if copy_version >= event_version {
        VersionOrder::AlreadyApplied
    } else if copy_version + 1 == event_version {
        VersionOrder::Next
    } else {
        VersionOrder::TooEarly
    }
}

/// A local copy of another service's entity, kept in step by its events.
pub trait Versioned {
    fn version(&self) -> u64;
    fn set_version(&mut self, version: u64);
}

/// Applies an event at `event_version` to the copy under `key` by the versioned-apply rule:
/// the copy is changed by `apply` and takes the event's version only when it is at
/// `event_version - 1` (returns the new copy); an event applied before changes nothing
/// (`Ok(None)`); an event ahead of the copy, or for a copy not created yet, is `RetryLater`.
pub fn apply_in_order<T, F>(
    store: &Store,
    key: &str,
    event_version: u64,
    mut apply: F,
) -> Result<Option<T>, ListenerError>
where
    T: Versioned + Serialize + DeserializeOwned,
    F: FnMut(&T) -> T,
{
    let mut order = VersionOrder::Next;
    let outcome = store.update_if(key, |copy: &T| {
        order = version_order(copy.version(), event_version);
        Ok((order == VersionOrder::Next).then(|| {
            let mut updated = apply(copy);
            updated.set_version(event_version);
            updated
        }))
    });
    match (outcome, order) {
        (Err(ApiError::NotFound), _) => Err(ListenerError::RetryLater(format!(
            "{key} is not known yet (version {event_version} waits for its creation)"
        ))),
        (Err(error), _) => Err(error.into()),
        (Ok(updated), _) if updated.written => Ok(Some(updated.value)),
        (Ok(_), VersionOrder::TooEarly) => Err(ListenerError::RetryLater(format!(
            "{key} is behind version {} (waits for the events before it)",
            event_version.saturating_sub(1)
        ))),
        (Ok(_), _) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{ExpirationComplete, OrderCreated, TicketCreated};

    #[test]
    fn an_event_applies_only_to_the_copy_one_version_behind() {
        assert_eq!(version_order(0, 1), VersionOrder::Next);
        assert_eq!(version_order(6, 7), VersionOrder::Next);
        assert_eq!(version_order(1, 1), VersionOrder::AlreadyApplied);
        assert_eq!(version_order(5, 1), VersionOrder::AlreadyApplied);
        assert_eq!(version_order(0, 0), VersionOrder::AlreadyApplied);
        assert_eq!(version_order(0, 2), VersionOrder::TooEarly);
        assert_eq!(version_order(3, 9), VersionOrder::TooEarly);
    }

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
