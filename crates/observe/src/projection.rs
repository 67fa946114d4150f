//! The projections: `traces.steps` (one row per event) and `gold.executions` (one row per
//! execution), kept in their own SQLite file by a consumer of the spine.
//!
//! The consumer's position is a durable checkpoint: every batch of events is applied and the next
//! offset recorded in one SQLite transaction, so a consumer that stops (or is killed) resumes at
//! exactly the first event it had not applied, and no event is applied twice. The rows are a pure
//! function of the events, so rebuilding from offset 0 gives identical tables (tested).
//!
//! The file is separate from the spine's so projection writes never contend with appends for
//! SQLite's single writer lock. [`crate::sql`] attaches it twice, as `traces` and as `gold`, so
//! the seed's queries (`FROM traces.steps`, `FROM gold.executions`) run unchanged.

use crate::error::{Result, store};
use keel_core::control::CONTROL_STREAM;
use keel_core::payload::{Outcome, Payload, ToolStatus, Verdict};
use keel_core::{Cost, Event};
use keel_spine::{Committed, EventLog};
use rusqlite::{Connection, OptionalExtension, params};
use std::path::{Path, PathBuf};
use std::time::Duration;

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
    retrievals       INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS executions_by_strategy ON executions (strategy_version, started_at);
CREATE INDEX IF NOT EXISTS executions_by_trace ON executions (trace_id);
CREATE TABLE IF NOT EXISTS retrieval_samples (
    log_offset     INTEGER PRIMARY KEY,
    trace_id       TEXT    NOT NULL,
    exec_id        TEXT    NOT NULL,
    tenant         TEXT    NOT NULL,
    step_n         INTEGER NOT NULL,
    query          TEXT    NOT NULL,
    memory_version TEXT    NOT NULL,
    chunks         TEXT    NOT NULL,
    rating         INTEGER,
    rated_by       TEXT
);
CREATE TABLE IF NOT EXISTS projection_state (
    name        TEXT    PRIMARY KEY,
    next_offset INTEGER NOT NULL
) WITHOUT ROWID;
";

/// Version of the projection tables' schema, stored in the file's `user_version`.
pub const SCHEMA_VERSION: i64 = 2;

/// One retrieval in this many is queued for a human relevance rating (chosen by a hash of the
/// event id, so a rebuild samples the same ones).
pub const RETRIEVAL_SAMPLE_EVERY: u64 = 10;

/// Events applied per transaction when catching up.
pub const BATCH: usize = 4096;

/// The tables that a projection rebuild compares (and `keel export parquet` writes).
pub const TABLES: &[&str] = &["steps", "executions", "retrieval_samples"];

