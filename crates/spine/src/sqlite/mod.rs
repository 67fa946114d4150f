//! The embedded spine backend: one SQLite file (WAL, `synchronous=FULL` by default).
//!
//! Writes go through one writer with group commit, led by the appenders themselves (see the
//! `writer` module); reads use a small pool of
//! read-only connections on blocking threads. Several processes may open the same file: SQLite's write lock
//! serialises their groups, and the conditional append stays correct because the expected seq
//! is checked inside the write transaction.

mod blobs;
mod leases;
mod schema;
mod side;
mod subjects;
mod writer;

use crate::error::SpineError;
use crate::log::{AppendAck, Committed, EventLog, ExecSummary, validate_batch};
use crate::shred::{self, Cipher};
use crate::side::{Appended, LedgerRow, SideAnswer, SideWrite};
use async_trait::async_trait;
use futures::stream::BoxStream;
use keel_core::{Event, ExecId, TenantId};
use rusqlite::Connection;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{oneshot, watch};

pub use blobs::{INLINE_MAX, SqliteBlobs, inline_small_blobs};
pub use schema::{APPLICATION_ID, latest_version};
pub use subjects::{Erasure, subject_digest};
pub use writer::WriterStats;

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

/// Every handle this process opened, by file, for [`SqliteLog::open_shared`].
type OpenHandles = Vec<(PathBuf, std::sync::Weak<Inner>)>;
static OPEN: Mutex<OpenHandles> = Mutex::new(Vec::new());

/// A path's file, as one name however it was spelled (relative, through links).
fn same_file(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned())
}

/// How often a subscriber re-reads when nothing woke it: covers appends by other processes.
const SUBSCRIBE_POLL: Duration = Duration::from_millis(200);

