//! The embedded timer store: timers in the host's redb state file, claims in memory.
//!
//! Tables (prefix `timers/`, beside the key-value stores' `kv/`):
//!
//! - `timers/by-key`: key → (generation, due ms, subject, payload);
//! - `timers/by-due`: (due ms, key) → (), the index claims walk in due order;
//! - `timers/counters`: `last-generation` → the last generation handed out.
//!
//! Scheduling, cancelling and completing go through the state file's group commit
//! ([`WriteQueue`]) and return once committed (on disk before any answer leaves the process,
//! see `durable_barrier`). Claims are not written to the file at all: the embedded store serves one host
//! process, so a lease only has to hold against other claimers in this process. Leases live
//! in one table per open database, shared by every [`EmbeddedTimers`] on it; when the host
//! restarts the table is gone, and every timer that was claimed but not completed is due
//! again at once.
//!
//! redb is a blocking API: writes run on the queue's writer thread, reads on tokio's blocking
//! pool.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use redb::{
    Database, ReadableDatabase as _, ReadableTable as _, ReadableTableMetadata as _,
    TableDefinition,
};

use super::{lease_until, DueTimer, TimerCounts, TimerStore};
use crate::backends::group_commit::WriteQueue;
use crate::backends::key_value::EmbeddedState;

/// key → (generation, due ms, subject, payload).
const TIMERS: TableDefinition<&str, (u64, u64, &str, &[u8])> =
    TableDefinition::new("timers/by-key");
/// (due ms, key) → (): timers in due order.
const BY_DUE: TableDefinition<(u64, &str), ()> = TableDefinition::new("timers/by-due");
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("timers/counters");
const LAST_GENERATION: &str = "last-generation";

/// A claim held in this process: which scheduling of the timer, and until when.
#[derive(Debug, Clone, Copy)]
struct Lease {
    generation: u64,
    until_unix_ms: u64,
}

/// Timer key → its current claim. Entries whose generation no longer matches the stored
/// timer are stale (the timer was rescheduled or cancelled) and hold nothing.
type Leases = Mutex<HashMap<String, Lease>>;

/// Timers in the embedded state file. Cheap to clone.
#[derive(Clone)]
pub struct EmbeddedTimers {
    database: Arc<Database>,
    writer: WriteQueue,
    leases: Arc<Leases>,
}

impl EmbeddedTimers {
    /// The timers of `state`'s file, creating their tables if this is their first use.
    pub fn open(state: &EmbeddedState) -> anyhow::Result<Self> {
        let database = state.database();
        // Creating the tables up front lets read transactions assume they exist.
        let txn = database.begin_write()?;
        txn.open_table(TIMERS)?;
        txn.open_table(BY_DUE)?;
        txn.open_table(COUNTERS)?;
        txn.commit()?;
        let leases = leases_of(&database);
        Ok(Self {
            database,
            writer: state.writer(),
            leases,
        })
    }

    /// Runs `op` on the blocking pool with the database and the lease table.
    async fn blocking<R, F>(&self, op: F) -> anyhow::Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&Database, &Leases) -> anyhow::Result<R> + Send + 'static,
    {
        let (database, leases) = (self.database.clone(), self.leases.clone());
        tokio::task::spawn_blocking(move || op(&database, &leases))
            .await
            .context("embedded timer operation panicked")?
    }
}

/// The lease table of `database`, shared by every `EmbeddedTimers` on it: two of them on one
/// file must not both claim a timer. It lives as long as one of them does.
fn leases_of(database: &Arc<Database>) -> Arc<Leases> {
    type Registry = Vec<(Weak<Database>, Weak<Leases>)>;
    static OPEN: Mutex<Registry> = Mutex::new(Vec::new());

    let mut open = OPEN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    // A live `Weak<Leases>` means a live `EmbeddedTimers` holding its database, so a matching
    // pointer is that same database, never a new one at a reused address.
    open.retain(|(database, leases)| database.strong_count() > 0 && leases.strong_count() > 0);
    let existing = open
        .iter()
        .find(|(open_database, _)| open_database.as_ptr() == Arc::as_ptr(database))
        .and_then(|(_, leases)| leases.upgrade());
    existing.unwrap_or_else(|| {
        let leases = Arc::new(Leases::default());
        open.push((Arc::downgrade(database), Arc::downgrade(&leases)));
        leases
    })
}

