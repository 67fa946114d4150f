//! What the projections hold, as a pure function of the spine's events: [`changes`] turns one
//! committed event into the row changes every backend applies (`crate::sqlite`, `crate::pg`),
//! and [`step_row`] derives a `traces.steps` row's columns.
//!
//! The tables: `traces.steps` (one row per execution event), `gold.executions` (one row per
//! production execution: replays are left out, see decision 059) and
//! `traces.retrieval_samples` (the retrievals sampled for a human relevance rating; ratings
//! arrive as `retrieval.rated` events on the control stream, so a rebuild keeps them). Nothing here does I/O: the backends only translate [`Change`]s into their SQL.

use keel_core::control::CONTROL_STREAM;
use keel_core::payload::{Outcome, Payload, ToolStatus, Verdict};
use keel_core::{Cost, Event};

/// One retrieval in this many is queued for a human relevance rating (chosen by a hash of the
/// event id, so a rebuild samples the same ones).
pub const RETRIEVAL_SAMPLE_EVERY: u64 = 10;

/// A `traces.steps` row.
#[derive(Clone, Debug, PartialEq)]
pub struct StepInsert {
    /// Spine offset (the key).
    pub log_offset: u64,
    /// Trace id (32 hex).
    pub trace_id: String,
    /// Execution id.
    pub exec_id: String,
    /// Tenant.
    pub tenant: String,
    /// The event's seq in its execution.
    pub seq: u64,
    /// Step number.
    pub step_n: u32,
    /// Timestamp, RFC 3339 with milliseconds and `Z`.
    pub ts: String,
    /// Event type.
    pub event_type: &'static str,
    /// The derived columns.
    pub row: StepRow,
}

/// A `gold.executions` row as `exec.started` creates it.
#[derive(Clone, Debug, PartialEq)]
pub struct ExecInsert {
    /// Execution id.
    pub exec_id: String,
    /// Trace id.
    pub trace_id: String,
    /// Tenant.
    pub tenant: String,
    /// Strategy version.
    pub strategy_version: String,
    /// Experiment arm, if any.
    pub experiment_arm: Option<String>,
    /// The experiment that assigned the arm, if one did.
    pub experiment: Option<String>,
    /// The digest of its unit of assignment (readouts cluster by it).
    pub experiment_unit: Option<String>,
    /// The execution this one replays.
    pub replay_of: Option<String>,
    /// The goal.
    pub goal: String,
    /// Start time (RFC 3339).
    pub started_at: String,
}

/// A `traces.retrieval_samples` row.
#[derive(Clone, Debug, PartialEq)]
pub struct SampleInsert {
    /// Spine offset of the `memory.retrieved` event (the key).
    pub log_offset: u64,
    /// Trace id.
    pub trace_id: String,
    /// Execution id.
    pub exec_id: String,
    /// Tenant.
    pub tenant: String,
    /// The retrieval's seq in its execution (with `exec_id`, how a rating names the sample).
    pub seq: u64,
    /// Step number.
    pub step_n: u32,
    /// When it retrieved (RFC 3339).
    pub ts: String,
    /// The query text.
    pub query: String,
    /// Memory version read.
    pub memory_version: String,
    /// The chunks returned, as JSON.
    pub chunks: String,
}

/// One change to the projection tables.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// Insert a `traces.steps` row.
    Step(StepInsert),
    /// Insert the `gold.executions` row (ignored if it exists).
    Started(ExecInsert),
    /// A model reply: one more model call, its tokens and cost.
    ModelResponded {
        /// Execution id.
        exec_id: String,
        /// Input tokens.
        tokens_in: u64,
        /// Output tokens.
        tokens_out: u64,
        /// Cost, micro-USD (0 when unknown).
        cost_micros: u64,
        /// False when the cost is unknown.
        cost_known: bool,
    },
    /// A tool result: one more call, maybe a failure, its cost.
    ToolResult {
        /// Execution id.
        exec_id: String,
        /// Anything but `ok`.
        failed: bool,
        /// Cost, micro-USD (0 when unknown).
        cost_micros: u64,
        /// False when the cost is unknown.
        cost_known: bool,
    },
    /// One more gate asked for.
    GateRequested {
        /// Execution id.
        exec_id: String,
    },
    /// One more gate rejected.
    GateRejected {
        /// Execution id.
        exec_id: String,
    },
    /// One more retrieval.
    Retrieved {
        /// Execution id.
        exec_id: String,
    },
    /// Insert a `traces.retrieval_samples` row.
    Sampled(SampleInsert),
    /// One more step completed.
    StepCompleted {
        /// Execution id.
        exec_id: String,
    },
    /// The execution ended: the finish's authoritative totals replace the sums.
    Finished {
        /// Execution id.
        exec_id: String,
        /// When (RFC 3339).
        finished_at: String,
        /// Outcome word.
        outcome: &'static str,
        /// Whether the outcome is success.
        success: bool,
        /// Steps.
        steps_n: u32,
        /// Input tokens.
        tokens_in: u64,
        /// Output tokens.
        tokens_out: u64,
        /// Cost, micro-USD (0 when unknown).
        cost_micros: u64,
        /// False when the cost is unknown.
        cost_known: bool,
    },
    /// The execution was cancelled.
    Cancelled {
        /// Execution id.
        exec_id: String,
        /// When (RFC 3339).
        finished_at: String,
    },
    /// A sampled retrieval was rated (the latest rating wins).
    Rated {
        /// Tenant of the execution (a rating never touches another tenant's sample).
        tenant: String,
        /// Execution id.
        exec_id: String,
        /// Seq of the `memory.retrieved` event.
        seq: u64,
        /// 0..=3.
        rating: u8,
        /// Who.
        rated_by: String,
        /// When (RFC 3339).
        rated_at: String,
        /// Why.
        note: Option<String>,
    },
    /// A user rated an execution (every rating counts toward its mean).
    Feedback {
        /// Tenant of the execution (feedback never touches another tenant's row).
        tenant: String,
        /// Execution id.
        exec_id: String,
        /// 1..=5.
        rating: u8,
    },
}

