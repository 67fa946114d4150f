//! The agent loop's decisions, as a pure function of the execution's fold. Given the state and
//! its events, the strategy, the contracts' facts and the control state, plus what the last
//! action returned, [`Decider::decide`] says which events to record, whether the spine must
//! commit them now (and how durably), and what the executor ([`crate::agent`]) does next. No
//! I/O, no clock, no randomness (ids come from the caller), so every policy of the loop is
//! testable as "given these events, when this result, then these events and this action":
//! limits (steps, tokens, cost), the budget check before a model call, kill-switches, the
//! autonomy tier and its gates, post-hoc review sampling, what a gate's decision does,
//! malformed-reply counting, and that a distillation never keeps an answer from finishing.
//!
//! Live runs, resumes after a crash and replays all go through it: every drive starts by folding
//! the log and asking [`Input::Wake`], which also closes what a crash left open.

use crate::strategy::{Durability, Strategy};
use keel_core::control::{Autonomy, ControlState, autonomy, draw};
use keel_core::payload::*;
use keel_core::{Cost, Event, ExecStatus, ExecutionState, Tokens};
use keel_models::{ChatRequest, ChatResponse, PriceTable, ToolCall};
use serde_json::{Value, json};
use std::collections::VecDeque;

mod policy;
use policy::tool_switched_off;
pub use policy::{killed, malformed_in_a_row, over_budget, refusal, succeeded};

/// Malformed replies in a row after which the execution ends with outcome `error`.
pub const MAX_MALFORMED_IN_A_ROW: u32 = 3;

/// What the decider needs to know of a tool's contract.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolFacts {
    /// Consequence tier.
    pub tier: u8,
    /// The arguments pass the input schema (if not, the contract layer rejects the call with an
    /// event and no gate opens).
    pub args_valid: bool,
}

/// The contracts, as the decider sees them (pure lookups).
pub trait Contracts: Sync {
    /// The facts of `tool` for these arguments; `None` if no such contract is registered.
    fn facts(&self, tool: &str, args: &Value) -> Option<ToolFacts>;
    /// The idempotency key a call of `tool` with `args` would carry.
    fn idempotency_key(
        &self,
        tool: &str,
        args: &Value,
        exec_id: &str,
        tenant: &str,
    ) -> Option<String>;
}

/// When the recorded events go to the spine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Commit {
    /// Not yet: they ride with the step's next commit.
    Hold,
    /// Now, without waiting for the disk (a later durable commit makes them durable).
    Buffered,
    /// Now, durably.
    Durable,
}

/// What the executor does after recording a decision's events.
#[derive(Clone, Debug, PartialEq)]
pub enum Next {
    /// Nothing: the execution ended or waits (at a gate, suspended).
    Stop,
    /// Read the control state and ask again ([`Input::Wake`]): the next step.
    Wake,
    /// Settle the tool call a crash left without a result, through the ledger; then
    /// [`Input::Resolved`].
    ResolvePending,
    /// Build the model request (memory, conversation); then [`Input::Request`].
    AskModel,
    /// Call the model with the request built; then [`Input::Reply`].
    CallModel {
        /// The call's id (recorded in `model.called`).
        call_id: String,
    },
    /// Run a tool call through the contract layer; then [`Input::Tool`].
    CallTool {
        /// The call.
        call: ToolCall,
        /// A person approved it at a gate (an unknown earlier outcome may be retried).
        after_gate: bool,
    },
    /// Record `gate.requested` (with its evidence pack) for this action, durably; then wake.
    OpenGate {
        /// The gate's id.
        gate_id: String,
        /// The exact action (tool, args, idempotency key) a person decides on.
        action: Value,
        /// Its consequence tier.
        tier: u8,
        /// Why a person decides.
        reason: String,
    },
    /// Distil the finished conversation into memory (a metered model call of its own); then
    /// [`Input::Distilled`].
    Distil,
    /// Record `exec.finished` with the state's totals, durably; the execution ends.
    Finish {
        /// The outcome.
        outcome: Outcome,
        /// The answer, or why it ended.
        detail: Option<String>,
    },
}

