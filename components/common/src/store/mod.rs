//! The key-value store every service keeps its state in: a `wasi:keyvalue` bucket (the
//! store label in spin.toml) holding JSON values.
//!
//! Every key is namespaced as `<label>:<key>`, because a host may back several labels with
//! one Redis server.
//!
//! The conditional writes here are correct on the key-value stores that really exist, not
//! only on the documented interface. Spin 3.6 (what SpinKube runs) has three faults:
//! - its Redis store ends every `swap` with a malformed `UNWATCH`, so a swap reports
//!   `cas-failed` whether or not its write was applied (the write itself is conditional);
//! - its SQLite store turns a swap whose `current()` was absent into an unconditional upsert,
//!   so two "create if absent" both succeed;
//! - its Redis `get-many` fails the whole request (the host panics parsing the reply), and
//!   its SQLite `get-many` leaves absent keys out.
//!
//! `increment` is atomic everywhere. Hence:
//! - **creating** a key exclusively (`insert_new`) claims it first with an increment of its
//!   claim counter `<key>#created`: the caller that counts 1 creates it, every other loses.
//!   The winner records when it claimed (`<key>#claimed`) and writes within 10 s or not at
//!   all; a claim still unwritten 30 s after it was made (its writer died) is taken over in
//!   a new round, `<key>#created:2`, and so on, again with exactly one winner;
//! - **updating** an existing key is a compare-and-swap from a present value (sound on every
//!   store), and the value written carries a random write token plus the tokens of the
//!   writes it was built on. After a swap that reports `cas-failed`, one read tells whether
//!   the write landed (our token is in the stored value, even if a later write has built on
//!   it) or lost (it is not), so a landed write is never applied twice;
//! - **batched reads** are single reads: Spin's Redis `get-many` fails the whole request.

use std::time::Duration;

use anyhow::{anyhow, Context};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use spin_sdk::wit::wasi::keyvalue::{
    atomics::{self, Cas, CasError},
    store::{self, Bucket},
};

use crate::clock::now_ms;
use crate::errors::ApiError;
use crate::events::Outgoing;

mod outbox;

pub use outbox::Relayed;
use outbox::{outbox_of, pending, Pending};

/// How long after a claim of `insert_new` a rival may take it over if the key is still not
/// written (its writer died between claiming and writing): longer than the writer's window
/// plus any clock difference between hosts.
pub const CLAIM_TAKEOVER_MS: i64 = 30_000;
/// A claim's winner writes within this long of claiming, or gives up (503) without writing.
pub const CLAIM_WRITE_WINDOW_MS: u64 = 10_000;

/// How many times a conditional write is retried after losing a race before it gives up
/// with a 500. Conflicts are short-lived (another request's single write), so this is
/// only reached by a pathological hot key.
pub const MAX_CAS_ATTEMPTS: u32 = 50;

/// One service's key-value store.
pub struct Store {
    label: String,
    bucket: Bucket,
}

impl Store {
    /// Opens the store with this label (one of the component's `key_value_stores`).
    pub fn open(label: &str) -> Result<Self, ApiError> {
        let bucket = store::open(label)
            .map_err(|e| store_error(format!("opening the store {label:?}"), e))?;
        Ok(Self {
            label: label.to_owned(),
            bucket,
        })
    }

