//! Typed payloads, one per event type of the spine's vocabulary (DESIGN.md §2), and the single
//! table that maps each wire name (`tool.called`) to its payload type.
//!
//! Adding a field: make it `#[serde(default)]` so events already stored still decode. Renaming or
//! retyping one: bump `CURRENT_SCHEMA_VERSION` and add the conversion to `compat`.

use crate::cost::{Cost, Tokens};
use crate::ids::TraceId;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Per-execution limits declared when it starts. `None` means unlimited.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Budget {
    /// Maximum total cost, micro-USD.
    #[serde(default)]
    pub max_cost_micros: Option<u64>,
    /// Maximum number of completed steps.
    #[serde(default)]
    pub max_steps: Option<u32>,
    /// Maximum tokens (input + output).
    #[serde(default)]
    pub max_tokens: Option<u64>,
}

/// `exec.started`: the first event of every execution.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExecStarted {
    /// What the agent was asked to do.
    pub goal: String,
    /// Prompt version × model × tool policy × memory config, as one identifier.
    pub strategy_version: String,
    /// Limits for this execution.
    #[serde(default)]
    pub budget: Budget,
    /// Experiment arm this execution was assigned to, if any.
    #[serde(default)]
    pub experiment_arm: Option<String>,
    /// The execution this one replays (`keel replay`), if it is a replay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_of: Option<crate::ids::ExecId>,
    /// The experiment that assigned this execution its strategy: experiment, arm, bucket and a
    /// digest of the unit (see [`crate::experiment`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment: Option<crate::experiment::Assignment>,
}

/// `plan.proposed`: the model's plan for the steps ahead.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanProposed {
    /// The planned steps, in order.
    pub steps: Vec<String>,
    /// Model that proposed the plan.
    pub model: String,
    /// Prompt version used.
    pub prompt_version: String,
}

/// `model.called`: a request to a model provider is about to be sent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelCalled {
    /// Correlates with the matching `model.responded`.
    pub call_id: String,
    /// Model requested.
    pub model: String,
    /// Prompt version used.
    #[serde(default)]
    pub prompt_version: Option<String>,
    /// Blob holding the raw request bytes, for replay.
    #[serde(default)]
    pub request_ref: Option<String>,
}

/// `model.responded`: a model provider answered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelResponded {
    /// The `call_id` of the `model.called` this answers.
    pub call_id: String,
    /// Model that answered.
    pub model: String,
    /// Tokens used by this call.
    pub tokens: Tokens,
    /// Price of this call; unknown if the model has no price.
    pub cost: Cost,
    /// Wall time of the call, milliseconds.
    pub latency_ms: u64,
    /// Blob holding the raw response bytes, for replay.
    #[serde(default)]
    pub response_ref: Option<String>,
    /// Set when the reply could not be used (bad JSON in tool arguments, an unknown tool): the
    /// loop shows this to the model and asks again.
    #[serde(default)]
    pub error: Option<String>,
}

/// One memory chunk as the model saw it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetrievedChunk {
    /// Memory record id.
    pub id: String,
    /// Similarity score.
    pub score: f64,
    /// Where the fact came from (trace id, event seqs, strategy, time...).
    #[serde(default)]
    pub provenance: Value,
}

/// `memory.retrieved`: exactly what memory the model was shown.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemoryRetrieved {
    /// The retrieval query.
    pub query: String,
    /// Chunks returned, best first.
    pub chunks: Vec<RetrievedChunk>,
    /// Pinned memory version the retrieval read.
    pub memory_version: String,
}

/// `memory.written`: a distilled fact entered long-term memory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemoryWritten {
    /// Memory record id.
    pub memory_id: String,
    /// Data subject the fact is about, if any.
    #[serde(default)]
    pub subject: Option<String>,
    /// Volatility class, which sets the TTL.
    pub volatility: String,
    /// Provenance of the fact.
    #[serde(default)]
    pub provenance: Value,
}

/// `memory.distill_failed`: the distillation after an answer wrote nothing, and why (the model
/// call failed or was refused by the cost budget, its reply was not the facts JSON, the memory
/// store failed). The execution still finishes with its answer; the distillation's own model
/// call, if one was made, is the `model.called` / `model.responded` pair just before.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DistillFailed {
    /// The distillation's model call, when one was made.
    #[serde(default)]
    pub call_id: Option<String>,
    /// Facts already written (as `memory.written`) before the failure.
    #[serde(default)]
    pub written: u32,
    /// What went wrong.
    pub reason: String,
}

