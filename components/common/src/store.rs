//! The key-value store every service keeps its state in: a `wasi:keyvalue` bucket (the
//! store label in spin.toml) holding JSON values.
//!
//! Every key is namespaced as `<label>:<key>`, because a host may back several labels with
//! one Redis server. Conditional writes use `wasi:keyvalue/atomics` compare-and-swap:
//! `Cas::new` + `current()` read the value (and, with Redis, start watching the key), and
//! `swap` writes only if nobody changed the key in between. A swap without `current()` would
//! be an unconditional write on some hosts, so every write here reads through the CAS handle.

use std::time::Duration;

use anyhow::{anyhow, Context};
use serde::{de::DeserializeOwned, Serialize};
use spin_sdk::wit::wasi::keyvalue::{
    atomics::{self, Cas, CasError},
    batch,
    store::{self, Bucket},
};

use crate::errors::ApiError;

/// How many times a conditional write is retried after losing a race before it gives up
/// with a 500. Conflicts are short-lived (another request's single write), so this is
/// only reached by a pathological hot key.
pub const MAX_CAS_ATTEMPTS: u32 = 50;

/// Keys per `get-many` call: bounds the size of one message between guest and host.
pub const GET_MANY_BATCH: usize = 256;

/// One service's key-value store.
pub struct Store {
    label: String,
    bucket: Bucket,
}

impl Store {
    /// Opens the store with this label (one of the component's `key_value_stores`).
    pub fn open(label: &str) -> Result<Self, ApiError> {
        let bucket =
            store::open(label).map_err(|e| anyhow!("opening the store {label:?}: {e:?}"))?;
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
            .map_err(|e| anyhow!("reading {key}: {e:?}"))?;
        bytes.map(|bytes| decode(&key, &bytes)).transpose()
    }

    /// Stores `value` under `key`, replacing whatever was there.
    pub fn put<T: Serialize>(&self, key: &str, value: &T) -> Result<(), ApiError> {
        let key = self.namespaced(key);
        self.bucket
            .set(&key, &encode(value)?)
            .map_err(|e| anyhow!("writing {key}: {e:?}"))?;
        Ok(())
    }

    /// Removes `key` (nothing happens if it is absent).
    pub fn delete(&self, key: &str) -> Result<(), ApiError> {
        let key = self.namespaced(key);
        self.bucket
            .delete(&key)
            .map_err(|e| anyhow!("deleting {key}: {e:?}"))?;
        Ok(())
    }

    /// Stores `value` under `key` only if the key is absent, atomically: of several
    /// concurrent inserts of one key exactly one returns `true`.
    pub fn insert_new<T: Serialize>(&self, key: &str, value: &T) -> Result<bool, ApiError> {
        let key = self.namespaced(key);
        let value = encode(value)?;
        let cas = self.begin_cas(&key)?;
        if current_value(&cas, &key)?.is_some() {
            return Ok(false);
        }
        match atomics::swap(cas, &value) {
            Ok(()) => Ok(true),
            // Someone else created the key since we looked.
            Err(CasError::CasFailed(_)) => Ok(false),
            Err(CasError::StoreError(e)) => Err(anyhow!("creating {key}: {e:?}").into()),
        }
    }

    /// The versioned update: reads the value under `key`, lets `change` compute the new one
    /// and writes it only if the key did not change meanwhile; on a conflict it starts over
    /// with the newer value, so `change` may run several times and must only compute.
    /// An error from `change` (e.g. "not the owner") is returned as is and nothing is
    /// written; an absent key is `ApiError::NotFound`. Returns the value written.
    pub fn update<T, F>(&self, key: &str, mut change: F) -> Result<T, ApiError>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut(T) -> Result<T, ApiError>,
    {
        let key = self.namespaced(key);
        self.swap_with_retries(&key, |current| {
            let current = current.ok_or(ApiError::NotFound)?;
            let updated = change(decode(&key, &current)?)?;
            Ok((Some(encode(&updated)?), updated))
        })
    }

    /// `update` for changes that may turn out to be no change: `change` looks at the current
    /// value and returns the new one to write, or `None` to leave the key as it is (nothing
    /// is written). Returns the value now stored and whether this call wrote it.
    pub fn update_if<T, F>(&self, key: &str, mut change: F) -> Result<Updated<T>, ApiError>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut(&T) -> Result<Option<T>, ApiError>,
    {
        let key = self.namespaced(key);
        self.swap_with_retries(&key, |current| {
            let current: T = decode(&key, &current.ok_or(ApiError::NotFound)?)?;
            Ok(match change(&current)? {
                Some(updated) => (Some(encode(&updated)?), Updated::written(updated)),
                None => (None, Updated::unchanged(current)),
            })
        })
    }

