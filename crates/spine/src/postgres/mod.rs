//! The shared spine backend: PostgreSQL (schema `keel_spine`), for many workers on many machines.
//!
//! Writes go through one writer task per handle with group commit (module `writer`): one
//! process's concurrent appenders share transactions, and transactions of different processes
//! commit in parallel. Offsets are numbered from the appending transaction's id, and readers stop
//! below the oldest transaction still running, so a reader never sees an offset before a lower
//! one that may still commit and a subscriber never skips a slower transaction's events
//! (docs/decisions/133). Reads are pipelined over a few shared connections. Subscribers wake on
//! `LISTEN keel_spine` (every other process's commits notify it) and poll as a fallback. Leases
//! (module `leases`) fence appends by epoch inside the same transaction.
//!
//! What it is not: a connection pool for arbitrary work. Every connection takes TLS from the URL
//! (module `tls`, decision 118), and so do the stores in other crates that connect through
//! [`connector`] or [`connect_session`].

mod leases;
mod schema;
mod subjects;
pub mod tls;
mod writer;

use crate::error::SpineError;
use crate::log::{AppendAck, Committed, EventLog, ExecSummary, validate_batch};
use crate::shred::{self, Cipher};
use crate::side::{Appended, LedgerRow, SideAnswer, SideWrite};
use crate::sqlite::{Durability, WriterStats, decode_batch, encode_batch};
use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt};
use keel_core::{Event, ExecId, TenantId};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_postgres::{AsyncMessage, Client, Config};

pub use schema::latest_version;

/// Options for connecting.
#[derive(Clone, Debug)]
pub struct PgOptions {
    /// `Full`: an append returns once its commit is flushed to the server's WAL
    /// (`synchronous_commit = on`). `Off`: once committed, before the flush
    /// (`synchronous_commit = off`): survives a Keel crash, not a server crash.
    pub durability: Durability,
    /// Connections reads are spread over (each pipelines many concurrent queries).
    pub readers: usize,
    /// How often a subscriber re-reads when no notification woke it (the fallback when the
    /// listening connection is down or a notification was lost).
    pub poll: Duration,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            durability: Durability::Full,
            readers: 2,
            poll: Duration::from_millis(500),
        }
    }
}

/// The PostgreSQL event log. Cheap to clone; all clones share one writer.
#[derive(Clone)]
pub struct PgEventLog {
    inner: Arc<Inner>,
}

struct Inner {
    /// `postgres://user@host:port/db`, for errors and messages (never the password).
    shown: PathBuf,
    /// Replaced by a new connection when the server drops one (a restart, a terminated
    /// session), so a long-running worker outlives its database's restarts.
    readers: Vec<Mutex<Arc<Client>>>,
    next_reader: AtomicUsize,
    /// How to open another reader.
    target: writer::Target,
    /// A connection of its own for multi-statement transactions (subject links, erasure).
    tx: tokio::sync::Mutex<Client>,
    requests: mpsc::UnboundedSender<writer::AppendRequest>,
    head: watch::Receiver<u64>,
    /// `offset_shift` of the database: where readers stop (docs/decisions/133).
    shift: i64,
    stats: Arc<WriterStats>,
    poll: Duration,
    /// Kept so the `LISTEN` connection stays open (it closes when the client drops).
    _listener: Option<Client>,
    /// Per execution: the subject cipher its events are sealed with, `None` if not linked.
    ciphers: Mutex<HashMap<ExecId, Option<Arc<Cipher>>>>,
}

/// `postgres://user@host:port/db` from a parsed configuration: what errors may show.
fn shown_url(config: &Config) -> PathBuf {
    use tokio_postgres::config::Host;
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    PathBuf::from(format!(
        "postgres://{}@{host}:{port}/{}",
        config.get_user().unwrap_or(""),
        config.get_dbname().unwrap_or("")
    ))
}

