//! The scaled projection store: the same tables in PostgreSQL, as `traces.steps`,
//! `gold.executions` and `traces.retrieval_samples` (real schemas, so the seed's queries run
//! verbatim in PostgreSQL's own dialect).
//!
//! Consumers sharing the database serialise their batches on an advisory lock and re-read the
//! checkpoint inside the transaction, so a batch is applied once however many processes
//! project. A batch is a handful of set-based statements (module `pg_bulk`), not one per row.
//!
//! Queries (`keel sql`, `POST /v1/sql`, the SLOs) run in a read-only transaction as a role that
//! can only `SELECT` the three tables, under row-level security: `keel_sql_admin` sees every
//! row, `keel_sql_tenant` only the rows of the tenant set for the transaction. Because a tenant
//! could otherwise move itself to another tenant (or back to the owner's role) with
//! `set_config()` from inside a `SELECT`, the store revokes that function from `PUBLIC` in its
//! database; our own settings use `SET LOCAL`, which it does not need.

use crate::error::{ObserveError, Result};
use crate::pg_bulk::Bulk;
use crate::projection::changes;
use crate::sql::{Limits, Rows, Scope};
use crate::store::{ProjectionStore, TABLES, qualified};
use async_trait::async_trait;
use keel_spine::Committed;
use keel_spine::postgres::tls::MakeRustls;
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::Mutex;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, SimpleQueryMessage};

/// Version of the tables' layout, kept in `keel_observe.meta`; another version is dropped and
/// rebuilt from the spine (projections are derived data).
const SCHEMA_VERSION: &str = "3";

/// Serialises schema set-up and batches across every process sharing the database.
const LOCK_KEY: i64 = 0x6b65_656c_6f62_7376; // "keelobsv"

const SCHEMA: &str = "
CREATE SCHEMA IF NOT EXISTS traces;
CREATE SCHEMA IF NOT EXISTS gold;
CREATE SCHEMA IF NOT EXISTS keel_observe;
CREATE TABLE IF NOT EXISTS keel_observe.meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS keel_observe.projection_state (
    name        TEXT   PRIMARY KEY,
    next_offset BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS traces.steps (
    log_offset    BIGINT      PRIMARY KEY,
    trace_id      TEXT        NOT NULL,
    exec_id       TEXT        NOT NULL,
    tenant        TEXT        NOT NULL,
    seq           BIGINT      NOT NULL,
    step_n        BIGINT      NOT NULL,
    ts            TIMESTAMPTZ NOT NULL,
    event_type    TEXT        NOT NULL,
    summary       TEXT        NOT NULL,
    model         TEXT,
    tokens_in     BIGINT,
    tokens_out    BIGINT,
    cost          DOUBLE PRECISION,
    latency_ms    BIGINT,
    tool          TEXT,
    status        TEXT,
    output_ref    TEXT,
    gate_verdict  TEXT,
    memory_chunks TEXT
);
CREATE INDEX IF NOT EXISTS steps_by_trace ON traces.steps (trace_id, seq);
CREATE INDEX IF NOT EXISTS steps_by_exec ON traces.steps (exec_id);
CREATE TABLE IF NOT EXISTS gold.executions (
    exec_id          TEXT        PRIMARY KEY,
    trace_id         TEXT        NOT NULL,
    tenant           TEXT        NOT NULL,
    strategy_version TEXT        NOT NULL,
    experiment_arm   TEXT,
    experiment       TEXT,
    experiment_unit  TEXT,
    replay_of        TEXT,
    goal             TEXT        NOT NULL,
    started_at       TIMESTAMPTZ NOT NULL,
    finished_at      TIMESTAMPTZ,
    outcome          TEXT,
    outcome_success  INTEGER,
    steps_n          BIGINT      NOT NULL DEFAULT 0,
    tokens_in        BIGINT      NOT NULL DEFAULT 0,
    tokens_out       BIGINT      NOT NULL DEFAULT 0,
    cost_micros      BIGINT      NOT NULL DEFAULT 0,
    cost_known       INTEGER     NOT NULL DEFAULT 1,
    total_cost       DOUBLE PRECISION GENERATED ALWAYS AS
                         (CASE WHEN cost_known = 1 THEN cost_micros::double precision / 1e6::double precision END) STORED,
    model_calls      BIGINT      NOT NULL DEFAULT 0,
    tool_calls       BIGINT      NOT NULL DEFAULT 0,
    tool_failures    BIGINT      NOT NULL DEFAULT 0,
    gate_escalations BIGINT      NOT NULL DEFAULT 0,
    gate_rejections  BIGINT      NOT NULL DEFAULT 0,
    retrievals       BIGINT      NOT NULL DEFAULT 0,
    feedback_count   BIGINT      NOT NULL DEFAULT 0,
    feedback_sum     BIGINT      NOT NULL DEFAULT 0,
    feedback_rating  DOUBLE PRECISION GENERATED ALWAYS AS
                         (CASE WHEN feedback_count > 0 THEN feedback_sum::double precision / feedback_count::double precision END) STORED
);
CREATE INDEX IF NOT EXISTS executions_by_strategy ON gold.executions (strategy_version, started_at);
CREATE INDEX IF NOT EXISTS executions_by_trace ON gold.executions (trace_id);
CREATE INDEX IF NOT EXISTS executions_by_experiment ON gold.executions (experiment, experiment_arm);
CREATE TABLE IF NOT EXISTS traces.retrieval_samples (
    log_offset     BIGINT      PRIMARY KEY,
    trace_id       TEXT        NOT NULL,
    exec_id        TEXT        NOT NULL,
    tenant         TEXT        NOT NULL,
    seq            BIGINT      NOT NULL,
    step_n         BIGINT      NOT NULL,
    ts             TIMESTAMPTZ NOT NULL,
    query          TEXT        NOT NULL,
    memory_version TEXT        NOT NULL,
    chunks         TEXT        NOT NULL,
    rating         INTEGER,
    rated_by       TEXT,
    rated_at       TIMESTAMPTZ,
    rating_note    TEXT,
    UNIQUE (exec_id, seq)
);
DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'keel_sql_admin') THEN
        CREATE ROLE keel_sql_admin NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'keel_sql_tenant') THEN
        CREATE ROLE keel_sql_tenant NOLOGIN;
    END IF;
