//! The writer task and its group commit on PostgreSQL.
//!
//! Appenders encode their events on their own tasks and send a request here. The writer takes
//! the first request, drains every request already queued (up to a cap) and commits them all in
//! one transaction: one commit (one WAL flush) for the whole group. While it waits on the commit,
//! new requests queue and form the next group, so one process's concurrent appenders share
//! transactions while a lone appender pays exactly one commit.
//!
//! A group's transaction, pipelined in two round trips (docs/decisions/090 and 130):
//! 1. `BEGIN`; take the transaction's id (its events' offsets are `((xid + shift) << 16) + 1 …`,
//!    so groups of different processes commit in parallel and readers stop below the oldest
//!    transaction still running); create the rows of executions new to the spine; read and lock
//!    the group's executions, in `exec_id` order.
//! 2. Insert the accepted batches, upsert their executions, drop the new rows no append used,
//!    `COMMIT`; then, in a transaction of its own, `pg_notify`.
//!
//! The notification stays out of the append's transaction: PostgreSQL serialises the commits of
//! notifying transactions on one lock held through their WAL flush, which would put back the
//! very queue across processes that numbering by transaction id removes. A notification carries
//! no offset; it only wakes the subscribers of other processes.
//!
//! Conflicts, fences and refusals are decided between the two from the locked rows, so they never
//! disturb the rest of the group; a storage error fails the whole group (nothing of it commits).
//!
//! Side writes (`crate::side`: the tool ledger's rows and rate takes) of the accepted requests run
//! in the same transaction, one statement each, pipelined in waves: a wave ends at each request's
//! next rate take, since a refused take skips what follows it. The last wave rides in round trip
//! 2 unless it begins a ledger key (whose answer may need a read of its own). A group of side
//! writes only locks no execution, and commits without waiting for the flush when none of them
//! must be durable (rate takes alone, as the embedded spine does).
//!
//! Most groups need neither decision round trip: [`one_trip`] sends them whole and falls back to
//! the two round trips above only when an execution is not where the group expects it.

mod one_trip;

use super::schema::db_err;
use crate::error::SpineError;
use crate::log::AppendAck;
use crate::side::{Appended, LedgerRow, SideAnswer, SideWrite};
use crate::sqlite::WriterStats;
use keel_core::ExecId;
use keel_core::control::CONTROL_STREAM;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement};

/// Most requests committed together; bounds one transaction's size and latency.
const MAX_GROUP_REQUESTS: usize = 1024;
/// Most events committed together (a single larger append still goes alone).
const MAX_GROUP_EVENTS: usize = 16_384;
/// Most events of one transaction: the offsets below its transaction id.
pub(super) const MAX_TRANSACTION_EVENTS: u64 = (1 << super::schema::OFFSET_BITS) - 1;
/// The channel subscribers of every process listen on; a notification means "something
/// committed" (no payload: the transaction numbering it is over by then).
pub(super) const CHANNEL: &str = "keel_spine";

/// One append call on its way to the writer.
pub(super) struct AppendRequest {
    pub exec_id: ExecId,
    pub exec_key: String,
    pub tenant: String,
    pub expected_seq: u64,
    pub ends: bool,
    /// The lease epoch the append is fenced by (`None`: unfenced).
    pub fence: Option<u64>,
    /// Number of events in the batch (0: a request of side writes only).
    pub len: u64,
    /// The batch, already encoded by the appender as a JSON array of events.
    pub body: String,
    /// Applied in the group's transaction if the events are accepted.
    pub side: Vec<SideWrite>,
    /// False when the request asks for no flush (side writes only, none of which must be
    /// durable); a request with events is always flushed (`synchronous_commit` of the writer).
    pub durable: bool,
    pub reply: oneshot::Sender<Result<Appended, SpineError>>,
}

/// The writer's connection and its prepared statements.
pub(super) struct Conn {
    client: Client,
    /// The session's server process id.
    pid: i32,
    /// `offset_shift` of the database (docs/decisions/133).
    shift: i64,
    xact_id: Statement,
    create_execs: Statement,
    lock_execs: Statement,
    insert_batches: Statement,
    upsert_execs: Statement,
    drop_unused: Statement,
    /// Sent after `COMMIT`, as a transaction of its own that waits for no flush: reads the
    /// control stream's last seq and wakes the other processes.
    after_commit: Statement,
    /// The one-round-trip group's statements ([`one_trip`]).
    expect_execs: Statement,
    insert_batches_here: Statement,
    side: SideStatements,
}

/// The side writes' statements (`crate::side`), prepared once on the writer's connection.
struct SideStatements {
    ledger_begin: Statement,
    ledger_read: Statement,
    ledger_finish: Statement,
    ledger_release: Statement,
    rate_take: Statement,
    /// Locks (creating if absent) the budgets a group takes from, in key order: see
    /// [`lock_rates`].
    lock_rates: Statement,
}

