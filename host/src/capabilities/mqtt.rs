//! Publishing for guests: Spin's outbound MQTT, `fermyon:spin/mqtt@2.0.0` (the `mqtt-host`
//! world of `wit/platform.wit`), served by the host's [`EventBus`] instead of an MQTT broker.
//!
//! Components publish with Spin's MQTT API so that they run unchanged under Spin, where NATS
//! serves MQTT natively. Here the broker is skipped: `open` only checks and records the
//! address, and `publish` maps the topic onto a NATS subject the way NATS's MQTT gateway does
//! (`ticketing/order/created` → `ticketing.order.created`) and appends the event to the bus,
//! returning once it is stored. Every QoS gets that (at-least-once or better) treatment.
//!
//! The deduplication id is derived from the payload (API.md: `Nats-Msg-Id` = subject +
//! entity id + version), so a handler that re-publishes the same event after a redelivery
//! publishes it once: see [`message_id`].

use std::sync::Arc;

use sha2::{Digest as _, Sha256};
use wasmtime::component::{HasSelf, Linker, Resource, ResourceTable};

use self::bindings::fermyon::spin::mqtt::{self, Error, Payload, Qos};
use crate::backends::event_bus::{subject, Event, EventBus};

/// Rust bindings of the `mqtt-host` world, generated from the WIT in `wit/`.
pub mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "ticketing:platform/mqtt-host",
        // Publishing does I/O; `trappable` as in the other capabilities.
        imports: { default: async | trappable },
        with: {
            "fermyon:spin/mqtt.connection": super::MqttConnection,
        },
    });
}

/// How many connections one instance may hold open at once: a guest leaking them gets
/// `too-many-connections` instead of growing host memory.
const MAX_OPEN_CONNECTIONS: usize = 64;

/// Host side of a `connection` resource: the address it was opened with (for logs).
pub struct MqttConnection {
    address: String,
}

/// Per-instance state of the MQTT capability.
pub struct MqttCtx {
    bus: Arc<dyn EventBus>,
    table: ResourceTable,
    open_connections: usize,
}

impl MqttCtx {
    pub fn new(bus: Arc<dyn EventBus>) -> Self {
        Self {
            bus,
            table: ResourceTable::new(),
            open_connections: 0,
        }
    }
}

/// Adds `fermyon:spin/mqtt@2.0.0` to `linker`; `mqtt` picks the context out of the store's
/// data.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    mqtt: fn(&mut T) -> &mut MqttCtx,
) -> anyhow::Result<()> {
    mqtt::add_to_linker::<T, HasSelf<MqttCtx>>(linker, mqtt)?;
    Ok(())
}

impl mqtt::Host for MqttCtx {}

impl mqtt::HostConnection for MqttCtx {
    async fn open(
        &mut self,
        address: String,
        _username: String,
        _password: String,
        _keep_alive_interval_in_secs: u64,
    ) -> wasmtime::Result<Result<Resource<MqttConnection>, Error>> {
        if !is_valid_address(&address) {
            return Ok(Err(Error::InvalidAddress));
        }
        if self.open_connections >= MAX_OPEN_CONNECTIONS {
            return Ok(Err(Error::TooManyConnections));
        }
        let connection = self.table.push(MqttConnection { address })?;
        self.open_connections += 1;
        Ok(Ok(connection))
    }

    async fn publish(
        &mut self,
        connection: Resource<MqttConnection>,
        topic: String,
        payload: Payload,
        _qos: Qos,
    ) -> wasmtime::Result<Result<(), Error>> {
        // A bad handle traps the guest (as with the other resources).
        let address = &self.table.get(&connection)?.address;
        let subject = match topic_to_subject(&topic) {
            Ok(subject) => subject,
            Err(reason) => return Ok(Err(Error::Other(reason))),
        };
        crash_point(&subject).await;
        let event = Event {
            message_id: message_id(&subject, &payload),
            subject,
            payload,
        };
        let subject = event.subject.clone();
        let traceparent = crate::observability::traces::current_traceparent();
        match self.bus.publish_traced(event, traceparent.as_deref()).await {
            Ok(()) => Ok(Ok(())),
            Err(error) => {
                tracing::warn!(
                    %subject,
                    mqtt_address = %address,
                    error = %format!("{error:#}"),
                    "mqtt: publishing to the event bus failed"
                );
                Ok(Err(Error::ConnectionFailed(format!(
                    "publishing to {subject} failed: {error:#}"
                ))))
            }
        }
    }

    async fn drop(&mut self, connection: Resource<MqttConnection>) -> wasmtime::Result<()> {
        self.table.delete(connection)?;
        self.open_connections = self.open_connections.saturating_sub(1);
        Ok(())
    }
}

/// For tests of the outbox: with `TICKETING_TEST_CRASH_BEFORE_PUBLISH=<suffix>`, the host
/// aborts (as if killed) the first time a guest publishes on a subject ending in `<suffix>`,
/// that is after the guest wrote the change the event announces and before the event is out.
/// The change is made durable first: on the embedded state a crash otherwise takes the
/// unanswered write with it (see `backends::durable_barrier`), and the point under test is
/// a write on disk whose event is not out, which another request's barrier can make happen.
pub const CRASH_BEFORE_PUBLISH_ENV: &str = "TICKETING_TEST_CRASH_BEFORE_PUBLISH";

