//! The embedded spine backend: one SQLite file (WAL, `synchronous=FULL` by default).
//!
//! Writes go through one writer thread with group commit ([`writer`]); reads use a small pool of
//! read-only connections on blocking threads; a checkpointer thread folds the WAL back into the
//! main file off the commit path. Several processes may open the same file: SQLite's write lock
//! serialises their groups, and the conditional append stays correct because the expected seq
//! is checked inside the write transaction.

mod schema;
mod writer;

use crate::error::SpineError;
use crate::log::{AppendAck, Committed, EventLog, ExecSummary, validate_batch};
use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt};
use keel_core::{Event, ExecId, TenantId};
use rusqlite::Connection;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::{oneshot, watch};

pub use schema::{APPLICATION_ID, latest_version};

/// How durable a returned append is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Durability {
    /// fsync on every commit (`synchronous=FULL`): survives power loss. The default.
    #[default]
    Full,
    /// No fsync (`synchronous=OFF`): survives a process crash, not an OS crash. For benchmarks
    /// of the CPU path and for throwaway stores.
    Off,
}

/// Options for opening a store.
#[derive(Clone, Debug, Default)]
pub struct SqliteOptions {
    /// Durability of appends.
    pub durability: Durability,
}

/// How often a subscriber re-reads when nothing woke it: covers appends by other processes.
const SUBSCRIBE_POLL: Duration = Duration::from_millis(200);
/// How often the checkpointer looks at the WAL.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);
/// Events fetched per subscriber read.
const SUBSCRIBE_BATCH: usize = 512;

/// The embedded event log. Cheap to clone; all clones share one writer.
#[derive(Clone)]
pub struct SqliteLog {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    durability: Durability,
    requests: Option<mpsc::Sender<writer::AppendRequest>>,
    readers: Mutex<Vec<Connection>>,
    head: watch::Receiver<u64>,
    writer: Option<JoinHandle<()>>,
    checkpointer: Option<(mpsc::Sender<()>, JoinHandle<()>)>,
}

pub(crate) fn storage_err(path: &Path, context: &'static str, e: rusqlite::Error) -> SpineError {
    SpineError::Storage {
        context,
        path: path.to_owned(),
        detail: e.to_string(),
    }
}

impl SqliteLog {
    /// Opens (creating if needed) the store at `path`, migrating it to the current schema.
    /// Fails clearly on a corrupt file, a foreign SQLite file, or one written by a newer Keel.
    pub fn open(path: impl AsRef<Path>, options: SqliteOptions) -> Result<Self, SpineError> {
        let path = path.as_ref().to_owned();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| SpineError::Io {
                path: dir.to_owned(),
                source,
            })?;
        }
        let mut conn = schema::connect(&path, options.durability, true)?;
        schema::migrate(&mut conn, &path)?;
        let last: u64 = conn
            .query_row("SELECT coalesce(max(log_offset), 0) FROM events", [], |r| r.get(0))
            .map_err(|e| schema::map_err(&path, "reading the head offset", e))?;
        let (head_tx, head) = watch::channel(last);
        let (requests, rx) = mpsc::channel();
        let writer_path = path.clone();
        let writer = std::thread::Builder::new()
            .name("keel-spine-writer".into())
            .spawn(move || writer::run(conn, &writer_path, rx, &head_tx))
            .map_err(|source| SpineError::Io {
                path: path.clone(),
                source,
            })?;
        let checkpointer = spawn_checkpointer(&path, options.durability)?;
        Ok(Self {
            inner: Arc::new(Inner {
                path,
                durability: options.durability,
                requests: Some(requests),
                readers: Mutex::new(Vec::new()),
                head,
                writer: Some(writer),
                checkpointer: Some(checkpointer),
            }),
        })
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Folds the whole WAL into the main file and truncates the WAL (for tests and shutdown).
    pub async fn checkpoint(&self) -> Result<(), SpineError> {
        self.with_reader(|conn, path| {
            conn.execute_batch("PRAGMA query_only = 0; PRAGMA wal_checkpoint(TRUNCATE); PRAGMA query_only = 1;")
                .map_err(|e| schema::map_err(path, "checkpointing", e))
        })
        .await
    }

    async fn with_reader<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection, &Path) -> Result<T, SpineError> + Send + 'static,
    ) -> Result<T, SpineError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = inner.readers.lock().ok().and_then(|mut pool| pool.pop());
            let conn = match pooled {
                Some(c) => c,
                None => schema::connect(&inner.path, inner.durability, false)?,
            };
            let result = f(&conn, &inner.path);
            if let Ok(mut pool) = inner.readers.lock() {
                pool.push(conn);
            }
            result
        })
        .await
        .map_err(|_| SpineError::Closed)?
    }
}

