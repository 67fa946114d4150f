//! Approval gates. The loop opens one (`gate.requested`, durable, with an evidence pack) when the
//! autonomy ladder says a person decides; the execution then waits with no worker held. A
//! decision (`gate.decided`) is appended to the execution's own stream with the spine's
//! conditional append, so of two approvers racing exactly one wins and the other is told the gate
//! is already decided. [`Approvals`] is the approver's side: the queue (a [`Book`] kept current
//! from the spine), decisions, the SLA sweep (escalation, expiry) and automatic demotion.

use crate::control::Control;
use crate::error::RuntimeError;
use crate::strategy::StrategySet;
use chrono::{DateTime, Utc};
use keel_core::payload::*;
use keel_core::{
    CURRENT_SCHEMA_VERSION, Cost, Event, ExecId, ExecStatus, ExecutionState, TraceId,
    control::CONTROL_STREAM,
};
use keel_spine::clock::{self, Clock};
use keel_spine::shred::ERASED;
use keel_spine::{Committed, EventLog, SpineError};
use keel_tools::Contract;
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Why a decision cannot be taken.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    /// No gate by that id (for this tenant).
    #[error("no gate {0}")]
    Unknown(String),
    /// Somebody (or the SLA timer) decided it first.
    #[error("gate {gate_id} was already decided: {verdict} by {approver}")]
    AlreadyDecided {
        /// The gate.
        gate_id: String,
        /// The verdict that stands.
        verdict: String,
        /// Who gave it.
        approver: String,
    },
    /// The execution ended (cancelled) while the gate waited.
    #[error("gate {0} is closed: its execution has ended")]
    Closed(String),
    /// The approver's input does not satisfy the schema the MCP server asked for.
    #[error("gate {gate_id}: the input does not match what the server asked for: {}", errors.join("; "))]
    InvalidInput {
        /// The gate.
        gate_id: String,
        /// Every reason, with its JSON path.
        errors: Vec<String>,
    },
    /// Input given where none is asked for (not an elicitation gate, or not an approval).
    #[error("gate {gate_id}: {why}")]
    TakesNoInput {
        /// The gate.
        gate_id: String,
        /// Why.
        why: String,
    },
}

/// Assembles what an approver needs to decide at a glance: the goal, the reasoning that led here
/// (plans and model calls), the exact action as it will be sent, the tool contract, the memory the
/// execution retrieved with its provenance, and the cost so far.
pub fn evidence_pack(
    events: &[Event],
    state: &ExecutionState,
    contract: Option<&Contract>,
    action: &Value,
    reason: &str,
) -> Value {
    let mut goal = Value::Null;
    let mut strategy = Value::Null;
    let mut reasoning = Vec::new();
    let mut memory = Vec::new();
    let mut tools = Vec::new();
    for e in events {
        match &e.payload {
            Payload::ExecStarted(s) => {
                goal = json!(s.goal);
                strategy = json!(s.strategy_version);
            }
            Payload::PlanProposed(p) => reasoning.push(json!({
                "step": e.step_n, "kind": "plan", "model": p.model, "text": p.steps.join("\n"),
            })),
            Payload::ModelResponded(r) => reasoning.push(json!({
                "step": e.step_n, "kind": "model", "model": r.model,
                "tokens_in": r.tokens.input, "tokens_out": r.tokens.output,
                "cost_usd": cost_usd(r.cost), "latency_ms": r.latency_ms, "error": r.error,
            })),
            Payload::ToolResult(r) => tools.push(json!({
                "step": e.step_n, "tool": r.tool, "status": r.status, "errors": r.errors,
            })),
            Payload::MemoryRetrieved(m) => {
                for c in &m.chunks {
                    memory.push(json!({
                        "id": c.id, "score": c.score, "provenance": c.provenance,
                        "query": m.query, "memory_version": m.memory_version,
                    }));
                }
            }
            _ => {}
        }
    }
    let contract = contract.map(|c| {
        json!({
            "name": c.name,
            "description": c.description,
            "consequence_tier": c.consequence_tier,
            "side_effect": c.side_effect.as_str(),
            "input_schema": c.input.raw(),
            // The file's name, not its path: the pack is shown to approvers over HTTP, and a
            // server's directory layout is none of their business.
            "source": c.source.file_name().map(|n| n.to_string_lossy().into_owned()),
        })
    });
    json!({
        "goal": goal,
        "strategy_version": strategy,
        "why_gated": reason,
        "action": action,
        "contract": contract,
        "reasoning": reasoning,
        "tool_results": tools,
        "memory": memory,
        "cost_so_far": {
            "usd": cost_usd(state.totals.cost),
            "tokens_in": state.totals.tokens.input,
            "tokens_out": state.totals.tokens.output,
            "steps": state.totals.steps,
        },
    })
}

fn cost_usd(c: Cost) -> Value {
    match c {
        Cost::Known(micros) => json!(micros as f64 / 1e6),
        Cost::Unknown => Value::Null,
    }
}

