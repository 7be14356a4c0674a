//! Durable timers for guests: `ticketing:platform/scheduler` (the `scheduler-host` world of
//! `wit/platform.wit`), kept by the host's [`TimerStore`] and fired by its timer driver.
//!
//! Timer keys are namespaced per component (`<component-id>/<key>` in the store), so one
//! component can neither see, replace nor cancel another's timers.

use std::sync::Arc;

use tokio::sync::Notify;
use wasmtime::component::{HasSelf, Linker};

use self::bindings::ticketing::platform::scheduler::{self, Error};
use crate::backends::event_bus::{subject, EventBus};
use crate::backends::timers::TimerStore;

/// Rust bindings of the `scheduler-host` world, generated from the WIT in `wit/`.
pub mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "ticketing:platform/scheduler-host",
        // The store does I/O; `trappable` as in the other capabilities.
        imports: { default: async | trappable },
    });
}

/// Longest key a guest may use (bytes, before the host's namespace).
pub const MAX_KEY_LEN: usize = 512;

/// Largest payload a timer may carry: NATS's default maximum message size.
pub const MAX_PAYLOAD_LEN: usize = 1 << 20;

/// Latest due time accepted: 2^53 ms (year ~287,000). Redis keeps due times as doubles,
/// exact up to there.
pub const MAX_DUE_UNIX_MS: u64 = 1 << 53;

/// Per-instance state of the scheduler capability.
pub struct SchedulerCtx {
    /// `<component-id>/`, put in front of every key.
    namespace: String,
    timers: Arc<dyn TimerStore>,
    /// Signalled after each schedule so this host's timer driver looks again at once (a
    /// timer due now fires without waiting for the next poll).
    wake: Arc<Notify>,
    /// Where fired timers are published: a subject it does not store is refused up front.
    events: Arc<dyn EventBus>,
}

impl SchedulerCtx {
    /// The scheduler of one instance of component `component_id`.
    pub fn new(
        component_id: &str,
        timers: Arc<dyn TimerStore>,
        wake: Arc<Notify>,
        events: Arc<dyn EventBus>,
    ) -> Self {
        Self {
            namespace: format!("{component_id}/"),
            timers,
            wake,
            events,
        }
    }

    fn store_key(&self, key: &str) -> Result<String, Error> {
        if key.is_empty() {
            return Err(Error::Other("the timer key must not be empty".into()));
        }
        if key.len() > MAX_KEY_LEN {
            return Err(Error::Other(format!(
                "the timer key is {} bytes long; at most {MAX_KEY_LEN} are allowed",
                key.len()
            )));
        }
        Ok(format!("{}{key}", self.namespace))
    }
}

/// A store failure as the guest sees it; details go to the host log only.
fn store_error(operation: &str, key: &str, error: anyhow::Error) -> Error {
    tracing::warn!(key, error = %format!("{error:#}"), "scheduler: {operation} failed");
    Error::Other(format!(
        "the timer store is unavailable ({operation} failed)"
    ))
}

impl scheduler::Host for SchedulerCtx {
    async fn schedule(
        &mut self,
        key: String,
        due_unix_ms: u64,
        subject: String,
        payload: Vec<u8>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let store_key = match self.store_key(&key) {
            Ok(store_key) => store_key,
            Err(error) => return Ok(Err(error)),
        };
        // Rejected now rather than failing at every firing attempt later.
        if let Err(error) = subject::check_subject(&subject) {
            return Ok(Err(Error::Other(format!("{error:#}"))));
        }
        if !self.events.captures(&subject) {
            return Ok(Err(Error::Other(format!(
                "subject {subject:?} is outside the event stream's subjects: the timer \
                 could never be published"
            ))));
        }
        if payload.len() > MAX_PAYLOAD_LEN {
            return Ok(Err(Error::Other(format!(
                "the payload is {} bytes; at most {MAX_PAYLOAD_LEN} are allowed",
                payload.len()
            ))));
        }
        if due_unix_ms > MAX_DUE_UNIX_MS {
            return Ok(Err(Error::Other(format!(
                "due-unix-ms {due_unix_ms} is too far in the future (at most {MAX_DUE_UNIX_MS})"
            ))));
        }
        if let Err(error) = self
            .timers
            .schedule(&store_key, due_unix_ms, &subject, &payload)
            .await
        {
            return Ok(Err(store_error("schedule", &store_key, error)));
        }
        self.wake.notify_one();
        Ok(Ok(()))
    }

    async fn cancel(&mut self, key: String) -> wasmtime::Result<Result<(), Error>> {
        let store_key = match self.store_key(&key) {
            Ok(store_key) => store_key,
            Err(error) => return Ok(Err(error)),
        };
        match self.timers.cancel(&store_key).await {
            Ok(_existed) => Ok(Ok(())),
            Err(error) => Ok(Err(store_error("cancel", &store_key, error))),
        }
    }
}