END $$;
GRANT keel_sql_admin, keel_sql_tenant TO CURRENT_USER;
GRANT USAGE ON SCHEMA traces, gold TO keel_sql_admin, keel_sql_tenant;
GRANT SELECT ON traces.steps, traces.retrieval_samples, gold.executions
    TO keel_sql_admin, keel_sql_tenant;
REVOKE EXECUTE ON FUNCTION pg_catalog.set_config(text, text, boolean) FROM PUBLIC;
";

/// Row-level security on one table: admins see all, tenants their own rows.
fn policies(table: &str) -> String {
    format!(
        "ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;
         DROP POLICY IF EXISTS keel_sql_admin_rows ON {table};
         CREATE POLICY keel_sql_admin_rows ON {table} FOR SELECT TO keel_sql_admin USING (true);
         DROP POLICY IF EXISTS keel_sql_tenant_rows ON {table};
         CREATE POLICY keel_sql_tenant_rows ON {table} FOR SELECT TO keel_sql_tenant
             USING (tenant = current_setting('keel.tenant', true));"
    )
}

pub use crate::store::redact;

/// The PostgreSQL projection store.
pub struct PgProjections {
    client: Mutex<Client>,
    url: String,
    /// The URL as configured (password included, TLS parameters taken out), to open a
    /// connection of its own for a query while the shared one is busy. Never shown: `url` is.
    connect: tokio_postgres::Config,
    /// The verified-TLS connector the URL asks for (`sslmode`, `sslrootcert`), as the spine's.
    tls: MakeRustls,
    /// Cancel requests for dropped queries still on their way: until they land, the shared
    /// connection is left alone (a late cancel would hit the next query on it).
    cancels: Arc<AtomicUsize>,
    next_offset: u64,
}