/// Reads a ledger row of `keel_spine.tool_ledger` (columns in [`LEDGER_COLUMNS`] order).
pub(super) const LEDGER_COLUMNS: &str =
    "tool, exec_id, call_id, state, status, output_ref, actual_cost";

pub(super) fn ledger_row(r: &tokio_postgres::Row) -> LedgerRow {
    LedgerRow {
        tool: r.get(0),
        exec_id: r.get(1),
        call_id: r.get(2),
        state: r.get(3),
        status: r.get(4),
        output_ref: r.get(5),
        actual_cost: r.get(6),
    }
}

impl SideStatements {
    async fn prepare(client: &Client, shown: &Path) -> Result<Self, SpineError> {
        let err = |c| db_err(shown, c);
        Ok(Self {
            // Inserted: one row, `begun`. A conflict with a row this statement's snapshot sees:
            // that row. A conflict with a row committed since (another process, same key, same
            // instant): nothing, and the writer reads it again.
            ledger_begin: client
                .prepare(&format!(
                    "WITH ins AS (
                         INSERT INTO keel_spine.tool_ledger (tenant, key, tool, exec_id, call_id, state, started_at)
                         VALUES ($1, $2, $3, $4, $5, 'started', $6) ON CONFLICT DO NOTHING RETURNING 1)
                     SELECT {LEDGER_COLUMNS}, false FROM keel_spine.tool_ledger
                     WHERE tenant = $1 AND key = $2 AND NOT EXISTS (SELECT 1 FROM ins)
                     UNION ALL SELECT $3, $4, $5, 'started', NULL, NULL, NULL, true FROM ins"
                ))
                .await
                .map_err(err("preparing the ledger begin"))?,
            ledger_read: client
                .prepare(&format!(
                    "SELECT {LEDGER_COLUMNS}, false FROM keel_spine.tool_ledger WHERE tenant = $1 AND key = $2"
                ))
                .await
                .map_err(err("preparing the ledger read"))?,
            ledger_finish: client
                .prepare(
                    "UPDATE keel_spine.tool_ledger SET state = 'finished', finished_at = $3,
                         status = $4, output_ref = $5, actual_cost = $6
                     WHERE tenant = $1 AND key = $2",
                )
                .await
                .map_err(err("preparing the ledger finish"))?,
            ledger_release: client
                .prepare("DELETE FROM keel_spine.tool_ledger WHERE tenant = $1 AND key = $2")
                .await
                .map_err(err("preparing the ledger release"))?,
            // GCRA in one statement: admitted iff the stored arrival time (or now, if earlier or
            // absent) is within the tolerance; the upsert's row lock serialises every process.
            rate_take: client
                .prepare(
                    "INSERT INTO keel_spine.tool_rates AS r (tenant, tool, tat_us)
                     VALUES ($1, $2, $3::int8 + $4::int8)
                     ON CONFLICT (tenant, tool) DO UPDATE SET tat_us = greatest(r.tat_us, $3::int8) + $4::int8
                     WHERE greatest(r.tat_us, $3::int8) - $3::int8 <= $5::int8
                     RETURNING tat_us",
                )
                .await
                .map_err(err("preparing the rate take"))?,
            // A row created here (arrival time 0) admits its first take as an absent one does.
            lock_rates: client
                .prepare(
                    "INSERT INTO keel_spine.tool_rates AS r (tenant, tool, tat_us)
                     SELECT t, o, 0 FROM unnest($1::text[], $2::text[]) AS u(t, o) ORDER BY t, o
                     ON CONFLICT (tenant, tool) DO UPDATE SET tat_us = r.tat_us",
                )
                .await
                .map_err(err("preparing the rate budgets' lock"))?,
        })
    }
}

