//! The catalogue: the tickets on sale, oldest first, one page at a time
//! (`GET /api/tickets`), at a cost that does not grow with the number of tickets.
//!
//! Every ticket has a **position**, its number in creation order (the `ticket-ids` index).
//! The service keeps its own view of the catalogue in **blocks** of [`BLOCK`] consecutive
//! positions, so that a page is a few reads instead of one per ticket:
//!
//! - `listing:<b>` → block `b`, positions `b·BLOCK + 1 ..= (b+1)·BLOCK`: for each position it
//!   has, the ticket as of some version (a reserved one with its `orderId`), or `null` for a
//!   hole (a position whose create never finished);
//! - `listing:skip` → the blocks a reader may pass over: complete (every position there,
//!   ticket or hole) and with nothing on sale;
//! - `listing:sweep` → how far every position is known to be in its block.
//!
//! A reader takes the blocks from its cursor on, skips the skippable ones, and reads a
//! position missing from its block (a ticket created a moment ago) from the ticket itself,
//! so every ticket stored is listed at once. Blocks follow the tickets: `ticket.updated`
//! (the service listens to its own event) writes the ticket as it now is into its block,
//! and the sweep (on the outbox relay's tick) brings in new tickets a block at a time,
//! marks holes, and gives tickets stored before blocks existed their position.
//!
//! A block entry only moves forward in version. Going off sale (a reservation) reaches the
//! block after the ticket; coming back on sale (a release) reaches it **before** the ticket
//! changes, together with the skip set: so a ticket on sale is always on sale in its block
//! (or read from the ticket), and a walk that follows `next` links sees every ticket that
//! stays on sale during the walk exactly once. A block may show a ticket on sale for a
//! moment after it was reserved, as the API always could.
//!
//! Several writers change one block (CAS, retried), but only writers of the same
//! [`BLOCK`] tickets: buyers of different tickets rarely meet, and the skip set changes only
//! when a block sells out or gets a ticket back.

use std::collections::BTreeMap;

use anyhow::anyhow;
use serde::{Deserialize, Serialize};
use ticketing_common::{clock::now_ms, listener::ListenerError, paging, store::Store, ApiError};

use crate::ticket::{Ticket, Tickets, INDEX_KEY};

/// Positions per block: small enough that buyers of different tickets rarely write the
/// same block at once, large enough that a page is one or two block reads.
pub const BLOCK: i64 = 32;
/// A position whose ticket is still missing this long after the sweep first looked is a
/// hole (its create died): longer than any request may run.
pub const HOLE_AFTER_MS: i64 = 60_000;
/// Positions one sweep looks at, at most.
pub const SWEEP_POSITIONS: i64 = 4_096;
/// Rounds of "write the skip set, read the block again" before giving up for now.
const RECONCILE_ROUNDS: usize = 8;

const SKIP_KEY: &str = "listing:skip";
const SWEEP_KEY: &str = "listing:sweep";

/// One block: position → the ticket there (`None`: a hole).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Block {
    #[serde(with = "as_pairs")]
    entries: BTreeMap<i64, Option<Ticket>>,
}

/// A block's entries as `[[position, ticket], ...]`: a stored value is read through an
/// untagged enum (see `Store`), which cannot turn JSON object keys back into numbers.
mod as_pairs {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serializer};

    use crate::ticket::Ticket;

    pub fn serialize<S: Serializer>(
        entries: &BTreeMap<i64, Option<Ticket>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(entries)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<BTreeMap<i64, Option<Ticket>>, D::Error> {
        Ok(Vec::<(i64, Option<Ticket>)>::deserialize(deserializer)?
            .into_iter()
            .collect())
    }
}

impl Block {
    /// Complete (every position of the block is there) and nothing on sale.
    fn skippable(&self) -> bool {
        self.entries.len() as i64 == BLOCK
            && self
                .entries
                .values()
                .all(|entry| entry.as_ref().is_none_or(|ticket| !on_sale(ticket)))
    }

    /// The block with `ticket` at `position`, unless the block has a newer version there
    /// already (or exactly this ticket).
    fn with(&self, position: i64, ticket: &Ticket) -> Option<Block> {
        match self.entries.get(&position) {
            Some(Some(there)) if there.version > ticket.version || there == ticket => None,
            _ => {
                let mut block = self.clone();
                block.entries.insert(position, Some(ticket.clone()));
                Some(block)
            }
        }
    }
}

/// The skip set: one bit per block.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct SkipSet {
    words: Vec<u64>,
}