    /// Appends `id` to the index `index` (an append-only list of ids). An index is one key
    /// per entry, `<index>:<n>`, numbered by the counter `<index>:count` with the atomic
    /// increment: an append is one increment and one write whatever the index's length,
    /// and concurrent appends never conflict. (A single key holding the whole list had to
    /// be rewritten, and fought over, by every append: with 16 concurrent ticket creates,
    /// compare-and-swap retries pushed the p99 to 0.4 s.)
    pub fn append_to_index(&self, index: &str, id: &str) -> Result<(), ApiError> {
        let counter = self.namespaced(&index_counter_key(index));
        let n = atomics::increment(&self.bucket, &counter, 1)
            .map_err(|e| anyhow!("incrementing {counter}: {e:?}"))?;
        self.put(&index_entry_key(index, n), &id)
    }

    /// The ids in the index `index`, in the order they were appended (empty if the index
    /// does not exist yet). An entry whose write never happened (its append failed after
    /// the increment) is skipped, and an id appended twice is listed once.
    pub fn read_index(&self, index: &str) -> Result<Vec<String>, ApiError> {
        let counter = self.namespaced(&index_counter_key(index));
        // Adding 0 reads the counter in the format the host keeps it in.
        let count = atomics::increment(&self.bucket, &counter, 0)
            .map_err(|e| anyhow!("reading {counter}: {e:?}"))?;
        let keys: Vec<String> = (1..=count).map(|n| index_entry_key(index, n)).collect();
        let mut seen = std::collections::HashSet::new();
        Ok(self
            .get_many::<String>(&keys)?
            .into_iter()
            .flatten()
            .filter(|id| seen.insert(id.clone()))
            .collect())
    }

    /// The values under `keys`, in the same order (`None` where a key is absent), read in
    /// batches of [`GET_MANY_BATCH`] keys per call to the host.
    pub fn get_many<T: DeserializeOwned>(
        &self,
        keys: &[String],
    ) -> Result<Vec<Option<T>>, ApiError> {
        let mut values = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(GET_MANY_BATCH) {
            let namespaced: Vec<String> = chunk.iter().map(|key| self.namespaced(key)).collect();
            let found = batch::get_many(&self.bucket, &namespaced)
                .map_err(|e| anyhow!("reading {} keys: {e:?}", namespaced.len()))?;
            // Matched by key: a host may leave absent keys out, or answer in another order.
            let mut found: std::collections::HashMap<String, Option<Vec<u8>>> =
                found.into_iter().collect();
            for key in namespaced {
                values.push(match found.remove(&key).flatten() {
                    Some(bytes) => Some(decode(&key, &bytes)?),
                    None => None,
                });
            }
        }
        Ok(values)
    }

    /// The compare-and-swap loop under every conditional write: `next` turns the current
    /// bytes (if any) into the bytes to write (`None`: write nothing) plus the caller's result.
    fn swap_with_retries<R>(
        &self,
        key: &str,
        mut next: impl FnMut(Option<Vec<u8>>) -> Result<(Option<Vec<u8>>, R), ApiError>,
    ) -> Result<R, ApiError> {
        for attempt in 1..=MAX_CAS_ATTEMPTS {
            let cas = self.begin_cas(key)?;
            let (bytes, result) = next(current_value(&cas, key)?)?;
            let Some(bytes) = bytes else {
                return Ok(result);
            };
            match atomics::swap(cas, &bytes) {
                Ok(()) => return Ok(result),
                Err(CasError::CasFailed(_)) => back_off(attempt),
                Err(CasError::StoreError(e)) => return Err(anyhow!("writing {key}: {e:?}").into()),
            }
        }
        Err(anyhow!("gave up writing {key} after {MAX_CAS_ATTEMPTS} conflicting writes").into())
    }

    fn begin_cas(&self, key: &str) -> Result<Cas, ApiError> {
        Ok(Cas::new(&self.bucket, key).map_err(|e| anyhow!("watching {key}: {e:?}"))?)
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

fn current_value(cas: &Cas, key: &str) -> Result<Option<Vec<u8>>, ApiError> {
    Ok(cas.current().map_err(|e| anyhow!("reading {key}: {e:?}"))?)
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, ApiError> {
    Ok(serde_json::to_vec(value).context("serializing a stored value")?)
}

fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, ApiError> {
    Ok(
        serde_json::from_slice(bytes)
            .with_context(|| format!("the value of {key} is not valid"))?,
    )
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