fn spawn_checkpointer(
    path: &Path,
    durability: Durability,
) -> Result<(mpsc::Sender<()>, JoinHandle<()>), SpineError> {
    let conn = schema::connect(path, durability, true)?;
    let (stop, stopped) = mpsc::channel::<()>();
    let handle = std::thread::Builder::new()
        .name("keel-spine-checkpoint".into())
        .spawn(move || {
            // PASSIVE never blocks the writer; a failed checkpoint is retried on the next tick.
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECKPOINT_EVERY) {
                let _ = conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE)");
            }
        })
        .map_err(|source| SpineError::Io {
            path: path.to_owned(),
            source,
        })?;
    Ok((stop, handle))
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the request channel lets the writer commit what is queued and exit.
        drop(self.requests.take());
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
        if let Some((stop, handle)) = self.checkpointer.take() {
            drop(stop);
            let _ = handle.join();
        }
    }
}

fn decode_row(path: &Path, offset: u64, exec_key: &str, seq: u64, body: &str) -> Result<Event, SpineError> {
    let event = Event::decode(body).map_err(|source| SpineError::Decode {
        offset,
        exec_id: exec_key.to_owned(),
        seq,
        source,
    })?;
    // The body must agree with the row's index columns, or the row was tampered with.
    if event.seq != seq || event.exec_id.to_string() != exec_key {
        return Err(SpineError::Corrupt {
            path: path.to_owned(),
            detail: format!(
                "row at offset {offset} is indexed as execution {exec_key} seq {seq} but holds execution {} seq {}",
                event.exec_id, event.seq
            ),
        });
    }
    Ok(event)
}

#[async_trait]
impl EventLog for SqliteLog {
    async fn append(
        &self,
        exec_id: ExecId,
        expected_seq: u64,
        events: &[Event],
    ) -> Result<AppendAck, SpineError> {
        validate_batch(exec_id, expected_seq, events)?;
        let tenant = events[0].tenant.0.clone();
        let rows = events
            .iter()
            .map(|e| writer::Row {
                seq: e.seq,
                event_type: e.event_type().as_str(),
                body: e.encode(),
            })
            .collect();
        let (reply, answer) = oneshot::channel();
        let request = writer::AppendRequest {
            exec_id,
            exec_key: exec_id.to_string(),
            tenant,
            expected_seq,
            ends: events.iter().any(|e| e.event_type().is_terminal()),
            rows,
            reply,
        };
        let sender = self.inner.requests.as_ref().ok_or(SpineError::Closed)?;
        sender.send(request).map_err(|_| SpineError::Closed)?;
        answer.await.map_err(|_| SpineError::Closed)?
    }

