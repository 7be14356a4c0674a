//! The NATS trigger: delivers events from the [`EventBus`] to components that export
//! `ticketing:platform/listener` (`[[trigger.nats]]` in spin.toml, see [`config`]).
//!
//! Each (component, subject) pair is one durable consumer whose name is derived from both,
//! so every replica of the host opens the same consumer and each event is handled by one of
//! them. Per consumer, a task takes deliveries and runs up to [`HANDLERS_PER_CONSUMER`]
//! handlers at once, each in a fresh instance with the same deadline and memory cap as an
//! HTTP request. The outcome settles the delivery:
//!
//! - `ok` → ack;
//! - `retry-later` → nak with a delay growing with the delivery count
//!   (`retry_delay_ms` × 2^(delivery − 1), at most [`MAX_RETRY_DELAY`]);
//! - a trap or timeout → the same, logged as an error;
//! - `never`, or a failure of the last allowed delivery (`max_deliver`) → the original payload
//!   is published to `<dead_letter_subject>.<component>` and the delivery terminated, logged
//!   at WARN with the component, subject and reason.
//!
//! Consumers are opened with one delivery more than `max_deliver`: if the last allowed
//! delivery is lost (host killed, handler past `ack_wait`), the spare one arrives and is
//! dead-lettered without running the handler, so no event silently runs out of deliveries.

pub mod config;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tracing::Instrument as _;

use self::bindings::exports::ticketing::platform::listener::{self, Message};
use self::bindings::EventListenerPre;
pub use self::config::{Listener, NatsSettings, NatsTriggerConfig};
use crate::backends::event_bus::{
    retry_at_start, Consumer, ConsumerOptions, Delivery, Event, EventBus,
};
use crate::engine::{HostState, LoadedComponent, Runtime};
use crate::observability::metrics::{self, GuestOutcome, Settlement, Trigger};
use crate::observability::traces;

/// Rust bindings of the `event-listener` world (the export side), generated from `wit/`.
pub mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "ticketing:platform/event-listener",
        exports: { default: async },
    });
}

/// Handlers of one consumer that may run at once. Under a crowd every handler's run is
/// stretched by the HTTP requests sharing the CPU, so with few slots a burst of events (a
/// flash sale's orders) queues: 4 slots gave a payment p50 of 325 ms after its order's 201
/// in the bench's flash sale on NATS, 16 give 86 ms. Events that depend on each other stay
/// correct in any order (versions: one that comes too early is retried later), and the
/// instance pool (`--max-instances`) still bounds the whole.
pub const HANDLERS_PER_CONSUMER: usize = 16;

/// The longest nak delay of a retry-later.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(60);

/// After a consumer error, wait this long before trying again (doubling up to the max).
const CONSUMER_RETRY_MIN: Duration = Duration::from_millis(500);
const CONSUMER_RETRY_MAX: Duration = Duration::from_secs(30);

/// Limits of the NATS trigger.
#[derive(Debug, Clone)]
pub struct NatsRunSettings {
    /// Wall-clock budget of one handler call (the HTTP request timeout). It may exceed the
    /// consumer's `ack_wait`: a running handler keeps its delivery with progress acks.
    pub handler_timeout: Duration,
    /// How long shutdown waits for running handlers.
    pub shutdown_grace: Duration,
}

