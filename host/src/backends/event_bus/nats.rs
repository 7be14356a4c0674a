//! The JetStream event bus: one file-backed stream for every event subject, one durable pull
//! consumer per consumer name.
//!
//! Durable consumers live in the server, so every host replica that opens the same name
//! shares its deliveries (each message goes to one replica) and a restarted host picks up
//! where the previous one left off: what it had not acknowledged is redelivered after
//! `ack_wait` (short: a handler that runs longer keeps its delivery with progress acks). Deduplication is JetStream's own (`Nats-Msg-Id` and the stream's duplicate
//! window).

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer, stream, AckKind};
use async_trait::async_trait;
use futures_util::StreamExt as _;

use super::super::key_value::redact_url;
use super::{
    subject, Acker, Consumer, ConsumerLag, ConsumerOptions, Delivery, Event, EventBus, StreamConfig,
};

/// Messages a consumer handle asks the server for at once. Small, because pulled messages
/// are already on the clock (`ack_wait`) and sit in this replica while other replicas may be
/// idle.
const PULL_BATCH: usize = 4;

/// The message header carrying an event's W3C trace context.
const TRACEPARENT: &str = "traceparent";

/// How long connecting to the server may take at start-up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The JetStream event bus.
#[derive(Clone)]
pub struct NatsEventBus {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    stream: stream::Stream,
    /// The subjects the stream really has (it may predate our config).
    stream_subjects: StreamConfig,
}

impl NatsEventBus {
    /// Connects to `url` (e.g. `nats://127.0.0.1:4222`, or several servers of a cluster
    /// separated by commas, as NATS clients take them) and gets or creates the stream. The
    /// servers are tried in turn: one that answers is enough, and the client fails over to
    /// the others (and to those the cluster tells it of) when it loses its server.
    ///
    /// An existing stream is used as it is (operators may have tuned its limits or
    /// replicas); if it does not capture all of `config.subjects`, publishing to the missing
    /// ones fails, so that is logged at start-up.
    pub async fn connect(url: &str, config: &StreamConfig) -> anyhow::Result<Self> {
        config.check()?;
        let servers = server_addresses(url)?;
        let client = async_nats::ConnectOptions::new()
            .name("ticketing-host")
            .connection_timeout(CONNECT_TIMEOUT)
            .connect(servers)
            .await
            .context("cannot connect to any of the servers")?;
        let jetstream = jetstream::new(client.clone());
        let mut stream = jetstream
            .get_or_create_stream(stream::Config {
                name: config.name.clone(),
                subjects: config.subjects.clone(),
                storage: stream::StorageType::File,
                duplicate_window: config.duplicate_window,
                max_age: config.max_age,
                num_replicas: config.replicas,
                ..Default::default()
            })
            .await
            .with_context(|| format!("getting or creating stream {}", config.name))?;
        let existing = stream
            .info()
            .await
            .context("reading the stream's info")?
            .config
            .subjects
            .clone();
        for wanted in &config.subjects {
            if !existing.contains(wanted) {
                tracing::warn!(
                    stream = %config.name,
                    subjects = ?existing,
                    "the existing stream does not list subject {wanted:?}; events on it may \
                     not be stored"
                );
            }
        }
        Ok(NatsEventBus {
            client,
            jetstream,
            stream,
            stream_subjects: StreamConfig {
                subjects: existing,
                ..config.clone()
            },
        })
    }

    /// The underlying client (e.g. to flush before shutdown).
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }
}

#[async_trait]
impl EventBus for NatsEventBus {
    async fn publish(&self, event: Event) -> anyhow::Result<()> {
        self.publish_traced(event, None).await
    }

    async fn publish_traced(&self, event: Event, traceparent: Option<&str>) -> anyhow::Result<()> {
        subject::check_subject(&event.subject)?;
        // While the server is away the client would queue the message and wait for the
        // stream's acknowledgement until the JetStream timeout: fail now instead. A guest's
        // request then answers at once (its outbox keeps the event for later).
        if self.client.connection_state() != async_nats::connection::State::Connected {
            anyhow::bail!(
                "publishing to {}: not connected to NATS (reconnecting)",
                event.subject
            );
        }
        // The event may announce a write to the embedded state: it must not outlive it.
        crate::backends::durable_barrier().await?;
        let mut message = jetstream::message::PublishMessage::build().payload(event.payload.into());
        if !event.message_id.is_empty() {
            message = message.message_id(&event.message_id);
        }
        if let Some(traceparent) = traceparent {
            message = message.header(TRACEPARENT, traceparent);
        }
        let subject = event.subject;
        // The first await sends; the second waits for the stream's PubAck (stored, or
        // recognised as a duplicate).
        let stored = self
            .jetstream
            .send_publish(subject.clone(), message)
            .await
            .with_context(|| format!("publishing to {subject}"))?;
        stored
            .await
            .with_context(|| format!("publishing to {subject}: not stored"))?;
        Ok(())
    }

