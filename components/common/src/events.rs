//! The events of the platform (API.md, "Events") and publishing them.
//!
//! Every event is JSON on a NATS subject `<prefix>.<name>`, e.g. `ticketing.order.created`,
//! where the prefix is the variable `events_prefix` (default `ticketing`). Services publish
//! through Spin's outbound MQTT interface: the topic is the subject with `/` for `.`
//! (`ticketing/order/created`), which NATS (and the ticketing host) map back onto the subject.

use anyhow::{anyhow, Context};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use spin_sdk::mqtt::{Connection, Qos};

use crate::{config, errors::ApiError};

/// The subject prefix when `events_prefix` is not set.
pub const DEFAULT_EVENTS_PREFIX: &str = "ticketing";
/// The MQTT broker when `mqtt_address` is not set (the ticketing host ignores the address).
pub const DEFAULT_MQTT_ADDRESS: &str = "mqtt://127.0.0.1:1883";
/// How long an idle MQTT connection may stay open, in seconds.
const MQTT_KEEP_ALIVE_SECONDS: u64 = 30;

/// One kind of event: its payload type, its name under the prefix and who publishes it.
pub trait Event: Serialize + DeserializeOwned {
    /// The subject without the prefix, e.g. `order.created`.
    const NAME: &'static str;
    /// The service that publishes it; names its MQTT client ids.
    const PUBLISHER: &'static str;
}

/// `ticket.created`: a ticket was put on sale.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TicketCreated {
    pub id: String,
    pub version: u64,
    pub title: String,
    #[serde(serialize_with = "crate::price::serialize")]
    pub price: f64,
    pub user_id: String,
}

impl Event for TicketCreated {
    const NAME: &'static str = "ticket.created";
    const PUBLISHER: &'static str = "tickets";
}

/// `ticket.updated`: a ticket changed (edited, reserved or released); `orderId` is present
/// while an order reserves it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TicketUpdated {
    pub id: String,
    pub version: u64,
    pub title: String,
    #[serde(serialize_with = "crate::price::serialize")]
    pub price: f64,
    pub user_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
}

impl Event for TicketUpdated {
    const NAME: &'static str = "ticket.updated";
    const PUBLISHER: &'static str = "tickets";
}

/// The states of an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderStatus {
    /// Placed: the ticket is reserved until the order expires.
    #[serde(rename = "created")]
    Created,
    /// Cancelled by its user or expired: the ticket is free again.
    #[serde(rename = "cancelled")]
    Cancelled,
    /// Part of the API's status set; no service moves an order into it at the moment.
    #[serde(rename = "awaiting:payment")]
    AwaitingPayment,
    /// Paid: the ticket is sold.
    #[serde(rename = "complete")]
    Complete,
}

/// The ticket part of `order.created`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderedTicket {
    pub id: String,
    #[serde(serialize_with = "crate::price::serialize")]
    pub price: f64,
}

/// `order.created`: an order reserves a ticket until `expiresAt` (RFC 3339, UTC).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderCreated {
    pub id: String,
    pub version: u64,
    pub status: OrderStatus,
    pub user_id: String,
    pub expires_at: String,
    pub ticket: OrderedTicket,
}

impl Event for OrderCreated {
    const NAME: &'static str = "order.created";
    const PUBLISHER: &'static str = "orders";
}

/// The ticket part of `order.cancelled`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketRef {
    pub id: String,
}

/// `order.cancelled`: an order was cancelled by its user or expired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCancelled {
    pub id: String,
    pub version: u64,
    pub ticket: TicketRef,
}

impl Event for OrderCancelled {
    const NAME: &'static str = "order.cancelled";
    const PUBLISHER: &'static str = "orders";
}

/// `expiration.complete`: an order's time ran out. The expiration service schedules it and
/// the host publishes it when it is due.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExpirationComplete {
    pub order_id: String,
}

impl Event for ExpirationComplete {
    const NAME: &'static str = "expiration.complete";
    const PUBLISHER: &'static str = "expiration";
}

/// `payment.created`: an order was paid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentCreated {
    pub id: String,
    pub order_id: String,
    pub stripe_id: String,
}

impl Event for PaymentCreated {
    const NAME: &'static str = "payment.created";
    const PUBLISHER: &'static str = "payments";
}

/// `payment.expired`: an order's time ran out with no payment accepted, and none will be:
/// the payments service closed it to payment (on the order's `expiration.complete`), so the
/// orders service may cancel it. A payment accepted before wins over the expiry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentExpired {
    pub order_id: String,
}

impl Event for PaymentExpired {
    const NAME: &'static str = "payment.expired";
    const PUBLISHER: &'static str = "payments";
}

/// `payment.refunded`: a payment that could not stand (its order was cancelled by its user
/// while the payment went through) was refunded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRefunded {
    pub id: String,
    pub order_id: String,
    pub stripe_id: String,
    pub refund_id: String,
}

impl Event for PaymentRefunded {
    const NAME: &'static str = "payment.refunded";
    const PUBLISHER: &'static str = "payments";
}

