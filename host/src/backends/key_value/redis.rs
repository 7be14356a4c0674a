//! The Redis key-value backend. Keys are used raw (Spin's format: every label pointing at the
//! same server shares its keyspace, and components namespace their own keys).
//!
//! Atomicity comes from Redis itself: `INCRBY` for increment, and a Lua script, which Redis
//! runs without interleaving other commands, for compare-and-swap.

use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::KeyValueBackend;

/// GET, compare with the expected value (or require absence), SET: one atomic step.
/// KEYS[1] = key; ARGV[1] = "1" if a value is expected, "0" if the key must be absent;
/// ARGV[2] = expected value (ignored when absent is required); ARGV[3] = new value.
const COMPARE_AND_SWAP_LUA: &str = r"
local current = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
  if current ~= ARGV[2] then return 0 end
elseif current then
  return 0
end
redis.call('SET', KEYS[1], ARGV[3])
return 1
";

/// SCAN page size: large enough for few round trips, small enough not to stall the server.
const SCAN_COUNT: usize = 1000;

/// A Redis server. Cheap to clone: clones share one multiplexed connection that reconnects by
/// itself after the server restarts or the network drops.
#[derive(Clone)]
pub struct RedisKeyValue {
    connection: ConnectionManager,
    compare_and_swap: redis::Script,
}

impl RedisKeyValue {
    /// Connects to `url` (e.g. `redis://localhost:6379`) and checks the server answers.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(url).context("invalid Redis URL")?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(10)))
            .set_number_of_retries(3);
        let mut connection = ConnectionManager::new_with_config(client, config).await?;
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
            .context("PING failed")?;
        Ok(Self {
            connection,
            compare_and_swap: redis::Script::new(COMPARE_AND_SWAP_LUA),
        })
    }

    /// A handle for one command; the connection underneath is shared.
    fn connection(&self) -> ConnectionManager {
        self.connection.clone()
    }
}

#[async_trait]
impl KeyValueBackend for RedisKeyValue {
    async fn get(&self, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        Ok(redis::cmd("GET")
            .arg(key)
            .query_async(&mut self.connection())
            .await?)
    }

    async fn set(&self, key: &str, value: &[u8]) -> anyhow::Result<()> {
        Ok(redis::cmd("SET")
            .arg(key)
            .arg(value)
            .query_async(&mut self.connection())
            .await?)
    }

    async fn delete(&self, key: &str) -> anyhow::Result<()> {
        Ok(redis::cmd("DEL")
            .arg(key)
            .query_async(&mut self.connection())
            .await?)
    }

    async fn exists(&self, key: &str) -> anyhow::Result<bool> {
        Ok(redis::cmd("EXISTS")
            .arg(key)
            .query_async(&mut self.connection())
            .await?)
    }

    // SCAN, not KEYS: KEYS blocks the server for the whole walk of a large keyspace.
    async fn keys(&self) -> anyhow::Result<Vec<String>> {
        let mut connection = self.connection();
        let mut keys = std::collections::BTreeSet::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, page): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .query_async(&mut connection)
                .await?;
            // SCAN may return a key more than once while the keyspace is rehashed.
            keys.extend(page);
            if next == 0 {
                return Ok(keys.into_iter().collect());
            }
            cursor = next;
        }
    }

    async fn increment(&self, key: &str, delta: i64) -> anyhow::Result<i64> {
        Ok(redis::cmd("INCRBY")
            .arg(key)
            .arg(delta)
            .query_async(&mut self.connection())
            .await?)
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> anyhow::Result<bool> {
        let mut invocation = self.compare_and_swap.key(key);
        match expected {
            Some(expected) => invocation.arg("1").arg(expected),
            None => invocation.arg("0").arg(""),
        };
        let swapped: i64 = invocation
            .arg(new)
            .invoke_async(&mut self.connection())
            .await?;
        Ok(swapped == 1)
    }

    async fn get_many(&self, keys: &[String]) -> anyhow::Result<Vec<(String, Option<Vec<u8>>)>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let values: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
            .arg(keys)
            .query_async(&mut self.connection())
            .await?;
        Ok(keys.iter().cloned().zip(values).collect())
    }

    async fn set_many(&self, entries: &[(String, Vec<u8>)]) -> anyhow::Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut command = redis::cmd("MSET");
        for (key, value) in entries {
            command.arg(key).arg(value.as_slice());
        }
        Ok(command.query_async(&mut self.connection()).await?)
    }

    async fn delete_many(&self, keys: &[String]) -> anyhow::Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        Ok(redis::cmd("DEL")
            .arg(keys)
            .query_async(&mut self.connection())
            .await?)
    }
}
