//! The embedded event bus: a durable queue in the host's redb state file (the same file as
//! the embedded key-value stores), with JetStream's consumer semantics.
//!
//! Tables (all `queue/...`):
//! - `consumers`: durable consumer name → its filter subject. Registrations are durable, so
//!   events published while a consumer is not polling are kept for it; the NATS trigger
//!   retires, at start, the ones its app no longer declares (`retire_consumers`).
//! - `messages`: sequence → (copies still owed, subject, payload). Publishing stores one row
//!   and a pending copy per matching consumer; the row goes when the last copy is settled.
//!   Events matching no registered consumer are not stored (a consumer sees the events
//!   published after its first registration; JetStream would also replay older ones).
//! - `pending`: (consumer, sequence) → (due time, deliveries so far), with `due`:
//!   (consumer, due time, sequence) as the index of what is deliverable now, oldest first.
//!   A delivery moves its due time to now + ack_wait; ack and term delete the copy; nak
//!   moves the due time to now + delay.
//! - `dedup` / `dedup_expiry`: message id → publish time, pruned past the duplicate window.
//! - `meta`: the next sequence number (never reused).
//!
//! Every change goes through the state file's group commit ([`WriteQueue`]) and returns once
//! its transaction is committed, in order with the key-value writes around it (a crash keeps
//! a prefix of the commits, so an event never outlives the write it announces, nor the
//! reverse); it is on disk before any answer leaves the process (`durable_barrier`).
//! Publishes and key-value writes of concurrent requests share one commit. When
//! the bus is opened (once per process), deliveries that were in flight in the previous
//! process are made deliverable again at once: their handlers died with it.
//!
//! Times are wall-clock milliseconds since the Unix epoch, so due times survive restarts.
//! Consumers wake on publish and nak through a [`Notify`] per consumer name, and otherwise
//! sleep until their next due time; redb reads run on tokio's blocking pool, writes on the
//! queue's writer thread.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use async_trait::async_trait;
use redb::{
    Database, ReadableDatabase as _, ReadableTable as _, TableDefinition, WriteTransaction,
};
use tokio::sync::Notify;

use super::{subject, Acker, Consumer, ConsumerOptions, Delivery, Event, EventBus, StreamConfig};
use crate::backends::group_commit::WriteQueue;
use crate::backends::key_value::EmbeddedState;

/// Durable consumer name → filter subject.
const CONSUMERS: TableDefinition<&str, &str> = TableDefinition::new("queue/consumers");
/// Sequence → (copies still owed to consumers, subject, payload).
const MESSAGES: TableDefinition<u64, (u32, &str, &[u8])> = TableDefinition::new("queue/messages");
/// (Consumer, sequence) → (due unix ms, deliveries so far).
const PENDING: TableDefinition<(&str, u64), (u64, u32)> = TableDefinition::new("queue/pending");
/// (Consumer, due unix ms, sequence): what each consumer may be given, in due order.
const DUE: TableDefinition<(&str, u64, u64), ()> = TableDefinition::new("queue/due");
/// Message id → unix ms of its first publish.
const DEDUP: TableDefinition<&str, u64> = TableDefinition::new("queue/dedup");
/// (Unix ms, message id): `DEDUP` in time order, for pruning.
const DEDUP_EXPIRY: TableDefinition<(u64, &str), ()> = TableDefinition::new("queue/dedup_expiry");
/// Counters: `next_sequence`.
const META: TableDefinition<&str, u64> = TableDefinition::new("queue/meta");

const NEXT_SEQUENCE: &str = "next_sequence";

/// Expired dedup entries removed per publish: bounded work per publish, and still faster
/// than any realistic publish rate adds them.
const DEDUP_PRUNE_BATCH: usize = 64;

