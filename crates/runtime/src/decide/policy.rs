//! The loop's policy checks, each a pure function of the fold, the strategy or the control
//! state: kill-switches, budgets, success criteria, malformed replies in a row, and the events
//! of a call the runtime refuses itself.

use crate::control::Scope;
use crate::strategy::{Criterion, Strategy};
use keel_core::control::ControlState;
use keel_core::payload::*;
use keel_core::{Cost, Event, ExecutionState};
use keel_models::ToolCall;

/// Why the execution's tenant or strategy is switched off, if it is.
pub fn killed(control: &ControlState, strategy: &Strategy, tenant: &str) -> Option<String> {
    match control.kill_reason(Scope::Tenant.as_str(), tenant, tenant) {
        Some(k) => Some(format!("tenant {tenant} is killed: {}", k.reason)),
        None => control
            .kill_reason(Scope::Strategy.as_str(), &strategy.name, tenant)
            .map(|k| format!("strategy {} is killed: {}", strategy.name, k.reason)),
    }
}

pub(super) fn tool_switched_off(
    control: &ControlState,
    tenant: &str,
    tool: &str,
) -> Option<String> {
    control
        .kill_reason(Scope::Tool.as_str(), tool, tenant)
        .map(|k| format!("kill-switch: tool {tool} is off: {}", k.reason))
}

/// Why the execution has spent its budget, if it has.
pub fn over_budget(state: &ExecutionState) -> Option<String> {
    let b = &state.budget;
    let t = &state.totals;
    if let (Some(max), Cost::Known(spent)) = (b.max_cost_micros, t.cost)
        && spent >= max
    {
        return Some(format!("spent {spent} µUSD of a {max} µUSD budget"));
    }
    let tokens = t.tokens.input + t.tokens.output;
    if let Some(max) = b.max_tokens
        && tokens >= max
    {
        return Some(format!("used {tokens} tokens of a {max} token budget"));
    }
    None
}

/// True if any of the strategy's criteria holds for this log and answer.
pub fn succeeded(strategy: &Strategy, events: &[Event], answer: &str) -> bool {
    strategy.success.iter().any(|c| match c {
        Criterion::AnswerMatches(re) => re.is_match(answer),
        Criterion::ToolStatus { tool, status } => events.iter().any(|e| match &e.payload {
            Payload::ToolResult(r) => {
                r.tool == *tool
                    && serde_json::to_value(r.status)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .as_deref()
                        == Some(status.as_str())
            }
            _ => false,
        }),
    })
}

/// The agent's malformed replies since its last usable one, read from the log (so a resumed
/// execution counts on where the crashed one stopped).
pub fn malformed_in_a_row(events: &[Event]) -> u32 {
    let mut n = 0;
    for e in events.iter().rev() {
        if let Payload::ModelResponded(r) = &e.payload
            && !crate::recall::is_distill_call(&r.call_id)
        {
            if r.error.is_none() {
                break;
            }
            n += 1;
        }
    }
    n
}

/// The `tool.called` / `tool.result` pair of a call the runtime refuses itself (not offered,
/// switched off, waiting for a gate, rejected at one).
pub fn refusal(call_id: String, call: &ToolCall, status: ToolStatus, why: String) -> [Payload; 2] {
    [
        Payload::ToolCalled(ToolCalled {
            call_id: call_id.clone(),
            tool: call.name.clone(),
            args: call.arguments.clone(),
            idempotency_key: None,
            est_cost: Cost::ZERO,
            attempt: 1,
        }),
        Payload::ToolResult(ToolResult {
            call_id,
            tool: call.name.clone(),
            status,
            output_ref: None,
            actual_cost: Cost::ZERO,
            latency_ms: 0,
            error_class: None,
            errors: vec![why],
        }),
    ]
}
