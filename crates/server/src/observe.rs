//! Observability over HTTP (keel-observe): `POST /v1/sql` (read-only, and scoped to the
//! caller's tenant whatever its roles: an admin holds every role of its own tenant and nothing
//! beyond it), `GET /v1/traces/{trace_id}`, `GET /v1/slo`, `GET /v1/replays/{id}/diff`,
//! the SLO gauges of `/metrics` ([`slo_metrics`]), and the pages: trace search, a trace's steps,
//! a replay's diff against its original, and the SLO table.
//!
//! Every read first brings the projections (`projections.url`, else `DATA/observe.db`) up
//! to date from the spine.

use crate::auth::{Principal, Role};
use crate::error::ApiError;
use crate::params::Params;
use crate::{Caller, State};
use askama::Template;
use axum::extract::{Path, Query};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use keel_core::payload::Payload;
use keel_core::{ExecId, TraceId};
use keel_observe::diff::{self, ExecDiff};
use keel_observe::slo::{self, SloReport};
use keel_observe::sql::{Format, Limits, Rows, Scope};
use keel_observe::{Backend, ProjectionStore};
use keel_spine::clock::{Clock, SystemClock};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

pub(crate) fn routes() -> Router<State> {
    Router::new()
        .route("/v1/sql", post(sql_api))
        .route("/v1/traces/{trace_id}", get(trace_api))
        .route("/v1/slo", get(slo_api))
        .route("/v1/replays/{id}/diff", get(replay_diff_api))
        .route("/ui/traces", get(trace_search_page))
        .route("/ui/traces/{trace_id}", get(trace_page))
        .route("/ui/replays/{id}", get(replay_page))
        .route("/ui/slo", get(slo_page))
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::Internal(e.to_string())
}

/// What one `POST /v1/sql` query may take by default: 10 s, 10 000 rows, 16 MiB of values.
pub fn default_sql_limits() -> Limits {
    Limits {
        timeout: Some(std::time::Duration::from_secs(10)),
        max_rows: Some(10_000),
        max_bytes: Some(16 << 20),
    }
}

/// How many `POST /v1/sql` queries one tenant may have running at once: a tenant's queries
/// share the machine's cores with every other tenant's requests.
pub const SQL_PER_TENANT: usize = 2;

/// One of a tenant's running queries; the slot frees when the request ends or its client goes
/// away (the handler's future is dropped).
struct SqlSlot<'a> {
    state: &'a State,
    tenant: String,
}

impl<'a> SqlSlot<'a> {
    fn take(state: &'a State, tenant: &str) -> Result<Self, ApiError> {
        let mut running = state
            .sql_running
            .lock()
            .map_err(|_| internal("the SQL slots' lock is poisoned"))?;
        let n = running.entry(tenant.to_owned()).or_default();
        if *n >= SQL_PER_TENANT {
            return Err(ApiError::TooMany(format!(
                "{SQL_PER_TENANT} queries of this tenant are running; wait for one to end"
            )));
        }
        *n += 1;
        Ok(Self {
            state,
            tenant: tenant.to_owned(),
        })
    }
}

impl Drop for SqlSlot<'_> {
    fn drop(&mut self) {
        if let Ok(mut running) = self.state.sql_running.lock()
            && let Some(n) = running.get_mut(&self.tenant)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                running.remove(&self.tenant);
            }
        }
    }
}

/// A projection error as the API answers it. Errors about the caller's own query (refused,
/// failed, past a limit) say what; failures of the store (its file, its server) are logged and
/// answered with a reference only.
pub(crate) fn observe_err(e: keel_observe::ObserveError) -> ApiError {
    use keel_observe::ObserveError as E;
    match e {
        E::NotFound { what } => ApiError::NotFound(what),
        E::QueryRefused { reason } => ApiError::bad("query", reason),
        E::Query { detail } => ApiError::bad("query", detail),
        E::Limit {
            limit: "time",
            detail,
        } => ApiError::bad("query", detail),
        E::Cancelled => ApiError::bad("query", e.to_string()),
        E::Limit { detail, .. } => ApiError::TooLarge {
            field: "query".into(),
            detail,
        },
        E::Config { what, detail } => ApiError::bad(&what, detail),
        other => internal(other),
    }
}

