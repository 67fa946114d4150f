//! The `EventLog` contract: what every spine backend guarantees.
//!
//! Guarantees (checked by the `conformance` suite, behind that feature, for every backend):
//! 1. **Durable on return.** An `append` that returned `Ok` survives a crash of the process (and,
//!    with full durability, of the machine).
//! 2. **Atomic.** An append's events are all stored or none is.
//! 3. **Gapless, conditional.** Seqs of an execution are 1, 2, 3, …; `append(exec, expected_seq,
//!    events)` succeeds only if the stored last seq is `expected_seq`, so two writers can never
//!    both win a seq; the loser gets [`SpineError::Conflict`].
//! 4. **One global order.** Every committed event has a global offset (1-based, increasing, with
//!    gaps allowed); `read_all` and `subscribe` deliver events in offset order, each exactly once,
//!    and never return an offset before a lower one that is still to commit: a reader's position
//!    (the last offset it was given, plus one) is a checkpoint no later commit lands behind.
//!
//! Shaped for a partitioned backend (Kafka): per-execution order is what appends rely on, and the
//! global offset is the consumer's checkpoint.

use crate::error::SpineError;
use async_trait::async_trait;
use futures::stream::BoxStream;
use keel_core::{Event, ExecId, TenantId};

/// A committed event with its global offset.
#[derive(Clone, Debug, PartialEq)]
pub struct Committed {
    /// Global position, 1-based, increasing in the order every reader is given (commit order on
    /// SQLite; on PostgreSQL the order of the appending transactions' ids). Not dense.
    pub offset: u64,
    /// The event.
    pub event: Event,
}

/// What an append committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendAck {
    /// Offset of the first event of the batch.
    pub first_offset: u64,
    /// Offset of the last event of the batch.
    pub last_offset: u64,
    /// The execution's last seq after the append.
    pub last_seq: u64,
    /// The control stream's last seq read right after the append committed, if the backend
    /// reads it on the way back (PostgreSQL, in the same round trip): a caller that checks the
    /// kill-switches right after its append needs no read of its own while it has not moved.
    pub control_seq: Option<u64>,
}

/// An execution that has not ended, for resume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecSummary {
    /// The execution.
    pub exec_id: ExecId,
    /// Its tenant.
    pub tenant: TenantId,
    /// Its last stored seq.
    pub last_seq: u64,
}

/// The spine. See the module documentation for the guarantees.
#[async_trait]
pub trait EventLog: Send + Sync {
    /// Appends `events` (seqs `expected_seq + 1 ..`) to `exec_id`, iff its last stored seq is
    /// `expected_seq`. Durable when it returns `Ok`.
    async fn append(
        &self,
        exec_id: ExecId,
        expected_seq: u64,
        events: &[Event],
    ) -> Result<AppendAck, SpineError>;

    /// Like [`EventLog::append`] (same conditions, same order), but may return before the
    /// events are durable: they are committed, later appends build on them, and they become
    /// durable with the next durable append, which makes everything before it durable too.
    /// Readers and subscribers see them only once they are durable. For steps whose loss in a
    /// machine crash costs only a re-run (read-only work); backends without a cheaper path
    /// simply append durably.
    async fn append_buffered(
        &self,
        exec_id: ExecId,
        expected_seq: u64,
        events: &[Event],
    ) -> Result<AppendAck, SpineError> {
        self.append(exec_id, expected_seq, events).await
    }

    /// The execution's events with `seq >= from_seq`, in seq order (empty if unknown).
    async fn read(&self, exec_id: ExecId, from_seq: u64) -> Result<Vec<Event>, SpineError>;

    /// The whole log (from seq 1) of each of `exec_ids`, in the order asked, empty for an
    /// unknown one: what a worker resuming thousands of executions reads in one round trip per
    /// batch instead of one per execution. The default reads them one by one.
    async fn read_many(&self, exec_ids: &[ExecId]) -> Result<Vec<Vec<Event>>, SpineError> {
        let mut out = Vec::with_capacity(exec_ids.len());
        for &exec_id in exec_ids {
            out.push(self.read(exec_id, 1).await?);
        }
        Ok(out)
    }

    /// The execution's first event (its `exec.started`), without reading the rest: what a worker
    /// needs to pick the strategy of each of thousands of executions it resumes. The default
    /// reads them all.
    async fn read_first(&self, exec_id: ExecId) -> Result<Option<Event>, SpineError> {
        Ok(self.read(exec_id, 1).await?.into_iter().next())
    }

    /// True if the execution has committed events with a seq above `seq`: a cheap check before
    /// [`EventLog::read`] for callers that poll a stream they have already folded. It may count
    /// events `read` does not show yet (buffered appends not yet durable), never miss one that
    /// `read` would show. The default simply reads.
    async fn appended_after(&self, exec_id: ExecId, seq: u64) -> Result<bool, SpineError> {
        Ok(!self.read(exec_id, seq + 1).await?.is_empty())
    }

    /// Up to `limit` committed events with `offset >= from_offset`, in offset order; never one
    /// past a lower offset still to commit.
    async fn read_all(&self, from_offset: u64, limit: usize) -> Result<Vec<Committed>, SpineError>;

    /// Every committed event with `offset >= from_offset`, in offset order, then each new one as
    /// it becomes readable. The stream ends only after yielding an error.
    fn subscribe(&self, from_offset: u64) -> BoxStream<'static, Result<Committed, SpineError>>;

    /// Executions with no terminal event (`exec.finished`, `exec.cancelled`) yet.
    async fn list_unfinished(&self) -> Result<Vec<ExecSummary>, SpineError>;

