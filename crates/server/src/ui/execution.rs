//! The execution page (`/ui/executions/{id}`): one execution's header (a replay's badge links
//! to its original), a waterfall of its model calls, tool calls, retrievals and gates (see
//! [`waterfall`]) whose inputs and outputs open in place, and its timeline of steps with tokens,
//! cost and latency. Opening a stored input or output fetches it from
//! `/ui/executions/{id}/blobs/{ref}` (see [`crate::blobs`]) with `execution.js`, the page's only
//! script, served from here.

mod waterfall;

use super::{ExecRow, exec_row, principal, render, who};
use crate::error::ApiError;
use crate::{Caller, State};
use askama::Template;
use axum::extract::Path;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use keel_core::describe::{describe, dollars};
use keel_core::payload::Payload;
use keel_core::{Cost, ExecId};
use keel_spine::clock::{Clock, SystemClock};
use waterfall::Drawing;

struct StepRow {
    step_n: u32,
    events: Vec<(String, String)>,
    tokens: String,
    cost: String,
    latency: String,
}

#[derive(Template)]
#[template(path = "execution.html")]
struct ExecutionPage {
    title: &'static str,
    refresh: bool,
    who: String,
    flash: String,
    x: ExecRow,
    answer: String,
    steps: Vec<StepRow>,
    exec_id: String,
    waterfall: Drawing,
    width: f64,
}

pub(super) async fn execution_page(
    axum::extract::State(state): axum::extract::State<State>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let p = match principal(&state, &headers) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let Ok(exec) = id.parse::<ExecId>() else {
        return ApiError::bad("id", format!("{id:?} is not an execution id")).into_response();
    };
    let view = match crate::api::exec_view(&state, &Caller(p.clone()), exec).await {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let events = match state.log.read(exec, 1).await {
        Ok(e) => e,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let mut steps: Vec<StepRow> = Vec::new();
    let mut totals: Vec<(u64, u64, Cost, u64)> = Vec::new();
    for e in &events {
        if steps.last().is_none_or(|s| s.step_n != e.step_n) {
            steps.push(StepRow {
                step_n: e.step_n,
                events: Vec::new(),
                tokens: String::new(),
                cost: String::new(),
                latency: String::new(),
            });
            totals.push((0, 0, Cost::ZERO, 0));
        }
        let (Some(row), Some(t)) = (steps.last_mut(), totals.last_mut()) else {
            continue;
        };
        match &e.payload {
            Payload::ModelResponded(r) => {
                t.0 += r.tokens.input;
                t.1 += r.tokens.output;
                t.2 = t.2 + r.cost;
                t.3 += r.latency_ms;
            }
            Payload::ToolResult(r) => {
                t.2 = t.2 + r.actual_cost;
                t.3 += r.latency_ms;
            }
            _ => {}
        }
        row.events
            .push((e.event_type().to_string(), describe(&e.payload)));
    }
    for (row, t) in steps.iter_mut().zip(&totals) {
        row.tokens = format!("{}/{}", t.0, t.1);
        row.cost = dollars(t.2);
        row.latency = format!("{} ms", t.3);
    }
    // The goal and the answer as the spine reads them now, not as the book folded them: an
    // erasure (by any process) since shows here as `[erased]`.
    let mut x = exec_row(&view);
    let mut answer = view.detail.clone().unwrap_or_default();
    for e in &events {
        match &e.payload {
            Payload::ExecStarted(s) => x.goal.clone_from(&s.goal),
            Payload::ExecFinished(f) => answer = f.detail.clone().unwrap_or_default(),
            _ => {}
        }
    }
    let waterfall = waterfall::draw(waterfall::spans(&events, SystemClock.now()));
    let refresh = matches!(view.status.as_str(), "running");
    render(&ExecutionPage {
        title: "Execution",
        refresh,
        who: who(&p),
        flash: String::new(),
        answer,
        x,
        steps,
        exec_id: exec.to_string(),
        waterfall,
        width: waterfall::WIDTH,
    })
}

/// The page's script (a file, so the policy needs no inline script).
pub(super) async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("../../templates/execution.js"),
    )
        .into_response()
}