/// A decision as the queue shows it.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct DecisionView {
    /// Who.
    pub approver: String,
    /// `approve`, `reject` or `expired`.
    pub verdict: Verdict,
    /// Why.
    pub reason: String,
    /// Request to decision.
    pub latency_ms: u64,
    /// When.
    pub at: DateTime<Utc>,
}

/// A gate as the queue shows it.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct GateView {
    /// Gate id.
    pub gate_id: String,
    /// Its execution.
    pub exec_id: ExecId,
    /// Its tenant.
    pub tenant: String,
    /// Its trace.
    pub trace_id: TraceId,
    /// The execution's strategy version.
    pub strategy_version: String,
    /// The queue.
    pub queue: String,
    /// The action's consequence tier.
    pub consequence_tier: u8,
    /// The exact action.
    pub action: Value,
    /// Why it is gated.
    pub reason: String,
    /// The evidence pack.
    pub evidence_pack: Value,
    /// When it was requested.
    pub requested_at: DateTime<Utc>,
    /// SLA deadline, ms after the request.
    pub deadline_ms: Option<u64>,
    /// Expiry, ms after the request.
    pub expire_after_ms: Option<u64>,
    /// Breached its SLA.
    pub escalated: bool,
    /// The decision, once there is one.
    pub decision: Option<DecisionView>,
    /// The execution ended without a decision (cancelled).
    pub closed: bool,
    /// The gate belongs to a replay (its decision is replayed, not a person's): it never counts
    /// toward demotion, queue figures or training exports.
    pub replay: bool,
    /// The tool call the gate was opened during (an MCP server's question): approving answers
    /// the server with the approver's input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub during_call: Option<String>,
    /// What the server asks (message and the schema the input must satisfy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elicitation: Option<keel_core::payload::Elicitation>,
}

impl GateView {
    /// Waiting for a decision.
    pub fn is_pending(&self) -> bool {
        self.decision.is_none() && !self.closed
    }
}

/// An execution as lists and metrics show it.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct ExecView {
    /// Execution id.
    pub exec_id: ExecId,
    /// Tenant.
    pub tenant: String,
    /// Trace.
    pub trace_id: TraceId,
    /// Strategy version.
    pub strategy_version: String,
    /// Goal.
    pub goal: String,
    /// Started.
    pub started_at: DateTime<Utc>,
    /// Last event.
    pub updated_at: DateTime<Utc>,
    /// `running`, `at_gate`, `suspended`, `cancelled` or the outcome.
    pub status: String,
    /// Outcome, once finished.
    pub outcome: Option<Outcome>,
    /// Final answer or why it ended.
    pub detail: Option<String>,
    /// Steps completed.
    pub steps: u32,
    /// Tokens in + out.
    pub tokens: u64,
    /// Cost in µUSD (unknown parts excluded; see `cost_known`).
    pub cost_micros: u64,
    /// False if any part of the cost is unknown.
    pub cost_known: bool,
    /// Gates opened.
    pub gates: u32,
    /// The execution it replays, if it is a replay: never counted as production.
    pub replay_of: Option<ExecId>,
}

/// A tier-2 call sampled for post-hoc review.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct ReviewView {
    /// Its execution.
    pub exec_id: ExecId,
    /// Tenant.
    pub tenant: String,
    /// The call.
    pub call_id: String,
    /// The tool.
    pub tool: String,
    /// When.
    pub at: DateTime<Utc>,
    /// Sampled in a replay (not production).
    pub replay: bool,
}

/// How many finished executions, closed gates and review samples a bounded book keeps per
/// tenant (what lists and pages show); older ones live in the spine and the projections only.
pub const RETAINED_PER_TENANT: usize = 1000;

/// How many recent people's decisions a book keeps per strategy version for demotion (more
/// than any demotion window).
pub const DECISIONS_PER_STRATEGY: usize = 4096;

/// What a bounded book no longer holds of one queue (gates of replays are never counted).
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct DroppedQueue {
    /// Gates that breached their SLA.
    pub escalated: u64,
    /// Gates that expired undecided.
    pub expired: u64,
    /// Decision latencies of people's decisions: bucket → count (see [`latency_bucket`]).
    pub latencies_ms: BTreeMap<u64, u64>,
    /// Their exact sum.
    pub latency_sum_ms: u64,
}

/// What a bounded book no longer holds of one tenant, as totals (replays are never counted).
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct Dropped {
    /// (strategy version, outcome or status) → executions.
    #[serde(with = "pairs")]
    pub executions: BTreeMap<(String, String), u64>,
    /// strategy version → (µUSD, executions with an unknown cost part).
    pub cost: BTreeMap<String, (u64, u64)>,
    /// Queue → gate figures.
    pub queues: BTreeMap<String, DroppedQueue>,
    /// Review samples.
    pub reviews: u64,
}

/// A map keyed by pairs, as a list of entries (JSON keys are strings).
mod pairs {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::BTreeMap;

    type Map = BTreeMap<(String, String), u64>;