/// The event name of the NATS trigger's periodic tick (`[application.trigger.nats]
/// tick_subject`): services that publish handle it by relaying their outbox (see `store`).
pub const OUTBOX_RELAY: &str = "outbox.relay";

/// The full subject of an event name: `subject("ticketing", "order.created")` is
/// `ticketing.order.created`.
pub fn subject(prefix: &str, name: &str) -> String {
    format!("{prefix}.{name}")
}

/// The event name in a subject under `prefix`, or `None` for a subject outside it.
pub fn event_name<'a>(prefix: &str, subject: &'a str) -> Option<&'a str> {
    subject
        .strip_prefix(prefix)?
        .strip_prefix('.')
        .filter(|name| !name.is_empty())
}

/// The prefix as configured, without a trailing dot (`ticketing.` and `ticketing` are one
/// prefix), or the default when it is empty.
pub fn normalize_prefix(configured: &str) -> &str {
    match configured.trim().trim_end_matches('.') {
        "" => DEFAULT_EVENTS_PREFIX,
        prefix => prefix,
    }
}

/// The MQTT topic of a subject: `ticketing.order.created` is `ticketing/order/created`.
pub fn mqtt_topic(subject: &str) -> String {
    subject.replace('.', "/")
}

/// The broker address with this connection's `client_id` query parameter. A `client_id`
/// already in the address is replaced: a broker drops the older of two connections with one
/// id, so every connection needs its own.
pub fn address_with_client_id(address: &str, client_id: &str) -> String {
    let (base, query) = address.split_once('?').unwrap_or((address, ""));
    let mut params: Vec<&str> = query
        .split('&')
        .filter(|param| !param.is_empty() && !param.starts_with("client_id="))
        .collect();
    let client_id_param = format!("client_id={client_id}");
    params.push(&client_id_param);
    format!("{base}?{}", params.join("&"))
}

/// The configured subject prefix (`events_prefix`).
pub fn events_prefix() -> Result<String, ApiError> {
    let configured: String = config::variable_or("events_prefix", String::new())?;
    Ok(normalize_prefix(&configured).to_owned())
}

/// The full subject of event `E` under the configured prefix.
pub fn subject_of<E: Event>() -> Result<String, ApiError> {
    Ok(subject(&events_prefix()?, E::NAME))
}

/// An event ready to publish: its full subject and its JSON payload. This is what a write
/// records in its outbox (see `store`), so it is stored as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outgoing {
    pub subject: String,
    pub payload: serde_json::Value,
}

/// Event `E` as it will be published.
pub fn outgoing<E: Event>(event: &E) -> Result<Outgoing, ApiError> {
    Ok(Outgoing {
        subject: subject_of::<E>()?,
        payload: serde_json::to_value(event).context("serializing an event")?,
    })
}

/// Publishes an event (QoS 1, at least once) on its subject.
pub fn publish<E: Event>(event: &E) -> Result<(), ApiError> {
    publish_all(E::PUBLISHER, &[outgoing(event)?])
}

