//! Group commit for the embedded state file: the writes of concurrent callers (key-value
//! stores, event queue, timers) wait in one queue, and a single writer thread applies
//! everything queued in one redb transaction.
//!
//! **Durable at the edge of the process.** A write is answered as soon as its transaction is
//! committed without fsync (`Durability::None`): later reads and writes in this process see
//! it, a SIGKILL would lose it. Nothing that leaves the process may depend on such a write, so
//! every exit (an HTTP response, a NATS publish or acknowledgement, an outbound HTTP request)
//! first calls [`durable_barrier`], which makes all commits so far durable with one fsync
//! shared by everyone waiting. A request that makes seven writes in a row therefore waits for
//! one fsync, not seven, and an answered client still finds its data after a SIGKILL. Since
//! redb's commits are ordered, a crash keeps a prefix of them: the file's own contents (the
//! data, the event queue, the timers) always agree with each other. With nobody waiting, the
//! writer makes its commits durable within [`IDLE_SYNC`] anyway.
//!
//! The writes of a batch are applied one after the other in queue order, each seeing the
//! effects of the earlier ones, which keeps compare-and-swap, increment and the queue's
//! sequence numbers atomic exactly as with one transaction per write.
//!
//! A write that fails (a guest's increment of a non-number, a storage error, a panic) may have
//! changed tables before failing, and redb cannot roll back part of a transaction: the batch
//! is then discarded and its writes are applied again one transaction each, so only the
//! failing caller sees the error. Writes are closures that can run more than once for this.
//!
//! No batching delay: while the writer commits one batch, the next one queues, so batches
//! grow with the load by themselves.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};
use redb::{Database, Durability, WriteTransaction};
use tokio::sync::oneshot;

/// Writes per transaction at most: bounds what a failing write makes the writer redo.
const MAX_BATCH: usize = 256;

/// How long a commit stays non-durable when nothing leaving the process waits for it (writes
/// of event listeners and timers, which answer no client). Losing those in a crash loses
/// nothing anybody heard of: the events they handled are still unacknowledged in the same
/// file and are handled again. The bound keeps the redo after a crash short, and redb's
/// pages freed by non-durable commits wait for a durable one to be reused.
const IDLE_SYNC: Duration = Duration::from_millis(250);

/// Every open state file's queue, for [`durable_barrier`]. Weak: the list does not keep a
/// file open.
static OPEN_QUEUES: Mutex<Vec<Weak<Queue>>> = Mutex::new(Vec::new());

/// Waits until every commit made so far to any open state file is durable. Costs one atomic
/// load per file when nothing is pending; concurrent callers share one fsync.
pub async fn durable_barrier() -> anyhow::Result<()> {
    let pending: Vec<Arc<Queue>> = {
        let mut open = OPEN_QUEUES
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        open.retain(|queue| queue.strong_count() > 0);
        open.iter()
            .filter_map(Weak::upgrade)
            .filter(|queue| queue.undurable.load(Ordering::Acquire))
            .collect()
    };
    for queue in pending {
        let (reply, done) = oneshot::channel();
        queue
            .jobs
            .send(Job::Sync(reply))
            .map_err(|_| anyhow!("the state file's writer has stopped"))?;
        done.await
            .map_err(|_| anyhow!("the state file's writer has stopped"))??;
    }
    Ok(())
}

/// The queue of one open state file. Cheap to clone; the writer thread stops when the last
/// clone is dropped.
#[derive(Clone)]
pub struct WriteQueue {
    queue: Arc<Queue>,
}

struct Queue {
    jobs: mpsc::Sender<Job>,
    /// Set by the writer after a non-durable commit, before it answers the writes in it;
    /// cleared after a durable one.
    undurable: Arc<AtomicBool>,
}

enum Job {
    Write(Box<dyn Write>),
    /// A [`durable_barrier`] waiting for everything committed before it.
    Sync(oneshot::Sender<anyhow::Result<()>>),
}