    pub fn serialize<S: Serializer>(m: &Map, s: S) -> Result<S::Ok, S::Error> {
        m.iter().collect::<Vec<_>>().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Map, D::Error> {
        Ok(Vec::<((String, String), u64)>::deserialize(d)?
            .into_iter()
            .collect())
    }
}

/// A latency rounded to its bucket: exact below 1024 ms, then 10 significant bits (under 0.1 %
/// off), so a queue's distribution takes at most a few thousand buckets however many decisions.
pub fn latency_bucket(ms: u64) -> u64 {
    let bits = 64 - ms.leading_zeros();
    if bits <= 10 {
        return ms;
    }
    let shift = bits - 10;
    (ms >> shift) << shift
}

/// The control plane's live view of the spine: gates, executions and sampled reviews, folded
/// from the global commit order and kept current by [`Book::catch_up`] (reads only what is new).
///
/// A book is complete by default (the CLI's exports read every gate). A server's book is
/// *bounded* ([`Approvals::bound_memory`]): it holds the executions and gates still in flight,
/// and of finished ones only the [`RETAINED_PER_TENANT`] most recent per tenant; what it lets
/// go is kept as totals ([`Dropped`]), so its memory stays flat as the store grows.
#[derive(Default, Serialize, serde::Deserialize)]
pub struct Book {
    offset: u64,
    /// Events folded by this process (not counting a snapshot it started from).
    #[serde(skip)]
    pub folded: u64,
    /// Finished executions, closed gates and samples kept per tenant; 0: all (complete).
    retain: usize,
    /// Gates by id.
    pub gates: BTreeMap<String, GateView>,
    /// Executions by id.
    pub execs: BTreeMap<ExecId, ExecView>,
    /// Post-hoc review samples, oldest first.
    pub reviews: Vec<ReviewView>,
    /// Per tenant, totals of what a bounded book let go.
    pub dropped: BTreeMap<String, Dropped>,
    /// Per strategy version, its most recent people's decisions (time, rejected), oldest first.
    pub decisions: BTreeMap<String, VecDeque<(DateTime<Utc>, bool)>>,
    /// Per tenant, which executions named which object (see [`crate::evidence`]).
    #[serde(default)]
    pub objects: crate::evidence::ObjectIndex,
    finished: BTreeMap<String, VecDeque<ExecId>>,
    closed_gates: BTreeMap<String, VecDeque<String>>,
    /// An erasure changed what the book holds since its snapshot was saved: the snapshot is
    /// rewritten at once, so no file keeps what the spine no longer shows.
    #[serde(skip)]
    rewrite: bool,
}

impl Book {
    /// Folds in every event committed since the last call.
    pub async fn catch_up(&mut self, log: &dyn EventLog) -> Result<(), SpineError> {
        loop {
            let batch = log.read_all(self.offset + 1, 4096).await?;
            if batch.is_empty() {
                return Ok(());
            }
            for c in &batch {
                // The offset moves past a tombstone only once its erasure is in the book, so a
                // failed read retries it at the next catch-up.
                if let Payload::SubjectErased(t) = &c.event.payload
                    && c.event.exec_id == CONTROL_STREAM
                {
                    self.forget_erased(log, &t.tenant).await?;
                }
                self.apply(c);
                self.offset = c.offset;
                self.folded += 1;
            }
        }
    }

    /// A subject of `tenant` was erased (by any process): every execution of the tenant the
    /// book holds whose goal the spine now reads as `[erased]` gets its sealed fields (goal,
    /// answer, gate actions, evidence packs, decision reasons) as the spine reads them now,
    /// and leaves the object index, so the book says what a fresh fold would. The tombstone
    /// names the subject by digest only, hence the check of each held execution.
    async fn forget_erased(&mut self, log: &dyn EventLog, tenant: &str) -> Result<(), SpineError> {
        let mut held: std::collections::BTreeSet<ExecId> = self
            .execs
            .values()
            .filter(|x| x.tenant == tenant)
            .map(|x| x.exec_id)
            .collect();
        held.extend(
            self.gates
                .values()
                .filter(|g| g.tenant == tenant)
                .map(|g| g.exec_id),
        );
        held.extend(self.objects.executions_of(tenant));
        for exec in held {
            let first = log.read_first(exec).await?;
            let erased = first
                .is_some_and(|e| matches!(&e.payload, Payload::ExecStarted(s) if s.goal == ERASED));
            if !erased {
                continue;
            }
            let events = log.read(exec, 1).await?;
            if let (Some(x), Some(now)) = (self.execs.get_mut(&exec), Book::view_of(&events)) {
                x.goal = now.goal;
                x.detail = now.detail;
            }
            for e in &events {
                match &e.payload {
                    Payload::GateRequested(r) => {
                        if let Some(g) = self.gates.get_mut(&r.gate_id) {
                            g.action = r.action.clone();
                            g.evidence_pack = r.evidence_pack.clone();
                            g.reason = r.reason.clone();
                        }
                    }
                    Payload::GateDecided(d) => {
                        if let Some(v) = self
                            .gates
                            .get_mut(&d.gate_id)
                            .and_then(|g| g.decision.as_mut())
                        {
                            v.reason = d.reason.clone();
                        }
                    }
                    _ => {}
                }
            }
            self.objects.forget_execution(tenant, exec);
            self.rewrite = true;
        }
        Ok(())
    }