/// Runs `work` on the projections, opened on first use (the backend the wiring's
/// `projections_url` names, else the embedded file) and brought up to date with the spine first.
///
/// Boxed, with the store never held across a handler's own awaits: spelled as a plain async
/// fn, the handlers' futures are not provably `Send` to axum (rustc's higher-ranked lifetime
/// limitation with `dyn` stores behind guards).
pub(crate) fn with_projections<'a, T: Send + 'a>(
    state: &'a State,
    work: impl for<'s> FnOnce(
        &'s dyn ProjectionStore,
    ) -> futures::future::BoxFuture<'s, keel_observe::Result<T>>
    + Send
    + 'a,
) -> futures::future::BoxFuture<'a, Result<T, ApiError>> {
    Box::pin(async move {
        let default = state.data.join("observe.db");
        let backend =
            Backend::from_config(state.projections_url.as_deref(), &default).map_err(internal)?;
        let open = || async { backend.open().await.map_err(internal) };
        {
            let mut slot = state.projections.lock().await;
            if slot.is_none() {
                *slot = Some(open().await?);
            }
            let Some(store) = slot.as_mut() else {
                return Err(internal("the projections could not be opened"));
            };
            store.catch_up(&*state.log).await.map_err(observe_err)?;
        }
        let queries = state
            .queries
            .get_or_try_init(|| async { open().await.map(Arc::from) })
            .await?;
        work(&**queries).await.map_err(observe_err)
    })
}

/// One query over the projections, as `scope` may see them, within `limits`.
pub(crate) fn query<'a>(
    state: &'a State,
    scope: Scope,
    sql: String,
    limits: Limits,
) -> futures::future::BoxFuture<'a, Result<Rows, ApiError>> {
    with_projections(state, move |store| {
        Box::pin(async move { store.query_limited(&scope, &sql, &limits).await })
    })
}

/// What a caller's queries may see: its own tenant's rows, for every token. No credential the
/// HTTP API accepts reads across tenants; the cross-tenant view is `keel sql` on the machine
/// that holds the store (decision record 050).
pub(crate) fn scope(p: &Principal) -> Scope {
    Scope::Tenant(p.tenant.clone())
}

/// `POST /v1/sql {"query": "...", "format": "json"|"csv"|"table"}`, within the server's
/// [`Limits`]; the query stops when its client goes away.
async fn sql_api(
    axum::extract::State(state): axum::extract::State<State>,
    caller: Caller,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    use crate::api::{object, text, unknown_fields};
    crate::api::need(&caller, &[Role::Operator])?;
    let m = object(&body)?;
    unknown_fields(&m, &["query", "format"])?;
    let sql = text(&m, "query", true)?.unwrap_or_default();
    let format = match text(&m, "format", false)?.as_deref() {
        None | Some("json") => None,
        Some(f) => Some(f.parse::<Format>().map_err(|_| {
            ApiError::bad("format", format!("{f:?} is not one of json, csv, table"))
        })?),
    };
    let _slot = SqlSlot::take(&state, &caller.0.tenant)?;
    let rows = query(&state, scope(&caller.0), sql, state.sql_limits.clone()).await?;
    Ok(match format {
        None => Json(json!({"columns": rows.columns, "rows": rows.rows})).into_response(),
        Some(format) => rows.render(format).into_response(),
    })
}

async fn trace_rows(state: &State, p: &Principal, trace: &str) -> Result<Rows, ApiError> {
    let trace: TraceId = trace
        .parse()
        .map_err(|_| ApiError::bad("trace_id", format!("{trace:?} is not 32 hex digits")))?;
    query(
        state,
        scope(p),
        format!(
            "SELECT seq, step_n, ts, event_type, summary, exec_id, tenant, model, tokens_in, \
             tokens_out, cost, latency_ms, tool, status, gate_verdict, memory_chunks \
             FROM traces.steps WHERE trace_id = '{trace}' ORDER BY seq"
        ),
        Limits::none(),
    )
    .await
}