    fn captures(&self, subject: &str) -> bool {
        self.stream_subjects.captures(subject)
    }

    async fn consume(
        &self,
        name: &str,
        subject: &str,
        options: &ConsumerOptions,
    ) -> anyhow::Result<Box<dyn Consumer>> {
        self.stream_subjects
            .check_consumer(name, subject, options)?;
        // Create or update: a changed ack_wait or max_deliver in the config takes effect.
        let consumer = self
            .stream
            .create_consumer(consumer::pull::Config {
                durable_name: Some(name.to_owned()),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: options.ack_wait,
                max_deliver: i64::from(options.max_deliver),
                filter_subject: subject.to_owned(),
                ..Default::default()
            })
            .await
            .with_context(|| format!("creating durable consumer {name} on {subject}"))?;
        let messages = pull(&consumer).await?;
        Ok(Box::new(NatsConsumer { consumer, messages }))
    }

    async fn check(&self) -> anyhow::Result<()> {
        // A JetStream API round trip: the connection is up and the stream answers.
        let mut stream = self.stream.clone();
        stream.info().await.context("JetStream stream info")?;
        Ok(())
    }

    async fn consumer_lag(&self, name: &str) -> anyhow::Result<Option<ConsumerLag>> {
        let info = self
            .stream
            .consumer_info(name)
            .await
            .with_context(|| format!("durable consumer {name}"))?;
        Ok(Some(ConsumerLag {
            pending: info.num_pending,
            ack_pending: info.num_ack_pending as u64,
        }))
    }
}

/// The servers of a NATS URL list: `nats://a:4222,nats://b:4222` (blanks around commas
/// allowed).
pub fn server_addresses(url: &str) -> anyhow::Result<Vec<async_nats::ServerAddr>> {
    let servers: Vec<async_nats::ServerAddr> = url
        .split(',')
        .map(str::trim)
        .filter(|server| !server.is_empty())
        .map(|server| {
            server
                .parse()
                .with_context(|| format!("NATS server URL {:?}", redact_url(server)))
        })
        .collect::<anyhow::Result<_>>()?;
    anyhow::ensure!(!servers.is_empty(), "no NATS server URL in {url:?}");
    Ok(servers)
}

async fn pull(consumer: &consumer::PullConsumer) -> anyhow::Result<consumer::pull::Stream> {
    consumer
        .stream()
        .max_messages_per_batch(PULL_BATCH)
        .messages()
        .await
        .context("pulling messages")
}

struct NatsConsumer {
    consumer: consumer::PullConsumer,
    messages: consumer::pull::Stream,
}

#[async_trait]
impl Consumer for NatsConsumer {
    async fn next(&mut self) -> anyhow::Result<Delivery> {
        loop {
            match self.messages.next().await {
                Some(Ok(message)) => {
                    let info = message.info().map_err(anyhow::Error::from_boxed)?;
                    let delivered = u32::try_from(info.delivered).unwrap_or(u32::MAX);
                    let sequence = info.stream_sequence;
                    let traceparent = message
                        .headers
                        .as_ref()
                        .and_then(|headers| headers.get(TRACEPARENT))
                        .map(|value| value.as_str().to_owned());
                    return Ok(Delivery::new(
                        message.subject.to_string(),
                        message.payload.to_vec(),
                        delivered,
                        sequence,
                        Box::new(NatsAcker(message)),
                    )
                    .with_traceparent(traceparent));
                }
                Some(Err(error)) => {
                    return Err(error).context("receiving from JetStream");
                }
                // The pull stream ended (e.g. after a reconnect): start a new one.
                None => self.messages = pull(&self.consumer).await?,
            }
        }
    }
}

struct NatsAcker(jetstream::Message);

#[async_trait]
impl Acker for NatsAcker {
    async fn ack(self: Box<Self>) -> anyhow::Result<()> {
        // The handler's writes to the embedded state must be durable before NATS forgets
        // the event. Waits for the server to confirm, so an ack that returned Ok is not lost.
        crate::backends::durable_barrier().await?;
        self.0
            .double_ack()
            .await
            .map_err(anyhow::Error::from_boxed)
            .context("acknowledging")
    }

    async fn nak(self: Box<Self>, delay: Duration) -> anyhow::Result<()> {
        let delay = (!delay.is_zero()).then_some(delay);
        self.0
            .ack_with(AckKind::Nak(delay))
            .await
            .map_err(anyhow::Error::from_boxed)
            .context("nak")
    }

    async fn term(self: Box<Self>) -> anyhow::Result<()> {
        self.0
            .ack_with(AckKind::Term)
            .await
            .map_err(anyhow::Error::from_boxed)
            .context("terminating")
    }

    async fn in_progress(&self) -> anyhow::Result<()> {
        // `+WPI`: JetStream restarts the message's ack_wait.
        self.0
            .ack_with(AckKind::Progress)
            .await
            .map_err(anyhow::Error::from_boxed)
            .context("in-progress acknowledgement")
    }
}
