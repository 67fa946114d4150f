//! Read-only SQL over the projections: what `keel sql` and `POST /v1/sql` run.
//!
//! The projection file is attached read-only twice, as `traces` and as `gold`, so
//! `traces.steps` and `gold.executions` resolve as in the seed. Exactly one statement runs; a
//! statement that would write anything (SQLite's own `sqlite3_stmt_readonly`) is refused before it
//! runs, and no further database can be attached. A tenant-scoped query sees copies of the
//! tables holding only that tenant's rows.
//!
//! Dialect: SQLite, plus `APPROX_PERCENTILE(x, p)` (also `PERCENTILE_CONT(x, p)`,
//! `QUANTILE_CONT(x, p)`), an exact percentile by linear interpolation between the closest ranks
//! (PostgreSQL's `percentile_cont`, DuckDB's `quantile_cont`). [`translate`] rewrites the two
//! PostgreSQL-isms of the seed's economics query (`x::int`, `CURRENT_DATE - 14`).

use crate::error::{ObserveError, Result};
use rusqlite::functions::{Aggregate, Context, FunctionFlags};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use serde_json::Value;
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Who is asking: operators see every tenant; anyone else only their own rows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every tenant's rows.
    Admin,
    /// Only this tenant's rows.
    Tenant(String),
}

/// A query's result: column names and rows of JSON values.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Rows {
    /// Column names, in order.
    pub columns: Vec<String>,
    /// Rows, each as long as `columns`.
    pub rows: Vec<Vec<Value>>,
}

/// Bounds on one query, so that a query shared over the network cannot hold a server's time or
/// memory: the whole query (scoping included) is stopped at `timeout`, and its result may hold
/// at most `max_rows` rows and `max_bytes` bytes of values (text and blobs counted by length,
/// numbers as 8 bytes). `None` is no bound (`keel sql` on the operator's own machine).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock time for the whole query.
    pub timeout: Option<Duration>,
    /// Rows in the result.
    pub max_rows: Option<usize>,
    /// Bytes of values in the result (also the largest single value SQLite will build).
    pub max_bytes: Option<usize>,
}

impl Limits {
    /// No bounds.
    pub fn none() -> Self {
        Self::default()
    }

    pub(crate) fn rows_exceeded(&self, max: usize) -> ObserveError {
        ObserveError::Limit {
            limit: "rows",
            detail: format!(
                "the result has more than {max} rows; add a LIMIT or aggregate (page with \
                 LIMIT … OFFSET …)"
            ),
        }
    }

    pub(crate) fn bytes_exceeded(&self, max: usize) -> ObserveError {
        ObserveError::Limit {
            limit: "bytes",
            detail: format!(
                "the result holds more than {max} bytes; select fewer or smaller columns, or \
                 fewer rows"
            ),
        }
    }

    pub(crate) fn time_exceeded(&self) -> ObserveError {
        ObserveError::Limit {
            limit: "time",
            detail: format!(
                "the query ran longer than {} s; narrow it (a time range, a LIMIT, an index \
                 column such as exec_id or trace_id)",
                self.timeout.map_or(0, |t| t.as_secs())
            ),
        }
    }
}

/// The size a value counts for against [`Limits::max_bytes`].
// Only the PostgreSQL store uses it.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) fn value_bytes(v: &Value) -> usize {
    match v {
        Value::String(s) => s.len(),
        Value::Null | Value::Bool(_) => 1,
        _ => 8,
    }
}

/// How a running query is stopped from outside its thread: the reason is set first, then the
/// connection is interrupted (again and again until the query returns, because an interrupt
/// that lands between two statements is a no-op in SQLite).
#[derive(Default)]
pub struct Stop {
    reason: AtomicU8,
    finished: std::sync::atomic::AtomicBool,
    interrupt: Mutex<Option<rusqlite::InterruptHandle>>,
}

const RUNNING: u8 = 0;
const TIMED_OUT: u8 = 1;
const CANCELLED: u8 = 2;

impl Stop {
    /// A stop for one query.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Stops the query because it ran out of time.
    pub fn time_out(&self) {
        let _ =
            self.reason
                .compare_exchange(RUNNING, TIMED_OUT, Ordering::SeqCst, Ordering::SeqCst);
        self.interrupt();
    }

    /// Stops the query because its caller went away.
    pub fn cancel(&self) {
        let _ =
            self.reason
                .compare_exchange(RUNNING, CANCELLED, Ordering::SeqCst, Ordering::SeqCst);
        self.interrupt();
    }