/// `GET /v1/traces/{trace_id}`: the trace's steps (404 when none is visible to the caller).
async fn trace_api(
    axum::extract::State(state): axum::extract::State<State>,
    caller: Caller,
    Path(trace): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let rows = trace_rows(&state, &caller.0, &trace).await?;
    if rows.rows.is_empty() {
        return Err(ApiError::NotFound(format!("no trace {trace}")));
    }
    let steps: Vec<Value> = rows
        .rows
        .iter()
        .map(|r| {
            Value::Object(
                rows.columns
                    .iter()
                    .cloned()
                    .zip(r.iter().cloned())
                    .collect(),
            )
        })
        .collect();
    Ok(Json(json!({"trace_id": trace, "steps": steps})))
}

#[derive(Deserialize)]
struct SloParams {
    #[serde(default)]
    days: Option<u64>,
}

/// The longest SLO window, in days: a thousand years ("everything"), well inside the dates
/// that the window's `YYYY-MM-DD` start can spell.
const MAX_SLO_DAYS: u64 = 365_000;

async fn slo_report(state: &State, p: &Principal, days: u64) -> Result<SloReport, ApiError> {
    let out_of_range = || {
        ApiError::bad(
            "days",
            format!("{days} is not between 1 and {MAX_SLO_DAYS}"),
        )
    };
    if !(1..=MAX_SLO_DAYS).contains(&days) {
        return Err(out_of_range());
    }
    let since = i64::try_from(days)
        .ok()
        .and_then(chrono::Duration::try_days)
        .and_then(|d| SystemClock.now().checked_sub_signed(d))
        .ok_or_else(out_of_range)?
        .format("%Y-%m-%d")
        .to_string();
    let scope = scope(p);
    with_projections(state, move |store| {
        Box::pin(async move { slo::compute_scoped(store, &since, &scope).await })
    })
    .await
}

/// `GET /v1/slo?days=N`: SLOs per strategy version (operators).
async fn slo_api(
    axum::extract::State(state): axum::extract::State<State>,
    caller: Caller,
    Params(q): Params<SloParams>,
) -> Result<Json<SloReport>, ApiError> {
    crate::api::need(&caller, &[Role::Operator])?;
    Ok(Json(
        slo_report(&state, &caller.0, q.days.unwrap_or(14)).await?,
    ))
}

/// The SLO gauges for `/metrics` (Prometheus text), over the last 14 days of the caller's
/// tenant, each series labelled with it.
pub async fn slo_metrics(state: &State, p: &Principal) -> Result<String, ApiError> {
    Ok(slo::prometheus_for(
        &slo_report(state, p, 14).await?,
        Some(&p.tenant),
    ))
}

async fn replay_diff(
    state: &State,
    p: &Principal,
    id: &str,
) -> Result<(ExecId, ExecId, ExecDiff), ApiError> {
    let replay: ExecId = id
        .parse()
        .map_err(|_| ApiError::bad("id", format!("{id:?} is not an execution id")))?;
    let after = state.log.read(replay, 1).await?;
    let not_found = || ApiError::NotFound(format!("no replay {replay}"));
    let first = after.first().ok_or_else(not_found)?;
    if first.tenant.0 != p.tenant {
        return Err(not_found());
    }
    let Payload::ExecStarted(started) = &first.payload else {
        return Err(not_found());
    };
    let original = started
        .replay_of
        .ok_or_else(|| ApiError::bad("id", format!("execution {replay} is not a replay")))?;
    let before = state.log.read(original, 1).await?;
    // The original is read through the replay: it must be the caller's too.
    if before.first().is_none_or(|e| e.tenant.0 != p.tenant) {
        return Err(not_found());
    }
    Ok((original, replay, diff::diff(&before, &after)))
}

