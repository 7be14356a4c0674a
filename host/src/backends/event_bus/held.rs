//! A test mode that holds back the publishing of one kind of event for a while, as a bus
//! outage would for it alone: `TICKETING_TEST_HOLD_EVENTS=<subject suffix>:<seconds>`, e.g.
//! `payment.created:6`. Publishes of a subject ending with the suffix fail ("not
//! connected") until that many seconds after the first one; everything else goes through.
//! Tests force races with it (a payment's event arriving after the order's expiry) that
//! timing alone would rarely produce; the services' outboxes publish the held events later.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{Consumer, ConsumerLag, ConsumerOptions, Event, EventBus};

/// The environment variable that selects the held events.
pub const ENV_VAR: &str = "TICKETING_TEST_HOLD_EVENTS";

/// The hold `TICKETING_TEST_HOLD_EVENTS` asks for, if any: (subject suffix, how long).
pub fn from_env() -> anyhow::Result<Option<(String, Duration)>> {
    let Ok(text) = std::env::var(ENV_VAR) else {
        return Ok(None);
    };
    if text.is_empty() {
        return Ok(None);
    }
    let parsed = text.rsplit_once(':').and_then(|(suffix, seconds)| {
        let seconds: f64 = seconds.parse().ok()?;
        (!suffix.is_empty() && seconds >= 0.0)
            .then(|| (suffix.to_owned(), Duration::from_secs_f64(seconds)))
    });
    parsed
        .map(Some)
        .ok_or_else(|| anyhow::anyhow!("{ENV_VAR}={text:?}: expected <subject suffix>:<seconds>"))
}

/// `bus`, holding back publishes of subjects ending with `suffix` for `hold` from the
/// first one.
pub fn wrap(suffix: String, hold: Duration, bus: Arc<dyn EventBus>) -> Arc<dyn EventBus> {
    Arc::new(HeldEvents {
        suffix,
        hold,
        first: Mutex::new(None),
        inner: bus,
    })
}

struct HeldEvents {
    suffix: String,
    hold: Duration,
    first: Mutex<Option<Instant>>,
    inner: Arc<dyn EventBus>,
}

impl HeldEvents {
    fn held(&self, subject: &str) -> bool {
        if !subject.ends_with(&self.suffix) {
            return false;
        }
        let mut first = self.first.lock().unwrap_or_else(|e| e.into_inner());
        let since = *first.get_or_insert_with(Instant::now);
        since.elapsed() < self.hold
    }
}

#[async_trait]
impl EventBus for HeldEvents {
    async fn publish(&self, event: Event) -> anyhow::Result<()> {
        self.publish_traced(event, None).await
    }

    async fn publish_traced(&self, event: Event, traceparent: Option<&str>) -> anyhow::Result<()> {
        if self.held(&event.subject) {
            anyhow::bail!(
                "publishing to {}: not connected (held back by {ENV_VAR})",
                event.subject
            );
        }
        self.inner.publish_traced(event, traceparent).await
    }

    fn captures(&self, subject: &str) -> bool {
        self.inner.captures(subject)
    }

    async fn consume(
        &self,
        name: &str,
        subject: &str,
        options: &ConsumerOptions,
    ) -> anyhow::Result<Box<dyn Consumer>> {
        self.inner.consume(name, subject, options).await
    }

    async fn retire_consumers(&self, keep: &[String]) -> anyhow::Result<Vec<String>> {
        self.inner.retire_consumers(keep).await
    }

    async fn check(&self) -> anyhow::Result<()> {
        self.inner.check().await
    }

    async fn consumer_lag(&self, name: &str) -> anyhow::Result<Option<ConsumerLag>> {
        self.inner.consumer_lag(name).await
    }
}