    fn apply(&mut self, c: &Committed) {
        let e = &c.event;
        if e.exec_id == CONTROL_STREAM {
            return;
        }
        if let Payload::ExecStarted(s) = &e.payload {
            self.execs.insert(
                e.exec_id,
                ExecView {
                    exec_id: e.exec_id,
                    tenant: e.tenant.0.clone(),
                    trace_id: e.trace_id,
                    strategy_version: s.strategy_version.clone(),
                    goal: s.goal.clone(),
                    started_at: e.ts,
                    updated_at: e.ts,
                    status: "running".into(),
                    outcome: None,
                    detail: None,
                    steps: 0,
                    tokens: 0,
                    cost_micros: 0,
                    cost_known: true,
                    gates: 0,
                    replay_of: s.replay_of,
                },
            );
            return;
        }
        let Some(x) = self.execs.get_mut(&e.exec_id) else {
            return;
        };
        x.updated_at = e.ts;
        let mut add_cost = |c: Cost| match c {
            Cost::Known(m) => x.cost_micros += m,
            Cost::Unknown => x.cost_known = false,
        };
        match &e.payload {
            Payload::ModelResponded(r) => {
                add_cost(r.cost);
                x.tokens += r.tokens.input + r.tokens.output;
            }
            Payload::ToolResult(r) => add_cost(r.actual_cost),
            Payload::StepCompleted(_) => x.steps += 1,
            Payload::ToolCalled(c) if x.replay_of.is_none() => {
                self.objects.record(&e.tenant.0, e.exec_id, &c.args);
            }
            Payload::GateRequested(g) => {
                if x.replay_of.is_none() {
                    self.objects
                        .record(&e.tenant.0, e.exec_id, &g.action["args"]);
                }
                x.gates += 1;
                x.status = "at_gate".into();
                self.gates.insert(
                    g.gate_id.clone(),
                    GateView {
                        gate_id: g.gate_id.clone(),
                        exec_id: e.exec_id,
                        tenant: e.tenant.0.clone(),
                        trace_id: e.trace_id,
                        strategy_version: x.strategy_version.clone(),
                        queue: g.queue.clone(),
                        consequence_tier: g.consequence_tier,
                        action: g.action.clone(),
                        reason: g.reason.clone(),
                        evidence_pack: g.evidence_pack.clone(),
                        requested_at: e.ts,
                        deadline_ms: g.deadline_ms,
                        expire_after_ms: g.expire_after_ms,
                        escalated: false,
                        decision: None,
                        closed: false,
                        replay: x.replay_of.is_some(),
                        during_call: g.during_call.clone(),
                        elicitation: g.elicitation.clone(),
                    },
                );
            }
            Payload::GateEscalated(g) => {
                if let Some(v) = self.gates.get_mut(&g.gate_id) {
                    v.escalated = true;
                }
            }
            Payload::GateDecided(d) => {
                x.status = "running".into();
                if let Some(v) = self.gates.get_mut(&d.gate_id) {
                    v.decision = Some(DecisionView {
                        approver: d.approver.clone(),
                        verdict: d.verdict,
                        reason: d.reason.clone(),
                        latency_ms: d.latency_ms,
                        at: e.ts,
                    });
                    if !v.replay && d.verdict != Verdict::Expired {
                        let recent = self
                            .decisions
                            .entry(v.strategy_version.clone())
                            .or_default();
                        recent.push_back((e.ts, d.verdict == Verdict::Reject));
                        if recent.len() > DECISIONS_PER_STRATEGY {
                            recent.pop_front();
                        }
                    }
                }
                let (tenant, gate) = (e.tenant.0.clone(), d.gate_id.clone());
                self.gate_closed(tenant, gate);
            }
            Payload::ReviewSampled(r) => {
                self.reviews.push(ReviewView {
                    exec_id: e.exec_id,
                    tenant: e.tenant.0.clone(),
                    call_id: r.call_id.clone(),
                    tool: r.tool.clone(),
                    at: e.ts,
                    replay: x.replay_of.is_some(),
                });
                if self.retain > 0 {
                    self.trim_reviews(&e.tenant.0);
                }
            }
            Payload::ExecSuspended(_) => x.status = "suspended".into(),
            Payload::ExecResumed(_) => x.status = "running".into(),
            Payload::ExecCancelled(_) => {
                x.status = "cancelled".into();
                let mut closed = Vec::new();
                for g in self.gates.values_mut() {
                    if g.exec_id == e.exec_id && g.decision.is_none() && !g.closed {
                        g.closed = true;
                        closed.push(g.gate_id.clone());
                    }
                }
                for g in closed {
                    self.gate_closed(e.tenant.0.clone(), g);
                }
                self.exec_finished(e.tenant.0.clone(), e.exec_id);
            }
            Payload::ExecFinished(f) => {
                x.status = f.outcome.as_str().into();
                x.outcome = Some(f.outcome);
                x.detail = f.detail.clone();
                self.exec_finished(e.tenant.0.clone(), e.exec_id);
            }
            _ => {}
        }
    }