/// `tool.called`: the orchestrator is about to call a tool through its contract.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolCalled {
    /// Correlates with the matching `tool.result`.
    pub call_id: String,
    /// Tool name in the registry.
    pub tool: String,
    /// Arguments, already validated against the input schema.
    pub args: Value,
    /// Idempotency key for side-effecting tools; reused by every retry.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// Estimated cost from the contract.
    #[serde(default)]
    pub est_cost: Cost,
    /// Attempt number, 1-based.
    #[serde(default = "first_attempt")]
    pub attempt: u32,
}

fn first_attempt() -> u32 {
    1
}

/// How a tool call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolStatus {
    /// The tool ran and its output passed the output schema.
    Ok,
    /// The tool ran and failed.
    Error,
    /// The arguments failed the input schema; the tool did not run.
    Rejected,
    /// The tool ran but its output failed the output schema.
    InvalidOutput,
    /// A budget, rate limit or kill-switch refused the call; the tool did not run.
    Refused,
}

/// `tool.result`: the outcome of one tool call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolResult {
    /// The `call_id` of the `tool.called` this answers.
    pub call_id: String,
    /// Tool name.
    pub tool: String,
    /// How the call ended.
    pub status: ToolStatus,
    /// Blob holding the output (`sha256:...`).
    #[serde(default)]
    pub output_ref: Option<String>,
    /// What the call actually cost.
    #[serde(default)]
    pub actual_cost: Cost,
    /// Wall time, milliseconds.
    #[serde(default)]
    pub latency_ms: u64,
    /// Error class (timeout, rate_limited, 5xx, connection, ...) when the call failed.
    #[serde(default)]
    pub error_class: Option<String>,
    /// Human- and model-readable reasons (schema errors, refusal reasons).
    #[serde(default)]
    pub errors: Vec<String>,
}

/// `gate.requested`: an action needs a human decision; the execution suspends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GateRequested {
    /// Gate id, unique within the execution.
    pub gate_id: String,
    /// The exact action payload as it will be sent.
    pub action: Value,
    /// Consequence tier (0–3) read from the tool contract.
    pub consequence_tier: u8,
    /// Everything an approver needs to decide.
    #[serde(default)]
    pub evidence_pack: Value,
    /// Why the action is gated (its tier, the strategy's ceiling, an escalation).
    #[serde(default)]
    pub reason: String,
    /// The approval queue the gate waits in.
    #[serde(default = "default_queue")]
    pub queue: String,
    /// Milliseconds after the request at which the gate breaches its SLA and escalates.
    #[serde(default)]
    pub deadline_ms: Option<u64>,
    /// Milliseconds after the request at which an undecided gate expires (verdict `expired`).
    #[serde(default)]
    pub expire_after_ms: Option<u64>,
    /// The tool call (its `call_id`) this gate was opened during: an MCP server asked for input
    /// while the call runs, and the call waits for the decision. The gate does not end the call;
    /// its decision is the server's answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub during_call: Option<String>,
    /// What the server asked for, when the gate answers an elicitation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elicitation: Option<Elicitation>,
}

/// An MCP server's request for input (form elicitation), as a gate carries it to the approver.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Elicitation {
    /// The server's message to the person.
    pub message: String,
    /// The JSON schema the answer must satisfy (the server's `requestedSchema`).
    pub requested_schema: Value,
}

fn default_queue() -> String {
    "default".into()
}

/// `gate.escalated`: a gate passed its SLA deadline undecided (it stays open).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GateEscalated {
    /// The gate.
    pub gate_id: String,
    /// Its queue.
    pub queue: String,
    /// The deadline it breached, milliseconds after the request.
    pub deadline_ms: u64,
    /// How long it had waited when the breach was noticed.
    pub waited_ms: u64,
}

/// `review.sampled`: a tier-2 action that ran autonomously was sampled for post-hoc human review.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReviewSampled {
    /// The call reviewed.
    pub call_id: String,
    /// Its tool.
    pub tool: String,
    /// Its consequence tier.
    pub consequence_tier: u8,
    /// The sampling rate that picked it.
    pub rate: f64,
}

/// `control.kill_set`: a kill-switch turned on (control stream).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KillSet {
    /// `tenant`, `strategy` or `tool`.
    pub scope: String,
    /// The tenant, strategy or tool switched off.
    pub name: String,
    /// The tenant the switch applies in; `None` for every tenant.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Why.
    pub reason: String,
    /// Who.
    pub by: String,
}