    /// True once the query returned (stopping it then is pointless).
    pub fn finished(&self) -> bool {
        self.finished.load(Ordering::SeqCst)
    }

    fn interrupt(&self) {
        if let Ok(h) = self.interrupt.lock()
            && let Some(h) = h.as_ref()
        {
            h.interrupt();
        }
    }

    fn arm(&self, conn: &Connection) {
        if let Ok(mut h) = self.interrupt.lock() {
            *h = Some(conn.get_interrupt_handle());
        }
    }

    /// The error for a stopped query, if it was stopped.
    fn stopped(&self, limits: &Limits) -> Option<ObserveError> {
        match self.reason.load(Ordering::SeqCst) {
            TIMED_OUT => Some(limits.time_exceeded()),
            CANCELLED => Some(ObserveError::Cancelled),
            _ => None,
        }
    }

    fn check(&self, limits: &Limits) -> Result<()> {
        self.stopped(limits).map_or(Ok(()), Err)
    }
}

/// Output formats of `keel sql`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns for a terminal.
    Table,
    /// One JSON array of objects.
    Json,
    /// RFC 4180 CSV with a header line.
    Csv,
}

impl std::str::FromStr for Format {
    type Err = ObserveError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "table" => Ok(Format::Table),
            "json" => Ok(Format::Json),
            "csv" => Ok(Format::Csv),
            other => Err(ObserveError::Config {
                what: "--format".into(),
                detail: format!("{other:?} is not one of table, json, csv"),
            }),
        }
    }
}

/// Opens a read-only query connection over the projection file at `path`.
pub fn connect(path: &Path, scope: &Scope) -> Result<Connection> {
    connect_stoppable(path, scope, &Stop::default(), &Limits::none())
}

