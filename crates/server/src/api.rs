//! The JSON API. Paths clients and scripts rely on: `POST /v1/executions`,
//! `GET /v1/executions/{id}`, `GET /v1/executions/{id}/events`, `GET /v1/gates?status=…`,
//! `POST /v1/gates/{id}/decision`, `PUT`/`DELETE /v1/kill-switches/{scope}/{name}`,
//! `GET /v1/metrics`, `GET /healthz`, `GET /metrics`, `GET /openapi.json`.
//!
//! Bodies are parsed by hand from JSON so that a malformed one gets a 400 naming the field.

use crate::auth::Role;
use crate::error::ApiError;
use crate::params::{MAX_PAGE, Params, page_size};
use crate::{Caller, State};
use axum::body::Bytes;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use keel_core::payload::Verdict;
use keel_core::{Event, ExecId};
use keel_runtime::control::Scope;
use keel_runtime::gates::{ExecView, GateView};
use serde::Deserialize;
use serde_json::{Map, Value, json};

pub(crate) fn routes() -> Router<State> {
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/openapi.json", get(openapi))
        .route("/metrics", get(crate::metrics::prometheus))
        .route("/v1/metrics", get(crate::metrics::json))
        .route("/v1/executions", post(start).get(list_executions))
        .route("/v1/executions/{id}", get(execution))
        .route("/v1/executions/{id}/events", get(events))
        .route("/v1/gates", get(list_gates))
        .route("/v1/reviews", get(list_reviews))
        .route("/v1/gates/{id}", get(gate))
        .route("/v1/gates/{id}/decision", post(decide))
        .route("/v1/kill-switches", get(list_switches))
        .route(
            "/v1/kill-switches/{scope}/{name}",
            put(set_switch).delete(clear_switch),
        )
        .merge(crate::experiments::routes())
}

async fn openapi() -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        include_str!("../openapi.json"),
    )
}

/// Requires one of `roles`.
pub(crate) fn need(caller: &Caller, roles: &[Role]) -> Result<(), ApiError> {
    if caller.0.may(roles) {
        return Ok(());
    }
    let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
    Err(ApiError::Forbidden(format!(
        "this needs one of the roles {}",
        names.join(", ")
    )))
}

/// A JSON object body, or a 400 saying why not.
pub(crate) fn object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::bad("body", "expected a JSON object")),
        Err(e) => Err(ApiError::bad("body", format!("malformed JSON: {e}"))),
    }
}