/// One decision: events to record (in order), when they go to the spine, what comes next.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// Payloads to record, in order.
    pub record: Vec<Payload>,
    /// When the step's recorded events go to the spine.
    pub commit: Commit,
    /// What the executor does next.
    pub next: Next,
}

/// A model reply that could not be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelFailure {
    /// What went wrong.
    pub message: String,
    /// A malformed reply: ask again (up to [`MAX_MALFORMED_IN_A_ROW`]).
    pub recoverable: bool,
    /// The tokens the failed reply reports it used (a malformed reply was still billed).
    pub usage: keel_models::Usage,
}

/// What the last action returned.
#[derive(Clone, Copy, Debug)]
pub enum Input<'a> {
    /// Start (or go on with) a step from the fold.
    Wake,
    /// The pending tool call was settled (its events folded in).
    Resolved,
    /// The pending tool call was settled as interrupted with an unknown outcome that its
    /// contract cannot repeat safely (its events folded in): a person decides whether it runs
    /// again, `(action, tier, reason)`.
    ResolvedToGate(&'a Value, u8, &'a str),
    /// The model request was built.
    Request(&'a ChatRequest),
    /// The model answered (with the raw reply's blob, if stored) or failed.
    Reply(Result<(&'a ChatResponse, Option<&'a str>), &'a ModelFailure>),
    /// A tool call ended (its events folded in).
    Tool {
        /// The call's id.
        call_id: &'a str,
        /// The tool's failure policy asks a person: `(action, tier, reason)`.
        escalate: Option<(&'a Value, u8, &'a str)>,
    },
    /// The distillation ended (its events folded in).
    Distilled,
}

/// What the decider sees of the execution: its fold, its events, the control state read at the
/// start of the step.
#[derive(Clone, Copy)]
pub struct View<'a> {
    /// The fold.
    pub state: &'a ExecutionState,
    /// Every event (the fold's input).
    pub events: &'a [Event],
    /// Kill-switches, demotions.
    pub control: &'a ControlState,
}

/// The call being run, for what follows it.
struct Running {
    tool: String,
    /// Sampled for post-hoc review: `(tier, rate)`.
    sampled: Option<(u8, f64)>,
    /// Run after a gate's approval: the step's summary.
    after_gate: Option<String>,
}

/// The decider of one drive. Its own state is only the step in progress (calls still to
/// consider, the call running, how an answer finishes after its distillation); everything else
/// is read from the fold each time.
pub struct Decider<'a> {
    strategy: &'a Strategy,
    prices: &'a PriceTable,
    contracts: &'a dyn Contracts,
    ids: &'a mut (dyn FnMut() -> String + Send),
    calls: VecDeque<ToolCall>,
    names: Vec<String>,
    running: Option<Running>,
    asked: Option<String>,
    answered: Option<(Outcome, String)>,
}

fn tenant_of(state: &ExecutionState) -> &str {
    state.tenant.as_ref().map_or("", |t| t.as_str())
}

impl<'a> Decider<'a> {
    /// A decider for one drive of an execution of `strategy`; `ids` makes fresh unique ids.
    pub fn new(
        strategy: &'a Strategy,
        prices: &'a PriceTable,
        contracts: &'a dyn Contracts,
        ids: &'a mut (dyn FnMut() -> String + Send),
    ) -> Self {
        Self {
            strategy,
            prices,
            contracts,
            ids,
            calls: VecDeque::new(),
            names: Vec::new(),
            running: None,
            asked: None,
            answered: None,
        }
    }

    /// How a completed step commits: durably when the strategy says every step, else with the
    /// next barrier (a side effect's intent, a gate, the end).
    fn step_commit(&self) -> Commit {
        match self.strategy.durability {
            Durability::EveryStep => Commit::Durable,
            Durability::BeforeEffects => Commit::Buffered,
        }
    }