    /// A finished execution joins its tenant's retained ones; past the limit, the oldest
    /// finished is let go into the totals.
    fn exec_finished(&mut self, tenant: String, exec: ExecId) {
        if self.retain == 0 {
            return;
        }
        let q = self.finished.entry(tenant.clone()).or_default();
        q.push_back(exec);
        if q.len() <= self.retain {
            return;
        }
        let Some(old) = q.pop_front() else {
            return;
        };
        let Some(x) = self.execs.remove(&old) else {
            return;
        };
        if x.replay_of.is_some() {
            return;
        }
        let d = self.dropped.entry(tenant).or_default();
        *d.executions
            .entry((x.strategy_version.clone(), x.status.clone()))
            .or_default() += 1;
        let c = d.cost.entry(x.strategy_version).or_default();
        c.0 += x.cost_micros;
        if !x.cost_known {
            c.1 += 1;
        }
    }

    /// A decided or closed gate joins its tenant's retained ones; past the limit, the oldest is
    /// let go into its queue's totals.
    fn gate_closed(&mut self, tenant: String, gate: String) {
        if self.retain == 0 {
            return;
        }
        let q = self.closed_gates.entry(tenant.clone()).or_default();
        q.push_back(gate);
        if q.len() <= self.retain {
            return;
        }
        let Some(old) = q.pop_front() else {
            return;
        };
        let Some(g) = self.gates.remove(&old) else {
            return;
        };
        if g.replay {
            return;
        }
        let q = self
            .dropped
            .entry(tenant)
            .or_default()
            .queues
            .entry(g.queue)
            .or_default();
        if g.escalated {
            q.escalated += 1;
        }
        if let Some(d) = g.decision {
            if d.verdict == Verdict::Expired {
                q.expired += 1;
            } else {
                *q.latencies_ms
                    .entry(latency_bucket(d.latency_ms))
                    .or_default() += 1;
                q.latency_sum_ms += d.latency_ms;
            }
        }
    }

    fn trim_reviews(&mut self, tenant: &str) {
        let mine = self.reviews.iter().filter(|r| r.tenant == tenant).count();
        if mine <= self.retain {
            return;
        }
        if let Some(i) = self.reviews.iter().position(|r| r.tenant == tenant) {
            let r = self.reviews.remove(i);
            if !r.replay {
                self.dropped.entry(r.tenant).or_default().reviews += 1;
            }
        }
    }

    /// The view of one execution folded from its own events (for one a bounded book let go).
    pub fn view_of(events: &[Event]) -> Option<ExecView> {
        let mut b = Book::default();
        let exec = events.first()?.exec_id;
        for (i, e) in events.iter().enumerate() {
            b.apply(&Committed {
                offset: i as u64 + 1,
                event: e.clone(),
            });
        }
        b.execs.remove(&exec)
    }

    /// Gates waiting for a decision, oldest first, optionally of one tenant.
    pub fn pending(&self, tenant: Option<&str>) -> Vec<&GateView> {
        let mut v: Vec<&GateView> = self
            .gates
            .values()
            .filter(|g| g.is_pending() && tenant.is_none_or(|t| g.tenant == t))
            .collect();
        v.sort_by_key(|g| g.requested_at);
        v
    }
}

/// What one SLA sweep did.
#[derive(Clone, Debug, Default)]
pub struct SweepReport {
    /// Gates that breached their deadline now (queue, gate id).
    pub escalated: Vec<(String, String)>,
    /// Gates that expired now (queue, gate id).
    pub expired: Vec<(String, String)>,
}

/// The approver's side of gates over one spine.
pub struct Approvals {
    log: Arc<dyn EventLog>,
    clock: Arc<dyn Clock>,
    control: Arc<Control>,
    strategies: StrategySet,
    book: tokio::sync::Mutex<Book>,
    retain: AtomicUsize,
    snapshot: std::sync::Mutex<Option<Snapshots>>,
}

/// Where a bounded book is saved, so a restarted server folds only what came after.
struct Snapshots {
    path: std::path::PathBuf,
    /// Offset of the last save (or load).
    saved_at: u64,
    /// [`Book::folded`] at the last save: offsets need not be dense, so the events folded since
    /// are counted, not read off the offsets.
    saved_folded: u64,
    loaded: bool,
}

/// Events folded between two saves of a book's snapshot.
pub const SNAPSHOT_EVERY: u64 = 50_000;

/// The format of a snapshot; one of another version is ignored (and rebuilt from the spine).
const SNAPSHOT_VERSION: u32 = 2;

#[derive(Serialize, serde::Deserialize)]
struct SnapshotFile {
    version: u32,
    /// The event id at the book's offset: a snapshot of another store (or of a store that was
    /// replaced) does not match it and is ignored.
    event_at_offset: Option<String>,
    book: Book,
}

impl Approvals {
    /// Approvals over `log`; demotion thresholds come from `strategies`.
    pub fn new(
        log: Arc<dyn EventLog>,
        clock: Arc<dyn Clock>,
        control: Arc<Control>,
        strategies: StrategySet,
    ) -> Self {
        Self {
            log,
            clock,
            control,
            strategies,
            book: tokio::sync::Mutex::new(Book::default()),
            retain: AtomicUsize::new(0),
            snapshot: std::sync::Mutex::new(None),
        }
    }