    async fn read(&self, exec_id: ExecId, from_seq: u64) -> Result<Vec<Event>, SpineError> {
        self.with_reader(move |conn, path| {
            let key = exec_id.to_string();
            let mut stmt = conn
                .prepare_cached(
                    "SELECT log_offset, seq, body FROM events WHERE exec_id = ?1 AND seq >= ?2 ORDER BY seq",
                )
                .map_err(|e| schema::map_err(path, "preparing read", e))?;
            let rows = stmt
                .query_map((&key, from_seq), |r| Ok((r.get::<_, u64>(0)?, r.get::<_, u64>(1)?, r.get::<_, String>(2)?)))
                .map_err(|e| schema::map_err(path, "reading an execution", e))?;
            let mut out = Vec::new();
            for row in rows {
                let (offset, seq, body) = row.map_err(|e| schema::map_err(path, "reading an execution", e))?;
                out.push(decode_row(path, offset, &key, seq, &body)?);
            }
            Ok(out)
        })
        .await
    }

    async fn read_all(&self, from_offset: u64, limit: usize) -> Result<Vec<Committed>, SpineError> {
        self.with_reader(move |conn, path| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT log_offset, exec_id, seq, body FROM events WHERE log_offset >= ?1 ORDER BY log_offset LIMIT ?2",
                )
                .map_err(|e| schema::map_err(path, "preparing read_all", e))?;
            let rows = stmt
                .query_map((from_offset, limit as i64), |r| {
                    Ok((r.get::<_, u64>(0)?, r.get::<_, String>(1)?, r.get::<_, u64>(2)?, r.get::<_, String>(3)?))
                })
                .map_err(|e| schema::map_err(path, "reading the log", e))?;
            let mut out = Vec::new();
            for row in rows {
                let (offset, key, seq, body) = row.map_err(|e| schema::map_err(path, "reading the log", e))?;
                let event = decode_row(path, offset, &key, seq, &body)?;
                out.push(Committed { offset, event });
            }
            Ok(out)
        })
        .await
    }

    fn subscribe(&self, from_offset: u64) -> BoxStream<'static, Result<Committed, SpineError>> {
        struct Sub {
            log: SqliteLog,
            next: u64,
            buffer: VecDeque<Committed>,
            head: watch::Receiver<u64>,
            failed: bool,
        }
        let sub = Sub {
            log: self.clone(),
            next: from_offset.max(1),
            buffer: VecDeque::new(),
            head: self.inner.head.clone(),
            failed: false,
        };
        stream::unfold(sub, |mut sub| async move {
            if sub.failed {
                return None;
            }
            loop {
                if let Some(c) = sub.buffer.pop_front() {
                    return Some((Ok(c), sub));
                }
                sub.head.mark_unchanged();
                match sub.log.read_all(sub.next, SUBSCRIBE_BATCH).await {
                    Err(e) => {
                        sub.failed = true;
                        return Some((Err(e), sub));
                    }
                    Ok(batch) if batch.is_empty() => {
                        tokio::select! {
                            _ = sub.head.changed() => {}
                            _ = tokio::time::sleep(SUBSCRIBE_POLL) => {}
                        }
                    }
                    Ok(batch) => {
                        sub.next = batch.last().map_or(sub.next, |c| c.offset + 1);
                        sub.buffer.extend(batch);
                    }
                }
            }
        })
        .boxed()
    }

    async fn list_unfinished(&self) -> Result<Vec<ExecSummary>, SpineError> {
        self.with_reader(|conn, path| {
            let mut stmt = conn
                .prepare_cached("SELECT exec_id, tenant, last_seq FROM executions WHERE ended = 0 ORDER BY exec_id")
                .map_err(|e| schema::map_err(path, "preparing list_unfinished", e))?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, u64>(2)?)))
                .map_err(|e| schema::map_err(path, "listing unfinished executions", e))?;
            let mut out = Vec::new();
            for row in rows {
                let (key, tenant, last_seq) = row.map_err(|e| schema::map_err(path, "listing unfinished executions", e))?;
                let exec_id = key.parse().map_err(|_| SpineError::Corrupt {
                    path: path.to_owned(),
                    detail: format!("executions row has a malformed exec_id {key:?}"),
                })?;
                out.push(ExecSummary { exec_id, tenant: TenantId(tenant), last_seq });
            }
            Ok(out)
        })
        .await
    }
}
