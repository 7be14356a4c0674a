//! The transactional outbox: a change and the events that announce it are one write.
//!
//! A write that announces events (`put_announcing`, `insert_new_announcing`,
//! `update_announcing`, `update_if_announcing`) stores them in the value it writes, under
//! `$outbox`, so the change cannot land without them. Then:
//!
//! 1. before the write, a **journal entry** `outbox:<n>` (numbered by the atomic counter
//!    `outbox:count`) names the key and the time; it says "key K may hold events of write n
//!    that are not out yet";
//! 2. the write lands with its events tagged `n`;
//! 3. the writer publishes them and deletes entry `n`.
//!
//! A writer that dies, or cannot reach the bus, between 2 and 3 leaves the entry behind. The
//! **relay** ([`Store::relay_outbox`], run by each service on the NATS trigger's periodic
//! tick) walks the journal from its cursor `outbox:cursor` and, for every entry older than
//! [`SETTLE_MS`], publishes the events of write `n` found in the key's value and deletes the
//! entry; an entry whose write never landed (nothing tagged `n` in the value) is dropped
//! after [`ABANDON_MS`]. The relay only advances the cursor over settled entries.
//!
//! The next write of a key carries forward the events whose journal entries still exist, and
//! publishes them ahead of its own, so a key's events go out in the order of its writes.
//! Entries already deleted were published: their events are dropped from the value then.
//!
//! An event may be published more than once (writer and relay, or two writers); the bus
//! drops repeats by their message id (derived from the payload), and listeners apply events
//! idempotently anyway.

use serde::{Deserialize, Serialize};
use spin_sdk::wit::wasi::keyvalue::atomics;
use std::collections::BTreeSet;

use super::{store_error, Store};
use crate::clock::now_ms;
use crate::errors::ApiError;
use crate::events::{self, Outgoing};

/// The relay leaves entries younger than this to their writers (in milliseconds): a writer
/// normally publishes and deletes its entry within a few milliseconds.
pub const SETTLE_MS: i64 = 1_000;
/// An entry whose write is not in its key after this long never landed (the writer died
/// before writing, or its write lost): longer than a request may run.
pub const ABANDON_MS: i64 = 60_000;
/// How many journal entries one relay run looks at, at most.
pub const MAX_ENTRIES_PER_RELAY: i64 = 20_000;

const JOURNAL: &str = "outbox";

/// An event recorded with a write, tagged with the write's journal entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    #[serde(rename = "n")]
    pub(super) entry: i64,
    #[serde(flatten)]
    event: Outgoing,
}

/// `events` tagged as recorded by the write with journal entry `entry`.
pub(super) fn pending(entry: i64, events: Vec<Outgoing>) -> Vec<Pending> {
    events
        .into_iter()
        .map(|event| Pending { entry, event })
        .collect()
}

/// A journal entry: the (namespaced) key a write went to, and when it started.
#[derive(Debug, Serialize, Deserialize)]
struct JournalEntry {
    key: String,
    at: i64,
}

/// The part of a stored value the relay reads.
#[derive(Deserialize)]
struct OutboxOf {
    #[serde(rename = "$outbox", default)]
    outbox: Vec<Pending>,
}

/// The events pending in a stored value (none in a plain value).
pub(super) fn outbox_of(bytes: &[u8]) -> Vec<Pending> {
    serde_json::from_slice::<OutboxOf>(bytes)
        .map(|value| value.outbox)
        .unwrap_or_default()
}

/// What one relay run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Relayed {
    /// Journal entries looked at.
    pub scanned: i64,
    /// Entries whose events the relay published.
    pub published: usize,
    /// Entries dropped because their write never landed.
    pub abandoned: usize,
}

impl Store {
    /// Opens the journal entry of a write to `key` (namespaced) and returns its number.
    pub(super) fn open_journal_entry(&self, key: &str) -> Result<i64, ApiError> {
        let counter = self.namespaced(&format!("{JOURNAL}:count"));
        let n = atomics::increment(&self.bucket, &counter, 1)
            .map_err(|e| store_error(format!("incrementing {counter}"), e))?;
        let entry = JournalEntry {
            key: key.to_owned(),
            at: now_ms()?,
        };
        self.put(&entry_key(n), &entry)?;
        Ok(n)
    }

    /// Deletes the journal entry of a write that did not happen (best effort: the relay
    /// drops it later otherwise).
    pub(super) fn abandon_journal_entry(&self, entry: Option<i64>) {
        if let Some(n) = entry {
            if let Err(error) = self.delete(&entry_key(n)) {
                eprintln!("outbox: deleting journal entry {n}: {error}");
            }
        }
    }

