//! The timer driver: one task per host that fires due timers onto the event bus.
//!
//! Each round claims up to a batch of due timers (leased, so hosts sharing a Redis store
//! never fire the same one at the same time), publishes each with its stable message id and
//! then completes it. A timer whose publish fails (the bus is away) is published again every
//! 2 s at most while its lease holds, then left claimed: when the lease runs out it is claimed
//! and published again. Between rounds the driver sleeps until the next due time,
//! at most one poll interval (timers scheduled by other hosts, and leases running out, are
//! noticed by polling), and wakes at once when this host schedules a timer.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::task::{JoinHandle, JoinSet};

use super::{now_unix_ms, DueTimer, TimerStore};
use crate::backends::event_bus::{Event, EventBus};

/// How long [`TimerDriver::stop`] lets a round in progress finish before aborting it (its
/// unfinished timers are fired again once their leases run out).
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Longest wait between rounds while the store keeps failing.
const MAX_ERROR_BACKOFF: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct TimerDriverSettings {
    /// Timers claimed per round; a full batch starts the next round at once.
    pub batch_size: usize,
    /// How long a claim holds. Also bounds one publish: a publish still pending after this
    /// long is given up (the timer is claimed again). Keep it well below the event bus's
    /// duplicate window, so that a republish after a lost lease is recognised as a duplicate.
    pub lease: Duration,
    /// Longest sleep between rounds.
    pub poll_interval: Duration,
}

impl Default for TimerDriverSettings {
    fn default() -> Self {
        Self {
            batch_size: 256,
            lease: Duration::from_secs(30),
            poll_interval: Duration::from_millis(100),
        }
    }
}

/// The running driver. Stop it with [`stop`](Self::stop); dropping it also stops the task,
/// at its next sleep.
pub struct TimerDriver {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl TimerDriver {
    /// Starts the driver on the current tokio runtime. `wake` is the notifier the scheduler
    /// capability signals after each `schedule`.
    pub fn start(
        store: Arc<dyn TimerStore>,
        bus: Arc<dyn EventBus>,
        wake: Arc<Notify>,
        settings: TimerDriverSettings,
    ) -> TimerDriver {
        let (stop, stopped) = watch::channel(false);
        let driver = Driver {
            store,
            bus,
            wake,
            settings,
        };
        TimerDriver {
            stop,
            task: tokio::spawn(driver.run(stopped)),
        }
    }

    /// Stops the driver: a round in progress may finish (for a few seconds at most), then
    /// the task ends.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if tokio::time::timeout(STOP_GRACE, &mut self.task)
            .await
            .is_err()
        {
            tracing::warn!(
                "timer driver: a round was still publishing after {STOP_GRACE:?}; aborted \
                 (its timers fire again when their leases run out)"
            );
            self.task.abort();
        }
    }
}

struct Driver {
    store: Arc<dyn TimerStore>,
    bus: Arc<dyn EventBus>,
    wake: Arc<Notify>,
    settings: TimerDriverSettings,
}