fn pg_err(url: &str, context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> ObserveError {
    let url = url.to_owned();
    move |e| ObserveError::Postgres {
        url,
        context,
        detail: detail(&e),
    }
}

/// The server's message (with its detail and hint) rather than tokio-postgres' "db error".
fn detail(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = db.message().to_owned();
            if let Some(d) = db.detail() {
                s.push_str(&format!(" ({d})"));
            }
            if let Some(h) = db.hint() {
                s.push_str(&format!("; hint: {h}"));
            }
            s
        }
        None => {
            // tokio-postgres' own errors ("error connecting to server") keep the cause below.
            let mut s = e.to_string();
            let mut cause = std::error::Error::source(e);
            while let Some(c) = cause {
                s.push_str(&format!(": {c}"));
                cause = c.source();
            }
            s
        }
    }
}

pub(crate) fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl PgProjections {
    /// Connects to `url`, creating (or upgrading) the schemas, tables, roles and policies.
    pub async fn connect(url: &str) -> Result<Self> {
        let shown = redact(url);
        let (connect, tls, _) =
            keel_spine::postgres::connector(url).map_err(|e| ObserveError::Postgres {
                url: shown.clone(),
                context: "connecting (KEEL_PROJECTIONS_URL)",
                detail: e.to_string(),
            })?;
        let (mut client, connection) = connect
            .connect(tls.clone())
            .await
            .map_err(pg_err(&shown, "connecting (KEEL_PROJECTIONS_URL)"))?;
        tokio::spawn(async move {
            // Errors surface on the next request as a closed connection.
            let _ = connection.await;
        });
        let tx = client
            .transaction()
            .await
            .map_err(pg_err(&shown, "starting the schema set-up"))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
            .await
            .map_err(pg_err(&shown, "locking the schema set-up"))?;
        let has_meta: bool = tx
            .query_one("SELECT to_regclass('keel_observe.meta') IS NOT NULL", &[])
            .await
            .map_err(pg_err(&shown, "reading the schema version"))?
            .get(0);
        let version: Option<String> = if has_meta {
            tx.query_opt(
                "SELECT value FROM keel_observe.meta WHERE key = 'schema_version'",
                &[],
            )
            .await
            .map_err(pg_err(&shown, "reading the schema version"))?
            .map(|r| r.get(0))
        } else {
            None
        };
        if version.as_deref().is_some_and(|v| v != SCHEMA_VERSION) {
            tx.batch_execute(
                "DROP TABLE IF EXISTS traces.steps, traces.retrieval_samples, gold.executions,
                     keel_observe.projection_state",
            )
            .await
            .map_err(pg_err(&shown, "dropping tables of another schema version"))?;
        }
        tx.batch_execute(SCHEMA).await.map_err(|e| {
            let mut err = pg_err(&shown, "creating the projection tables")(e);
            if let ObserveError::Postgres { detail, .. } = &mut err
                && detail.contains("permission denied")
            {
                detail.push_str(
                    " — the projections' database needs an owner that may create roles and \
                     revoke set_config() from PUBLIC (a superuser, once)",
                );
            }
            err
        })?;
        for t in TABLES {
            tx.batch_execute(&policies(&qualified(t)))
                .await
                .map_err(pg_err(&shown, "setting row-level security"))?;
        }
        tx.execute(
            "INSERT INTO keel_observe.meta (key, value) VALUES ('schema_version', $1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[&SCHEMA_VERSION],
        )
        .await
        .map_err(pg_err(&shown, "writing the schema version"))?;
        tx.commit()
            .await
            .map_err(pg_err(&shown, "committing the schema set-up"))?;
        let next_offset = checkpoint(&client, &shown).await?;
        Ok(Self {
            client: Mutex::new(client),
            url: shown,
            connect,
            tls,
            cancels: Arc::default(),
            next_offset,
        })
    }
}

async fn checkpoint(client: &impl tokio_postgres::GenericClient, url: &str) -> Result<u64> {
    let row = client
        .query_opt(
            "SELECT next_offset FROM keel_observe.projection_state WHERE name = 'main'",
            &[],
        )
        .await
        .map_err(pg_err(url, "reading the checkpoint"))?;
    Ok(row.map_or(1, |r| r.get::<_, i64>(0).max(1) as u64))
}

#[async_trait]
impl ProjectionStore for PgProjections {
    fn describe(&self) -> String {
        self.url.clone()
    }

