//! The web UI: server-rendered pages (askama templates in `templates/`), plain forms, no
//! front-end build. Log in with an API token, which opens a server-side session (the cookie holds
//! the session's id, never the token; see [`crate::web`] for the cookie, CSRF and headers); the
//! approval queue (`ui/gates.rs`) shows each gate with the evidence that decides it, approve /
//! reject in one click and keyboard shortcuts (a script file, `gates.js`); executions list; an
//! execution's trace as a timeline of steps with tokens, cost and latency; the kill-switch panel.
//! Pages that show work in flight refresh themselves.

mod economics;
mod execution;
mod experiments;
mod gates;

use crate::api::{switch_target, switches_of};
use crate::auth::Principal;
use crate::error::ApiError;
use crate::{Caller, State};
use askama::Template;
use axum::Form;
use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use keel_core::Cost;
use keel_core::describe::dollars;
use keel_runtime::gates::ExecView;
use serde::Deserialize;
use serde_json::Value;

pub(crate) fn routes() -> Router<State> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/gates") }))
        .route("/ui", get(|| async { Redirect::to("/ui/gates") }))
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/logout", get(logout))
        .route("/ui/keel.css", get(crate::web::stylesheet))
        .route("/ui/gates", get(gates::page))
        .route("/ui/gates/{id}/decision", post(gates::decide))
        .route("/ui/gates.js", get(gates::script))
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