/// [`connect`], stoppable by `stop` from the moment the connection exists (copying a tenant's
/// rows is part of the query's time).
fn connect_stoppable(
    path: &Path,
    scope: &Scope,
    stop: &Stop,
    limits: &Limits,
) -> Result<Connection> {
    if !path.exists() {
        return Err(ObserveError::QueryRefused {
            reason: "there are no projections yet (run `keel observe project` or any command \
                     that refreshes them)"
                .into(),
        });
    }
    let err = |context: &'static str| crate::error::store(path, context);
    let conn = Connection::open_with_flags(
        ":memory:",
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(err("opening a query connection"))?;
    stop.arm(&conn);
    stop.check(limits)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(err("setting the busy timeout"))?;
    register_functions(&conn).map_err(err("registering SQL functions"))?;
    let uri = format!("file:{}?mode=ro", path.display());
    match scope {
        Scope::Admin => {
            conn.execute("ATTACH DATABASE ?1 AS traces", [&uri])
                .map_err(err("attaching the projections as traces"))?;
            conn.execute("ATTACH DATABASE ?1 AS gold", [&uri])
                .map_err(err("attaching the projections as gold"))?;
        }
        Scope::Tenant(tenant) => {
            conn.execute("ATTACH DATABASE ?1 AS src", [&uri])
                .map_err(err("attaching the projections"))?;
            conn.execute_batch(
                "ATTACH DATABASE ':memory:' AS traces; ATTACH DATABASE ':memory:' AS gold;",
            )
            .map_err(err("attaching the tenant's views"))?;
            for (schema, table) in [
                ("traces", "steps"),
                ("traces", "retrieval_samples"),
                ("gold", "executions"),
            ] {
                stop.check(limits)?;
                conn.execute(
                    &format!(
                        "CREATE TABLE {schema}.{table} AS SELECT * FROM src.{table} WHERE tenant = ?1"
                    ),
                    [tenant],
                )
                .map_err(|e| stop.stopped(limits).unwrap_or_else(|| err("copying the tenant's rows")(e)))?;
            }
            conn.execute_batch("DETACH DATABASE src;")
                .map_err(err("detaching the projections"))?;
        }
    }
    // Nothing else can be attached from here on (ATTACH counts as read-only to SQLite).
    conn.set_limit(rusqlite::limits::Limit::SQLITE_LIMIT_ATTACHED, 0)
        .map_err(err("limiting attached databases"))?;
    if let Some(max) = limits.max_bytes {
        // SQLite itself then refuses to build a value larger than the whole result may be
        // (`randomblob(1e9)` fails before it allocates).
        let max = i32::try_from(max).unwrap_or(i32::MAX).max(1);
        conn.set_limit(rusqlite::limits::Limit::SQLITE_LIMIT_LENGTH, max)
            .map_err(err("limiting value sizes"))?;
    }
    Ok(conn)
}

/// Runs one read-only statement (after [`translate`]) and returns its rows.
pub fn query(conn: &Connection, sql: &str) -> Result<Rows> {
    query_stoppable(conn, sql, &Stop::default(), &Limits::none())
}

fn query_stoppable(conn: &Connection, sql: &str, stop: &Stop, limits: &Limits) -> Result<Rows> {
    let failed = |e: rusqlite::Error| {
        if let Some(stopped) = stop.stopped(limits) {
            return stopped;
        }
        if let (Some(max), rusqlite::Error::SqliteFailure(f, _)) = (limits.max_bytes, &e)
            && f.code == rusqlite::ErrorCode::TooBig
        {
            return limits.bytes_exceeded(max);
        }
        ObserveError::Query {
            detail: e.to_string(),
        }
    };
    stop.check(limits)?;
    let sql = translate(sql);
    let mut stmt = conn.prepare(&sql).map_err(|e| match e {
        rusqlite::Error::MultipleStatement => ObserveError::QueryRefused {
            reason: "only one statement per query".into(),
        },
        other => ObserveError::QueryRefused {
            reason: format!("{other} in: {}", sql.trim()),
        },
    })?;
    if !stmt.readonly() {
        return Err(ObserveError::QueryRefused {
            reason: format!(
                "the SQL path is read-only and this statement writes: {}",
                sql.trim()
            ),
        });
    }
    let columns: Vec<String> = stmt.column_names().map(|s| s.to_string()).collect();
    let n = columns.len();
    let mut rows = stmt.query([]).map_err(failed)?;
    let mut out = Vec::new();
    let mut bytes = 0usize;
    while let Some(row) = rows.next().map_err(failed)? {
        if let Some(max) = limits.max_rows
            && out.len() >= max
        {
            return Err(limits.rows_exceeded(max));
        }
        let mut cells = Vec::with_capacity(n);
        for i in 0..n {
            let v = row.get_ref(i).map_err(failed)?;
            // Counted before it is copied: a blob's hex form is twice its length.
            bytes = bytes.saturating_add(match v {
                ValueRef::Text(t) => t.len(),
                ValueRef::Blob(b) => b.len().saturating_mul(2),
                ValueRef::Null => 1,
                _ => 8,
            });
            if let Some(max) = limits.max_bytes
                && bytes > max
            {
                return Err(limits.bytes_exceeded(max));
            }
            cells.push(to_json(v));
        }
        out.push(cells);
    }
    Ok(Rows { columns, rows: out })
}

/// Opens the projections for `scope` and runs `sql` (see [`query`]).
pub fn run(path: &Path, scope: &Scope, sql: &str) -> Result<Rows> {
    let conn = connect(path, scope)?;
    query(&conn, sql)
}

/// [`run`] within `limits`, stoppable through `stop` (from another thread) at any point.
pub fn run_stoppable(
    path: &Path,
    scope: &Scope,
    sql: &str,
    limits: &Limits,
    stop: &Stop,
) -> Result<Rows> {
    let result = connect_stoppable(path, scope, stop, limits)
        .and_then(|conn| query_stoppable(&conn, sql, stop, limits));
    stop.finished.store(true, Ordering::SeqCst);
    if let Ok(mut h) = stop.interrupt.lock() {
        // The connection is closed when this returns; nothing must interrupt it after.
        *h = None;
    }
    result
}

fn to_json(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::from(i),
        ValueRef::Real(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
        ValueRef::Text(t) => Value::String(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::String(b.iter().map(|x| format!("{x:02x}")).collect()),
    }
}

fn cell_text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => {
                // Up to 6 decimals, trailing zeros trimmed: micro-dollar precision.
                let s = format!("{f:.6}");
                let s = s.trim_end_matches('0').trim_end_matches('.');
                s.to_owned()
            }
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

impl Rows {
    /// Renders the rows in `format`.
    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Json => {
                let objs: Vec<Value> = self
                    .rows
                    .iter()
                    .map(|r| {
                        Value::Object(
                            self.columns
                                .iter()
                                .cloned()
                                .zip(r.iter().cloned())
                                .collect(),
                        )
                    })
                    .collect();
                let mut s = serde_json::to_string_pretty(&Value::Array(objs)).unwrap_or_default();
                s.push('\n');
                s
            }
            Format::Csv => {
                let quote = |s: &str| {
                    if s.contains([',', '"', '\n', '\r']) {
                        format!("\"{}\"", s.replace('"', "\"\""))
                    } else {
                        s.to_owned()
                    }
                };
                let mut out = String::new();
                let header: Vec<String> = self.columns.iter().map(|c| quote(c)).collect();
                out.push_str(&header.join(","));
                out.push('\n');
                for r in &self.rows {
                    let cells: Vec<String> = r.iter().map(|v| quote(&cell_text(v))).collect();
                    out.push_str(&cells.join(","));
                    out.push('\n');
                }
                out
            }
            Format::Table => {
                let text: Vec<Vec<String>> = self
                    .rows
                    .iter()
                    .map(|r| r.iter().map(cell_text).collect())
                    .collect();
                let mut widths: Vec<usize> =
                    self.columns.iter().map(|c| c.chars().count()).collect();
                for r in &text {
                    for (w, c) in widths.iter_mut().zip(r) {
                        *w = (*w).max(c.chars().count().min(100));
                    }
                }
                let line = |cells: &[String]| {
                    let parts: Vec<String> = cells
                        .iter()
                        .zip(&widths)
                        .map(|(c, w)| {
                            let c: String = c.chars().take(100).collect();
                            format!("{c:<w$}")
                        })
                        .collect();
                    parts.join("  ").trim_end().to_owned() + "\n"
                };
                let mut out = line(&self.columns);
                let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
                out.push_str(&line(&rule));
                for r in &text {
                    out.push_str(&line(r));
                }
                out.push_str(&format!(
                    "({} row{})\n",
                    self.rows.len(),
                    if self.rows.len() == 1 { "" } else { "s" }
                ));
                out
            }
        }
    }
}