fn lock(leases: &Leases) -> std::sync::MutexGuard<'_, HashMap<String, Lease>> {
    // The map stays consistent even if a holder panicked: each update is a single insert/remove.
    leases
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Forgets `key`'s lease if it belongs to `generation` or an earlier scheduling.
fn forget_lease(leases: &Leases, key: &str, up_to_generation: u64) {
    let mut leases = lock(leases);
    if leases
        .get(key)
        .is_some_and(|lease| lease.generation <= up_to_generation)
    {
        leases.remove(key);
    }
}

/// Whether a claim of this scheduling is in flight (lease not necessarily still valid).
fn is_claimed(leases: &HashMap<String, Lease>, key: &str, generation: u64) -> bool {
    leases
        .get(key)
        .is_some_and(|lease| lease.generation == generation)
}

/// Removes `key` (whatever its generation) from both tables; returns its generation if it
/// existed.
fn remove_timer(txn: &redb::WriteTransaction, key: &str) -> anyhow::Result<Option<u64>> {
    let mut timers = txn.open_table(TIMERS)?;
    let Some((generation, due)) = timers.remove(key)?.map(|entry| {
        let (generation, due, _subject, _payload) = entry.value();
        (generation, due)
    }) else {
        return Ok(None);
    };
    txn.open_table(BY_DUE)?.remove((due, key))?;
    Ok(Some(generation))
}

#[async_trait]
impl TimerStore for EmbeddedTimers {
    async fn schedule(
        &self,
        key: &str,
        due_unix_ms: u64,
        subject: &str,
        payload: &[u8],
    ) -> anyhow::Result<()> {
        let (key, subject, payload) = (key.to_owned(), subject.to_owned(), payload.to_vec());
        let lease_key = key.clone();
        let replaced = self
            .writer
            .write(move |txn| {
                let replaced = remove_timer(txn, &key)?;
                let generation = {
                    let mut counters = txn.open_table(COUNTERS)?;
                    let last = counters
                        .get(LAST_GENERATION)?
                        .map_or(0, |last| last.value());
                    counters.insert(LAST_GENERATION, last + 1)?;
                    last + 1
                };
                txn.open_table(TIMERS)?.insert(
                    key.as_str(),
                    (
                        generation,
                        due_unix_ms,
                        subject.as_str(),
                        payload.as_slice(),
                    ),
                )?;
                txn.open_table(BY_DUE)?
                    .insert((due_unix_ms, key.as_str()), ())?;
                Ok((replaced, true))
            })
            .await?;
        if let Some(replaced) = replaced {
            forget_lease(&self.leases, &lease_key, replaced);
        }
        Ok(())
    }

    async fn cancel(&self, key: &str) -> anyhow::Result<bool> {
        let owned_key = key.to_owned();
        let cancelled = self
            .writer
            .write(move |txn| {
                let cancelled = remove_timer(txn, &owned_key)?;
                Ok((cancelled, cancelled.is_some()))
            })
            .await?;
        let Some(cancelled) = cancelled else {
            return Ok(false);
        };
        forget_lease(&self.leases, key, cancelled);
        Ok(true)
    }