    /// The value stored under `key`, if any.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, ApiError> {
        let key = self.namespaced(key);
        let bytes = self
            .bucket
            .get(&key)
            .map_err(|e| store_error(format!("reading {key}"), e))?;
        bytes.map(|bytes| decode(&key, &bytes)).transpose()
    }

    /// Stores `value` under `key`, replacing whatever was there.
    pub fn put<T: Serialize>(&self, key: &str, value: &T) -> Result<(), ApiError> {
        let key = self.namespaced(key);
        self.bucket
            .set(&key, &encode(value)?)
            .map_err(|e| store_error(format!("writing {key}"), e))?;
        Ok(())
    }

    /// Removes `key` (nothing happens if it is absent).
    pub fn delete(&self, key: &str) -> Result<(), ApiError> {
        let key = self.namespaced(key);
        self.bucket
            .delete(&key)
            .map_err(|e| store_error(format!("deleting {key}"), e))?;
        Ok(())
    }

    /// Stores `value` under `key` only if the key was never created, atomically: of several
    /// concurrent inserts of one key exactly one returns `true`, on every store (see the
    /// module's notes). The claim outlives the value: after `withdraw` the key can be
    /// created again; after `delete` it cannot.
    ///
    /// A claim whose writer died before writing (a host killed between the two) is taken
    /// over by an insert made [`CLAIM_TAKEOVER_MS`] after the claim: claims come in rounds,
    /// and the next round is opened only for a claim that old and still unwritten.
    pub fn insert_new<T: Serialize>(&self, key: &str, value: &T) -> Result<bool, ApiError> {
        self.insert_new_announcing(key, value, Vec::new())
    }

    /// `insert_new` whose write also records `events`, published once it has landed (see
    /// the `outbox` module). The losers of the race record nothing.
    pub fn insert_new_announcing<T: Serialize>(
        &self,
        key: &str,
        value: &T,
        events: Vec<Outgoing>,
    ) -> Result<bool, ApiError> {
        let key = self.namespaced(key);
        let mut round = 1;
        loop {
            let claim = claim_key(&key, round);
            let claims = atomics::increment(&self.bucket, &claim, 1)
                .map_err(|e| store_error(format!("claiming {key}"), e))?;
            if claims == 1 {
                return self.write_claimed(&key, round, to_json(value)?, events);
            }
            // Lost this round: its winner wrote the key, is writing it, or died first.
            if self.exists_namespaced(&key)? || !self.claim_abandoned(&key, round)? {
                return Ok(false);
            }
            round += 1;
        }
    }

    /// The write of the winner of claim round `round`: it records when it claimed, so
    /// that a rival can tell a dead writer from a slow one, and writes only within
    /// [`CLAIM_WRITE_WINDOW_MS`] of claiming, so that it never writes after a takeover.
    fn write_claimed(
        &self,
        key: &str,
        round: u32,
        value: serde_json::Value,
        events: Vec<Outgoing>,
    ) -> Result<bool, ApiError> {
        let claimed = std::time::Instant::now();
        // A key created before claim counters existed is taken, whatever the count says.
        if self.exists_namespaced(key)? {
            return Ok(false);
        }
        self.set_namespaced(&claimed_at_key(key, round), &now_ms()?)?;
        self.write_announcing(key, value, events, |bytes| {
            if claimed.elapsed() > Duration::from_millis(CLAIM_WRITE_WINDOW_MS) {
                return Err(ApiError::unavailable(anyhow!(
                    "creating {key}: gave up, {CLAIM_WRITE_WINDOW_MS} ms after claiming it"
                )));
            }
            self.bucket
                .set(key, bytes)
                .map_err(|e| store_error(format!("creating {key}"), e))
        })?;
        Ok(true)
    }

    /// Whether round `round`'s claim of `key` (absent) is old enough to take over. When its
    /// winner died before recording its time, the first rival to look records its own.
    fn claim_abandoned(&self, key: &str, round: u32) -> Result<bool, ApiError> {
        let at_key = claimed_at_key(key, round);
        let now = now_ms()?;
        match self.get_namespaced::<i64>(&at_key)? {
            Some(claimed) => Ok(now - claimed >= CLAIM_TAKEOVER_MS),
            None => {
                self.set_namespaced(&at_key, &now)?;
                Ok(false)
            }
        }
    }

    /// Stores `value` under a new `key` (as `put`) and records `events` with it, published
    /// once the write has landed (see the `outbox` module). Meant for keys no one else
    /// writes yet: a value already there is replaced with its pending events.
    pub fn put_announcing<T: Serialize>(
        &self,
        key: &str,
        value: &T,
        events: Vec<Outgoing>,
    ) -> Result<(), ApiError> {
        let key = self.namespaced(key);
        self.write_announcing(&key, to_json(value)?, events, |bytes| {
            self.bucket
                .set(&key, bytes)
                .map_err(|e| store_error(format!("writing {key}"), e))
        })
    }

    /// One unconditional write of `value` with `events` in its outbox: the journal entry
    /// first, then the write, then the events are published.
    fn write_announcing(
        &self,
        key: &str,
        value: serde_json::Value,
        events: Vec<Outgoing>,
        write: impl FnOnce(&[u8]) -> Result<(), ApiError>,
    ) -> Result<(), ApiError> {
        if events.is_empty() {
            return write(&encode(&value)?);
        }
        let entry = self.open_journal_entry(key)?;
        let outbox = pending(entry, events);
        let written = Versioned {
            value,
            writes: Vec::new(),
            outbox: outbox.clone(),
        };
        let bytes = match encode(&written) {
            Ok(bytes) => bytes,
            Err(error) => {
                self.abandon_journal_entry(Some(entry));
                return Err(error);
            }
        };
        // A failed write may still have landed (a reply lost on the way back): its entry
        // stays for the relay, which looks.
        write(&bytes)?;
        self.announce(&outbox);
        Ok(())
    }

    /// Removes a key made by `insert_new` together with its claims, so that it can be
    /// created again. An insert racing with the withdrawal may lose once more.
    pub fn withdraw(&self, key: &str) -> Result<(), ApiError> {
        self.delete(key)?;
        let key = self.namespaced(key);
        // Rounds beyond the first exist only after a takeover; the first missing ends them.
        for round in 1.. {
            let claim = claim_key(&key, round);
            if round > 1 && !self.exists_namespaced(&claim)? {
                break;
            }
            for name in [claim, claimed_at_key(&key, round)] {
                self.bucket
                    .delete(&name)
                    .map_err(|e| store_error(format!("deleting {name}"), e))?;
            }
        }
        Ok(())
    }

    /// The versioned update: reads the value under `key`, lets `change` compute the new one
    /// and writes it only if the key did not change meanwhile; on a conflict it starts over
    /// with the newer value, so `change` may run several times and must only compute.
    /// An error from `change` (e.g. "not the owner") is returned as is and nothing is
    /// written; an absent key is `ApiError::NotFound`. Returns the value written.
    pub fn update<T, F>(&self, key: &str, change: F) -> Result<T, ApiError>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut(T) -> Result<T, ApiError>,
    {
        self.update_announcing(key, change, |_| Ok(Vec::new()))
    }

    /// `update` whose write also records the `events` of the value written, published once
    /// it has landed (see the `outbox` module).
    pub fn update_announcing<T, F>(
        &self,
        key: &str,
        mut change: F,
        events: impl Fn(&T) -> Result<Vec<Outgoing>, ApiError>,
    ) -> Result<T, ApiError>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut(T) -> Result<T, ApiError>,
    {
        let key = self.namespaced(key);
        self.swap_with_retries(&key, |current| {
            let updated = change(decode(&key, current)?)?;
            let write = Write {
                value: to_json(&updated)?,
                events: events(&updated)?,
            };
            Ok((Some(write), updated))
        })
    }

    /// `update` for changes that may turn out to be no change: `change` looks at the current
    /// value and returns the new one to write, or `None` to leave the key as it is (nothing
    /// is written). Returns the value now stored and whether this call wrote it.
    pub fn update_if<T, F>(&self, key: &str, change: F) -> Result<Updated<T>, ApiError>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut(&T) -> Result<Option<T>, ApiError>,
    {
        self.update_if_announcing(key, change, |_| Ok(Vec::new()))
    }

    /// `update_if` whose write (if any) also records the `events` of the value written,
    /// published once it has landed (see the `outbox` module).
    pub fn update_if_announcing<T, F>(
        &self,
        key: &str,
        mut change: F,
        events: impl Fn(&T) -> Result<Vec<Outgoing>, ApiError>,
    ) -> Result<Updated<T>, ApiError>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut(&T) -> Result<Option<T>, ApiError>,
    {
        let key = self.namespaced(key);
        self.swap_with_retries(&key, |current| {
            let current: T = decode(&key, current)?;
            Ok(match change(&current)? {
                Some(updated) => {
                    let write = Write {
                        value: to_json(&updated)?,
                        events: events(&updated)?,
                    };
                    (Some(write), Updated::written(updated))
                }
                None => (None, Updated::unchanged(current)),
            })
        })
    }

    /// Appends `id` to the index `index` (an append-only list of ids) and returns its
    /// position (1, 2, ...). An index is one key per entry, `<index>:<n>`, numbered by the
    /// counter `<index>:count` with the atomic increment: an append is one increment and one
    /// write whatever the index's length, and concurrent appends never conflict. (A single
    /// key holding the whole list had to be rewritten, and fought over, by every append:
    /// with 16 concurrent ticket creates, compare-and-swap retries pushed the p99 to 0.4 s.)
    pub fn append_to_index(&self, index: &str, id: &str) -> Result<i64, ApiError> {
        let counter = self.namespaced(&index_counter_key(index));
        let n = atomics::increment(&self.bucket, &counter, 1)
            .map_err(|e| store_error(format!("incrementing {counter}"), e))?;
        self.put(&index_entry_key(index, n), &id)?;
        Ok(n)
    }

    /// How many positions the index `index` has handed out (0 if it does not exist yet).
    /// An entry may be missing at a position: its append failed after the increment, or is
    /// still under way.
    pub fn index_len(&self, index: &str) -> Result<i64, ApiError> {
        let counter = self.namespaced(&index_counter_key(index));
        // Adding 0 reads the counter in the format the host keeps it in.
        atomics::increment(&self.bucket, &counter, 0)
            .map_err(|e| store_error(format!("reading {counter}"), e))
    }

    /// The id at position `n` of the index `index`, if its append wrote it.
    pub fn index_entry(&self, index: &str, n: i64) -> Result<Option<String>, ApiError> {
        self.get(&index_entry_key(index, n))
    }

    /// The compare-and-swap loop under every conditional write: `next` turns the current
    /// bytes into the value to write and its events (`None`: write nothing) plus the
    /// caller's result. An absent key is `ApiError::NotFound`: a swap from "absent" is not
    /// sound on every store, so keys are created by `insert_new` or `put`, never here.
    ///
    /// Events still pending in the current value are carried into the new one, ahead of
    /// this write's own, and published with them (see the `outbox` module).
    fn swap_with_retries<R>(
        &self,
        key: &str,
        mut next: impl FnMut(&[u8]) -> Result<(Option<Write>, R), ApiError>,
    ) -> Result<R, ApiError> {
        // This write's journal entry, opened once for all its attempts, and whether a swap
        // carrying it was tried (then only the relay may tell whether it landed).
        let mut entry = None;
        let mut swapped = false;
        let outcome = (|| {
            for attempt in 1..=MAX_CAS_ATTEMPTS {
                let cas = self.begin_cas(key)?;
                let current = current_value(&cas, key)?.ok_or(ApiError::NotFound)?;
                let (write, result) = next(&current)?;
                let Some(write) = write else {
                    return Ok((result, Vec::new()));
                };
                let mut outbox = self.still_pending(outbox_of(&current))?;
                if !write.events.is_empty() {
                    let n = match entry {
                        Some(n) => n,
                        None => *entry.insert(self.open_journal_entry(key)?),
                    };
                    outbox.extend(pending(n, write.events));
                }
                let token = write_token()?;
                let written = Versioned {
                    value: write.value,
                    writes: written_on(&current, token),
                    outbox,
                };
                let bytes = encode(&written)?;
                swapped |= entry.is_some();
                let landed = match atomics::swap(cas, &bytes) {
                    Ok(()) => true,
                    // A failed store call may still have written: look before reporting it.
                    Err(CasError::CasFailed(_)) | Err(CasError::StoreError(_))
                        if self.write_landed(key, token)? =>
                    {
                        true
                    }
                    Err(CasError::CasFailed(_)) => false,
                    Err(CasError::StoreError(e)) => {
                        return Err(store_error(format!("writing {key}"), e))
                    }
                };
                if landed {
                    return Ok((result, written.outbox));
                }
                back_off(attempt);
            }
            Err(anyhow!("gave up writing {key} after {MAX_CAS_ATTEMPTS} conflicting writes").into())
        })();
        match outcome {
            Ok((result, outbox)) => {
                // An entry opened by an attempt that lost, when the last one wrote no events
                // (or nothing at all), names no write.
                if entry.is_some_and(|n| !outbox.iter().any(|pending| pending.entry == n)) {
                    self.abandon_journal_entry(entry);
                }
                self.announce(&outbox);
                Ok(result)
            }
            Err(error) => {
                if !swapped {
                    self.abandon_journal_entry(entry);
                }
                Err(error)
            }
        }
    }

    /// Whether the write with `token` is in the value under `key`: true after a swap that
    /// reported a conflict but was applied all the same (Spin 3.6's Redis store).
    fn write_landed(&self, key: &str, token: u64) -> Result<bool, ApiError> {
        let stored = self
            .bucket
            .get(key)
            .map_err(|e| store_error(format!("reading {key}"), e))?;
        Ok(stored.is_some_and(|bytes| write_tokens(&bytes).contains(&token)))
    }

    fn exists_namespaced(&self, key: &str) -> Result<bool, ApiError> {
        self.bucket
            .exists(key)
            .map_err(|e| store_error(format!("reading {key}"), e))
    }

    fn get_namespaced<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, ApiError> {
        let bytes = self
            .bucket
            .get(key)
            .map_err(|e| store_error(format!("reading {key}"), e))?;
        bytes.map(|bytes| decode(key, &bytes)).transpose()
    }

    fn set_namespaced<T: Serialize>(&self, key: &str, value: &T) -> Result<(), ApiError> {
        self.bucket
            .set(key, &encode(value)?)
            .map_err(|e| store_error(format!("writing {key}"), e))
    }

    fn begin_cas(&self, key: &str) -> Result<Cas, ApiError> {
        Cas::new(&self.bucket, key).map_err(|e| store_error(format!("watching {key}"), e))
    }

    fn namespaced(&self, key: &str) -> String {
        namespaced_key(&self.label, key)
    }
}