impl WriteQueue {
    /// Starts the writer thread of `database`. It holds the database only while it writes, so
    /// dropping the last other handle closes the file (and it can be opened again at once;
    /// redb makes a pending non-durable commit durable when it closes the file).
    pub fn start(database: &Arc<Database>) -> anyhow::Result<Self> {
        let (jobs, queue) = mpsc::channel();
        let undurable = Arc::new(AtomicBool::new(false));
        let writer = Writer {
            database: Arc::downgrade(database),
            undurable: undurable.clone(),
            undurable_since: None,
        };
        std::thread::Builder::new()
            .name("state-writer".into())
            .spawn(move || writer.run(&queue))
            .context("starting the state file's writer thread")?;
        let queue = Arc::new(Queue { jobs, undurable });
        OPEN_QUEUES
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(Arc::downgrade(&queue));
        Ok(Self { queue })
    }

    /// Applies `op` to a write transaction and returns its result once that transaction is
    /// committed: visible to every later read and write of this process, durable only after
    /// the next [`durable_barrier`] (or [`IDLE_SYNC`]). `op` returns `(result, changed)`: a
    /// batch in which nothing changed is not committed.
    ///
    /// `op` may run more than once (see the module docs); only its last run's result counts.
    pub async fn write<R, F>(&self, op: F) -> anyhow::Result<R>
    where
        R: Send + 'static,
        F: FnMut(&WriteTransaction) -> anyhow::Result<(R, bool)> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.queue
            .jobs
            .send(Job::Write(Box::new(QueuedWrite {
                op,
                result: None,
                reply,
            })))
            .map_err(|_| anyhow!("the state file's writer has stopped"))?;
        answer
            .await
            .map_err(|_| anyhow!("the state file's writer has stopped"))?
    }
}

/// A queued write with its caller's reply.
trait Write: Send {
    /// Runs the write in `txn`, keeping its result for [`finish`](Self::finish); returns
    /// whether it changed anything.
    fn apply(&mut self, txn: &WriteTransaction) -> anyhow::Result<bool>;

    /// Answers the caller: the kept result if `committed` is `Ok`, else that error.
    fn finish(self: Box<Self>, committed: anyhow::Result<()>);
}

struct QueuedWrite<F, R> {
    op: F,
    result: Option<R>,
    reply: oneshot::Sender<anyhow::Result<R>>,
}

impl<F, R> Write for QueuedWrite<F, R>
where
    R: Send + 'static,
    F: FnMut(&WriteTransaction) -> anyhow::Result<(R, bool)> + Send + 'static,
{
    fn apply(&mut self, txn: &WriteTransaction) -> anyhow::Result<bool> {
        let op = &mut self.op;
        let (result, changed) = catch_unwind(AssertUnwindSafe(|| op(txn)))
            .map_err(|_| anyhow!("embedded state write panicked"))??;
        self.result = Some(result);
        Ok(changed)
    }

    fn finish(self: Box<Self>, committed: anyhow::Result<()>) {
        let QueuedWrite { result, reply, .. } = *self;
        let answer = committed.and_then(|()| result.context("write was never applied"));
        // The caller may have gone (its request was cancelled): nothing to answer then.
        let _ = reply.send(answer);
    }
}

/// The writer thread of one state file.
struct Writer {
    database: Weak<Database>,
    undurable: Arc<AtomicBool>,
    /// When the oldest commit not yet durable was made.
    undurable_since: Option<Instant>,
}