impl SkipSet {
    fn contains(&self, block: i64) -> bool {
        let Ok(block) = usize::try_from(block) else {
            return false;
        };
        self.words
            .get(block / 64)
            .is_some_and(|word| word & (1 << (block % 64)) != 0)
    }

    fn with(&self, block: i64, skip: bool) -> SkipSet {
        let block = usize::try_from(block).expect("blocks are numbered from 0");
        let (word, bit) = (block / 64, block % 64);
        let mut set = self.clone();
        if set.words.len() <= word {
            set.words.resize(word + 1, 0);
        }
        if skip {
            set.words[word] |= 1 << bit;
        } else {
            set.words[word] &= !(1 << bit);
        }
        while set.words.last() == Some(&0) {
            set.words.pop();
        }
        set
    }
}

/// How far the sweep got: every position up to `through` is in its block, and `waiting` is
/// the first one after it whose ticket was missing, since when.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Sweep {
    through: i64,
    #[serde(default)]
    waiting: Option<(i64, i64)>,
}

/// One page of the catalogue.
pub struct Page {
    pub tickets: Vec<Ticket>,
    /// The position of the page's last ticket, when tickets on sale follow it.
    pub next: Option<i64>,
}

/// What a sweep did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Swept {
    pub added: usize,
    pub holes: usize,
}

pub struct Listing<'a> {
    tickets: &'a Tickets,
}

impl<'a> Listing<'a> {
    pub fn new(tickets: &'a Tickets) -> Self {
        Self { tickets }
    }

    fn store(&self) -> &Store {
        self.tickets.store()
    }

    /// Up to `limit` tickets on sale after position `after`, oldest first. A cursor past
    /// the last position ever handed out is stale (400).
    pub fn page(&self, after: i64, limit: usize) -> Result<Page, ApiError> {
        let count = self.store().index_len(INDEX_KEY)?;
        if after > count {
            return Err(paging::stale_cursor());
        }
        let skip = self.skip_set()?;
        // One more than the page holds: whether a next page exists.
        let mut found: Vec<(i64, Ticket)> = Vec::new();
        let mut block = block_of(after + 1);
        while found.len() <= limit && first_position(block) <= count {
            if !skip.contains(block) {
                let entries = self.block(block)?.unwrap_or_default().entries;
                let from = (after + 1).max(first_position(block));
                for position in from..=last_position(block).min(count) {
                    let ticket = match entries.get(&position) {
                        Some(entry) => entry.clone(),
                        None => self.ticket_at(position)?,
                    };
                    if let Some(ticket) = ticket.filter(on_sale) {
                        found.push((position, ticket));
                        if found.len() > limit {
                            break;
                        }
                    }
                }
            }
            block += 1;
        }
        let next = (found.len() > limit).then(|| found[limit - 1].0);
        found.truncate(limit);
        Ok(Page {
            tickets: found.into_iter().map(|(_, ticket)| ticket).collect(),
            next,
        })
    }

    /// The ticket at `position` read from the ticket itself (a position its block does not
    /// have yet); `None` if that create has not written it (yet, or ever).
    fn ticket_at(&self, position: i64) -> Result<Option<Ticket>, ApiError> {
        let Some(id) = self.store().index_entry(INDEX_KEY, position)? else {
            return Ok(None);
        };
        self.tickets.find(&id)
    }

    /// Writes `ticket` as it now is at `position` in its block (unless the block has it at
    /// a newer version already), and keeps the skip set right.
    pub fn put(&self, position: i64, ticket: &Ticket) -> Result<(), ApiError> {
        self.change_block(block_of(position), |block| block.with(position, ticket))
    }

    /// Brings the block of a ticket in line with the ticket as stored (`ticket.updated`).
    pub fn follow(&self, ticket_id: &str) -> Result<(), ListenerError> {
        let Some(stored) = self.tickets.find_stored(ticket_id)? else {
            return Err(ListenerError::Never(format!(
                "ticket.updated for ticket {ticket_id}, which does not exist"
            )));
        };
        // A ticket stored before records had positions: the sweep gives it one.
        if let Some(position) = stored.position {
            self.put(position, &stored.ticket)?;
        }
        Ok(())
    }