/// A waiting consumer re-checks at least this often, as a safety net under the wake-ups.
const MAX_IDLE_WAIT: Duration = Duration::from_secs(5);
/// Deliveries one claim takes at most. A claim is a write, and a consumer's writes wait in
/// the file's one write queue behind everyone's: under a crowd, claiming one at a time
/// made each consumer take one event per group commit, and events lag behind requests.
/// The extra ones wait in the handle for the trigger's next call (a handler's run at most,
/// far below `ack_wait`, after which an unacknowledged copy would be delivered again, as
/// are those of a handle dropped with copies left; a restarted host makes them deliverable
/// at once, like every delivery in flight). In the bench's flash sale, batches of 8 took a
/// payment's wait for its order from p50 312 to 84 ms.
const CLAIM_BATCH: usize = 8;

/// The embedded event bus. Cheap to clone; open it once per process (see the module docs).
#[derive(Clone)]
pub struct EmbeddedEventBus {
    shared: Arc<Shared>,
}

struct Shared {
    database: Arc<Database>,
    writer: WriteQueue,
    stream: StreamConfig,
    /// One wake-up per consumer name, shared by every handle on that name.
    wakers: Mutex<HashMap<String, Arc<Notify>>>,
}

impl Shared {
    fn waker(&self, consumer: &str) -> Arc<Notify> {
        let mut wakers = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
        wakers.entry(consumer.to_owned()).or_default().clone()
    }

    fn wake(&self, consumer: &str) {
        let wakers = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(waker) = wakers.get(consumer) {
            waker.notify_waiters();
        }
    }

    /// Runs `op` on the blocking pool.
    async fn blocking<R, F>(self: &Arc<Self>, op: F) -> anyhow::Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&Shared) -> anyhow::Result<R> + Send + 'static,
    {
        let shared = self.clone();
        tokio::task::spawn_blocking(move || op(&shared))
            .await
            .context("embedded event bus operation panicked")?
    }
}

impl EmbeddedEventBus {
    /// Opens the queue in `state`'s file (creating its tables), and makes the deliveries that
    /// were in flight when the previous process stopped deliverable again.
    pub fn open(state: &EmbeddedState, stream: StreamConfig) -> anyhow::Result<Self> {
        stream.check()?;
        let database = state.database();
        let txn = database.begin_write()?;
        txn.open_table(CONSUMERS)?;
        txn.open_table(MESSAGES)?;
        txn.open_table(DEDUP)?;
        txn.open_table(DEDUP_EXPIRY)?;
        txn.open_table(META)?;
        let recovered = release_in_flight(&txn, now_ms())?;
        txn.commit()?;
        if recovered > 0 {
            tracing::info!(
                deliveries = recovered,
                "event bus: redelivering events that were in flight when the host stopped"
            );
        }
        Ok(EmbeddedEventBus {
            shared: Arc::new(Shared {
                database,
                writer: state.writer(),
                stream,
                wakers: Mutex::new(HashMap::new()),
            }),
        })
    }
}

