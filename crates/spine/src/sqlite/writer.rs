//! The writer and its group commit.
//!
//! Appenders encode their events on their own threads and queue a request here. One appender at
//! a time (the leader, see [`GroupCommit`]) takes every request already queued (up to a cap) and
//! commits them all in one transaction: one WAL write and one fsync for the whole group. While it
//! waits on the fsync, new requests queue up and form the next group, so throughput grows with the
//! number of concurrent appenders while a lone appender still pays exactly one fsync, on its own
//! thread.

use super::Durability;
use super::schema::map_err;
use crate::error::SpineError;
use crate::log::AppendAck;
use crate::side::{Appended, SideWrite};
use keel_core::ExecId;
use rusqlite::{Connection, OptionalExtension};
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, TryLockError};
use tokio::sync::{Notify, oneshot, watch};

/// Most requests committed together; bounds one transaction's size and latency.
const MAX_GROUP_REQUESTS: usize = 1024;
/// Most events committed together.
const MAX_GROUP_EVENTS: usize = 16_384;

/// One append call on its way to the writer.
pub(super) struct AppendRequest {
    pub exec_id: ExecId,
    pub exec_key: String,
    pub tenant: String,
    pub expected_seq: u64,
    pub ends: bool,
    /// Must be durable when acknowledged (otherwise it may ride on a later durable commit).
    pub durable: bool,
    /// Number of events in the batch (0: a request of side writes only).
    pub len: u64,
    /// The batch, already encoded by the appender as a JSON array of events.
    pub body: String,
    /// Written in the same transaction once the events are accepted (see [`crate::side`]).
    pub side: Vec<SideWrite>,
    /// The lease epoch the append is fenced by (`None`: unfenced; see `super::leases`).
    pub fence: Option<u64>,
    pub reply: oneshot::Sender<Result<Appended, SpineError>>,
}

/// What the writer knows about an execution without asking SQLite.
#[derive(Clone)]
struct ExecInfo {
    tenant: String,
    last_seq: u64,
    ended: bool,
}

/// The writer's memory of the store, valid only while no other connection has written: SQLite's
/// `data_version` changes exactly when another connection commits, and then the cache is dropped.
#[derive(Default)]
struct Cache {
    data_version: Option<i64>,
    head: Option<u64>,
    execs: HashMap<String, ExecInfo>,
}

/// Forget everything past this many cached executions (ended ones are dropped as they end).
const MAX_CACHED_EXECS: usize = 100_000;

/// Counters of the writer's work, for benchmarks and metrics: `requests / groups` is the
/// group-commit factor (appends per fsync).
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Transactions committed (one fsync each with full durability).
    pub groups: AtomicU64,
    /// Append requests committed.
    pub requests: AtomicU64,
    /// Events committed.
    pub events: AtomicU64,
    /// First offset of the oldest commit that is not yet durable (0 when all are): readers of
    /// this handle see nothing from here on until a durable commit flushes it.
    pub buffered_from: AtomicU64,
}

/// The writer: the write connection and what it remembers. Whoever holds its lock commits for
/// every appender queued (see [`GroupCommit`]).
pub(super) struct Writer {
    conn: Connection,
    path: PathBuf,
    durability: Durability,
    /// The connection's current `synchronous` setting.
    synchronous: &'static str,
    cache: Cache,
    head: watch::Sender<u64>,
    stats: Arc<WriterStats>,
    /// Small blobs to write with the next group (see `super::blobs`).
    staged: Arc<super::blobs::Staged>,
}

impl Writer {
    pub(super) fn new(
        conn: Connection,
        path: PathBuf,
        durability: Durability,
        head: watch::Sender<u64>,
        stats: Arc<WriterStats>,
        staged: Arc<super::blobs::Staged>,
    ) -> Self {
        let synchronous = match durability {
            Durability::Full => "FULL",
            Durability::Off => "OFF",
        };
        Self {
            conn,
            path,
            durability,
            synchronous,
            cache: Cache::default(),
            head,
            stats,
            staged,
        }
    }