async fn crash_point(subject: &str) {
    static SUFFIX: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let suffix = SUFFIX.get_or_init(|| {
        std::env::var(CRASH_BEFORE_PUBLISH_ENV)
            .ok()
            .filter(|suffix| !suffix.is_empty())
    });
    if suffix
        .as_deref()
        .is_some_and(|suffix| subject.ends_with(suffix))
    {
        if let Err(error) = crate::backends::durable_barrier().await {
            eprintln!("{CRASH_BEFORE_PUBLISH_ENV}: the write is not durable: {error:#}");
        }
        eprintln!("{CRASH_BEFORE_PUBLISH_ENV}: aborting before publishing {subject}");
        std::process::abort();
    }
}

/// `mqtt://host[:port][/...][?...]` or `mqtts://...`, optionally with `user:pass@`.
fn is_valid_address(address: &str) -> bool {
    let Some((scheme, rest)) = address.split_once("://") else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("mqtt") && !scheme.eq_ignore_ascii_case("mqtts") {
        return false;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_userinfo, host_port)| host_port);
    let (host, port) = if let Some(bracketed) = host_port.strip_prefix('[') {
        // An IPv6 literal, `[::1]:1883`.
        let Some((ip, after)) = bracketed.split_once(']') else {
            return false;
        };
        match after {
            "" => (ip, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (ip, Some(port)),
                None => return false,
            },
        }
    } else {
        match host_port.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        }
    };
    let host_ok = !host.is_empty()
        && !host
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '@');
    let port_ok = port.is_none_or(|port| port.parse::<u16>().is_ok());
    host_ok && port_ok
}

/// The NATS subject of an MQTT topic: levels become tokens (`a/b/c` → `a.b.c`). Topics that
/// have no such subject (empty levels, `.` inside a level, the `+`/`#` wildcards, which
/// cannot be published to) are refused with the reason.
pub fn topic_to_subject(topic: &str) -> Result<String, String> {
    if topic.is_empty() {
        return Err("the topic is empty".to_owned());
    }
    for level in topic.split('/') {
        if level.is_empty() {
            return Err(format!(
                "topic {topic:?}: empty level (leading, trailing or doubled `/`)"
            ));
        }
        if level.contains(['+', '#']) {
            return Err(format!("topic {topic:?}: wildcards cannot be published to"));
        }
        if level.contains('.') {
            return Err(format!(
                "topic {topic:?}: `.` is not allowed inside a level (levels become NATS \
                 subject tokens)"
            ));
        }
    }
    let subject = topic.replace('/', ".");
    subject::check_subject(&subject).map_err(|error| format!("topic {topic:?}: {error}"))?;
    Ok(subject)
}

/// The deduplication id of an event: `<subject>:<entity id>[:<version>]` when the payload is
/// a JSON object with an `id` (or, failing that, an `orderId`) and maybe a `version`;
/// otherwise `<subject>:<sha256 of the payload, hex>`. Either way, publishing the same event
/// twice gives the same id, and two different events (per API.md's versioning) differ.
pub fn message_id(subject: &str, payload: &[u8]) -> String {
    if let Ok(serde_json::Value::Object(object)) = serde_json::from_slice(payload) {
        let entity = ["id", "orderId"]
            .iter()
            .find_map(|key| object.get(*key).and_then(scalar));
        if let Some(entity) = entity {
            return match object.get("version").and_then(scalar) {
                Some(version) => format!("{subject}:{entity}:{version}"),
                None => format!("{subject}:{entity}"),
            };
        }
    }
    let digest = Sha256::digest(payload);
    let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("{subject}:{hex}")
}