    fn end_step(&self, mut record: Vec<Payload>, summary: String) -> Decision {
        record.push(Payload::StepCompleted(StepCompleted {
            summary: Some(summary),
        }));
        Decision {
            record,
            commit: self.step_commit(),
            next: Next::Wake,
        }
    }

    fn finish(record: Vec<Payload>, outcome: Outcome, detail: String) -> Decision {
        Decision {
            record,
            commit: Commit::Hold,
            next: Next::Finish {
                outcome,
                detail: Some(detail),
            },
        }
    }

    /// The next decision, given what the last action returned.
    pub fn decide(&mut self, view: View<'_>, input: Input<'_>) -> Decision {
        match input {
            Input::Wake => self.wake(view),
            Input::Resolved => self.end_step(
                Vec::new(),
                "resumed: resolved the in-flight tool call".into(),
            ),
            Input::ResolvedToGate(action, tier, reason) => {
                let tool = action["tool"].as_str().unwrap_or_default().to_owned();
                let reason = format!("resumed: {reason}");
                self.gate(Vec::new(), &tool, action.clone(), tier, reason)
            }
            Input::Request(request) => self.ask(view, request),
            Input::Reply(Ok((reply, response_ref))) => self.replied(view, reply, response_ref),
            Input::Reply(Err(failure)) => self.failed_reply(view, failure),
            Input::Tool { call_id, escalate } => self.tool_done(view, call_id, escalate),
            Input::Distilled => match self.answered.take() {
                Some((outcome, answer)) => Self::finish(Vec::new(), outcome, answer),
                None => Decision {
                    record: Vec::new(),
                    commit: Commit::Hold,
                    next: Next::Wake,
                },
            },
        }
    }

    /// The start of a step: close what a crash left open, carry out a gate's decision, or check
    /// the kill-switches and limits before asking the model.
    fn wake(&mut self, view: View<'_>) -> Decision {
        let state = view.state;
        let hold = |record: Vec<Payload>, next: Next| Decision {
            record,
            commit: Commit::Hold,
            next,
        };
        match &state.status {
            s if s.is_terminal() => return hold(Vec::new(), Next::Stop),
            ExecStatus::Suspended | ExecStatus::SuspendedAtGate { .. } => {
                return hold(Vec::new(), Next::Stop);
            }
            _ => {}
        }
        // A crash during the distillation after an answer: its call is closed as failed, never
        // answered with the agent's own request. The answer itself is only in the model's raw
        // reply, so the loop then asks for it again, as after any crash before `exec.finished`.
        if let Some(call_id) = &state.pending_model_call
            && crate::recall::is_distill_call(call_id)
        {
            let why = "no reply: the worker stopped during the distillation".to_owned();
            let record = vec![
                Payload::ModelResponded(ModelResponded {
                    call_id: call_id.clone(),
                    model: self.strategy.model.clone(),
                    tokens: Tokens::default(),
                    // Unmetered, like an agent's call lost with its worker (asked again under
                    // the same id): an unknown cost here would make every later budget check
                    // refuse.
                    cost: Cost::ZERO,
                    latency_ms: 0,
                    response_ref: None,
                    error: Some(why.clone()),
                }),
                Payload::DistillFailed(DistillFailed {
                    call_id: Some(call_id.clone()),
                    written: 0,
                    reason: why,
                }),
            ];
            return hold(record, Next::Wake);
        }
        if state.pending_tool_call.is_some() {
            // A crash between tool.called and tool.result: the ledger decides, not a re-run.
            return hold(Vec::new(), Next::ResolvePending);
        }
        let last = view.events.last().map(|e| &e.payload);
        // A crash can cut a step after the model answered or after a tool returned; close that
        // step so the next model call starts a new one and sees what the cut step did.
        if matches!(
            last,
            Some(Payload::ModelResponded(_) | Payload::PlanProposed(_) | Payload::ToolResult(_))
        ) {
            return self.end_step(
                Vec::new(),
                "resumed: closing a step cut short by a crash".into(),
            );
        }
        if let Some(Payload::GateDecided(d)) = last {
            return self.carry_out(view, d);
        }
        if let Some(why) = killed(view.control, self.strategy, tenant_of(state)) {
            return Self::finish(Vec::new(), Outcome::Killed, why);
        }
        if state.totals.steps >= self.strategy.max_steps {
            let why = format!("reached max_steps {}", self.strategy.max_steps);
            return Self::finish(Vec::new(), Outcome::MaxSteps, why);
        }
        if let Some(why) = over_budget(state) {
            return Self::finish(Vec::new(), Outcome::BudgetExhausted, why);
        }
        hold(Vec::new(), Next::AskModel)
    }