/// Exact percentile by linear interpolation between closest ranks; NULLs are ignored.
struct Percentile;

impl Aggregate<(Vec<f64>, Option<f64>), Option<f64>> for Percentile {
    fn init(&self, _: &mut Context<'_>) -> rusqlite::Result<(Vec<f64>, Option<f64>)> {
        Ok((Vec::new(), None))
    }

    fn step(
        &self,
        ctx: &mut Context<'_>,
        acc: &mut (Vec<f64>, Option<f64>),
    ) -> rusqlite::Result<()> {
        if acc.1.is_none() {
            let p: f64 = ctx.get(1)?;
            if !(0.0..=1.0).contains(&p) {
                return Err(rusqlite::Error::UserFunctionError(
                    format!("percentile fraction {p} is not between 0 and 1").into(),
                ));
            }
            acc.1 = Some(p);
        }
        match ctx.get_raw(0) {
            ValueRef::Integer(i) => acc.0.push(i as f64),
            ValueRef::Real(f) => acc.0.push(f),
            ValueRef::Null => {}
            ValueRef::Text(_) | ValueRef::Blob(_) => {
                return Err(rusqlite::Error::UserFunctionError(
                    "percentile of a non-numeric value".into(),
                ));
            }
        }
        Ok(())
    }

    fn finalize(
        &self,
        _: &mut Context<'_>,
        acc: Option<(Vec<f64>, Option<f64>)>,
    ) -> rusqlite::Result<Option<f64>> {
        let Some((mut values, Some(p))) = acc else {
            return Ok(None);
        };
        Ok(percentile(&mut values, p))
    }
}

