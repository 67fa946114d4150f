//! What a notification says: built at delivery time from the execution's events (so an erased
//! subject's data reads `[erased]`, as on every other path), or the reason it is no longer owed.

use super::config::Webhook;
use keel_core::payload::Payload;
use keel_core::{Event, ExecStatus, ExecutionState};
use serde_json::{Value, json};

/// The body of delivery `id` for the gate event at `seq` of `events`, or why it is not sent:
/// a gate decided (or an execution ended) before its notification could go out is no longer a
/// call to act, and a replay's gates are decided by the replay, never by a person.
pub fn build(
    events: &[Event],
    seq: u64,
    id: &str,
    hook: &Webhook,
    public_url: Option<&str>,
) -> Result<(String, Vec<u8>), String> {
    let Some(e) = events.iter().find(|e| e.seq == seq) else {
        return Err(format!("event {seq} of the execution is not in the spine"));
    };
    let started = events.iter().find_map(|e| match &e.payload {
        Payload::ExecStarted(s) => Some(s),
        _ => None,
    });
    if started.is_some_and(|s| s.replay_of.is_some()) {
        return Err("a replay's gate".into());
    }
    let (kind, gate_id) = match &e.payload {
        Payload::GateRequested(g) => ("gate.requested", &g.gate_id),
        Payload::GateEscalated(g) => ("gate.escalated", &g.gate_id),
        _ => return Err(format!("event {seq} is not a gate event")),
    };
    let state = ExecutionState::fold(events).map_err(|e| format!("the execution's log: {e}"))?;
    let open = matches!(&state.status, ExecStatus::SuspendedAtGate { gate_id: g } if g == gate_id);
    if !open {
        return Err(format!("gate {gate_id} was decided or closed first"));
    }
    let Some(requested) = events.iter().find_map(|x| match &x.payload {
        Payload::GateRequested(g) if &g.gate_id == gate_id => Some((x, g)),
        _ => None,
    }) else {
        return Err(format!("gate {gate_id} has no gate.requested"));
    };
    let (req_event, g) = requested;
    let tool = g.action.get("tool").and_then(Value::as_str).unwrap_or("");
    let base = public_url.unwrap_or("");
    let mut gate = json!({
        "gate_id": gate_id,
        "queue": g.queue,
        "tenant": e.tenant.0,
        "exec_id": e.exec_id.to_string(),
        "trace_id": e.trace_id.to_string(),
        "strategy_version": started.map(|s| s.strategy_version.clone()),
        "tool": tool,
        "consequence_tier": g.consequence_tier,
        "reason": g.reason,
        "requested_at": req_event.ts,
        "deadline_ms": g.deadline_ms,
        "expire_after_ms": g.expire_after_ms,
    });
    if hook.spec.include_action {
        gate["action"] = g.action.clone();
    }
    let mut body = json!({
        "id": id,
        "type": kind,
        "created_at": e.ts,
        "gate": gate,
        "links": {
            "api": format!("{base}/v1/gates/{gate_id}"),
            "ui": format!("{base}/ui/gates"),
        },
    });
    let text = match &e.payload {
        Payload::GateEscalated(x) => {
            body["escalation"] = json!({"deadline_ms": x.deadline_ms, "waited_ms": x.waited_ms});
            format!(
                "Keel: gate {gate_id} in queue {} ({}) is past its SLA: waiting {} s (deadline {} s): {tool}, tier {}",
                g.queue,
                e.tenant.0,
                x.waited_ms / 1000,
                x.deadline_ms / 1000,
                g.consequence_tier
            )
        }
        _ => format!(
            "Keel: gate {gate_id} waits in queue {} ({}): {tool}, tier {}: {}",
            g.queue, e.tenant.0, g.consequence_tier, g.reason
        ),
    };
    // `text` first-class, so a Slack (or Mattermost, Teams) incoming webhook shows it as is.
    body["text"] = json!(text);
    let bytes = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
    Ok((kind.to_owned(), bytes))
}
