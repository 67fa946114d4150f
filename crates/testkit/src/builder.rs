//! `ExecBuilder`: writes a legal execution one step at a time, with deterministic ids and times
//! so that tests and benchmarks are reproducible.

use chrono::{DateTime, Utc};
use keel_core::cost::{Cost, Tokens};
use keel_core::payload::*;
use keel_core::{CURRENT_SCHEMA_VERSION, Event, EventId, ExecId, TenantId, TraceId};
use serde_json::json;
use uuid::Uuid;

/// A deterministic execution id for test number `n`.
pub fn exec_id(n: u64) -> ExecId {
    ExecId(Uuid::from_u64_pair(
        0x0190_0000_0000_7000,
        0x8000_0000_0000_0000 | n,
    ))
}

/// Builds the events of one legal execution, in order.
#[derive(Clone, Debug)]
pub struct ExecBuilder {
    exec_id: ExecId,
    tenant: TenantId,
    trace_id: TraceId,
    seq: u64,
    step_n: u32,
    calls: u32,
    ts: DateTime<Utc>,
    events: Vec<Event>,
}

impl ExecBuilder {
    /// A builder for execution `exec_id` of `tenant`; nothing appended yet.
    pub fn new(exec_id: ExecId, tenant: &str) -> Self {
        let mut trace = *exec_id.0.as_bytes();
        trace[0] |= 1; // never all-zero
        Self {
            exec_id,
            tenant: TenantId(tenant.into()),
            trace_id: TraceId(trace),
            seq: 0,
            step_n: 0,
            calls: 0,
            ts: DateTime::from_timestamp_millis(1_795_000_000_000).unwrap_or_default(),
            events: Vec::new(),
        }
    }

    /// Continues an execution whose last event has `last_seq` (for appending to stored logs).
    pub fn resume_at(mut self, last_seq: u64, step_n: u32) -> Self {
        self.seq = last_seq;
        self.step_n = step_n;
        self
    }

    /// Appends an event with this payload and returns it.
    pub fn push(&mut self, payload: Payload) -> &Event {
        self.seq += 1;
        self.ts += chrono::Duration::milliseconds(3);
        let event_id = EventId(Uuid::from_u64_pair(
            self.exec_id.0.as_u64_pair().1,
            0x7000_0000_0000_0000 | self.seq,
        ));
        self.events.push(Event {
            event_id,
            exec_id: self.exec_id,
            tenant: self.tenant.clone(),
            seq: self.seq,
            ts: self.ts,
            trace_id: self.trace_id,
            step_n: self.step_n,
            schema_version: CURRENT_SCHEMA_VERSION,
            payload,
        });
        let last = self.events.len() - 1;
        &self.events[last]
    }

    fn call_id(&mut self, kind: &str) -> String {
        self.calls += 1;
        format!("{kind}-{}", self.calls)
    }

    /// `exec.started`.
    pub fn started(mut self, goal: &str) -> Self {
        self.push(Payload::ExecStarted(ExecStarted {
            goal: goal.into(),
            strategy_version: "support-v1".into(),
            budget: Budget {
                max_cost_micros: Some(5_000_000),
                max_steps: Some(50),
                max_tokens: None,
            },
            experiment_arm: Some("A".into()),
            replay_of: None,
            experiment: None,
        }));
        self
    }

    /// `plan.proposed`.
    pub fn plan(mut self) -> Self {
        self.push(Payload::PlanProposed(PlanProposed {
            steps: vec!["look up the order".into(), "answer the customer".into()],
            model: "scripted".into(),
            prompt_version: "v1".into(),
        }));
        self
    }

    /// `model.called` then `model.responded` with these tokens and cost.
    pub fn model_call(mut self, tokens_in: u64, tokens_out: u64, cost: Cost) -> Self {
        let call_id = self.call_id("model");
        self.push(Payload::ModelCalled(ModelCalled {
            call_id: call_id.clone(),
            model: "scripted".into(),
            prompt_version: Some("v1".into()),
            request_ref: None,
        }));
        self.push(Payload::ModelResponded(ModelResponded {
            call_id,
            model: "scripted".into(),
            tokens: Tokens {
                input: tokens_in,
                output: tokens_out,
            },
            cost,
            latency_ms: 120,
            response_ref: None,
            error: None,
        }));
        self
    }

    /// `tool.called` only (leaves the call pending, as a crash mid-call would).
    pub fn tool_called(mut self, tool: &str) -> Self {
        let call_id = self.call_id("tool");
        self.push(Payload::ToolCalled(ToolCalled {
            call_id: call_id.clone(),
            tool: tool.into(),
            args: json!({"order_id": "A-1001"}),
            idempotency_key: Some(format!("{}:{call_id}", self.exec_id)),
            est_cost: Cost::Known(100),
            attempt: 1,
        }));
        self
    }