impl Driver {
    async fn run(self, mut stopped: watch::Receiver<bool>) {
        let mut failures: u32 = 0;
        while !*stopped.borrow() {
            let pause = match self.round().await {
                Ok(claimed) => {
                    if failures > 0 {
                        tracing::info!("timer store reachable again");
                        failures = 0;
                    }
                    if claimed >= self.settings.batch_size {
                        // A full batch: more timers may be due right now.
                        tokio::task::yield_now().await;
                        continue;
                    }
                    self.pause_until_next_due().await
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    let pause = self.error_backoff(failures);
                    // Once when the trouble starts, then once per slowest retry.
                    if failures == 1 || pause == MAX_ERROR_BACKOFF {
                        tracing::warn!(
                            error = %format!("{error:#}"),
                            "timer store: cannot claim due timers; retrying in {pause:?}"
                        );
                    }
                    pause
                }
            };
            if pause.is_zero() {
                continue;
            }
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = self.wake.notified() => {}
                // A stop request, or the `TimerDriver` dropped.
                _ = stopped.changed() => break,
            }
        }
        tracing::debug!("timer driver stopped");
    }

    /// Claims one batch and fires it; returns how many timers were claimed.
    async fn round(&self) -> anyhow::Result<usize> {
        let timers = self
            .store
            .claim_due(now_unix_ms(), self.settings.batch_size, self.settings.lease)
            .await?;
        let claimed = timers.len();
        // Publishes overlap: with a remote bus one round costs about one round trip, not one
        // per timer.
        let mut firing = JoinSet::new();
        for timer in timers {
            let (store, bus) = (self.store.clone(), self.bus.clone());
            firing.spawn(fire(store, bus, timer, self.settings.lease));
        }
        while let Some(done) = firing.join_next().await {
            if let Err(error) = done {
                tracing::error!(%error, "timer driver: firing a timer panicked");
            }
        }
        Ok(claimed)
    }

    /// Until the next waiting timer is due, at most one poll interval.
    async fn pause_until_next_due(&self) -> Duration {
        let poll = self.settings.poll_interval;
        match self.store.next_due_ms().await {
            Ok(Some(due)) => Duration::from_millis(due.saturating_sub(now_unix_ms())).min(poll),
            // Errors show up (and are reported) in the next claim.
            Ok(None) | Err(_) => poll,
        }
    }

    fn error_backoff(&self, failures: u32) -> Duration {
        let factor = 1u32 << failures.min(16);
        self.settings
            .poll_interval
            .saturating_mul(factor)
            .min(MAX_ERROR_BACKOFF)
    }
}

/// First wait before publishing a timer again after its publish failed (the bus is away);
/// it doubles up to [`MAX_PUBLISH_RETRY`].
const FIRST_PUBLISH_RETRY: Duration = Duration::from_millis(250);
const MAX_PUBLISH_RETRY: Duration = Duration::from_secs(2);

/// Publishes one claimed timer, then removes it. A failed publish (the bus is away) is tried
/// again every few seconds at most while the claim's lease holds, so that a timer fires
/// about when the bus is back, not a lease later; past the lease it is claimed again (by
/// this host or another) and fired then.
async fn fire(
    store: Arc<dyn TimerStore>,
    bus: Arc<dyn EventBus>,
    timer: DueTimer,
    lease: Duration,
) {
    let event = Event {
        subject: timer.subject.clone(),
        payload: timer.payload.clone(),
        message_id: timer.message_id(),
    };
    // Leave a second of the lease unused, so the last try never outlives the claim.
    let give_up = tokio::time::Instant::now() + lease.saturating_sub(Duration::from_secs(1));
    let mut retry = FIRST_PUBLISH_RETRY;
    loop {
        let published = match tokio::time::timeout_at(give_up, bus.publish(event.clone())).await {
            Ok(result) => result,
            Err(_) => Err(anyhow::anyhow!(
                "no answer within the claim's lease ({lease:?})"
            )),
        };
        let Err(error) = published else {
            break;
        };
        if tokio::time::Instant::now() + retry >= give_up {
            tracing::warn!(
                key = %timer.key,
                subject = %timer.subject,
                error = %format!("{error:#}"),
                "timer not published; it fires again when its lease runs out"
            );
            return;
        }
        tracing::debug!(
            key = %timer.key,
            error = %format!("{error:#}"),
            retry_in_ms = retry.as_millis() as u64,
            "timer not published yet"
        );
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(MAX_PUBLISH_RETRY);
    }
    let late_ms = now_unix_ms().saturating_sub(timer.due_unix_ms);
    crate::observability::metrics::timer_fired(Duration::from_millis(late_ms));
    match store.complete(&timer).await {
        Ok(_) => {
            tracing::debug!(key = %timer.key, subject = %timer.subject, late_ms, "timer fired")
        }
        Err(error) => tracing::warn!(
            key = %timer.key,
            error = %format!("{error:#}"),
            "timer published but not removed; it is published again (same message id) when \
             its lease runs out"
        ),
    }
}