    /// Changes block `b` where `change` says so (creating the block if it does not exist),
    /// then the skip set if the block's skippability may have changed.
    fn change_block(
        &self,
        b: i64,
        mut change: impl FnMut(&Block) -> Option<Block>,
    ) -> Result<(), ApiError> {
        let key = block_key(b);
        let mut was_skippable = false;
        let mut now_skippable = false;
        let outcome = self.store().update_if(&key, |block: &Block| {
            was_skippable = block.skippable();
            let changed = change(block);
            now_skippable = changed.as_ref().unwrap_or(block).skippable();
            Ok(changed)
        });
        match outcome {
            Ok(updated) if !updated.written => return Ok(()),
            Ok(_) => {}
            Err(ApiError::NotFound) => {
                let Some(block) = change(&Block::default()) else {
                    return Ok(());
                };
                now_skippable = block.skippable();
                if !self.store().insert_new(&key, &block)? {
                    // Another writer is creating it: change it once that write is in.
                    return Err(ApiError::unavailable(anyhow!(
                        "{key} is being created by another writer"
                    )));
                }
            }
            Err(error) => return Err(error),
        }
        if was_skippable || now_skippable {
            self.reconcile_skip(b)?;
        }
        Ok(())
    }

    /// Makes the skip set say what block `b` is, reading the block again after every
    /// write: whoever writes the set last has seen the block as it ends up.
    fn reconcile_skip(&self, b: i64) -> Result<(), ApiError> {
        for _ in 0..RECONCILE_ROUNDS {
            let skippable = self.block(b)?.is_some_and(|block| block.skippable());
            let set: Option<SkipSet> = self.store().get(SKIP_KEY)?;
            if set.as_ref().is_some_and(|set| set.contains(b)) == skippable {
                return Ok(());
            }
            match set {
                Some(_) => {
                    self.store().update_if(SKIP_KEY, |set: &SkipSet| {
                        Ok((set.contains(b) != skippable).then(|| set.with(b, skippable)))
                    })?;
                }
                None => {
                    // Only a set that marks something needs to exist; a lost race is
                    // looked at again on the next round.
                    self.store()
                        .insert_new(SKIP_KEY, &SkipSet::default().with(b, true))?;
                }
            }
        }
        Err(ApiError::unavailable(anyhow!(
            "the skip set of block {b} kept changing"
        )))
    }

    fn skip_set(&self) -> Result<SkipSet, ApiError> {
        Ok(self.store().get(SKIP_KEY)?.unwrap_or_default())
    }

    fn block(&self, b: i64) -> Result<Option<Block>, ApiError> {
        self.store().get(&block_key(b))
    }

    /// Brings positions not in their blocks yet into them, a block at a time, from where
    /// the last sweep stopped: new tickets, tickets stored before blocks existed (given
    /// their position), and holes, once a position's ticket has been missing for
    /// [`HOLE_AFTER_MS`]. Safe to run at any time, by several hosts at once.
    pub fn sweep(&self) -> Result<Swept, ApiError> {
        let count = self.store().index_len(INDEX_KEY)?;
        let before: Sweep = self.store().get(SWEEP_KEY)?.unwrap_or_default();
        let mut sweep = before.clone();
        let start = sweep.through;
        let end = count.min(start + SWEEP_POSITIONS);
        let now = now_ms()?;
        let mut swept = Swept::default();
        // Every position up to here is in its block.
        let mut contiguous = true;
        let mut position = start + 1;
        while position <= end {
            let b = block_of(position);
            let last = last_position(b).min(end);
            let present = self.block(b)?.unwrap_or_default().entries;
            let mut additions: Vec<(i64, Option<Ticket>)> = Vec::new();
            for p in position..=last {
                if present.contains_key(&p) {
                    continue;
                }
                match self.stored_at(p)? {
                    Some(ticket) => additions.push((p, Some(ticket))),
                    None => match sweep.waiting {
                        Some((waiting, since)) if waiting == p && now - since > HOLE_AFTER_MS => {
                            additions.push((p, None));
                            sweep.waiting = None;
                        }
                        Some((waiting, _)) if waiting == p => contiguous = false,
                        _ if contiguous => {
                            sweep.waiting = Some((p, now));
                            contiguous = false;
                        }
                        _ => {}
                    },
                }
            }
            if !additions.is_empty() {
                self.change_block(b, |block| {
                    let mut changed = block.clone();
                    for (p, entry) in &additions {
                        match (changed.entries.get(p), entry) {
                            // What followed the ticket meanwhile is as new or newer.
                            (Some(_), _) => {}
                            (None, entry) => {
                                changed.entries.insert(*p, entry.clone());
                            }
                        }
                    }
                    (changed != *block).then_some(changed)
                })?;
                swept.added += additions.iter().filter(|(_, e)| e.is_some()).count();
                swept.holes += additions.iter().filter(|(_, e)| e.is_none()).count();
            }
            if contiguous {
                sweep.through = last;
            }
            position = last + 1;
        }
        if sweep != before {
            // Concurrent sweeps may both write; one set back only means a rescan.
            self.store().put(SWEEP_KEY, &sweep)?;
        }
        Ok(swept)
    }