/// `control.kill_cleared`: a kill-switch turned off (control stream).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KillCleared {
    /// `tenant`, `strategy` or `tool`.
    pub scope: String,
    /// The tenant, strategy or tool switched back on.
    pub name: String,
    /// The tenant the switch applied in; `None` for every tenant.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Who.
    pub by: String,
}

/// `strategy.demoted`: a strategy version's gate rejections passed the threshold, so its maximum
/// autonomous tier drops until a person re-certifies it (control stream).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StrategyDemoted {
    /// The strategy version.
    pub strategy_version: String,
    /// The maximum autonomous tier from now on.
    pub max_autonomous_tier: u8,
    /// Rejected share of the decisions in the window.
    pub rejection_rate: f64,
    /// Decisions in the window.
    pub sample: u32,
}

/// `strategy.certified`: a person restored a strategy version's autonomy (control stream).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StrategyCertified {
    /// The strategy version.
    pub strategy_version: String,
    /// Who certified it.
    pub by: String,
    /// Why.
    #[serde(default)]
    pub reason: String,
}

/// A human's (or the SLA timer's) decision on a gate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Run the action.
    Approve,
    /// Do not run it; the model sees the reason.
    Reject,
    /// Nobody decided before the deadline.
    Expired,
}

impl Verdict {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Approve => "approve",
            Verdict::Reject => "reject",
            Verdict::Expired => "expired",
        }
    }
}

/// `gate.decided`: resumes an execution suspended at a gate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GateDecided {
    /// The gate decided.
    pub gate_id: String,
    /// Who decided.
    pub approver: String,
    /// What they decided.
    pub verdict: Verdict,
    /// Why.
    #[serde(default)]
    pub reason: String,
    /// Time from request to decision, milliseconds.
    #[serde(default)]
    pub latency_ms: u64,
    /// The approver's answer to an elicitation gate (valid against its requested schema).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
}

/// `step.completed`: one reasoning step is done.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct StepCompleted {
    /// One-line summary of the step.
    #[serde(default)]
    pub summary: Option<String>,
}

/// `exec.suspended`, `exec.resumed` and `exec.cancelled` carry a reason and who acted.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct Transition {
    /// Why the transition happened.
    #[serde(default)]
    pub reason: String,
    /// Who or what caused it (worker id, operator, kill-switch).
    #[serde(default)]
    pub by: Option<String>,
}

/// How an execution ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The strategy's declared success criteria were met.
    Success,
    /// The agent finished but the success criteria were not met.
    Failure,
    /// The per-execution budget ran out.
    BudgetExhausted,
    /// The step limit was reached.
    MaxSteps,
    /// A kill-switch stopped it.
    Killed,
    /// An error the loop could not recover from.
    Error,
}

impl Outcome {
    /// The wire spelling (`success`, `budget_exhausted`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::BudgetExhausted => "budget_exhausted",
            Outcome::MaxSteps => "max_steps",
            Outcome::Killed => "killed",
            Outcome::Error => "error",
        }
    }
}

/// `exec.finished`: the last event of a completed execution.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExecFinished {
    /// Typed outcome.
    pub outcome: Outcome,
    /// Steps completed.
    pub steps_n: u32,
    /// Total tokens.
    pub tokens: Tokens,
    /// Total cost.
    pub cost: Cost,
    /// The execution's trace id (also on the envelope; repeated for exports that read payloads).
    pub trace_id: TraceId,
    /// Final answer or error detail.
    #[serde(default)]
    pub detail: Option<String>,
}

/// `subject.erased`: a data subject was erased (control stream). The tombstone names the
/// subject only by digest (`sha256(tenant \0 subject)`), so the audit trail keeps no personal data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SubjectErased {
    /// `sha256(tenant \0 subject)`, hex.
    pub digest: String,
    /// The tenant.
    pub tenant: String,
    /// Executions whose subject-linked fields now decode as `[erased]`.
    pub executions: u32,
    /// Blobs deleted.
    pub blobs_deleted: u32,
    /// Memory facts erased.
    pub facts_erased: u32,
    /// Who.
    pub by: String,
}

