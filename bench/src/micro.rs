//! Measurements that drive the host library directly instead of going through HTTP:
//! instantiation of a component (the host's own engine, pooling allocator) and the Redis
//! timer store with the host's timer driver.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use async_trait::async_trait;
use hdrhistogram::Histogram;
use serde::Serialize;
use ticketing_host::backends::event_bus::{
    self, Consumer, ConsumerOptions, Event, EventBus, StreamConfig,
};
use ticketing_host::backends::key_value::{EmbeddedState, KeyValueStores};
use ticketing_host::backends::timers::{
    self, now_unix_ms, RedisTimers, TimerDriver, TimerDriverSettings, TimerStore,
};
use ticketing_host::engine::{self, ComponentConfig, EngineSettings, EpochTicker, Runtime};
use tokio::sync::{mpsc, Notify};

#[derive(Debug, Clone, Serialize)]
pub struct InstantiationResult {
    pub component: String,
    pub iterations: usize,
    /// `Runtime::new_store` + `InstancePre::instantiate_async`: what a request waits for.
    pub instantiate: Percentiles,
    /// Dropping the store, which resets and returns the pool slot.
    pub teardown: Percentiles,
    /// Both, measured as one span.
    pub total: Percentiles,
}

#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    pub p50_us: f64,
    pub p99_us: f64,
    pub mean_us: f64,
}

impl Percentiles {
    fn of(hist: &Histogram<u64>) -> Percentiles {
        Percentiles {
            p50_us: hist.value_at_quantile(0.5) as f64 / 1000.0,
            p99_us: hist.value_at_quantile(0.99) as f64 / 1000.0,
            mean_us: hist.mean() / 1000.0,
        }
    }
}

/// Instantiates each component `iterations` times, one at a time, the way the HTTP trigger
/// does for every request (fresh store, pre-linked instance, pooling allocator), without
/// calling into it.
pub async fn instantiation(
    dir: &Path,
    components: &[(String, PathBuf)],
    iterations: usize,
) -> anyhow::Result<Vec<InstantiationResult>> {
    let settings = EngineSettings::default();
    let engine = engine::new_engine(&settings)?;
    let _ticker = EpochTicker::start(&engine)?;
    let embedded = EmbeddedState::open(dir.join("instantiation.redb"))?;
    let labels: Vec<String> = ["auth", "tickets", "orders", "payments"]
        .map(String::from)
        .to_vec();
    let stores = KeyValueStores::open(&BTreeMap::new(), &labels, &embedded).await?;
    let bus = event_bus::open("", &StreamConfig::default(), &embedded).await?;
    let timer_store = timers::open_timer_store("", &embedded).await?;
    let mut runtime = Runtime::new(
        engine,
        stores,
        bus,
        timer_store,
        Arc::new(Notify::new()),
        &settings,
    )?;
    for (id, path) in components {
        let config = ComponentConfig {
            key_value_stores: labels.clone(),
            ..ComponentConfig::default()
        };
        runtime.load(id, path, config)?;
    }
    let mut results = Vec::new();
    for (id, _) in components {
        let component = runtime.component(id).context("loaded")?.clone();
        let new_hist = || Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3);
        let (mut instantiate, mut teardown, mut total) = (new_hist()?, new_hist()?, new_hist()?);
        for i in 0..iterations + iterations / 10 {
            let started = Instant::now();
            let mut store = runtime.new_store(&component, Instant::now() + Duration::from_secs(30));
            let _instance = component
                .pre
                .instantiate_async(&mut store)
                .await
                .map_err(anyhow::Error::from)?;
            let instantiated = Instant::now();
            drop(store);
            let done = Instant::now();
            if i >= iterations / 10 {
                instantiate.saturating_record((instantiated - started).as_nanos() as u64);
                teardown.saturating_record((done - instantiated).as_nanos() as u64);
                total.saturating_record((done - started).as_nanos() as u64);
            }
        }
        results.push(InstantiationResult {
            component: id.clone(),
            iterations,
            instantiate: Percentiles::of(&instantiate),
            teardown: Percentiles::of(&teardown),
            total: Percentiles::of(&total),
        });
    }
    Ok(results)
}