    async fn claim_due(
        &self,
        now_unix_ms: u64,
        limit: usize,
        lease: Duration,
    ) -> anyhow::Result<Vec<DueTimer>> {
        let until_unix_ms = lease_until(now_unix_ms, lease);
        self.blocking(move |database, leases| {
            // Holding the lease table while reading makes check-and-lease one step for every
            // claimer of this database.
            let mut leases = lock(leases);
            let txn = database.begin_read()?;
            let timers = txn.open_table(TIMERS)?;
            let mut claimed = Vec::new();
            for entry in txn.open_table(BY_DUE)?.iter()? {
                if claimed.len() >= limit {
                    break;
                }
                let (index, _unit) = entry?;
                let (due_unix_ms, key) = index.value();
                if due_unix_ms > now_unix_ms {
                    break;
                }
                let Some(timer) = timers.get(key)? else {
                    continue;
                };
                let (generation, _due, subject, payload) = timer.value();
                let held = leases.get(key).is_some_and(|lease| {
                    lease.generation == generation && lease.until_unix_ms > now_unix_ms
                });
                if held {
                    continue;
                }
                leases.insert(
                    key.to_owned(),
                    Lease {
                        generation,
                        until_unix_ms,
                    },
                );
                claimed.push(DueTimer {
                    key: key.to_owned(),
                    due_unix_ms,
                    subject: subject.to_owned(),
                    payload: payload.to_vec(),
                    generation,
                });
            }
            Ok(claimed)
        })
        .await
    }

    async fn complete(&self, timer: &DueTimer) -> anyhow::Result<bool> {
        let (key, generation) = (timer.key.clone(), timer.generation);
        let removed = self
            .writer
            .write(move |txn| {
                let current = txn
                    .open_table(TIMERS)?
                    .get(key.as_str())?
                    .map(|entry| entry.value().0);
                let removed = current == Some(generation);
                if removed {
                    remove_timer(txn, &key)?;
                }
                Ok((removed, removed))
            })
            .await?;
        // After the commit: until then the lease keeps other claimers off the timer.
        forget_lease(&self.leases, &timer.key, generation);
        Ok(removed)
    }

    async fn counts(&self) -> anyhow::Result<TimerCounts> {
        self.blocking(|database, leases| {
            let leases = lock(leases);
            let txn = database.begin_read()?;
            let timers = txn.open_table(TIMERS)?;
            let total = usize::try_from(timers.len()?)?;
            let mut in_flight = 0;
            for (key, lease) in leases.iter() {
                let current = timers.get(key.as_str())?.map(|entry| entry.value().0);
                if current == Some(lease.generation) {
                    in_flight += 1;
                }
            }
            Ok(TimerCounts {
                waiting: total - in_flight,
                in_flight,
            })
        })
        .await
    }

    async fn next_due_ms(&self) -> anyhow::Result<Option<u64>> {
        self.blocking(|database, leases| {
            let leases = lock(leases);
            let txn = database.begin_read()?;
            let timers = txn.open_table(TIMERS)?;
            for entry in txn.open_table(BY_DUE)?.iter()? {
                let (index, _unit) = entry?;
                let (due_unix_ms, key) = index.value();
                // An index entry without a timer is never claimed, so it is not "next" either.
                let Some(timer) = timers.get(key)? else {
                    continue;
                };
                if !is_claimed(&leases, key, timer.value().0) {
                    return Ok(Some(due_unix_ms));
                }
            }
            Ok(None)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Claims made through one handle hold against a second handle on the same file, and a
    /// fresh open of the file (a restart) forgets them.
    #[tokio::test]
    async fn leases_are_shared_per_open_file_and_die_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        {
            let state = EmbeddedState::open(&path).unwrap();
            let first = EmbeddedTimers::open(&state).unwrap();
            let second = EmbeddedTimers::open(&state).unwrap();
            assert!(Arc::ptr_eq(&first.leases, &second.leases));
            first.schedule("k", 10, "s", b"p").await.unwrap();
            let lease = Duration::from_secs(60);
            assert_eq!(first.claim_due(10, 10, lease).await.unwrap().len(), 1);
            assert!(second.claim_due(10, 10, lease).await.unwrap().is_empty());
        }
        let state = EmbeddedState::open(&path).unwrap();
        let reopened = EmbeddedTimers::open(&state).unwrap();
        assert_eq!(
            reopened
                .claim_due(10, 10, Duration::from_secs(60))
                .await
                .unwrap()
                .len(),
            1
        );
    }
}