/// What `Store::update_if` left under a key.
#[derive(Debug, Clone, PartialEq)]
pub struct Updated<T> {
    /// The value now stored.
    pub value: T,
    /// Whether this call wrote it (false: the value was already as wanted).
    pub written: bool,
}

impl<T> Updated<T> {
    fn written(value: T) -> Self {
        Self {
            value,
            written: true,
        }
    }

    fn unchanged(value: T) -> Self {
        Self {
            value,
            written: false,
        }
    }
}

fn index_counter_key(index: &str) -> String {
    format!("{index}:count")
}

fn index_entry_key(index: &str, n: i64) -> String {
    format!("{index}:{n}")
}

/// The key as stored: `<label>:<key>`.
pub fn namespaced_key(label: &str, key: &str) -> String {
    format!("{label}:{key}")
}

/// The claim counter of round `round` of creating `key` (the first round's name predates
/// rounds).
fn claim_key(key: &str, round: u32) -> String {
    match round {
        1 => format!("{key}#created"),
        _ => format!("{key}#created:{round}"),
    }
}

/// When round `round`'s winner claimed `key` (unix ms).
fn claimed_at_key(key: &str, round: u32) -> String {
    match round {
        1 => format!("{key}#claimed"),
        _ => format!("{key}#claimed:{round}"),
    }
}