    /// Links an execution to a data subject before its first append, so its personal fields are
    /// sealed under the subject's key (see [`crate::shred`]). Backends without crypto-shredding
    /// refuse, rather than store personal data they could not erase.
    async fn link_subject(
        &self,
        exec_id: ExecId,
        _tenant: &str,
        _subject: &str,
    ) -> Result<(), SpineError> {
        Err(SpineError::InvalidAppend {
            exec_id,
            detail: "this spine backend cannot link executions to data subjects".into(),
        })
    }

    /// The data subject an execution is linked to (`None` if none, or erased).
    async fn subject_of(&self, _exec_id: ExecId) -> Result<Option<String>, SpineError> {
        Ok(None)
    }

    /// The store that [`EventLog::append_with`]'s side writes go to (the SQLite file), or `None`
    /// when this backend cannot carry them (the default). A ledger or rate store whose
    /// `side_store` is the same may hand its writes to this log's appends.
    fn side_store(&self) -> Option<&std::path::Path> {
        None
    }

    /// Like [`EventLog::append`] (or [`EventLog::append_buffered`] when `durable` is false),
    /// with `side` applied in the same transaction (see [`crate::side::SideWrite`] for the
    /// rules). Ledger writes make the commit durable whatever `durable` says. Backends without
    /// side writes refuse.
    async fn append_with(
        &self,
        exec_id: ExecId,
        _expected_seq: u64,
        _events: &[Event],
        _side: Vec<crate::side::SideWrite>,
        _durable: bool,
    ) -> Result<crate::side::Appended, SpineError> {
        Err(SpineError::InvalidAppend {
            exec_id,
            detail: "this spine backend cannot carry side writes".into(),
        })
    }
}

/// Checks the shape of a batch before it reaches storage: non-empty, one execution, one tenant,
/// seqs `expected_seq + 1 ..` without gaps. Shared by every backend so they refuse alike.
pub fn validate_batch(
    exec_id: ExecId,
    expected_seq: u64,
    events: &[Event],
) -> Result<(), SpineError> {
    let bad = |detail: String| SpineError::InvalidAppend { exec_id, detail };
    let first = events.first().ok_or_else(|| bad("empty batch".into()))?;
    for (i, e) in events.iter().enumerate() {
        if e.exec_id != exec_id {
            return Err(bad(format!("event {i} belongs to execution {}", e.exec_id)));
        }
        if e.tenant != first.tenant {
            return Err(bad(format!(
                "event {i} has tenant {:?}, the batch's first has {:?}",
                e.tenant.as_str(),
                first.tenant.as_str()
            )));
        }
        let want = expected_seq + 1 + i as u64;
        if e.seq != want {
            return Err(bad(format!("event {i} has seq {}, expected {want}", e.seq)));
        }
    }
    Ok(())
}

/// Events per read while a subscription catches up.
const FOLLOW_BATCH: usize = 512;

/// A subscription from `from_offset` on over `log`'s `read_all`: it reads in batches, and at the
/// head waits until `head` (the highest committed offset the backend has seen) moves or `poll`
/// passes, whichever comes first, so a missed wake-up costs at most one poll. A backend whose
/// readers stop below a transaction still running (PostgreSQL) may announce a commit it does not
/// return yet: after a wake-up (or while `head` is past the position) that read nothing, the
/// subscription reads again after a short wait, doubling up to `poll`, since what ends the older
/// transaction may announce nothing. The stream ends after its first error.
pub(crate) fn follow<L: EventLog + Clone + 'static>(
    log: L,
    head: tokio::sync::watch::Receiver<u64>,
    poll: std::time::Duration,
    from_offset: u64,
) -> BoxStream<'static, Result<Committed, SpineError>> {
    use futures::StreamExt;
    struct Sub<L> {
        log: L,
        next: u64,
        buffer: std::collections::VecDeque<Committed>,
        head: tokio::sync::watch::Receiver<u64>,
        /// A commit was announced and not read yet.
        announced: bool,
        /// The wait before reading again while an announced commit is not readable yet.
        retry: std::time::Duration,
        failed: bool,
    }
    let sub = Sub {
        log,
        next: from_offset.max(1),
        buffer: Default::default(),
        head,
        announced: false,
        retry: std::time::Duration::ZERO,
        failed: false,
    };
    futures::stream::unfold(sub, move |mut sub| async move {
        if sub.failed {
            return None;
        }
        loop {
            if let Some(c) = sub.buffer.pop_front() {
                return Some((Ok(c), sub));
            }
            sub.head.mark_unchanged();
            match sub.log.read_all(sub.next, FOLLOW_BATCH).await {
                Err(e) => {
                    sub.failed = true;
                    return Some((Err(e), sub));
                }
                Ok(batch) if batch.is_empty() => {
                    let wait = if sub.announced || *sub.head.borrow() >= sub.next {
                        let first = std::time::Duration::from_millis(1);
                        sub.retry = (sub.retry * 2).clamp(first, poll);
                        // Past `poll` it is plain polling again.
                        sub.announced &= sub.retry < poll;
                        sub.retry
                    } else {
                        poll
                    };
                    tokio::select! {
                        changed = sub.head.changed() => {
                            sub.announced = changed.is_ok();
                            sub.retry = std::time::Duration::ZERO;
                        }
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
                Ok(batch) => {
                    sub.announced = false;
                    sub.retry = std::time::Duration::ZERO;
                    sub.next = batch.last().map_or(sub.next, |c| c.offset + 1);
                    sub.buffer.extend(batch);
                }
            }
        }
    })
    .boxed()
}