impl Conn {
    pub(super) async fn prepare(client: Client, shown: &Path) -> Result<Self, SpineError> {
        let err = |c| db_err(shown, c);
        let shift = super::schema::offset_shift(&client, shown).await?;
        let pid: i32 = client
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .map_err(err("reading the session's process id"))?
            .get(0);
        let xact_id = client
            .prepare("SELECT pg_current_xact_id()::text::int8")
            .await
            .map_err(err("preparing the transaction id"))?;
        // A new execution's row exists before it is locked, so two processes' first appends to
        // it queue on the row like any others (the second waits here for the first to end).
        let create_execs = client
            .prepare(
                "INSERT INTO keel_spine.executions (exec_id, tenant)
                 SELECT * FROM unnest($1::text[], $2::text[]) ORDER BY 1
                 ON CONFLICT DO NOTHING RETURNING exec_id",
            )
            .await
            .map_err(err("preparing the executions insert"))?;
        let lock_execs = client
            .prepare(
                "SELECT exec_id, tenant, last_seq, ended, lease_epoch FROM keel_spine.executions
                 WHERE exec_id = ANY($1::text[]) ORDER BY exec_id FOR UPDATE",
            )
            .await
            .map_err(err("preparing the executions lock"))?;
        let insert_batches = client
            .prepare(
                "INSERT INTO keel_spine.batches (first_offset, last_offset, exec_id, first_seq, last_seq, body)
                 SELECT * FROM unnest($1::int8[], $2::int8[], $3::text[], $4::int8[], $5::int8[], $6::text[])",
            )
            .await
            .map_err(err("preparing the batch insert"))?;
        let upsert_execs = client
            .prepare(
                "INSERT INTO keel_spine.executions (exec_id, tenant, last_seq, ended)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::bool[])
                 ON CONFLICT (exec_id) DO UPDATE SET last_seq = EXCLUDED.last_seq,
                     ended = EXCLUDED.ended,
                     lease_owner = CASE WHEN EXCLUDED.ended THEN NULL ELSE keel_spine.executions.lease_owner END,
                     lease_expires = CASE WHEN EXCLUDED.ended THEN NULL ELSE keel_spine.executions.lease_expires END",
            )
            .await
            .map_err(err("preparing the executions upsert"))?;
        let drop_unused = client
            .prepare(
                "DELETE FROM keel_spine.executions WHERE exec_id = ANY($1::text[]) AND last_seq = 0",
            )
            .await
            .map_err(err("preparing the executions cleanup"))?;
        let after_commit = client
            .prepare(&format!(
                "SELECT (SELECT coalesce(max(last_seq), 0) FROM keel_spine.executions
                         WHERE exec_id = '{CONTROL_STREAM}'),
                        set_config('synchronous_commit', 'off', true), pg_notify('{CHANNEL}', '')"
            ))
            .await
            .map_err(err("preparing the statement after a commit"))?;
        let expect_execs = client
            .prepare(
                "SELECT keel_spine.expect(count(*) = cardinality($1::text[])) FROM (
                     SELECT 1 FROM keel_spine.executions e
                     JOIN unnest($1::text[], $2::text[], $3::int8[], $4::int8[])
                         AS x(exec_id, tenant, last_seq, epoch) ON e.exec_id = x.exec_id
                     WHERE e.tenant = x.tenant AND e.last_seq = x.last_seq AND NOT e.ended
                         AND (x.epoch IS NULL OR e.lease_epoch = x.epoch)
                     ORDER BY e.exec_id FOR UPDATE OF e) AS locked",
            )
            .await
            .map_err(err("preparing the executions check"))?;
        let insert_batches_here = client
            .prepare(
                "INSERT INTO keel_spine.batches (first_offset, last_offset, exec_id, first_seq, last_seq, body)
                 SELECT base + f, base + l, e, fs, ls, body
                 FROM (SELECT (pg_current_xact_id()::text::int8 + $7) * 65536 AS base) AS b,
                      unnest($1::int8[], $2::int8[], $3::text[], $4::int8[], $5::int8[], $6::text[])
                          AS u(f, l, e, fs, ls, body)",
            )
            .await
            .map_err(err("preparing the batch insert"))?;
        let side = SideStatements::prepare(&client, shown).await?;
        Ok(Self {
            side,
            client,
            pid,
            shift,
            xact_id,
            create_execs,
            lock_execs,
            insert_batches,
            upsert_execs,
            drop_unused,
            after_commit,
            expect_execs,
            insert_batches_here,
        })
    }
}

impl Conn {
    /// The database's `offset_shift`, read when the connection was prepared.
    pub(super) fn shift(&self) -> i64 {
        self.shift
    }

    /// The session's server process id.
    pub(super) fn pid(&self) -> i32 {
        self.pid
    }
}

/// What the writer (and the handle's readers) need to (re)connect.
#[derive(Clone)]
pub(super) struct Target {
    pub config: tokio_postgres::Config,
    pub tls: super::tls::MakeRustls,
    pub shown: PathBuf,
    pub synchronous_commit: &'static str,
    /// The writer session's server process, whose notifications this handle's listener skips
    /// (the writer wakes this process's subscribers itself).
    pub writer_pid: std::sync::Arc<std::sync::atomic::AtomicI32>,
}

impl Target {
    /// A new session to the spine's database.
    pub(super) async fn open(&self) -> Result<tokio_postgres::Client, SpineError> {
        super::open_client(
            &self.config,
            &self.tls,
            &self.shown,
            self.synchronous_commit,
        )
        .await
    }
}