/// A failed store call: a 503 when the store did not answer (`other`), a 500 when the
/// component is configured wrong (no such store, access denied).
fn store_error(context: String, error: store::Error) -> ApiError {
    match error {
        store::Error::Other(_) => ApiError::unavailable(anyhow!("{context}: {error:?}")),
        _ => anyhow!("{context}: {error:?}").into(),
    }
}

fn current_value(cas: &Cas, key: &str) -> Result<Option<Vec<u8>>, ApiError> {
    cas.current()
        .map_err(|e| store_error(format!("reading {key}"), e))
}

/// How many write tokens a value keeps: the writes it was built on, newest first. A writer
/// looks for its token right after its swap, so only the few writes that can land in
/// between need to be remembered.
const KEPT_WRITE_TOKENS: usize = 8;

/// A value written by a conditional write, with the tokens of the writes that made it, or
/// by a write that recorded events, with the events not yet known to be published.
#[derive(Serialize, Deserialize)]
struct Versioned<T> {
    #[serde(rename = "$value")]
    value: T,
    #[serde(rename = "$writes", default, skip_serializing_if = "Vec::is_empty")]
    writes: Vec<u64>,
    #[serde(rename = "$outbox", default, skip_serializing_if = "Vec::is_empty")]
    outbox: Vec<Pending>,
}