    /// The request is built: refuse it if its most possible cost could cross the budget (see
    /// [`crate::estimate`]), else record the call (or ask again under the call a crash cut).
    fn ask(&mut self, view: View<'_>, request: &ChatRequest) -> Decision {
        if let Some(why) = crate::estimate::refuse_model_call(
            self.prices,
            &self.strategy.model,
            view.state,
            request,
        ) {
            return Self::finish(Vec::new(), Outcome::BudgetExhausted, why);
        }
        let mut record = Vec::new();
        let call_id = match view.state.pending_model_call.clone() {
            // A crash while the model was thinking: ask again under the same call.
            Some(id) => id,
            None => {
                let id = format!("model-{}", (self.ids)());
                record.push(Payload::ModelCalled(ModelCalled {
                    call_id: id.clone(),
                    model: self.strategy.model.clone(),
                    prompt_version: Some(self.strategy.prompt_version.clone()),
                    request_ref: None,
                }));
                id
            }
        };
        self.asked = Some(call_id.clone());
        Decision {
            record,
            commit: Commit::Hold,
            next: Next::CallModel { call_id },
        }
    }

    fn call_id(&mut self, view: View<'_>) -> String {
        self.asked
            .take()
            .or_else(|| view.state.pending_model_call.clone())
            .unwrap_or_default()
    }

    fn replied(
        &mut self,
        view: View<'_>,
        reply: &ChatResponse,
        response_ref: Option<&str>,
    ) -> Decision {
        let mut record = vec![Payload::ModelResponded(ModelResponded {
            call_id: self.call_id(view),
            model: reply.model.clone(),
            tokens: Tokens {
                input: reply.usage.input,
                output: reply.usage.output,
            },
            // Priced by the strategy's model name: vendors answer with dated names.
            cost: self.prices.cost(&self.strategy.model, &reply.usage),
            latency_ms: u64::try_from(reply.latency.as_millis()).unwrap_or(u64::MAX),
            response_ref: response_ref.map(str::to_owned),
            error: None,
        })];
        if reply.tool_calls.is_empty() {
            let answer = reply.text.clone().unwrap_or_default();
            record.push(Payload::StepCompleted(StepCompleted {
                summary: Some("answered".into()),
            }));
            let outcome = if succeeded(self.strategy, view.events, &answer) {
                Outcome::Success
            } else {
                Outcome::Failure
            };
            // The distillation comes after the answer and never decides how it ends.
            if self.strategy.memory.distill {
                self.answered = Some((outcome, answer));
                return Decision {
                    record,
                    commit: Commit::Hold,
                    next: Next::Distil,
                };
            }
            return Self::finish(record, outcome, answer);
        }
        if let Some(text) = &reply.text {
            record.push(Payload::PlanProposed(PlanProposed {
                steps: text.lines().map(str::to_owned).collect(),
                model: reply.model.clone(),
                prompt_version: self.strategy.prompt_version.clone(),
            }));
        }
        self.names = reply.tool_calls.iter().map(|c| c.name.clone()).collect();
        self.calls = reply.tool_calls.iter().cloned().collect();
        self.next_call(view, record)
    }