/// The projection consumer and its store.
pub struct Projector {
    conn: Connection,
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
        let next_offset = conn
            .query_row(
                "SELECT next_offset FROM projection_state WHERE name = 'main'",
                [],
                |r| r.get::<_, u64>(0),
            )
            .optional()
            .map_err(store(&path, "reading the checkpoint"))?
            .unwrap_or(1);
        Ok(Self {
            conn,
            path,
            next_offset,
        })
    }

    /// The projection file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The first spine offset not yet applied (the durable checkpoint).
    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }

    /// The saved position of another consumer of the spine sharing this file (`otlp`, …);
    /// offset 1 when it never ran.
    pub fn cursor(&self, name: &str) -> Result<u64> {
        self.conn
            .query_row(
                "SELECT next_offset FROM projection_state WHERE name = ?1",
                [name],
                |r| r.get::<_, u64>(0),
            )
            .optional()
            .map_err(store(&self.path, "reading a cursor"))
            .map(|v| v.unwrap_or(1))
    }

    /// Saves another consumer's position (see [`Projector::cursor`]); `main` is reserved.
    pub fn set_cursor(&self, name: &str, next_offset: u64) -> Result<()> {
        if name == "main" {
            return Err(crate::ObserveError::Config {
                what: "cursor name".into(),
                detail: "`main` is the projections' own checkpoint".into(),
            });
        }
        self.conn
            .execute(
                "INSERT INTO projection_state (name, next_offset) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET next_offset = excluded.next_offset",
                rusqlite::params![name, next_offset],
            )
            .map_err(store(&self.path, "writing a cursor"))?;
        Ok(())
    }

    /// The earliest partition date (`YYYY-MM-DD`) whose rows changed at or after spine offset
    /// `from`: the date of any new step, or the start date of any execution it updated. `None`
    /// when nothing changed. What the continuous Parquet export rewrites from.
    pub fn changed_since(&self, from: u64) -> Result<Option<String>> {
        self.conn
            .query_row(
                "SELECT min(d) FROM (
                     SELECT substr(ts, 1, 10) AS d FROM steps WHERE log_offset >= ?1
                     UNION ALL
                     SELECT substr(e.started_at, 1, 10) FROM executions AS e
                     WHERE e.exec_id IN (SELECT exec_id FROM steps WHERE log_offset >= ?1))",
                [from],
                |r| r.get::<_, Option<String>>(0),
            )
            .map_err(store(&self.path, "finding changed partitions"))
    }

    /// Empties every projection table and resets the checkpoint to offset 1.
    pub fn reset(&mut self) -> Result<()> {
        let tx = self
            .conn
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

    /// Applies a batch of committed events (in offset order) and moves the checkpoint past it,
    /// in one transaction. Events before the checkpoint are skipped, so a batch delivered twice
    /// is applied once.
    pub fn apply(&mut self, batch: &[Committed]) -> Result<()> {
        let fresh: Vec<&Committed> = batch
            .iter()
            .filter(|c| c.offset >= self.next_offset)
            .collect();
        let Some(last) = fresh.last().map(|c| c.offset) else {
            return Ok(());
        };
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction()
            .map_err(store(&path, "starting a projection batch"))?;
        for c in &fresh {
            apply_one(&tx, &path, c.offset, &c.event)?;
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

    /// Applies every event the spine has committed past the checkpoint; returns how many.
    pub async fn catch_up(&mut self, log: &dyn EventLog) -> Result<u64> {
        let mut applied = 0u64;
        loop {
            let batch = log.read_all(self.next_offset, BATCH).await?;
            if batch.is_empty() {
                return Ok(applied);
            }
            applied += batch.len() as u64;
            self.apply(&batch)?;
        }
    }

    /// Follows the spine until `stop` resolves: catches up, then applies new events as they
    /// commit (polling every `poll` when idle). Each applied batch is checkpointed.
    pub async fn follow(
        &mut self,
        log: &dyn EventLog,
        poll: Duration,
        mut on_batch: impl FnMut(&[Committed]),
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<()> {
        tokio::pin!(stop);
        loop {
            let batch = log.read_all(self.next_offset, BATCH).await?;
            if batch.is_empty() {
                tokio::select! {
                    _ = &mut stop => return Ok(()),
                    _ = tokio::time::sleep(poll) => continue,
                }
            }
            self.apply(&batch)?;
            on_batch(&batch);
        }
    }

    /// Every row of `table` as text, in primary-key order: what the rebuild-equality test and
    /// `keel observe rebuild --check` compare.
    pub fn dump(&self, table: &str) -> Result<Vec<String>> {
        if !TABLES.contains(&table) {
            return Err(crate::ObserveError::QueryRefused {
                reason: format!(
                    "{table:?} is not a projection table ({})",
                    TABLES.join(", ")
                ),
            });
        }
        let key = if table == "executions" {
            "exec_id"
        } else {
            "log_offset"
        };
        let mut stmt = self
            .conn
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
}

/// Micro-USD as dollars; `None` when unknown.
pub fn dollars(cost: Cost) -> Option<f64> {
    cost.micros().map(|m| m as f64 / 1e6)
}

fn outcome_word(o: Outcome) -> &'static str {
    match o {
        Outcome::Success => "success",
        Outcome::Failure => "failure",
        Outcome::BudgetExhausted => "budget_exhausted",
        Outcome::MaxSteps => "max_steps",
        Outcome::Killed => "killed",
        Outcome::Error => "error",
    }
}

fn status_word(s: ToolStatus) -> &'static str {
    match s {
        ToolStatus::Ok => "ok",
        ToolStatus::Error => "error",
        ToolStatus::Rejected => "rejected",
        ToolStatus::InvalidOutput => "invalid_output",
        ToolStatus::Refused => "refused",
    }
}

fn verdict_word(v: Verdict) -> &'static str {
    match v {
        Verdict::Approve => "approve",
        Verdict::Reject => "reject",
        Verdict::Expired => "expired",
    }
}

/// RFC 3339 with milliseconds and `Z`: sorts as text, compares with `date('now', …)`.
pub fn timestamp(e: &Event) -> String {
    e.ts.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max).collect();
    out.push('…');
    out
}

