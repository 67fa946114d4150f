//! Gates during a call: the runtime's side of `adapter.elicitation: gate` (see
//! [`keel_tools::elicit`]). When an MCP server asks for input while a call runs, [`SpineGates`]
//! records `gate.requested {during_call}` with the server's message and schema, then waits on
//! the spine (woken by its subscription, as workers are, with a one-second re-read as fallback)
//! until the gate is decided from anywhere — this process, another `keel serve`, `keel gates
//! approve` — or expires, or the execution is cancelled. The call's worker keeps its lease
//! all along (its drive is still running), so no other worker drives the execution meanwhile;
//! a decider that does look at it sees the gate, or after the decision the pending call, and
//! never runs the tool again (see `decide`).

use crate::gates;
use futures::StreamExt;
use keel_core::payload::{Elicitation, GateRequested, Payload, Verdict};
use keel_core::{CURRENT_SCHEMA_VERSION, Event, ExecutionState};
use keel_spine::EventLog;
use keel_spine::clock::{self, Clock};
use keel_tools::ToolError;
use keel_tools::elicit::{Answered, DuringCall, ElicitAnswer, ElicitationGates};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// How often the wait re-reads the execution when no notification came (a subscription that
/// cannot see another process's commits at once).
const FALLBACK: Duration = Duration::from_secs(1);

/// Who records an elicitation gate's expiry (as the SLA sweep does for the others).
const EXPIRY: &str = "keel:sla";

/// Gates during calls, recorded on and waited for on a spine.
pub struct SpineGates {
    log: Arc<dyn EventLog>,
    clock: Arc<dyn Clock>,
}

impl SpineGates {
    /// Gates on `log`, stamped by `clock`.
    pub fn new(log: Arc<dyn EventLog>, clock: Arc<dyn Clock>) -> Self {
        Self { log, clock }
    }
}

fn waiting(at: &DuringCall<'_>, e: impl std::fmt::Display) -> ToolError {
    ToolError::NotCallable {
        exec_id: at.exec_id.to_string(),
        detail: format!(
            "waiting for a person's answer during call {}: {e}",
            at.called.call_id
        ),
    }
}

/// How the events after the request end the wait, if they do: the answer and the events up to
/// and including the decision (a cancellation is left out: the call's own result can no longer
/// follow it, and the execution's driver learns it from the spine).
fn settled(gate_id: &str, after: &[Event]) -> Option<Answered> {
    for (i, e) in after.iter().enumerate() {
        let answer = match &e.payload {
            Payload::GateDecided(d) if d.gate_id == gate_id => match d.verdict {
                Verdict::Approve => {
                    ElicitAnswer::Accept(d.input.clone().unwrap_or_else(|| json!({})))
                }
                Verdict::Reject => ElicitAnswer::Decline,
                Verdict::Expired => ElicitAnswer::Cancel,
            },
            Payload::ExecCancelled(_) => {
                return Some(Answered {
                    answer: ElicitAnswer::Cancel,
                    events: after[..i].to_vec(),
                });
            }
            _ => continue,
        };
        return Some(Answered {
            answer,
            events: after[..=i].to_vec(),
        });
    }
    None
}

#[async_trait::async_trait]
impl ElicitationGates for SpineGates {
    async fn ask(&self, at: DuringCall<'_>) -> Result<Answered, ToolError> {
        let gate_id = format!("gate-{}", uuid::Uuid::now_v7());
        let call = at.called;
        let reason = format!(
            "the MCP server behind {} asks for input during call {}",
            call.tool, call.call_id
        );
        let action = json!({
            "tool": call.tool,
            "args": call.args,
            "idempotency_key": call.idempotency_key,
            "during_call": call.call_id,
        });
        let history = self.log.read(at.exec_id, 1).await?;
        let state = ExecutionState::fold(&history).map_err(|e| waiting(&at, e))?;
        let mut evidence_pack = gates::evidence_pack(&history, &state, None, &action, &reason);
        evidence_pack["elicitation"] = json!({
            "message": at.message,
            "requested_schema": at.requested_schema,
        });
        let requested = GateRequested {
            gate_id: gate_id.clone(),
            action,
            consequence_tier: at.consequence_tier,
            evidence_pack,
            reason,
            queue: at.gate.queue.clone(),
            deadline_ms: at.gate.deadline_s.map(|s| s.saturating_mul(1000)),
            expire_after_ms: Some(at.gate.expire_after_s.saturating_mul(1000)),
            during_call: Some(call.call_id.clone()),
            elicitation: Some(Elicitation {
                message: at.message.to_owned(),
                requested_schema: at.requested_schema.clone(),
            }),
        };
        // Subscribed before the request is appended: a decision right after it is not missed.
        let head = crate::worker::head_offset(&*self.log)
            .await
            .map_err(|e| waiting(&at, e))?;
        let mut wakes = self.log.subscribe(head + 1);
        let event = Event {
            event_id: clock::new_event_id(),
            exec_id: at.exec_id,
            tenant: at.tenant.clone(),
            seq: at.last_seq + 1,
            ts: self.clock.now(),
            trace_id: at.trace_id,
            step_n: at.step_n,
            schema_version: CURRENT_SCHEMA_VERSION,
            payload: Payload::GateRequested(requested),
        };
        self.log.append(at.exec_id, at.last_seq, &[event]).await?;
        let expires = tokio::time::Instant::now() + Duration::from_secs(at.gate.expire_after_s);
        loop {
            let after = self.log.read(at.exec_id, at.last_seq + 1).await?;
            if let Some(done) = settled(&gate_id, &after) {
                return Ok(done);
            }
            if tokio::time::Instant::now() >= expires {
                let why = format!("no answer within {} s", at.gate.expire_after_s);
                let expired = (EXPIRY, Verdict::Expired, why.as_str());
                match gates::decide_with_input(
                    &*self.log,
                    &*self.clock,
                    at.exec_id,
                    &gate_id,
                    expired,
                    None,
                )
                .await
                {
                    // Decided (by the expiry or by someone just before it): read it back.
                    Ok(_) | Err(crate::RuntimeError::Gate(_)) => continue,
                    Err(e) => return Err(waiting(&at, e)),
                }
            }
            // Until an event of this execution commits, the expiry, or the fallback re-read.
            let pause =
                FALLBACK.min(expires.saturating_duration_since(tokio::time::Instant::now()));
            let until = tokio::time::Instant::now() + pause;
            loop {
                tokio::select! {
                    next = wakes.next() => match next {
                        Some(Ok(c)) if c.event.exec_id == at.exec_id => break,
                        Some(Ok(_)) => {}
                        Some(Err(e)) => return Err(e.into()),
                        None => {
                            tokio::time::sleep_until(until).await;
                            break;
                        }
                    },
                    () = tokio::time::sleep_until(until) => break,
                }
            }
        }
    }
}