impl Default for NatsRunSettings {
    fn default() -> Self {
        NatsRunSettings {
            handler_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

pub struct NatsTrigger {
    settings: NatsSettings,
    run: NatsRunSettings,
    listeners: Vec<Listener>,
    /// Components called on every tick (see `config`).
    tick_listeners: Vec<String>,
    handlers: HashMap<String, Handler>,
    runtime: Arc<Runtime>,
    bus: Arc<dyn EventBus>,
}

/// A listening component: its `event-listener` pre-instance.
struct Handler {
    component: Arc<LoadedComponent>,
    listener: EventListenerPre<HostState>,
}

/// How one handler call went, before it settles the delivery.
enum Outcome {
    Handled,
    RetryLater(String),
    Never(String),
    /// Trap, timeout, or no instance slot in time.
    Failed(String),
}

impl NatsTrigger {
    /// Checks that each listening component is loaded in `runtime` and exports
    /// `ticketing:platform/listener`.
    pub fn new(
        config: &NatsTriggerConfig,
        runtime: Arc<Runtime>,
        bus: Arc<dyn EventBus>,
        run: NatsRunSettings,
    ) -> anyhow::Result<NatsTrigger> {
        let mut handlers = HashMap::new();
        for id in config.components() {
            let component = runtime
                .component(id)
                .with_context(|| format!("component `{id}` listens for events but is not loaded"))?
                .clone();
            let listener = EventListenerPre::new(component.pre.clone())
                .map_err(anyhow::Error::from)
                .with_context(|| {
                    format!(
                        "component `{id}` is in [[trigger.nats]] but does not export \
                         ticketing:platform/listener"
                    )
                })?;
            handlers.insert(
                id.to_owned(),
                Handler {
                    component,
                    listener,
                },
            );
        }
        Ok(NatsTrigger {
            settings: config.settings.clone(),
            run,
            listeners: config.listeners.clone(),
            tick_listeners: config.tick_listeners.clone(),
            handlers,
            runtime,
            bus,
        })
    }

    /// Opens (or re-opens) the durable consumer behind `listener`.
    async fn open_consumer(&self, listener: &Listener) -> anyhow::Result<Box<dyn Consumer>> {
        let options = self.consumer_options();
        self.bus
            .consume(&listener.consumer, &listener.subject, &options)
            .await
    }

    fn consumer_options(&self) -> ConsumerOptions {
        ConsumerOptions {
            // One spare delivery for dead-lettering (see the module docs).
            max_deliver: self.settings.max_deliver.saturating_add(1),
            ack_wait: self.settings.ack_wait,
        }
    }

    /// Opens every durable consumer (so from here on events for them are kept, even before
    /// they are polled) and starts one task per consumer. Fails if a consumer cannot be
    /// opened.
    pub async fn start(self: Arc<Self>) -> anyhow::Result<RunningNatsTrigger> {
        let (stop, stopped) = watch::channel(false);
        let mut consumers = Vec::new();
        for listener in &self.listeners {
            // A JetStream cluster may be electing the stream's leader: keep trying a while.
            // The embedded queue has nothing to wait for.
            let consumer = if self.settings.url.is_empty() {
                self.open_consumer(listener).await
            } else {
                let opening = format!("opening durable consumer {}", listener.consumer);
                retry_at_start(&opening, || self.open_consumer(listener)).await
            };
            let consumer = consumer.with_context(|| {
                format!(
                    "[[trigger.nats]] component `{}`: opening durable consumer `{}` on {}",
                    listener.component, listener.consumer, listener.subject
                )
            })?;
            tracing::info!(
                component = %listener.component,
                subject = %listener.subject,
                consumer = %listener.consumer,
                max_deliver = self.settings.max_deliver,
                ack_wait_s = self.settings.ack_wait.as_secs(),
                "listening for events"
            );
            consumers.push((listener.clone(), consumer));
        }
        let declared: Vec<String> = self.listeners.iter().map(|l| l.consumer.clone()).collect();
        for consumer in self.bus.retire_consumers(&declared).await? {
            tracing::info!(
                consumer = %consumer,
                "event bus: removed a durable consumer that no [[trigger.nats]] declares any \
                 more, with the events it still held"
            );
        }
        let mut tasks = JoinSet::new();
        for (listener, consumer) in consumers {
            tasks.spawn(self.clone().consume(listener, consumer, stopped.clone()));
        }
        if !self.tick_listeners.is_empty() {
            tracing::info!(
                components = ?self.tick_listeners,
                subject = %self.settings.tick_subject,
                interval_ms = self.settings.tick_interval.as_millis() as u64,
                "ticking"
            );
            tasks.spawn(self.clone().tick(stopped.clone()));
        }
        Ok(RunningNatsTrigger {
            stop,
            tasks,
            grace: self.run.shutdown_grace,
        })
    }

    /// One consumer's loop: take a delivery when a handler slot is free, handle it in its
    /// own task; on shutdown stop taking and wait for the running handlers.
    async fn consume(
        self: Arc<Self>,
        listener: Listener,
        mut consumer: Box<dyn Consumer>,
        mut stopped: watch::Receiver<bool>,
    ) {
        let slots = Arc::new(Semaphore::new(HANDLERS_PER_CONSUMER));
        let mut running = JoinSet::new();
        let mut retry_after = CONSUMER_RETRY_MIN;
        loop {
            while running.try_join_next().is_some() {}
            let slot = tokio::select! {
                slot = slots.clone().acquire_owned() => slot.expect("never closed"),
                _ = stopped.wait_for(|stop| *stop) => break,
            };
            let next = tokio::select! {
                next = consumer.next() => next,
                _ = stopped.wait_for(|stop| *stop) => break,
            };
            match next {
                Ok(delivery) => {
                    retry_after = CONSUMER_RETRY_MIN;
                    let this = self.clone();
                    let listener = listener.clone();
                    let span = delivery_span(&listener, &delivery);
                    running.spawn(
                        async move { this.handle(&listener, delivery, slot).await }
                            .instrument(span),
                    );
                }
                Err(error) => {
                    tracing::warn!(
                        component = %listener.component,
                        consumer = %listener.consumer,
                        error = %format!("{error:#}"),
                        "receiving events failed; retrying in {:?}",
                        retry_after
                    );
                    tokio::select! {
                        () = tokio::time::sleep(retry_after) => {}
                        _ = stopped.wait_for(|stop| *stop) => break,
                    }
                    retry_after = (retry_after * 2).min(CONSUMER_RETRY_MAX);
                    // Open it again: a deleted consumer is re-created, a broken pull renewed.
                    match self.open_consumer(&listener).await {
                        Ok(reopened) => consumer = reopened,
                        Err(error) => tracing::warn!(
                            consumer = %listener.consumer,
                            error = %format!("{error:#}"),
                            "reopening the consumer failed"
                        ),
                    }
                }
            }
        }
        while running.join_next().await.is_some() {}
    }

    /// Calls every tick listener with a message on `tick_subject`, one after the other,
    /// every `tick_interval` (the first tick at once). A failed tick is logged; the next
    /// one is the retry.
    async fn tick(self: Arc<Self>, mut stopped: watch::Receiver<bool>) {
        let mut interval = tokio::time::interval(self.settings.tick_interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                _ = stopped.wait_for(|stop| *stop) => break,
            }
            for component in &self.tick_listeners {
                let message = Message {
                    subject: self.settings.tick_subject.clone(),
                    payload: b"{}".to_vec(),
                    delivery: 1,
                };
                match self.call(component, message).await {
                    Outcome::Handled => {}
                    Outcome::RetryLater(reason)
                    | Outcome::Never(reason)
                    | Outcome::Failed(reason) => {
                        tracing::warn!(
                            component = %component,
                            subject = %self.settings.tick_subject,
                            "tick not handled: {reason}; the next tick tries again"
                        )
                    }
                }
            }
        }
    }

    /// Runs the component on one delivery and settles it. The handler `slot` is given back
    /// as soon as the guest is done: settling waits for the state to be durable and for the
    /// bus to confirm, and the next delivery need not wait for that.
    async fn handle(&self, listener: &Listener, delivery: Delivery, slot: OwnedSemaphorePermit) {
        metrics::event_delivered(&listener.component, &listener.subject);
        let max_deliver = self.settings.max_deliver;
        if delivery.delivered > max_deliver {
            let reason = format!(
                "its last allowed delivery ({max_deliver}) was never settled (host stopped or \
                 handler past ack_wait)"
            );
            self.dead_letter(listener, delivery, &reason).await;
            return;
        }
        let started = Instant::now();
        let message = Message {
            subject: delivery.subject.clone(),
            payload: delivery.payload.clone(),
            delivery: delivery.delivered,
        };
        let outcome = self
            .call_keeping_delivery(listener, &delivery, message)
            .await;
        drop(slot);
        metrics::event_handled(&listener.component, &listener.subject, started.elapsed());
        let settled =
            |settlement| metrics::event_settled(&listener.component, &listener.subject, settlement);
        let last_try = delivery.delivered >= max_deliver;
        let delivered = delivery.delivered;
        let subject = delivery.subject.clone();
        let log_settle_error = |action: &str, result: anyhow::Result<()>| {
            if let Err(error) = result {
                tracing::warn!(
                    component = %listener.component,
                    subject = %subject,
                    error = %format!("{error:#}"),
                    "{action} failed; the event will be delivered again"
                );
            }
        };
        match outcome {
            Outcome::Handled => {
                tracing::debug!(
                    component = %listener.component,
                    delivered,
                    duration_ms = format_args!("{:.1}", started.elapsed().as_secs_f64() * 1000.0),
                    "event handled"
                );
                settled(Settlement::Acked);
                log_settle_error("ack", delivery.ack().await);
            }
            Outcome::Never(reason) => {
                self.dead_letter(listener, delivery, &format!("refused: {reason}"))
                    .await
            }
            Outcome::RetryLater(reason) if last_try => {
                let reason = format!("retry-later on the last allowed delivery: {reason}");
                self.dead_letter(listener, delivery, &reason).await
            }
            Outcome::Failed(reason) if last_try => {
                let reason = format!("failed on the last allowed delivery: {reason}");
                self.dead_letter(listener, delivery, &reason).await
            }
            Outcome::RetryLater(reason) => {
                let delay = self.retry_delay(delivered);
                tracing::info!(
                    component = %listener.component,
                    subject = %delivery.subject,
                    delivered,
                    retry_in_ms = delay.as_millis() as u64,
                    "retry later: {reason}"
                );
                settled(Settlement::Retried);
                log_settle_error("nak", delivery.nak(delay).await);
            }
            Outcome::Failed(reason) => {
                let delay = self.retry_delay(delivered);
                tracing::error!(
                    component = %listener.component,
                    subject = %delivery.subject,
                    delivered,
                    retry_in_ms = delay.as_millis() as u64,
                    error = %reason,
                    "event handler failed; it will be retried"
                );
                settled(Settlement::Retried);
                log_settle_error("nak", delivery.nak(delay).await);
            }
        }
    }

    /// `retry_delay` × 2^(delivered − 1), at most [`MAX_RETRY_DELAY`].
    fn retry_delay(&self, delivered: u32) -> Duration {
        retry_delay(self.settings.retry_delay, delivered)
    }

    /// `call`, sending an in-progress acknowledgement every third of `ack_wait` while it
    /// runs: `ack_wait` stays short, so the events of a host that died are delivered again
    /// within seconds, and a handler may still take up to the handler timeout.
    async fn call_keeping_delivery(
        &self,
        listener: &Listener,
        delivery: &Delivery,
        message: Message,
    ) -> Outcome {
        let call = self.call(&listener.component, message);
        tokio::pin!(call);
        let period = (self.settings.ack_wait / 3).max(Duration::from_millis(100));
        let mut progress = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                outcome = &mut call => return outcome,
                _ = progress.tick() => {
                    if let Err(error) = delivery.in_progress().await {
                        tracing::warn!(
                            component = %listener.component,
                            subject = %delivery.subject,
                            error = %format!("{error:#}"),
                            "in-progress acknowledgement failed; the event may be delivered \
                             again while its handler runs"
                        );
                    }
                }
            }
        }
    }