    /// Commits one group and answers every appender in it.
    fn commit(&mut self, group: Vec<AppendRequest>) {
        let (conn, path, stats) = (&self.conn, self.path.as_path(), &*self.stats);
        // A group is fsynced if any request in it must be durable; then everything before it is
        // durable too. Otherwise it commits without an fsync (NORMAL: the WAL is still synced
        // before any checkpoint, so a later durable commit covers it).
        let durable = group.iter().any(|r| r.durable);
        let wanted = match (self.durability, durable) {
            (Durability::Off, _) => "OFF",
            (Durability::Full, true) => "FULL",
            (Durability::Full, false) => "NORMAL",
        };
        if wanted != self.synchronous
            && conn
                .execute_batch(&format!("PRAGMA synchronous = {wanted}"))
                .is_ok()
        {
            self.synchronous = wanted;
        }
        let results = commit_group(conn, path, &group, &mut self.cache, &self.staged);
        let first_ok = results
            .iter()
            .filter_map(|r| r.as_ref().ok().and_then(|a| a.ack).map(|a| a.first_offset))
            .min();
        match (self.synchronous, first_ok) {
            ("NORMAL", Some(first)) => {
                let _ = stats.buffered_from.compare_exchange(
                    0,
                    first,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
            }
            ("FULL", Some(_)) => stats.buffered_from.store(0, Ordering::Release),
            _ => {}
        }
        let newest = results
            .iter()
            .filter_map(|r| r.as_ref().ok().and_then(|a| a.ack).map(|a| a.last_offset))
            .max();
        // A group of side writes only commits too (and counts): it has no offsets.
        if results.iter().any(Result::is_ok) {
            let (mut n_req, mut n_ev) = (0, 0);
            for (req, r) in group.iter().zip(&results) {
                if r.is_ok() {
                    n_req += 1;
                    n_ev += req.len;
                }
            }
            stats.groups.fetch_add(1, Ordering::Relaxed);
            stats.requests.fetch_add(n_req, Ordering::Relaxed);
            stats.events.fetch_add(n_ev, Ordering::Relaxed);
        }
        if let Some(offset) = newest {
            self.head.send_if_modified(|h| {
                let newer = offset > *h;
                *h = (*h).max(offset);
                newer
            });
        }
        for (req, result) in group.into_iter().zip(results) {
            // The appender may have given up waiting; its events are committed regardless.
            let _ = req.reply.send(result);
        }
    }
}

/// Group commit without a writer thread (leader/follower): an appender queues its request and
/// tries the writer's lock. The one that gets it (the leader) takes everything queued, commits
/// it in one transaction on its own thread and answers every request in it; the others (the
/// followers) wait for their answer. Requests that arrive during the commit form the next group:
/// the leader, once done, hands the turn to one waiting follower, which leads the next group.
/// A lone appender thus commits on its own thread, with no hand-off to another thread and back,
/// and concurrent appenders still share one fsync per group.
pub(super) struct GroupCommit {
    queue: Mutex<VecDeque<AppendRequest>>,
    writer: Mutex<Writer>,
    /// Given to a waiting follower when a leader leaves requests queued.
    turn: Notify,
}

impl GroupCommit {
    pub(super) fn new(writer: Writer) -> Self {
        Self {
            queue: Mutex::new(VecDeque::new()),
            writer: Mutex::new(writer),
            turn: Notify::new(),
        }
    }

    /// Queues `request`, commits (if no other appender is committing) and waits for the answer.
    pub(super) async fn append(
        &self,
        request: AppendRequest,
        mut answer: oneshot::Receiver<Result<Appended, SpineError>>,
    ) -> Result<Appended, SpineError> {
        self.queue
            .lock()
            .map_err(|_| SpineError::Closed)?
            .push_back(request);
        self.lead();
        loop {
            tokio::select! {
                biased;
                answer = &mut answer => return answer.map_err(|_| SpineError::Closed)?,
                () = self.turn.notified() => self.lead(),
            }
        }
    }

    /// Commits one group if the writer is free and anything is queued; hands the turn on if
    /// requests are left.
    pub(super) fn lead(&self) {
        let mut writer = match self.writer.try_lock() {
            Ok(w) => w,
            Err(TryLockError::WouldBlock) => return,
            // A panic mid-commit: what the writer remembers may be wrong, so forget it.
            Err(TryLockError::Poisoned(p)) => {
                let mut w = p.into_inner();
                w.cache = Cache::default();
                self.writer.clear_poison();
                w
            }
        };
        let group = self.take_group();
        if !group.is_empty() {
            blocking(|| writer.commit(group));
        }
        drop(writer);
        // Checked after the lock is released: a request queued before this saw the lock held,
        // so its appender waits for the turn.
        if self.queue.lock().is_ok_and(|q| !q.is_empty()) {
            self.turn.notify_one();
        }
    }

    /// Commits everything queued (when the store closes).
    pub(super) fn flush(&self) {
        while self.queue.lock().is_ok_and(|q| !q.is_empty()) {
            if self.writer.try_lock().is_err() {
                return;
            }
            self.lead();
        }
    }