/// A conditional write: the new value and the events it announces.
struct Write {
    value: serde_json::Value,
    events: Vec<Outgoing>,
}

/// As a value is stored: written by a conditional write, or plain (`put`, `insert_new`, and
/// values stored before write tokens existed).
#[derive(Deserialize)]
#[serde(untagged)]
enum Stored<T> {
    Versioned(Versioned<T>),
    Plain(T),
}

/// The write tokens of the value `current` with `token` in front.
fn written_on(current: &[u8], token: u64) -> Vec<u64> {
    let mut tokens = vec![token];
    tokens.extend(
        write_tokens(current)
            .into_iter()
            .take(KEPT_WRITE_TOKENS - 1),
    );
    tokens
}

/// The write tokens a stored value carries (none for a plain value).
fn write_tokens(bytes: &[u8]) -> Vec<u64> {
    match serde_json::from_slice::<Stored<serde::de::IgnoredAny>>(bytes) {
        Ok(Stored::Versioned(versioned)) => versioned.writes,
        _ => Vec::new(),
    }
}

/// A random write token. Without randomness a write could not be told from another after a
/// misreported swap, so that is an error rather than a fixed token.
fn write_token() -> Result<u64, ApiError> {
    let mut bytes = [0u8; 8];
    getrandom::getrandom(&mut bytes).map_err(|e| anyhow!("no random bytes: {e}"))?;
    Ok(u64::from_le_bytes(bytes))
}