/// Adds `ticketing:platform/scheduler` to `linker`; `scheduler` picks the capability context
/// out of the store's data.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    scheduler: fn(&mut T) -> &mut SchedulerCtx,
) -> anyhow::Result<()> {
    scheduler::add_to_linker::<T, HasSelf<SchedulerCtx>>(linker, scheduler)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::event_bus::StreamConfig;
    use crate::backends::key_value::EmbeddedState;
    use crate::backends::timers::EmbeddedTimers;
    use scheduler::Host as _;
    use std::time::Duration;

    fn embedded_timers(dir: &tempfile::TempDir) -> Arc<dyn TimerStore> {
        let state = EmbeddedState::open(dir.path().join("state.redb")).unwrap();
        Arc::new(EmbeddedTimers::open(&state).unwrap())
    }

    /// An embedded event bus storing the default stream's subjects (`ticketing.>`).
    async fn embedded_bus(dir: &tempfile::TempDir) -> Arc<dyn EventBus> {
        let state = EmbeddedState::open(dir.path().join("bus.redb")).unwrap();
        crate::backends::event_bus::open("", &StreamConfig::default(), &state)
            .await
            .unwrap()
    }

    #[test]
    fn add_to_linker_defines_the_scheduler() {
        let engine = wasmtime::Engine::default();
        let mut linker = Linker::<SchedulerCtx>::new(&engine);
        add_to_linker(&mut linker, |ctx| ctx).unwrap();
    }

    #[tokio::test]
    async fn keys_are_namespaced_per_component() {
        let dir = tempfile::tempdir().unwrap();
        let timers = embedded_timers(&dir);
        let wake = Arc::new(Notify::new());
        let bus = embedded_bus(&dir).await;
        let mut expiration =
            SchedulerCtx::new("expiration", timers.clone(), wake.clone(), bus.clone());
        let mut other = SchedulerCtx::new("other", timers.clone(), wake.clone(), bus);

        expiration
            .schedule(
                "order-1".into(),
                5,
                "ticketing.expiration.complete".into(),
                b"{}".to_vec(),
            )
            .await
            .unwrap()
            .unwrap();
        // Another component's cancel of the same key touches only its own namespace.
        other.cancel("order-1".into()).await.unwrap().unwrap();

        let due = timers
            .claim_due(5, 10, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].key, "expiration/order-1");
        assert_eq!(due[0].subject, "ticketing.expiration.complete");
    }

    #[tokio::test]
    async fn schedule_wakes_the_driver_and_cancel_removes() {
        let dir = tempfile::tempdir().unwrap();
        let timers = embedded_timers(&dir);
        let wake = Arc::new(Notify::new());
        let bus = embedded_bus(&dir).await;
        let mut ctx = SchedulerCtx::new("expiration", timers.clone(), wake.clone(), bus);

        ctx.schedule("k".into(), 1, "ticketing.x".into(), vec![])
            .await
            .unwrap()
            .unwrap();
        // The permit left by `notify_one` makes this return at once.
        tokio::time::timeout(Duration::from_secs(5), wake.notified())
            .await
            .expect("schedule signals the driver");

        ctx.cancel("k".into()).await.unwrap().unwrap();
        ctx.cancel("never-scheduled".into()).await.unwrap().unwrap();
        assert_eq!(timers.counts().await.unwrap(), Default::default());
    }

    #[tokio::test]
    async fn invalid_requests_are_errors_not_traps() {
        let dir = tempfile::tempdir().unwrap();
        let timers = embedded_timers(&dir);
        let bus = embedded_bus(&dir).await;
        let mut ctx = SchedulerCtx::new("expiration", timers.clone(), Arc::new(Notify::new()), bus);
        let subject = || "ticketing.expiration.complete".to_owned();

        let rejected = [
            ctx.schedule(String::new(), 1, subject(), vec![]).await,
            ctx.schedule("x".repeat(MAX_KEY_LEN + 1), 1, subject(), vec![])
                .await,
            ctx.schedule("k".into(), 1, "ticketing.*".into(), vec![])
                .await,
            ctx.schedule("k".into(), 1, "has space".into(), vec![])
                .await,
            ctx.schedule("k".into(), 1, String::new(), vec![]).await,
            // Outside the stream's subjects: it could never be published.
            ctx.schedule(
                "k".into(),
                1,
                "elsewhere.expiration.complete".into(),
                vec![],
            )
            .await,
            ctx.schedule("k".into(), 1, subject(), vec![0; MAX_PAYLOAD_LEN + 1])
                .await,
            ctx.schedule("k".into(), MAX_DUE_UNIX_MS + 1, subject(), vec![])
                .await,
            ctx.cancel(String::new()).await,
        ];
        for (index, result) in rejected.into_iter().enumerate() {
            assert!(
                matches!(result, Ok(Err(Error::Other(_)))),
                "case {index}: {result:?}"
            );
        }
        assert_eq!(timers.counts().await.unwrap(), Default::default());
    }
}