/// `GET /v1/replays/{id}/diff`: a replay against its original, step by step.
async fn replay_diff_api(
    axum::extract::State(state): axum::extract::State<State>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (original, replay, d) = replay_diff(&state, &caller.0, &id).await?;
    Ok(Json(
        json!({"original": original.to_string(), "replay": replay.to_string(), "diff": d}),
    ))
}

// ---- pages ----

fn page(t: &impl Template) -> Response {
    match t.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => internal(format!("rendering a page: {e}")).into_response(),
    }
}

pub(crate) fn who(p: &Principal) -> String {
    let roles: Vec<&str> = p.roles.iter().map(|r| r.as_str()).collect();
    format!("{} ({}) · tenant {}", p.name, roles.join(", "), p.tenant)
}

fn logged_in(caller: Result<Caller, ApiError>) -> Result<Principal, Box<Response>> {
    caller
        .map(|c| c.0)
        .map_err(|_| Box::new(Redirect::to("/ui/login").into_response()))
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[derive(Template)]
#[template(path = "observe_traces.html")]
struct TracePage {
    title: &'static str,
    refresh: bool,
    who: String,
    flash: String,
    trace_id: String,
    columns: Vec<String>,
    rows: Vec<Vec<String>>,
}

#[derive(Deserialize)]
struct SearchParams {
    #[serde(default)]
    trace_id: Option<String>,
}

async fn trace_search_page(
    axum::extract::State(_state): axum::extract::State<State>,
    caller: Result<Caller, ApiError>,
    Query(q): Query<SearchParams>,
) -> Response {
    let p = match logged_in(caller) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let mut flash = String::new();
    if let Some(t) = q.trace_id.filter(|t| !t.trim().is_empty()) {
        // Only a well-formed id goes into the redirect's `Location` (anything else, a newline
        // included, would not even be a valid header).
        match t.trim().parse::<TraceId>() {
            Ok(id) => return Redirect::to(&format!("/ui/traces/{id}")).into_response(),
            Err(_) => flash = format!("{:?} is not a trace id (32 hex digits)", t.trim()),
        }
    }
    page(&TracePage {
        title: "Trace search",
        refresh: false,
        who: who(&p),
        flash,
        trace_id: String::new(),
        columns: vec![],
        rows: vec![],
    })
}

async fn trace_page(
    axum::extract::State(state): axum::extract::State<State>,
    caller: Result<Caller, ApiError>,
    Path(trace): Path<String>,
) -> Response {
    let p = match logged_in(caller) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let (rows, flash) = match trace_rows(&state, &p, &trace).await {
        Ok(r) if r.rows.is_empty() => (None, format!("no trace {trace}")),
        Ok(r) => (Some(r), String::new()),
        Err(e) => (None, e.to_string()),
    };
    let (columns, rows) = rows.map_or((vec![], vec![]), |r| {
        let rows = r
            .rows
            .iter()
            .map(|x| x.iter().map(cell).collect())
            .collect();
        (r.columns, rows)
    });
    page(&TracePage {
        title: "Trace",
        refresh: false,
        who: who(&p),
        flash,
        trace_id: trace,
        columns,
        rows,
    })
}

struct DiffRow {
    step_n: u32,
    changed: bool,
    before: String,
    after: String,
}

#[derive(Template)]
#[template(path = "observe_replay.html")]
struct ReplayPage {
    title: &'static str,
    refresh: bool,
    who: String,
    flash: String,
    original: String,
    replay: String,
    steps: Vec<DiffRow>,
    before: String,
    after: String,
}

fn view(v: Option<&diff::StepView>) -> String {
    let Some(v) = v else {
        return "(no such step)".into();
    };
    let mut out = v.memory.clone();
    if let Some(p) = &v.plan {
        out.push(format!("plan: {p}"));
    }
    out.extend(v.calls.iter().map(|c| format!("call: {c}")));
    out.extend(v.gates.iter().cloned());
    out.push(format!(
        "tokens {} · cost {}",
        v.tokens,
        v.cost_micros
            .map_or("unknown".into(), |m| format!("${:.6}", m as f64 / 1e6))
    ));
    out.join("\n")
}

fn totals(t: &diff::Totals) -> String {
    format!(
        "{} · {} steps · {} tokens · {}{}",
        t.outcome,
        t.steps,
        t.tokens,
        t.cost_micros
            .map_or("unknown".into(), |m| format!("${:.6}", m as f64 / 1e6)),
        t.detail
            .as_ref()
            .map(|d| format!(" · answer: {d}"))
            .unwrap_or_default()
    )
}

async fn replay_page(
    axum::extract::State(state): axum::extract::State<State>,
    caller: Result<Caller, ApiError>,
    Path(id): Path<String>,
) -> Response {
    let p = match logged_in(caller) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    match replay_diff(&state, &p, &id).await {
        Ok((original, replay, d)) => page(&ReplayPage {
            title: "Replay diff",
            refresh: false,
            who: who(&p),
            flash: String::new(),
            original: original.to_string(),
            replay: replay.to_string(),
            steps: d
                .steps
                .iter()
                .map(|s| DiffRow {
                    step_n: s.step_n,
                    changed: s.changed,
                    before: view(s.before.as_ref()),
                    after: view(s.after.as_ref()),
                })
                .collect(),
            before: totals(&d.before),
            after: totals(&d.after),
        }),
        Err(e) => e.into_response(),
    }
}

struct SloRow {
    strategy: String,
    executions: u64,
    finished: u64,
    outcome_rate: String,
    gate_rate: String,
    p50_steps: String,
    p95_steps: String,
    p50_tokens: String,
    p95_tokens: String,
    cost_per_success: String,
}

#[derive(Template)]
#[template(path = "observe_slo.html")]
struct SloPage {
    title: &'static str,
    refresh: bool,
    who: String,
    flash: String,
    since: String,
    strategies: Vec<SloRow>,
    tools: Vec<(String, String, u64, u64, String)>,
    retrieval: Vec<(String, u64, u64, u64, String)>,
}

async fn slo_page(
    axum::extract::State(state): axum::extract::State<State>,
    caller: Result<Caller, ApiError>,
) -> Response {
    let p = match logged_in(caller) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    if !p.may(&[Role::Operator]) {
        return ApiError::Forbidden("the SLO page needs the operator role".into()).into_response();
    }
    let r = match slo_report(&state, &p, 14).await {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let f = |v: Option<f64>, d: usize| v.map_or("-".into(), |v| format!("{v:.d$}"));
    page(&SloPage {
        title: "SLOs",
        refresh: false,
        who: who(&p),
        flash: String::new(),
        since: r.since.clone(),
        strategies: r
            .strategies
            .iter()
            .map(|s| SloRow {
                strategy: s.strategy_version.clone(),
                executions: s.executions,
                finished: s.finished,
                outcome_rate: f(s.outcome_rate, 3),
                gate_rate: f(s.gate_escalation_rate, 3),
                p50_steps: f(s.p50_steps, 1),
                p95_steps: f(s.p95_steps, 1),
                p50_tokens: f(s.p50_tokens, 0),
                p95_tokens: f(s.p95_tokens, 0),
                cost_per_success: f(s.cost_per_success, 6),
            })
            .collect(),
        tools: r
            .tools
            .iter()
            .map(|t| {
                (
                    t.strategy_version.clone(),
                    t.tool.clone(),
                    t.calls,
                    t.failures,
                    format!("{:.3}", t.failure_rate),
                )
            })
            .collect(),
        retrieval: r
            .retrieval
            .iter()
            .map(|x| {
                (
                    x.strategy_version.clone(),
                    x.retrievals,
                    x.sampled,
                    x.rated,
                    f(x.mean_rating, 2),
                )
            })
            .collect(),
    })
}
