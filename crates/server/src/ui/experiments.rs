//! The experiments pages: `/ui/experiments` lists the registered experiments that cover the
//! caller's tenant, and `/ui/experiments/{name}` shows one's readout — per arm the figures,
//! the primary metric's interval and the difference from the holdback with its interval, the
//! guardrail checks, and the verdict — exactly as [`keel_observe::readout`] computes it for the
//! CLI and `GET /v1/experiments/{name}/readout` (nothing is recomputed here).
//!
//! For operators, over the caller's own tenant's executions only; an experiment limited to
//! other tenants is a 404, like any other tenant's object.

use super::{principal, render, who};
use crate::State;
use crate::auth::{Principal, Role};
use crate::error::ApiError;
use crate::observe::with_projections;
use askama::Template;
use axum::Router;
use axum::extract::Path;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use keel_observe::readout::{ArmReadout, readout};

pub(crate) fn routes() -> Router<State> {
    Router::new()
        .route("/ui/experiments", get(list_page))
        .route("/ui/experiments/{name}", get(readout_page))
}

/// The session's principal if it is an operator, else the response to send instead.
fn operator(state: &State, headers: &HeaderMap) -> Result<Principal, Box<Response>> {
    let p = principal(state, headers)?;
    if !p.may(&[Role::Operator]) {
        return Err(Box::new(
            ApiError::Forbidden("the experiments pages need the operator role".into())
                .into_response(),
        ));
    }
    Ok(p)
}

struct ExperimentRow {
    name: String,
    status: String,
    unit: String,
    primary: String,
    arms: String,
    window: String,
}

#[derive(Template)]
#[template(path = "experiments.html")]
struct ListPage {
    title: &'static str,
    refresh: bool,
    who: String,
    flash: String,
    experiments: Vec<ExperimentRow>,
}

async fn list_page(
    axum::extract::State(state): axum::extract::State<State>,
    headers: HeaderMap,
) -> Response {
    let p = match operator(&state, &headers) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let all = match state.agent.control.experiments().await {
        Ok(x) => x,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let now = state.agent.clock.now();
    let experiments = all
        .iter()
        .filter(|x| x.experiment.covers(&p.tenant))
        .map(|x| {
            let e = &x.experiment;
            ExperimentRow {
                name: e.name.clone(),
                status: x.status_word(now).into(),
                unit: e.unit.as_str().into(),
                primary: e.primary_metric.as_str().into(),
                arms: e
                    .arms
                    .iter()
                    .map(|a| {
                        format!(
                            "{}{} = {} ({}){}",
                            a.name,
                            if a.holdback { " (holdback)" } else { "" },
                            a.strategy,
                            a.weight,
                            if x.stopped_arms.contains(&a.name) {
                                " — stopped"
                            } else {
                                ""
                            }
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; "),
                window: format!(
                    "{} to {}",
                    e.start.format("%Y-%m-%d %H:%M"),
                    e.end.format("%Y-%m-%d %H:%M")
                ),
            }
        })
        .collect();
    render(&ListPage {
        title: "Experiments",
        refresh: false,
        who: who(&p),
        flash: String::new(),
        experiments,
    })
}

struct ArmRow {
    arm: String,
    strategy: String,
    holdback: bool,
    stopped: bool,
    executions: u64,
    units: u64,
    success_rate: String,
    p50_cost: String,
    p95_cost: String,
    p95_steps: String,
    gates: String,
    rejections: String,
    feedback: String,
    cost_per_success: String,
    primary: String,
    vs_holdback: String,
}

struct GuardRow {
    arm: String,
    check: String,
    value: String,
    status: &'static str,
    badge: &'static str,
}

#[derive(Template)]
#[template(path = "experiment.html")]
struct ReadoutPage {
    title: &'static str,
    refresh: bool,
    who: String,
    flash: String,
    name: String,
    status: String,
    unit: String,
    primary_metric: String,
    window: String,
    min_sample: u64,
    tenant: String,
    method: String,
    verdict_kind: String,
    verdict: String,
    arms: Vec<ArmRow>,
    guardrails: Vec<GuardRow>,
}

fn f(v: Option<f64>, d: usize) -> String {
    v.map_or("—".into(), |x| format!("{x:.d$}"))
}

/// A value with its 95 % interval.
fn ci(v: Option<f64>, c: Option<(f64, f64)>, sign: bool) -> String {
    match (v, c) {
        (Some(v), Some((lo, hi))) if sign => format!("{v:+.6} [{lo:+.6}, {hi:+.6}]"),
        (Some(v), Some((lo, hi))) => format!("{v:.6} [{lo:.6}, {hi:.6}]"),
        (Some(v), None) => format!("{v:.6}"),
        _ => "—".into(),
    }
}

fn arm_row(a: &ArmReadout, stopped: bool) -> ArmRow {
    ArmRow {
        arm: a.arm.clone(),
        strategy: a.strategy.clone(),
        holdback: a.holdback,
        stopped,
        executions: a.executions,
        units: a.units,
        success_rate: f(a.success_rate, 3),
        p50_cost: f(a.p50_cost, 5),
        p95_cost: f(a.p95_cost, 5),
        p95_steps: f(a.p95_steps, 1),
        gates: f(a.gates_per_execution, 2),
        rejections: f(a.gate_rejection_rate, 3),
        feedback: f(a.mean_feedback, 2),
        cost_per_success: f(a.cost_per_success, 6),
        primary: ci(a.primary, a.primary_ci, false),
        vs_holdback: if a.holdback {
            "(holdback)".into()
        } else {
            ci(a.vs_holdback, a.vs_holdback_ci, true)
        },
    }
}

async fn readout_page(
    axum::extract::State(state): axum::extract::State<State>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    let p = match operator(&state, &headers) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let tenant = p.tenant.clone();
    let x = match state.agent.control.experiment(&name).await {
        Ok(Some(x)) if x.experiment.covers(&tenant) => x,
        Ok(_) => return ApiError::NotFound(format!("experiment {name:?}")).into_response(),
        Err(e) => return ApiError::from(e).into_response(),
    };
    let now = state.agent.clock.now();
    let registered = x.clone();
    let r = match with_projections(&state, move |store| {
        Box::pin(async move { readout(store, &registered, Some(&tenant), now).await })
    })
    .await
    {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let guardrails = r
        .arms
        .iter()
        .flat_map(|a| {
            a.guardrails.iter().map(move |g| GuardRow {
                arm: a.arm.clone(),
                check: format!("{} {} {}", g.metric, g.direction, g.bound),
                value: f(g.value, 5),
                status: g.status,
                badge: match g.status {
                    "pass" => "ok",
                    "breach" => "bad",
                    _ => "warn",
                },
            })
        })
        .collect();
    render(&ReadoutPage {
        title: "Experiment readout",
        refresh: false,
        who: who(&p),
        flash: String::new(),
        name: r.experiment.clone(),
        status: r.status.into(),
        unit: r.unit.into(),
        primary_metric: r.primary_metric.into(),
        window: format!("{} to {}", r.start, r.end),
        min_sample: r.min_sample,
        tenant: p.tenant.clone(),
        method: r.method.into(),
        verdict_kind: r.verdict.kind.into(),
        verdict: r.verdict.text.clone(),
        arms: r
            .arms
            .iter()
            .map(|a| arm_row(a, x.stopped_arms.contains(&a.arm)))
            .collect(),
        guardrails,
    })
}