    fn dialect(&self) -> &'static str {
        "PostgreSQL (APPROX_PERCENTILE(x, p) is rewritten to percentile_cont)"
    }

    fn day(&self, column: &str) -> String {
        format!("to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD')")
    }

    fn next_offset(&self) -> u64 {
        self.next_offset
    }

    async fn apply(&mut self, batch: &[Committed]) -> Result<()> {
        let url = self.url.clone();
        let mut client = self.client.lock().await;
        let tx = client
            .transaction()
            .await
            .map_err(pg_err(&url, "starting a projection batch"))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
            .await
            .map_err(pg_err(&url, "locking the projections"))?;
        let next = checkpoint(&tx, &url).await?;
        let fresh: Vec<&Committed> = batch.iter().filter(|c| c.offset >= next).collect();
        let Some(last) = fresh.last().map(|c| c.offset) else {
            tx.rollback()
                .await
                .map_err(pg_err(&url, "ending an empty batch"))?;
            drop(client);
            self.next_offset = next;
            return Ok(());
        };
        let mut bulk = Bulk::default();
        for change in fresh.iter().flat_map(|c| changes(c.offset, &c.event)) {
            bulk.push(change);
        }
        bulk.apply(&tx)
            .await
            .map_err(pg_err(&url, "applying a projection batch"))?;
        tx.execute(
            "INSERT INTO keel_observe.projection_state (name, next_offset) VALUES ('main', $1)
             ON CONFLICT (name) DO UPDATE SET next_offset = excluded.next_offset",
            &[&int(last + 1)],
        )
        .await
        .map_err(pg_err(&url, "writing the checkpoint"))?;
        tx.commit()
            .await
            .map_err(pg_err(&url, "committing a projection batch"))?;
        drop(client);
        self.next_offset = last + 1;
        Ok(())
    }

    async fn reset(&mut self) -> Result<()> {
        let client = self.client.lock().await;
        client
            .batch_execute(&format!(
                "BEGIN;
                 SELECT pg_advisory_xact_lock({LOCK_KEY});
                 TRUNCATE traces.steps, traces.retrieval_samples, gold.executions;
                 DELETE FROM keel_observe.projection_state;
                 COMMIT;"
            ))
            .await
            .map_err(pg_err(&self.url, "emptying the projections"))?;
        drop(client);
        self.next_offset = 1;
        Ok(())
    }

    async fn cursor(&self, name: &str) -> Result<u64> {
        let client = self.client.lock().await;
        let row = client
            .query_opt(
                "SELECT next_offset FROM keel_observe.projection_state WHERE name = $1",
                &[&name],
            )
            .await
            .map_err(pg_err(&self.url, "reading a cursor"))?;
        Ok(row.map_or(1, |r| r.get::<_, i64>(0).max(1) as u64))
    }

    async fn set_cursor(&self, name: &str, next_offset: u64) -> Result<()> {
        crate::store::check_cursor_name(name)?;
        let client = self.client.lock().await;
        client
            .execute(
                "INSERT INTO keel_observe.projection_state (name, next_offset) VALUES ($1, $2)
                 ON CONFLICT (name) DO UPDATE SET next_offset = excluded.next_offset",
                &[&name, &int(next_offset)],
            )
            .await
            .map_err(pg_err(&self.url, "writing a cursor"))?;
        Ok(())
    }

    async fn dump(&self, table: &str) -> Result<Vec<String>> {
        let key = crate::store::dump_key(table)?;
        let client = self.client.lock().await;
        let messages = client
            .simple_query(&format!(
                "SET TimeZone = 'UTC'; SELECT * FROM {} ORDER BY {key}",
                qualified(table)
            ))
            .await
            .map_err(pg_err(&self.url, "dumping a table"))?;
        Ok(messages
            .iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(r) => Some(
                    (0..r.len())
                        .map(|i| r.get(i).unwrap_or("NULL").to_owned())
                        .collect::<Vec<_>>()
                        .join("|"),
                ),
                _ => None,
            })
            .collect())
    }

    async fn query_limited(&self, scope: &Scope, sql: &str, limits: &Limits) -> Result<Rows> {
        // A query never waits behind another one (a slow one of another tenant): when the
        // shared connection is busy, it gets a connection of its own.
        let shared = match self.cancels.load(Ordering::SeqCst) {
            0 => self.client.try_lock().ok(),
            _ => None,
        };
        match shared {
            Some(mut client) => self.query_on(&mut client, scope, sql, limits).await,
            None => {
                let (mut client, connection) = self
                    .connect
                    .connect(self.tls.clone())
                    .await
                    .map_err(pg_err(&self.url, "connecting for a query"))?;
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                self.query_on(&mut client, scope, sql, limits).await
            }
        }
    }
}

