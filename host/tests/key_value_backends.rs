//! One conformance suite for every key-value backend: the embedded redb file and a real
//! `redis-server` that each test starts on a free port and stops when done.
//!
//! Backends are built the way the host builds them, through `KeyValueStores::open`.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;

use support::Redis;

use ticketing_host::backends::key_value::{
    EmbeddedState, KeyValueBackend, KeyValueStores, StoreConfig,
};

const LABEL: &str = "default";

/// Keeps whatever a backend needs (temp dirs, a server process) alive for one test.
struct Fixture {
    store: Arc<dyn KeyValueBackend>,
    _state_dir: tempfile::TempDir,
    _redis: Option<Redis>,
}

async fn embedded_fixture() -> Fixture {
    let state_dir = tempfile::tempdir().unwrap();
    let embedded = EmbeddedState::open(state_dir.path().join("state.redb")).unwrap();
    // No config for the label: the host falls back to the embedded state.
    let stores = KeyValueStores::open(&BTreeMap::new(), &[LABEL.to_owned()], &embedded)
        .await
        .unwrap();
    Fixture {
        store: stores.get(LABEL).unwrap(),
        _state_dir: state_dir,
        _redis: None,
    }
}

async fn redis_fixture() -> Fixture {
    let redis = Redis::start();
    let state_dir = tempfile::tempdir().unwrap();
    let embedded = EmbeddedState::open(state_dir.path().join("state.redb")).unwrap();
    let configs = BTreeMap::from([(LABEL.to_owned(), StoreConfig::Redis { url: redis.url() })]);
    let stores = KeyValueStores::open(&configs, &[LABEL.to_owned()], &embedded)
        .await
        .unwrap();
    assert!(stores.summary(LABEL).unwrap().starts_with("Redis at"));
    Fixture {
        store: stores.get(LABEL).unwrap(),
        _state_dir: state_dir,
        _redis: Some(redis),
    }
}

