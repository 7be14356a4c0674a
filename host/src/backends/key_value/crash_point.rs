//! A test mode that kills the host at an exact point: right after a key-value write to a
//! key containing `TICKETING_TEST_CRASH_AFTER_WRITE`, once that write is durable. Tests use
//! it to stop a writer inside a window that luck with timing would rarely hit (a claim made
//! and its key not written yet), then restart the host and check what users meet.

use std::sync::Arc;

use async_trait::async_trait;

use super::KeyValueBackend;

/// The environment variable naming the key (a substring of it) whose write kills the host.
pub const ENV_VAR: &str = "TICKETING_TEST_CRASH_AFTER_WRITE";

/// The crash point `TICKETING_TEST_CRASH_AFTER_WRITE` asks for, if any.
pub fn from_env() -> Option<String> {
    std::env::var(ENV_VAR)
        .ok()
        .filter(|pattern| !pattern.is_empty())
}

/// `backend`, killing the process after a write to a key containing `pattern`.
pub fn wrap(pattern: String, backend: Arc<dyn KeyValueBackend>) -> Arc<dyn KeyValueBackend> {
    Arc::new(CrashAfterWrite {
        pattern,
        inner: backend,
    })
}

struct CrashAfterWrite {
    pattern: String,
    inner: Arc<dyn KeyValueBackend>,
}

impl CrashAfterWrite {
    /// After a successful write to `key`: if it matches, makes it durable and aborts (no
    /// unwinding, no shutdown: as a SIGKILL would leave things).
    async fn after_write(&self, key: &str) {
        if !key.contains(&self.pattern) {
            return;
        }
        if let Err(error) = crate::backends::durable_barrier().await {
            eprintln!("test mode: crash point: the write is not durable: {error:#}");
        }
        eprintln!("test mode: crashing after writing {key} ({ENV_VAR})");
        std::process::abort();
    }
}

#[async_trait]
impl KeyValueBackend for CrashAfterWrite {
    async fn get(&self, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        self.inner.get(key).await
    }

    async fn set(&self, key: &str, value: &[u8]) -> anyhow::Result<()> {
        self.inner.set(key, value).await?;
        self.after_write(key).await;
        Ok(())
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
        let value = self.inner.increment(key, delta).await?;
        if delta != 0 {
            self.after_write(key).await;
        }
        Ok(value)
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> anyhow::Result<bool> {
        let swapped = self.inner.compare_and_swap(key, expected, new).await?;
        if swapped {
            self.after_write(key).await;
        }
        Ok(swapped)
    }

    async fn get_many(&self, keys: &[String]) -> anyhow::Result<Vec<(String, Option<Vec<u8>>)>> {
        self.inner.get_many(keys).await
    }

    async fn set_many(&self, entries: &[(String, Vec<u8>)]) -> anyhow::Result<()> {
        self.inner.set_many(entries).await?;
        for (key, _) in entries {
            self.after_write(key).await;
        }
        Ok(())
    }

    async fn delete_many(&self, keys: &[String]) -> anyhow::Result<()> {
        self.inner.delete_many(keys).await
    }
}