/// `slo.alarmed`: a configured SLO bound was crossed for a strategy version (control stream;
/// written by keel-observe's SLO check).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SloAlarmed {
    /// The strategy version.
    pub strategy_version: String,
    /// The SLO metric (`p95_steps`, `outcome_rate`, …).
    pub metric: String,
    /// The measured value.
    pub value: f64,
    /// The comparison that fired (`>` or `<`).
    pub op: String,
    /// The configured bound.
    pub bound: f64,
    /// Executions the value was computed over.
    pub sample: u64,
}

/// `retrieval.rated`: a person rated the relevance of a sampled memory retrieval (control
/// stream; the sample is the `memory.retrieved` event at `seq` of execution `exec_id`). The
/// latest rating of a sample wins; projections keep it across rebuilds because it is an event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetrievalRated {
    /// The tenant of the execution rated.
    pub tenant: String,
    /// The execution that retrieved.
    pub exec_id: crate::ids::ExecId,
    /// The seq of its `memory.retrieved` event.
    pub seq: u64,
    /// Graded relevance: 0 irrelevant, 1 partly relevant, 2 relevant, 3 exactly what was needed.
    pub rating: u8,
    /// Who rated.
    pub rater: String,
    /// Why, optionally.
    #[serde(default)]
    pub note: Option<String>,
}

/// The highest [`RetrievalRated::rating`].
pub const MAX_RELEVANCE: u8 = 3;

/// `feedback.given`: a user rated the result of an execution (control stream, keyed by the
/// execution's id, because nothing may follow an execution's terminal event and feedback comes
/// after it). Every rating counts; projections average them per execution.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeedbackGiven {
    /// The tenant of the execution rated.
    pub tenant: String,
    /// The execution rated.
    pub exec_id: crate::ids::ExecId,
    /// From [`MIN_FEEDBACK`] (bad) to [`MAX_FEEDBACK`] (excellent).
    pub rating: u8,
    /// Who rated (the token's principal, or the CLI's operator).
    pub rater: String,
    /// Free text, optionally. Only ever present for executions about no data subject: the
    /// control stream cannot seal it under a subject's key.
    #[serde(default)]
    pub comment: Option<String>,
}

/// The lowest [`FeedbackGiven::rating`].
pub const MIN_FEEDBACK: u8 = 1;
/// The highest [`FeedbackGiven::rating`].
pub const MAX_FEEDBACK: u8 = 5;

/// `budget.set`: a tenant's monthly cost budget (control stream; the latest one per tenant
/// holds; a budget of 0 with no alarm and no hard stop is how one is removed).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BudgetSet {
    /// The tenant.
    pub tenant: String,
    /// The budget per calendar month (UTC), micro-USD.
    pub monthly_micros: u64,
    /// The alarm fires once a month when spend reaches this percent of the budget.
    pub alarm_percent: u8,
    /// Refuse new executions once spend reaches the budget.
    pub hard_stop: bool,
    /// Who set it.
    pub by: String,
}

/// `budget.alarmed`: a tenant's spend this month reached the alarm threshold of its budget
/// (control stream; at most one per tenant and month).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BudgetAlarmed {
    /// The tenant.
    pub tenant: String,
    /// The month, `YYYY-MM` (UTC).
    pub month: String,
    /// Spent this month when the alarm fired, micro-USD.
    pub spent_micros: u64,
    /// The budget, micro-USD.
    pub monthly_micros: u64,
    /// The threshold crossed, percent.
    pub alarm_percent: u8,
}