    /// `tool.result` for the pending call.
    pub fn tool_result(mut self, status: ToolStatus) -> Self {
        let (call_id, tool) = self
            .events
            .iter()
            .rev()
            .find_map(|e| match &e.payload {
                Payload::ToolCalled(c) => Some((c.call_id.clone(), c.tool.clone())),
                _ => None,
            })
            .unwrap_or_default();
        self.push(Payload::ToolResult(ToolResult {
            call_id,
            tool,
            status,
            output_ref: Some(format!("sha256:{}", "ab".repeat(32))),
            actual_cost: Cost::Known(90),
            latency_ms: 15,
            error_class: None,
            errors: vec![],
        }));
        self
    }

    /// A tool call and its result.
    pub fn tool_call(self, tool: &str, status: ToolStatus) -> Self {
        self.tool_called(tool).tool_result(status)
    }

    /// `gate.requested` then `gate.decided`.
    pub fn gate(mut self, verdict: Verdict) -> Self {
        let gate_id = self.call_id("gate");
        self.push(Payload::GateRequested(GateRequested {
            gate_id: gate_id.clone(),
            action: json!({"tool": "refund", "args": {"amount": 120}}),
            consequence_tier: 3,
            evidence_pack: json!({"goal": "refund"}),
            reason: "tier-3 actions always pass a gate".into(),
            queue: "default".into(),
            deadline_ms: None,
            expire_after_ms: None,
            during_call: None,
            elicitation: None,
        }));
        self.push(Payload::GateDecided(GateDecided {
            gate_id,
            approver: "alice".into(),
            verdict,
            reason: "checked the order".into(),
            latency_ms: 60_000,
            input: None,
        }));
        self
    }

    /// `gate.requested` during the pending tool call (an MCP server's elicitation), without
    /// its decision.
    pub fn gate_during_call(mut self) -> Self {
        let gate_id = self.call_id("gate");
        let call_id = self
            .events
            .iter()
            .rev()
            .find_map(|e| match &e.payload {
                Payload::ToolCalled(c) => Some(c.call_id.clone()),
                _ => None,
            })
            .unwrap_or_default();
        self.push(Payload::GateRequested(GateRequested {
            gate_id,
            action: json!({"tool": "refund", "during_call": call_id}),
            consequence_tier: 3,
            evidence_pack: json!({}),
            reason: "the MCP server asks for input".into(),
            queue: "default".into(),
            deadline_ms: None,
            expire_after_ms: None,
            during_call: Some(call_id),
            elicitation: Some(Elicitation {
                message: "How much?".into(),
                requested_schema: json!({"type": "object", "properties": {"approved_amount": {"type": "number"}}}),
            }),
        }));
        self
    }

    /// `gate.decided` for the open gate, approved with `input`.
    pub fn decided_with_input(mut self, input: serde_json::Value) -> Self {
        let gate_id = self
            .events
            .iter()
            .rev()
            .find_map(|e| match &e.payload {
                Payload::GateRequested(g) => Some(g.gate_id.clone()),
                _ => None,
            })
            .unwrap_or_default();
        self.push(Payload::GateDecided(GateDecided {
            gate_id,
            approver: "alice".into(),
            verdict: Verdict::Approve,
            reason: String::new(),
            latency_ms: 1_000,
            input: Some(input),
        }));
        self
    }

    /// `step.completed`, then moves to the next step.
    pub fn step_completed(mut self) -> Self {
        self.push(Payload::StepCompleted(StepCompleted {
            summary: Some(format!("step {}", self.step_n)),
        }));
        self.step_n += 1;
        self
    }

    /// One typical step: model call, tool call, step completed.
    pub fn typical_step(self) -> Self {
        self.model_call(800, 120, Cost::Known(1_500))
            .tool_call("lookup_order", ToolStatus::Ok)
            .step_completed()
    }

    /// `exec.finished` with this outcome and the totals so far.
    pub fn finished(mut self, outcome: Outcome) -> Self {
        let state = keel_core::ExecutionState::fold(&self.events).unwrap_or_default();
        let trace_id = self.trace_id;
        self.push(Payload::ExecFinished(ExecFinished {
            outcome,
            steps_n: state.totals.steps,
            tokens: state.totals.tokens,
            cost: state.totals.cost,
            trace_id,
            detail: None,
        }));
        self
    }

    /// The events built so far.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// Takes the events built so far, leaving the builder positioned after them.
    pub fn take(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// The events built.
    pub fn build(self) -> Vec<Event> {
        self.events
    }
}

/// A finished execution of `steps` typical steps (the benchmark's "40-step execution").
pub fn execution_with_steps(exec: ExecId, steps: u32) -> Vec<Event> {
    let mut b = ExecBuilder::new(exec, "acme")
        .started("refund order A-1001")
        .plan();
    for _ in 0..steps {
        b = b.typical_step();
    }
    b.finished(Outcome::Success).build()
}
