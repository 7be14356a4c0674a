//! Group commit for the embedded state file: the writes of concurrent callers (key-value
//! stores, event queue, timers) wait in one queue, and a single writer thread applies
//! everything queued in one redb transaction with one fsync.
//!
//! Each caller is answered only once the transaction holding its write has been committed
//! (`Durability::Immediate`: fsync before `commit` returns), so an acknowledged write still
//! survives a SIGKILL. The writes of a batch are applied one after the other in queue order,
//! each seeing the effects of the earlier ones, which keeps compare-and-swap, increment and
//! the queue's sequence numbers atomic exactly as with one transaction per write.
//!
//! A write that fails (a guest's increment of a non-number, a storage error, a panic) may have
//! changed tables before failing, and redb cannot roll back part of a transaction: the batch
//! is then discarded and its writes are applied again one transaction each, so only the
//! failing caller sees the error. Writes are closures that can run more than once for this.
//!
//! No batching delay: while the writer commits one batch (the fsync is most of it), the next
//! one queues, so batches grow with the load by themselves.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::sync::{Arc, Weak};

use anyhow::{anyhow, Context as _};
use redb::{Database, WriteTransaction};
use tokio::sync::oneshot;

/// Writes per transaction at most: bounds what a failing write makes the writer redo.
const MAX_BATCH: usize = 256;

/// The queue of one open state file. Cheap to clone; the writer thread stops when the last
/// clone is dropped.
#[derive(Clone)]
pub struct WriteQueue {
    jobs: mpsc::Sender<Box<dyn Job>>,
}

impl WriteQueue {
    /// Starts the writer thread of `database`. It holds the database only while it writes, so
    /// dropping the last other handle closes the file (and it can be opened again at once).
    pub fn start(database: &Arc<Database>) -> anyhow::Result<Self> {
        let (jobs, queue) = mpsc::channel();
        let database = Arc::downgrade(database);
        std::thread::Builder::new()
            .name("state-writer".into())
            .spawn(move || write_batches(&database, &queue))
            .context("starting the state file's writer thread")?;
        Ok(Self { jobs })
    }

    /// Applies `op` to a write transaction and returns its result once that transaction is
    /// durable. `op` returns `(result, changed)`: a batch in which nothing changed is not
    /// committed (no fsync for a compare-and-swap that did not match).
    ///
    /// `op` may run more than once (see the module docs); only its last run's result counts.
    pub async fn write<R, F>(&self, op: F) -> anyhow::Result<R>
    where
        R: Send + 'static,
        F: FnMut(&WriteTransaction) -> anyhow::Result<(R, bool)> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Box::new(Write {
                op,
                result: None,
                reply,
            }))
            .map_err(|_| anyhow!("the state file's writer has stopped"))?;
        answer
            .await
            .map_err(|_| anyhow!("the state file's writer has stopped"))?
    }
}

/// A queued write with its caller's reply.
trait Job: Send {
    /// Runs the write in `txn`, keeping its result for [`finish`](Self::finish); returns
    /// whether it changed anything.
    fn apply(&mut self, txn: &WriteTransaction) -> anyhow::Result<bool>;

    /// Answers the caller: the kept result if `committed` is `Ok`, else that error.
    fn finish(self: Box<Self>, committed: anyhow::Result<()>);
}

struct Write<F, R> {
    op: F,
    result: Option<R>,
    reply: oneshot::Sender<anyhow::Result<R>>,
}

impl<F, R> Job for Write<F, R>
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
        let Write { result, reply, .. } = *self;
        let answer = committed.and_then(|()| result.context("write was never applied"));
        // The caller may have gone (its request was cancelled): nothing to answer then.
        let _ = reply.send(answer);
    }
}

fn write_batches(database: &Weak<Database>, queue: &mpsc::Receiver<Box<dyn Job>>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let Some(open) = database.upgrade() else {
            fail_all(batch, anyhow!("the state file is closed"));
            continue;
        };
        let outcome = apply_together(&open, &mut batch);
        let alone: Vec<_> = if matches!(outcome, Outcome::RetryAlone) {
            batch
                .iter_mut()
                .map(|job| apply_alone(&open, job.as_mut()))
                .collect()
        } else {
            Vec::new()
        };
        // Before answering: a caller that drops the last handle next must find the file closed.
        drop(open);
        match outcome {
            Outcome::Committed => batch.into_iter().for_each(|job| job.finish(Ok(()))),
            Outcome::Failed(error) => fail_all(batch, error),
            Outcome::RetryAlone => {
                for (job, outcome) in batch.into_iter().zip(alone) {
                    job.finish(outcome);
                }
            }
        }
    }
}

enum Outcome {
    /// Durable (or nothing changed): every job's result stands.
    Committed,
    /// Nothing of the batch is durable, for this reason.
    Failed(anyhow::Error),
    /// A write of a batch of several failed: the transaction was dropped uncommitted.
    RetryAlone,
}

/// Applies every job of `batch` in one transaction and commits it if any changed something.
fn apply_together(database: &Database, batch: &mut [Box<dyn Job>]) -> Outcome {
    let several = batch.len() > 1;
    let txn = match database.begin_write() {
        Ok(txn) => txn,
        Err(error) => return Outcome::Failed(error.into()),
    };
    let mut changed = false;
    for job in batch.iter_mut() {
        match job.apply(&txn) {
            Ok(job_changed) => changed |= job_changed,
            Err(_) if several => return Outcome::RetryAlone,
            // A write alone gets its own error as it is.
            Err(error) => return Outcome::Failed(error),
        }
    }
    let finished = if changed {
        txn.commit()
            .map_err(|error| anyhow::Error::from(error).context("committing the state file"))
    } else {
        txn.abort().map_err(anyhow::Error::from)
    };
    match finished {
        Ok(()) => Outcome::Committed,
        Err(error) => Outcome::Failed(error),
    }
}

/// Answers every job of `batch` with `error` (anyhow errors do not clone: the others get its
/// text).
fn fail_all(batch: Vec<Box<dyn Job>>, error: anyhow::Error) {
    let message = format!("{error:#}");
    let mut error = Some(error);
    for job in batch {
        let error = error.take().unwrap_or_else(|| anyhow!("{message}"));
        job.finish(Err(error));
    }
}

/// Applies one job in a transaction of its own.
fn apply_alone(database: &Database, job: &mut dyn Job) -> anyhow::Result<()> {
    let txn = database.begin_write()?;
    if job.apply(&txn)? {
        txn.commit()?;
    } else {
        txn.abort()?;
    }
    Ok(())
}