/// The `p` percentile (0..=1) of `values` by linear interpolation; `None` when empty.
pub fn percentile(values: &mut [f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let pos = p * (values.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    Some(values[lo] + (values[hi] - values[lo]) * (pos - lo as f64))
}

fn register_functions(conn: &Connection) -> rusqlite::Result<()> {
    let flags = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    for name in ["approx_percentile", "percentile_cont", "quantile_cont"] {
        conn.create_aggregate_function(name, 2, flags, Percentile)?;
    }
    Ok(())
}

/// Rewrites the PostgreSQL-isms of the seed's queries into SQLite, outside string literals and
/// comments: `expr::int` (after an identifier or a closing parenthesis) becomes
/// `CAST(expr AS INTEGER)`, and `CURRENT_DATE - N` becomes `date('now', '-N days')`.
pub fn translate(sql: &str) -> String {
    let chars: Vec<char> = sql.chars().collect();
    let mut out = String::with_capacity(sql.len() + 16);
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        // String literals and quoted identifiers pass through untouched.
        if c == '\'' || c == '"' {
            let start = i;
            i += 1;
            while i < chars.len() && chars[i] != c {
                i += 1;
            }
            i = (i + 1).min(chars.len());
            out.extend(&chars[start..i]);
            continue;
        }
        if c == '-' && chars.get(i + 1) == Some(&'-') {
            while i < chars.len() && chars[i] != '\n' {
                out.push(chars[i]);
                i += 1;
            }
            continue;
        }
        if c == ':' && chars.get(i + 1) == Some(&':') {
            let mut j = i + 2;
            let t_start = j;
            while j < chars.len() && (chars[j].is_ascii_alphanumeric() || chars[j] == '_') {
                j += 1;
            }
            let ty: String = chars[t_start..j].iter().collect::<String>().to_lowercase();
            let sqlite_ty = match ty.as_str() {
                "int" | "integer" | "bigint" | "smallint" => Some("INTEGER"),
                "float" | "real" | "double" | "numeric" | "decimal" => Some("REAL"),
                "text" | "varchar" => Some("TEXT"),
                _ => None,
            };
            if let (Some(ty), Some(start)) = (sqlite_ty, operand_start(&out)) {
                let operand = out.split_off(start);
                out.push_str(&format!("CAST({operand} AS {ty})"));
                i = j;
                continue;
            }
        }
        if matches_word(&chars, i, "current_date") {
            let mut j = i + "current_date".len();
            while j < chars.len() && chars[j].is_whitespace() {
                j += 1;
            }
            if j < chars.len() && chars[j] == '-' {
                let mut k = j + 1;
                while k < chars.len() && chars[k].is_whitespace() {
                    k += 1;
                }
                let d_start = k;
                while k < chars.len() && chars[k].is_ascii_digit() {
                    k += 1;
                }
                if k > d_start {
                    let days: String = chars[d_start..k].iter().collect();
                    out.push_str(&format!("date('now', '-{days} days')"));
                    i = k;
                    continue;
                }
            }
        }
        out.push(c);
        i += 1;
    }
    out
}

fn matches_word(chars: &[char], at: usize, word: &str) -> bool {
    let n = word.len();
    if at + n > chars.len() {
        return false;
    }
    let before_ok = at == 0 || !(chars[at - 1].is_ascii_alphanumeric() || chars[at - 1] == '_');
    let after_ok = chars
        .get(at + n)
        .is_none_or(|c| !(c.is_ascii_alphanumeric() || *c == '_'));
    before_ok
        && after_ok
        && chars[at..at + n]
            .iter()
            .zip(word.chars())
            .all(|(a, b)| a.to_ascii_lowercase() == b)
}

/// Where the operand of a trailing `::type` cast starts in `out`: a (dotted) identifier or a
/// balanced parenthesised expression ending at the end of `out`.
fn operand_start(out: &str) -> Option<usize> {
    let bytes = out.as_bytes();
    let end = bytes.len();
    if end == 0 {
        return None;
    }
    if bytes[end - 1] == b')' {
        let mut depth = 0i32;
        for i in (0..end).rev() {
            match bytes[i] {
                b')' => depth += 1,
                b'(' => {
                    depth -= 1;
                    if depth == 0 {
                        // Include a function name before the parenthesis.
                        let mut s = i;
                        while s > 0
                            && (bytes[s - 1].is_ascii_alphanumeric() || bytes[s - 1] == b'_')
                        {
                            s -= 1;
                        }
                        return Some(s);
                    }
                }
                _ => {}
            }
        }
        return None;
    }
    let mut s = end;
    while s > 0
        && (bytes[s - 1].is_ascii_alphanumeric() || bytes[s - 1] == b'_' || bytes[s - 1] == b'.')
    {
        s -= 1;
    }
    (s < end).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn translate_rewrites_the_seed_postgresisms_only_outside_literals() {
        assert_eq!(
            translate("SELECT AVG(outcome_success::int), x.y::integer, '::int' FROM t"),
            "SELECT AVG(CAST(outcome_success AS INTEGER)), CAST(x.y AS INTEGER), '::int' FROM t"
        );
        assert_eq!(
            translate("WHERE started_at >= CURRENT_DATE - 14 GROUP BY 1"),
            "WHERE started_at >= date('now', '-14 days') GROUP BY 1"
        );
        assert_eq!(
            translate("SELECT sum(a)::real"),
            "SELECT CAST(sum(a) AS REAL)"
        );
        assert_eq!(translate("SELECT current_date"), "SELECT current_date");
    }

    #[test]
    fn percentile_interpolates_between_ranks() {
        assert_eq!(percentile(&mut [1.0, 2.0, 3.0, 4.0], 0.5), Some(2.5));
        assert_eq!(percentile(&mut [10.0], 0.95), Some(10.0));
        let p95 = percentile(&mut [1.0, 2.0, 3.0, 4.0, 5.0], 0.95).unwrap_or_default();
        assert!((p95 - 4.8).abs() < 1e-12);
        assert_eq!(percentile(&mut [], 0.5), None);
    }
}
