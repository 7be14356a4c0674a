//! A test mode that gives any key-value backend the semantics Spin 3.6.3's stores really
//! have, so that the race tests prove the components correct on the Spin that exists, not
//! only on this host. Chosen with `TICKETING_TEST_KV_SEMANTICS`:
//!
//! - `spin-redis` (Spin's `type = "redis"` store): a compare-and-swap is applied only if the
//!   value did not change, but always reports failure (Spin ends every swap with an
//!   `UNWATCH <key>` that Redis rejects); `get-many` fails the guest's whole invocation (it
//!   sends `KEYS k1 k2 ...`, and Spin panics parsing the reply: a 500 with an empty body).
//! - `spin-sqlite` (Spin's `type = "spin"` store): a compare-and-swap from an absent key is
//!   an unconditional write that reports success; `get-many` leaves absent keys out.
//!
//! `increment` is atomic on both, as here. (Sources: spinframework/spin v3.6.3,
//! `crates/key-value-redis/src/store.rs` and `crates/key-value-spin/src/store.rs`.)

use std::sync::Arc;

use async_trait::async_trait;

use super::KeyValueBackend;

/// The environment variable that selects the emulated semantics (unset: this host's own).
pub const ENV_VAR: &str = "TICKETING_TEST_KV_SEMANTICS";

/// A backend error that must fail the guest's whole invocation rather than come back to the
/// guest as an error value, as a panic inside Spin's host does.
#[derive(Debug)]
pub struct FailsInvocation(pub &'static str);

impl std::fmt::Display for FailsInvocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for FailsInvocation {}

/// Which Spin store to behave like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpinSemantics {
    Redis,
    Sqlite,
}

impl SpinSemantics {
    /// The semantics `TICKETING_TEST_KV_SEMANTICS` asks for, if any.
    pub fn from_env() -> anyhow::Result<Option<Self>> {
        match std::env::var(ENV_VAR).as_deref() {
            Err(_) | Ok("") => Ok(None),
            Ok("spin-redis") => Ok(Some(Self::Redis)),
            Ok("spin-sqlite") => Ok(Some(Self::Sqlite)),
            Ok(other) => {
                anyhow::bail!("{ENV_VAR}={other:?}: expected `spin-redis` or `spin-sqlite`")
            }
        }
    }

    /// `backend`, behaving as this Spin store does.
    pub fn wrap(self, backend: Arc<dyn KeyValueBackend>) -> Arc<dyn KeyValueBackend> {
        Arc::new(WithSpinSemantics {
            semantics: self,
            inner: backend,
        })
    }
}

struct WithSpinSemantics {
    semantics: SpinSemantics,
    inner: Arc<dyn KeyValueBackend>,
}

#[async_trait]
impl KeyValueBackend for WithSpinSemantics {
    async fn get(&self, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        self.inner.get(key).await
    }

    async fn set(&self, key: &str, value: &[u8]) -> anyhow::Result<()> {
        self.inner.set(key, value).await
    }

    async fn delete(&self, key: &str) -> anyhow::Result<()> {
        self.inner.delete(key).await
    }

    async fn exists(&self, key: &str) -> anyhow::Result<bool> {
        self.inner.exists(key).await
    }

    async fn keys(&self) -> anyhow::Result<Vec<String>> {
        self.inner.keys().await
    }

    async fn increment(&self, key: &str, delta: i64) -> anyhow::Result<i64> {
        self.inner.increment(key, delta).await
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> anyhow::Result<bool> {
        match (self.semantics, expected) {
            (SpinSemantics::Redis, _) => {
                // Conditional, but the outcome is lost to the failing UNWATCH.
                self.inner.compare_and_swap(key, expected, new).await?;
                Ok(false)
            }
            (SpinSemantics::Sqlite, None) => {
                self.inner.set(key, new).await?;
                Ok(true)
            }
            (SpinSemantics::Sqlite, Some(_)) => {
                self.inner.compare_and_swap(key, expected, new).await
            }
        }
    }

    async fn get_many(&self, keys: &[String]) -> anyhow::Result<Vec<(String, Option<Vec<u8>>)>> {
        match self.semantics {
            SpinSemantics::Redis => Err(FailsInvocation(
                "Spin 3.6.3's Redis get-many (KEYS k1 k2 ...) panics in the host",
            )
            .into()),
            SpinSemantics::Sqlite => {
                let mut found = self.inner.get_many(keys).await?;
                found.retain(|(_, value)| value.is_some());
                Ok(found)
            }
        }
    }

    async fn set_many(&self, entries: &[(String, Vec<u8>)]) -> anyhow::Result<()> {
        self.inner.set_many(entries).await
    }

    async fn delete_many(&self, keys: &[String]) -> anyhow::Result<()> {
        self.inner.delete_many(keys).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::key_value::EmbeddedState;

    fn store(semantics: SpinSemantics, dir: &tempfile::TempDir) -> Arc<dyn KeyValueBackend> {
        let state = EmbeddedState::open(dir.path().join("state.redb")).unwrap();
        semantics.wrap(Arc::new(state.key_value("test").unwrap()))
    }

    #[tokio::test]
    async fn spin_redis_swaps_conditionally_but_always_reports_a_conflict() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(SpinSemantics::Redis, &dir);
        store.set("k", b"a").await.unwrap();
        assert!(!store.compare_and_swap("k", Some(b"a"), b"b").await.unwrap());
        assert_eq!(store.get("k").await.unwrap().as_deref(), Some(&b"b"[..]));
        assert!(!store.compare_and_swap("k", Some(b"a"), b"c").await.unwrap());
        assert_eq!(store.get("k").await.unwrap().as_deref(), Some(&b"b"[..]));
        let error = store.get_many(&["k".into()]).await.unwrap_err();
        assert!(error.is::<FailsInvocation>());
    }

    #[tokio::test]
    async fn spin_sqlite_creates_unconditionally_and_skips_absent_keys_in_batches() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(SpinSemantics::Sqlite, &dir);
        assert!(store.compare_and_swap("k", None, b"a").await.unwrap());
        assert!(store.compare_and_swap("k", None, b"b").await.unwrap());
        assert_eq!(store.get("k").await.unwrap().as_deref(), Some(&b"b"[..]));
        assert!(!store.compare_and_swap("k", Some(b"a"), b"c").await.unwrap());
        let found = store
            .get_many(&["absent".into(), "k".into()])
            .await
            .unwrap();
        assert_eq!(found, vec![("k".to_owned(), Some(b"b".to_vec()))]);
    }
}