/// The row changes of the event at spine offset `offset`, in the order to apply them.
pub fn changes(offset: u64, e: &Event) -> Vec<Change> {
    let ts = timestamp(e);
    if e.exec_id == CONTROL_STREAM {
        // The control stream is no execution; only ratings and feedback touch the projections.
        return match &e.payload {
            Payload::RetrievalRated(r) => vec![Change::Rated {
                tenant: r.tenant.clone(),
                exec_id: r.exec_id.to_string(),
                seq: r.seq,
                rating: r.rating,
                rated_by: r.rater.clone(),
                rated_at: ts,
                note: r.note.clone(),
            }],
            // The comment stays on the spine: gold.executions is queried by tenants in SQL.
            Payload::FeedbackGiven(f) => vec![Change::Feedback {
                tenant: f.tenant.clone(),
                exec_id: f.exec_id.to_string(),
                rating: f.rating,
            }],
            _ => Vec::new(),
        };
    }
    let exec = e.exec_id.to_string();
    let trace = e.trace_id.to_string();
    let mut out = vec![Change::Step(StepInsert {
        log_offset: offset,
        trace_id: trace.clone(),
        exec_id: exec.clone(),
        tenant: e.tenant.as_str().to_owned(),
        seq: e.seq,
        step_n: e.step_n,
        ts: ts.clone(),
        event_type: e.event_type().as_str(),
        row: step_row(e),
    })];
    let exec_id = exec.clone();
    match &e.payload {
        // A replay is not production: its events are in `traces.steps` (its `exec.started`
        // summary names the original), but it gets no `gold.executions` row, so no economics
        // query, SLO or export of that table counts it (its later updates then touch no row).
        Payload::ExecStarted(p) if p.replay_of.is_some() => {}
        Payload::ExecStarted(p) => out.push(Change::Started(ExecInsert {
            exec_id,
            trace_id: trace,
            tenant: e.tenant.as_str().to_owned(),
            strategy_version: p.strategy_version.clone(),
            experiment_arm: p.experiment_arm.clone(),
            experiment: p.experiment.as_ref().map(|x| x.experiment.clone()),
            experiment_unit: p.experiment.as_ref().map(|x| x.unit_key.clone()),
            replay_of: p.replay_of.map(|r| r.to_string()),
            goal: p.goal.clone(),
            started_at: ts,
        })),
        Payload::ModelResponded(p) => {
            let (cost_micros, cost_known) = cost_parts(p.cost);
            out.push(Change::ModelResponded {
                exec_id,
                tokens_in: p.tokens.input,
                tokens_out: p.tokens.output,
                cost_micros,
                cost_known,
            });
        }
        Payload::ToolResult(p) => {
            let (cost_micros, cost_known) = cost_parts(p.actual_cost);
            out.push(Change::ToolResult {
                exec_id,
                failed: p.status != ToolStatus::Ok,
                cost_micros,
                cost_known,
            });
        }
        Payload::GateRequested(_) => out.push(Change::GateRequested { exec_id }),
        Payload::GateDecided(p) if p.verdict == Verdict::Reject => {
            out.push(Change::GateRejected { exec_id });
        }
        Payload::MemoryRetrieved(p) => {
            out.push(Change::Retrieved { exec_id });
            if sampled(e) {
                out.push(Change::Sampled(SampleInsert {
                    log_offset: offset,
                    trace_id: trace,
                    exec_id: exec,
                    tenant: e.tenant.as_str().to_owned(),
                    seq: e.seq,
                    step_n: e.step_n,
                    ts,
                    query: p.query.clone(),
                    memory_version: p.memory_version.clone(),
                    chunks: serde_json::to_string(&p.chunks).unwrap_or_default(),
                }));
            }
        }
        Payload::StepCompleted(_) => out.push(Change::StepCompleted { exec_id }),
        Payload::ExecFinished(p) => {
            let (cost_micros, cost_known) = cost_parts(p.cost);
            out.push(Change::Finished {
                exec_id,
                finished_at: ts,
                outcome: outcome_word(p.outcome),
                success: p.outcome == Outcome::Success,
                steps_n: p.steps_n,
                tokens_in: p.tokens.input,
                tokens_out: p.tokens.output,
                cost_micros,
                cost_known,
            });
        }
        Payload::ExecCancelled(_) => out.push(Change::Cancelled {
            exec_id,
            finished_at: ts,
        }),
        _ => {}
    }
    out
}

