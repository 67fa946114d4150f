//! The embedded projection store: the tables in a SQLite file of their own (`DATA/observe.db`).
//!
//! The consumer's position is a durable checkpoint: every batch of events is applied and the next
//! offset recorded in one SQLite transaction, so a consumer that stops (or is killed) resumes at
//! exactly the first event it had not applied, and no event is applied twice — the transaction
//! takes the write lock first and re-reads the checkpoint, so two processes sharing the file
//! (`keel serve` and `keel project --follow`) never apply a batch twice.
//!
//! The file is separate from the spine's so projection writes never contend with appends for
//! SQLite's single writer lock. [`crate::sql`] attaches it twice, as `traces` and as `gold`, so
//! the seed's queries (`FROM traces.steps`, `FROM gold.executions`) run unchanged.

use crate::error::{ObserveError, Result, store};
use crate::projection::{Change, changes};
use crate::sql::{Limits, Rows, Scope, Stop};
use crate::store::{ProjectionStore, TABLES};
use async_trait::async_trait;
use keel_spine::Committed;
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Schema of the projection file. Bump [`SCHEMA_VERSION`] when it changes: an older file is
/// rebuilt from the spine (projections are derived data), never migrated in place.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS steps (
    log_offset    INTEGER PRIMARY KEY,
    trace_id      TEXT    NOT NULL,
    exec_id       TEXT    NOT NULL,
    tenant        TEXT    NOT NULL,
    seq           INTEGER NOT NULL,
    step_n        INTEGER NOT NULL,
    ts            TEXT    NOT NULL,
    event_type    TEXT    NOT NULL,
    summary       TEXT    NOT NULL,
    model         TEXT,
    tokens_in     INTEGER,
    tokens_out    INTEGER,
    cost          REAL,
    latency_ms    INTEGER,
    tool          TEXT,
    status        TEXT,
    output_ref    TEXT,
    gate_verdict  TEXT,
    memory_chunks TEXT
);
CREATE INDEX IF NOT EXISTS steps_by_trace ON steps (trace_id, seq);
CREATE TABLE IF NOT EXISTS executions (
    exec_id          TEXT    PRIMARY KEY,
    trace_id         TEXT    NOT NULL,
    tenant           TEXT    NOT NULL,
    strategy_version TEXT    NOT NULL,
    experiment_arm   TEXT,
    experiment       TEXT,
    experiment_unit  TEXT,
    replay_of        TEXT,
    goal             TEXT    NOT NULL,
    started_at       TEXT    NOT NULL,
    finished_at      TEXT,
    outcome          TEXT,
    outcome_success  INTEGER,
    steps_n          INTEGER NOT NULL DEFAULT 0,
    tokens_in        INTEGER NOT NULL DEFAULT 0,
    tokens_out       INTEGER NOT NULL DEFAULT 0,
    cost_micros      INTEGER NOT NULL DEFAULT 0,
    cost_known       INTEGER NOT NULL DEFAULT 1,
    total_cost       REAL GENERATED ALWAYS AS (CASE WHEN cost_known THEN cost_micros / 1e6 END) VIRTUAL,
    model_calls      INTEGER NOT NULL DEFAULT 0,
    tool_calls       INTEGER NOT NULL DEFAULT 0,
    tool_failures    INTEGER NOT NULL DEFAULT 0,
    gate_escalations INTEGER NOT NULL DEFAULT 0,
    gate_rejections  INTEGER NOT NULL DEFAULT 0,
    retrievals       INTEGER NOT NULL DEFAULT 0,
    feedback_count   INTEGER NOT NULL DEFAULT 0,
    feedback_sum     INTEGER NOT NULL DEFAULT 0,
    feedback_rating  REAL GENERATED ALWAYS AS
                         (CASE WHEN feedback_count > 0 THEN feedback_sum * 1.0 / feedback_count END) VIRTUAL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS executions_by_strategy ON executions (strategy_version, started_at);
CREATE INDEX IF NOT EXISTS executions_by_trace ON executions (trace_id);
CREATE INDEX IF NOT EXISTS executions_by_tenant ON executions (tenant, started_at);
CREATE INDEX IF NOT EXISTS executions_by_experiment ON executions (experiment, experiment_arm);
DROP INDEX IF EXISTS steps_by_exec;
CREATE INDEX IF NOT EXISTS steps_by_exec_type ON steps (exec_id, event_type, tool, status);
CREATE TABLE IF NOT EXISTS retrieval_samples (
    log_offset     INTEGER PRIMARY KEY,
    trace_id       TEXT    NOT NULL,
    exec_id        TEXT    NOT NULL,
    tenant         TEXT    NOT NULL,
    seq            INTEGER NOT NULL,
    step_n         INTEGER NOT NULL,
    ts             TEXT    NOT NULL,
    query          TEXT    NOT NULL,
    memory_version TEXT    NOT NULL,
    chunks         TEXT    NOT NULL,
    rating         INTEGER,
    rated_by       TEXT,
    rated_at       TEXT,
    rating_note    TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS retrieval_samples_by_exec ON retrieval_samples (exec_id, seq);
CREATE TABLE IF NOT EXISTS projection_state (
    name        TEXT    PRIMARY KEY,
    next_offset INTEGER NOT NULL
) WITHOUT ROWID;
";

/// Version of the projection tables' schema, stored in the file's `user_version`.
pub const SCHEMA_VERSION: i64 = 5;

/// The embedded projection store.
pub struct Projector {
    // A mutex only to make the store `Sync` (the trait is shared across tasks); one user at a
    // time is how SQLite connections work anyway.
    conn: std::sync::Mutex<Connection>,
    path: PathBuf,
    next_offset: u64,
}

impl Projector {
    /// Opens (or creates) the projection file at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_owned();
        let conn = Connection::open(&path).map_err(store(&path, "opening"))?;
        conn.execute_batch(
            // 64 MiB of page cache: index inserts keyed by random trace ids stay in memory.
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 10000;
             PRAGMA cache_size = -65536;",
        )
        .map_err(store(&path, "setting pragmas"))?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(store(&path, "reading the schema version"))?;
        if version != 0 && version != SCHEMA_VERSION {
            // Derived data: drop and rebuild rather than migrate.
            for t in TABLES.iter().chain(&["projection_state"]) {
                conn.execute_batch(&format!("DROP TABLE IF EXISTS {t};"))
                    .map_err(store(&path, "dropping an old projection table"))?;
            }
        }
        conn.execute_batch(SCHEMA)
            .map_err(store(&path, "creating the projection tables"))?;
        conn.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION};"))
            .map_err(store(&path, "writing the schema version"))?;
        let next_offset = Self::checkpoint(&conn, &path)?;
        Ok(Self {
            conn: std::sync::Mutex::new(conn),
            path,
            next_offset,
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding it leaves nothing half-done: every write is one transaction.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn checkpoint(conn: &Connection, path: &Path) -> Result<u64> {
        conn.query_row(
            "SELECT next_offset FROM projection_state WHERE name = 'main'",
            [],
            |r| r.get::<_, u64>(0),
        )
        .optional()
        .map_err(store(path, "reading the checkpoint"))
        .map(|v| v.unwrap_or(1))
    }
}

#[async_trait]
impl ProjectionStore for Projector {
    fn describe(&self) -> String {
        format!("sqlite:{}", self.path.display())
    }

    fn dialect(&self) -> &'static str {
        "SQLite (plus APPROX_PERCENTILE, `x::int`, `CURRENT_DATE - N`)"
    }

    fn day(&self, column: &str) -> String {
        format!("substr({column}, 1, 10)")
    }

    fn next_offset(&self) -> u64 {
        self.next_offset
    }

    async fn apply(&mut self, batch: &[Committed]) -> Result<()> {
        let path = self.path.clone();
        // IMMEDIATE: take the write lock before reading the checkpoint, so another process
        // sharing the file cannot apply the same events in between.
        let conn = self.conn.get_mut().unwrap_or_else(|p| p.into_inner());
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(store(&path, "starting a projection batch"))?;
        let next = Self::checkpoint(&tx, &path)?;
        let fresh: Vec<&Committed> = batch.iter().filter(|c| c.offset >= next).collect();
        let Some(last) = fresh.last().map(|c| c.offset) else {
            self.next_offset = next;
            return Ok(());
        };
        for c in &fresh {
            for change in changes(c.offset, &c.event) {
                apply_change(&tx, &path, &change)?;
            }
        }
        tx.execute(
            "INSERT INTO projection_state (name, next_offset) VALUES ('main', ?1)
             ON CONFLICT (name) DO UPDATE SET next_offset = excluded.next_offset",
            [last + 1],
        )
        .map_err(store(&path, "writing the checkpoint"))?;
        tx.commit()
            .map_err(store(&path, "committing a projection batch"))?;
        self.next_offset = last + 1;
        Ok(())
    }

    async fn reset(&mut self) -> Result<()> {
        let conn = self.conn.get_mut().unwrap_or_else(|p| p.into_inner());
        let tx = conn
            .transaction()
            .map_err(store(&self.path, "starting a reset"))?;
        for t in TABLES.iter().chain(&["projection_state"]) {
            tx.execute_batch(&format!("DELETE FROM {t};"))
                .map_err(store(&self.path, "emptying a projection table"))?;
        }
        tx.commit()
            .map_err(store(&self.path, "committing a reset"))?;
        self.next_offset = 1;
        Ok(())
    }

    async fn cursor(&self, name: &str) -> Result<u64> {
        self.conn()
            .query_row(
                "SELECT next_offset FROM projection_state WHERE name = ?1",
                [name],
                |r| r.get::<_, u64>(0),
            )
            .optional()
            .map_err(store(&self.path, "reading a cursor"))
            .map(|v| v.unwrap_or(1))
    }

    async fn set_cursor(&self, name: &str, next_offset: u64) -> Result<()> {
        crate::store::check_cursor_name(name)?;
        self.conn()
            .execute(
                "INSERT INTO projection_state (name, next_offset) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET next_offset = excluded.next_offset",
                rusqlite::params![name, next_offset],
            )
            .map_err(store(&self.path, "writing a cursor"))?;
        Ok(())
    }

    async fn dump(&self, table: &str) -> Result<Vec<String>> {
        let key = crate::store::dump_key(table)?;
        let conn = self.conn();
        let mut stmt = conn
            .prepare(&format!("SELECT * FROM {table} ORDER BY {key}"))
            .map_err(store(&self.path, "dumping a table"))?;
        let n = stmt.column_count();
        let rows = stmt
            .query_map([], |r| {
                let mut cells = Vec::with_capacity(n);
                for i in 0..n {
                    cells.push(format!("{:?}", r.get_ref(i)?));
                }
                Ok(cells.join("|"))
            })
            .map_err(store(&self.path, "dumping a table"))?;
        rows.collect::<std::result::Result<Vec<_>, _>>()
            .map_err(store(&self.path, "dumping a table"))
    }

    async fn query_limited(&self, scope: &Scope, sql: &str, limits: &Limits) -> Result<Rows> {
        let stop = Stop::new();
        // Dropped with this future (the caller went away): the query stops in its thread.
        let _cancel = CancelOnDrop(stop.clone());
        let (path, scope, sql, l) = (
            self.path.clone(),
            scope.clone(),
            sql.to_owned(),
            limits.clone(),
        );
        let s = stop.clone();
        let mut job = tokio::task::spawn_blocking(move || {
            crate::sql::run_stoppable(&path, &scope, &sql, &l, &s)
        });
        let joined = match limits.timeout {
            None => (&mut job).await,
            Some(t) => match tokio::time::timeout(t, &mut job).await {
                Ok(r) => r,
                Err(_) => {
                    stop.time_out();
                    while !job.is_finished() {
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                        stop.time_out();
                    }
                    (&mut job).await
                }
            },
        };
        joined.map_err(|e| ObserveError::Query {
            detail: format!("the query's thread failed: {e}"),
        })?
    }
}

/// Cancels a query when the future that awaits it is dropped before it finished.
struct CancelOnDrop(Arc<Stop>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if self.0.finished() {
            return;
        }
        self.0.cancel();
        // Interrupt until the query's thread notices: one interrupt may land between two
        // statements, where SQLite ignores it. A thread of its own, not a task: the runtime may
        // be shutting down (and waiting for that very query's thread).
        let stop = self.0.clone();
        let _ = std::thread::Builder::new()
            .name("keel-sql-cancel".into())
            .spawn(move || {
                // Bounded: a query that has not even started by then sees the cancellation
                // when it does (it checks before each statement).
                for _ in 0..3000 {
                    if stop.finished() {
                        return;
                    }
                    stop.cancel();
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            });
    }
}

fn apply_change(tx: &Transaction<'_>, path: &Path, change: &Change) -> Result<()> {
    let run = |sql: &str, args: &[&dyn rusqlite::ToSql]| -> Result<()> {
        tx.prepare_cached(sql)
            .and_then(|mut s| s.execute(args))
            .map(|_| ())
            .map_err(store(path, "applying a projection change"))
    };
    match change {
        Change::Step(s) => {
            let r = &s.row;
            run(
                "INSERT INTO steps (log_offset, trace_id, exec_id, tenant, seq, step_n, ts,
                     event_type, summary, model, tokens_in, tokens_out, cost, latency_ms, tool,
                     status, output_ref, gate_verdict, memory_chunks)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                     ?17, ?18, ?19)",
                params![
                    s.log_offset,
                    s.trace_id,
                    s.exec_id,
                    s.tenant,
                    s.seq,
                    s.step_n,
                    s.ts,
                    s.event_type,
                    r.summary,
                    r.model,
                    r.tokens_in,
                    r.tokens_out,
                    r.cost,
                    r.latency_ms,
                    r.tool,
                    r.status,
                    r.output_ref,
                    r.gate_verdict,
                    r.memory_chunks,
                ],
            )
        }
        Change::Started(x) => run(
            "INSERT INTO executions (exec_id, trace_id, tenant, strategy_version, experiment_arm,
                 experiment, experiment_unit, replay_of, goal, started_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT (exec_id) DO NOTHING",
            params![
                x.exec_id,
                x.trace_id,
                x.tenant,
                x.strategy_version,
                x.experiment_arm,
                x.experiment,
                x.experiment_unit,
                x.replay_of,
                x.goal,
                x.started_at
            ],
        ),
        Change::ModelResponded {
            exec_id,
            tokens_in,
            tokens_out,
            cost_micros,
            cost_known,
        } => run(
            "UPDATE executions SET model_calls = model_calls + 1,
                 tokens_in = tokens_in + ?2, tokens_out = tokens_out + ?3,
                 cost_micros = cost_micros + ?4, cost_known = cost_known AND ?5
             WHERE exec_id = ?1",
            params![exec_id, tokens_in, tokens_out, cost_micros, cost_known],
        ),
        Change::ToolResult {
            exec_id,
            failed,
            cost_micros,
            cost_known,
        } => run(
            "UPDATE executions SET tool_calls = tool_calls + 1,
                 tool_failures = tool_failures + ?2,
                 cost_micros = cost_micros + ?3, cost_known = cost_known AND ?4
             WHERE exec_id = ?1",
            params![exec_id, failed, cost_micros, cost_known],
        ),
        Change::GateRequested { exec_id } => run(
            "UPDATE executions SET gate_escalations = gate_escalations + 1 WHERE exec_id = ?1",
            params![exec_id],
        ),
        Change::GateRejected { exec_id } => run(
            "UPDATE executions SET gate_rejections = gate_rejections + 1 WHERE exec_id = ?1",
            params![exec_id],
        ),
        Change::Retrieved { exec_id } => run(
            "UPDATE executions SET retrievals = retrievals + 1 WHERE exec_id = ?1",
            params![exec_id],
        ),
        Change::Sampled(x) => run(
            "INSERT INTO retrieval_samples (log_offset, trace_id, exec_id, tenant, seq, step_n,
                 ts, query, memory_version, chunks)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                x.log_offset,
                x.trace_id,
                x.exec_id,
                x.tenant,
                x.seq,
                x.step_n,
                x.ts,
                x.query,
                x.memory_version,
                x.chunks
            ],
        ),
        Change::StepCompleted { exec_id } => run(
            "UPDATE executions SET steps_n = steps_n + 1 WHERE exec_id = ?1",
            params![exec_id],
        ),
        Change::Finished {
            exec_id,
            finished_at,
            outcome,
            success,
            steps_n,
            tokens_in,
            tokens_out,
            cost_micros,
            cost_known,
        } => run(
            "UPDATE executions SET finished_at = ?2, outcome = ?3, outcome_success = ?4,
                 steps_n = ?5, tokens_in = ?6, tokens_out = ?7, cost_micros = ?8,
                 cost_known = ?9
             WHERE exec_id = ?1",
            params![
                exec_id,
                finished_at,
                outcome,
                success,
                steps_n,
                tokens_in,
                tokens_out,
                cost_micros,
                cost_known
            ],
        ),
        Change::Cancelled {
            exec_id,
            finished_at,
        } => run(
            "UPDATE executions SET finished_at = ?2, outcome = 'cancelled', outcome_success = 0
             WHERE exec_id = ?1",
            params![exec_id, finished_at],
        ),
        Change::Rated {
            tenant,
            exec_id,
            seq,
            rating,
            rated_by,
            rated_at,
            note,
        } => run(
            "UPDATE retrieval_samples SET rating = ?4, rated_by = ?5, rated_at = ?6,
                 rating_note = ?7
             WHERE exec_id = ?2 AND seq = ?3 AND tenant = ?1",
            params![tenant, exec_id, seq, rating, rated_by, rated_at, note],
        ),
        Change::Feedback {
            tenant,
            exec_id,
            rating,
        } => run(
            "UPDATE executions SET feedback_count = feedback_count + 1,
                 feedback_sum = feedback_sum + ?3
             WHERE exec_id = ?2 AND tenant = ?1",
            params![tenant, exec_id, rating],
        ),
    }
}