/// Cancels the server's work on a query when the future awaiting it is dropped before it
/// returned; disarmed (`token` taken) on every return.
struct CancelOnDrop {
    token: Option<tokio_postgres::CancelToken>,
    tls: MakeRustls,
    pending: Arc<AtomicUsize>,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(token) = self.token.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let pending = self.pending.clone();
            let tls = self.tls.clone();
            pending.fetch_add(1, Ordering::SeqCst);
            rt.spawn(async move {
                let _ = token.cancel_query(tls).await;
                pending.fetch_sub(1, Ordering::SeqCst);
            });
        }
    }
}

impl PgProjections {
    async fn query_on(
        &self,
        client: &mut Client,
        scope: &Scope,
        sql: &str,
        limits: &Limits,
    ) -> Result<Rows> {
        let mut cancel = CancelOnDrop {
            token: Some(client.cancel_token()),
            tls: self.tls.clone(),
            pending: self.cancels.clone(),
        };
        let result = self.query_in(client, scope, sql, limits).await;
        let token = cancel.token.take();
        // Stopped past a row or byte limit while the server may still be producing rows:
        // cancel it now, before the connection runs anything else. Past the time limit the
        // server has already stopped it, and a cancel would only risk landing on the rollback.
        if let (Err(ObserveError::Limit { limit, .. }), Some(token)) = (&result, token)
            && *limit != "time"
        {
            let _ = token.cancel_query(self.tls.clone()).await;
            // The cancel may land on the rollback the dropped transaction queued, leaving the
            // connection in an aborted transaction; a cancel fires once, so a second explicit
            // rollback always ends it (outside a transaction it is only a warning).
            for _ in 0..2 {
                if client.batch_execute("ROLLBACK").await.is_ok() {
                    break;
                }
            }
        }
        result
    }

    async fn query_in(
        &self,
        client: &mut Client,
        scope: &Scope,
        sql: &str,
        limits: &Limits,
    ) -> Result<Rows> {
        use futures::StreamExt;
        let sql = rewrite_percentiles(sql)?;
        let (role, tenant) = match scope {
            Scope::Admin => ("keel_sql_admin", String::new()),
            Scope::Tenant(t) => ("keel_sql_tenant", t.replace('\'', "''")),
        };
        let timeout_ms = limits.timeout.map_or(60_000, |t| t.as_millis().max(1));
        let tx = client
            .build_transaction()
            .read_only(true)
            .start()
            .await
            .map_err(pg_err(&self.url, "starting a query"))?;
        tx.batch_execute(&format!(
            "SET LOCAL statement_timeout = {timeout_ms}; SET LOCAL TimeZone = 'UTC';
             SET LOCAL DateStyle = 'ISO, YMD'; SET LOCAL keel.tenant = '{tenant}';
             SET LOCAL search_path = traces, gold; SET LOCAL ROLE {role};"
        ))
        .await
        .map_err(pg_err(&self.url, "scoping a query"))?;
        let stmt = tx
            .prepare(&sql)
            .await
            .map_err(|e| ObserveError::QueryRefused {
                reason: format!("{} in: {}", detail(&e), sql.trim()),
            })?;
        // After prepare, so a typo reads as the server's syntax error.
        refuse_non_queries(&sql)?;
        if stmt.columns().is_empty() {
            return Err(ObserveError::QueryRefused {
                reason: format!("not a query (it returns no rows): {}", sql.trim()),
            });
        }
        let columns: Vec<String> = stmt.columns().iter().map(|c| c.name().into()).collect();
        let types: Vec<Type> = stmt.columns().iter().map(|c| c.type_().clone()).collect();
        let failed = |e: tokio_postgres::Error| {
            if e.code() == Some(&tokio_postgres::error::SqlState::QUERY_CANCELED) {
                limits.time_exceeded()
            } else {
                ObserveError::Query { detail: detail(&e) }
            }
        };
        // The simple protocol returns every value as text, whatever its type (numeric
        // included); the prepared statement's column types say how to read each. Streamed, so
        // a result past the limits is stopped (and cancelled on the server) as it arrives.
        let stream = tx.client().simple_query_raw(&sql).await.map_err(failed)?;
        futures::pin_mut!(stream);
        let mut rows = Vec::new();
        let mut bytes = 0usize;
        while let Some(m) = stream.next().await {
            let SimpleQueryMessage::Row(r) = m.map_err(failed)? else {
                continue;
            };
            if let Some(max) = limits.max_rows
                && rows.len() >= max
            {
                return Err(limits.rows_exceeded(max));
            }
            let row: Vec<Value> = types
                .iter()
                .enumerate()
                .map(|(i, ty)| cell(ty, r.get(i)))
                .collect();
            bytes = bytes.saturating_add(row.iter().map(crate::sql::value_bytes).sum());
            if let Some(max) = limits.max_bytes
                && bytes > max
            {
                return Err(limits.bytes_exceeded(max));
            }
            rows.push(row);
        }
        tx.rollback()
            .await
            .map_err(pg_err(&self.url, "ending a query"))?;
        Ok(Rows { columns, rows })
    }
}

