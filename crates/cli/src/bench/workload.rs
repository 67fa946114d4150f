//! The synthetic executions the benchmarks append and fold: legal event sequences whose shape
//! (a model call, a tool call and a step completion per step, with realistic payload sizes) is the
//! "40-step execution" every figure in the README refers to. Ids and times are deterministic per
//! execution so that two runs write the same bytes.
//!
//! It lives here, not in the test kit, because `keel bench` needs it at run time and the test kit
//! is a dev-dependency only.

use chrono::{DateTime, Utc};
use keel_core::cost::{Cost, Tokens};
use keel_core::payload::{
    Budget, ExecFinished, ExecStarted, ModelCalled, ModelResponded, Outcome, Payload, PlanProposed,
    StepCompleted, ToolCalled, ToolResult, ToolStatus,
};
use keel_core::{
    CURRENT_SCHEMA_VERSION, Event, EventId, ExecId, ExecutionState, TenantId, TraceId,
};
use serde_json::json;
use uuid::Uuid;

/// Writes the events of one synthetic execution, in order.
pub(super) struct Workload {
    exec_id: ExecId,
    tenant: TenantId,
    trace_id: TraceId,
    seq: u64,
    step_n: u32,
    calls: u32,
    ts: DateTime<Utc>,
    events: Vec<Event>,
}

impl Workload {
    /// A workload for execution `exec_id` of `tenant`; nothing written yet.
    pub(super) fn new(exec_id: ExecId, tenant: &str) -> Self {
        let mut trace = *exec_id.0.as_bytes();
        trace[0] |= 1; // a trace id is never all-zero
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

    /// Appends an event with this payload.
    pub(super) fn push(&mut self, payload: Payload) {
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
    }

    fn call_id(&mut self, kind: &str) -> String {
        self.calls += 1;
        format!("{kind}-{}", self.calls)
    }

    /// `exec.started` with a step and cost budget.
    pub(super) fn started(&mut self, goal: &str) {
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
    }

    /// `plan.proposed`.
    fn plan(&mut self) {
        self.push(Payload::PlanProposed(PlanProposed {
            steps: vec!["look up the order".into(), "answer the customer".into()],
            model: "scripted".into(),
            prompt_version: "v1".into(),
        }));
    }

    /// One typical step: `model.called`, `model.responded`, `tool.called`, `tool.result`,
    /// `step.completed`.
    pub(super) fn typical_step(&mut self) {
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
                input: 800,
                output: 120,
            },
            cost: Cost::Known(1_500),
            latency_ms: 120,
            response_ref: None,
            error: None,
        }));
        let call_id = self.call_id("tool");
        self.push(Payload::ToolCalled(ToolCalled {
            call_id: call_id.clone(),
            tool: "lookup_order".into(),
            args: json!({"order_id": "A-1001"}),
            idempotency_key: Some(format!("{}:{call_id}", self.exec_id)),
            est_cost: Cost::Known(100),
            attempt: 1,
        }));
        self.push(Payload::ToolResult(ToolResult {
            call_id,
            tool: "lookup_order".into(),
            status: ToolStatus::Ok,
            output_ref: Some(format!("sha256:{}", "ab".repeat(32))),
            actual_cost: Cost::Known(90),
            latency_ms: 15,
            error_class: None,
            errors: vec![],
        }));
        self.push(Payload::StepCompleted(StepCompleted {
            summary: Some(format!("step {}", self.step_n)),
        }));
        self.step_n += 1;
    }

    /// `exec.finished` with this outcome and the totals so far.
    fn finished(&mut self, outcome: Outcome) {
        let state = ExecutionState::fold(&self.events).unwrap_or_default();
        let trace_id = self.trace_id;
        self.push(Payload::ExecFinished(ExecFinished {
            outcome,
            steps_n: state.totals.steps,
            tokens: state.totals.tokens,
            cost: state.totals.cost,
            trace_id,
            detail: None,
        }));
    }

    /// Takes the events written so far, leaving the workload positioned after them.
    pub(super) fn take(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }
}

/// A finished execution of `steps` typical steps (the benchmarks' "40-step execution").
pub(super) fn execution_with_steps(exec: ExecId, steps: u32) -> Vec<Event> {
    let mut w = Workload::new(exec, "acme");
    w.started("refund order A-1001");
    w.plan();
    for _ in 0..steps {
        w.typical_step();
    }
    w.finished(Outcome::Success);
    w.take()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_synthetic_execution_is_legal_and_finished() {
        let events = execution_with_steps(ExecId(Uuid::from_u64_pair(1, 2)), 40);
        // exec.started, plan.proposed, 5 events a step, exec.finished.
        assert_eq!(events.len(), 2 + 40 * 5 + 1);
        let state = ExecutionState::fold(&events).expect("a legal execution");
        assert_eq!(state.totals.steps, 40);
    }
}