    /// Instantiates the component and calls its `handle`, within the handler deadline.
    async fn call(&self, component_id: &str, message: Message) -> Outcome {
        let Some(handler) = self.handlers.get(component_id) else {
            return Outcome::Failed(format!("component `{component_id}` is not loaded"));
        };
        let timeout = self.run.handler_timeout;
        let deadline = Instant::now() + timeout;
        let tokio_deadline = tokio::time::Instant::from_std(deadline);
        let Ok(_slot) = tokio::time::timeout_at(tokio_deadline, self.runtime.instance_slot()).await
        else {
            return Outcome::Failed("no free instance slot before the deadline".to_owned());
        };
        let mut store = self.runtime.new_store(&handler.component, deadline);
        let run = async {
            let instance = handler.listener.instantiate_async(&mut store).await?;
            instance
                .ticketing_platform_listener()
                .call_handle(&mut store, &message)
                .await
        };
        let result = tokio::time::timeout_at(tokio_deadline, run)
            .await
            .map(|called| called.map_err(anyhow::Error::from));
        let guest_outcome = match &result {
            Ok(Ok(_)) => GuestOutcome::Ok,
            Ok(Err(error)) => GuestOutcome::of_error(error),
            Err(_) => GuestOutcome::Timeout,
        };
        metrics::guest_run(component_id, Trigger::Nats, guest_outcome);
        match result {
            Ok(Ok(Ok(()))) => Outcome::Handled,
            Ok(Ok(Err(listener::Error::RetryLater(reason)))) => Outcome::RetryLater(reason),
            Ok(Ok(Err(listener::Error::Never(reason)))) => Outcome::Never(reason),
            Ok(Err(error)) => {
                if error.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::Interrupt) {
                    Outcome::Failed(format!("deadline of {timeout:?} exceeded"))
                } else {
                    tracing::debug!(component = component_id, "handler failure: {error:?}");
                    Outcome::Failed(error.root_cause().to_string())
                }
            }
            Err(_) => Outcome::Failed(format!("deadline of {timeout:?} exceeded")),
        }
    }

    /// Publishes the event's payload to `<dead_letter_subject>.<component>` and terminates
    /// the delivery. If that publish fails, naks instead so the event is not lost.
    async fn dead_letter(&self, listener: &Listener, delivery: Delivery, reason: &str) {
        let dead_letter_subject = format!(
            "{}.{}",
            self.settings.dead_letter_subject, listener.component
        );
        let event = Event {
            subject: dead_letter_subject.clone(),
            payload: delivery.payload.clone(),
            // One dead letter per event and consumer, however often this runs.
            message_id: format!("dead:{}:{}", listener.consumer, delivery.sequence),
        };
        // Logged before publishing, so the log line is there by the time anyone sees the
        // dead letter; a failed publish is logged as such below.
        tracing::warn!(
            component = %listener.component,
            subject = %delivery.subject,
            delivered = delivery.delivered,
            dead_letter_subject = %dead_letter_subject,
            reason,
            "event dead-lettered"
        );
        metrics::event_settled(
            &listener.component,
            &listener.subject,
            Settlement::DeadLettered,
        );
        match self
            .bus
            .publish_traced(event, delivery.traceparent.as_deref())
            .await
        {
            Ok(()) => {
                if let Err(error) = delivery.term().await {
                    tracing::warn!(
                        component = %listener.component,
                        error = %format!("{error:#}"),
                        "terminating a dead-lettered event failed; it may be delivered again"
                    );
                }
            }
            Err(error) => {
                let delay = self.retry_delay(delivery.delivered);
                tracing::error!(
                    component = %listener.component,
                    subject = %delivery.subject,
                    error = %format!("{error:#}"),
                    "cannot publish the dead letter; the event will be delivered again"
                );
                let _ = delivery.nak(delay).await;
            }
        }
    }
}

