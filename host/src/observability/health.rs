//! Liveness and readiness. The process is live while it answers at all (`/healthz`); it is
//! ready (`/readyz`) once its components are loaded and its triggers started, and for as long
//! as every backend it uses answers: each key-value store (Redis `EXISTS`, or a read of the
//! embedded file), the event bus (a JetStream API round trip), each durable consumer of its
//! listeners (it exists on the server) and the timer store. Each check has a short deadline,
//! so a server that hangs (stopped, partitioned) reads as unready instead of stalling the
//! probe. Once the host starts shutting down it is unready, so a load balancer stops sending
//! it requests while it drains.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::future::join_all;
use serde::Serialize;

use super::metrics::Metrics;
use crate::backends::event_bus::EventBus;
use crate::backends::key_value::KeyValueStores;
use crate::backends::timers::TimerStore;
use crate::engine::Runtime;

/// How long one check may take before it counts as failed.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// A key read by the key-value check (never written).
const PROBE_KEY: &str = "ticketing:readiness-probe";

/// The host's state as the probes see it; shared by the run and the admin server.
#[derive(Default)]
pub struct Health {
    started: OnceLock<Started>,
    stopping: AtomicBool,
}

/// What a run has brought up, once it has.
pub struct Started {
    pub runtime: Arc<Runtime>,
    pub stores: Arc<KeyValueStores>,
    pub bus: Arc<dyn EventBus>,
    pub timers: Arc<dyn TimerStore>,
    /// The durable consumers of the listeners this process runs (none without NATS side).
    pub consumers: Vec<String>,
}

/// The `/readyz` body.
#[derive(Debug, Serialize)]
pub struct Readiness {
    pub ready: bool,
    pub checks: Vec<Check>,
}

#[derive(Debug, Serialize)]
pub struct Check {
    pub name: String,
    pub ready: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Check {
    fn new(name: String, result: anyhow::Result<()>) -> Check {
        Check {
            name,
            ready: result.is_ok(),
            error: result.err().map(|error| format!("{error:#}")),
        }
    }
}

impl Health {
    /// Components loaded, triggers started: from now on the backends are checked.
    pub fn started(&self, started: Started) {
        let _ = self.started.set(started);
    }

    /// Shutting down: unready from now on.
    pub fn stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// Runs every check at once, each within [`CHECK_TIMEOUT`].
    pub async fn readiness(&self) -> Readiness {
        let mut checks = Vec::new();
        if self.stopping.load(Ordering::Relaxed) {
            checks.push(Check::new(
                "shutdown".into(),
                Err(anyhow::anyhow!("the host is shutting down")),
            ));
        }
        let Some(started) = self.started.get() else {
            checks.push(Check::new(
                "components".into(),
                Err(anyhow::anyhow!(
                    "starting: components loading, triggers not started"
                )),
            ));
            return Readiness {
                ready: false,
                checks,
            };
        };
        checks.push(Check::new("components".into(), Ok(())));
        checks.extend(started.check_backends().await);
        Readiness {
            ready: checks.iter().all(|check| check.ready),
            checks,
        }
    }

    /// Sets the gauges read from the backends (instances, consumer lag, timers pending).
    /// A backend that does not answer in time leaves its gauge as it was.
    pub async fn refresh_gauges(&self, metrics: &Metrics) {
        let Some(started) = self.started.get() else {
            return;
        };
        let (in_use, max) = started.runtime.instances_in_use();
        metrics.instances_in_use.set(in_use as i64);
        metrics.instances_max.set(max as i64);
        let lags = join_all(
            started
                .consumers
                .iter()
                .map(|name| async move { (name, within(started.bus.consumer_lag(name)).await) }),
        );
        let counts = within(started.timers.counts());
        let (lags, counts) = tokio::join!(lags, counts);
        for (name, lag) in lags {
            if let Ok(Some(lag)) = lag {
                let name = name.as_str();
                metrics
                    .consumer_pending
                    .with_label_values(&[name])
                    .set(lag.pending as i64);
                metrics
                    .consumer_ack_pending
                    .with_label_values(&[name])
                    .set(lag.ack_pending as i64);
            }
        }
        if let Ok(counts) = counts {
            metrics
                .timers_pending
                .set((counts.waiting + counts.in_flight) as i64);
        }
    }
}

impl Started {
    async fn check_backends(&self) -> Vec<Check> {
        // One check per place the data lives: labels on one Redis server or one file share
        // a connection, so they answer (or not) together.
        let mut places: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        for label in self.stores.labels() {
            let summary = self.stores.summary(label).unwrap_or("?").to_owned();
            places.entry(summary).or_default().push(label);
        }
        let stores = join_all(places.into_iter().map(|(summary, labels)| async move {
            let backend = self.stores.get(labels[0]).expect("a label it listed");
            let result = within(async { backend.exists(PROBE_KEY).await.map(drop) }).await;
            Check::new(
                format!("key-value store {summary} ({})", labels.join(", ")),
                result,
            )
        }));
        let consumers = join_all(self.consumers.iter().map(|name| async move {
            let result = within(async { self.bus.consumer_lag(name).await.map(drop) }).await;
            Check::new(format!("event consumer {name}"), result)
        }));
        let bus = async { Check::new("event bus".into(), within(self.bus.check()).await) };
        let timers = async {
            let result = within(async { self.timers.counts().await.map(drop) }).await;
            Check::new("timer store".into(), result)
        };
        let (stores, bus, consumers, timers) = tokio::join!(stores, bus, consumers, timers);
        let mut checks = stores;
        checks.push(bus);
        checks.extend(consumers);
        checks.push(timers);
        checks
    }
}

/// `check` within [`CHECK_TIMEOUT`].
async fn within<T>(check: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    match tokio::time::timeout(CHECK_TIMEOUT, check).await {
        Ok(result) => result,
        Err(_) => Err(anyhow::anyhow!("no answer within {CHECK_TIMEOUT:?}")),
    }
}