    /// Keeps the book bounded from now on (a long-running server): finished executions and
    /// closed gates beyond the most recent [`RETAINED_PER_TENANT`] per tenant are let go into
    /// totals. Call it before the first [`Approvals::book`].
    pub fn bound_memory(&self) {
        self.bound_memory_to(RETAINED_PER_TENANT);
    }

    /// [`Approvals::bound_memory`], keeping `retained` finished ones per tenant (at least 1).
    pub fn bound_memory_to(&self, retained: usize) {
        self.retain.store(retained.max(1), Ordering::Relaxed);
    }

    /// The book, caught up with the spine.
    pub async fn book(&self) -> Result<tokio::sync::MutexGuard<'_, Book>, RuntimeError> {
        let mut book = self.book.lock().await;
        book.retain = self.retain.load(Ordering::Relaxed);
        self.load_snapshot(&mut book).await;
        book.catch_up(&*self.log).await?;
        let erased = std::mem::take(&mut book.rewrite);
        self.save_snapshot(&book, erased).await;
        Ok(book)
    }

    /// Saves a bounded book's snapshot at `path` (see [`Approvals::bound_memory`]) and starts
    /// from it when it matches the spine: a restart then folds only what came after.
    pub fn snapshot_to(&self, path: std::path::PathBuf) {
        if let Ok(mut s) = self.snapshot.lock() {
            *s = Some(Snapshots {
                path,
                saved_at: 0,
                saved_folded: 0,
                loaded: false,
            });
        }
    }

    /// The event id at `offset` (what a snapshot is checked against).
    async fn event_at(&self, offset: u64) -> Option<String> {
        let found = self.log.read_all(offset, 1).await.ok()?;
        found
            .first()
            .filter(|c| c.offset == offset)
            .map(|c| c.event.event_id.to_string())
    }

    /// Starts an empty book from its snapshot, once, if there is one that matches the spine.
    /// A snapshot that cannot be read, is of another format, another retention or another
    /// store is ignored: the book is then folded from the spine, as without one.
    async fn load_snapshot(&self, book: &mut Book) {
        let path = match self.snapshot.lock() {
            Ok(mut s) => match s.as_mut() {
                Some(s) if !s.loaded && book.offset == 0 && book.retain > 0 => {
                    s.loaded = true;
                    s.path.clone()
                }
                _ => return,
            },
            Err(_) => return,
        };
        let Ok(bytes) = tokio::fs::read(&path).await else {
            return;
        };
        let Ok(file) = serde_json::from_slice::<SnapshotFile>(&bytes) else {
            return;
        };
        if file.version != SNAPSHOT_VERSION
            || file.book.retain != book.retain
            || file.book.offset == 0
            || self.event_at(file.book.offset).await != file.event_at_offset
        {
            return;
        }
        let offset = file.book.offset;
        *book = Book {
            folded: 0,
            ..file.book
        };
        if let Ok(mut s) = self.snapshot.lock()
            && let Some(s) = s.as_mut()
        {
            s.saved_at = offset;
            s.saved_folded = 0;
        }
    }