/// A string field: required (non-empty) or optional.
pub(crate) fn text(
    m: &Map<String, Value>,
    field: &str,
    required: bool,
) -> Result<Option<String>, ApiError> {
    match m.get(field) {
        None | Some(Value::Null) if required => {
            Err(ApiError::bad(field, "required (a non-empty string)"))
        }
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if required && s.trim().is_empty() => {
            Err(ApiError::bad(field, "must not be empty"))
        }
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(ApiError::bad(
            field,
            format!("expected a string, got {}", kind(other)),
        )),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

pub(crate) fn unknown_fields(m: &Map<String, Value>, known: &[&str]) -> Result<(), ApiError> {
    match m.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(ApiError::bad(
            k,
            format!("unknown field (known: {})", known.join(", ")),
        )),
        None => Ok(()),
    }
}

fn exec_id(id: &str) -> Result<ExecId, ApiError> {
    id.parse()
        .map_err(|_| ApiError::bad("id", format!("{id:?} is not an execution id (a UUID)")))
}

/// Starts an execution on behalf of `tenant`, about data subject `subject` if one is named
/// (sealing its personal data under the subject's key; a strategy with `subject: required`
/// refuses none), and wakes the worker. With an idempotency key, a repeat answers with the first
/// execution: `(exec, version, false)` (see [`crate::idempotency`]).
pub(crate) async fn start_execution(
    state: &State,
    tenant: &str,
    strategy: Option<&str>,
    subject: Option<&str>,
    goal: &str,
    idempotency_key: Option<&str>,
) -> Result<(ExecId, String, bool), ApiError> {
    if let Some(name) = strategy
        && state.strategies.get(name).is_none()
    {
        return Err(ApiError::bad("strategy", format!("no strategy {name:?}")));
    }
    if strategy.is_none() && state.strategies.default_strategy().is_none() {
        return Err(ApiError::bad("strategy", "no strategies are loaded"));
    }
    // The id first: it is the unit of per-execution experiments (a repeated key derives the
    // same id, so the same arm).
    let exec = match idempotency_key {
        Some(key) => crate::idempotency::exec_id(tenant, key),
        None => keel_spine::clock::new_exec_id(),
    };
    let id = exec.to_string();
    let units = keel_core::experiment::registry::Units {
        exec_id: &id,
        subject,
        tenant,
    };
    // Without a strategy, a registered experiment assigns an arm (recorded on exec.started).
    let chosen = keel_runtime::experiment::choose(
        &state.agent.control,
        &state.strategies,
        strategy,
        &units,
        state.agent.clock.now(),
    )
    .await?;
    let s = &chosen;
    keel_runtime::subject::check(s, subject).map_err(|e| ApiError::bad("subject", e))?;
    // The tenant's monthly budget: its alarm, and its hard stop (402). The cached control
    // state says whether there is one, so tenants without a budget never wait on projections.
    // A repeat of a keyed request started nothing new: it answers with its first execution
    // even once the budget is spent (looked up only for a tenant with a budget).
    let budgeted = state
        .agent
        .control
        .state()
        .await?
        .budgets
        .contains_key(tenant);
    let repeat = match idempotency_key {
        Some(_) if budgeted => crate::idempotency::earlier(&*state.log, exec, tenant)
            .await?
            .is_some(),
        _ => false,
    };
    if budgeted && !repeat {
        let (log, t) = (state.log.clone(), keel_core::TenantId(tenant.to_owned()));
        crate::observe::with_projections(state, move |store| {
            Box::pin(async move {
                keel_observe::budget::check(&*log, &keel_spine::clock::SystemClock, store, &t).await
            })
        })
        .await?
        .map_err(|over| ApiError::BudgetSpent(over.to_string()))?;
    }
    let Some(key) = idempotency_key else {
        let exec = state
            .agent
            .start_about_as(exec, s, tenant, subject, goal)
            .await?;
        state.wake.notify_one();
        return Ok((exec, s.version.clone(), true));
    };
    let created = match state
        .agent
        .start_about_as(exec, s, tenant, subject, goal)
        .await
    {
        Ok(_) => true,
        // A repeat: the start conflicts, or (another subject than the first's) the link does.
        Err(keel_runtime::RuntimeError::Spine(
            keel_spine::SpineError::Conflict { .. } | keel_spine::SpineError::InvalidAppend { .. },
        )) => false,
        Err(e) => return Err(e.into()),
    };
    if created {
        state.wake.notify_one();
        return Ok((exec, s.version.clone(), true));
    }
    let Some(first) = crate::idempotency::earlier(&*state.log, exec, tenant).await? else {
        return Err(ApiError::Internal(format!(
            "execution {exec} of Idempotency-Key {key:?} cannot be read"
        )));
    };
    let same_strategy = first.strategy_version == s.version
        || first.strategy_version.starts_with(&format!("{}/", s.name));
    let same_subject = state.log.subject_of(exec).await?.as_deref() == subject;
    if first.goal != goal || !same_strategy || !same_subject {
        return Err(ApiError::Unprocessable(format!(
            "Idempotency-Key {key:?} was already used for execution {exec} with another body \
             (goal, strategy or subject differ); use a new key for a new execution"
        )));
    }
    Ok((exec, first.strategy_version, false))
}

async fn start(
    axum::extract::State(state): axum::extract::State<State>,
    caller: Caller,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    need(&caller, &[Role::Agent, Role::Operator])?;
    let m = object(&body)?;
    unknown_fields(&m, &["goal", "strategy", "subject"])?;
    let goal = text(&m, "goal", true)?.unwrap_or_default();
    let strategy = text(&m, "strategy", false)?;
    let subject = text(&m, "subject", false)?;
    let key = crate::idempotency::key(&headers)?;
    let (exec, version, created) = start_execution(
        &state,
        &caller.0.tenant,
        strategy.as_deref(),
        subject.as_deref(),
        &goal,
        key.as_deref(),
    )
    .await?;
    let events = state.log.read(exec, 1).await?;
    let trace = events.first().map(|e| e.trace_id.to_string());
    let status = match events.last().map(|e| &e.payload) {
        Some(keel_core::payload::Payload::ExecFinished(f)) => f.outcome.as_str().to_owned(),
        Some(keel_core::payload::Payload::ExecCancelled(_)) => "cancelled".into(),
        Some(keel_core::payload::Payload::GateRequested(_)) => "at_gate".into(),
        _ => "running".into(),
    };
    // A repeat is 200 (nothing was created) and says so in a header, as Stripe's API does.
    let code = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut r = (
        code,
        [(
            axum::http::header::LOCATION,
            format!("/v1/executions/{exec}"),
        )],
        Json(json!({
            "exec_id": exec.to_string(),
            "trace_id": trace,
            "strategy_version": version,
            "status": status,
        })),
    )
        .into_response();
    if !created {
        r.headers_mut().insert(
            "idempotent-replayed",
            axum::http::HeaderValue::from_static("true"),
        );
    }
    Ok(r)
}

/// The caller's view of one execution, or 404 (also for another tenant's).
pub(crate) async fn exec_view(
    state: &State,
    caller: &Caller,
    exec: ExecId,
) -> Result<ExecView, ApiError> {
    let book = state.approvals.book().await?;
    let held = book.execs.get(&exec).cloned();
    drop(book);
    // The server's book holds only recent executions; an older one is folded from its events.
    let view = match held {
        Some(x) => Some(x),
        None => keel_runtime::gates::Book::view_of(&state.log.read(exec, 1).await?),
    };
    view.filter(|x| x.tenant == caller.0.tenant)
        .ok_or_else(|| ApiError::NotFound(format!("execution {exec}")))
}

async fn execution(
    axum::extract::State(state): axum::extract::State<State>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<ExecView>, ApiError> {
    let exec = exec_id(&id)?;
    Ok(Json(exec_view(&state, &caller, exec).await?))
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    limit: Option<u64>,
    #[serde(default)]
    cursor: Option<String>,
}

fn bad_cursor(c: &str) -> ApiError {
    ApiError::bad(
        "cursor",
        format!("{c:?} is not a cursor this list returned"),
    )
}

/// How many executions the book let go one list request folds at most by default (each is read
/// from the spine): a filter that matches few of many pages on instead of reading them all.
pub const LIST_SCAN: usize = 2048;

/// Where an execution sorts in the list: its start to the millisecond (what the projections
/// store), then its id. The list is newest first, so it runs down this key.
fn list_key(x: &ExecView) -> (String, ExecId) {
    (
        x.started_at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        x.exec_id,
    )
}

/// Newest first, at most [`MAX_PAGE`] a page; `next_cursor` (when more remain) continues after
/// the last one shown. The server's book holds the executions in flight and the most recent
/// finished ones; older ones (which it let go) are found by their `exec.started` step in the
/// projections (replays included) and folded from their events, so the cursor pages through
/// every execution of the tenant.
async fn list_executions(
    axum::extract::State(state): axum::extract::State<State>,
    caller: Caller,
    Params(q): Params<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = page_size(q.limit, 100)?;
    let tenant = caller.0.tenant.as_str();
    let after = match q.cursor.as_deref() {
        None => None,
        Some(c) => {
            let id: ExecId = c.parse().map_err(|_| bad_cursor(c))?;
            let x = exec_view(&state, &caller, id)
                .await
                .map_err(|_| bad_cursor(c))?;
            Some(list_key(&x))
        }
    };
    let wanted = |x: &ExecView| {
        x.tenant == tenant
            && q.status.as_deref().is_none_or(|s| x.status == s)
            && after.as_ref().is_none_or(|a| list_key(x) < *a)
    };
    let (mut v, held, let_go) = {
        let book = state.approvals.book().await?;
        let v: Vec<ExecView> = book.execs.values().filter(|x| wanted(x)).cloned().collect();
        let held: std::collections::BTreeSet<ExecId> = book
            .execs
            .values()
            .filter(|x| x.tenant == tenant)
            .map(|x| x.exec_id)
            .collect();
        (v, held, book.dropped.contains_key(tenant))
    };
    // Only finished executions are let go: a filter on a live status needs the book alone.
    let live = matches!(
        q.status.as_deref(),
        Some("running" | "at_gate" | "suspended")
    );
    let mut scanned_to = None;
    if let_go && !live {
        let (older, stopped) =
            older_executions(&state, tenant, after.clone(), &held, limit + 1, &wanted).await?;
        v.extend(older);
        scanned_to = stopped;
    }
    // A scan that stopped early (a rare status among many executions) ends this page where it
    // stopped: the next page continues from there, with nothing skipped or repeated.
    if let Some(k) = &scanned_to {
        v.retain(|x| list_key(x) >= *k);
    }
    v.sort_by_key(|x| std::cmp::Reverse(list_key(x)));
    let next = match (v.len() > limit, scanned_to) {
        (true, _) => Some(v[limit - 1].exec_id.to_string()),
        (false, Some((_, id))) => Some(id.to_string()),
        (false, None) => None,
    };
    v.truncate(limit);
    Ok(Json(json!({ "executions": v, "next_cursor": next })))
}

/// Up to `want` of the tenant's executions that the book no longer holds, newest first below
/// `after`, each folded from its own events and kept when `wanted`. A request reads at most
/// `state.list_scan` of them; when it stops there first, the second value is where it stopped.
async fn older_executions(
    state: &State,
    tenant: &str,
    mut after: Option<(String, ExecId)>,
    held: &std::collections::BTreeSet<ExecId>,
    want: usize,
    wanted: &(dyn Fn(&ExecView) -> bool + Sync),
) -> Result<(Vec<ExecView>, Option<(String, ExecId)>), ApiError> {
    const BATCH: usize = 256;
    let mut scanned = 0usize;
    let quote = |s: &str| s.replace('\'', "''");
    let mut out = Vec::new();
    loop {
        let below = after.as_ref().map_or(String::new(), |(k, id)| {
            format!(
                "AND (k < '{k}' OR (k = '{k}' AND id < '{id}'))",
                k = quote(k)
            )
        });
        // Built here, never from a caller's text; the tenant is the caller's own.
        let tenant_q = quote(tenant);
        let rows = crate::observe::with_projections(state, move |store| {
            let k = match store.dialect().starts_with("PostgreSQL") {
                true => {
                    "to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
                }
                false => "ts",
            };
            let sql = format!(
                "SELECT id, k FROM (SELECT CAST(exec_id AS TEXT) AS id, {k} AS k \
                 FROM traces.steps WHERE tenant = '{tenant_q}' AND event_type = 'exec.started') AS e \
                 WHERE 1 = 1 {below} ORDER BY k DESC, id DESC LIMIT {BATCH}"
            );
            Box::pin(async move { store.query(&keel_observe::sql::Scope::Admin, &sql).await })
        })
        .await?;
        for r in &rows.rows {
            let (Some(id), Some(k)) = (
                r.first()
                    .and_then(Value::as_str)
                    .and_then(|s| s.parse::<ExecId>().ok()),
                r.get(1).and_then(Value::as_str),
            ) else {
                continue;
            };
            after = Some((k.to_owned(), id));
            if held.contains(&id) {
                continue;
            }
            scanned += 1;
            let events = state.log.read(id, 1).await?;
            if let Some(x) = keel_runtime::gates::Book::view_of(&events).filter(|x| wanted(x)) {
                out.push(x);
            }
        }
        if out.len() >= want || rows.rows.len() < BATCH {
            return Ok((out, None));
        }
        if scanned >= state.list_scan {
            return Ok((out, after));
        }
    }
}

#[derive(Deserialize)]
struct EventsQuery {
    #[serde(default)]
    from_seq: Option<u64>,
    #[serde(default)]
    limit: Option<u64>,
}

/// An execution's events from `from_seq`, at most [`MAX_PAGE`] a page; `next_from_seq` (when
/// more remain) is where the next page starts.
async fn events(
    axum::extract::State(state): axum::extract::State<State>,
    caller: Caller,
    Path(id): Path<String>,
    Params(q): Params<EventsQuery>,
) -> Result<Json<Value>, ApiError> {
    let exec = exec_id(&id)?;
    let limit = page_size(q.limit, MAX_PAGE)?;
    // Sequence numbers are stored as signed 64-bit integers; anything past that is a 400.
    let from = q.from_seq.unwrap_or(1).max(1);
    if i64::try_from(from).is_err() {
        return Err(ApiError::bad(
            "from_seq",
            format!("{from} is out of range (1 to {})", i64::MAX),
        ));
    }
    if state.tenant_of(exec).await?.as_deref() != Some(caller.0.tenant.as_str()) {
        return Err(ApiError::NotFound(format!("execution {exec}")));
    }
    let mut events = state.log.read(exec, from).await?;
    let next = (events.len() > limit).then(|| events[limit].seq);
    events.truncate(limit);
    let events: Vec<Value> = events.iter().map(event_json).collect();
    Ok(Json(json!({ "events": events, "next_from_seq": next })))
}

/// An event as the API shows it: its wire form.
pub(crate) fn event_json(e: &Event) -> Value {
    serde_json::from_str(&e.encode()).unwrap_or(Value::Null)
}

/// Oldest request first, at most [`MAX_PAGE`] a page, with `next_cursor` like the executions.
async fn list_gates(
    axum::extract::State(state): axum::extract::State<State>,
    caller: Caller,
    Params(q): Params<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    need(&caller, &[Role::Approver, Role::Operator])?;
    let limit = page_size(q.limit, 500)?;
    let status = q.status.as_deref().unwrap_or("pending");
    let book = state.approvals.book().await?;
    let key = |g: &GateView| (g.requested_at, g.gate_id.clone());
    let after = match q.cursor.as_deref() {
        None => None,
        Some(c) => Some(
            book.gates
                .get(c)
                .filter(|g| g.tenant == caller.0.tenant)
                .map(key)
                .ok_or_else(|| bad_cursor(c))?,
        ),
    };
    let mine = book
        .gates
        .values()
        .filter(|g| g.tenant == caller.0.tenant)
        .filter(|g| after.as_ref().is_none_or(|a| key(g) > *a));
    let mut gates: Vec<&GateView> = match status {
        "pending" => mine.filter(|g| g.is_pending()).collect(),
        "decided" => mine.filter(|g| g.decision.is_some()).collect(),
        "all" => mine.collect(),
        other => {
            return Err(ApiError::bad(
                "status",
                format!("{other:?} is not one of pending, decided, all"),
            ));
        }
    };
    gates.sort_by_key(|g| key(g));
    let next = (gates.len() > limit).then(|| gates[limit - 1].gate_id.clone());
    gates.truncate(limit);
    Ok(Json(json!({ "gates": gates, "next_cursor": next })))
}

/// Tier-2 calls that ran alone and were sampled for post-hoc review, newest first, at most
/// [`MAX_PAGE`] a page; `next_cursor` is the last one's `exec_id/call_id`.
async fn list_reviews(
    axum::extract::State(state): axum::extract::State<State>,
    caller: Caller,
    Params(q): Params<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    need(&caller, &[Role::Approver, Role::Operator])?;
    let limit = page_size(q.limit, 100)?;
    let book = state.approvals.book().await?;
    let mine = book
        .reviews
        .iter()
        .rev()
        .filter(|r| r.tenant == caller.0.tenant);
    let reviews: Vec<_> = match q.cursor.as_deref() {
        None => mine.take(limit + 1).collect(),
        Some(c) => {
            let mut rest = mine.skip_while(|r| format!("{}/{}", r.exec_id, r.call_id) != c);
            if rest.next().is_none() {
                return Err(bad_cursor(c));
            }
            rest.take(limit + 1).collect()
        }
    };
    let next = (reviews.len() > limit).then(|| {
        let r = reviews[limit - 1];
        format!("{}/{}", r.exec_id, r.call_id)
    });
    let reviews = &reviews[..reviews.len().min(limit)];
    Ok(Json(json!({ "reviews": reviews, "next_cursor": next })))
}

/// A gate with its `evidence`, assembled now (see [`keel_runtime::evidence`]).
async fn gate(
    axum::extract::State(state): axum::extract::State<State>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    need(&caller, &[Role::Approver, Role::Operator])?;
    let gate = {
        let book = state.approvals.book().await?;
        book.gates
            .get(&id)
            .filter(|g| g.tenant == caller.0.tenant)
            .cloned()
            .ok_or_else(|| ApiError::NotFound(format!("gate {id}")))?
    };
    let evidence = keel_runtime::evidence::assemble(&state.agent, &state.approvals, &gate).await?;
    let mut v = serde_json::to_value(&gate).map_err(|e| ApiError::Internal(e.to_string()))?;
    if let Some(m) = v.as_object_mut() {
        m.insert("evidence".into(), evidence);
    }
    Ok(Json(v))
}

/// Decides a gate for the caller's tenant and wakes the worker.
pub(crate) async fn decide_gate(
    state: &State,
    caller: &Caller,
    gate_id: &str,
    verdict: Verdict,
    reason: &str,
    input: Option<Value>,
) -> Result<Value, ApiError> {
    need(caller, &[Role::Approver])?;
    let (gate, d) = state
        .approvals
        .decide_with_input(
            gate_id,
            Some(&caller.0.tenant),
            &caller.0.name,
            verdict,
            reason,
            input,
        )
        .await?;
    state.wake.notify_one();
    Ok(json!({
        "gate_id": d.gate_id,
        "exec_id": gate.exec_id.to_string(),
        "verdict": d.verdict,
        "approver": d.approver,
        "reason": d.reason,
        "latency_ms": d.latency_ms,
        "input": d.input,
    }))
}

async fn decide(
    axum::extract::State(state): axum::extract::State<State>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    need(&caller, &[Role::Approver])?;
    let m = object(&body)?;
    unknown_fields(&m, &["verdict", "reason", "input"])?;
    let verdict = match text(&m, "verdict", true)?.as_deref() {
        Some("approve") => Verdict::Approve,
        Some("reject") => Verdict::Reject,
        Some(other) => {
            return Err(ApiError::bad(
                "verdict",
                format!("{other:?} is not one of approve, reject"),
            ));
        }
        None => return Err(ApiError::bad("verdict", "required")),
    };
    let reason = text(&m, "reason", verdict == Verdict::Reject)?.unwrap_or_default();
    // The answer to an MCP server's question (a gate during a call): checked against the
    // schema the server asked for when the decision is taken.
    let input = m.get("input").filter(|v| !v.is_null()).cloned();
    Ok(Json(
        decide_gate(&state, &caller, &id, verdict, &reason, input).await?,
    ))
}

fn scope(s: &str) -> Result<Scope, ApiError> {
    Scope::parse(s).ok_or_else(|| {
        ApiError::bad(
            "scope",
            format!("{s:?} is not one of tenant, strategy, tool"),
        )
    })
}

/// Checks a switch is the caller's to touch: a tenant switch only for their own tenant.
pub(crate) fn switch_target(caller: &Caller, scope_s: &str, name: &str) -> Result<Scope, ApiError> {
    need(caller, &[Role::Operator])?;
    let sc = scope(scope_s)?;
    if sc == Scope::Tenant && name != caller.0.tenant {
        return Err(ApiError::NotFound(format!("tenant {name}")));
    }
    Ok(sc)
}

async fn set_switch(
    axum::extract::State(state): axum::extract::State<State>,
    caller: Caller,
    Path((scope_s, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let sc = switch_target(&caller, &scope_s, &name)?;
    let reason = if body.is_empty() {
        None
    } else {
        let m = object(&body)?;
        unknown_fields(&m, &["reason"])?;
        text(&m, "reason", false)?
    };
    let reason = reason.unwrap_or_else(|| "killed by an operator".into());
    state
        .control
        .kill(sc, &name, Some(&caller.0.tenant), &reason, &caller.0.name)
        .await?;
    Ok(Json(
        json!({"scope": sc.as_str(), "name": name, "tenant": caller.0.tenant, "on": true, "reason": reason}),
    ))
}

async fn clear_switch(
    axum::extract::State(state): axum::extract::State<State>,
    caller: Caller,
    Path((scope_s, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let sc = switch_target(&caller, &scope_s, &name)?;
    if !state
        .control
        .clear(sc, &name, Some(&caller.0.tenant), &caller.0.name)
        .await?
    {
        return Err(ApiError::NotFound(format!(
            "kill-switch {} {name}",
            sc.as_str()
        )));
    }
    Ok(Json(
        json!({"scope": sc.as_str(), "name": name, "tenant": caller.0.tenant, "on": false}),
    ))
}

/// The caller's tenant's switches (and those for every tenant, which apply to it too).
pub(crate) async fn switches_of(state: &State, tenant: &str) -> Result<Vec<Value>, ApiError> {
    Ok(state
        .control
        .switches()
        .await?
        .into_iter()
        .filter(|s| s.key.tenant.as_deref().is_none_or(|t| t == tenant))
        .map(|s| {
            json!({
                "scope": s.key.scope, "name": s.key.name,
                "tenant": s.key.tenant.unwrap_or_else(|| "*".into()),
                "reason": s.info.reason, "by": s.info.by, "at": s.info.at,
            })
        })
        .collect())
}

async fn list_switches(
    axum::extract::State(state): axum::extract::State<State>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    need(&caller, &[Role::Operator])?;
    Ok(Json(
        json!({ "kill_switches": switches_of(&state, &caller.0.tenant).await? }),
    ))
}