/// The conformance suite: each check runs against each backend.
macro_rules! conformance_suite {
    ($backend:ident, $fixture:path) => {
        mod $backend {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn set_get_exists_delete() {
                let fixture = $fixture().await;
                checks::set_get_exists_delete(&*fixture.store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn values_are_binary_safe() {
                let fixture = $fixture().await;
                checks::values_are_binary_safe(&*fixture.store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn keys_lists_every_key() {
                let fixture = $fixture().await;
                checks::keys_lists_every_key(&*fixture.store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn compare_and_swap_semantics() {
                let fixture = $fixture().await;
                checks::compare_and_swap_semantics(&*fixture.store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn increment_semantics() {
                let fixture = $fixture().await;
                checks::increment_semantics(&*fixture.store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn batch_operations() {
                let fixture = $fixture().await;
                checks::batch_operations(&*fixture.store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn concurrent_compare_and_swap_increments_lose_no_update() {
                let fixture = $fixture().await;
                checks::concurrent_compare_and_swap_increments(fixture.store.clone()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn concurrent_increments_lose_no_update() {
                let fixture = $fixture().await;
                checks::concurrent_increments(fixture.store.clone()).await;
            }
        }
    };
}

conformance_suite!(embedded, embedded_fixture);
conformance_suite!(redis, redis_fixture);

mod checks {
    use super::*;

    pub async fn set_get_exists_delete(store: &dyn KeyValueBackend) {
        assert_eq!(store.get("user:1").await.unwrap(), None);
        assert!(!store.exists("user:1").await.unwrap());

        store.set("user:1", b"alice").await.unwrap();
        assert_eq!(store.get("user:1").await.unwrap(), Some(b"alice".to_vec()));
        assert!(store.exists("user:1").await.unwrap());

        store.set("user:1", b"alice v2").await.unwrap();
        assert_eq!(
            store.get("user:1").await.unwrap(),
            Some(b"alice v2".to_vec())
        );

        store.delete("user:1").await.unwrap();
        assert_eq!(store.get("user:1").await.unwrap(), None);
        assert!(!store.exists("user:1").await.unwrap());
        // Deleting an absent key is fine.
        store.delete("user:1").await.unwrap();
    }

    pub async fn values_are_binary_safe(store: &dyn KeyValueBackend) {
        let value: Vec<u8> = (0..=255u8).chain([0, 0, 13, 10]).collect();
        store.set("bin", &value).await.unwrap();
        assert_eq!(store.get("bin").await.unwrap(), Some(value));

        store.set("empty", b"").await.unwrap();
        assert_eq!(store.get("empty").await.unwrap(), Some(Vec::new()));
        assert!(store.exists("empty").await.unwrap());
    }

    pub async fn keys_lists_every_key(store: &dyn KeyValueBackend) {
        assert!(store.keys().await.unwrap().is_empty());
        // More than one SCAN page on Redis.
        let expected: Vec<String> = (0..2500).map(|i| format!("ticket:{i:05}")).collect();
        let entries: Vec<(String, Vec<u8>)> = expected
            .iter()
            .map(|key| (key.clone(), b"x".to_vec()))
            .collect();
        store.set_many(&entries).await.unwrap();
        store.delete("ticket:00007").await.unwrap();

        let mut keys = store.keys().await.unwrap();
        keys.sort();
        let expected: Vec<String> = expected
            .into_iter()
            .filter(|key| key != "ticket:00007")
            .collect();
        assert_eq!(keys, expected);
    }

    pub async fn compare_and_swap_semantics(store: &dyn KeyValueBackend) {
        // Absent key: "must be absent" succeeds once.
        assert!(store.compare_and_swap("k", None, b"v1").await.unwrap());
        assert_eq!(store.get("k").await.unwrap(), Some(b"v1".to_vec()));
        assert!(!store.compare_and_swap("k", None, b"other").await.unwrap());

        // Present key: the expected bytes must match exactly.
        assert!(store
            .compare_and_swap("k", Some(b"v1"), b"v2")
            .await
            .unwrap());
        assert!(!store
            .compare_and_swap("k", Some(b"v1"), b"v3")
            .await
            .unwrap());
        assert!(!store
            .compare_and_swap("k", Some(b"v"), b"v3")
            .await
            .unwrap());
        assert_eq!(store.get("k").await.unwrap(), Some(b"v2".to_vec()));

        // An empty value is present, not absent.
        store.set("e", b"").await.unwrap();
        assert!(!store.compare_and_swap("e", None, b"x").await.unwrap());
        assert!(store.compare_and_swap("e", Some(b""), b"x").await.unwrap());

        // Expecting a value where there is none fails and creates nothing.
        assert!(!store
            .compare_and_swap("missing", Some(b"v1"), b"x")
            .await
            .unwrap());
        assert!(!store.exists("missing").await.unwrap());
    }

    pub async fn increment_semantics(store: &dyn KeyValueBackend) {
        assert_eq!(store.increment("n", 5).await.unwrap(), 5);
        assert_eq!(store.increment("n", -8).await.unwrap(), -3);
        // Stored as ASCII decimal, the representation both backends share.
        assert_eq!(store.get("n").await.unwrap(), Some(b"-3".to_vec()));

        store.set("m", b"40").await.unwrap();
        assert_eq!(store.increment("m", 2).await.unwrap(), 42);

        store.set("text", b"not a number").await.unwrap();
        assert!(store.increment("text", 1).await.is_err());
        assert_eq!(
            store.get("text").await.unwrap(),
            Some(b"not a number".to_vec())
        );

        store
            .set("max", i64::MAX.to_string().as_bytes())
            .await
            .unwrap();
        assert!(store.increment("max", 1).await.is_err());
    }

    pub async fn batch_operations(store: &dyn KeyValueBackend) {
        assert!(store.get_many(&[]).await.unwrap().is_empty());
        store.set_many(&[]).await.unwrap();
        store.delete_many(&[]).await.unwrap();

        store
            .set_many(&[
                ("a".to_owned(), b"1".to_vec()),
                ("b".to_owned(), b"2".to_vec()),
                ("c".to_owned(), b"3".to_vec()),
            ])
            .await
            .unwrap();
        let got = store
            .get_many(&["c".to_owned(), "nope".to_owned(), "a".to_owned()])
            .await
            .unwrap();
        assert_eq!(
            got,
            vec![
                ("c".to_owned(), Some(b"3".to_vec())),
                ("nope".to_owned(), None),
                ("a".to_owned(), Some(b"1".to_vec())),
            ]
        );

        store
            .delete_many(&["a".to_owned(), "c".to_owned(), "nope".to_owned()])
            .await
            .unwrap();
        assert_eq!(store.keys().await.unwrap(), vec!["b".to_owned()]);
    }

    const TASKS: i64 = 50;

    /// 50 tasks each add one with a read-modify-write CAS loop, the way a component uses
    /// `wasi:keyvalue/atomics`: no update may be lost.
    pub async fn concurrent_compare_and_swap_increments(store: Arc<dyn KeyValueBackend>) {
        let tasks: Vec<_> = (0..TASKS)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move {
                    let mut attempts = 0;
                    loop {
                        attempts += 1;
                        let current = store.get("counter").await.unwrap();
                        let next = match &current {
                            Some(bytes) => {
                                std::str::from_utf8(bytes).unwrap().parse::<i64>().unwrap() + 1
                            }
                            None => 1,
                        };
                        if store
                            .compare_and_swap(
                                "counter",
                                current.as_deref(),
                                next.to_string().as_bytes(),
                            )
                            .await
                            .unwrap()
                        {
                            return attempts;
                        }
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        let mut total_attempts = 0;
        for task in tasks {
            total_attempts += task.await.unwrap();
        }
        assert_eq!(store.get("counter").await.unwrap(), Some(b"50".to_vec()));
        assert!(total_attempts >= TASKS);
    }

    pub async fn concurrent_increments(store: Arc<dyn KeyValueBackend>) {
        let tasks: Vec<_> = (0..TASKS)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move { store.increment("hits", 1).await.unwrap() })
            })
            .collect();
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.unwrap());
        }
        results.sort_unstable();
        // Every task saw a distinct count: 1..=50.
        assert_eq!(results, (1..=TASKS).collect::<Vec<_>>());
        assert_eq!(store.get("hits").await.unwrap(), Some(b"50".to_vec()));
    }
}

#[tokio::test]
async fn unreachable_redis_fails_start_up_naming_label_and_url() {
    // A port nothing listens on: bind, note the port, release it.
    let port = support::free_port();
    let state_dir = tempfile::tempdir().unwrap();
    let embedded = EmbeddedState::open(state_dir.path().join("state.redb")).unwrap();
    let url = format!("redis://user:hunter2@127.0.0.1:{port}");
    let configs = BTreeMap::from([("orders".to_owned(), StoreConfig::Redis { url })]);

    let error = match KeyValueStores::open(&configs, &[], &embedded).await {
        Ok(_) => panic!("opening a store on an unreachable Redis must fail"),
        Err(error) => format!("{error:#}"),
    };
    assert!(error.contains("\"orders\""), "{error}");
    assert!(error.contains(&format!("127.0.0.1:{port}")), "{error}");
    assert!(!error.contains("hunter2"), "password leaked: {error}");
}

#[tokio::test]
async fn labels_without_config_share_the_embedded_file_and_spin_paths_get_their_own() {
    let state_dir = tempfile::tempdir().unwrap();
    let embedded = EmbeddedState::open(state_dir.path().join("state.redb")).unwrap();
    let other_file = state_dir.path().join("other/kv.redb");
    let configs = BTreeMap::from([
        (
            "archive".to_owned(),
            StoreConfig::Spin {
                path: Some(other_file.clone()),
            },
        ),
        (
            "archive_too".to_owned(),
            StoreConfig::Spin {
                path: Some(other_file.clone()),
            },
        ),
        (
            "main_file".to_owned(),
            StoreConfig::Spin {
                path: Some(embedded.path().to_owned()),
            },
        ),
    ]);
    let in_use = ["orders".to_owned(), "tickets".to_owned()];
    let stores = KeyValueStores::open(&configs, &in_use, &embedded)
        .await
        .unwrap();

    let mut labels: Vec<&str> = stores.labels().collect();
    labels.sort_unstable();
    assert_eq!(
        labels,
        ["archive", "archive_too", "main_file", "orders", "tickets"]
    );
    assert!(other_file.exists());
    assert!(stores
        .summary("archive")
        .unwrap()
        .contains(&*other_file.to_string_lossy()));
    assert!(stores
        .summary("orders")
        .unwrap()
        .contains(&*embedded.path().to_string_lossy()));

    // Each label is its own keyspace, whichever file holds it.
    let orders = stores.get("orders").unwrap();
    let archive = stores.get("archive").unwrap();
    orders.set("k", b"orders").await.unwrap();
    archive.set("k", b"archive").await.unwrap();
    assert_eq!(orders.get("k").await.unwrap(), Some(b"orders".to_vec()));
    assert_eq!(archive.get("k").await.unwrap(), Some(b"archive".to_vec()));
    assert_eq!(stores.get("tickets").unwrap().get("k").await.unwrap(), None);
    assert_eq!(
        stores.get("archive_too").unwrap().get("k").await.unwrap(),
        None
    );
    assert!(stores.get("unknown").is_none());
}

/// One Redis shared by this host and Spin: under `spin up`, Spin's HTTP trigger and the
/// `trigger-nats` plugin use the same `type = "redis"` stores from two processes. The Spin
/// side here sends the commands Spin 3.6.3's Redis store sends
/// (`crates/key-value-redis/src/store.rs`): raw keys with `GET`/`SET`/`EXISTS`/`DEL`,
/// `INCRBY` for increment (decimal text), and compare-and-swap as `WATCH` + `GET`, then
/// `MULTI`/`SET`/`EXEC` on the same connection.
mod spin_redis_interop {
    use super::*;

    struct Spin(::redis::Connection);

    impl Spin {
        fn connect(url: &str) -> Spin {
            Spin(
                ::redis::Client::open(url)
                    .unwrap()
                    .get_connection()
                    .unwrap(),
            )
        }

        fn get(&mut self, key: &str) -> Option<Vec<u8>> {
            ::redis::cmd("GET").arg(key).query(&mut self.0).unwrap()
        }

        fn set(&mut self, key: &str, value: &[u8]) {
            let () = ::redis::cmd("SET")
                .arg(key)
                .arg(value)
                .query(&mut self.0)
                .unwrap();
        }

        fn increment(&mut self, key: &str, delta: i64) -> i64 {
            ::redis::cmd("INCRBY")
                .arg(key)
                .arg(delta)
                .query(&mut self.0)
                .unwrap()
        }

        /// `Cas::current`: watch the key, read it.
        fn watch(&mut self, key: &str) -> Option<Vec<u8>> {
            let () = ::redis::cmd("WATCH").arg(key).query(&mut self.0).unwrap();
            self.get(key)
        }

        /// `Cas::swap`'s transaction: whether `EXEC` applied it (nil = aborted).
        fn swap(&mut self, key: &str, value: &[u8]) -> bool {
            let applied: Option<((),)> = ::redis::pipe()
                .atomic()
                .set(key, value)
                .query(&mut self.0)
                .unwrap();
            applied.is_some()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn values_and_counters_read_the_same_from_both_sides() {
        let fixture = redis_fixture().await;
        let (host, mut spin) = (&fixture.store, Spin::connect(&redis_url(&fixture)));

        host.set("tickets:ticket:1", br#"{"id":"1"}"#)
            .await
            .unwrap();
        assert_eq!(
            spin.get("tickets:ticket:1").as_deref(),
            Some(&br#"{"id":"1"}"#[..])
        );
        spin.set("auth:email:a@b.co", br#""u1""#);
        assert_eq!(
            host.get("auth:email:a@b.co").await.unwrap().as_deref(),
            Some(&br#""u1""#[..])
        );
        assert!(host.exists("auth:email:a@b.co").await.unwrap());

        assert_eq!(host.increment("tickets:all:count", 5).await.unwrap(), 5);
        assert_eq!(spin.increment("tickets:all:count", 1), 6);
        assert_eq!(host.increment("tickets:all:count", 0).await.unwrap(), 6);
        assert_eq!(spin.get("tickets:all:count").as_deref(), Some(&b"6"[..]));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_compare_and_swap_on_one_side_fails_the_other_sides() {
        let fixture = redis_fixture().await;
        let (host, mut spin) = (&fixture.store, Spin::connect(&redis_url(&fixture)));
        host.set("k", b"v1").await.unwrap();

        // Spin reads, the host swaps first: Spin's swap is not applied.
        assert_eq!(spin.watch("k").as_deref(), Some(&b"v1"[..]));
        assert!(host
            .compare_and_swap("k", Some(b"v1"), b"host")
            .await
            .unwrap());
        assert!(!spin.swap("k", b"spin"));
        assert_eq!(host.get("k").await.unwrap().as_deref(), Some(&b"host"[..]));

        // Spin swaps first: the host's swap from the old value fails.
        assert_eq!(spin.watch("k").as_deref(), Some(&b"host"[..]));
        assert!(spin.swap("k", b"spin"));
        assert!(!host
            .compare_and_swap("k", Some(b"host"), b"late")
            .await
            .unwrap());
        assert_eq!(host.get("k").await.unwrap().as_deref(), Some(&b"spin"[..]));

        // A key Spin creates while the host expects it absent.
        assert!(spin.watch("new").is_none());
        assert!(spin.swap("new", b"spin"));
        assert!(!host.compare_and_swap("new", None, b"host").await.unwrap());
    }

    fn redis_url(fixture: &Fixture) -> String {
        fixture._redis.as_ref().unwrap().url()
    }
}