/// The span of one delivery, continuing the trace the event was published in (none unless
/// traces are exported).
fn delivery_span(listener: &Listener, delivery: &Delivery) -> tracing::Span {
    if !traces::enabled() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        "event delivery",
        otel.name = %format!("{} {}", delivery.subject, listener.component),
        otel.kind = "consumer",
        component = %listener.component,
        messaging.destination.name = %delivery.subject,
        messaging.delivery = delivery.delivered,
    );
    traces::set_parent(&span, delivery.traceparent.as_deref());
    span
}

fn retry_delay(base: Duration, delivered: u32) -> Duration {
    let doublings = delivered.saturating_sub(1).min(20);
    base.saturating_mul(1 << doublings).min(MAX_RETRY_DELAY)
}

/// The running consumer tasks; [`shutdown`](Self::shutdown) stops them.
pub struct RunningNatsTrigger {
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
    grace: Duration,
}

impl RunningNatsTrigger {
    /// Stops taking events and waits up to the shutdown grace for running handlers; events
    /// still unsettled after that are delivered again later (they were never acked).
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        let all_done = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(self.grace, all_done).await.is_err() {
            tracing::warn!(
                "event handlers still running {}s after shutdown began; stopping anyway",
                self.grace.as_secs()
            );
            self.tasks.abort_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_double_per_delivery_up_to_the_cap() {
        let base = Duration::from_millis(500);
        let delays: Vec<u64> = (1..=5)
            .map(|delivered| retry_delay(base, delivered).as_millis() as u64)
            .collect();
        assert_eq!(delays, [500, 1000, 2000, 4000, 8000]);
        assert_eq!(retry_delay(base, 30), MAX_RETRY_DELAY);
        assert_eq!(retry_delay(base, u32::MAX), MAX_RETRY_DELAY);
        assert_eq!(retry_delay(Duration::ZERO, 3), Duration::ZERO);
    }
}
