//! The web UI: server-rendered pages (askama templates in `templates/`), plain forms, no
//! front-end build. Log in with an API token, which opens a server-side session (the cookie holds
//! the session's id, never the token; see [`crate::web`] for the cookie, CSRF and headers); the
//! approval queue shows each gate's evidence pack with approve / reject and a reason; executions
//! list; an execution's trace as a timeline of steps with tokens, cost and latency; the
//! kill-switch panel. Pages that show work in flight refresh themselves.

mod economics;
mod experiments;
mod execution;

use crate::api::{decide_gate, switch_target, switches_of};
use crate::auth::Principal;
use crate::error::ApiError;
use crate::{Caller, State};
use askama::Template;
use axum::Form;
use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use keel_core::Cost;
use keel_core::describe::dollars;
use keel_core::payload::Verdict;
use keel_runtime::gates::{ExecView, GateView};
use keel_spine::clock::{Clock, SystemClock};
use serde::Deserialize;
use serde_json::Value;

pub(crate) fn routes() -> Router<State> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/gates") }))
        .route("/ui", get(|| async { Redirect::to("/ui/gates") }))
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/logout", get(logout))
        .route("/ui/keel.css", get(crate::web::stylesheet))
        .route("/ui/gates", get(gates_page))
        .route("/ui/gates/{id}/decision", post(decide))
        .route("/ui/executions", get(executions_page))
        .route("/ui/executions/{id}", get(execution::execution_page))
        .route("/ui/execution.js", get(execution::script))
        .route("/ui/kill-switches", get(switches_page))
        .route("/ui/kill-switches/set", post(set_switch))
        .route("/ui/kill-switches/clear", post(clear_switch))
        .merge(economics::routes())
        .merge(experiments::routes())
}

pub(crate) fn render(t: &impl Template) -> Response {
    match t.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => ApiError::Internal(format!("rendering a page: {e}")).into_response(),
    }
}

pub(crate) fn who(p: &Principal) -> String {
    let roles: Vec<&str> = p.roles.iter().map(|r| r.as_str()).collect();
    format!("{} ({}) · tenant {}", p.name, roles.join(", "), p.tenant)
}

/// The principal of the live UI session, or a redirect to the login page.
pub(crate) fn principal(state: &State, headers: &HeaderMap) -> Result<Principal, Box<Response>> {
    match crate::web::session_principal(state, headers) {
        Ok(Some(p)) => Ok(p),
        Err(e) => Err(Box::new(ApiError::from(e).into_response())),
        Ok(None) => Err(Box::new(Redirect::to("/ui/login").into_response())),
    }
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    title: &'static str,
    refresh: bool,
    who: String,
    flash: String,
}

async fn login_page() -> Response {
    render(&LoginPage {
        title: "Log in",
        refresh: false,
        who: String::new(),
        flash: String::new(),
    })
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    token: String,
}