/// Runs until every sender is dropped, then returns after committing what was queued.
pub(super) async fn run(
    mut conn: Option<Conn>,
    target: Target,
    mut requests: mpsc::UnboundedReceiver<AppendRequest>,
    head: watch::Sender<u64>,
    stats: std::sync::Arc<WriterStats>,
) {
    // A request that would take its group past a transaction's offsets starts the next group.
    let mut carried: Option<AppendRequest> = None;
    loop {
        let first = match carried.take() {
            Some(req) => req,
            None => match requests.recv().await {
                Some(req) => req,
                None => break,
            },
        };
        let mut events = first.len as usize;
        let mut group = vec![first];
        while group.len() < MAX_GROUP_REQUESTS && events < MAX_GROUP_EVENTS {
            match requests.try_recv() {
                Ok(req) if (events as u64).saturating_add(req.len) > MAX_TRANSACTION_EVENTS => {
                    carried = Some(req);
                    break;
                }
                Ok(req) => {
                    events += req.len as usize;
                    group.push(req);
                }
                Err(_) => break,
            }
        }
        if conn.as_ref().is_none_or(|c| c.client.is_closed()) {
            // The server restarted or the connection dropped: one reconnect per group.
            conn = match target.open().await {
                Ok(client) => Conn::prepare(client, &target.shown).await.ok(),
                Err(_) => None,
            };
            if let Some(c) = &conn {
                target.writer_pid.store(c.pid, Ordering::Relaxed);
            }
        }
        let results = match &conn {
            Some(c) => commit_group(c, &target.shown, &group).await,
            None => group
                .iter()
                .map(|_| {
                    Err(SpineError::Storage {
                        context: "reconnecting the spine writer",
                        path: target.shown.clone(),
                        detail: "the database is unreachable".into(),
                    })
                })
                .collect(),
        };
        let newest = results
            .iter()
            .filter_map(|r| r.as_ref().ok().and_then(|a| a.ack).map(|a| a.last_offset))
            .max();
        if let Some(offset) = newest {
            let (mut n_req, mut n_ev) = (0, 0);
            for (req, r) in group.iter().zip(&results) {
                if r.as_ref().is_ok_and(|a| a.ack.is_some()) {
                    n_req += 1;
                    n_ev += req.len;
                }
            }
            stats.groups.fetch_add(1, Ordering::Relaxed);
            stats.requests.fetch_add(n_req, Ordering::Relaxed);
            stats.events.fetch_add(n_ev, Ordering::Relaxed);
            // Every commit wakes this process's subscribers, even one below the highest offset
            // seen: an older transaction ending is what lets them read past it.
            head.send_modify(|h| *h = (*h).max(offset));
        }
        for (req, result) in group.into_iter().zip(results) {
            // The appender may have given up waiting; its events are committed regardless.
            let _ = req.reply.send(result);
        }
    }
}

/// What the writer knows of an execution: its locked row, then this group's appends.
#[derive(Clone)]
struct ExecInfo {
    tenant: String,
    last_seq: u64,
    ended: bool,
    epoch: u64,
}

async fn commit_group(
    c: &Conn,
    shown: &Path,
    group: &[AppendRequest],
) -> Vec<Result<Appended, SpineError>> {
    match write_group(c, shown, group).await {
        Ok(results) => results,
        Err(e) => {
            let _ = c.client.batch_execute("ROLLBACK").await;
            group
                .iter()
                .map(|_| {
                    Err(SpineError::Storage {
                        context: "committing a group",
                        path: shown.to_owned(),
                        detail: e.to_string(),
                    })
                })
                .collect()
        }
    }
}