/// The typed columns of a `traces.steps` row, derived from one event.
#[derive(Default, Debug, Clone, PartialEq)]
pub struct StepRow {
    /// One-line human summary.
    pub summary: String,
    /// Model name (model events, plans).
    pub model: Option<String>,
    /// Input tokens (model responses).
    pub tokens_in: Option<u64>,
    /// Output tokens (model responses).
    pub tokens_out: Option<u64>,
    /// Cost in dollars (model responses, tool results, finish).
    pub cost: Option<f64>,
    /// Latency (model responses, tool results, gate decisions).
    pub latency_ms: Option<u64>,
    /// Tool name (tool events).
    pub tool: Option<String>,
    /// Tool status or execution outcome.
    pub status: Option<String>,
    /// Blob reference of a tool output or model response.
    pub output_ref: Option<String>,
    /// Gate verdict.
    pub gate_verdict: Option<String>,
    /// Memory chunk ids, comma-separated, best first.
    pub memory_chunks: Option<String>,
}

/// Derives the `traces.steps` columns of one event.
pub fn step_row(e: &Event) -> StepRow {
    let mut r = StepRow::default();
    match &e.payload {
        Payload::ExecStarted(p) => {
            r.summary = format!("started [{}]: {}", p.strategy_version, clip(&p.goal, 160));
        }
        Payload::PlanProposed(p) => {
            r.model = Some(p.model.clone());
            r.summary = format!(
                "plan ({}, prompt {}): {}",
                p.model,
                p.prompt_version,
                clip(&p.steps.join("; "), 200)
            );
        }
        Payload::ModelCalled(p) => {
            r.model = Some(p.model.clone());
            r.summary = match &p.prompt_version {
                Some(v) => format!("call {} (prompt {v})", p.model),
                None => format!("call {}", p.model),
            };
        }
        Payload::ModelResponded(p) => {
            r.model = Some(p.model.clone());
            r.tokens_in = Some(p.tokens.input);
            r.tokens_out = Some(p.tokens.output);
            r.cost = dollars(p.cost);
            r.latency_ms = Some(p.latency_ms);
            r.output_ref = p.response_ref.clone();
            r.summary = format!(
                "{} answered: {} in / {} out tokens, {} ms",
                p.model, p.tokens.input, p.tokens.output, p.latency_ms
            );
            if let Some(err) = &p.error {
                r.status = Some("error".into());
                r.summary
                    .push_str(&format!(" — unusable reply: {}", clip(err, 160)));
            }
        }
        Payload::MemoryRetrieved(p) => {
            let ids: Vec<&str> = p.chunks.iter().map(|c| c.id.as_str()).collect();
            r.memory_chunks = Some(ids.join(","));
            let shown: Vec<String> = p
                .chunks
                .iter()
                .take(3)
                .map(|c| format!("{} ({:.2})", c.id, c.score))
                .collect();
            r.summary = format!(
                "memory.retrieved {} → {} for {:?}",
                p.memory_version,
                if shown.is_empty() {
                    "nothing".to_owned()
                } else {
                    shown.join(", ")
                },
                clip(&p.query, 80)
            );
        }
        Payload::MemoryWritten(p) => {
            r.memory_chunks = Some(p.memory_id.clone());
            r.summary = format!("memory.written {} ({})", p.memory_id, p.volatility);
        }
        Payload::ToolCalled(p) => {
            r.tool = Some(p.tool.clone());
            r.summary = format!("{}({})", p.tool, clip(&p.args.to_string(), 160));
            if p.attempt > 1 {
                r.summary.push_str(&format!(" attempt {}", p.attempt));
            }
        }
        Payload::ToolResult(p) => {
            r.tool = Some(p.tool.clone());
            r.status = Some(status_word(p.status).into());
            r.cost = dollars(p.actual_cost);
            r.latency_ms = Some(p.latency_ms);
            r.output_ref = p.output_ref.clone();
            r.summary = format!(
                "{} → {} ({} ms)",
                p.tool,
                status_word(p.status),
                p.latency_ms
            );
            if let Some(class) = &p.error_class {
                r.summary.push_str(&format!(" [{class}]"));
            }
            if !p.errors.is_empty() {
                r.summary
                    .push_str(&format!(": {}", clip(&p.errors.join("; "), 160)));
            }
        }
        Payload::GateRequested(p) => {
            r.tool = p
                .action
                .get("tool")
                .and_then(|t| t.as_str())
                .map(str::to_owned);
            r.summary = format!(
                "gate {} requested: tier {} {}",
                p.gate_id,
                p.consequence_tier,
                clip(&p.action.to_string(), 160)
            );
        }
        Payload::GateDecided(p) => {
            r.gate_verdict = Some(verdict_word(p.verdict).into());
            r.latency_ms = Some(p.latency_ms);
            r.summary = format!(
                "gate {} {} by {}: {}",
                p.gate_id,
                verdict_word(p.verdict),
                p.approver,
                clip(&p.reason, 120)
            );
        }
        Payload::StepCompleted(p) => {
            r.summary = match &p.summary {
                Some(s) => format!("step {} done: {}", e.step_n, clip(s, 160)),
                None => format!("step {} done", e.step_n),
            };
        }
        Payload::ExecSuspended(t) | Payload::ExecResumed(t) | Payload::ExecCancelled(t) => {
            r.summary = format!("{}: {}", e.event_type(), clip(&t.reason, 160));
        }
        Payload::ExecFinished(p) => {
            r.status = Some(outcome_word(p.outcome).into());
            r.tokens_in = Some(p.tokens.input);
            r.tokens_out = Some(p.tokens.output);
            r.cost = dollars(p.cost);
            r.summary = format!(
                "finished: {} in {} steps",
                outcome_word(p.outcome),
                p.steps_n
            );
            if let Some(d) = &p.detail {
                r.summary.push_str(&format!(": {}", clip(d, 160)));
            }
        }
        #[allow(unreachable_patterns)] // event types added by newer code still project a row
        _ => {
            r.summary = e.event_type().to_string();
        }
    }
    r
}