/// An event bus that only notes when each timer's event arrives.
struct RecordingBus {
    fired: mpsc::UnboundedSender<(u64, u64)>,
}

#[async_trait]
impl EventBus for RecordingBus {
    async fn publish(&self, event: Event) -> anyhow::Result<()> {
        let now = now_unix_ms();
        let due: u64 = std::str::from_utf8(&event.payload)?.parse()?;
        let _ = self.fired.send((due, now));
        Ok(())
    }

    async fn consume(
        &self,
        _name: &str,
        _subject: &str,
        _options: &ConsumerOptions,
    ) -> anyhow::Result<Box<dyn Consumer>> {
        bail!("the bench's recording bus has no consumers")
    }
}

/// What the timer measurement schedules: `due` timers due evenly over `window` (starting
/// once everything is scheduled), beside `pending` timers due an hour later that only sit
/// in the store, as a full store of not-yet-expired orders would.
#[derive(Debug, Clone, Serialize)]
pub struct TimersPlan {
    pub due: usize,
    pub window_ms: u64,
    pub pending: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct TimersResult {
    #[serde(flatten)]
    pub plan: TimersPlan,
    pub schedule_per_s: f64,
    pub fired: usize,
    /// Fired before their due time (a bug if ever above zero).
    pub fired_early: usize,
    /// From the first due time to the last fire.
    pub fire_span_ms: u64,
    pub fired_per_s: f64,
    pub lateness_p50_ms: u64,
    pub lateness_p99_ms: u64,
    pub lateness_max_ms: u64,
}

/// Schedules `plan` in the Redis timer store at `redis_url` (64 concurrent schedulers),
/// then runs the host's timer driver (default settings) onto a recording bus until every
/// due timer has fired or `limit` passes.
pub async fn timers(
    redis_url: &str,
    plan: TimersPlan,
    limit: Duration,
) -> anyhow::Result<TimersResult> {
    let store: Arc<dyn TimerStore> =
        Arc::new(RedisTimers::connect(redis_url, "bench:timers:").await?);
    let total = plan.due + plan.pending;
    // Lead: enough for scheduling at ≥ 20k/s, so nothing is due before the driver starts.
    let lead_ms = 1000 + total as u64 / 20;
    let first_due = now_unix_ms() + lead_ms;
    let pending_due = first_due + plan.window_ms + 3_600_000;
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let store = store.clone();
        let next = next.clone();
        let plan = plan.clone();
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= total {
                    return anyhow::Ok(());
                }
                let due = if i < plan.due {
                    first_due + i as u64 * plan.window_ms / plan.due as u64
                } else {
                    pending_due
                };
                store
                    .schedule(
                        &format!("t{i}"),
                        due,
                        "bench.timer.fired",
                        due.to_string().as_bytes(),
                    )
                    .await?;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    let schedule_secs = started.elapsed().as_secs_f64();
    if now_unix_ms() > first_due {
        eprintln!("  (timers: scheduling ran past the first due time; lateness includes it)");
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let driver = TimerDriver::start(
        store.clone(),
        Arc::new(RecordingBus { fired: tx }),
        Arc::new(Notify::new()),
        TimerDriverSettings::default(),
    );
    let mut hist = Histogram::<u64>::new_with_bounds(1, 3_600_000, 3)?;
    let (mut fired, mut fired_early) = (0usize, 0usize);
    let mut last_fire = 0u64;
    let deadline = tokio::time::Instant::now() + limit;
    while fired < plan.due {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((due, at))) => {
                fired += 1;
                fired_early += usize::from(at < due);
                last_fire = last_fire.max(at);
                hist.saturating_record(at.saturating_sub(due));
            }
            _ => break,
        }
    }
    driver.stop().await;
    let span = last_fire.saturating_sub(first_due).max(1);
    Ok(TimersResult {
        plan,
        schedule_per_s: total as f64 / schedule_secs,
        fired,
        fired_early,
        fire_span_ms: span,
        fired_per_s: fired as f64 * 1000.0 / span as f64,
        lateness_p50_ms: hist.value_at_quantile(0.5),
        lateness_p99_ms: hist.value_at_quantile(0.99),
        lateness_max_ms: hist.max(),
    })
}
