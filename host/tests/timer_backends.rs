//! One conformance suite for both timer stores: the embedded redb file and a real
//! `redis-server` that each test starts on a free port. Stores are opened the way the host
//! opens them, through `open_timer_store`.
//!
//! Store checks pass their own clock (`now`) to `claim_due`, so leases and due times are
//! exercised without sleeping. The driver checks run on the real clock and publish to the
//! embedded event bus, observed through one of its durable consumers.

mod support;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use support::Redis;
use tokio::sync::Notify;

use ticketing_host::backends::event_bus::{
    Consumer, ConsumerOptions, EmbeddedEventBus, Event, EventBus, StreamConfig,
};
use ticketing_host::backends::key_value::EmbeddedState;
use ticketing_host::backends::timers::{
    now_unix_ms, open_timer_store, DueTimer, TimerCounts, TimerDriver, TimerDriverSettings,
    TimerStore,
};

/// A fixed point in time for the store checks (they never read the clock).
const T: u64 = 1_700_000_000_000;
const LEASE: Duration = Duration::from_secs(30);
const LEASE_MS: u64 = 30_000;
const SUBJECT: &str = "ticketing.expiration.complete";

/// Where one test's timers live. [`open`](Self::open) makes one more store instance on the
/// same data (another claimer, or the host after a restart).
struct Fixture {
    state_path: PathBuf,
    state: Option<EmbeddedState>,
    redis: Option<Redis>,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn embedded() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        Fixture {
            state_path: dir.path().join("state.redb"),
            state: None,
            redis: None,
            _dir: dir,
        }
    }

    fn redis() -> Fixture {
        Fixture {
            redis: Some(Redis::start()),
            ..Fixture::embedded()
        }
    }

    /// The host's state file (opened on first use, and again after a restart).
    fn state(&mut self) -> EmbeddedState {
        let path = &self.state_path;
        self.state
            .get_or_insert_with(|| EmbeddedState::open(path).unwrap())
            .clone()
    }

    async fn open(&mut self) -> Arc<dyn TimerStore> {
        let url = self.redis.as_ref().map(Redis::url).unwrap_or_default();
        open_timer_store(&url, &self.state()).await.unwrap()
    }

    /// A host restart: the state file is closed (every store of the test must be dropped
    /// first); a Redis server keeps running.
    fn restart(&mut self) {
        self.state = None;
    }

    /// Redis keeps claims across host restarts (other hosts may hold them); the embedded
    /// store's claims die with the process.
    fn claims_survive_restart(&self) -> bool {
        self.redis.is_some()
    }
}

fn keys(timers: &[DueTimer]) -> Vec<&str> {
    timers.iter().map(|timer| timer.key.as_str()).collect()
}

fn counts(waiting: usize, in_flight: usize) -> TimerCounts {
    TimerCounts { waiting, in_flight }
}

mod checks {
    use super::*;

    pub async fn due_timers_are_claimable_only_once_due(mut fixture: Fixture) {
        let store = fixture.open().await;
        let payload = [0u8, 1, 0xff, b'{', b'}'];
        store
            .schedule("a", T + 10, SUBJECT, &payload)
            .await
            .unwrap();
        store
            .schedule("b", T, "ticketing.other", b"")
            .await
            .unwrap();
        assert_eq!(store.counts().await.unwrap(), counts(2, 0));
        assert_eq!(store.next_due_ms().await.unwrap(), Some(T));

        assert!(store.claim_due(T - 1, 10, LEASE).await.unwrap().is_empty());
        let first = store.claim_due(T, 10, LEASE).await.unwrap();
        assert_eq!(keys(&first), ["b"]);
        assert_eq!(first[0].subject, "ticketing.other");
        assert_eq!(first[0].due_unix_ms, T);
        // "b" is leased now; "a" is not due yet.
        assert!(store.claim_due(T + 9, 10, LEASE).await.unwrap().is_empty());
        assert_eq!(store.next_due_ms().await.unwrap(), Some(T + 10));

        let second = store.claim_due(T + 10, 10, LEASE).await.unwrap();
        assert_eq!(
            second,
            [DueTimer {
                key: "a".into(),
                due_unix_ms: T + 10,
                subject: SUBJECT.into(),
                payload: payload.to_vec(),
                generation: second[0].generation,
            }]
        );
        assert_eq!(store.counts().await.unwrap(), counts(0, 2));
        assert_eq!(store.next_due_ms().await.unwrap(), None);

        assert!(store.complete(&first[0]).await.unwrap());
        assert!(store.complete(&second[0]).await.unwrap());
        assert!(!store.complete(&second[0]).await.unwrap(), "already gone");
        assert_eq!(store.counts().await.unwrap(), counts(0, 0));
        assert!(store
            .claim_due(T + 10 * LEASE_MS, 10, LEASE)
            .await
            .unwrap()
            .is_empty());
    }