fn sampled(e: &Event) -> bool {
    let (hi, lo) = e.event_id.0.as_u64_pair();
    (hi ^ lo).wrapping_mul(0x9E37_79B9_7F4A_7C15) % RETRIEVAL_SAMPLE_EVERY == 0
}

fn apply_one(tx: &rusqlite::Transaction<'_>, path: &Path, offset: u64, e: &Event) -> Result<()> {
    if e.exec_id == CONTROL_STREAM {
        // The control stream is no execution (kill-switches, demotions, SLO alarms).
        return Ok(());
    }
    let row = step_row(e);
    let exec = e.exec_id.to_string();
    let trace = e.trace_id.to_string();
    let ts = timestamp(e);
    tx.prepare_cached(
        "INSERT INTO steps (log_offset, trace_id, exec_id, tenant, seq, step_n, ts, event_type,
             summary, model, tokens_in, tokens_out, cost, latency_ms, tool, status, output_ref,
             gate_verdict, memory_chunks)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)",
    )
    .and_then(|mut s| {
        s.execute(params![
            offset,
            trace,
            exec,
            e.tenant.as_str(),
            e.seq,
            e.step_n,
            ts,
            e.event_type().as_str(),
            row.summary,
            row.model,
            row.tokens_in,
            row.tokens_out,
            row.cost,
            row.latency_ms,
            row.tool,
            row.status,
            row.output_ref,
            row.gate_verdict,
            row.memory_chunks,
        ])
    })
    .map_err(store(path, "inserting a step row"))?;

    let update = |sql: &str, args: &[&dyn rusqlite::ToSql]| -> Result<()> {
        tx.prepare_cached(sql)
            .and_then(|mut s| s.execute(args))
            .map(|_| ())
            .map_err(store(path, "updating an execution row"))
    };
    match &e.payload {
        Payload::ExecStarted(p) => {
            let replay_of: Option<String> = p.replay_of.map(|r| r.to_string());
            update(
                "INSERT INTO executions (exec_id, trace_id, tenant, strategy_version, experiment_arm,
                     replay_of, goal, started_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (exec_id) DO NOTHING",
                &[
                    &exec,
                    &trace,
                    &e.tenant.as_str(),
                    &p.strategy_version,
                    &p.experiment_arm,
                    &replay_of,
                    &p.goal,
                    &ts,
                ],
            )?;
        }
        Payload::ModelResponded(p) => {
            let (micros, known) = cost_parts(p.cost);
            update(
                "UPDATE executions SET model_calls = model_calls + 1,
                     tokens_in = tokens_in + ?2, tokens_out = tokens_out + ?3,
                     cost_micros = cost_micros + ?4, cost_known = cost_known AND ?5
                 WHERE exec_id = ?1",
                &[&exec, &p.tokens.input, &p.tokens.output, &micros, &known],
            )?;
        }
        Payload::ToolResult(p) => {
            let (micros, known) = cost_parts(p.actual_cost);
            let failed = p.status != ToolStatus::Ok;
            update(
                "UPDATE executions SET tool_calls = tool_calls + 1,
                     tool_failures = tool_failures + ?2,
                     cost_micros = cost_micros + ?3, cost_known = cost_known AND ?4
                 WHERE exec_id = ?1",
                &[&exec, &failed, &micros, &known],
            )?;
        }
        Payload::GateRequested(_) => {
            update(
                "UPDATE executions SET gate_escalations = gate_escalations + 1 WHERE exec_id = ?1",
                &[&exec],
            )?;
        }
        Payload::GateDecided(p) if p.verdict == Verdict::Reject => {
            update(
                "UPDATE executions SET gate_rejections = gate_rejections + 1 WHERE exec_id = ?1",
                &[&exec],
            )?;
        }
        Payload::MemoryRetrieved(p) => {
            update(
                "UPDATE executions SET retrievals = retrievals + 1 WHERE exec_id = ?1",
                &[&exec],
            )?;
            if sampled(e) {
                let chunks = serde_json::to_string(&p.chunks).unwrap_or_default();
                update(
                    "INSERT INTO retrieval_samples (log_offset, trace_id, exec_id, tenant, step_n,
                         query, memory_version, chunks) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    &[
                        &offset,
                        &trace,
                        &exec,
                        &e.tenant.as_str(),
                        &e.step_n,
                        &p.query,
                        &p.memory_version,
                        &chunks,
                    ],
                )?;
            }
        }
        Payload::StepCompleted(_) => {
            update(
                "UPDATE executions SET steps_n = steps_n + 1 WHERE exec_id = ?1",
                &[&exec],
            )?;
        }
        Payload::ExecFinished(p) => {
            // The finish carries the authoritative totals (the fold's); they replace the sums.
            let (micros, known) = cost_parts(p.cost);
            update(
                "UPDATE executions SET finished_at = ?2, outcome = ?3, outcome_success = ?4,
                     steps_n = ?5, tokens_in = ?6, tokens_out = ?7, cost_micros = ?8,
                     cost_known = ?9
                 WHERE exec_id = ?1",
                &[
                    &exec,
                    &ts,
                    &outcome_word(p.outcome),
                    &(p.outcome == Outcome::Success),
                    &p.steps_n,
                    &p.tokens.input,
                    &p.tokens.output,
                    &micros,
                    &known,
                ],
            )?;
        }
        Payload::ExecCancelled(_) => {
            update(
                "UPDATE executions SET finished_at = ?2, outcome = 'cancelled', outcome_success = 0
                 WHERE exec_id = ?1",
                &[&exec, &ts],
            )?;
        }
        _ => {}
    }
    Ok(())
}

fn cost_parts(c: Cost) -> (u64, bool) {
    match c {
        Cost::Known(m) => (m, true),
        Cost::Unknown => (0, false),
    }
}

/// Applies `events` through a fresh consumer on `log` until it has caught up; convenience for
/// commands that need the projections current before they read them.
pub async fn refresh(path: &Path, log: &dyn EventLog) -> Result<Projector> {
    let mut p = Projector::open(path)?;
    p.catch_up(log).await?;
    Ok(p)
}