    /// The events of `outbox` whose writes are not known to be published: their journal
    /// entries still exist.
    pub(super) fn still_pending(&self, outbox: Vec<Pending>) -> Result<Vec<Pending>, ApiError> {
        let entries: BTreeSet<i64> = outbox.iter().map(|pending| pending.entry).collect();
        let mut open = BTreeSet::new();
        for n in entries {
            let key = self.namespaced(&entry_key(n));
            let exists = self
                .bucket
                .exists(&key)
                .map_err(|e| store_error(format!("reading {key}"), e))?;
            if exists {
                open.insert(n);
            }
        }
        Ok(outbox
            .into_iter()
            .filter(|pending| open.contains(&pending.entry))
            .collect())
    }

    /// Publishes the events of a landed write, in order, then deletes their journal
    /// entries. A failure leaves the entries for the relay: the write stands either way.
    pub(super) fn announce(&self, outbox: &[Pending]) {
        if outbox.is_empty() {
            return;
        }
        if let Err(error) = self.publish_and_settle(outbox) {
            eprintln!("outbox: events left for the relay: {error}");
        }
    }

    fn publish_and_settle(&self, outbox: &[Pending]) -> Result<(), ApiError> {
        let events: Vec<Outgoing> = outbox.iter().map(|p| p.event.clone()).collect();
        events::publish_all(&self.label, &events)?;
        let entries: BTreeSet<i64> = outbox.iter().map(|pending| pending.entry).collect();
        for n in entries {
            self.delete(&entry_key(n))?;
        }
        Ok(())
    }

    /// Publishes the events of writes whose writers did not (see the module notes), from
    /// the journal's cursor on. Safe to run at any time, and by several hosts at once.
    pub fn relay_outbox(&self) -> Result<Relayed, ApiError> {
        let counter = self.namespaced(&format!("{JOURNAL}:count"));
        // Adding 0 reads the counter in the format the host keeps it in.
        let count = atomics::increment(&self.bucket, &counter, 0)
            .map_err(|e| store_error(format!("reading {counter}"), e))?;
        let cursor_key = format!("{JOURNAL}:cursor");
        let cursor: i64 = self.get(&cursor_key)?.unwrap_or(0);
        let now = now_ms()?;
        let mut relayed = Relayed::default();
        // Every entry up to here is settled; the cursor moves to it at the end.
        let mut settled_through = cursor;
        let mut all_settled = true;
        for n in cursor + 1..=count.min(cursor + MAX_ENTRIES_PER_RELAY) {
            relayed.scanned += 1;
            let settled = match self.get::<JournalEntry>(&entry_key(n))? {
                None => true,
                Some(entry) if now - entry.at < SETTLE_MS => false,
                Some(entry) => {
                    let outbox = match self.bucket.get(&entry.key) {
                        Ok(bytes) => bytes.map(|bytes| outbox_of(&bytes)).unwrap_or_default(),
                        Err(e) => return Err(store_error(format!("reading {}", entry.key), e)),
                    };
                    if outbox.iter().any(|pending| pending.entry == n) {
                        // Everything still pending in the key, in order: the earlier
                        // writes' events too (the next write would carry them anyway).
                        // Entry n may have been settled by its writer just now: then
                        // nothing is left to do.
                        let open = self.still_pending(outbox)?;
                        if open.iter().any(|pending| pending.entry == n) {
                            self.publish_and_settle(&open)?;
                            relayed.published += 1;
                        }
                        true
                    } else if now - entry.at > ABANDON_MS {
                        self.delete(&entry_key(n))?;
                        relayed.abandoned += 1;
                        true
                    } else {
                        false
                    }
                }
            };
            all_settled &= settled;
            if all_settled {
                settled_through = n;
            }
        }
        if settled_through > cursor {
            // Concurrent relays may both write; a cursor set back only means a rescan.
            self.put(&cursor_key, &settled_through)?;
        }
        Ok(relayed)
    }
}

fn entry_key(n: i64) -> String {
    format!("{JOURNAL}:{n}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pending_events_are_stored_with_their_entry_subject_and_payload() {
        let events = vec![Outgoing {
            subject: "ticketing.ticket.created".into(),
            payload: json!({"id": "a", "version": 0}),
        }];
        let stored = serde_json::to_value(pending(7, events)).unwrap();
        assert_eq!(
            stored,
            json!([{"n": 7, "subject": "ticketing.ticket.created",
                    "payload": {"id": "a", "version": 0}}])
        );
    }

    #[test]
    fn the_outbox_of_a_plain_or_foreign_value_is_empty() {
        assert!(outbox_of(br#"{"id":"a"}"#).is_empty());
        assert!(outbox_of(br#""text""#).is_empty());
        assert!(outbox_of(b"not json").is_empty());
        let value = br#"{"$value":{"id":"a"},"$outbox":[{"n":3,"subject":"s","payload":{}}]}"#;
        let outbox = outbox_of(value);
        assert_eq!(outbox.len(), 1);
        assert_eq!(outbox[0].entry, 3);
        // The value itself still reads as before.
        let decoded: serde_json::Value = super::super::decode("k", value).unwrap();
        assert_eq!(decoded, json!({"id": "a"}));
    }
}