/// Opens one connection and drives it on a task of its own.
pub(super) async fn open_client(
    config: &Config,
    tls: &tls::MakeRustls,
    shown: &Path,
    synchronous_commit: &str,
) -> Result<Client, SpineError> {
    let (client, connection) = config
        .connect(tls.clone())
        .await
        .map_err(schema::db_err(shown, "connecting"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
        .batch_execute(&format!(
            "SET synchronous_commit = {synchronous_commit}; SET application_name = 'keel-spine'"
        ))
        .await
        .map_err(schema::db_err(shown, "setting up a session"))?;
    Ok(client)
}

/// Connects one session to the spine's database at `url`, for stores that share it (keel-tools'
/// idempotency ledger and rate budgets): returns the client (driven on a task of its own) and
/// the server as errors may show it (no password). Create the schema first with
/// [`PgEventLog::connect`].
pub async fn connect_session(url: &str) -> Result<(Client, PathBuf), SpineError> {
    let (config, files) = parse_url(url)?;
    let shown = shown_url(&config);
    let tls = tls::MakeRustls::new(&files, &shown)?;
    let client = open_client(&config, &tls, &shown, "on").await?;
    Ok((client, shown))
}

/// How to connect to `url` as the spine does, for stores in other crates that open their own
/// connections (the projections, pgvector memory): the URL's configuration without its TLS
/// parameters, the verified-TLS connector they ask for (`sslmode`, `sslrootcert`, and the
/// client certificate of `sslcert`/`sslkey`), and the
/// server as errors may show it (no password).
pub fn connector(url: &str) -> Result<(Config, tls::MakeRustls, PathBuf), SpineError> {
    let (config, files) = parse_url(url)?;
    let shown = shown_url(&config);
    let tls = tls::MakeRustls::new(&files, &shown)?;
    Ok((config, tls, shown))
}

/// The parsed URL, and the TLS files it names (`sslrootcert`, `sslcert`, `sslkey`).
fn parse_url(url: &str) -> Result<(Config, tls::TlsFiles), SpineError> {
    let (url, files) = tls::split_url(url);
    url.parse()
        .map(|config| (config, files))
        .map_err(|e: tokio_postgres::Error| SpineError::Storage {
            context: "parsing the spine's PostgreSQL URL",
            path: PathBuf::from("postgres://…"),
            detail: e.to_string(),
        })
}

/// Opens the `LISTEN` connection: every notification of another process's commit wakes the
/// subscribers, which then read what has become readable. This handle's own (from
/// `writer_pid`) are skipped: its writer wakes them with the offsets.
async fn listen(
    config: &Config,
    tls: &tls::MakeRustls,
    head: watch::Sender<u64>,
    writer_pid: Arc<std::sync::atomic::AtomicI32>,
) -> Option<Client> {
    let (client, mut connection) = config.connect(tls.clone()).await.ok()?;
    tokio::spawn(async move {
        let mut messages = stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let AsyncMessage::Notification(n) = message
                && n.process_id() != writer_pid.load(Ordering::Relaxed)
            {
                head.send_modify(|_| {});
            }
        }
        // The connection is gone: subscribers fall back to polling.
    });
    let listening = client
        .batch_execute(&format!("LISTEN {}", writer::CHANNEL))
        .await;
    if listening.is_err() {
        return None;
    }
    Some(client)
}

impl PgEventLog {
    /// Connects to the database at `url` (`postgres://user:password@host:port/db`, or libpq's
    /// `key=value` form), creating or migrating schema `keel_spine`. Errors name the server
    /// without the password.
    pub async fn connect(url: &str, options: PgOptions) -> Result<Self, SpineError> {
        let (config, files) = parse_url(url)?;
        let shown = shown_url(&config);
        let tls = tls::MakeRustls::new(&files, &shown)?;
        let sync = match options.durability {
            Durability::Full => "on",
            Durability::Off => "off",
        };
        let mut first = open_client(&config, &tls, &shown, sync).await?;
        schema::migrate(&mut first, &shown).await?;
        let head_now: i64 = first
            .query_one(
                "SELECT coalesce(max(last_offset), 0) FROM keel_spine.batches",
                &[],
            )
            .await
            .map_err(schema::db_err(&shown, "reading the head offset"))?
            .get(0);
        let conn = writer::Conn::prepare(first, &shown).await?;
        let shift = conn.shift();
        let writer_pid = Arc::new(std::sync::atomic::AtomicI32::new(conn.pid()));
        let mut readers = Vec::new();
        for _ in 0..options.readers.max(1) {
            readers.push(Mutex::new(Arc::new(
                open_client(&config, &tls, &shown, sync).await?,
            )));
        }
        let tx = open_client(&config, &tls, &shown, sync).await?;
        let (head_tx, head) = watch::channel(u64::try_from(head_now).unwrap_or(0));
        let listener = listen(&config, &tls, head_tx.clone(), writer_pid.clone()).await;
        let (requests, rx) = mpsc::unbounded_channel();
        let stats = Arc::new(WriterStats::default());
        let target = writer::Target {
            config,
            tls,
            shown: shown.clone(),
            synchronous_commit: sync,
            writer_pid,
        };
        tokio::spawn(writer::run(
            Some(conn),
            target.clone(),
            rx,
            head_tx,
            stats.clone(),
        ));
        Ok(Self {
            inner: Arc::new(Inner {
                shown,
                readers,
                next_reader: AtomicUsize::new(0),
                target,
                tx: tokio::sync::Mutex::new(tx),
                requests,
                head,
                shift,
                stats,
                poll: options.poll,
                _listener: listener,
                ciphers: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The server and database, without the password.
    pub fn shown(&self) -> &Path {
        &self.inner.shown
    }

    /// The writer's counters since this handle connected: `requests / groups` is the
    /// group-commit factor (appends per transaction).
    pub fn stats(&self) -> &WriterStats {
        &self.inner.stats
    }

    /// The connection for multi-statement transactions, replaced first if the server closed it.
    pub(super) async fn tx_client(
        &self,
    ) -> Result<tokio::sync::MutexGuard<'_, Client>, SpineError> {
        let mut client = self.inner.tx.lock().await;
        if client.is_closed() {
            *client = self.inner.target.open().await?;
        }
        Ok(client)
    }

    /// A reader connection, in turn; one the server has closed is replaced by a new one first.
    async fn reader(&self) -> Result<Arc<Client>, SpineError> {
        let n = self.inner.next_reader.fetch_add(1, Ordering::Relaxed);
        let readers = &self.inner.readers;
        // `readers` is never empty (at least one is opened); fall back to the first.
        let slot = readers.get(n % readers.len().max(1)).unwrap_or(&readers[0]);
        let current = slot.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if !current.is_closed() {
            return Ok(current);
        }
        let fresh = Arc::new(self.inner.target.open().await?);
        *slot.lock().unwrap_or_else(|p| p.into_inner()) = fresh.clone();
        Ok(fresh)
    }

    pub(super) fn err(
        &self,
        context: &'static str,
    ) -> impl Fn(tokio_postgres::Error) -> SpineError + '_ {
        schema::db_err(&self.inner.shown, context)
    }

    pub(super) async fn send(
        &self,
        exec_id: ExecId,
        expected_seq: u64,
        events: &[Event],
        fence: Option<u64>,
    ) -> Result<AppendAck, SpineError> {
        let done = self
            .send_with(exec_id, expected_seq, events, fence, Vec::new(), true)
            .await?;
        done.ack.ok_or_else(|| SpineError::InvalidAppend {
            exec_id,
            detail: "empty batch".into(),
        })
    }

    /// An append (none if `events` is empty) with side writes in its transaction
    /// ([`crate::side`]).
    pub(super) async fn send_with(
        &self,
        exec_id: ExecId,
        expected_seq: u64,
        events: &[Event],
        fence: Option<u64>,
        side: Vec<SideWrite>,
        durable: bool,
    ) -> Result<Appended, SpineError> {
        let (reply, answer) = oneshot::channel();
        let ends = events.iter().any(|e| e.event_type().is_terminal());
        let durable = durable || side.iter().any(SideWrite::must_be_durable);
        let request = match events.first() {
            Some(first) => {
                validate_batch(exec_id, expected_seq, events)?;
                if events.len() as u64 > writer::MAX_TRANSACTION_EVENTS {
                    return Err(SpineError::InvalidAppend {
                        exec_id,
                        detail: format!(
                            "{} events in one append; the PostgreSQL spine takes at most {}",
                            events.len(),
                            writer::MAX_TRANSACTION_EVENTS
                        ),
                    });
                }
                let cipher = self.cipher_for(exec_id).await?;
                writer::AppendRequest {
                    exec_id,
                    exec_key: exec_id.to_string(),
                    tenant: first.tenant.0.clone(),
                    expected_seq,
                    ends,
                    fence,
                    len: events.len() as u64,
                    body: encode_batch(events, cipher.as_deref())?,
                    side,
                    durable: true,
                    reply,
                }
            }
            None => writer::AppendRequest {
                exec_id,
                exec_key: String::new(),
                tenant: String::new(),
                expected_seq,
                ends: false,
                fence: None,
                len: 0,
                body: String::new(),
                side,
                durable,
                reply,
            },
        };
        self.inner
            .requests
            .send(request)
            .map_err(|_| SpineError::Closed)?;
        let done = answer.await.map_err(|_| SpineError::Closed)?;
        if ends && done.is_ok() {
            self.forget_cipher(exec_id);
        }
        done
    }

    /// A request of side writes only ([`crate::side`]), in the writer's next group: the tool
    /// ledger's and rate budgets' own writes. Flushed if `durable` or if one must be durable.
    pub async fn write_side(
        &self,
        side: Vec<SideWrite>,
        durable: bool,
    ) -> Result<Vec<SideAnswer>, SpineError> {
        let nil = ExecId(uuid::Uuid::nil());
        Ok(self
            .send_with(nil, 0, &[], None, side, durable)
            .await?
            .answers)
    }

    /// The tool ledger's row for (tenant, key), if any.
    pub async fn ledger_entry(
        &self,
        tenant: &str,
        key: &str,
    ) -> Result<Option<LedgerRow>, SpineError> {
        let row = self
            .reader()
            .await?
            .query_opt(
                &format!(
                    "SELECT {} FROM keel_spine.tool_ledger WHERE tenant = $1 AND key = $2",
                    writer::LEDGER_COLUMNS
                ),
                &[&tenant, &key],
            )
            .await
            .map_err(self.err("reading a ledger entry"))?;
        Ok(row.as_ref().map(writer::ledger_row))
    }

    /// Decodes rows of `(first_offset, exec_id, first_seq, body)` into committed events.
    async fn decode_rows(
        &self,
        rows: Vec<tokio_postgres::Row>,
        from_offset: u64,
        limit: usize,
    ) -> Result<Vec<Committed>, SpineError> {
        let mut keys: HashMap<String, Option<Cipher>> = HashMap::new();
        for row in &rows {
            let body: &str = row.get(3);
            if shred::maybe_sealed(body) {
                let key: String = row.get(1);
                if let std::collections::hash_map::Entry::Vacant(slot) = keys.entry(key) {
                    let cipher = self.stored_cipher(slot.key()).await?;
                    slot.insert(cipher);
                }
            }
        }
        let mut out = Vec::new();
        for row in rows {
            if out.len() >= limit {
                break;
            }
            let (first_offset, key, first_seq, body): (i64, String, i64, String) =
                (row.get(0), row.get(1), row.get(2), row.get(3));
            let batch = decode_batch(
                &self.inner.shown,
                u64::try_from(first_offset).unwrap_or(0),
                &key,
                u64::try_from(first_seq).unwrap_or(0),
                &body,
                &mut |k, raw| shred::open_event(raw, keys.get(k).and_then(Option::as_ref)),
            )?;
            let wanted = batch.into_iter().filter(|(o, _)| *o >= from_offset);
            out.extend(
                wanted
                    .map(|(offset, event)| Committed { offset, event })
                    .take(limit - out.len()),
            );
        }
        Ok(out)
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[async_trait]
impl EventLog for PgEventLog {
    async fn append(
        &self,
        exec_id: ExecId,
        expected_seq: u64,
        events: &[Event],
    ) -> Result<AppendAck, SpineError> {
        self.send(exec_id, expected_seq, events, None).await
    }

    async fn read(&self, exec_id: ExecId, from_seq: u64) -> Result<Vec<Event>, SpineError> {
        let key = exec_id.to_string();
        let rows = self
            .reader()
            .await?
            .query(
                "SELECT first_offset, exec_id, first_seq, body FROM keel_spine.batches
                 WHERE exec_id = $1 AND last_seq >= $2 ORDER BY first_seq",
                &[&key, &to_i64(from_seq)],
            )
            .await
            .map_err(self.err("reading an execution"))?;
        Ok(self
            .decode_rows(rows, 0, usize::MAX)
            .await?
            .into_iter()
            .map(|c| c.event)
            .filter(|e| e.seq >= from_seq)
            .collect())
    }

    /// One query for the whole batch.
    async fn read_many(&self, exec_ids: &[ExecId]) -> Result<Vec<Vec<Event>>, SpineError> {
        let keys: Vec<String> = exec_ids.iter().map(ExecId::to_string).collect();
        let rows = self
            .reader()
            .await?
            .query(
                "SELECT first_offset, exec_id, first_seq, body FROM keel_spine.batches
                 WHERE exec_id = ANY($1) ORDER BY exec_id, first_seq",
                &[&keys],
            )
            .await
            .map_err(self.err("reading executions"))?;
        let mut by_exec: HashMap<ExecId, Vec<Event>> = HashMap::new();
        for c in self.decode_rows(rows, 0, usize::MAX).await? {
            by_exec.entry(c.event.exec_id).or_default().push(c.event);
        }
        // Each log is moved out at its last mention (copied only for an execution asked twice).
        let mut last_mention: HashMap<ExecId, usize> = HashMap::new();
        for (i, e) in exec_ids.iter().enumerate() {
            last_mention.insert(*e, i);
        }
        Ok(exec_ids
            .iter()
            .enumerate()
            .map(|(i, e)| match last_mention.get(e) {
                Some(&last) if last == i => by_exec.remove(e).unwrap_or_default(),
                _ => by_exec.get(e).cloned().unwrap_or_default(),
            })
            .collect())
    }

    async fn appended_after(&self, exec_id: ExecId, seq: u64) -> Result<bool, SpineError> {
        let last: Option<i64> = self
            .reader()
            .await?
            .query_opt(
                "SELECT last_seq FROM keel_spine.executions WHERE exec_id = $1",
                &[&exec_id.to_string()],
            )
            .await
            .map_err(self.err("reading an execution's last seq"))?
            .map(|r| r.get(0));
        Ok(last.is_some_and(|l| u64::try_from(l).unwrap_or(0) > seq))
    }

    async fn read_all(&self, from_offset: u64, limit: usize) -> Result<Vec<Committed>, SpineError> {
        // Every batch holds at least one event, so `limit` batches hold enough. Only offsets of
        // transactions older than the oldest one still running: every later commit's offsets
        // are above them (docs/decisions/133).
        let rows = self
            .reader()
            .await?
            .query(
                "SELECT first_offset, exec_id, first_seq, body FROM keel_spine.batches
                 WHERE last_offset >= $1
                   AND last_offset < (pg_snapshot_xmin(pg_current_snapshot())::text::int8 + $3) * 65536
                 ORDER BY last_offset LIMIT $2",
                &[
                    &to_i64(from_offset),
                    &i64::try_from(limit).unwrap_or(i64::MAX),
                    &self.inner.shift,
                ],
            )
            .await
            .map_err(self.err("reading the log"))?;
        self.decode_rows(rows, from_offset, limit).await
    }

    fn subscribe(&self, from_offset: u64) -> BoxStream<'static, Result<Committed, SpineError>> {
        crate::log::follow(
            self.clone(),
            self.inner.head.clone(),
            self.inner.poll,
            from_offset,
        )
    }

    async fn list_unfinished(&self) -> Result<Vec<ExecSummary>, SpineError> {
        let rows = self
            .reader()
            .await?
            .query(
                "SELECT exec_id, tenant, last_seq FROM keel_spine.executions
                 WHERE NOT ended AND last_seq > 0 ORDER BY exec_id",
                &[],
            )
            .await
            .map_err(self.err("listing unfinished executions"))?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let key: String = row.get(0);
            let last_seq: i64 = row.get(2);
            let exec_id = key.parse().map_err(|_| SpineError::Corrupt {
                path: self.inner.shown.clone(),
                detail: format!("keel_spine.executions has a malformed exec_id {key:?}"),
            })?;
            out.push(ExecSummary {
                exec_id,
                tenant: TenantId(row.get(1)),
                last_seq: u64::try_from(last_seq).unwrap_or(0),
            });
        }
        Ok(out)
    }

    async fn link_subject(
        &self,
        exec_id: ExecId,
        tenant: &str,
        subject: &str,
    ) -> Result<(), SpineError> {
        PgEventLog::link_subject(self, exec_id, tenant, subject).await
    }

    async fn subject_of(&self, exec_id: ExecId) -> Result<Option<String>, SpineError> {
        PgEventLog::subject_of(self, exec_id).await
    }

    /// The database (as errors show it): a ledger or rate store on the same database
    /// ([`PgEventLog::write_side`]) has the same, and a runner carries their writes in its appends.
    fn side_store(&self) -> Option<&Path> {
        Some(&self.inner.shown)
    }

    async fn append_with(
        &self,
        exec_id: ExecId,
        expected_seq: u64,
        events: &[Event],
        side: Vec<SideWrite>,
        durable: bool,
    ) -> Result<Appended, SpineError> {
        if events.is_empty() {
            return Err(SpineError::InvalidAppend {
                exec_id,
                detail: "empty batch".into(),
            });
        }
        self.send_with(exec_id, expected_seq, events, None, side, durable)
            .await
    }
}