    fn failed_reply(&mut self, view: View<'_>, failure: &ModelFailure) -> Decision {
        let mut record = vec![Payload::ModelResponded(ModelResponded {
            call_id: self.call_id(view),
            model: self.strategy.model.clone(),
            tokens: Tokens {
                input: failure.usage.input,
                output: failure.usage.output,
            },
            // A reply that reports no usage (an HTTP error, unparsable JSON) has an unknown
            // price; one that does is priced like any reply, so budgets see it.
            cost: if failure.usage == keel_models::Usage::default() {
                Cost::Unknown
            } else {
                self.prices.cost(&self.strategy.model, &failure.usage)
            },
            latency_ms: 0,
            response_ref: None,
            error: Some(failure.message.clone()),
        })];
        if !failure.recoverable {
            return Self::finish(record, Outcome::Error, failure.message.clone());
        }
        let n = malformed_in_a_row(view.events) + 1;
        record.push(Payload::StepCompleted(StepCompleted {
            summary: Some("malformed model reply; asking again".into()),
        }));
        if n >= MAX_MALFORMED_IN_A_ROW {
            let why = format!("{n} malformed replies in a row; last: {}", failure.message);
            return Self::finish(record, Outcome::Error, why);
        }
        Decision {
            record,
            commit: self.step_commit(),
            next: Next::Wake,
        }
    }

    /// Considers the step's next tool call, after `record` (not yet folded: the call's position
    /// in the log counts them). Calls the runtime refuses are recorded and the next considered;
    /// a call that needs a person opens a gate, and every later call of the step is refused.
    fn next_call(&mut self, view: View<'_>, mut record: Vec<Payload>) -> Decision {
        let state = view.state;
        let tenant = tenant_of(state);
        let exec = state.exec_id.map(|e| e.to_string()).unwrap_or_default();
        while let Some(call) = self.calls.pop_front() {
            let refuse = |record: &mut Vec<Payload>, id: String, status, why| {
                record.extend(refusal(id, &call, status, why));
            };
            if !self.strategy.tools.contains(&call.name) {
                let why = format!(
                    "tool {:?} is not offered by strategy {}",
                    call.name, self.strategy.name
                );
                refuse(&mut record, (self.ids)(), ToolStatus::Rejected, why);
                continue;
            }
            if let Some(why) = tool_switched_off(view.control, tenant, &call.name) {
                refuse(&mut record, (self.ids)(), ToolStatus::Refused, why);
                continue;
            }
            let mut sampled = None;
            // Arguments that break the input schema never reach a gate: the contract layer
            // rejects them with an event, before any adapter.
            if let Some(c) = self.contracts.facts(&call.name, &call.arguments)
                && c.args_valid
            {
                let ceiling = view
                    .control
                    .max_autonomous_tier(&self.strategy.version, self.strategy.max_autonomous_tier);
                let review = &self.strategy.approval;
                // The draw is keyed by the call's position in the log, so a resumed or replayed
                // execution samples the same calls.
                let seq = state.last_seq + record.len() as u64;
                let key = format!("{exec}:{seq}:{}", call.name);
                match autonomy(c.tier, ceiling, review.review_rate, draw(&key)) {
                    Autonomy::Gate { reason } => {
                        let key = self.contracts.idempotency_key(
                            &call.name,
                            &call.arguments,
                            &exec,
                            tenant,
                        );
                        let action = json!({
                            "tool": call.name,
                            "args": call.arguments,
                            "idempotency_key": key,
                        });
                        return self.gate(record, &call.name, action, c.tier, reason);
                    }
                    Autonomy::Reviewed { sampled: true } => {
                        sampled = Some((c.tier, review.review_rate));
                    }
                    _ => {}
                }
            }
            self.running = Some(Running {
                tool: call.name.clone(),
                sampled,
                after_gate: None,
            });
            return Decision {
                record,
                commit: Commit::Hold,
                next: Next::CallTool {
                    call,
                    after_gate: false,
                },
            };
        }
        let summary = format!("called {}", std::mem::take(&mut self.names).join(", "));
        self.end_step(record, summary)
    }

