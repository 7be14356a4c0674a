//! The event bus: durable, at-least-once delivery of events to named durable consumers.
//!
//! [`EventBus`] is what the rest of the host uses (MQTT publishing from guests, the timers,
//! the NATS trigger). Two implementations with the same semantics:
//! - [`NatsEventBus`]: a NATS JetStream stream and durable pull consumers, for several host
//!   replicas sharing one server (each message of a durable consumer goes to one replica);
//! - [`EmbeddedEventBus`]: a durable queue inside the host's embedded state file, for running
//!   with no server at all.
//!
//! Semantics both keep: `publish` returns once the event is stored; a repeated `message_id`
//! within the duplicate window is dropped; each durable consumer gets every matching event
//! (NATS subject rules, see [`subject`]); a delivery not acknowledged within `ack_wait` is
//! delivered again, at most `max_deliver` times in all; `nak(delay)` asks for redelivery after
//! `delay`; `term` drops it; the delivery count is reported with each delivery.

mod embedded;
pub mod held;
pub mod nats;
pub mod subject;

pub use self::embedded::EmbeddedEventBus;
pub use self::nats::NatsEventBus;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;

use super::key_value::EmbeddedState;

/// One event to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// A NATS subject without wildcards, e.g. `ticketing.order.created`.
    pub subject: String,
    pub payload: Vec<u8>,
    /// Deduplication id (`Nats-Msg-Id`): a repeat within the duplicate window is dropped.
    /// Empty means "no deduplication".
    pub message_id: String,
}

#[async_trait]
pub trait EventBus: Send + Sync {
    /// Durably appends the event; returns once it is stored (JetStream PubAck / committed to
    /// disk). A repeated `message_id` within the duplicate window is dropped and still
    /// returns `Ok`.
    async fn publish(&self, event: Event) -> anyhow::Result<()>;

    /// `publish`, with the W3C `traceparent` of the span publishing it, for the consumer's
    /// span to continue the trace. Only JetStream carries it (a message header); the
    /// embedded queue drops it.
    async fn publish_traced(&self, event: Event, _traceparent: Option<&str>) -> anyhow::Result<()> {
        self.publish(event).await
    }

    /// Whether an event on `subject` would be stored, i.e. the stream captures it; checked
    /// before accepting work that publishes later (a timer), so that it fails at once.
    fn captures(&self, _subject: &str) -> bool {
        true
    }

    /// Opens (creating if missing) the durable consumer `name` receiving `subject` (which may
    /// use the `*` and `>` wildcards). Several handles on one name share its deliveries: each
    /// event goes to one of them.
    async fn consume(
        &self,
        name: &str,
        subject: &str,
        options: &ConsumerOptions,
    ) -> anyhow::Result<Box<dyn Consumer>>;

    /// Removes the durable consumers not named in `keep`, with the events they still owe,
    /// and returns their names: a listener taken out of the app must not keep collecting
    /// copies that nobody will consume. Only the embedded queue does this (its file belongs
    /// to one app); a JetStream stream may be shared, and its events age out anyway.
    async fn retire_consumers(&self, _keep: &[String]) -> anyhow::Result<Vec<String>> {
        Ok(Vec::new())
    }

    /// Whether the bus answers now (readiness). The embedded queue lives in the state file
    /// the key-value check already covers; JetStream is asked for its account info.
    async fn check(&self) -> anyhow::Result<()> {
        Ok(())
    }

    /// Where the durable consumer `name` stands (it must exist), or `None` from a backend
    /// that does not tell (the embedded queue).
    async fn consumer_lag(&self, _name: &str) -> anyhow::Result<Option<ConsumerLag>> {
        Ok(None)
    }
}

/// The backlog of one durable consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerLag {
    /// Events stored for it and not delivered yet.
    pub pending: u64,
    /// Events delivered and not settled yet.
    pub ack_pending: u64,
}

/// Redelivery settings of a durable consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerOptions {
    /// Deliveries of one event in all (the first included); at least 1. After the last one
    /// expires or is nak'ed, the event is not delivered to this consumer again.
    pub max_deliver: u32,
    /// How long a delivery may stay unacknowledged before it is delivered again.
    pub ack_wait: Duration,
}