    pub async fn claims_come_earliest_first_within_the_limit(mut fixture: Fixture) {
        let store = fixture.open().await;
        for i in (0..10).rev() {
            store
                .schedule(&format!("t{i}"), T + i, SUBJECT, b"")
                .await
                .unwrap();
        }
        let mut claimed = Vec::new();
        for expected in [["t0", "t1", "t2"], ["t3", "t4", "t5"], ["t6", "t7", "t8"]] {
            let batch = store.claim_due(T + 100, 3, LEASE).await.unwrap();
            assert_eq!(keys(&batch), expected);
            claimed.extend(batch);
        }
        assert_eq!(
            keys(&store.claim_due(T + 100, 3, LEASE).await.unwrap()),
            ["t9"]
        );
        assert!(store.claim_due(T + 100, 0, LEASE).await.unwrap().is_empty());
        assert_eq!(store.counts().await.unwrap(), counts(0, 10));
    }

    pub async fn cancel_drops_waiting_and_claimed_timers(mut fixture: Fixture) {
        let store = fixture.open().await;
        store.schedule("a", T, SUBJECT, b"a").await.unwrap();
        store.schedule("b", T, SUBJECT, b"b").await.unwrap();

        assert!(store.cancel("a").await.unwrap());
        assert!(!store.cancel("a").await.unwrap());
        assert!(!store.cancel("never-scheduled").await.unwrap());

        let claimed = store.claim_due(T, 10, LEASE).await.unwrap();
        assert_eq!(keys(&claimed), ["b"]);
        // Cancelled while being fired: the claim can no longer complete it, and it does not
        // come back when the lease runs out.
        assert!(store.cancel("b").await.unwrap());
        assert!(!store.complete(&claimed[0]).await.unwrap());
        assert!(store
            .claim_due(T + 2 * LEASE_MS, 10, LEASE)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(store.counts().await.unwrap(), counts(0, 0));
    }

    pub async fn rescheduling_replaces_the_timer(mut fixture: Fixture) {
        let store = fixture.open().await;
        store.schedule("k", T, SUBJECT, b"first").await.unwrap();
        store
            .schedule("k", T + 50, "ticketing.second", b"second")
            .await
            .unwrap();
        assert_eq!(store.counts().await.unwrap(), counts(1, 0));
        assert!(store.claim_due(T, 10, LEASE).await.unwrap().is_empty());

        let old = store.claim_due(T + 50, 10, LEASE).await.unwrap();
        assert_eq!(keys(&old), ["k"]);
        assert_eq!(
            (old[0].subject.as_str(), old[0].payload.as_slice()),
            ("ticketing.second", &b"second"[..])
        );

        // Rescheduled while that claim is being fired: the old claim's completion must not
        // remove the new scheduling, and the new one fires at its own time.
        store
            .schedule("k", T + 100, SUBJECT, b"third")
            .await
            .unwrap();
        assert!(!store.complete(&old[0]).await.unwrap());
        assert_eq!(store.counts().await.unwrap(), counts(1, 0));
        assert!(store.claim_due(T + 99, 10, LEASE).await.unwrap().is_empty());

        let new = store.claim_due(T + 100, 10, LEASE).await.unwrap();
        assert_eq!(keys(&new), ["k"]);
        assert_eq!(new[0].payload, b"third");
        assert_ne!(new[0].generation, old[0].generation);
        assert_ne!(new[0].message_id(), old[0].message_id());
        assert!(store.complete(&new[0]).await.unwrap());
        assert_eq!(store.counts().await.unwrap(), counts(0, 0));
    }

    /// A key scheduled again after it fired (or was cancelled) gets a new message id, so the
    /// event bus's duplicate window cannot swallow the second firing.
    pub async fn message_ids_never_repeat_for_a_key(mut fixture: Fixture) {
        let store = fixture.open().await;
        let mut ids = BTreeSet::new();
        for round in 0..3 {
            store.schedule("k", T, SUBJECT, b"").await.unwrap();
            if round == 1 {
                store.cancel("k").await.unwrap();
                store.schedule("k", T, SUBJECT, b"").await.unwrap();
            }
            let claimed = store.claim_due(T, 10, LEASE).await.unwrap();
            assert_eq!(keys(&claimed), ["k"]);
            assert!(claimed[0].message_id().starts_with("timer:k:"));
            assert!(
                ids.insert(claimed[0].message_id()),
                "repeated id in round {round}"
            );
            assert!(store.complete(&claimed[0]).await.unwrap());
        }
    }

    /// Two store instances on the same data (two hosts on one Redis, two handles on one state
    /// file), two claimers each, racing over 1,000 due timers: each is claimed exactly once.
    pub async fn concurrent_claimers_claim_each_timer_once(mut fixture: Fixture) {
        const TIMERS: usize = 1000;
        let first = fixture.open().await;
        let second = fixture.open().await;

        // Scheduled from several tasks at once (embedded: one fsync each).
        let mut scheduling = tokio::task::JoinSet::new();
        for part in 0..8 {
            let store = if part % 2 == 0 { &first } else { &second }.clone();
            scheduling.spawn(async move {
                for i in (part..TIMERS).step_by(8) {
                    store
                        .schedule(&format!("timer-{i:04}"), T + (i as u64 % 7), SUBJECT, b"")
                        .await
                        .unwrap();
                }
            });
        }
        scheduling.join_all().await;
        assert_eq!(first.counts().await.unwrap(), counts(TIMERS, 0));

        let mut claimers = tokio::task::JoinSet::new();
        for store in [&first, &second, &first, &second] {
            let store = store.clone();
            claimers.spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let batch = store.claim_due(T + 10, 25, LEASE).await.unwrap();
                    if batch.is_empty() {
                        return mine;
                    }
                    mine.extend(batch.into_iter().map(|timer| timer.key));
                }
            });
        }
        let claimed: Vec<String> = claimers.join_all().await.into_iter().flatten().collect();
        let distinct: BTreeSet<&String> = claimed.iter().collect();
        assert_eq!(claimed.len(), TIMERS, "every timer claimed, none twice");
        assert_eq!(distinct.len(), TIMERS);
        assert_eq!(second.counts().await.unwrap(), counts(0, TIMERS));
    }

    /// A claimer that never completes (it crashed, or could not publish) holds the timer
    /// only until its lease runs out; then another claimer gets it, same generation.
    pub async fn an_expired_lease_makes_the_timer_claimable_again(mut fixture: Fixture) {
        let crashed = fixture.open().await;
        let other = fixture.open().await;
        crashed.schedule("k", T, SUBJECT, b"p").await.unwrap();

        let lease = Duration::from_millis(1000);
        let lost = crashed.claim_due(T, 10, lease).await.unwrap();
        assert_eq!(keys(&lost), ["k"]);
        assert!(other
            .claim_due(T + 999, 10, lease)
            .await
            .unwrap()
            .is_empty());

        let retried = other.claim_due(T + 1000, 10, LEASE).await.unwrap();
        assert_eq!(
            retried, lost,
            "the same timer, same generation and message id"
        );
        assert_eq!(other.counts().await.unwrap(), counts(0, 1));
        assert!(other
            .claim_due(T + 2000, 10, LEASE)
            .await
            .unwrap()
            .is_empty());

        assert!(other.complete(&retried[0]).await.unwrap());
        // The first claimer coming back late finds it done.
        assert!(!crashed.complete(&lost[0]).await.unwrap());
        assert_eq!(other.counts().await.unwrap(), counts(0, 0));
    }

    pub async fn timers_survive_a_restart(mut fixture: Fixture) {
        {
            let store = fixture.open().await;
            store.schedule("a", T, SUBJECT, b"a").await.unwrap();
            store.schedule("b", T + 10, SUBJECT, b"b").await.unwrap();
            store.schedule("c", T, SUBJECT, b"c").await.unwrap();
            store.schedule("gone", T, SUBJECT, b"").await.unwrap();
            store.cancel("gone").await.unwrap();

            let done = store.claim_due(T, 1, LEASE).await.unwrap();
            assert_eq!(keys(&done), ["a"]);
            assert!(store.complete(&done[0]).await.unwrap());
            // Claimed, then the host dies before publishing it.
            assert_eq!(keys(&store.claim_due(T, 1, LEASE).await.unwrap()), ["c"]);
        }
        fixture.restart();
        let store = fixture.open().await;

        let mut due = store.claim_due(T + 10, 10, LEASE).await.unwrap();
        if fixture.claims_survive_restart() {
            assert_eq!(store.counts().await.unwrap(), counts(0, 2));
            assert_eq!(keys(&due), ["b"]);
            // The dead host's claim runs out like any other.
            due.extend(store.claim_due(T + LEASE_MS, 10, LEASE).await.unwrap());
        }
        let mut fired: Vec<&str> = keys(&due);
        fired.sort_unstable();
        assert_eq!(fired, ["b", "c"]);
        assert_eq!(
            due.iter().find(|timer| timer.key == "b").unwrap().payload,
            b"b"
        );
        for timer in &due {
            assert!(store.complete(timer).await.unwrap());
        }
        assert_eq!(store.counts().await.unwrap(), counts(0, 0));
    }

    // ---- the driver, on the real clock, publishing to the embedded event bus ----

    pub async fn driver_fires_due_timers_once(mut fixture: Fixture) {
        let store = fixture.open().await;
        let probe = Probe::new(&mut fixture).await;
        let now = now_unix_ms();
        store
            .schedule("late", now - 60_000, SUBJECT, b"late")
            .await
            .unwrap();
        store
            .schedule("soon", now + 300, SUBJECT, b"soon")
            .await
            .unwrap();
        store
            .schedule("later", now + 3_600_000, SUBJECT, b"later")
            .await
            .unwrap();

        let driver = start_driver(&store, probe.bus.clone(), Arc::new(Notify::new()), fast());
        let mut payloads = vec![probe.next_payload().await, probe.next_payload().await];
        payloads.sort();
        assert_eq!(payloads, [b"late".to_vec(), b"soon".to_vec()]);
        eventually(|| async { store.counts().await.unwrap() == counts(1, 0) }).await;
        probe.assert_nothing_more().await;
        driver.stop().await;
        assert_eq!(store.next_due_ms().await.unwrap(), Some(now + 3_600_000));
    }

    pub async fn driver_retries_a_failed_publish(mut fixture: Fixture) {
        let store = fixture.open().await;
        let probe = Probe::new(&mut fixture).await;
        let flaky = Arc::new(FailingFirst {
            failures_left: AtomicUsize::new(2),
            attempts: AtomicUsize::new(0),
            bus: probe.bus.clone(),
        });
        store
            .schedule("k", now_unix_ms(), SUBJECT, b"k")
            .await
            .unwrap();

        let settings = TimerDriverSettings {
            lease: Duration::from_millis(300),
            ..fast()
        };
        let driver = start_driver(&store, flaky.clone(), Arc::new(Notify::new()), settings);
        assert_eq!(probe.next_payload().await, b"k");
        eventually(|| async { store.counts().await.unwrap() == counts(0, 0) }).await;
        driver.stop().await;
        // Two failures, then success; a slow completion may add a republish (lease 300 ms),
        // which the bus drops as a duplicate.
        assert!(flaky.attempts.load(Ordering::SeqCst) >= 3);
        probe.assert_nothing_more().await;
    }

    /// With polling effectively off, a timer scheduled by this host still fires on time:
    /// the wake-up makes the driver look, and it then sleeps until the due time.
    pub async fn scheduling_wakes_the_driver(mut fixture: Fixture) {
        let store = fixture.open().await;
        let probe = Probe::new(&mut fixture).await;
        let wake = Arc::new(Notify::new());
        let settings = TimerDriverSettings {
            poll_interval: Duration::from_secs(3600),
            ..fast()
        };
        let driver = start_driver(&store, probe.bus.clone(), wake.clone(), settings);
        // Let the driver reach its (hour-long) sleep first.
        tokio::time::sleep(Duration::from_millis(200)).await;

        store
            .schedule("k", now_unix_ms() + 200, SUBJECT, b"k")
            .await
            .unwrap();
        wake.notify_one();
        assert_eq!(probe.next_payload().await, b"k");
        driver.stop().await;
    }
}