    /// Nothing may follow a gate until it is decided: the step's later calls are refused now,
    /// and the model can ask again afterwards.
    fn gate(
        &mut self,
        mut record: Vec<Payload>,
        tool: &str,
        action: Value,
        tier: u8,
        reason: String,
    ) -> Decision {
        for later in std::mem::take(&mut self.calls) {
            let why = format!("not run: {tool} waits for an approval decision; ask again after it");
            record.extend(refusal((self.ids)(), &later, ToolStatus::Refused, why));
        }
        self.names.clear();
        Decision {
            record,
            commit: Commit::Hold,
            next: Next::OpenGate {
                gate_id: (self.ids)(),
                action,
                tier,
                reason,
            },
        }
    }

    fn tool_done(
        &mut self,
        view: View<'_>,
        call_id: &str,
        escalate: Option<(&Value, u8, &str)>,
    ) -> Decision {
        let Some(running) = self.running.take() else {
            return self.next_call(view, Vec::new());
        };
        if let Some(summary) = running.after_gate {
            return self.end_step(Vec::new(), summary);
        }
        if let Some((action, tier, reason)) = escalate {
            let reason = format!("escalated by the tool's failure policy: {reason}");
            return self.gate(Vec::new(), &running.tool, action.clone(), tier, reason);
        }
        let mut record = Vec::new();
        if let Some((consequence_tier, rate)) = running.sampled {
            record.push(Payload::ReviewSampled(ReviewSampled {
                call_id: call_id.to_owned(),
                tool: running.tool,
                consequence_tier,
                rate,
            }));
        }
        self.next_call(view, record)
    }

    /// Acts on a gate's decision: an approved action runs (with its idempotency key, through the
    /// contract layer); a rejected or expired one is recorded as refused with the approver's
    /// reason, which is what the model sees next. The control state is read after the decision:
    /// an approved action whose tool, tenant or strategy was switched off meanwhile does not run
    /// (and a tenant or strategy switch then ends the execution `killed`).
    fn carry_out(&mut self, view: View<'_>, d: &GateDecided) -> Decision {
        let action = view.events.iter().rev().find_map(|e| match &e.payload {
            Payload::GateRequested(g) if g.gate_id == d.gate_id => Some(&g.action),
            _ => None,
        });
        let Some(action) = action else {
            let why = format!("gate {} was decided but never requested", d.gate_id);
            return Self::finish(Vec::new(), Outcome::Error, why);
        };
        let call = ToolCall {
            id: format!("gate-{}", d.gate_id),
            name: action["tool"].as_str().unwrap_or_default().to_owned(),
            arguments: action["args"].clone(),
        };
        let tenant = tenant_of(view.state);
        match d.verdict {
            Verdict::Approve => {
                let off = killed(view.control, self.strategy, tenant)
                    .or_else(|| tool_switched_off(view.control, tenant, &call.name));
                match off {
                    Some(why) => {
                        let summary = format!("approved by {} but not run: {why}", d.approver);
                        let record = refusal((self.ids)(), &call, ToolStatus::Refused, why).into();
                        self.end_step(record, summary)
                    }
                    None => {
                        self.running = Some(Running {
                            tool: call.name.clone(),
                            sampled: None,
                            after_gate: Some(format!(
                                "approved by {}: called {}",
                                d.approver, call.name
                            )),
                        });
                        Decision {
                            record: Vec::new(),
                            commit: Commit::Hold,
                            next: Next::CallTool {
                                call,
                                after_gate: true,
                            },
                        }
                    }
                }
            }
            verdict => {
                let why = match verdict {
                    Verdict::Expired => format!("expired at the gate: {}", d.reason),
                    _ => format!("rejected at the gate by {}: {}", d.approver, d.reason),
                };
                let summary = format!("{} at the gate: {}", verdict.as_str(), call.name);
                let record = refusal((self.ids)(), &call, ToolStatus::Rejected, why).into();
                self.end_step(record, summary)
            }
        }
    }
}

#[cfg(test)]
mod tests;
