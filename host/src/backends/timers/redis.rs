//! The Redis timer store, shared by every host pointed at the same server and key prefix.
//!
//! Layout, all under one prefix (default `ticketing:timers:`):
//!
//! - `due`: sorted set, timer key → due time (ms); the timers waiting to be claimed;
//! - `leases`: sorted set, timer key → lease expiry (ms); the timers claimed and not yet
//!   completed. A lease that ran out makes its timer claimable again;
//! - `subject`, `payload`, `generation`, `due-at`: hashes, timer key → that field of the timer;
//! - `last-generation`: the counter every `schedule` takes its generation from.
//!
//! The timer data lives in one hash per field rather than one hash per timer so that every
//! script names all the keys it touches in `KEYS`, as Redis requires of scripts (and Redis
//! Cluster enforces: there, give the prefix a hash tag such as `{ticketing-timers}:` so the
//! keys share a slot).
//!
//! Every operation is one Lua script, which Redis runs without interleaving other commands;
//! that is what makes a claim exclusive between hosts. Times come from the callers' clocks
//! (the `now` they pass), so hosts sharing a server need roughly synchronised clocks: skew
//! shifts firing times and lease expiries by the same amount.

use std::sync::LazyLock;
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;

use super::{lease_until, DueTimer, TimerCounts, TimerStore};

pub const DEFAULT_KEY_PREFIX: &str = "ticketing:timers:";

/// The keys every script gets, in this order (`KEYS[1]` … `KEYS[7]` in the Lua code).
const KEY_SUFFIXES: [&str; 7] = [
    "due",
    "leases",
    "subject",
    "payload",
    "generation",
    "due-at",
    "last-generation",
];

/// ARGV: key, due ms, subject, payload. Returns the new generation.
static SCHEDULE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local key = ARGV[1]
local generation = redis.call('INCR', KEYS[7])
redis.call('ZADD', KEYS[1], ARGV[2], key)
-- A claim of the previous scheduling no longer holds this timer.
redis.call('ZREM', KEYS[2], key)
redis.call('HSET', KEYS[3], key, ARGV[3])
redis.call('HSET', KEYS[4], key, ARGV[4])
redis.call('HSET', KEYS[5], key, generation)
redis.call('HSET', KEYS[6], key, ARGV[2])
return generation
",
    )
});

/// ARGV: key. Returns 1 if the timer existed.
static CANCEL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local key = ARGV[1]
local existed = redis.call('HDEL', KEYS[5], key)
redis.call('ZREM', KEYS[1], key)
redis.call('ZREM', KEYS[2], key)
redis.call('HDEL', KEYS[3], key)
redis.call('HDEL', KEYS[4], key)
redis.call('HDEL', KEYS[6], key)
return existed
",
    )
});

/// ARGV: now ms, limit, lease expiry ms. Returns `{key, generation, due, subject, payload}`
/// per claimed timer: first those whose lease ran out (their claimer crashed or could not
/// publish), then waiting ones that are due, earliest first.
static CLAIM_DUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local now, limit, lease_until = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local claimed = {}
local function claim(key)
  local generation = redis.call('HGET', KEYS[5], key)
  if not generation then
    -- No data: nothing to fire (cannot happen while every write goes through these scripts).
    redis.call('ZREM', KEYS[2], key)
    return
  end
  redis.call('ZADD', KEYS[2], lease_until, key)
  claimed[#claimed + 1] = {
    key, generation, redis.call('HGET', KEYS[6], key),
    redis.call('HGET', KEYS[3], key), redis.call('HGET', KEYS[4], key),
  }
end
for _, key in ipairs(redis.call('ZRANGE', KEYS[2], '-inf', now, 'BYSCORE', 'LIMIT', 0, limit)) do
  claim(key)
end
if #claimed < limit then
  local due = redis.call('ZRANGE', KEYS[1], '-inf', now, 'BYSCORE', 'LIMIT', 0, limit - #claimed)
  for _, key in ipairs(due) do
    redis.call('ZREM', KEYS[1], key)
    claim(key)
  end
end
return claimed
",
    )
});

/// ARGV: key, generation. Returns 1 if the timer was removed, 0 if it was rescheduled or
/// cancelled since the claim.
static COMPLETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local key = ARGV[1]
if redis.call('HGET', KEYS[5], key) ~= ARGV[2] then return 0 end
redis.call('ZREM', KEYS[1], key)
redis.call('ZREM', KEYS[2], key)
redis.call('HDEL', KEYS[3], key)
redis.call('HDEL', KEYS[4], key)
redis.call('HDEL', KEYS[5], key)
redis.call('HDEL', KEYS[6], key)
return 1
",
    )
});