    fn take_group(&self) -> Vec<AppendRequest> {
        let Ok(mut queue) = self.queue.lock() else {
            return Vec::new();
        };
        let mut group = Vec::new();
        let mut events = 0usize;
        while group.len() < MAX_GROUP_REQUESTS && events < MAX_GROUP_EVENTS {
            let Some(req) = queue.pop_front() else { break };
            events += req.len as usize;
            group.push(req);
        }
        group
    }
}

/// Runs `f`, which blocks on the disk, without stalling the async runtime: on a multi-threaded
/// runtime the worker's other tasks move to another thread meanwhile; a current-thread runtime
/// (tests, small tools) has nothing else to run.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

fn exec_sql(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// Commits a group in one transaction. Conflicts and refusals are decided before anything is
/// written, so they never disturb the rest of the group; a storage error fails the whole group
/// (nothing of it is committed) and every appender in it sees the error and may retry.
fn commit_group(
    conn: &Connection,
    path: &Path,
    group: &[AppendRequest],
    cache: &mut Cache,
    staged: &super::blobs::Staged,
) -> Vec<Result<Appended, SpineError>> {
    if let Err(e) = exec_sql(conn, "BEGIN IMMEDIATE") {
        let e = map_err(path, "starting a transaction", e);
        return group.iter().map(|_| Err(same_error(path, &e))).collect();
    }
    // Taken inside the write lock: a request in this group was queued after the blobs it
    // references were staged, so they are here or in a group committed before this one.
    let blobs = staged.take();
    let written = super::blobs::write_staged(conn, path, &blobs)
        .and_then(|()| write_group(conn, path, group, cache));
    let rollback = |blobs| {
        staged.restore(blobs);
        let _ = exec_sql(conn, "ROLLBACK");
    };
    match written {
        Ok(results) => match exec_sql(conn, "COMMIT") {
            Ok(()) => {
                for (req, result) in group.iter().zip(&results) {
                    if let Ok(Appended { ack: Some(ack), .. }) = result {
                        remember(cache, req, ack.last_seq);
                    }
                }
                results
            }
            Err(e) => {
                rollback(blobs);
                *cache = Cache::default();
                let e = map_err(path, "committing", e);
                group.iter().map(|_| Err(same_error(path, &e))).collect()
            }
        },
        Err(e) => {
            rollback(blobs);
            *cache = Cache::default();
            group.iter().map(|_| Err(same_error(path, &e))).collect()
        }
    }
}

fn same_error(path: &Path, e: &SpineError) -> SpineError {
    match e {
        SpineError::Corrupt { path, detail } => SpineError::Corrupt {
            path: path.clone(),
            detail: detail.clone(),
        },
        other => SpineError::Storage {
            context: "committing a group",
            path: path.to_owned(),
            detail: other.to_string(),
        },
    }
}

fn remember(cache: &mut Cache, req: &AppendRequest, last_seq: u64) {
    if req.ends {
        cache.execs.remove(&req.exec_key);
        return;
    }
    if cache.execs.len() >= MAX_CACHED_EXECS {
        cache.execs.clear();
    }
    cache.execs.insert(
        req.exec_key.clone(),
        ExecInfo {
            tenant: req.tenant.clone(),
            last_seq,
            ended: false,
        },
    );
}

fn write_group(
    conn: &Connection,
    path: &Path,
    group: &[AppendRequest],
    cache: &mut Cache,
) -> Result<Vec<Result<Appended, SpineError>>, SpineError> {
    let err = |c| move |e| map_err(path, c, e);
    let version: i64 = conn
        .prepare_cached("PRAGMA data_version")
        .and_then(|mut s| s.query_row([], |r| r.get(0)))
        .map_err(err("reading data_version"))?;
    if cache.data_version != Some(version) {
        *cache = Cache {
            data_version: Some(version),
            ..Cache::default()
        };
    }
    // Offsets are assigned here, inside the write lock, so they follow commit order even when
    // several processes share the file.
    let mut next_offset = match cache.head {
        Some(h) => h + 1,
        None => {
            conn.prepare_cached(
                "SELECT last_offset FROM batches ORDER BY first_offset DESC LIMIT 1",
            )
            .and_then(|mut s| s.query_row([], |r| r.get::<_, u64>(0)).optional())
            .map_err(err("reading the head offset"))?
            .unwrap_or(0)
                + 1
        }
    };
    let mut results = Vec::with_capacity(group.len());
    // Seqs appended earlier in this same group, so two requests for one execution chain.
    let mut pending: HashMap<&str, ExecInfo> = HashMap::new();
    for req in group {
        if req.len == 0 {
            // Side writes only: no execution to check, no batch to insert.
            let answers = super::side::apply(conn, path, &req.side)?;
            results.push(Ok(Appended { ack: None, answers }));
            continue;
        }
        let known = match pending
            .get(req.exec_key.as_str())
            .or(cache.execs.get(&req.exec_key))
        {
            Some(info) => Some(info.clone()),
            None => lookup(conn, path, &req.exec_key)?,
        };
        // A fenced append (a worker driving under a lease) is refused if a newer epoch holds
        // the execution, before anything else: that worker must stop, not retry.
        if let Some(epoch) = req.fence
            && let Some(lost) = super::leases::fence(conn, path, req.exec_id, &req.exec_key, epoch)?
        {
            results.push(Err(lost));
            continue;
        }
        if let Err(refusal) = check(req, known.as_ref()) {
            results.push(Err(refusal));
            continue;
        }
        let first_offset = next_offset;
        let ack = insert(conn, path, req, first_offset, known.is_none())?;
        let answers = super::side::apply(conn, path, &req.side)?;
        next_offset = ack.last_offset + 1;
        pending.insert(
            &req.exec_key,
            ExecInfo {
                tenant: req.tenant.clone(),
                last_seq: ack.last_seq,
                ended: req.ends,
            },
        );
        results.push(Ok(Appended {
            ack: Some(ack),
            answers,
        }));
    }
    cache.head = Some(next_offset - 1);
    Ok(results)
}

fn lookup(conn: &Connection, path: &Path, exec_key: &str) -> Result<Option<ExecInfo>, SpineError> {
    let err = |c| move |e| map_err(path, c, e);
    let stored: Option<(String, bool)> = conn
        .prepare_cached("SELECT tenant, ended FROM executions WHERE exec_id = ?1")
        .and_then(|mut s| {
            s.query_row([exec_key], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .map_err(err("reading the execution"))?;
    let Some((tenant, ended)) = stored else {
        return Ok(None);
    };
    let last_seq = conn
        .prepare_cached("SELECT coalesce(max(last_seq), 0) FROM batches WHERE exec_id = ?1")
        .and_then(|mut s| s.query_row([exec_key], |r| r.get(0)))
        .map_err(err("reading the execution's last seq"))?;
    Ok(Some(ExecInfo {
        tenant,
        last_seq,
        ended,
    }))
}

fn check(req: &AppendRequest, known: Option<&ExecInfo>) -> Result<(), SpineError> {
    let actual_seq = known.map_or(0, |i| i.last_seq);
    if actual_seq != req.expected_seq {
        return Err(SpineError::Conflict {
            exec_id: req.exec_id,
            expected_seq: req.expected_seq,
            actual_seq,
        });
    }
    let refuse = |detail: &str| SpineError::InvalidAppend {
        exec_id: req.exec_id,
        detail: detail.into(),
    };
    match known {
        Some(i) if i.tenant != req.tenant => Err(refuse("the execution belongs to another tenant")),
        Some(i) if i.ended => Err(refuse(
            "the execution has ended; nothing may follow its last event",
        )),
        _ => Ok(()),
    }
}

fn insert(
    conn: &Connection,
    path: &Path,
    req: &AppendRequest,
    first_offset: u64,
    new_exec: bool,
) -> Result<AppendAck, SpineError> {
    let err = |c| move |e| map_err(path, c, e);
    let last_offset = first_offset + req.len - 1;
    let last_seq = req.expected_seq + req.len;
    conn.prepare_cached(
        "INSERT INTO batches (first_offset, last_offset, exec_id, first_seq, last_seq, body)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .and_then(|mut s| {
        s.execute((
            first_offset,
            last_offset,
            &req.exec_key,
            req.expected_seq + 1,
            last_seq,
            &req.body,
        ))
    })
    .map_err(err("inserting a batch"))?;
    if new_exec {
        conn.prepare_cached("INSERT INTO executions (exec_id, tenant, ended) VALUES (?1, ?2, ?3)")
            .and_then(|mut s| s.execute((&req.exec_key, &req.tenant, req.ends)))
            .map_err(err("recording the execution"))?;
    } else if req.ends {
        conn.prepare_cached("UPDATE executions SET ended = 1 WHERE exec_id = ?1")
            .and_then(|mut s| s.execute([&req.exec_key]))
            .map_err(err("recording the execution's end"))?;
    }
    Ok(AppendAck {
        first_offset,
        last_offset,
        last_seq,
        // A point read of the local file costs the caller less than carrying it here.
        control_seq: None,
    })
}