/// Micro-USD as dollars; `None` when unknown.
pub fn dollars(cost: Cost) -> Option<f64> {
    cost.micros().map(|m| m as f64 / 1e6)
}

fn outcome_word(o: Outcome) -> &'static str {
    match o {
        Outcome::Success => "success",
        Outcome::Failure => "failure",
        Outcome::BudgetExhausted => "budget_exhausted",
        Outcome::MaxSteps => "max_steps",
        Outcome::Killed => "killed",
        Outcome::Error => "error",
    }
}

fn status_word(s: ToolStatus) -> &'static str {
    match s {
        ToolStatus::Ok => "ok",
        ToolStatus::Error => "error",
        ToolStatus::Rejected => "rejected",
        ToolStatus::InvalidOutput => "invalid_output",
        ToolStatus::Refused => "refused",
    }
}

fn verdict_word(v: Verdict) -> &'static str {
    match v {
        Verdict::Approve => "approve",
        Verdict::Reject => "reject",
        Verdict::Expired => "expired",
    }
}

/// RFC 3339 with milliseconds and `Z`: sorts as text, compares with `date('now', …)`.
pub fn timestamp(e: &Event) -> String {
    e.ts.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max).collect();
    out.push('…');
    out
}

/// The typed columns of a `traces.steps` row, derived from one event.
#[derive(Default, Debug, Clone, PartialEq)]
pub struct StepRow {
    /// One-line human summary.
    pub summary: String,
    /// Model name (model events, plans).
    pub model: Option<String>,
    /// Input tokens (model responses).
    pub tokens_in: Option<u64>,
    /// Output tokens (model responses).
    pub tokens_out: Option<u64>,
    /// Cost in dollars (model responses, tool results, finish).
    pub cost: Option<f64>,
    /// Latency (model responses, tool results, gate decisions).
    pub latency_ms: Option<u64>,
    /// Tool name (tool events).
    pub tool: Option<String>,
    /// Tool status or execution outcome.
    pub status: Option<String>,
    /// Blob reference of a tool output or model response.
    pub output_ref: Option<String>,
    /// Gate verdict.
    pub gate_verdict: Option<String>,
    /// Memory chunk ids, comma-separated, best first.
    pub memory_chunks: Option<String>,
}