/// A text value of type `ty` as JSON: numbers as numbers, booleans, JSON parsed, timestamps
/// as RFC 3339 with milliseconds (as the SQLite tables store them), anything else as text.
fn cell(ty: &Type, text: Option<&str>) -> Value {
    let Some(t) = text else {
        return Value::Null;
    };
    let number = |t: &str| match t.parse::<i64>() {
        Ok(i) => Value::from(i),
        Err(_) => t
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or(Value::Null, Value::Number),
    };
    match *ty {
        Type::INT2 | Type::INT4 | Type::INT8 | Type::OID | Type::NUMERIC => number(t),
        Type::FLOAT4 | Type::FLOAT8 => t
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or(Value::Null, Value::Number),
        Type::BOOL => Value::Bool(t == "t"),
        Type::JSON | Type::JSONB => {
            serde_json::from_str(t).unwrap_or_else(|_| Value::String(t.into()))
        }
        Type::TIMESTAMPTZ => chrono::DateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f%#z")
            .map(|d| {
                d.with_timezone(&chrono::Utc)
                    .format("%Y-%m-%dT%H:%M:%S%.3fZ")
                    .to_string()
            })
            .map_or_else(|_| Value::String(t.into()), Value::String),
        _ => Value::String(t.into()),
    }
}

/// Refuses anything but a query before it reaches the server (the read-only transaction and
/// the role's privileges would refuse writes too; this names the reason plainly).
fn refuse_non_queries(sql: &str) -> Result<()> {
    let first = sql
        .trim_start_matches(|c: char| c.is_whitespace() || c == '(')
        .split(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or_default()
        .to_ascii_uppercase();
    if ["SELECT", "WITH", "VALUES", "TABLE"].contains(&first.as_str()) {
        Ok(())
    } else {
        Err(ObserveError::QueryRefused {
            reason: format!(
                "the SQL path is read-only and accepts one SELECT, WITH, VALUES or TABLE \
                 statement: {}",
                sql.trim()
            ),
        })
    }
}

/// Rewrites `APPROX_PERCENTILE(x, p)` (and `QUANTILE_CONT(x, p)`) into PostgreSQL's exact
/// `percentile_cont(p) WITHIN GROUP (ORDER BY x)`, outside string literals and quoted names.
pub fn rewrite_percentiles(sql: &str) -> Result<String> {
    const NAMES: [&str; 2] = ["approx_percentile", "quantile_cont"];
    let chars: Vec<char> = sql.chars().collect();
    let mut out = String::with_capacity(sql.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' || c == '"' {
            let end = closing_quote(&chars, i);
            out.extend(&chars[i..end]);
            i = end;
            continue;
        }
        let word_start = i == 0 || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
        let hit = word_start
            .then(|| {
                NAMES.iter().find(|n| {
                    let len = n.len();
                    i + len <= chars.len()
                        && chars[i..i + len]
                            .iter()
                            .collect::<String>()
                            .eq_ignore_ascii_case(n)
                        && chars[i + len..]
                            .iter()
                            .find(|c| !c.is_whitespace())
                            .is_some_and(|c| *c == '(')
                })
            })
            .flatten();
        let Some(name) = hit else {
            out.push(c);
            i += 1;
            continue;
        };
        let open = i
            + name.len()
            + chars[i + name.len()..]
                .iter()
                .take_while(|c| c.is_whitespace())
                .count();
        let (args, close) = split_args(&chars, open).ok_or_else(|| ObserveError::QueryRefused {
            reason: format!("unbalanced parentheses after {name} in: {}", sql.trim()),
        })?;
        let [x, q] = args.as_slice() else {
            return Err(ObserveError::QueryRefused {
                reason: format!(
                    "{name} takes two arguments (value, fraction) in: {}",
                    sql.trim()
                ),
            });
        };
        out.push_str(&format!(
            "percentile_cont({}) WITHIN GROUP (ORDER BY {})",
            rewrite_percentiles(q)?.trim(),
            rewrite_percentiles(x)?.trim()
        ));
        i = close + 1;
    }
    Ok(out)
}