impl Writer {
    fn run(mut self, queue: &mpsc::Receiver<Job>) {
        loop {
            let first = match self.undurable_since {
                None => match queue.recv() {
                    Ok(job) => job,
                    Err(_) => return,
                },
                Some(since) => {
                    let wait = (since + IDLE_SYNC).saturating_duration_since(Instant::now());
                    match queue.recv_timeout(wait) {
                        Ok(job) => job,
                        Err(RecvTimeoutError::Timeout) => {
                            // Nothing queued, the oldest commit is overdue: an empty batch
                            // makes it durable.
                            self.batch(Vec::new(), Vec::new());
                            continue;
                        }
                        // The file closes with the last handle, which commits durably.
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
            };
            let mut writes = Vec::new();
            let mut syncs = Vec::new();
            let mut next = Some(first);
            while let Some(job) = next.take() {
                match job {
                    Job::Write(write) => writes.push(write),
                    Job::Sync(reply) => syncs.push(reply),
                }
                if writes.len() < MAX_BATCH {
                    next = queue.try_recv().ok();
                }
            }
            self.batch(writes, syncs);
        }
    }

    /// Commits `writes` together, durably if a barrier waits or the oldest pending commit
    /// is [`IDLE_SYNC`] old, then answers writers and barriers.
    fn batch(
        &mut self,
        mut writes: Vec<Box<dyn Write>>,
        syncs: Vec<oneshot::Sender<anyhow::Result<()>>>,
    ) {
        let Some(open) = self.database.upgrade() else {
            fail_all(writes, anyhow!("the state file is closed"));
            // redb made the pending commits durable when it closed the file.
            self.mark_durable();
            syncs.into_iter().for_each(|reply| drop(reply.send(Ok(()))));
            return;
        };
        let overdue = self
            .undurable_since
            .is_some_and(|since| since.elapsed() >= IDLE_SYNC);
        let durability = if syncs.is_empty() && !overdue {
            Durability::None
        } else {
            Durability::Immediate
        };
        let outcome = if writes.is_empty() {
            Outcome::Unchanged
        } else {
            apply_together(&open, &mut writes, durability)
        };
        let alone: Vec<_> = if matches!(outcome, Outcome::RetryAlone) {
            writes
                .iter_mut()
                .map(|write| apply_alone(&open, write.as_mut(), durability))
                .collect()
        } else {
            Vec::new()
        };
        let committed = match &outcome {
            Outcome::Committed => true,
            Outcome::RetryAlone => alone.iter().any(|outcome| matches!(outcome, Ok(true))),
            Outcome::Unchanged | Outcome::Failed(_) => false,
        };
        // After a durable commit everything before it is durable too. A barrier or an overdue
        // sync with nothing committed in this batch makes an empty durable commit.
        let synced = if matches!(durability, Durability::None) {
            if committed {
                self.mark_undurable();
            }
            Ok(())
        } else {
            let made = if committed || self.undurable_since.is_none() {
                Ok(())
            } else {
                empty_durable_commit(&open)
            };
            match &made {
                Ok(()) => self.mark_durable(),
                Err(error) => tracing::error!("making the state file durable: {error:#}"),
            }
            made
        };
        // Before answering: a caller that drops the last handle next must find the file closed.
        drop(open);
        match outcome {
            Outcome::Committed | Outcome::Unchanged => {
                writes.into_iter().for_each(|write| write.finish(Ok(())));
            }
            Outcome::Failed(error) => fail_all(writes, error),
            Outcome::RetryAlone => {
                for (write, outcome) in writes.into_iter().zip(alone) {
                    write.finish(outcome.map(|_| ()));
                }
            }
        }
        let message = synced.as_ref().err().map(|error| format!("{error:#}"));
        for reply in syncs {
            let _ = reply.send(match &message {
                None => Ok(()),
                Some(message) => Err(anyhow!("making the state file durable: {message}")),
            });
        }
    }

    fn mark_undurable(&mut self) {
        self.undurable.store(true, Ordering::Release);
        self.undurable_since.get_or_insert_with(Instant::now);
    }

    fn mark_durable(&mut self) {
        self.undurable.store(false, Ordering::Release);
        self.undurable_since = None;
    }
}

enum Outcome {
    /// Committed: every write's result stands.
    Committed,
    /// Nothing changed, nothing committed: every write's result stands.
    Unchanged,
    /// Nothing of the batch is committed, for this reason.
    Failed(anyhow::Error),
    /// A write of a batch of several failed: the transaction was dropped uncommitted.
    RetryAlone,
}

fn begin(database: &Database, durability: Durability) -> anyhow::Result<WriteTransaction> {
    let mut txn = database.begin_write()?;
    txn.set_durability(durability)?;
    Ok(txn)
}

/// Applies every write of `batch` in one transaction and commits it if any changed something.
fn apply_together(
    database: &Database,
    batch: &mut [Box<dyn Write>],
    durability: Durability,
) -> Outcome {
    let several = batch.len() > 1;
    let txn = match begin(database, durability) {
        Ok(txn) => txn,
        Err(error) => return Outcome::Failed(error),
    };
    let mut changed = false;
    for write in batch.iter_mut() {
        match write.apply(&txn) {
            Ok(write_changed) => changed |= write_changed,
            Err(_) if several => return Outcome::RetryAlone,
            // A write alone gets its own error as it is.
            Err(error) => return Outcome::Failed(error),
        }
    }
    if !changed {
        return match txn.abort() {
            Ok(()) => Outcome::Unchanged,
            Err(error) => Outcome::Failed(error.into()),
        };
    }
    match txn.commit() {
        Ok(()) => Outcome::Committed,
        Err(error) => {
            Outcome::Failed(anyhow::Error::from(error).context("committing the state file"))
        }
    }
}

/// Answers every write of `batch` with `error` (anyhow errors do not clone: the others get
/// its text).
fn fail_all(batch: Vec<Box<dyn Write>>, error: anyhow::Error) {
    let message = format!("{error:#}");
    let mut error = Some(error);
    for write in batch {
        let error = error.take().unwrap_or_else(|| anyhow!("{message}"));
        write.finish(Err(error));
    }
}

/// Applies one write in a transaction of its own; returns whether it committed.
fn apply_alone(
    database: &Database,
    write: &mut dyn Write,
    durability: Durability,
) -> anyhow::Result<bool> {
    let txn = begin(database, durability)?;
    if write.apply(&txn)? {
        txn.commit()?;
        Ok(true)
    } else {
        txn.abort()?;
        Ok(false)
    }
}

fn empty_durable_commit(database: &Database) -> anyhow::Result<()> {
    begin(database, Durability::Immediate)?
        .commit()
        .context("committing the state file")
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::{ReadableDatabase as _, TableDefinition};

    const TABLE: TableDefinition<&str, u64> = TableDefinition::new("test");

    fn open(dir: &tempfile::TempDir) -> (Arc<Database>, WriteQueue) {
        let database = Arc::new(Database::create(dir.path().join("state.redb")).unwrap());
        let queue = WriteQueue::start(&database).unwrap();
        (database, queue)
    }

    async fn put(queue: &WriteQueue, key: &'static str, value: u64) {
        queue
            .write(move |txn| {
                txn.open_table(TABLE)?.insert(key, value)?;
                Ok(((), true))
            })
            .await
            .unwrap();
    }

    fn read(database: &Database, key: &str) -> Option<u64> {
        let txn = database.begin_read().unwrap();
        let table = txn.open_table(TABLE).unwrap();
        table.get(key).unwrap().map(|value| value.value())
    }

    fn pending(queue: &WriteQueue) -> bool {
        queue.queue.undurable.load(Ordering::Acquire)
    }

    #[tokio::test]
    async fn a_write_is_visible_at_once_and_durable_after_a_barrier() {
        let dir = tempfile::tempdir().unwrap();
        let (database, queue) = open(&dir);
        put(&queue, "a", 1).await;
        assert_eq!(read(&database, "a"), Some(1));
        assert!(pending(&queue), "a write alone is committed without fsync");
        durable_barrier().await.unwrap();
        assert!(!pending(&queue));
        // Nothing pending: the barrier returns without a commit.
        durable_barrier().await.unwrap();
    }

    #[tokio::test]
    async fn with_nobody_waiting_the_writer_makes_its_commits_durable_by_itself() {
        let dir = tempfile::tempdir().unwrap();
        let (_database, queue) = open(&dir);
        put(&queue, "a", 1).await;
        tokio::time::sleep(IDLE_SYNC * 4).await;
        assert!(!pending(&queue));
    }

    #[tokio::test]
    async fn a_failing_write_fails_alone_and_the_others_of_its_batch_stand() {
        let dir = tempfile::tempdir().unwrap();
        let (database, queue) = open(&dir);
        let writes: Vec<_> = (0..20u64)
            .map(|n| {
                let queue = queue.clone();
                tokio::spawn(async move {
                    queue
                        .write(move |txn| {
                            let key = format!("k{n}");
                            txn.open_table(TABLE)?.insert(key.as_str(), n)?;
                            anyhow::ensure!(n != 7, "write 7 fails");
                            Ok(((), true))
                        })
                        .await
                })
            })
            .collect();
        for (n, write) in writes.into_iter().enumerate() {
            let outcome = write.await.unwrap();
            assert_eq!(outcome.is_err(), n == 7, "write {n}: {outcome:?}");
        }
        for n in 0..20u64 {
            let expected = (n != 7).then_some(n);
            assert_eq!(read(&database, &format!("k{n}")), expected);
        }
    }
}