/// Derives the `traces.steps` columns of one event.
pub fn step_row(e: &Event) -> StepRow {
    let mut r = StepRow::default();
    match &e.payload {
        Payload::ExecStarted(p) => {
            r.summary = match p.replay_of {
                Some(of) => format!(
                    "replay of {of} [{}]: {}",
                    p.strategy_version,
                    clip(&p.goal, 160)
                ),
                None => format!("started [{}]: {}", p.strategy_version, clip(&p.goal, 160)),
            };
        }
        Payload::PlanProposed(p) => {
            r.model = Some(p.model.clone());
            r.summary = format!(
                "plan ({}, prompt {}): {}",
                p.model,
                p.prompt_version,
                clip(&p.steps.join("; "), 200)
            );
        }
        Payload::ModelCalled(p) => {
            r.model = Some(p.model.clone());
            r.summary = match &p.prompt_version {
                Some(v) => format!("call {} (prompt {v})", p.model),
                None => format!("call {}", p.model),
            };
        }
        Payload::ModelResponded(p) => {
            r.model = Some(p.model.clone());
            r.tokens_in = Some(p.tokens.input);
            r.tokens_out = Some(p.tokens.output);
            r.cost = dollars(p.cost);
            r.latency_ms = Some(p.latency_ms);
            r.output_ref = p.response_ref.clone();
            r.summary = format!(
                "{} answered: {} in / {} out tokens, {} ms",
                p.model, p.tokens.input, p.tokens.output, p.latency_ms
            );
            if let Some(err) = &p.error {
                r.status = Some("error".into());
                r.summary
                    .push_str(&format!(" — unusable reply: {}", clip(err, 160)));
            }
        }
        Payload::MemoryRetrieved(p) => {
            let ids: Vec<&str> = p.chunks.iter().map(|c| c.id.as_str()).collect();
            r.memory_chunks = Some(ids.join(","));
            let shown: Vec<String> = p
                .chunks
                .iter()
                .take(3)
                .map(|c| format!("{} ({:.2})", c.id, c.score))
                .collect();
            r.summary = format!(
                "memory.retrieved {} → {} for {:?}",
                p.memory_version,
                if shown.is_empty() {
                    "nothing".to_owned()
                } else {
                    shown.join(", ")
                },
                clip(&p.query, 80)
            );
        }
        Payload::MemoryWritten(p) => {
            r.memory_chunks = Some(p.memory_id.clone());
            r.summary = format!("memory.written {} ({})", p.memory_id, p.volatility);
        }
        Payload::DistillFailed(p) => {
            r.status = Some("error".into());
            r.summary = format!(
                "memory.distill_failed after {} facts: {}",
                p.written,
                clip(&p.reason, 160)
            );
        }
        Payload::ToolCalled(p) => {
            r.tool = Some(p.tool.clone());
            r.summary = format!("{}({})", p.tool, clip(&p.args.to_string(), 160));
            if p.attempt > 1 {
                r.summary.push_str(&format!(" attempt {}", p.attempt));
            }
        }
        Payload::ToolResult(p) => {
            r.tool = Some(p.tool.clone());
            r.status = Some(status_word(p.status).into());
            r.cost = dollars(p.actual_cost);
            r.latency_ms = Some(p.latency_ms);
            r.output_ref = p.output_ref.clone();
            r.summary = format!(
                "{} → {} ({} ms)",
                p.tool,
                status_word(p.status),
                p.latency_ms
            );
            if let Some(class) = &p.error_class {
                r.summary.push_str(&format!(" [{class}]"));
            }
            if !p.errors.is_empty() {
                r.summary
                    .push_str(&format!(": {}", clip(&p.errors.join("; "), 160)));
            }
        }
        Payload::GateRequested(p) => {
            r.tool = p
                .action
                .get("tool")
                .and_then(|t| t.as_str())
                .map(str::to_owned);
            r.summary = format!(
                "gate {} requested: tier {} {}",
                p.gate_id,
                p.consequence_tier,
                clip(&p.action.to_string(), 160)
            );
        }
        Payload::GateDecided(p) => {
            r.gate_verdict = Some(verdict_word(p.verdict).into());
            r.latency_ms = Some(p.latency_ms);
            r.summary = format!(
                "gate {} {} by {}: {}",
                p.gate_id,
                verdict_word(p.verdict),
                p.approver,
                clip(&p.reason, 120)
            );
        }
        Payload::StepCompleted(p) => {
            r.summary = match &p.summary {
                Some(s) => format!("step {} done: {}", e.step_n, clip(s, 160)),
                None => format!("step {} done", e.step_n),
            };
        }
        Payload::ExecSuspended(t) | Payload::ExecResumed(t) | Payload::ExecCancelled(t) => {
            r.summary = format!("{}: {}", e.event_type(), clip(&t.reason, 160));
        }
        Payload::ExecFinished(p) => {
            r.status = Some(outcome_word(p.outcome).into());
            r.tokens_in = Some(p.tokens.input);
            r.tokens_out = Some(p.tokens.output);
            r.cost = dollars(p.cost);
            r.summary = format!(
                "finished: {} in {} steps",
                outcome_word(p.outcome),
                p.steps_n
            );
            if let Some(d) = &p.detail {
                r.summary.push_str(&format!(": {}", clip(d, 160)));
            }
        }
        #[allow(unreachable_patterns)] // event types added by newer code still project a row
        _ => {
            r.summary = e.event_type().to_string();
        }
    }
    r
}

fn sampled(e: &Event) -> bool {
    let (hi, lo) = e.event_id.0.as_u64_pair();
    (hi ^ lo).wrapping_mul(0x9E37_79B9_7F4A_7C15) % RETRIEVAL_SAMPLE_EVERY == 0
}

fn cost_parts(c: Cost) -> (u64, bool) {
    match c {
        Cost::Known(m) => (m, true),
        Cost::Unknown => (0, false),
    }
}