async fn login(
    axum::extract::State(state): axum::extract::State<State>,
    Form(f): Form<LoginForm>,
) -> Response {
    let token = f.token.trim();
    let session =
        state
            .tokens
            .create_session(token, crate::web::now_unix(), crate::web::SESSION_TTL_SECS);
    match session {
        Ok(Some(sid)) => (
            [(header::SET_COOKIE, crate::web::session_cookie(&state, &sid))],
            Redirect::to("/ui/gates"),
        )
            .into_response(),
        Ok(None) => (
            StatusCode::UNAUTHORIZED,
            render(&LoginPage {
                title: "Log in",
                refresh: false,
                who: String::new(),
                flash: "That token is not valid.".into(),
            }),
        )
            .into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// Ends the session server-side (the cookie, if kept, is worthless) and removes the cookie. A
/// link, not a form: the `SameSite=Strict` cookie does not reach it from another site, so another
/// site cannot log anyone out.
async fn logout(
    axum::extract::State(state): axum::extract::State<State>,
    headers: HeaderMap,
) -> Response {
    if let Some(sid) = crate::cookie(&headers, crate::web::SESSION_COOKIE)
        && let Err(e) = state.tokens.revoke_session(&sid)
    {
        return ApiError::from(e).into_response();
    }
    (
        [(header::SET_COOKIE, crate::web::cleared_cookie(&state))],
        Redirect::to("/ui/login"),
    )
        .into_response()
}

struct GateCard {
    gate_id: String,
    exec_id: String,
    tier: u8,
    tool: String,
    queue: String,
    escalated: bool,
    goal: String,
    reason: String,
    action: String,
    contract: String,
    reasoning: Vec<String>,
    tools: Vec<String>,
    memory: Vec<String>,
    cost: String,
    waited: String,
}

fn ago(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

fn card(g: &GateView) -> GateCard {
    let p = &g.evidence_pack;
    let s = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let reasoning = p["reasoning"]
        .as_array()
        .map(|steps| {
            steps
                .iter()
                .map(|r| match r["kind"].as_str() {
                    Some("plan") => format!("step {}: plan — {}", r["step"], s(&r["text"])),
                    _ => format!(
                        "step {}: {} answered ({} in / {} out tokens, {} ms)",
                        r["step"],
                        s(&r["model"]),
                        r["tokens_in"],
                        r["tokens_out"],
                        r["latency_ms"]
                    ),
                })
                .collect()
        })
        .unwrap_or_default();
    let memory = p["memory"]
        .as_array()
        .map(|m| {
            m.iter()
                .map(|c| {
                    format!(
                        "{} (score {}) — provenance {}",
                        s(&c["id"]),
                        c["score"],
                        c["provenance"]
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let tools = p["tool_results"]
        .as_array()
        .map(|t| {
            t.iter()
                .map(|r| {
                    format!(
                        "step {}: {} → {}",
                        r["step"],
                        s(&r["tool"]),
                        s(&r["status"])
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let contract = &p["contract"];
    GateCard {
        gate_id: g.gate_id.clone(),
        exec_id: g.exec_id.to_string(),
        tier: g.consequence_tier,
        tool: s(&g.action["tool"]),
        queue: g.queue.clone(),
        escalated: g.escalated,
        goal: s(&p["goal"]),
        reason: g.reason.clone(),
        action: serde_json::to_string_pretty(&g.action).unwrap_or_default(),
        contract: format!(
            "{} — {} (side effect: {})",
            s(&contract["name"]),
            s(&contract["description"]),
            s(&contract["side_effect"])
        ),
        reasoning,
        tools,
        memory,
        cost: format!(
            "${} · {} steps · {} tokens",
            p["cost_so_far"]["usd"],
            p["cost_so_far"]["steps"],
            p["cost_so_far"]["tokens_in"].as_u64().unwrap_or(0)
                + p["cost_so_far"]["tokens_out"].as_u64().unwrap_or(0)
        ),
        waited: ago((SystemClock.now() - g.requested_at).num_milliseconds()),
    }
}

struct DecidedRow {
    at: String,
    tool: String,
    verdict: String,
    approver: String,
    reason: String,
    latency: String,
    exec_id: String,
}

#[derive(Template)]
#[template(path = "gates.html")]
struct GatesPage {
    title: &'static str,
    refresh: bool,
    who: String,
    flash: String,
    pending: Vec<GateCard>,
    decided: Vec<DecidedRow>,
    reviews: Vec<(String, String, String)>,
    csrf: String,
}

async fn gates_page(
    axum::extract::State(state): axum::extract::State<State>,
    headers: HeaderMap,
) -> Response {
    let p = match principal(&state, &headers) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    gates_view(&state, &p, &headers, String::new()).await
}

async fn gates_view(state: &State, p: &Principal, headers: &HeaderMap, flash: String) -> Response {
    let book = match state.approvals.book().await {
        Ok(b) => b,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let pending = book
        .pending(Some(&p.tenant))
        .into_iter()
        .map(card)
        .collect();
    let mut decided: Vec<&GateView> = book
        .gates
        .values()
        .filter(|g| g.tenant == p.tenant && g.decision.is_some())
        .collect();
    decided.sort_by_key(|g| std::cmp::Reverse(g.decision.as_ref().map(|d| d.at)));
    let decided = decided
        .into_iter()
        .take(20)
        .filter_map(|g| {
            let d = g.decision.as_ref()?;
            Some(DecidedRow {
                at: d.at.format("%Y-%m-%d %H:%M:%S").to_string(),
                tool: g.action["tool"].as_str().unwrap_or("?").to_owned(),
                verdict: d.verdict.as_str().into(),
                approver: d.approver.clone(),
                reason: d.reason.clone(),
                latency: ago(d.latency_ms as i64),
                exec_id: g.exec_id.to_string(),
            })
        })
        .collect();
    let reviews = book
        .reviews
        .iter()
        .rev()
        .filter(|r| r.tenant == p.tenant)
        .take(20)
        .map(|r| {
            (
                r.at.format("%Y-%m-%d %H:%M:%S").to_string(),
                r.tool.clone(),
                r.exec_id.to_string(),
            )
        })
        .collect();
    render(&GatesPage {
        title: "Approval queue",
        refresh: false,
        who: who(p),
        flash,
        pending,
        decided,
        reviews,
        csrf: crate::web::csrf_of(headers),
    })
}

#[derive(Deserialize)]
struct DecisionForm {
    #[serde(default)]
    verdict: String,
    #[serde(default)]
    reason: String,
}

async fn decide(
    axum::extract::State(state): axum::extract::State<State>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<DecisionForm>,
) -> Response {
    let p = match principal(&state, &headers) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let verdict = match f.verdict.as_str() {
        "approve" => Verdict::Approve,
        "reject" => Verdict::Reject,
        other => {
            return gates_view(
                &state,
                &p,
                &headers,
                format!("verdict {other:?}: choose approve or reject"),
            )
            .await;
        }
    };
    if verdict == Verdict::Reject && f.reason.trim().is_empty() {
        return gates_view(
            &state,
            &p,
            &headers,
            "Give a reason to reject: the agent is told it.".into(),
        )
        .await;
    }
    let caller = Caller(p.clone());
    match decide_gate(&state, &caller, &id, verdict, f.reason.trim()).await {
        Ok(v) => {
            let exec = v["exec_id"].as_str().unwrap_or_default();
            Redirect::to(&format!("/ui/executions/{exec}")).into_response()
        }
        Err(e) => gates_view(&state, &p, &headers, e.to_string()).await,
    }
}

pub(crate) struct ExecRow {
    exec_id: String,
    short_id: String,
    started: String,
    status: String,
    badge: &'static str,
    strategy: String,
    goal: String,
    steps: u32,
    tokens: u64,
    cost: String,
    trace_id: String,
    /// The original's id when this is a replay (shown with a badge), else empty.
    replay_of: String,
}

fn badge(status: &str) -> &'static str {
    match status {
        "success" => "ok",
        "at_gate" | "running" | "suspended" => "warn",
        _ => "bad",
    }
}

pub(crate) fn exec_row(x: &ExecView) -> ExecRow {
    let id = x.exec_id.to_string();
    ExecRow {
        short_id: id.chars().skip(24).collect(),
        exec_id: id,
        started: x.started_at.format("%Y-%m-%d %H:%M:%S").to_string(),
        status: x.status.clone(),
        badge: badge(&x.status),
        strategy: x.strategy_version.clone(),
        goal: x.goal.clone(),
        steps: x.steps,
        tokens: x.tokens,
        cost: if x.cost_known {
            dollars(Cost::Known(x.cost_micros))
        } else {
            format!("≥ {}", dollars(Cost::Known(x.cost_micros)))
        },
        trace_id: x.trace_id.to_string(),
        replay_of: x.replay_of.map(|o| o.to_string()).unwrap_or_default(),
    }
}

#[derive(Template)]
#[template(path = "executions.html")]
struct ExecutionsPage {
    title: &'static str,
    refresh: bool,
    who: String,
    flash: String,
    execs: Vec<ExecRow>,
}

async fn executions_page(
    axum::extract::State(state): axum::extract::State<State>,
    headers: HeaderMap,
) -> Response {
    let p = match principal(&state, &headers) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let book = match state.approvals.book().await {
        Ok(b) => b,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let mut execs: Vec<&ExecView> = book
        .execs
        .values()
        .filter(|x| x.tenant == p.tenant)
        .collect();
    execs.sort_by_key(|x| std::cmp::Reverse(x.started_at));
    let refresh = execs.iter().any(|x| x.status == "running");
    render(&ExecutionsPage {
        title: "Executions",
        refresh,
        who: who(&p),
        flash: String::new(),
        execs: execs.into_iter().take(200).map(exec_row).collect(),
    })
}

struct SwitchRow {
    scope: String,
    name: String,
    tenant: String,
    reason: String,
    by: String,
    at: String,
    mine: bool,
}

#[derive(Template)]
#[template(path = "switches.html")]
struct SwitchesPage {
    title: &'static str,
    refresh: bool,
    who: String,
    flash: String,
    switches: Vec<SwitchRow>,
    csrf: String,
}

async fn switches_view(
    state: &State,
    p: &Principal,
    headers: &HeaderMap,
    flash: String,
) -> Response {
    let switches = match switches_of(state, &p.tenant).await {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let switches = switches
        .iter()
        .map(|v| SwitchRow {
            scope: s(&v["scope"]),
            name: s(&v["name"]),
            mine: v["tenant"] == p.tenant.as_str(),
            tenant: s(&v["tenant"]),
            reason: s(&v["reason"]),
            by: s(&v["by"]),
            at: s(&v["at"]),
        })
        .collect();
    render(&SwitchesPage {
        title: "Kill-switches",
        refresh: false,
        who: who(p),
        flash,
        switches,
        csrf: crate::web::csrf_of(headers),
    })
}

async fn switches_page(
    axum::extract::State(state): axum::extract::State<State>,
    headers: HeaderMap,
) -> Response {
    match principal(&state, &headers) {
        Ok(p) => switches_view(&state, &p, &headers, String::new()).await,
        Err(r) => *r,
    }
}

#[derive(Deserialize)]
struct SwitchForm {
    #[serde(default)]
    scope: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    reason: String,
}

async fn set_switch(
    axum::extract::State(state): axum::extract::State<State>,
    headers: HeaderMap,
    Form(f): Form<SwitchForm>,
) -> Response {
    let p = match principal(&state, &headers) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let caller = Caller(p.clone());
    let result = async {
        if f.name.trim().is_empty() {
            return Err(ApiError::bad("name", "required"));
        }
        let sc = switch_target(&caller, &f.scope, f.name.trim())?;
        let reason = if f.reason.trim().is_empty() {
            "killed by an operator"
        } else {
            f.reason.trim()
        };
        state
            .control
            .kill(sc, f.name.trim(), Some(&p.tenant), reason, &p.name)
            .await
            .map_err(ApiError::from)
    }
    .await;
    let flash = match result {
        Ok(()) => format!("{} {} is off.", f.scope, f.name.trim()),
        Err(e) => e.to_string(),
    };
    switches_view(&state, &p, &headers, flash).await
}

async fn clear_switch(
    axum::extract::State(state): axum::extract::State<State>,
    headers: HeaderMap,
    Form(f): Form<SwitchForm>,
) -> Response {
    let p = match principal(&state, &headers) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let caller = Caller(p.clone());
    let result = async {
        let sc = switch_target(&caller, &f.scope, &f.name)?;
        state
            .control
            .clear(sc, &f.name, Some(&p.tenant), &p.name)
            .await
            .map_err(ApiError::from)
    }
    .await;
    let flash = match result {
        Ok(true) => format!("{} {} is back on.", f.scope, f.name),
        Ok(false) => format!("no switch {} {} was on", f.scope, f.name),
        Err(e) => e.to_string(),
    };
    switches_view(&state, &p, &headers, flash).await
}