fn to_json<T: Serialize>(value: &T) -> Result<serde_json::Value, ApiError> {
    Ok(serde_json::to_value(value).context("serializing a stored value")?)
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, ApiError> {
    Ok(serde_json::to_vec(value).context("serializing a stored value")?)
}

fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, ApiError> {
    let stored: Stored<T> = serde_json::from_slice(bytes)
        .with_context(|| format!("the value of {key} is not valid"))?;
    Ok(match stored {
        Stored::Versioned(versioned) => versioned.value,
        Stored::Plain(value) => value,
    })
}

/// Waits a little before retrying a lost compare-and-swap, a random time in a window that
/// doubles with each attempt, so that racing writers do not collide again in lockstep.
fn back_off(attempt: u32) {
    let mut random = [0u8; 1];
    // Without randomness the wait is simply the full window: still correct, only slower.
    let _ = getrandom::getrandom(&mut random);
    std::thread::sleep(backoff_delay(attempt, random[0]));
}

/// The wait before retry number `attempt`: up to 1, 2, 4, ... 64 ms, scaled by `random`/255.
pub fn backoff_delay(attempt: u32, random: u8) -> Duration {
    let window_ms = 1u64 << attempt.clamp(1, 7).saturating_sub(1);
    Duration::from_micros(window_ms * 1000 * u64::from(random) / 255)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_prefixed_with_the_store_label() {
        assert_eq!(
            namespaced_key("tickets", "ticket:507f1f77bcf86cd799439011"),
            "tickets:ticket:507f1f77bcf86cd799439011"
        );
        assert_eq!(namespaced_key("auth", "email:a@b.co"), "auth:email:a@b.co");
    }

    #[test]
    fn values_read_the_same_with_or_without_write_tokens() {
        let versioned = encode(&Versioned {
            value: serde_json::json!({"id": "a", "version": 2}),
            writes: vec![7, 5],
            outbox: Vec::new(),
        })
        .unwrap();
        let plain = br#"{"id":"a","version":2}"#;
        for bytes in [&versioned[..], &plain[..]] {
            let value: serde_json::Value = decode("k", bytes).unwrap();
            assert_eq!(value, serde_json::json!({"id": "a", "version": 2}));
        }
        // A reservation holder: `null` or an id, plain or versioned.
        assert_eq!(decode::<Option<String>>("k", b"null").unwrap(), None);
        let held = encode(&Versioned {
            value: Some("o1"),
            writes: vec![1],
            outbox: Vec::new(),
        })
        .unwrap();
        assert_eq!(
            decode::<Option<String>>("k", &held).unwrap().as_deref(),
            Some("o1")
        );
        assert!(decode::<Option<String>>("k", b"{").is_err());
    }

    #[test]
    fn a_write_keeps_the_tokens_it_was_built_on_newest_first() {
        assert_eq!(write_tokens(br#""plain""#), Vec::<u64>::new());
        assert_eq!(written_on(br#""plain""#, 9), vec![9]);
        let mut bytes = br#""plain""#.to_vec();
        for token in 1..=20u64 {
            let tokens = written_on(&bytes, token);
            bytes = encode(&Versioned {
                value: "v",
                writes: tokens,
                outbox: Vec::new(),
            })
            .unwrap();
        }
        assert_eq!(write_tokens(&bytes), (13..=20).rev().collect::<Vec<u64>>());
    }

    #[test]
    fn backoff_windows_double_up_to_64_ms() {
        assert_eq!(backoff_delay(1, 255), Duration::from_millis(1));
        assert_eq!(backoff_delay(2, 255), Duration::from_millis(2));
        assert_eq!(backoff_delay(4, 255), Duration::from_millis(8));
        assert_eq!(backoff_delay(7, 255), Duration::from_millis(64));
        assert_eq!(
            backoff_delay(MAX_CAS_ATTEMPTS, 255),
            Duration::from_millis(64)
        );
        assert_eq!(backoff_delay(5, 0), Duration::ZERO);
        assert!(backoff_delay(7, 128) < Duration::from_millis(33));
    }
}