/// Where a transaction's offsets start: `(xid + shift) << 16` (its events are `base + 1 …`).
fn offset_base(xid: i64, shift: i64, shown: &Path) -> Result<u64, SpineError> {
    xid.checked_add(shift)
        .and_then(|x| x.checked_mul(1 << super::schema::OFFSET_BITS))
        .and_then(|x| u64::try_from(x).ok())
        .ok_or_else(|| SpineError::Storage {
            context: "numbering a group's events",
            path: shown.to_owned(),
            detail: format!("transaction id {xid} is past the offsets' range"),
        })
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

async fn write_group(
    c: &Conn,
    shown: &Path,
    group: &[AppendRequest],
) -> Result<Vec<Result<Appended, SpineError>>, SpineError> {
    if group.iter().all(|r| r.len == 0) {
        return write_side_only(c, shown, group).await;
    }
    if let Some(results) = one_trip::try_commit(c, shown, group).await? {
        return Ok(results);
    }
    let mut keys: Vec<&str> = group
        .iter()
        .filter(|r| r.len > 0)
        .map(|r| r.exec_key.as_str())
        .collect();
    keys.sort_unstable();
    keys.dedup();
    // Executions a request may create (appending seq 1), with the tenant of their first request.
    let mut new_keys: Vec<&str> = Vec::new();
    let mut new_tenants: Vec<&str> = Vec::new();
    for r in group.iter().filter(|r| r.len > 0 && r.expected_seq == 0) {
        if !new_keys.contains(&r.exec_key.as_str()) {
            new_keys.push(&r.exec_key);
            new_tenants.push(&r.tenant);
        }
    }
    // Round trip 1, pipelined: begin, take the transaction id, create and lock the executions.
    let create_params: [&(dyn ToSql + Sync); 2] = [&new_keys, &new_tenants];
    let lock_params: [&(dyn ToSql + Sync); 1] = [&keys];
    let create = async {
        if new_keys.is_empty() {
            return Ok(Vec::new());
        }
        c.client.query(&c.create_execs, &create_params).await
    };
    let rates = rate_keys(group);
    let (begin, xid_row, created, rows, rates_locked) = tokio::join!(
        c.client.batch_execute("BEGIN"),
        c.client.query_one(&c.xact_id, &[]),
        create,
        c.client.query(&c.lock_execs, &lock_params),
        lock_rates(c, &rates),
    );
    begin.map_err(db_err(shown, "starting a transaction"))?;
    let xid: i64 = xid_row
        .map_err(db_err(shown, "taking the transaction id"))?
        .get(0);
    let created: Vec<String> = created
        .map_err(db_err(shown, "creating executions"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    rates_locked.map_err(db_err(shown, "locking rate budgets"))?;
    let mut known: HashMap<String, ExecInfo> = HashMap::with_capacity(keys.len());
    for row in rows.map_err(db_err(shown, "locking the executions"))? {
        let last_seq: i64 = row.get(2);
        let epoch: i64 = row.get(4);
        known.insert(
            row.get::<_, String>(0),
            ExecInfo {
                tenant: row.get(1),
                last_seq: u64::try_from(last_seq).unwrap_or(0),
                ended: row.get(3),
                epoch: u64::try_from(epoch).unwrap_or(0),
            },
        );
    }
    let mut next_offset = offset_base(xid, c.shift, shown)? + 1;
    let mut results = Vec::with_capacity(group.len());
    let mut batches = Batches::default();
    // Per execution, in first-appearance order: its state after this group.
    let mut touched: Vec<&str> = Vec::new();
    for req in group {
        if req.len == 0 {
            results.push(Ok(None));
            continue;
        }
        let info = known.get(&req.exec_key);
        if let Err(refusal) = check(req, info) {
            results.push(Err(refusal));
            continue;
        }
        let first_offset = next_offset;
        let ack = AppendAck {
            first_offset,
            last_offset: first_offset + req.len - 1,
            last_seq: req.expected_seq + req.len,
            control_seq: None,
        };
        next_offset = ack.last_offset + 1;
        batches.push(req, &ack);
        let epoch = info.map_or(0, |i| i.epoch);
        if !touched.contains(&req.exec_key.as_str()) {
            touched.push(&req.exec_key);
        }
        known.insert(
            req.exec_key.clone(),
            ExecInfo {
                tenant: req.tenant.clone(),
                last_seq: ack.last_seq,
                ended: req.ends,
                epoch,
            },
        );
        results.push(Ok(Some(ack)));
    }
    let mut side = SideRun::new(group, &results);
    if batches.first.is_empty() {
        // Every append was refused: what is left are side writes of requests without events.
        side.all_waves(c, shown).await?;
        if side.any && !created.is_empty() {
            c.client
                .execute(&c.drop_unused, &[&created])
                .await
                .map_err(db_err(shown, "dropping unused executions"))?;
        }
        c.client
            .batch_execute(if side.any { "COMMIT" } else { "ROLLBACK" })
            .await
            .map_err(db_err(shown, "ending a transaction"))?;
        return Ok(side.answer(results));
    }
    side.waves_before_last(c, shown).await?;
    let mut execs = Execs::default();
    for &key in &touched {
        if let Some(i) = known.get(key) {
            execs.push(key, i);
        }
    }
    let unused: Vec<&str> = created
        .iter()
        .map(String::as_str)
        .filter(|k| !touched.contains(k))
        .collect();
    // Round trip 2, pipelined. After a failed statement the server skips the rest of the
    // transaction and COMMIT answers ROLLBACK, so every result is checked, COMMIT's last.
    let batch_params: [&(dyn ToSql + Sync); 6] = [
        &batches.first,
        &batches.last,
        &batches.exec,
        &batches.first_seq,
        &batches.last_seq,
        &batches.body,
    ];
    let exec_params: [&(dyn ToSql + Sync); 4] =
        [&execs.key, &execs.tenant, &execs.last_seq, &execs.ended];
    let unused_params: [&(dyn ToSql + Sync); 1] = [&unused];
    let drop_unused = async {
        if unused.is_empty() {
            return Ok(0);
        }
        c.client.execute(&c.drop_unused, &unused_params).await
    };
    let last_wave = side.next_wave();
    let (ins, ups, dropped, last, commit, control) = tokio::join!(
        c.client.execute(&c.insert_batches, &batch_params),
        c.client.execute(&c.upsert_execs, &exec_params),
        drop_unused,
        run_wave(c, &last_wave),
        c.client.batch_execute("COMMIT"),
        // After the commit: the control stream's last seq, as a read right after the append
        // would see it (it rides back on every ack, `AppendAck::control_seq`), and the wake-up
        // of other processes (if it fails, they poll).
        c.client.query_one(&c.after_commit, &[]),
    );
    ins.map_err(db_err(shown, "inserting batches"))?;
    ups.map_err(db_err(shown, "recording executions"))?;
    dropped.map_err(db_err(shown, "dropping unused executions"))?;
    let last = last.map_err(db_err(shown, "applying side writes"))?;
    commit.map_err(db_err(shown, "committing"))?;
    side.record(&last_wave, last, c, shown).await?;
    // The group is committed either way; without the read, callers make their own.
    let control = control
        .ok()
        .and_then(|r| u64::try_from(r.get::<_, i64>(0)).ok());
    for ack in results.iter_mut().flatten().flatten() {
        ack.control_seq = control;
    }
    Ok(side.answer(results))
}

/// A group of side writes only: no head, no executions; flushed only if one must be durable.
async fn write_side_only(
    c: &Conn,
    shown: &Path,
    group: &[AppendRequest],
) -> Result<Vec<Result<Appended, SpineError>>, SpineError> {
    let flush = group.iter().any(|r| r.durable);
    let begin = if flush {
        "BEGIN"
    } else {
        "BEGIN; SET LOCAL synchronous_commit = off"
    };
    let results = group.iter().map(|_| Ok(None)).collect::<Vec<_>>();
    let mut side = SideRun::new(group, &results);
    let rates = rate_keys(group);
    // The common group (rate takes alone) is one round trip: begin, the writes, commit.
    let last_wave = if side.must_run_apart() {
        let (began, locked) = tokio::join!(c.client.batch_execute(begin), lock_rates(c, &rates));
        began.map_err(db_err(shown, "starting a transaction"))?;
        locked.map_err(db_err(shown, "locking rate budgets"))?;
        side.waves_before_last(c, shown).await?;
        side.next_wave()
    } else {
        let wave = side.next_wave();
        let (began, locked, done, commit) = tokio::join!(
            c.client.batch_execute(begin),
            lock_rates(c, &rates),
            run_wave(c, &wave),
            c.client.batch_execute("COMMIT"),
        );
        began.map_err(db_err(shown, "starting a transaction"))?;
        locked.map_err(db_err(shown, "locking rate budgets"))?;
        let done = done.map_err(db_err(shown, "applying side writes"))?;
        commit.map_err(db_err(shown, "committing"))?;
        side.record(&wave, done, c, shown).await?;
        return Ok(side.answer(results));
    };
    let (last, commit) = tokio::join!(run_wave(c, &last_wave), c.client.batch_execute("COMMIT"));
    let last = last.map_err(db_err(shown, "applying side writes"))?;
    commit.map_err(db_err(shown, "committing"))?;
    side.record(&last_wave, last, c, shown).await?;
    Ok(side.answer(results))
}

/// The rate budgets a group's side writes take from, deduplicated: `(tenants, tools)`.
fn rate_keys(group: &[AppendRequest]) -> (Vec<&str>, Vec<&str>) {
    let mut keys: Vec<(&str, &str)> = group
        .iter()
        .flat_map(|r| &r.side)
        .filter_map(|w| match w {
            SideWrite::RateTake { tenant, tool, .. } => Some((tenant.as_str(), tool.as_str())),
            _ => None,
        })
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys.into_iter().unzip()
}

/// Locks the budgets of `keys` ([`rate_keys`]) in key order, before the group takes from any:
/// the takes themselves run in request order, and two processes' groups taking from two budgets
/// in opposite orders would deadlock (each costing `deadlock_timeout` and a failed group). Run
/// after the executions' lock, which every group takes first, in `exec_id` order.
async fn lock_rates(
    c: &Conn,
    (tenants, tools): &(Vec<&str>, Vec<&str>),
) -> Result<u64, tokio_postgres::Error> {
    if tenants.is_empty() {
        return Ok(0);
    }
    c.client
        .execute(&c.side.lock_rates, &[tenants, tools])
        .await
}

/// One statement's result: rows of a begin or a take, or a count.
enum Done {
    Rows(Vec<tokio_postgres::Row>),
    Count,
}

/// Runs a wave's statements pipelined, in order.
async fn run_wave(
    c: &Conn,
    wave: &[(usize, &SideWrite)],
) -> Result<Vec<Done>, tokio_postgres::Error> {
    let runs = wave.iter().map(|(_, w)| run_one(c, w));
    futures::future::join_all(runs).await.into_iter().collect()
}

async fn run_one(c: &Conn, write: &SideWrite) -> Result<Done, tokio_postgres::Error> {
    let s = &c.side;
    match write {
        SideWrite::LedgerBegin {
            tenant,
            key,
            tool,
            exec_id,
            call_id,
            now,
        } => {
            let p: [&(dyn ToSql + Sync); 6] = [tenant, key, tool, exec_id, call_id, now];
            c.client.query(&s.ledger_begin, &p).await.map(Done::Rows)
        }
        SideWrite::LedgerFinish {
            tenant,
            key,
            now,
            status,
            output_ref,
            actual_cost,
        } => {
            let p: [&(dyn ToSql + Sync); 6] = [tenant, key, now, status, output_ref, actual_cost];
            c.client
                .execute(&s.ledger_finish, &p)
                .await
                .map(|_| Done::Count)
        }
        SideWrite::LedgerRelease { tenant, key } => {
            let p: [&(dyn ToSql + Sync); 2] = [tenant, key];
            c.client
                .execute(&s.ledger_release, &p)
                .await
                .map(|_| Done::Count)
        }
        SideWrite::RateTake {
            tenant,
            tool,
            interval_us,
            tolerance_us,
            now_us,
        } => {
            let p: [&(dyn ToSql + Sync); 5] = [tenant, tool, now_us, interval_us, tolerance_us];
            c.client.query(&s.rate_take, &p).await.map(Done::Rows)
        }
    }
}

/// The side writes of a group's accepted requests, applied wave by wave, and their answers.
struct SideRun<'a> {
    group: &'a [AppendRequest],
    /// Per request: its side writes still to apply start here (`len`: none left).
    next: Vec<usize>,
    answers: Vec<Vec<SideAnswer>>,
    /// True if any side write is applied (a transaction of refused appends still commits).
    any: bool,
}

impl<'a> SideRun<'a> {
    fn new<T>(group: &'a [AppendRequest], results: &[Result<Option<T>, SpineError>]) -> Self {
        // A refused append applies none of its side writes.
        let next = group
            .iter()
            .zip(results)
            .map(|(r, res)| if res.is_ok() { 0 } else { r.side.len() })
            .collect();
        Self {
            group,
            next,
            answers: group
                .iter()
                .map(|r| Vec::with_capacity(r.side.len()))
                .collect(),
            any: false,
        }
    }

    /// The next wave: each request's writes up to and including its next rate take.
    fn next_wave(&mut self) -> Vec<(usize, &'a SideWrite)> {
        let mut wave = Vec::new();
        for (i, req) in self.group.iter().enumerate() {
            let Some(start) = self.next.get(i).copied() else {
                continue;
            };
            let rest = req.side.get(start..).unwrap_or_default();
            let end = rest
                .iter()
                .position(|w| matches!(w, SideWrite::RateTake { .. }))
                .map_or(rest.len(), |p| p + 1);
            wave.extend(rest.iter().take(end).map(|w| (i, w)));
            if let Some(n) = self.next.get_mut(i) {
                *n = start + end;
            }
        }
        self.any |= !wave.is_empty();
        wave
    }

    /// True if a wave after the one `next_wave` would give next is needed, or that one begins a
    /// ledger key: it then runs before the group's last round trip.
    fn must_run_apart(&self) -> bool {
        self.group.iter().enumerate().any(|(i, req)| {
            let start = self.next.get(i).copied().unwrap_or(usize::MAX);
            let rest = req.side.get(start..).unwrap_or_default();
            let take = rest
                .iter()
                .position(|w| matches!(w, SideWrite::RateTake { .. }));
            let upto = take.map_or(rest.len(), |p| p + 1);
            take.is_some_and(|p| p + 1 < rest.len())
                || rest
                    .iter()
                    .take(upto)
                    .any(|w| matches!(w, SideWrite::LedgerBegin { .. }))
        })
    }

    /// Runs waves until what is left can ride in the group's last round trip.
    async fn waves_before_last(&mut self, c: &Conn, shown: &Path) -> Result<(), SpineError> {
        while self.must_run_apart() {
            let wave = self.next_wave();
            let done = run_wave(c, &wave)
                .await
                .map_err(db_err(shown, "applying side writes"))?;
            self.record(&wave, done, c, shown).await?;
        }
        Ok(())
    }

    /// Runs every wave (a transaction with no events to insert).
    async fn all_waves(&mut self, c: &Conn, shown: &Path) -> Result<(), SpineError> {
        loop {
            let wave = self.next_wave();
            if wave.is_empty() {
                return Ok(());
            }
            let done = run_wave(c, &wave)
                .await
                .map_err(db_err(shown, "applying side writes"))?;
            self.record(&wave, done, c, shown).await?;
        }
    }

    /// Turns a wave's results into answers; a refused take skips the rest of its request.
    async fn record(
        &mut self,
        wave: &[(usize, &SideWrite)],
        done: Vec<Done>,
        c: &Conn,
        shown: &Path,
    ) -> Result<(), SpineError> {
        for ((i, write), done) in wave.iter().zip(done) {
            let answer = match (write, done) {
                (SideWrite::RateTake { .. }, Done::Rows(rows)) if rows.is_empty() => {
                    SideAnswer::Refused
                }
                (SideWrite::RateTake { .. }, _) => SideAnswer::Admitted,
                (SideWrite::LedgerBegin { tenant, key, .. }, Done::Rows(rows)) => {
                    match rows.first() {
                        Some(r) if r.get::<_, bool>(7) => SideAnswer::Begun,
                        Some(r) => SideAnswer::Existing(ledger_row(r)),
                        None => {
                            // Committed by another process since this statement's snapshot.
                            let p: [&(dyn ToSql + Sync); 2] = [tenant, key];
                            let row = c
                                .client
                                .query_opt(&c.side.ledger_read, &p)
                                .await
                                .map_err(db_err(shown, "reading a ledger entry"))?;
                            match row {
                                Some(r) => SideAnswer::Existing(ledger_row(&r)),
                                None => {
                                    return Err(SpineError::Storage {
                                        context: "recording a ledger key started",
                                        path: shown.to_owned(),
                                        detail:
                                            "the entry was released while this call began; retry"
                                                .into(),
                                    });
                                }
                            }
                        }
                    }
                }
                _ => SideAnswer::Written,
            };
            let refused = answer == SideAnswer::Refused;
            if let Some(a) = self.answers.get_mut(*i) {
                a.push(answer);
            }
            if refused {
                let len = self.group.get(*i).map_or(0, |r| r.side.len());
                if let (Some(a), Some(n)) = (self.answers.get_mut(*i), self.next.get_mut(*i)) {
                    a.extend(std::iter::repeat_n(
                        SideAnswer::Skipped,
                        len.saturating_sub(*n),
                    ));
                    *n = len;
                }
            }
        }
        Ok(())
    }

    fn answer(
        self,
        results: Vec<Result<Option<AppendAck>, SpineError>>,
    ) -> Vec<Result<Appended, SpineError>> {
        results
            .into_iter()
            .zip(self.answers)
            .map(|(r, answers)| r.map(|ack| Appended { ack, answers }))
            .collect()
    }
}

/// The accepted batches, as columns for one `unnest` insert.
#[derive(Default)]
struct Batches<'a> {
    first: Vec<i64>,
    last: Vec<i64>,
    exec: Vec<&'a str>,
    first_seq: Vec<i64>,
    last_seq: Vec<i64>,
    body: Vec<&'a str>,
}

impl<'a> Batches<'a> {
    fn push(&mut self, req: &'a AppendRequest, ack: &AppendAck) {
        self.first.push(to_i64(ack.first_offset));
        self.last.push(to_i64(ack.last_offset));
        self.exec.push(&req.exec_key);
        self.first_seq.push(to_i64(req.expected_seq + 1));
        self.last_seq.push(to_i64(ack.last_seq));
        self.body.push(&req.body);
    }
}

/// The executions' rows after the group, as columns for one `unnest` upsert.
#[derive(Default)]
struct Execs<'a> {
    key: Vec<&'a str>,
    tenant: Vec<String>,
    last_seq: Vec<i64>,
    ended: Vec<bool>,
}

impl<'a> Execs<'a> {
    fn push(&mut self, key: &'a str, i: &ExecInfo) {
        self.key.push(key);
        self.tenant.push(i.tenant.clone());
        self.last_seq.push(to_i64(i.last_seq));
        self.ended.push(i.ended);
    }
}

fn check(req: &AppendRequest, known: Option<&ExecInfo>) -> Result<(), SpineError> {
    let actual_seq = known.map_or(0, |i| i.last_seq);
    if let Some(epoch) = req.fence {
        let current = known.map_or(0, |i| i.epoch);
        if current != epoch {
            return Err(SpineError::LeaseLost {
                exec_id: req.exec_id,
                epoch,
                current_epoch: current,
            });
        }
    }
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