/// Sets every future due time to `now`: those deliveries' handlers are gone.
fn release_in_flight(txn: &WriteTransaction, now: u64) -> anyhow::Result<usize> {
    let mut pending = txn.open_table(PENDING)?;
    let mut due = txn.open_table(DUE)?;
    let mut in_flight = Vec::new();
    for entry in pending.iter()? {
        let (key, value) = entry?;
        let (consumer, sequence) = key.value();
        let (due_ms, delivered) = value.value();
        if due_ms > now {
            in_flight.push((consumer.to_owned(), sequence, due_ms, delivered));
        }
    }
    for (consumer, sequence, due_ms, delivered) in &in_flight {
        due.remove((consumer.as_str(), *due_ms, *sequence))?;
        due.insert((consumer.as_str(), now, *sequence), ())?;
        pending.insert((consumer.as_str(), *sequence), (now, *delivered))?;
    }
    Ok(in_flight.len())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[async_trait]
impl EventBus for EmbeddedEventBus {
    async fn publish(&self, event: Event) -> anyhow::Result<()> {
        subject::check_subject(&event.subject)?;
        anyhow::ensure!(
            self.shared.stream.captures(&event.subject),
            "subject {:?} is outside the event stream's subjects {:?}",
            event.subject,
            self.shared.stream.subjects
        );
        let window = millis(self.shared.stream.duplicate_window);
        let receivers = self
            .shared
            .writer
            .write(move |txn| store_event(txn, &event, window))
            .await?;
        for consumer in receivers {
            self.shared.wake(&consumer);
        }
        Ok(())
    }

    fn captures(&self, subject: &str) -> bool {
        self.shared.stream.captures(subject)
    }

    async fn retire_consumers(&self, keep: &[String]) -> anyhow::Result<Vec<String>> {
        let keep: HashSet<String> = keep.iter().cloned().collect();
        self.shared
            .writer
            .write(move |txn| retire_consumers(txn, &keep))
            .await
    }

    async fn consume(
        &self,
        name: &str,
        subject: &str,
        options: &ConsumerOptions,
    ) -> anyhow::Result<Box<dyn Consumer>> {
        self.shared.stream.check_consumer(name, subject, options)?;
        let (owned_name, filter) = (name.to_owned(), subject.to_owned());
        self.shared
            .writer
            .write(move |txn| {
                let mut consumers = txn.open_table(CONSUMERS)?;
                let current = consumers.get(owned_name.as_str())?;
                if current.as_ref().map(|value| value.value()) == Some(filter.as_str()) {
                    return Ok(((), false));
                }
                drop(current);
                consumers.insert(owned_name.as_str(), filter.as_str())?;
                Ok(((), true))
            })
            .await?;
        Ok(Box::new(EmbeddedConsumer {
            shared: self.shared.clone(),
            name: name.into(),
            options: options.clone(),
            waker: self.shared.waker(name),
            claimed: VecDeque::new(),
        }))
    }
}

/// Removes the consumers not in `keep`, their pending copies and the events only they still
/// owed; returns the removed names.
fn retire_consumers(
    txn: &WriteTransaction,
    keep: &HashSet<String>,
) -> anyhow::Result<(Vec<String>, bool)> {
    let retired = {
        let mut consumers = txn.open_table(CONSUMERS)?;
        let mut retired = Vec::new();
        for entry in consumers.iter()? {
            let name = entry?.0.value().to_owned();
            if !keep.contains(&name) {
                retired.push(name);
            }
        }
        let mut pending = txn.open_table(PENDING)?;
        let mut due = txn.open_table(DUE)?;
        let mut messages = txn.open_table(MESSAGES)?;
        for name in &retired {
            consumers.remove(name.as_str())?;
            let mut copies = Vec::new();
            for entry in pending.range((name.as_str(), 0)..=(name.as_str(), u64::MAX))? {
                let (key, value) = entry?;
                copies.push((key.value().1, value.value().0));
            }
            for (sequence, due_ms) in copies {
                pending.remove((name.as_str(), sequence))?;
                due.remove((name.as_str(), due_ms, sequence))?;
                release_copy(&mut messages, sequence)?;
            }
        }
        retired
    };
    let changed = !retired.is_empty();
    Ok((retired, changed))
}

/// Stores `event` for every consumer whose filter matches it, unless its id was seen within
/// `window_ms`. Returns the consumers that got a copy, and whether anything changed.
fn store_event(
    txn: &WriteTransaction,
    event: &Event,
    window_ms: u64,
) -> anyhow::Result<(Vec<String>, bool)> {
    let now = now_ms();
    let receivers = {
        let mut dedup = txn.open_table(DEDUP)?;
        let mut dedup_expiry = txn.open_table(DEDUP_EXPIRY)?;

        let cutoff = now.saturating_sub(window_ms);
        let mut expired = Vec::new();
        for entry in dedup_expiry.range::<(u64, &str)>(..(cutoff, ""))? {
            let (key, _) = entry?;
            let (at, id) = key.value();
            expired.push((at, id.to_owned()));
            if expired.len() == DEDUP_PRUNE_BATCH {
                break;
            }
        }
        for (at, id) in &expired {
            dedup_expiry.remove((*at, id.as_str()))?;
            dedup.remove(id.as_str())?;
        }

        if !event.message_id.is_empty() {
            let seen = dedup.get(event.message_id.as_str())?.map(|at| at.value());
            if let Some(at) = seen {
                if now.saturating_sub(at) < window_ms {
                    // A duplicate: nothing to store beyond the pruning above.
                    return Ok((Vec::new(), !expired.is_empty()));
                }
                dedup_expiry.remove((at, event.message_id.as_str()))?;
            }
            dedup.insert(event.message_id.as_str(), now)?;
            dedup_expiry.insert((now, event.message_id.as_str()), ())?;
        }

        let mut meta = txn.open_table(META)?;
        let sequence = meta.get(NEXT_SEQUENCE)?.map(|s| s.value()).unwrap_or(1);
        meta.insert(NEXT_SEQUENCE, sequence + 1)?;

        let consumers = txn.open_table(CONSUMERS)?;
        let mut receivers = Vec::new();
        for entry in consumers.iter()? {
            let (name, filter) = entry?;
            if subject::matches(filter.value(), &event.subject) {
                receivers.push(name.value().to_owned());
            }
        }
        if !receivers.is_empty() {
            let mut pending = txn.open_table(PENDING)?;
            let mut due = txn.open_table(DUE)?;
            for consumer in &receivers {
                pending.insert((consumer.as_str(), sequence), (now, 0))?;
                due.insert((consumer.as_str(), now, sequence), ())?;
            }
            let copies = u32::try_from(receivers.len()).context("too many consumers")?;
            let mut messages = txn.open_table(MESSAGES)?;
            messages.insert(
                sequence,
                (copies, event.subject.as_str(), event.payload.as_slice()),
            )?;
        }
        receivers
    };
    Ok((receivers, true))
}

/// One handle on a durable consumer.
struct EmbeddedConsumer {
    shared: Arc<Shared>,
    name: Arc<str>,
    options: ConsumerOptions,
    waker: Arc<Notify>,
    /// Copies claimed by an earlier call beyond the one it returned, oldest first.
    claimed: VecDeque<Claimed>,
}

/// A copy of an event claimed for a consumer.
struct Claimed {
    subject: String,
    payload: Vec<u8>,
    sequence: u64,
    delivered: u32,
}

/// What a claim attempt found.
enum Claim {
    /// One to [`CLAIM_BATCH`] copies, oldest first.
    Deliveries(Vec<Claimed>),
    /// Nothing deliverable now; the earliest due time if anything is pending.
    Nothing { next_due_ms: Option<u64> },
}

impl EmbeddedConsumer {
    fn delivery(&self, copy: Claimed) -> Delivery {
        let acker = EmbeddedAcker {
            shared: self.shared.clone(),
            consumer: self.name.clone(),
            sequence: copy.sequence,
            delivered: copy.delivered,
            max_deliver: self.options.max_deliver,
            ack_wait: self.options.ack_wait,
        };
        Delivery::new(
            copy.subject,
            copy.payload,
            copy.delivered,
            copy.sequence,
            Box::new(acker),
        )
    }
}

#[async_trait]
impl Consumer for EmbeddedConsumer {
    async fn next(&mut self) -> anyhow::Result<Delivery> {
        if let Some(copy) = self.claimed.pop_front() {
            return Ok(self.delivery(copy));
        }
        loop {
            // Registered before looking, so a publish between the look and the wait still
            // wakes this handle.
            let notified = self.waker.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();

            // A read first: most calls find nothing due, and reads don't queue for the writer.
            let name = self.name.clone();
            let nothing_due = self
                .shared
                .blocking(move |shared| nothing_due(&shared.database, &name))
                .await?;
            let claim = match nothing_due {
                Some(nothing) => nothing,
                None => {
                    let (name, options) = (self.name.clone(), self.options.clone());
                    self.shared
                        .writer
                        .write(move |txn| claim(txn, &name, &options))
                        .await?
                }
            };
            match claim {
                Claim::Deliveries(copies) => {
                    self.claimed.extend(copies);
                    if let Some(copy) = self.claimed.pop_front() {
                        return Ok(self.delivery(copy));
                    }
                }
                Claim::Nothing { next_due_ms } => {
                    let wait = next_due_ms
                        .map(|due| Duration::from_millis(due.saturating_sub(now_ms())))
                        .unwrap_or(MAX_IDLE_WAIT)
                        .min(MAX_IDLE_WAIT);
                    tokio::select! {
                        () = &mut notified => {}
                        () = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }
}

/// `Claim::Nothing` if `consumer` has nothing deliverable now (from a read transaction);
/// `None` if a claim may find something.
fn nothing_due(database: &Database, consumer: &str) -> anyhow::Result<Option<Claim>> {
    let txn = database.begin_read()?;
    let first_due = match txn.open_table(DUE) {
        Ok(due) => first_due(&due, consumer)?,
        Err(redb::TableError::TableDoesNotExist(_)) => None,
        Err(error) => return Err(error.into()),
    };
    Ok(match first_due {
        None => Some(Claim::Nothing { next_due_ms: None }),
        Some((due_ms, _)) if due_ms > now_ms() => Some(Claim::Nothing {
            next_due_ms: Some(due_ms),
        }),
        Some(_) => None,
    })
}

/// Claims the oldest deliverable copies for `consumer`, up to [`CLAIM_BATCH`]: counts each
/// delivery and hides it for `ack_wait`. Copies already delivered `max_deliver` times are
/// dropped instead.
fn claim(
    txn: &WriteTransaction,
    consumer: &str,
    options: &ConsumerOptions,
) -> anyhow::Result<(Claim, bool)> {
    let now = now_ms();
    let mut changed = false;
    let mut copies = Vec::new();
    let mut next_due_ms = None;
    {
        let mut due = txn.open_table(DUE)?;
        let mut pending = txn.open_table(PENDING)?;
        let mut messages = txn.open_table(MESSAGES)?;
        while copies.len() < CLAIM_BATCH {
            let Some((due_ms, sequence)) = first_due(&due, consumer)? else {
                break;
            };
            if due_ms > now {
                next_due_ms = Some(due_ms);
                break;
            }
            changed = true;
            due.remove((consumer, due_ms, sequence))?;
            let delivered = pending
                .get((consumer, sequence))?
                .map(|value| value.value().1)
                .unwrap_or(0);
            if delivered >= options.max_deliver {
                // Its last delivery expired unacknowledged: give up on it, as JetStream does.
                pending.remove((consumer, sequence))?;
                release_copy(&mut messages, sequence)?;
                continue;
            }
            let message = messages.get(sequence)?.map(|value| {
                let (_, subject, payload) = value.value();
                (subject.to_owned(), payload.to_vec())
            });
            let Some((subject, payload)) = message else {
                tracing::warn!(
                    consumer,
                    sequence,
                    "event bus: pending copy without its event"
                );
                pending.remove((consumer, sequence))?;
                continue;
            };
            let delivered = delivered + 1;
            let hidden_until = now.saturating_add(millis(options.ack_wait));
            pending.insert((consumer, sequence), (hidden_until, delivered))?;
            due.insert((consumer, hidden_until, sequence), ())?;
            copies.push(Claimed {
                subject,
                payload,
                sequence,
                delivered,
            });
        }
    }
    let outcome = if copies.is_empty() {
        Claim::Nothing { next_due_ms }
    } else {
        Claim::Deliveries(copies)
    };
    Ok((outcome, changed))
}

fn first_due(
    due: &impl redb::ReadableTable<(&'static str, u64, u64), ()>,
    consumer: &str,
) -> anyhow::Result<Option<(u64, u64)>> {
    let mut range = due.range((consumer, 0, 0)..=(consumer, u64::MAX, u64::MAX))?;
    Ok(match range.next() {
        Some(entry) => {
            let (key, _) = entry?;
            let (_, due_ms, sequence) = key.value();
            Some((due_ms, sequence))
        }
        None => None,
    })
}

/// One copy of event `sequence` is settled: the event goes when no copy is owed any more.
fn release_copy(
    messages: &mut redb::Table<u64, (u32, &'static str, &'static [u8])>,
    sequence: u64,
) -> anyhow::Result<()> {
    let remaining = messages.get(sequence)?.map(|value| value.value().0);
    match remaining {
        Some(copies) if copies > 1 => {
            let (subject, payload) = {
                let value = messages.get(sequence)?.context("event vanished")?;
                let (_, subject, payload) = value.value();
                (subject.to_owned(), payload.to_vec())
            };
            messages.insert(sequence, (copies - 1, subject.as_str(), payload.as_slice()))?;
        }
        Some(_) => {
            messages.remove(sequence)?;
        }
        None => {}
    }
    Ok(())
}

/// Settles one delivery of the embedded bus.
struct EmbeddedAcker {
    shared: Arc<Shared>,
    consumer: Arc<str>,
    sequence: u64,
    /// The delivery count this handle was given: a nak from an older delivery of a copy that
    /// was delivered again since is ignored.
    delivered: u32,
    max_deliver: u32,
    ack_wait: Duration,
}

impl EmbeddedAcker {
    /// Removes the copy (ack and term), or for a nak moves its due time.
    async fn settle(self: Box<Self>, nak_delay: Option<Duration>) -> anyhow::Result<()> {
        let consumer = self.consumer.clone();
        let (sequence, delivered, max_deliver) = (self.sequence, self.delivered, self.max_deliver);
        let redeliver = self
            .shared
            .writer
            .write(move |txn| {
                let now = now_ms();
                let outcome = {
                    let mut pending = txn.open_table(PENDING)?;
                    let mut due = txn.open_table(DUE)?;
                    let current = pending
                        .get((&*consumer, sequence))?
                        .map(|value| value.value());
                    match (current, nak_delay) {
                        // Already settled (e.g. acknowledged by an earlier delivery's handler).
                        (None, _) => None,
                        // A stale nak: the copy was delivered again since.
                        (Some((_, count)), Some(_)) if count != delivered => None,
                        (Some((due_ms, count)), Some(delay)) if count < max_deliver => {
                            let due_again = now.saturating_add(millis(delay));
                            due.remove((&*consumer, due_ms, sequence))?;
                            due.insert((&*consumer, due_again, sequence), ())?;
                            pending.insert((&*consumer, sequence), (due_again, count))?;
                            Some(true)
                        }
                        // Ack, term, or a nak of the last allowed delivery.
                        (Some((due_ms, _)), _) => {
                            due.remove((&*consumer, due_ms, sequence))?;
                            pending.remove((&*consumer, sequence))?;
                            let mut messages = txn.open_table(MESSAGES)?;
                            release_copy(&mut messages, sequence)?;
                            Some(false)
                        }
                    }
                };
                Ok(match outcome {
                    Some(redeliver) => (redeliver, true),
                    None => (false, false),
                })
            })
            .await?;
        if redeliver {
            self.shared.wake(&self.consumer);
        }
        Ok(())
    }
}

#[async_trait]
impl Acker for EmbeddedAcker {
    async fn ack(self: Box<Self>) -> anyhow::Result<()> {
        self.settle(None).await
    }

    async fn nak(self: Box<Self>, delay: Duration) -> anyhow::Result<()> {
        self.settle(Some(delay)).await
    }

    async fn term(self: Box<Self>) -> anyhow::Result<()> {
        self.settle(None).await
    }

    async fn in_progress(&self) -> anyhow::Result<()> {
        let consumer = self.consumer.clone();
        let (sequence, delivered, ack_wait) = (self.sequence, self.delivered, self.ack_wait);
        self.shared
            .writer
            .write(move |txn| {
                let extended = {
                    let mut pending = txn.open_table(PENDING)?;
                    let mut due = txn.open_table(DUE)?;
                    let current = pending
                        .get((&*consumer, sequence))?
                        .map(|value| value.value());
                    match current {
                        // Still this delivery's: hide it for another ack_wait from now.
                        Some((due_ms, count)) if count == delivered => {
                            let hidden_until = now_ms().saturating_add(millis(ack_wait));
                            due.remove((&*consumer, due_ms, sequence))?;
                            due.insert((&*consumer, hidden_until, sequence), ())?;
                            pending.insert((&*consumer, sequence), (hidden_until, count))?;
                            true
                        }
                        // Settled, or delivered again since: nothing to extend.
                        _ => false,
                    }
                };
                Ok(((), extended))
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> ConsumerOptions {
        ConsumerOptions {
            max_deliver: 3,
            ack_wait: Duration::from_secs(30),
        }
    }

    fn event(subject: &str, id: &str) -> Event {
        Event {
            subject: subject.to_owned(),
            payload: id.as_bytes().to_vec(),
            message_id: id.to_owned(),
        }
    }

    fn count(database: &Database, table: TableDefinition<u64, (u32, &str, &[u8])>) -> u64 {
        use redb::ReadableTableMetadata as _;
        let txn = database.begin_read().unwrap();
        txn.open_table(table).unwrap().len().unwrap()
    }

    #[tokio::test]
    async fn settled_events_are_removed_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let state = EmbeddedState::open(dir.path().join("state.redb")).unwrap();
        let bus = EmbeddedEventBus::open(&state, StreamConfig::default()).unwrap();
        let mut first = bus
            .consume("first", "ticketing.*", &options())
            .await
            .unwrap();
        let mut second = bus
            .consume("second", "ticketing.a", &options())
            .await
            .unwrap();

        bus.publish(event("ticketing.a", "1")).await.unwrap();
        bus.publish(event("ticketing.b", "2")).await.unwrap();
        // Nobody listens to other subjects inside the stream: not stored at all.
        bus.publish(event("ticketing.none.x", "3")).await.unwrap();
        assert_eq!(count(&state.database(), MESSAGES), 3 - 1);

        first.next().await.unwrap().ack().await.unwrap();
        // `ticketing.a` is still owed to `second`.
        assert_eq!(count(&state.database(), MESSAGES), 2);
        second.next().await.unwrap().term().await.unwrap();
        assert_eq!(count(&state.database(), MESSAGES), 1);
        first.next().await.unwrap().ack().await.unwrap();
        assert_eq!(count(&state.database(), MESSAGES), 0);
    }

    #[tokio::test]
    async fn retired_consumers_stop_collecting_and_release_what_they_held() {
        let dir = tempfile::tempdir().unwrap();
        let state = EmbeddedState::open(dir.path().join("state.redb")).unwrap();
        let bus = EmbeddedEventBus::open(&state, StreamConfig::default()).unwrap();
        let mut kept = bus
            .consume("kept", "ticketing.>", &options())
            .await
            .unwrap();
        bus.consume("gone", "ticketing.>", &options())
            .await
            .unwrap();
        bus.publish(event("ticketing.a", "1")).await.unwrap();
        bus.publish(event("ticketing.b", "2")).await.unwrap();

        let retired = bus.retire_consumers(&["kept".to_owned()]).await.unwrap();
        assert_eq!(retired, ["gone"]);
        assert!(bus
            .retire_consumers(&["kept".to_owned()])
            .await
            .unwrap()
            .is_empty());

        // Once `kept` has settled both, nothing is left: `gone` owes nothing any more, and
        // a new event is stored for `kept` alone.
        kept.next().await.unwrap().ack().await.unwrap();
        kept.next().await.unwrap().ack().await.unwrap();
        assert_eq!(count(&state.database(), MESSAGES), 0);
        bus.publish(event("ticketing.c", "3")).await.unwrap();
        kept.next().await.unwrap().ack().await.unwrap();
        assert_eq!(count(&state.database(), MESSAGES), 0);
    }

    #[tokio::test]
    async fn publishing_outside_the_stream_or_with_wildcards_fails() {
        let dir = tempfile::tempdir().unwrap();
        let state = EmbeddedState::open(dir.path().join("state.redb")).unwrap();
        let bus = EmbeddedEventBus::open(&state, StreamConfig::default()).unwrap();
        assert!(bus.publish(event("other.a", "1")).await.is_err());
        assert!(bus.publish(event("ticketing.*", "2")).await.is_err());
        assert!(bus.consume("a.b", "ticketing.>", &options()).await.is_err());
        assert!(bus
            .consume("ok", "ticketing.>.x", &options())
            .await
            .is_err());
    }

    #[tokio::test]
    async fn a_claim_takes_a_batch_in_order_that_no_other_handle_gets_until_ack_wait() {
        let dir = tempfile::tempdir().unwrap();
        let state = EmbeddedState::open(dir.path().join("state.redb")).unwrap();
        let bus = EmbeddedEventBus::open(&state, StreamConfig::default()).unwrap();
        let short = ConsumerOptions {
            max_deliver: 5,
            // Long enough that the holder's batch stays hidden while the other handle
            // claims, however busy the machine.
            ack_wait: Duration::from_secs(3),
        };
        let mut holder = bus.consume("c", "ticketing.>", &short).await.unwrap();
        let events = CLAIM_BATCH + 2;
        for n in 0..events {
            bus.publish(event("ticketing.a", &n.to_string()))
                .await
                .unwrap();
        }
        // The first call claims a whole batch; the handle gives it out in order.
        let first = holder.next().await.unwrap();
        assert_eq!(first.payload, b"0");
        first.ack().await.unwrap();
        // A second handle on the same consumer gets what the batch left, not its copies.
        let mut other = bus.consume("c", "ticketing.>", &short).await.unwrap();
        let next = other.next().await.unwrap();
        assert_eq!(next.payload, CLAIM_BATCH.to_string().as_bytes());
        next.ack().await.unwrap();
        // The holder dies with the rest of its batch unhandled: the copies come back to the
        // other handle once their ack_wait is over, each delivered a second time.
        drop(holder);
        let mut seen = Vec::new();
        for _ in 1..events - 1 {
            let delivery = other.next().await.unwrap();
            seen.push((
                String::from_utf8(delivery.payload.clone()).unwrap(),
                delivery.delivered,
            ));
            delivery.ack().await.unwrap();
        }
        seen.sort_by_key(|(payload, _)| payload.parse::<usize>().unwrap());
        let mut expected: Vec<(String, u32)> =
            (1..CLAIM_BATCH).map(|n| (n.to_string(), 2)).collect();
        expected.push(((CLAIM_BATCH + 1).to_string(), 1));
        assert_eq!(seen, expected);
        assert_eq!(count(&state.database(), MESSAGES), 0);
    }

    #[tokio::test]
    async fn a_stale_nak_does_not_move_a_newer_delivery() {
        let dir = tempfile::tempdir().unwrap();
        let state = EmbeddedState::open(dir.path().join("state.redb")).unwrap();
        let bus = EmbeddedEventBus::open(&state, StreamConfig::default()).unwrap();
        let short = ConsumerOptions {
            max_deliver: 5,
            ack_wait: Duration::from_millis(100),
        };
        let mut consumer = bus.consume("c", "ticketing.>", &short).await.unwrap();
        bus.publish(event("ticketing.a", "1")).await.unwrap();
        let first = consumer.next().await.unwrap();
        // Not settled within ack_wait: delivered again.
        let second = consumer.next().await.unwrap();
        assert_eq!((first.delivered, second.delivered), (1, 2));
        first.nak(Duration::ZERO).await.unwrap();
        second.ack().await.unwrap();
        assert_eq!(count(&state.database(), MESSAGES), 0);
    }
}