/// Publishes `events` in order over one connection, stopping at the first failure. A
/// failure is the bus being unreachable: a 503 for an HTTP request, a retry later for a
/// listener. `publisher` names the connection's client id.
pub fn publish_all(publisher: &str, events: &[Outgoing]) -> Result<(), ApiError> {
    let Some(first) = events.first() else {
        return Ok(());
    };
    let address: String = config::variable_or("mqtt_address", DEFAULT_MQTT_ADDRESS.to_owned())?;
    let client_id = format!("{publisher}-{}", crate::ids::random_hex(8)?);
    let connection = Connection::open(
        &address_with_client_id(&address, &client_id),
        "",
        "",
        MQTT_KEEP_ALIVE_SECONDS,
    )
    .map_err(|e| {
        let subject = &first.subject;
        ApiError::unavailable(anyhow!(
            "connecting to the event bus to publish {subject}: {e}"
        ))
    })?;
    for event in events {
        let subject = &event.subject;
        let payload = serde_json::to_vec(&event.payload).context("serializing an event")?;
        connection
            .publish(&mqtt_topic(subject), &payload, Qos::AtLeastOnce)
            .map_err(|e| ApiError::unavailable(anyhow!("publishing {subject}: {e}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn round_trip<E: Event + PartialEq + std::fmt::Debug>(event: &E, expected: Value) {
        assert_eq!(
            serde_json::to_value(event).unwrap(),
            expected,
            "{}",
            E::NAME
        );
        let decoded: E = serde_json::from_value(expected).unwrap();
        assert_eq!(&decoded, event);
    }

    const TICKET: &str = "507f1f77bcf86cd799439011";
    const ORDER: &str = "6500000000000000000000aa";
    const USER: &str = "64f0c0de0123456789abcdef";

    #[test]
    fn ticket_events_use_the_contract_field_names() {
        round_trip(
            &TicketCreated {
                id: TICKET.into(),
                version: 0,
                title: "concert".into(),
                price: 20.0,
                user_id: USER.into(),
            },
            json!({"id": TICKET, "version": 0, "title": "concert", "price": 20, "userId": USER}),
        );
        let mut updated = TicketUpdated {
            id: TICKET.into(),
            version: 2,
            title: "concert".into(),
            price: 20.1,
            user_id: USER.into(),
            order_id: Some(ORDER.into()),
        };
        round_trip(
            &updated,
            json!({"id": TICKET, "version": 2, "title": "concert", "price": 20.1,
                   "userId": USER, "orderId": ORDER}),
        );
        updated.order_id = None;
        round_trip(
            &updated,
            json!({"id": TICKET, "version": 2, "title": "concert", "price": 20.1, "userId": USER}),
        );
    }

    #[test]
    fn order_events_use_the_contract_field_names() {
        round_trip(
            &OrderCreated {
                id: ORDER.into(),
                version: 0,
                status: OrderStatus::Created,
                user_id: USER.into(),
                expires_at: "2026-11-25T12:00:00.000Z".into(),
                ticket: OrderedTicket {
                    id: TICKET.into(),
                    price: 10.0,
                },
            },
            json!({"id": ORDER, "version": 0, "status": "created", "userId": USER,
                   "expiresAt": "2026-11-25T12:00:00.000Z",
                   "ticket": {"id": TICKET, "price": 10}}),
        );
        round_trip(
            &OrderCancelled {
                id: ORDER.into(),
                version: 1,
                ticket: TicketRef { id: TICKET.into() },
            },
            json!({"id": ORDER, "version": 1, "ticket": {"id": TICKET}}),
        );
    }

    #[test]
    fn expiration_and_payment_events_use_the_contract_field_names() {
        round_trip(
            &ExpirationComplete {
                order_id: ORDER.into(),
            },
            json!({"orderId": ORDER}),
        );
        round_trip(
            &PaymentCreated {
                id: TICKET.into(),
                order_id: ORDER.into(),
                stripe_id: "ch_123".into(),
            },
            json!({"id": TICKET, "orderId": ORDER, "stripeId": "ch_123"}),
        );
    }

    #[test]
    fn order_statuses_are_written_as_in_the_api() {
        let statuses = [
            (OrderStatus::Created, "created"),
            (OrderStatus::Cancelled, "cancelled"),
            (OrderStatus::AwaitingPayment, "awaiting:payment"),
            (OrderStatus::Complete, "complete"),
        ];
        for (status, text) in statuses {
            assert_eq!(serde_json::to_value(status).unwrap(), json!(text));
            assert_eq!(
                serde_json::from_value::<OrderStatus>(json!(text)).unwrap(),
                status
            );
        }
        assert!(serde_json::from_value::<OrderStatus>(json!("paid")).is_err());
    }

    #[test]
    fn extra_fields_in_an_event_are_ignored() {
        let event: ExpirationComplete =
            serde_json::from_value(json!({"orderId": ORDER, "firedAt": 1})).unwrap();
        assert_eq!(event.order_id, ORDER);
    }

    #[test]
    fn subjects_are_the_prefix_and_the_event_name() {
        assert_eq!(
            subject("ticketing", OrderCreated::NAME),
            "ticketing.order.created"
        );
        assert_eq!(
            event_name("ticketing", "ticketing.order.created"),
            Some("order.created")
        );
        assert_eq!(event_name("ticketing", "other.order.created"), None);
        assert_eq!(event_name("ticketing", "ticketingx.order.created"), None);
        assert_eq!(event_name("ticketing", "ticketing."), None);
        assert_eq!(event_name("ticketing", "ticketing"), None);
        assert_eq!(
            event_name("staging.ticketing", "staging.ticketing.payment.created"),
            Some("payment.created")
        );
    }

    #[test]
    fn a_prefix_may_be_written_with_a_trailing_dot() {
        assert_eq!(normalize_prefix("ticketing."), "ticketing");
        assert_eq!(normalize_prefix(" staging "), "staging");
        assert_eq!(normalize_prefix(""), DEFAULT_EVENTS_PREFIX);
        assert_eq!(normalize_prefix("."), DEFAULT_EVENTS_PREFIX);
    }

    #[test]
    fn topics_are_subjects_with_slashes() {
        assert_eq!(
            mqtt_topic("ticketing.order.created"),
            "ticketing/order/created"
        );
    }

    #[test]
    fn every_connection_gets_its_own_client_id() {
        assert_eq!(
            address_with_client_id("mqtt://127.0.0.1:1883", "orders-ab12"),
            "mqtt://127.0.0.1:1883?client_id=orders-ab12"
        );
        assert_eq!(
            address_with_client_id("mqtt://nats:1883?keep=1", "orders-ab12"),
            "mqtt://nats:1883?keep=1&client_id=orders-ab12"
        );
        assert_eq!(
            address_with_client_id("mqtt://nats:1883?client_id=fixed&keep=1", "tickets-01"),
            "mqtt://nats:1883?keep=1&client_id=tickets-01"
        );
    }
}