/// The index just past the literal or quoted name that starts at `start` (doubled quotes
/// escape).
fn closing_quote(chars: &[char], start: usize) -> usize {
    let q = chars[start];
    let mut j = start + 1;
    while j < chars.len() {
        if chars[j] == q {
            if chars.get(j + 1) == Some(&q) {
                j += 2;
                continue;
            }
            return j + 1;
        }
        j += 1;
    }
    chars.len()
}

/// The top-level comma-separated arguments of the parenthesis at `open`, and the index of its
/// closing parenthesis.
fn split_args(chars: &[char], open: usize) -> Option<(Vec<String>, usize)> {
    let mut depth = 0usize;
    let mut args = Vec::new();
    let mut cur = String::new();
    let mut j = open;
    while j < chars.len() {
        let c = chars[j];
        match c {
            '\'' | '"' => {
                let end = closing_quote(chars, j);
                cur.extend(&chars[j..end]);
                j = end;
                continue;
            }
            '(' => {
                depth += 1;
                if depth > 1 {
                    cur.push(c);
                }
            }
            ')' => {
                depth -= 1;
                if depth == 0 {
                    args.push(cur);
                    return Some((args, j));
                }
                cur.push(c);
            }
            ',' if depth == 1 => args.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
        j += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_rewritten_outside_literals_with_nested_arguments() {
        let sql = "SELECT APPROX_PERCENTILE(CASE WHEN a THEN f(b, c) END, 0.95), \
                   'approx_percentile(x, 1)', quantile_cont ( y , 0.5 ) FROM t";
        assert_eq!(
            rewrite_percentiles(sql).unwrap_or_default(),
            "SELECT percentile_cont(0.95) WITHIN GROUP (ORDER BY CASE WHEN a THEN f(b, c) END), \
             'approx_percentile(x, 1)', percentile_cont(0.5) WITHIN GROUP (ORDER BY y) FROM t"
        );
        assert!(rewrite_percentiles("SELECT approx_percentile(x) FROM t").is_err());
        assert!(rewrite_percentiles("SELECT approx_percentile(x, 0.5 FROM t").is_err());
        assert_eq!(
            rewrite_percentiles("SELECT my_approx_percentile(x, 1)").unwrap_or_default(),
            "SELECT my_approx_percentile(x, 1)"
        );
    }

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact("postgres://keel:s3cret@db:5432/obs"),
            "postgres://keel:***@db:5432/obs"
        );
        assert_eq!(redact("postgres://db/obs"), "postgres://db/obs");
    }

    #[test]
    fn only_queries_pass() {
        assert!(refuse_non_queries("  (SELECT 1)").is_ok());
        assert!(refuse_non_queries("with x as (select 1) select * from x").is_ok());
        assert!(refuse_non_queries("DELETE FROM gold.executions").is_err());
        assert!(refuse_non_queries("SET ROLE postgres").is_err());
    }
}