impl ConsumerOptions {
    fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.max_deliver >= 1, "max_deliver must be at least 1");
        anyhow::ensure!(!self.ack_wait.is_zero(), "ack_wait must be more than zero");
        Ok(())
    }
}

/// One durable consumer's stream of deliveries.
#[async_trait]
pub trait Consumer: Send {
    /// Waits for the next delivery. An error may be transient (e.g. a lost connection):
    /// callers log it, wait and call `next` again (or open the consumer again).
    async fn next(&mut self) -> anyhow::Result<Delivery>;
}

/// One delivery of one event to one consumer. Settle it with exactly one of
/// [`ack`](Self::ack), [`nak`](Self::nak) or [`term`](Self::term); dropping it unsettled
/// means it is delivered again after `ack_wait`.
pub struct Delivery {
    pub subject: String,
    pub payload: Vec<u8>,
    /// 1 for the first delivery, 2 for the first redelivery, ...
    pub delivered: u32,
    /// The event's position in the stream: unique per stored event, the same for every
    /// delivery of it (used to derive ids such as the dead-letter message id).
    pub sequence: u64,
    /// The W3C `traceparent` the event was published with, if its bus carries one.
    pub traceparent: Option<String>,
    acker: Box<dyn Acker>,
}

/// How a backend settles one delivery.
#[async_trait]
pub trait Acker: Send + Sync {
    async fn ack(self: Box<Self>) -> anyhow::Result<()>;
    async fn nak(self: Box<Self>, delay: Duration) -> anyhow::Result<()>;
    async fn term(self: Box<Self>) -> anyhow::Result<()>;
    /// Still working on it: restart the delivery's `ack_wait`.
    async fn in_progress(&self) -> anyhow::Result<()>;
}

impl Delivery {
    pub fn new(
        subject: String,
        payload: Vec<u8>,
        delivered: u32,
        sequence: u64,
        acker: Box<dyn Acker>,
    ) -> Delivery {
        Delivery {
            subject,
            payload,
            delivered,
            sequence,
            traceparent: None,
            acker,
        }
    }

    /// The delivery, with the trace context its event was published with.
    pub fn with_traceparent(mut self, traceparent: Option<String>) -> Delivery {
        self.traceparent = traceparent;
        self
    }

    /// Done: never deliver it again.
    pub async fn ack(self) -> anyhow::Result<()> {
        self.acker.ack().await
    }

    /// Not now: deliver it again after `delay` (unless this was the last allowed delivery).
    pub async fn nak(self, delay: Duration) -> anyhow::Result<()> {
        self.acker.nak(delay).await
    }

    /// Never: stop delivering it, without it counting as handled.
    pub async fn term(self) -> anyhow::Result<()> {
        self.acker.term().await
    }

    /// Still being handled: not to be delivered again for another `ack_wait`. Lets
    /// `ack_wait` be short (a crashed host's events come back quickly) while a handler may
    /// run longer.
    pub async fn in_progress(&self) -> anyhow::Result<()> {
        self.acker.in_progress().await
    }
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("subject", &self.subject)
            .field("payload_len", &self.payload.len())
            .field("delivered", &self.delivered)
            .field("sequence", &self.sequence)
            .finish_non_exhaustive()
    }
}

/// How long JetStream keeps events by default: a week, so a stream does not grow without
/// bound while a consumer down for days still finds its backlog.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// The stream that stores events: its name (JetStream only), the subjects it captures, its
/// duplicate window and how long it keeps an event (JetStream only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamConfig {
    pub name: String,
    /// Publishing outside these subjects is an error, on both backends.
    pub subjects: Vec<String>,
    pub duplicate_window: Duration,
    /// JetStream keeps every event (acknowledged or not, dead letters included) this long;
    /// zero keeps them forever. The embedded queue drops an event once every consumer has
    /// settled it.
    pub max_age: Duration,
    /// Copies JetStream keeps of the stream, on as many servers of a cluster (1 to 5; an
    /// odd number survives the loss of a minority). Applied when the stream is created.
    pub replicas: usize,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            name: "TICKETING".to_owned(),
            subjects: vec!["ticketing.>".to_owned()],
            duplicate_window: Duration::from_secs(120),
            max_age: DEFAULT_MAX_AGE,
            replicas: 1,
        }
    }
}