/// Declares each check as one test per store.
macro_rules! on_both_stores {
    ($($check:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    super::checks::$check(super::Fixture::embedded()).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    super::checks::$check(super::Fixture::redis()).await;
                }
            )*
        }
    };
}

on_both_stores!(
    due_timers_are_claimable_only_once_due,
    claims_come_earliest_first_within_the_limit,
    cancel_drops_waiting_and_claimed_timers,
    rescheduling_replaces_the_timer,
    message_ids_never_repeat_for_a_key,
    concurrent_claimers_claim_each_timer_once,
    an_expired_lease_makes_the_timer_claimable_again,
    timers_survive_a_restart,
    driver_fires_due_timers_once,
    driver_retries_a_failed_publish,
    scheduling_wakes_the_driver,
);

#[tokio::test]
async fn an_unreachable_redis_fails_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let state = EmbeddedState::open(dir.path().join("state.redb")).unwrap();
    let url = format!("redis://127.0.0.1:{}", support::free_port());
    let error = open_timer_store(&url, &state)
        .await
        .err()
        .expect("no server there");
    assert!(format!("{error:#}").contains("timers_url"), "{error:#}");
    assert!(open_timer_store("not a url", &state).await.is_err());
}

// ---- driver helpers ----

fn fast() -> TimerDriverSettings {
    TimerDriverSettings {
        poll_interval: Duration::from_millis(50),
        ..TimerDriverSettings::default()
    }
}