/// A non-empty string or a number, as id text.
fn scalar(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(text) if !text.is_empty() => Some(text.clone()),
        serde_json::Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mqtt::HostConnection as _;

    use crate::backends::event_bus::{ConsumerOptions, EmbeddedEventBus, StreamConfig};
    use crate::backends::key_value::EmbeddedState;

    #[test]
    fn topics_map_to_subjects() {
        assert_eq!(
            topic_to_subject("ticketing/order/created").unwrap(),
            "ticketing.order.created"
        );
        assert_eq!(topic_to_subject("single").unwrap(), "single");
        assert_eq!(
            topic_to_subject("ticketing/dead-letter/orders").unwrap(),
            "ticketing.dead-letter.orders"
        );
        for bad in [
            "",
            "/ticketing/order",
            "ticketing/order/",
            "ticketing//order",
            "ticketing/+/created",
            "ticketing/#",
            "ticketing.order/created",
            "ticketing/order created",
        ] {
            assert!(topic_to_subject(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn message_ids_follow_entity_and_version() {
        let subject = "ticketing.ticket.updated";
        assert_eq!(
            message_id(subject, br#"{"id":"t1","version":3,"title":"x"}"#),
            "ticketing.ticket.updated:t1:3"
        );
        // Key order and other fields do not matter; the version does.
        assert_eq!(
            message_id(subject, br#"{"title":"y","version":3,"id":"t1"}"#),
            "ticketing.ticket.updated:t1:3"
        );
        assert_ne!(
            message_id(subject, br#"{"id":"t1","version":4}"#),
            message_id(subject, br#"{"id":"t1","version":3}"#)
        );
        // payment.created: an id, no version.
        assert_eq!(
            message_id(
                "ticketing.payment.created",
                br#"{"id":"p1","orderId":"o1"}"#
            ),
            "ticketing.payment.created:p1"
        );
        // expiration.complete: only an orderId.
        assert_eq!(
            message_id("ticketing.expiration.complete", br#"{"orderId":"o1"}"#),
            "ticketing.expiration.complete:o1"
        );
        assert_eq!(
            message_id(subject, br#"{"id":42,"version":0}"#),
            "ticketing.ticket.updated:42:0"
        );
    }

    #[test]
    fn message_ids_of_other_payloads_hash_them() {
        let subject = "ticketing.misc";
        // sha256("hello")
        assert_eq!(
            message_id(subject, b"hello"),
            "ticketing.misc:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        for payload in [&b"[1,2]"[..], br#"{"title":"no id"}"#, br#"{"id":""}"#, b""] {
            let id = message_id(subject, payload);
            assert_eq!(id.len(), subject.len() + 1 + 64, "{id}");
        }
        assert_ne!(message_id(subject, b"a"), message_id(subject, b"b"));
    }

    #[test]
    fn addresses() {
        for good in [
            "mqtt://127.0.0.1:1883",
            "mqtt://localhost:1883?client_id=orders-ab12",
            "mqtts://user:secret@broker.example.com:8883/path?x=1",
            "MQTT://nats",
            "mqtt://[::1]:1883",
        ] {
            assert!(is_valid_address(good), "{good}");
        }
        for bad in [
            "",
            "127.0.0.1:1883",
            "http://localhost:1883",
            "mqtt://",
            "mqtt://:1883",
            "mqtt://host:port",
            "mqtt://host:70000",
            "mqtt://[::1",
            "mqtt://ho st",
        ] {
            assert!(!is_valid_address(bad), "{bad}");
        }
    }

    #[tokio::test]
    async fn publish_appends_to_the_event_bus_once_per_event() {
        let dir = tempfile::tempdir().unwrap();
        let state = EmbeddedState::open(dir.path().join("state.redb")).unwrap();
        let bus = Arc::new(EmbeddedEventBus::open(&state, StreamConfig::default()).unwrap());
        let options = ConsumerOptions {
            max_deliver: 1,
            ack_wait: std::time::Duration::from_secs(30),
        };
        let mut consumer = bus
            .consume("listener", "ticketing.>", &options)
            .await
            .unwrap();
        let mut ctx = MqttCtx::new(bus.clone());

        assert!(matches!(
            ctx.open("nats://x".into(), "".into(), "".into(), 30)
                .await
                .unwrap(),
            Err(Error::InvalidAddress)
        ));
        let connection = ctx
            .open(
                "mqtt://127.0.0.1:1883?client_id=t-1".into(),
                "".into(),
                "".into(),
                30,
            )
            .await
            .unwrap()
            .unwrap();
        let rep = connection.rep();
        let payload = br#"{"id":"t1","version":0}"#.to_vec();
        for _ in 0..2 {
            // A retried publish of one event: stored once.
            ctx.publish(
                Resource::new_borrow(rep),
                "ticketing/ticket/created".into(),
                payload.clone(),
                Qos::AtLeastOnce,
            )
            .await
            .unwrap()
            .unwrap();
        }
        assert!(matches!(
            ctx.publish(
                Resource::new_borrow(rep),
                "ticketing/+/created".into(),
                payload.clone(),
                Qos::AtMostOnce,
            )
            .await
            .unwrap(),
            Err(Error::Other(_))
        ));
        // Outside the stream's subjects: the bus refuses it.
        assert!(matches!(
            ctx.publish(
                Resource::new_borrow(rep),
                "elsewhere/x".into(),
                payload.clone(),
                Qos::AtLeastOnce,
            )
            .await
            .unwrap(),
            Err(Error::ConnectionFailed(_))
        ));
        ctx.drop(connection).await.unwrap();

        let delivery = consumer.next().await.unwrap();
        assert_eq!(delivery.subject, "ticketing.ticket.created");
        assert_eq!(delivery.payload, payload);
        delivery.ack().await.unwrap();
        let again = tokio::time::timeout(std::time::Duration::from_millis(300), consumer.next());
        assert!(
            again.await.is_err(),
            "the retried publish was delivered too"
        );
    }

    /// The world's one import gets a definition.
    #[test]
    fn add_to_linker_defines_the_world() {
        let engine = wasmtime::Engine::default();
        let mut linker = Linker::<MqttCtx>::new(&engine);
        add_to_linker(&mut linker, |ctx| ctx).unwrap();
    }
}
