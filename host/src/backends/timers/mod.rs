//! Durable timers: the [`TimerStore`] trait, its two implementations (the embedded redb file
//! and Redis) and the [`driver`] that fires due timers onto the event bus.
//!
//! A timer is `(key, due, subject, payload)`: at `due` the host publishes `payload` on
//! `subject`. Firing is at-least-once and each timer is fired by one host at a time:
//!
//! 1. [`claim_due`](TimerStore::claim_due) atomically leases due timers to one caller;
//! 2. the caller publishes each with the message id [`DueTimer::message_id`];
//! 3. [`complete`](TimerStore::complete) removes the timer.
//!
//! A caller that dies between 1 and 3 leaves a lease that runs out, and the timer is claimed
//! again; the republished event carries the same message id, so the event bus's duplicate
//! window drops the repeat if the first publish did land.

pub mod driver;
mod embedded;
mod redis;

pub use self::driver::{TimerDriver, TimerDriverSettings};
pub use self::embedded::EmbeddedTimers;
pub use self::redis::RedisTimers;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;

use super::key_value::EmbeddedState;

/// A timer handed out by [`TimerStore::claim_due`], leased to the caller until it completes
/// it or the lease runs out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueTimer {
    pub key: String,
    pub due_unix_ms: u64,
    pub subject: String,
    pub payload: Vec<u8>,
    /// Which scheduling of `key` this is. Every `schedule` takes a new generation, never
    /// reused by the store (not even after a cancel or a completion), so a claim of an older
    /// scheduling cannot complete a newer one, and message ids never repeat across schedulings.
    pub generation: u64,
}

impl DueTimer {
    /// The event's message id: the same for every publish of this scheduling (redeliveries
    /// after a lost lease are dropped as duplicates), different for the next scheduling.
    pub fn message_id(&self) -> String {
        format!("timer:{}:{}", self.key, self.generation)
    }
}

/// How many timers a store holds, for logs and diagnostics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimerCounts {
    /// Scheduled and not claimed.
    pub waiting: usize,
    /// Claimed and not completed (including claims whose lease ran out and that wait to be
    /// claimed again).
    pub in_flight: usize,
}

/// Where timers are kept. Keys are raw strings: the scheduler capability namespaces them per
/// component before they reach the store.
#[async_trait]
pub trait TimerStore: Send + Sync {
    /// Creates the timer `key`, or replaces it (due time, subject, payload) if it exists,
    /// even while it is claimed: the claim's generation is then stale and completing it
    /// leaves the new scheduling alone.
    async fn schedule(
        &self,
        key: &str,
        due_unix_ms: u64,
        subject: &str,
        payload: &[u8],
    ) -> anyhow::Result<()>;

    /// Drops the timer `key`, claimed or not. Returns whether there was one.
    async fn cancel(&self, key: &str) -> anyhow::Result<bool>;

    /// Atomically leases up to `limit` timers that are due at `now_unix_ms` (and timers whose
    /// earlier claim's lease ran out) to the caller, until `now_unix_ms + lease`. While the
    /// lease holds, no other caller (in this process or, for shared stores, any other) gets
    /// them. Earliest due first.
    async fn claim_due(
        &self,
        now_unix_ms: u64,
        limit: usize,
        lease: Duration,
    ) -> anyhow::Result<Vec<DueTimer>>;

    /// Removes a claimed timer once it has fired, unless it was rescheduled or cancelled since
    /// the claim (its generation changed). Returns whether it was removed.
    async fn complete(&self, timer: &DueTimer) -> anyhow::Result<bool>;

    async fn counts(&self) -> anyhow::Result<TimerCounts>;

    /// The earliest due time among waiting (unclaimed) timers, so a poller can sleep until
    /// then instead of polling blindly.
    async fn next_due_ms(&self) -> anyhow::Result<Option<u64>>;
}

/// Opens the host's timer store: Redis when `url` is set (`redis://host:6379`, `rediss://...`;
/// timers shared by every host using that server), the embedded state file when it is empty.
///
/// Redis is connected to here, so an unreachable server fails start-up, not the first timer.
pub async fn open_timer_store(
    url: &str,
    embedded: &EmbeddedState,
) -> anyhow::Result<Arc<dyn TimerStore>> {
    let url = url.trim();
    if url.is_empty() {
        let timers = EmbeddedTimers::open(embedded).with_context(|| {
            format!(
                "timers: opening the embedded state {}",
                embedded.path().display()
            )
        })?;
        tracing::info!(store = %format!("embedded file {}", embedded.path().display()), "timers ready");
        return Ok(Arc::new(timers));
    }
    let timers = RedisTimers::connect(url, redis::DEFAULT_KEY_PREFIX)
        .await
        .context("timers: opening the Redis timer store (timers_url)")?;
    tracing::info!(store = %format!("Redis at {}", timers.server()), "timers ready");
    Ok(Arc::new(timers))
}

/// Milliseconds since the Unix epoch by this machine's clock.
pub fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

/// `now + lease` in Unix milliseconds, saturating instead of overflowing.
fn lease_until(now_unix_ms: u64, lease: Duration) -> u64 {
    now_unix_ms.saturating_add(u64::try_from(lease.as_millis()).unwrap_or(u64::MAX))
}
