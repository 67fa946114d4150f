//! Elicitation answered by a person: when a contract says `adapter.elicitation: gate`, an MCP
//! server's request for input during a call becomes an approval gate *during* that call, and the
//! approver's decision becomes the server's answer.
//!
//! The pieces, and who owns what:
//! - the MCP session's handler hands the request to the call it arrived during ([`ElicitAsk`],
//!   over a channel the adapter gets in [`crate::adapter::AdapterCall`]);
//! - the call's attempt loop ([`crate::invoke`]), which owns the execution's position (its last
//!   seq), asks the runtime to open the gate and wait ([`ElicitationGates`]), folds the events
//!   that came meanwhile into the call's report, and stops the contract's timeout clock while
//!   a person decides;
//! - the runtime opens `gate.requested {during_call}` and waits on the spine for
//!   `gate.decided` (it owns gates; this crate never opens one itself).

use crate::contract::ElicitationGate;
use crate::error::ToolError;
use async_trait::async_trait;
use keel_core::payload::ToolCalled;
use keel_core::{Event, ExecId, TenantId, TraceId};
use serde_json::Value;
use std::sync::Arc;

/// A server's form elicitation, on its way from the session to the call it arrived during.
#[derive(Debug)]
pub struct ElicitAsk {
    /// The server's message to the person.
    pub message: String,
    /// The JSON schema of the answer.
    pub requested_schema: Value,
    /// Where the answer goes back to the session.
    pub reply: tokio::sync::oneshot::Sender<ElicitAnswer>,
}

/// What the server is answered.
#[derive(Clone, Debug, PartialEq)]
pub enum ElicitAnswer {
    /// `accept` with this content.
    Accept(Value),
    /// `decline`: the person said no.
    Decline,
    /// `cancel`: nobody answered in time, or the execution was cancelled.
    Cancel,
}

/// Where in an execution a gate during a call opens, and what it asks.
#[derive(Clone, Debug)]
pub struct DuringCall<'a> {
    /// The execution.
    pub exec_id: ExecId,
    /// Its tenant.
    pub tenant: &'a TenantId,
    /// Its trace.
    pub trace_id: TraceId,
    /// The current step.
    pub step_n: u32,
    /// The execution's last seq: the gate's request follows it (conditionally).
    pub last_seq: u64,
    /// The call the server asked during (its `tool.called`).
    pub called: &'a ToolCalled,
    /// The contract's consequence tier.
    pub consequence_tier: u8,
    /// Queue and limits, from the contract.
    pub gate: &'a ElicitationGate,
    /// The server's message.
    pub message: &'a str,
    /// The answer's schema.
    pub requested_schema: &'a Value,
}

/// How the wait ended, with every event the execution got after [`DuringCall::last_seq`] up to
/// and including the decision (the request, escalations, the decision), in order.
#[derive(Clone, Debug)]
pub struct Answered {
    /// The answer for the server.
    pub answer: ElicitAnswer,
    /// The events to fold into the call's report.
    pub events: Vec<Event>,
}

/// Opens a gate during a call and waits for its decision: the runtime's side, passed to a call
/// in its [`crate::CallContext`].
#[async_trait]
pub trait ElicitationGates: Send + Sync {
    /// Records `gate.requested` (with `during_call`) after `at.last_seq`, then waits until the
    /// gate is decided (approve → accept with the approver's input, reject → decline), expires
    /// (→ cancel; the expiry is recorded as the decision), or the execution is cancelled
    /// (→ cancel; the cancellation is not among the returned events).
    async fn ask(&self, at: DuringCall<'_>) -> Result<Answered, ToolError>;
}

/// A shared [`ElicitationGates`], comparable by identity (so [`crate::CallContext`] stays `Eq`).
#[derive(Clone)]
pub struct Gates(pub Arc<dyn ElicitationGates>);

impl std::fmt::Debug for Gates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Gates(..)")
    }
}

impl PartialEq for Gates {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Gates {}