    /// Saves the book's snapshot if it moved [`SNAPSHOT_EVERY`] events since the last save (or
    /// at all, with `force`). Written to a temporary file and renamed, so a reader never sees
    /// half of one; a failure to save costs only a longer fold at the next start.
    pub async fn save_snapshot(&self, book: &Book, force: bool) {
        let path = match self.snapshot.lock() {
            Ok(s) => match s.as_ref() {
                Some(s)
                    if book.retain > 0
                        && book.offset > s.saved_at
                        && (force || book.folded - s.saved_folded >= SNAPSHOT_EVERY) =>
                {
                    s.path.clone()
                }
                _ => return,
            },
            Err(_) => return,
        };
        let file = SnapshotFile {
            version: SNAPSHOT_VERSION,
            event_at_offset: self.event_at(book.offset).await,
            book: Book {
                offset: book.offset,
                folded: 0,
                retain: book.retain,
                gates: book.gates.clone(),
                execs: book.execs.clone(),
                reviews: book.reviews.clone(),
                dropped: book.dropped.clone(),
                decisions: book.decisions.clone(),
                objects: book.objects.clone(),
                finished: book.finished.clone(),
                closed_gates: book.closed_gates.clone(),
                rewrite: false,
            },
        };
        let Ok(bytes) = serde_json::to_vec(&file) else {
            return;
        };
        let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
        if tokio::fs::write(&tmp, &bytes).await.is_ok()
            && tokio::fs::rename(&tmp, &path).await.is_ok()
            && let Ok(mut s) = self.snapshot.lock()
            && let Some(s) = s.as_mut()
        {
            s.saved_at = book.offset;
            s.saved_folded = book.folded;
        } else {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
    }

    /// Decides a gate. With `tenant`, a gate of another tenant is [`GateError::Unknown`] (it is
    /// not the caller's to know about). Two deciders racing: exactly one wins, the other gets
    /// [`GateError::AlreadyDecided`].
    pub async fn decide(
        &self,
        gate_id: &str,
        tenant: Option<&str>,
        approver: &str,
        verdict: Verdict,
        reason: &str,
    ) -> Result<(GateView, GateDecided), RuntimeError> {
        self.decide_with_input(gate_id, tenant, approver, verdict, reason, None)
            .await
    }

    /// [`Approvals::decide`], with the approver's `input` for a gate opened by an MCP server's
    /// question during a call (checked against the schema the server asked for; nothing is
    /// recorded when it does not match).
    pub async fn decide_with_input(
        &self,
        gate_id: &str,
        tenant: Option<&str>,
        approver: &str,
        verdict: Verdict,
        reason: &str,
        input: Option<Value>,
    ) -> Result<(GateView, GateDecided), RuntimeError> {
        let gate = {
            let book = self.book().await?;
            book.gates
                .get(gate_id)
                .filter(|g| tenant.is_none_or(|t| g.tenant == t))
                .cloned()
                .ok_or_else(|| GateError::Unknown(gate_id.into()))?
        };
        let decided = decide_with_input(
            &*self.log,
            &*self.clock,
            gate.exec_id,
            gate_id,
            (approver, verdict, reason),
            input,
        )
        .await?;
        // A server's question is not the strategy's action: its answer says nothing about how
        // well the strategy acts alone.
        if gate.during_call.is_none() {
            self.judge(&gate.strategy_version).await?;
        }
        Ok((gate, decided))
    }

    /// Escalates gates past their SLA deadline and expires those past their expiry.
    pub async fn sweep(&self) -> Result<SweepReport, RuntimeError> {
        let now = self.clock.now();
        let pending: Vec<GateView> = self
            .book()
            .await?
            .pending(None)
            .into_iter()
            .cloned()
            .collect();
        let mut report = SweepReport::default();
        for g in pending {
            let waited = (now - g.requested_at).num_milliseconds().max(0) as u64;
            if let Some(x) = g.expire_after_ms
                && waited >= x
            {
                let why = format!(
                    "no decision within {} s: expired by the queue SLA",
                    x / 1000
                );
                match decide(
                    &*self.log,
                    &*self.clock,
                    g.exec_id,
                    &g.gate_id,
                    "keel:sla",
                    Verdict::Expired,
                    &why,
                )
                .await
                {
                    Ok(_) => report.expired.push((g.queue.clone(), g.gate_id.clone())),
                    // A person decided meanwhile: theirs stands.
                    Err(RuntimeError::Gate(_)) => {}
                    Err(e) => return Err(e),
                }
                continue;
            }
            if let Some(d) = g.deadline_ms
                && waited >= d
                && !g.escalated
                && escalate(&*self.log, &*self.clock, &g, d, waited).await?
            {
                report.escalated.push((g.queue.clone(), g.gate_id.clone()));
            }
        }
        Ok(report)
    }

    /// Demotes `strategy_version` if its recent gate rejections call for it.
    async fn judge(&self, strategy_version: &str) -> Result<(), RuntimeError> {
        let Some(strategy) = self.strategies.get(strategy_version) else {
            return Ok(());
        };
        let control = self.control.state().await?;
        if control.demotions.contains_key(strategy_version) {
            return Ok(());
        }
        let since = control
            .certified_at
            .get(strategy_version)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc));
        // The book keeps people's decisions only: replayed ones (a backtest) are not verdicts on
        // production actions, and expiries are not verdicts at all.
        let mut decided: Vec<(DateTime<Utc>, bool)> = self
            .book()
            .await?
            .decisions
            .get(strategy_version)
            .map(|d| {
                d.iter()
                    .filter(|(at, _)| since.is_none_or(|s| *at > s))
                    .copied()
                    .collect()
            })
            .unwrap_or_default();
        decided.sort_by_key(|d| d.0);
        let rejected: Vec<bool> = decided.into_iter().map(|d| d.1).collect();
        if let Some((rate, sample)) = strategy.approval.demotion.policy().judge(&rejected) {
            let ceiling =
                control.max_autonomous_tier(strategy_version, strategy.max_autonomous_tier);
            self.control
                .demote(StrategyDemoted {
                    strategy_version: strategy_version.into(),
                    max_autonomous_tier: ceiling.saturating_sub(1),
                    rejection_rate: rate,
                    sample,
                })
                .await?;
        }
        Ok(())
    }
}

/// Appends `gate.decided` for `gate_id` on `exec_id`, conditional on the execution's last seq.
pub async fn decide(
    log: &dyn EventLog,
    clock: &dyn Clock,
    exec_id: ExecId,
    gate_id: &str,
    approver: &str,
    verdict: Verdict,
    reason: &str,
) -> Result<GateDecided, RuntimeError> {
    decide_with_input(
        log,
        clock,
        exec_id,
        gate_id,
        (approver, verdict, reason),
        None,
    )
    .await
}