/// The embedded event log. Cheap to clone; all clones share one writer.
#[derive(Clone)]
pub struct SqliteLog {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    durability: Durability,
    commits: writer::GroupCommit,
    readers: Mutex<Vec<Connection>>,
    /// Executions this handle appended to without an fsync (until they end): only their reads
    /// wait for a durable commit. Everything else that is committed — another process's
    /// kill-switch on the control stream, say — is read as soon as it commits.
    buffered_execs: Mutex<std::collections::HashSet<ExecId>>,
    /// A read-only connection for point queries cheap enough to run on the caller's thread
    /// (see [`EventLog::appended_after`]); opened on first use.
    probe: Mutex<Option<Connection>>,
    head: watch::Receiver<u64>,
    stats: Arc<WriterStats>,
    /// Per execution: the subject cipher its events are sealed with, `None` if not linked.
    ciphers: Mutex<HashMap<ExecId, Option<Arc<Cipher>>>>,
    /// Small blobs waiting for the next commit on this file (shared by its handles here).
    staged: Arc<blobs::Staged>,
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
        conn.set_prepared_statement_cache_capacity(32);
        schema::migrate(&mut conn, &path)?;
        conn.execute_batch(side::RATES_TABLE)
            .map_err(|e| schema::map_err(&path, "creating the rate budgets' table", e))?;
        conn.execute_batch(blobs::TABLE)
            .map_err(|e| schema::map_err(&path, "creating the small blobs' table", e))?;
        // Every handle on one file drains the same staged blobs, whichever commits first.
        let staged = Self::already_open(&path)
            .map(|other| other.inner.staged.clone())
            .unwrap_or_default();
        let last: u64 = conn
            .query_row(
                "SELECT coalesce(max(last_offset), 0) FROM (SELECT last_offset FROM batches ORDER BY first_offset DESC LIMIT 1)",
                [],
                |r| r.get(0),
            )
            .map_err(|e| schema::map_err(&path, "reading the head offset", e))?;
        let (head_tx, head) = watch::channel(last);
        let stats = Arc::new(WriterStats::default());
        let writer = writer::Writer::new(
            conn,
            path.clone(),
            options.durability,
            head_tx,
            stats.clone(),
            staged.clone(),
        );
        let log = Self {
            inner: Arc::new(Inner {
                path,
                durability: options.durability,
                commits: writer::GroupCommit::new(writer),
                readers: Mutex::new(Vec::new()),
                buffered_execs: Mutex::new(std::collections::HashSet::new()),
                probe: Mutex::new(None),
                head,
                stats,
                ciphers: Mutex::new(HashMap::new()),
                staged,
            }),
        };
        if let Ok(mut open) = OPEN.lock() {
            open.retain(|(_, weak)| weak.strong_count() > 0);
            open.push((same_file(&log.inner.path), Arc::downgrade(&log.inner)));
        }
        Ok(log)
    }

    /// The handle this process already has open on the file at `path` (so its writes share that
    /// handle's writer and group commit), or a new one as [`SqliteLog::open`] opens it. For
    /// stores that live in the spine's file (the tool ledger, rate budgets) opened by path. A
    /// handle less durable than `options` asks for is not shared.
    pub fn open_shared(path: impl AsRef<Path>, options: SqliteOptions) -> Result<Self, SpineError> {
        let wanted = same_file(path.as_ref());
        let durable_enough = |d: Durability| d == Durability::Full || d == options.durability;
        let found = OPEN.lock().ok().and_then(|open| {
            open.iter()
                .filter(|(p, _)| *p == wanted)
                .filter_map(|(_, weak)| weak.upgrade())
                .find(|inner| durable_enough(inner.durability))
        });
        match found {
            Some(inner) => Ok(Self { inner }),
            None => Self::open(path, options),
        }
    }

    /// A handle this process already has open on the file at `path`, of any durability.
    pub(crate) fn already_open(path: &Path) -> Option<Self> {
        let wanted = same_file(path);
        let open = OPEN.lock().ok()?;
        open.iter()
            .filter(|(p, _)| *p == wanted)
            .find_map(|(_, weak)| weak.upgrade())
            .map(|inner| Self { inner })
    }

    /// Drops staged small blobs that an erasure deletes, so no later commit writes them.
    pub(super) fn forget_staged(&self, references: &[String]) {
        for r in references {
            if let Ok(parsed) = r.parse() {
                self.inner.staged.forget(&parsed);
            }
        }
    }

    async fn send(
        &self,
        exec_id: ExecId,
        expected_seq: u64,
        events: &[Event],
        durable: bool,
    ) -> Result<AppendAck, SpineError> {
        let appended = self
            .send_with(exec_id, expected_seq, events, Vec::new(), durable, None)
            .await?;
        appended.ack.ok_or_else(|| SpineError::InvalidAppend {
            exec_id,
            detail: "empty batch".into(),
        })
    }

    /// Commits side writes alone (no events) in the next group: durable on return if `durable`
    /// or if any of them is a ledger write. One answer per write, in order.
    pub async fn write_side(
        &self,
        side: Vec<SideWrite>,
        durable: bool,
    ) -> Result<Vec<SideAnswer>, SpineError> {
        let durable = durable || side.iter().any(SideWrite::must_be_durable);
        let (reply, answer) = oneshot::channel();
        let request = writer::AppendRequest {
            exec_id: ExecId(uuid::Uuid::nil()),
            exec_key: String::new(),
            tenant: String::new(),
            expected_seq: 0,
            ends: false,
            durable,
            len: 0,
            body: String::new(),
            side,
            fence: None,
            reply,
        };
        Ok(self.inner.commits.append(request, answer).await?.answers)
    }

    /// The tool ledger's row for (tenant, key), as committed.
    pub async fn ledger_entry(
        &self,
        tenant: &str,
        key: &str,
    ) -> Result<Option<LedgerRow>, SpineError> {
        let (tenant, key) = (tenant.to_owned(), key.to_owned());
        self.with_reader(move |conn, path| {
            side::ledger_row(conn, &tenant, &key)
                .map_err(|e| schema::map_err(path, "reading a ledger entry", e))
        })
        .await
    }

    async fn send_with(
        &self,
        exec_id: ExecId,
        expected_seq: u64,
        events: &[Event],
        side: Vec<SideWrite>,
        durable: bool,
        fence: Option<u64>,
    ) -> Result<Appended, SpineError> {
        validate_batch(exec_id, expected_seq, events)?;
        let durable = durable || side.iter().any(SideWrite::must_be_durable);
        let cipher = self.cipher_for(exec_id).await?;
        let body = encode_batch(events, cipher.as_deref())?;
        let (reply, answer) = oneshot::channel();
        let request = writer::AppendRequest {
            exec_id,
            exec_key: exec_id.to_string(),
            tenant: events[0].tenant.0.clone(),
            expected_seq,
            ends: events.iter().any(|e| e.event_type().is_terminal()),
            durable,
            len: events.len() as u64,
            body,
            side,
            fence,
            reply,
        };
        let ends = request.ends;
        if !durable && let Ok(mut b) = self.inner.buffered_execs.lock() {
            b.insert(exec_id);
        }
        let ack = self.inner.commits.append(request, answer).await;
        if ends {
            self.forget_cipher(exec_id);
            if let Ok(mut b) = self.inner.buffered_execs.lock() {
                b.remove(&exec_id);
            }
        }
        ack
    }

    /// The last offset `exec_id`'s reads may see: everything committed, unless this handle
    /// appended to it without an fsync and that is not durable yet.
    fn durable_head_for(&self, exec_id: ExecId) -> u64 {
        let buffered = self
            .inner
            .buffered_execs
            .lock()
            .map_or(true, |b| b.contains(&exec_id));
        if buffered {
            self.durable_head()
        } else {
            i64::MAX as u64
        }
    }

    /// The last offset readers may see: everything before this handle's oldest buffered (not
    /// yet durable) append. Appends by other processes are visible once they commit.
    fn durable_head(&self) -> u64 {
        match self
            .inner
            .stats
            .buffered_from
            .load(std::sync::atomic::Ordering::Acquire)
        {
            0 => i64::MAX as u64,
            first => first - 1,
        }
    }

    /// The writer's counters since this handle opened the store.
    pub fn stats(&self) -> &WriterStats {
        &self.inner.stats
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Folds the whole WAL into the main file and truncates the WAL (for tests and shutdown).
    pub async fn checkpoint(&self) -> Result<(), SpineError> {
        self.with_reader(|conn, path| {
            conn.execute_batch(
                "PRAGMA query_only = 0; PRAGMA wal_checkpoint(TRUNCATE); PRAGMA query_only = 1;",
            )
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

impl Drop for Inner {
    fn drop(&mut self) {
        // An appender that gave up waiting may have left its request queued.
        self.commits.flush();
    }
}

/// An execution's events with `seq >= from_seq` among those at offsets up to `durable`.
fn read_on(
    conn: &Connection,
    path: &Path,
    exec_id: ExecId,
    from_seq: u64,
    durable: u64,
) -> Result<Vec<Event>, SpineError> {
    let key = exec_id.to_string();
    let err = |c| move |e| schema::map_err(path, c, e);
    let mut stmt = conn
        .prepare_cached(
            "SELECT first_offset, first_seq, body FROM batches
             WHERE exec_id = ?1 AND last_seq >= ?2 AND first_offset <= ?3
             ORDER BY last_seq",
        )
        .map_err(err("preparing read"))?;
    let mut rows = stmt
        .query((&key, from_seq, durable))
        .map_err(err("reading an execution"))?;
    let mut out = Vec::new();
    let mut opener = Opener::new(conn);
    while let Some(row) = rows.next().map_err(err("reading an execution"))? {
        let (offset, first_seq, body): (u64, u64, String) = (
            row.get(0).map_err(err("reading an execution"))?,
            row.get(1).map_err(err("reading an execution"))?,
            row.get(2).map_err(err("reading an execution"))?,
        );
        let batch = decode_batch(path, offset, &key, first_seq, &body, &mut |k, raw| {
            opener.open(k, raw)
        })?;
        out.extend(
            batch
                .into_iter()
                .map(|(_, e)| e)
                .filter(|e| e.seq >= from_seq),
        );
    }
    Ok(out)
}

/// Decodes a stored batch into `(offset, event)` pairs, checking that every event is where the
/// row's index columns say it is (a mismatch means the row was tampered with). `open` opens the
/// sealed fields of one event (execution key, raw JSON); every backend stores batches alike.
pub(crate) fn decode_batch(
    path: &Path,
    first_offset: u64,
    exec_key: &str,
    first_seq: u64,
    body: &str,
    open: &mut dyn FnMut(&str, &str) -> String,
) -> Result<Vec<(u64, Event)>, SpineError> {
    let decode_err = |i: usize, source| SpineError::Decode {
        offset: first_offset + i as u64,
        exec_id: exec_key.to_owned(),
        seq: first_seq + i as u64,
        source,
    };
    let raws: Vec<&serde_json::value::RawValue> = serde_json::from_str(body)
        .map_err(|e| decode_err(0, keel_core::DecodeError::Json(e.to_string())))?;
    let mut out = Vec::with_capacity(raws.len());
    for (i, raw) in raws.into_iter().enumerate() {
        let event = if shred::maybe_sealed(raw.get()) {
            Event::decode(&open(exec_key, raw.get()))
        } else {
            Event::decode(raw.get())
        }
        .map_err(|e| decode_err(i, e))?;
        let (offset, seq) = (first_offset + i as u64, first_seq + i as u64);
        if event.seq != seq || event.exec_id.to_string() != exec_key {
            return Err(SpineError::Corrupt {
                path: path.to_owned(),
                detail: format!(
                    "offset {offset} is indexed as execution {exec_key} seq {seq} but holds execution {} seq {}",
                    event.exec_id, event.seq
                ),
            });
        }
        out.push((offset, event));
    }
    Ok(out)
}

/// Encodes a batch as the JSON array stored in one row, sealing subject-linked fields with
/// `cipher` (see [`crate::shred`]).
pub(crate) fn encode_batch(
    events: &[Event],
    cipher: Option<&Cipher>,
) -> Result<String, SpineError> {
    let mut body = Vec::with_capacity(events.len() * 512);
    body.push(b'[');
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        match cipher {
            None => e.encode_into(&mut body),
            Some(c) => body.extend_from_slice(shred::seal_event(&e.encode(), c)?.as_bytes()),
        }
    }
    body.push(b']');
    // Event encoding writes only UTF-8.
    Ok(String::from_utf8(body).unwrap_or_default())
}

/// Opens sealed fields while decoding: looks each execution's key up once per read.
pub(crate) struct Opener<'a> {
    conn: &'a Connection,
    cache: HashMap<String, Option<Cipher>>,
}

impl<'a> Opener<'a> {
    fn new(conn: &'a Connection) -> Self {
        Opener {
            conn,
            cache: HashMap::new(),
        }
    }

    fn open(&mut self, exec_key: &str, raw: &str) -> String {
        let conn = self.conn;
        let cipher = self.cache.entry(exec_key.to_owned()).or_insert_with(|| {
            subject_key(conn, exec_key)
                .ok()
                .flatten()
                .and_then(|(_, k)| k)
                .and_then(|k| shred::cipher(&k))
        });
        shred::open_event(raw, cipher.as_ref())
    }
}

/// A subject link: the subject's digest and its key (`None` once erased).
type SubjectLink = (String, Option<Vec<u8>>);

/// The subject link of an execution, if it has one.
fn subject_key(conn: &Connection, exec_key: &str) -> Result<Option<SubjectLink>, rusqlite::Error> {
    use rusqlite::OptionalExtension;
    conn.query_row(
        "SELECT e.digest, k.key FROM subject_execs AS e
         LEFT JOIN subject_keys AS k ON k.digest = e.digest WHERE e.exec_id = ?1",
        [exec_key],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()
}

#[async_trait]
impl EventLog for SqliteLog {
    async fn append(
        &self,
        exec_id: ExecId,
        expected_seq: u64,
        events: &[Event],
    ) -> Result<AppendAck, SpineError> {
        self.send(exec_id, expected_seq, events, true).await
    }

    async fn append_buffered(
        &self,
        exec_id: ExecId,
        expected_seq: u64,
        events: &[Event],
    ) -> Result<AppendAck, SpineError> {
        self.send(exec_id, expected_seq, events, false).await
    }

    async fn read(&self, exec_id: ExecId, from_seq: u64) -> Result<Vec<Event>, SpineError> {
        let durable = self.durable_head_for(exec_id);
        self.with_reader(move |conn, path| read_on(conn, path, exec_id, from_seq, durable))
            .await
    }

    /// One reader thread and connection for the whole batch (a prepared statement per
    /// execution), not a blocking-pool round trip each.
    async fn read_many(&self, exec_ids: &[ExecId]) -> Result<Vec<Vec<Event>>, SpineError> {
        let wanted: Vec<(ExecId, u64)> = exec_ids
            .iter()
            .map(|&e| (e, self.durable_head_for(e)))
            .collect();
        self.with_reader(move |conn, path| {
            wanted
                .into_iter()
                .map(|(exec_id, durable)| read_on(conn, path, exec_id, 1, durable))
                .collect()
        })
        .await
    }

    async fn read_first(&self, exec_id: ExecId) -> Result<Option<Event>, SpineError> {
        let durable = self.durable_head_for(exec_id);
        self.with_reader(move |conn, path| {
            let key = exec_id.to_string();
            let err = |c| move |e| schema::map_err(path, c, e);
            let row: Option<(u64, u64, String)> = conn
                .prepare_cached(
                    "SELECT first_offset, first_seq, body FROM batches
                     WHERE exec_id = ?1 AND first_offset <= ?2 ORDER BY last_seq LIMIT 1",
                )
                .and_then(|mut s| {
                    use rusqlite::OptionalExtension;
                    s.query_row((&key, durable), |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                        .optional()
                })
                .map_err(err("reading an execution's first batch"))?;
            let Some((offset, first_seq, body)) = row else {
                return Ok(None);
            };
            let mut opener = Opener::new(conn);
            let batch = decode_batch(path, offset, &key, first_seq, &body, &mut |k, raw| {
                opener.open(k, raw)
            })?;
            Ok(batch.into_iter().next().map(|(_, e)| e))
        })
        .await
    }

    /// One indexed point query (`batches_by_exec`), run on the caller's thread: it costs a few
    /// microseconds, far less than moving it to a blocking thread, and a WAL reader does not
    /// wait for the writer. Committed rows of other processes count as soon as they commit.
    async fn appended_after(&self, exec_id: ExecId, seq: u64) -> Result<bool, SpineError> {
        let path = &self.inner.path;
        let mut probe = self.inner.probe.lock().map_err(|_| SpineError::Closed)?;
        if probe.is_none() {
            *probe = Some(schema::connect(path, self.inner.durability, false)?);
        }
        let Some(conn) = probe.as_ref() else {
            return Err(SpineError::Closed);
        };
        let last: u64 = conn
            .prepare_cached("SELECT coalesce(max(last_seq), 0) FROM batches WHERE exec_id = ?1")
            .and_then(|mut s| s.query_row([exec_id.to_string()], |r| r.get(0)))
            .map_err(|e| schema::map_err(path, "reading an execution's last seq", e))?;
        Ok(last > seq)
    }

    async fn read_all(&self, from_offset: u64, limit: usize) -> Result<Vec<Committed>, SpineError> {
        let durable = self.durable_head();
        self.with_reader(move |conn, path| {
            let err = |c| move |e| schema::map_err(path, c, e);
            // Start at the batch holding `from_offset`, then walk forward in commit order.
            let mut stmt = conn
                .prepare_cached(
                    "SELECT first_offset, exec_id, first_seq, body FROM batches
                     WHERE first_offset >= (SELECT coalesce(max(first_offset), 0) FROM batches WHERE first_offset <= ?1)
                       AND first_offset <= ?2
                     ORDER BY first_offset",
                )
                .map_err(err("preparing read_all"))?;
            let mut rows = stmt
                .query([from_offset, durable])
                .map_err(err("reading the log"))?;
            let mut out = Vec::new();
            let mut opener = Opener::new(conn);
            while out.len() < limit {
                let Some(row) = rows.next().map_err(err("reading the log"))? else { break };
                let (first_offset, key, first_seq, body): (u64, String, u64, String) = (
                    row.get(0).map_err(err("reading the log"))?,
                    row.get(1).map_err(err("reading the log"))?,
                    row.get(2).map_err(err("reading the log"))?,
                    row.get(3).map_err(err("reading the log"))?,
                );
                let batch = decode_batch(path, first_offset, &key, first_seq, &body, &mut |k, raw| opener.open(k, raw))?;
                let wanted = batch.into_iter().filter(|(offset, _)| *offset >= from_offset);
                out.extend(wanted.map(|(offset, event)| Committed { offset, event }).take(limit - out.len()));
            }
            Ok(out)
        })
        .await
    }

    fn subscribe(&self, from_offset: u64) -> BoxStream<'static, Result<Committed, SpineError>> {
        crate::log::follow(
            self.clone(),
            self.inner.head.clone(),
            SUBSCRIBE_POLL,
            from_offset,
        )
    }

    async fn link_subject(
        &self,
        exec_id: ExecId,
        tenant: &str,
        subject: &str,
    ) -> Result<(), SpineError> {
        SqliteLog::link_subject(self, exec_id, tenant, subject).await
    }

    async fn subject_of(&self, exec_id: ExecId) -> Result<Option<String>, SpineError> {
        SqliteLog::subject_of(self, exec_id).await
    }

    fn side_store(&self) -> Option<&Path> {
        Some(&self.inner.path)
    }

    async fn append_with(
        &self,
        exec_id: ExecId,
        expected_seq: u64,
        events: &[Event],
        side: Vec<SideWrite>,
        durable: bool,
    ) -> Result<Appended, SpineError> {
        self.send_with(exec_id, expected_seq, events, side, durable, None)
            .await
    }

    async fn list_unfinished(&self) -> Result<Vec<ExecSummary>, SpineError> {
        self.with_reader(|conn, path| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT exec_id, tenant, (SELECT max(last_seq) FROM batches AS b WHERE b.exec_id = e.exec_id)
                     FROM executions AS e WHERE ended = 0 ORDER BY exec_id",
                )
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