impl StreamConfig {
    /// Checks the name and subjects.
    pub fn check(&self) -> anyhow::Result<()> {
        subject::check_name(&self.name).context("stream name")?;
        anyhow::ensure!(
            !self.subjects.is_empty(),
            "the stream needs at least one subject"
        );
        for filter in &self.subjects {
            subject::check_filter(filter).context("stream subject")?;
        }
        Ok(())
    }

    /// Whether the stream captures `subject` (no wildcards).
    pub fn captures(&self, subject: &str) -> bool {
        self.subjects
            .iter()
            .any(|filter| subject::matches(filter, subject))
    }

    /// Whether every subject `filter` matches is captured by the stream.
    pub fn covers(&self, filter: &str) -> bool {
        self.subjects
            .iter()
            .any(|subjects| subject::covers(subjects, filter))
    }

    /// What every bus checks before opening a consumer: a valid name and filter, and a
    /// filter within the stream (NATS itself would accept a wider one, e.g. `>`, part of
    /// which could never be delivered).
    pub fn check_consumer(
        &self,
        name: &str,
        filter: &str,
        options: &ConsumerOptions,
    ) -> anyhow::Result<()> {
        subject::check_name(name).context("consumer name")?;
        subject::check_filter(filter)?;
        anyhow::ensure!(
            self.covers(filter),
            "consumer {name}: filter {filter:?} is not within the event stream's subjects {:?}",
            self.subjects
        );
        options.check()
    }
}

/// How long start-up keeps trying a bus that does not answer yet: a JetStream cluster
/// electing a stream leader (seconds), or a server starting beside the host.
pub const START_RETRY_FOR: Duration = Duration::from_secs(30);

/// Runs `attempt` until it succeeds or [`START_RETRY_FOR`] has passed, logging each failure;
/// the last error is returned.
pub async fn retry_at_start<T, F, Fut>(what: &str, mut attempt: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let deadline = tokio::time::Instant::now() + START_RETRY_FOR;
    let mut wait = Duration::from_millis(500);
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(error) if tokio::time::Instant::now() + wait < deadline => {
                tracing::warn!(
                    error = %format!("{error:#}"),
                    "{what} failed; trying again in {wait:?}"
                );
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            Err(error) => return Err(error),
        }
    }
}

/// Opens the host's event bus: JetStream at `nats_url`, or the embedded queue in `embedded`
/// when the URL is empty. A NATS server is connected to here, so an unreachable one fails
/// start-up with an error naming it.
pub async fn open(
    nats_url: &str,
    stream: &StreamConfig,
    embedded: &EmbeddedState,
) -> anyhow::Result<Arc<dyn EventBus>> {
    let bus = open_bus(nats_url, stream, embedded).await?;
    Ok(match held::from_env()? {
        Some((suffix, hold)) => {
            tracing::warn!(
                "test mode: publishes to *{suffix} fail for {hold:?} from the first one ({})",
                held::ENV_VAR
            );
            held::wrap(suffix, hold, bus)
        }
        None => bus,
    })
}

async fn open_bus(
    nats_url: &str,
    stream: &StreamConfig,
    embedded: &EmbeddedState,
) -> anyhow::Result<Arc<dyn EventBus>> {
    if nats_url.is_empty() {
        let bus = EmbeddedEventBus::open(embedded, stream.clone())?;
        tracing::info!(
            file = %embedded.path().display(),
            subjects = ?stream.subjects,
            "event bus ready: embedded queue"
        );
        Ok(Arc::new(bus))
    } else {
        let shown_url = nats_url
            .split(',')
            .map(|server| super::key_value::redact_url(server.trim()))
            .collect::<Vec<_>>()
            .join(",");
        let bus = retry_at_start("connecting to NATS JetStream", || {
            NatsEventBus::connect(nats_url, stream)
        })
        .await
        .with_context(|| format!("event bus: cannot use NATS JetStream at {shown_url}"))?;
        tracing::info!(
            url = %shown_url,
            stream = %stream.name,
            subjects = ?stream.subjects,
            "event bus ready: NATS JetStream"
        );
        Ok(Arc::new(bus))
    }
}