    /// The ticket at `position` for the sweep, giving it its position if it was stored
    /// before records had one.
    fn stored_at(&self, position: i64) -> Result<Option<Ticket>, ApiError> {
        let Some(id) = self.store().index_entry(INDEX_KEY, position)? else {
            return Ok(None);
        };
        let Some(stored) = self.tickets.find_stored(&id)? else {
            return Ok(None);
        };
        if stored.position.is_some() {
            return Ok(Some(stored.ticket));
        }
        Ok(Some(self.tickets.set_position(&id, position)?.ticket))
    }
}

/// Whether the catalogue shows a ticket: not reserved.
pub fn on_sale(ticket: &Ticket) -> bool {
    ticket.order_id.is_none()
}

fn block_of(position: i64) -> i64 {
    (position - 1).max(0) / BLOCK
}

fn first_position(block: i64) -> i64 {
    block * BLOCK + 1
}

fn last_position(block: i64) -> i64 {
    (block + 1) * BLOCK
}

fn block_key(b: i64) -> String {
    format!("listing:{b}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket(version: u64, order_id: Option<&str>) -> Ticket {
        Ticket {
            id: "507f1f77bcf86cd799439011".into(),
            title: "concert".into(),
            price: 20.0,
            user_id: "64f0c0de0123456789abcdef".into(),
            version,
            order_id: order_id.map(str::to_owned),
        }
    }

    #[test]
    fn blocks_read_back_as_stored_values() {
        let mut block = Block::default().with(33, &ticket(2, None)).unwrap();
        block.entries.insert(34, None);
        let bytes = serde_json::to_vec(&block).unwrap();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&bytes).unwrap()["entries"][1],
            serde_json::json!([34, null])
        );
        // As the store reads it: plain, or inside its write-token envelope.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Stored {
            Versioned {
                #[serde(rename = "$value")]
                value: Block,
            },
            Plain(Block),
        }
        let wrapped = serde_json::json!({"$value": block.clone(), "$writes": [1]});
        for value in [serde_json::to_value(&block).unwrap(), wrapped] {
            let read = match serde_json::from_value::<Stored>(value).unwrap() {
                Stored::Versioned { value } | Stored::Plain(value) => value,
            };
            assert_eq!(read, block);
        }
    }

    #[test]
    fn positions_fall_in_blocks_of_32() {
        assert_eq!(block_of(1), 0);
        assert_eq!(block_of(32), 0);
        assert_eq!(block_of(33), 1);
        assert_eq!((first_position(1), last_position(1)), (33, 64));
    }

    #[test]
    fn a_block_entry_only_moves_forward() {
        let block = Block::default().with(5, &ticket(2, None)).unwrap();
        assert_eq!(
            block.with(5, &ticket(1, Some("6500000000000000000000aa"))),
            None
        );
        assert_eq!(
            block.with(5, &ticket(2, None)),
            None,
            "the same ticket again"
        );
        // The same version with another state replaces it: a release written ahead of its
        // ticket gives way to what the ticket really became.
        let corrected = block.with(5, &ticket(2, Some("6500000000000000000000aa")));
        assert!(corrected.is_some());
        let newer = block
            .with(5, &ticket(3, Some("6500000000000000000000aa")))
            .unwrap();
        assert_eq!(newer.entries[&5].as_ref().unwrap().version, 3);
        // A hole gives way to a ticket.
        let mut holed = Block::default();
        holed.entries.insert(7, None);
        assert!(holed.with(7, &ticket(0, None)).is_some());
    }

    #[test]
    fn only_a_complete_block_with_nothing_on_sale_is_skippable() {
        let mut block = Block::default();
        for p in 1..=BLOCK {
            block
                .entries
                .insert(p, Some(ticket(1, Some("6500000000000000000000aa"))));
        }
        assert!(block.skippable());
        block.entries.insert(3, None);
        assert!(block.skippable(), "holes are never on sale");
        block.entries.insert(4, Some(ticket(2, None)));
        assert!(!block.skippable());
        block.entries.remove(&4);
        assert!(
            !block.skippable(),
            "a position not in yet may be a ticket on sale"
        );
    }

    #[test]
    fn the_skip_set_is_a_bitmap_that_shrinks() {
        let set = SkipSet::default().with(0, true).with(130, true);
        assert!(set.contains(0) && set.contains(130));
        assert!(!set.contains(1) && !set.contains(129) && !set.contains(100_000));
        assert_eq!(set.words.len(), 3);
        let set = set.with(130, false);
        assert_eq!(set.words, vec![1]);
        assert!(!set.contains(-1));
    }
}