macro_rules! payloads {
    ($( $(#[$doc:meta])* $variant:ident($ty:ty) = $name:literal, )*) => {
        /// The typed payload of an event; its variant is the event's `type`.
        #[derive(Clone, Debug, PartialEq)]
        pub enum Payload {
            $( $(#[$doc])* $variant($ty), )*
        }

        /// The event types, without payloads: cheap to copy, compare and print.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum EventType {
            $( $(#[$doc])* $variant, )*
        }

        impl EventType {
            /// Every event type, in vocabulary order.
            pub const ALL: &'static [EventType] = &[$(EventType::$variant,)*];

            /// The wire name, e.g. `tool.called`.
            pub fn as_str(self) -> &'static str {
                match self { $(EventType::$variant => $name,)* }
            }

            /// Parses a wire name; `None` for a type this version of Keel does not know.
            pub fn parse(name: &str) -> Option<EventType> {
                match name { $($name => Some(EventType::$variant),)* _ => None }
            }
        }

        impl Payload {
            /// This payload's event type.
            pub fn event_type(&self) -> EventType {
                match self { $(Payload::$variant(_) => EventType::$variant,)* }
            }

            pub(crate) fn serialize_data<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                match self { $(Payload::$variant(p) => p.serialize(s),)* }
            }

            pub(crate) fn decode_data(ty: EventType, data: &str) -> Result<Payload, serde_json::Error> {
                Ok(match ty { $(EventType::$variant => Payload::$variant(serde_json::from_str(data)?),)* })
            }
        }
    };
}

payloads! {
    /// `exec.started`
    ExecStarted(ExecStarted) = "exec.started",
    /// `plan.proposed`
    PlanProposed(PlanProposed) = "plan.proposed",
    /// `model.called`
    ModelCalled(ModelCalled) = "model.called",
    /// `model.responded`
    ModelResponded(ModelResponded) = "model.responded",
    /// `memory.retrieved`
    MemoryRetrieved(MemoryRetrieved) = "memory.retrieved",
    /// `memory.written`
    MemoryWritten(MemoryWritten) = "memory.written",
    /// `memory.distill_failed`
    DistillFailed(DistillFailed) = "memory.distill_failed",
    /// `tool.called`
    ToolCalled(ToolCalled) = "tool.called",
    /// `tool.result`
    ToolResult(ToolResult) = "tool.result",
    /// `gate.requested`
    GateRequested(GateRequested) = "gate.requested",
    /// `gate.decided`
    GateDecided(GateDecided) = "gate.decided",
    /// `gate.escalated`
    GateEscalated(GateEscalated) = "gate.escalated",
    /// `review.sampled`
    ReviewSampled(ReviewSampled) = "review.sampled",
    /// `step.completed`
    StepCompleted(StepCompleted) = "step.completed",
    /// `exec.suspended`
    ExecSuspended(Transition) = "exec.suspended",
    /// `exec.resumed`
    ExecResumed(Transition) = "exec.resumed",
    /// `exec.cancelled`
    ExecCancelled(Transition) = "exec.cancelled",
    /// `exec.finished`
    ExecFinished(ExecFinished) = "exec.finished",
    /// `control.kill_set`
    KillSet(KillSet) = "control.kill_set",
    /// `control.kill_cleared`
    KillCleared(KillCleared) = "control.kill_cleared",
    /// `strategy.demoted`
    StrategyDemoted(StrategyDemoted) = "strategy.demoted",
    /// `strategy.certified`
    StrategyCertified(StrategyCertified) = "strategy.certified",
    /// `slo.alarmed`
    SloAlarmed(SloAlarmed) = "slo.alarmed",
    /// `subject.erased`
    SubjectErased(SubjectErased) = "subject.erased",
    /// `retrieval.rated`
    RetrievalRated(RetrievalRated) = "retrieval.rated",
    /// `feedback.given`
    FeedbackGiven(FeedbackGiven) = "feedback.given",
    /// `budget.set`
    BudgetSet(BudgetSet) = "budget.set",
    /// `budget.alarmed`
    BudgetAlarmed(BudgetAlarmed) = "budget.alarmed",
    /// `experiment.registered`
    ExperimentRegistered(crate::experiment::ExperimentRegistered) = "experiment.registered",
    /// `experiment.stopped`
    ExperimentStopped(crate::experiment::ExperimentStopped) = "experiment.stopped",
    /// `experiment.concluded`
    ExperimentConcluded(crate::experiment::ExperimentConcluded) = "experiment.concluded",
    /// `experiment.guardrail_breached`
    GuardrailBreached(crate::experiment::GuardrailBreached) = "experiment.guardrail_breached",
}

impl EventType {
    /// True for the events after which nothing may follow.
    pub fn is_terminal(self) -> bool {
        matches!(self, EventType::ExecFinished | EventType::ExecCancelled)
    }

    /// True for the events of the control stream (kill-switches, demotions, certifications),
    /// which never belong to an execution.
    pub fn is_control(self) -> bool {
        matches!(
            self,
            EventType::KillSet
                | EventType::KillCleared
                | EventType::StrategyDemoted
                | EventType::StrategyCertified
                | EventType::SloAlarmed
                | EventType::SubjectErased
                | EventType::RetrievalRated
                | EventType::FeedbackGiven
                | EventType::BudgetSet
                | EventType::BudgetAlarmed
                | EventType::ExperimentRegistered
                | EventType::ExperimentStopped
                | EventType::ExperimentConcluded
                | EventType::GuardrailBreached
        )
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