/// One claimed timer as the claim script returns it.
type ClaimedRow = (String, u64, u64, String, Vec<u8>);

/// Timers on a Redis server. Cheap to clone: clones share one multiplexed connection that
/// reconnects by itself. Only non-blocking commands are sent, so sharing it never stalls.
#[derive(Clone)]
pub struct RedisTimers {
    connection: ConnectionManager,
    keys: [String; 7],
    /// `host:port` of the server, for logs (the URL may hold a password).
    server: String,
}

impl RedisTimers {
    /// Connects to `url` (e.g. `redis://localhost:6379`), checks the server answers, and keeps
    /// timers under `key_prefix`.
    pub async fn connect(url: &str, key_prefix: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(url).context("invalid Redis URL")?;
        let server = client.get_connection_info().addr().to_string();
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(10)))
            .set_number_of_retries(3);
        let mut connection = ConnectionManager::new_with_config(client, config)
            .await
            .with_context(|| format!("connecting to Redis at {server}"))?;
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
            .with_context(|| format!("PING to Redis at {server} failed"))?;
        Ok(Self {
            connection,
            keys: KEY_SUFFIXES.map(|suffix| format!("{key_prefix}{suffix}")),
            server,
        })
    }

    /// `host:port` of the server.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// An invocation of `script` with every key of the layout.
    fn invocation<'a>(&self, script: &'a Script) -> redis::ScriptInvocation<'a> {
        let mut invocation = script.prepare_invoke();
        for key in &self.keys {
            invocation.key(key);
        }
        invocation
    }

    fn due_key(&self) -> &str {
        &self.keys[0]
    }

    fn leases_key(&self) -> &str {
        &self.keys[1]
    }
}

#[async_trait]
impl TimerStore for RedisTimers {
    async fn schedule(
        &self,
        key: &str,
        due_unix_ms: u64,
        subject: &str,
        payload: &[u8],
    ) -> anyhow::Result<()> {
        let _generation: u64 = self
            .invocation(&SCHEDULE)
            .arg(key)
            .arg(due_unix_ms)
            .arg(subject)
            .arg(payload)
            .invoke_async(&mut self.connection.clone())
            .await?;
        Ok(())
    }

    async fn cancel(&self, key: &str) -> anyhow::Result<bool> {
        let existed: i64 = self
            .invocation(&CANCEL)
            .arg(key)
            .invoke_async(&mut self.connection.clone())
            .await?;
        Ok(existed == 1)
    }

    async fn claim_due(
        &self,
        now_unix_ms: u64,
        limit: usize,
        lease: Duration,
    ) -> anyhow::Result<Vec<DueTimer>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let rows: Vec<ClaimedRow> = self
            .invocation(&CLAIM_DUE)
            .arg(now_unix_ms)
            .arg(limit)
            .arg(lease_until(now_unix_ms, lease))
            .invoke_async(&mut self.connection.clone())
            .await?;
        Ok(rows
            .into_iter()
            .map(
                |(key, generation, due_unix_ms, subject, payload)| DueTimer {
                    key,
                    due_unix_ms,
                    subject,
                    payload,
                    generation,
                },
            )
            .collect())
    }

    async fn complete(&self, timer: &DueTimer) -> anyhow::Result<bool> {
        let removed: i64 = self
            .invocation(&COMPLETE)
            .arg(&timer.key)
            .arg(timer.generation)
            .invoke_async(&mut self.connection.clone())
            .await?;
        Ok(removed == 1)
    }

    async fn counts(&self) -> anyhow::Result<TimerCounts> {
        let (waiting, in_flight): (usize, usize) = redis::pipe()
            .cmd("ZCARD")
            .arg(self.due_key())
            .cmd("ZCARD")
            .arg(self.leases_key())
            .query_async(&mut self.connection.clone())
            .await?;
        Ok(TimerCounts { waiting, in_flight })
    }

    async fn next_due_ms(&self) -> anyhow::Result<Option<u64>> {
        let first: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(self.due_key())
            .arg(0)
            .arg(0)
            .arg("WITHSCORES")
            .query_async(&mut self.connection.clone())
            .await?;
        // Scores are doubles; due times are whole milliseconds, far below 2^53.
        Ok(first.first().map(|(_key, due)| *due as u64))
    }
}