/// The input an approval of `g` carries: for an elicitation gate, `input` (an empty object if
/// none) valid against the server's schema; for any other gate or verdict, none.
fn checked_input(
    g: &GateRequested,
    verdict: Verdict,
    input: Option<Value>,
) -> Result<Option<Value>, GateError> {
    let no = |why: &str| GateError::TakesNoInput {
        gate_id: g.gate_id.clone(),
        why: why.into(),
    };
    let Some(e) = &g.elicitation else {
        return match input {
            None => Ok(None),
            Some(_) => Err(no(
                "it asks for no input (only a gate opened by an MCP server's question does)",
            )),
        };
    };
    if verdict != Verdict::Approve {
        return match input {
            None => Ok(None),
            Some(_) => Err(no("input goes with an approval only")),
        };
    }
    let input = input.unwrap_or_else(|| Value::Object(Default::default()));
    let invalid = |errors| GateError::InvalidInput {
        gate_id: g.gate_id.clone(),
        errors,
    };
    if !input.is_object() {
        return Err(invalid(vec!["$: must be a JSON object".into()]));
    }
    let schema = keel_tools::schema::CompiledSchema::compile(&e.requested_schema).map_err(|p| {
        invalid(
            p.into_iter()
                .map(|(at, what)| format!("the server's schema at {at}: {what}"))
                .collect(),
        )
    })?;
    let errors = schema.errors(&input);
    if errors.is_empty() {
        Ok(Some(input))
    } else {
        Err(invalid(errors))
    }
}

/// [`decide`], with the approver's input for an elicitation gate: for an approval, checked
/// against the schema the server asked for; for anything else, refused if given.
pub async fn decide_with_input(
    log: &dyn EventLog,
    clock: &dyn Clock,
    exec_id: ExecId,
    gate_id: &str,
    (approver, verdict, reason): (&str, Verdict, &str),
    input: Option<Value>,
) -> Result<GateDecided, RuntimeError> {
    loop {
        let events = log.read(exec_id, 1).await?;
        let state = ExecutionState::fold(&events)?;
        let requested = events.iter().find_map(|e| match &e.payload {
            Payload::GateRequested(g) if g.gate_id == gate_id => Some((e.ts, g)),
            _ => None,
        });
        let Some((requested, g)) = requested else {
            return Err(GateError::Unknown(gate_id.into()).into());
        };
        let input = checked_input(g, verdict, input.clone())?;
        if !matches!(&state.status, ExecStatus::SuspendedAtGate { gate_id: g } if g == gate_id) {
            let earlier = events.iter().find_map(|e| match &e.payload {
                Payload::GateDecided(d) if d.gate_id == gate_id => Some(d.clone()),
                _ => None,
            });
            return Err(match earlier {
                Some(d) => GateError::AlreadyDecided {
                    gate_id: gate_id.into(),
                    verdict: d.verdict.as_str().into(),
                    approver: d.approver,
                },
                None => GateError::Closed(gate_id.into()),
            }
            .into());
        }
        let now = clock.now();
        let decided = GateDecided {
            gate_id: gate_id.into(),
            approver: approver.into(),
            verdict,
            reason: reason.into(),
            latency_ms: (now - requested).num_milliseconds().max(0) as u64,
            input,
        };
        let event = next_event(&state, now, Payload::GateDecided(decided.clone()))?;
        match log.append(exec_id, state.last_seq, &[event]).await {
            Ok(_) => return Ok(decided),
            // Someone appended first (a decision, or an escalation): look again.
            Err(SpineError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Appends `gate.escalated`; false if the gate moved on meanwhile.
async fn escalate(
    log: &dyn EventLog,
    clock: &dyn Clock,
    g: &GateView,
    deadline_ms: u64,
    waited_ms: u64,
) -> Result<bool, RuntimeError> {
    let events = log.read(g.exec_id, 1).await?;
    let state = ExecutionState::fold(&events)?;
    if !matches!(&state.status, ExecStatus::SuspendedAtGate { gate_id } if *gate_id == g.gate_id) {
        return Ok(false);
    }
    let event = next_event(
        &state,
        clock.now(),
        Payload::GateEscalated(GateEscalated {
            gate_id: g.gate_id.clone(),
            queue: g.queue.clone(),
            deadline_ms,
            waited_ms,
        }),
    )?;
    match log.append(g.exec_id, state.last_seq, &[event]).await {
        Ok(_) => Ok(true),
        Err(SpineError::Conflict { .. }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

fn next_event(
    state: &ExecutionState,
    ts: DateTime<Utc>,
    payload: Payload,
) -> Result<Event, RuntimeError> {
    let exec_id = state
        .exec_id
        .ok_or_else(|| RuntimeError::UnknownExecution("(not started)".into()))?;
    Ok(Event {
        event_id: clock::new_event_id(),
        exec_id,
        tenant: state
            .tenant
            .clone()
            .unwrap_or_else(|| keel_core::TenantId(String::new())),
        seq: state.last_seq + 1,
        ts,
        trace_id: state.trace_id.unwrap_or(TraceId([1; 16])),
        step_n: state.step_n,
        schema_version: CURRENT_SCHEMA_VERSION,
        payload,
    })
}