fn start_driver(
    store: &Arc<dyn TimerStore>,
    bus: Arc<dyn EventBus>,
    wake: Arc<Notify>,
    settings: TimerDriverSettings,
) -> TimerDriver {
    TimerDriver::start(store.clone(), bus, wake, settings)
}

/// Generous bound for "eventually": these checks measure correctness, not latency.
const EVENTUALLY: Duration = Duration::from_secs(20);

async fn eventually<F, Fut>(mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + EVENTUALLY;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {EVENTUALLY:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The embedded event bus (in the fixture's state file) and a durable consumer of everything
/// the timers publish.
struct Probe {
    bus: Arc<dyn EventBus>,
    consumer: tokio::sync::Mutex<Box<dyn Consumer>>,
}

impl Probe {
    async fn new(fixture: &mut Fixture) -> Probe {
        let bus: Arc<dyn EventBus> =
            Arc::new(EmbeddedEventBus::open(&fixture.state(), StreamConfig::default()).unwrap());
        let options = ConsumerOptions {
            max_deliver: 5,
            ack_wait: Duration::from_secs(60),
        };
        let consumer = bus.consume("probe", "ticketing.>", &options).await.unwrap();
        Probe {
            bus,
            consumer: tokio::sync::Mutex::new(consumer),
        }
    }

    /// The payload of the next event, which must be a first delivery on [`SUBJECT`]; acked.
    async fn next_payload(&self) -> Vec<u8> {
        let mut consumer = self.consumer.lock().await;
        let delivery = tokio::time::timeout(EVENTUALLY, consumer.next())
            .await
            .expect("an event within the bound")
            .unwrap();
        assert_eq!(
            (delivery.subject.as_str(), delivery.delivered),
            (SUBJECT, 1)
        );
        let payload = delivery.payload.clone();
        delivery.ack().await.unwrap();
        payload
    }

    /// No further event arrives (a short look: this can only miss a duplicate, never fail a
    /// correct driver).
    async fn assert_nothing_more(&self) {
        let mut consumer = self.consumer.lock().await;
        if let Ok(delivery) =
            tokio::time::timeout(Duration::from_millis(500), consumer.next()).await
        {
            panic!("unexpected event: {delivery:?}");
        }
    }
}

/// Our own `EventBus` trait, failing its first publishes before passing them to a real bus:
/// a publish failure as the driver would see a NATS outage.
struct FailingFirst {
    failures_left: AtomicUsize,
    attempts: AtomicUsize,
    bus: Arc<dyn EventBus>,
}

#[async_trait]
impl EventBus for FailingFirst {
    async fn publish(&self, event: Event) -> anyhow::Result<()> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        let failing = self
            .failures_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                left.checked_sub(1)
            })
            .is_ok();
        if failing {
            anyhow::bail!("event bus unavailable (test)");
        }
        self.bus.publish(event).await
    }

    async fn consume(
        &self,
        name: &str,
        subject: &str,
        options: &ConsumerOptions,
    ) -> anyhow::Result<Box<dyn Consumer>> {
        self.bus.consume(name, subject, options).await
    }
}
