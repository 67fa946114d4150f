//! The agent loop: a thin executor around the pure decider ([`crate::decide`]). The decider says
//! what happens next (call the model, run a tool call through the contract layer, open a gate,
//! distil, finish) and which events record it; the executor performs the I/O and feeds the
//! result back. Per step: `model.called`, `model.responded`, then either tool calls
//! (`plan.proposed`, `tool.called` / `tool.result` …) and `step.completed`, or an answer that
//! ends the execution with `exec.finished` and an outcome evaluated against the strategy's
//! success criteria.
//!
//! A step's events go to the spine as one batch: they are held in memory until the step
//! completes (one append, durable per the strategy's mode), or until a barrier, which carries
//! everything held before it in the same group commit: the intent of a tool call that may act
//! (durable before its adapter runs, see [`keel_tools::ToolRunner::call_in_step`]), a gate, the
//! end. A crash loses at most the step in progress, which the next worker runs again.
//!
//! The loop holds nothing the log does not: `drive` starts by folding the execution's events,
//! so a fresh worker resumes a crashed execution exactly where its log stops. A tool call that
//! was recorded as called but has no result is resolved through the idempotency ledger, never
//! blindly re-run.

use crate::control::Control;
use crate::conversation::Conversation;
use crate::decide::{Commit, Contracts, Decider, Input, ModelFailure, Next, ToolFacts, View};
use crate::error::RuntimeError;
use crate::gates;
use crate::strategy::Strategy;
use keel_core::control::ControlState;
use keel_core::payload::*;
use keel_core::{
    CURRENT_SCHEMA_VERSION, Cost, Event, ExecId, ExecStatus, ExecutionState, TenantId, Tokens,
};
use keel_models::{ChatRequest, ChatResponse, ModelProvider, PriceTable, ToolSpec};
use keel_spine::clock::{self, Clock};
use keel_spine::{BlobStore, EventLog, SpineError};
use keel_tools::{CallContext, CallOutcome, ToolRunner};
use serde_json::Value;
use std::sync::Arc;

pub use crate::decide::succeeded;

/// Everything the loop runs with. Cheap to share across executions.
pub struct Agent {
    /// The spine.
    pub log: Arc<dyn EventLog>,
    /// Where raw model replies and tool outputs live.
    pub blobs: Arc<dyn BlobStore>,
    /// The tool contract layer.
    pub tools: Arc<ToolRunner>,
    /// Model prices.
    pub prices: PriceTable,
    /// Kill-switches, demotions and certifications.
    pub control: Arc<Control>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// A pause before every model call (zero by default): paces executions for demos and
    /// crash drills, so a watcher can see, or kill, a run mid-way.
    pub pace: std::time::Duration,
    /// Governed memory, for strategies with a `memory:` section (see [`crate::recall`]).
    pub memory: Option<Arc<keel_memory::Memory>>,
}

/// One execution being driven: its events so far (the step's uncommitted ones included), their
/// fold, the step's events not yet on the spine, and the conversation kept as they arrive.
struct Run {
    clock: Arc<dyn Clock>,
    events: Vec<Event>,
    state: ExecutionState,
    /// Recorded but not yet on the spine: the tail of `events`.
    pending: Vec<Event>,
    conversation: Conversation,
    /// A resuming drain's hold: the second model call of this drive waits until it says go
    /// (see [`crate::worker::drain`]); the first step runs at once.
    hold: Option<(bool, tokio::sync::watch::Receiver<bool>)>,
    /// The control stream's last seq read right after this run's latest append committed
    /// (`AppendAck::control_seq`), until the next read of the control state uses it.
    control_seen: Option<u64>,
}

impl Run {
    fn exec_id(&self) -> Result<ExecId, RuntimeError> {
        self.state
            .exec_id
            .ok_or_else(|| RuntimeError::UnknownExecution("(not started)".into()))
    }

    /// Records one event after the last and folds it in; it reaches the spine with the step's
    /// next commit.
    fn record(&mut self, payload: Payload) -> Result<(), RuntimeError> {
        let event = Event {
            event_id: clock::new_event_id(),
            exec_id: self.exec_id()?,
            tenant: self
                .state
                .tenant
                .clone()
                .unwrap_or_else(|| TenantId("".into())),
            seq: self.state.last_seq + 1,
            ts: self.clock.now(),
            trace_id: self.state.trace_id.unwrap_or(keel_core::TraceId([1; 16])),
            step_n: self.state.totals.steps,
            schema_version: CURRENT_SCHEMA_VERSION,
            payload,
        };
        self.state.apply_mut(&event)?;
        self.pending.push(event.clone());
        self.events.push(event);
        Ok(())
    }

    /// Folds in events another component (the tool runner) recorded.
    fn absorb(&mut self, events: Vec<Event>) -> Result<(), RuntimeError> {
        for e in events {
            self.state.apply_mut(&e)?;
            self.events.push(e);
        }
        Ok(())
    }

    /// Appends the held events as one batch, durably or not.
    async fn commit(&mut self, log: &dyn EventLog, durable: bool) -> Result<(), RuntimeError> {
        let Some(first) = self.pending.first() else {
            return Ok(());
        };
        let exec_id = first.exec_id;
        let expected = first.seq - 1;
        let appended = if durable {
            log.append(exec_id, expected, &self.pending).await
        } else {
            log.append_buffered(exec_id, expected, &self.pending).await
        };
        match appended {
            Ok(ack) => {
                self.pending.clear();
                self.control_seen = ack.control_seq;
                Ok(())
            }
            Err(SpineError::Conflict { .. }) => Err(RuntimeError::Contended(exec_id.to_string())),
            Err(e) => Err(e.into()),
        }
    }
}

impl Contracts for ToolRunner {
    fn facts(&self, tool: &str, args: &Value) -> Option<ToolFacts> {
        self.contract(tool).map(|c| ToolFacts {
            tier: c.consequence_tier,
            args_valid: c.input.errors(args).is_empty(),
        })
    }

    fn idempotency_key(
        &self,
        tool: &str,
        args: &Value,
        exec_id: &str,
        tenant: &str,
    ) -> Option<String> {
        let c = self.contract(tool)?;
        keel_tools::invoke::idempotency_key(c, args, exec_id, tenant)
            .ok()
            .flatten()
    }
}

/// What the last action returned, kept until the decider has seen it.
enum Got {
    Wake,
    Resolved,
    ResolvedToGate(Value, u8, String),
    Request,
    Reply(Result<(ChatResponse, Option<String>), ModelFailure>),
    Tool {
        call_id: String,
        escalate: Option<(Value, u8, String)>,
    },
    Distilled,
}

impl Agent {
    /// Appends `exec.started` for a new execution and returns its id (it runs when driven).
    pub async fn start(
        &self,
        strategy: &Strategy,
        tenant: &str,
        goal: &str,
    ) -> Result<ExecId, RuntimeError> {
        self.start_as(clock::new_exec_id(), strategy, tenant, goal)
            .await
    }

    /// Starts an execution under a chosen id. The spine's conditional append makes the start
    /// happen at most once per id: a second start of the same id is
    /// [`keel_spine::SpineError::Conflict`] and stores nothing (the API's `Idempotency-Key`
    /// relies on this).
    pub async fn start_as(
        &self,
        exec_id: ExecId,
        strategy: &Strategy,
        tenant: &str,
        goal: &str,
    ) -> Result<ExecId, RuntimeError> {
        crate::estimate::check_priced(&self.prices, strategy)?;
        self.append_start(exec_id, strategy, tenant, goal).await
    }

    /// Appends `exec.started` under `exec_id`, once its strategy's checks have passed.
    pub(crate) async fn append_start(
        &self,
        exec_id: ExecId,
        strategy: &Strategy,
        tenant: &str,
        goal: &str,
    ) -> Result<ExecId, RuntimeError> {
        let event = Event {
            event_id: clock::new_event_id(),
            exec_id,
            tenant: TenantId(tenant.to_owned()),
            seq: 1,
            ts: self.clock.now(),
            trace_id: clock::new_trace_id(),
            step_n: 0,
            schema_version: CURRENT_SCHEMA_VERSION,
            payload: Payload::ExecStarted(ExecStarted {
                goal: goal.to_owned(),
                strategy_version: strategy.version.clone(),
                budget: strategy.budget.clone(),
                experiment_arm: strategy.experiment_arm.clone(),
                replay_of: None,
                experiment: strategy.assignment.clone(),
            }),
        };
        self.log.append(exec_id, 0, &[event]).await?;
        Ok(exec_id)
    }

    fn tool_specs(&self, strategy: &Strategy) -> Vec<ToolSpec> {
        strategy
            .tools
            .iter()
            .filter_map(|name| self.tools.contract(name))
            .map(|c| ToolSpec {
                name: c.name.clone(),
                description: c.description.clone(),
                input_schema: c.input.raw().clone(),
            })
            .collect()
    }

    /// Where a server's question during a tool call goes: a gate on this agent's spine.
    fn gates(&self) -> Arc<dyn keel_tools::elicit::ElicitationGates> {
        Arc::new(crate::elicit::SpineGates::new(
            self.log.clone(),
            self.clock.clone(),
        ))
    }

    /// Drives an execution from wherever its log stops until it ends (or suspends). Returns its
    /// final state. A panic in a step does not escape and is never retried: the events the step
    /// recorded are committed, the failed step is recorded and the execution ends with outcome
    /// `error` naming the panic (see [`crate::worker::end_after_panic`]).
    pub async fn drive(
        &self,
        strategy: &Strategy,
        model: &dyn ModelProvider,
        exec_id: ExecId,
    ) -> Result<ExecutionState, RuntimeError> {
        let events = self.log.read(exec_id, 1).await?;
        self.drive_events(strategy, model, exec_id, events, None)
            .await
    }

    /// [`Agent::drive`] on the execution's events the caller has already read (all of them, from
    /// seq 1): a worker resuming thousands reads their logs in batches, once each.
    /// With `hold`, its steps after the first wait until `hold` turns true.
    pub async fn drive_events(
        &self,
        strategy: &Strategy,
        model: &dyn ModelProvider,
        exec_id: ExecId,
        events: Vec<Event>,
        hold: Option<tokio::sync::watch::Receiver<bool>>,
    ) -> Result<ExecutionState, RuntimeError> {
        use futures::FutureExt;
        if events.is_empty() {
            return Err(RuntimeError::UnknownExecution(exec_id.to_string()));
        }
        let state = ExecutionState::fold(&events)?;
        let mut run = Run {
            clock: self.clock.clone(),
            events,
            state,
            pending: Vec::new(),
            conversation: Conversation::new(&strategy.prompt),
            hold: hold.map(|h| (false, h)),
            control_seen: None,
        };
        let steps = std::panic::AssertUnwindSafe(self.drive_steps(&mut run, strategy, model));
        match steps.catch_unwind().await {
            Ok(result) => result,
            Err(panic) => {
                let why = crate::worker::panic_message(&*panic);
                // What the step did before it panicked stays visible. If this append fails,
                // the step is lost as in any crash; the end is still recorded below.
                let _ = run.commit(&*self.log, true).await;
                crate::worker::end_after_panic_guarded(self, exec_id, &why).await
            }
        }
    }

    /// The executor: asks the decider, records and commits what it says, performs its action
    /// and feeds the result back, until it says stop.
    async fn drive_steps(
        &self,
        run: &mut Run,
        strategy: &Strategy,
        model: &dyn ModelProvider,
    ) -> Result<ExecutionState, RuntimeError> {
        // One request kept across the steps: its messages are brought up to date, not copied
        // whole, and its tools are built once.
        let mut request = ChatRequest {
            model: strategy.model.clone(),
            messages: Vec::new(),
            tools: self.tool_specs(strategy),
            max_tokens: strategy.max_tokens,
        };
        let mut asked = false;
        let mut ids = || uuid::Uuid::now_v7().to_string();
        let mut decider = Decider::new(strategy, &self.prices, &*self.tools, &mut ids);
        let mut control = self.read_control(run).await?;
        let mut got = Got::Wake;
        loop {
            let input = match &got {
                Got::Wake => Input::Wake,
                Got::Resolved => Input::Resolved,
                Got::ResolvedToGate(a, t, r) => Input::ResolvedToGate(a, *t, r),
                Got::Request if asked => Input::Request(&request),
                Got::Request => Input::Wake,
                Got::Reply(Ok((reply, blob))) => Input::Reply(Ok((reply, blob.as_deref()))),
                Got::Reply(Err(failure)) => Input::Reply(Err(failure)),
                Got::Tool { call_id, escalate } => Input::Tool {
                    call_id,
                    escalate: escalate.as_ref().map(|(a, t, r)| (a, *t, r.as_str())),
                },
                Got::Distilled => Input::Distilled,
            };
            let view = View {
                state: &run.state,
                events: &run.events,
                control: &control,
            };
            let decision = decider.decide(view, input);
            for p in decision.record {
                run.record(p)?;
            }
            match decision.commit {
                Commit::Hold => {}
                Commit::Buffered => run.commit(&*self.log, false).await?,
                Commit::Durable => run.commit(&*self.log, true).await?,
            }
            got = match decision.next {
                Next::Stop => {
                    run.commit(&*self.log, false).await?;
                    return Ok(run.state.clone());
                }
                Next::Wake => {
                    control = self.read_control(run).await?;
                    Got::Wake
                }
                Next::ResolvePending => {
                    // The ledger's answer is recorded after the pending call on the spine.
                    run.commit(&*self.log, false).await?;
                    match self.tools.resolve_pending(&run.state).await? {
                        Some(report) => {
                            run.absorb(report.events)?;
                            match report.outcome {
                                // Its outcome is unknown and a repeat could act twice.
                                CallOutcome::Escalate {
                                    action,
                                    consequence_tier,
                                    reason,
                                    ..
                                } => Got::ResolvedToGate(action, consequence_tier, reason),
                                _ => Got::Resolved,
                            }
                        }
                        None => Got::Resolved,
                    }
                }
                Next::AskModel => {
                    match run.hold.as_mut() {
                        Some((false, _)) => run.hold = run.hold.take().map(|(_, h)| (true, h)),
                        Some((true, hold)) => {
                            // A closed sender (the drain gone) lets it go too.
                            let _ = hold.wait_for(|go| *go).await;
                            run.hold = None;
                        }
                        None => {}
                    }
                    if !self.pace.is_zero() {
                        tokio::time::sleep(self.pace).await;
                    }
                    if let Some(p) =
                        crate::recall::before_first_call(self, strategy, &run.state, &run.events)
                            .await?
                    {
                        run.record(p)?;
                    }
                    run.conversation.absorb(&run.events, &*self.blobs).await?;
                    run.conversation.update(&mut request.messages);
                    asked = true;
                    Got::Request
                }
                Next::CallModel { .. } => {
                    if !std::mem::take(&mut asked) {
                        return Err(RuntimeError::Worker(
                            "the decider called the model before a request was built".into(),
                        ));
                    }
                    match model.chat(&request).await {
                        Ok(reply) => {
                            let blob = self
                                .blobs
                                .put_for_append(reply.raw.clone().into_bytes())
                                .await?;
                            Got::Reply(Ok((reply, Some(blob.to_string()))))
                        }
                        Err(e) => Got::Reply(Err(ModelFailure {
                            message: e.to_string(),
                            recoverable: e.is_recoverable(),
                            usage: e.usage(),
                        })),
                    }
                }
                Next::CallTool { call, after_gate } => {
                    let ctx = CallContext::from_state(&run.state)?.with_gates(self.gates());
                    let (name, args) = (call.name.as_str(), call.arguments.clone());
                    let report = if after_gate {
                        self.tools
                            .call_after_gate_in_step(&ctx, &mut run.pending, name, args)
                            .await?
                    } else {
                        self.tools
                            .call_in_step(&ctx, &mut run.pending, name, args)
                            .await?
                    };
                    run.absorb(report.events)?;
                    let escalate = match report.outcome {
                        CallOutcome::Ok {
                            output, output_ref, ..
                        } => {
                            run.conversation.known_output(&output_ref, &output);
                            None
                        }
                        CallOutcome::Escalate {
                            reason,
                            consequence_tier,
                            action,
                            ..
                        } => Some((action, consequence_tier, reason)),
                        _ => None,
                    };
                    Got::Tool {
                        call_id: report.call_id,
                        escalate,
                    }
                }
                Next::OpenGate {
                    gate_id,
                    action,
                    tier,
                    reason,
                } => {
                    let tool = action["tool"].as_str().unwrap_or_default();
                    let contract = self.tools.contract(tool).map(|c| &**c);
                    let evidence_pack =
                        gates::evidence_pack(&run.events, &run.state, contract, &action, &reason);
                    let a = &strategy.approval;
                    run.record(Payload::GateRequested(GateRequested {
                        gate_id,
                        action,
                        consequence_tier: tier,
                        evidence_pack,
                        reason,
                        queue: a.queue.clone(),
                        deadline_ms: a.deadline_s.map(|s| s * 1000),
                        expire_after_ms: a.expire_after_s.map(|s| s * 1000),
                        during_call: None,
                        elicitation: None,
                    }))?;
                    run.commit(&*self.log, true).await?;
                    Got::Wake
                }
                Next::Distil => {
                    self.distil(run, strategy, model).await?;
                    Got::Distilled
                }
                Next::Finish { outcome, detail } => {
                    let totals = run.state.totals.clone();
                    let trace_id = run.state.trace_id.unwrap_or(keel_core::TraceId([1; 16]));
                    run.record(Payload::ExecFinished(ExecFinished {
                        outcome,
                        steps_n: totals.steps,
                        tokens: totals.tokens,
                        cost: totals.cost,
                        trace_id,
                        detail,
                    }))?;
                    run.commit(&*self.log, true).await?;
                    return Ok(run.state.clone());
                }
            };
        }
    }

    /// One catch-up read of the control stream per step (used by the step's tool calls too);
    /// none for an execution that has ended or waits, and no query when the step's own append
    /// already saw the stream where this process has folded it.
    async fn read_control(&self, run: &mut Run) -> Result<ControlState, RuntimeError> {
        let seen = run.control_seen.take();
        match &run.state.status {
            s if s.is_terminal() => Ok(ControlState::default()),
            ExecStatus::Suspended | ExecStatus::SuspendedAtGate { .. } => {
                Ok(ControlState::default())
            }
            _ => self.control.state_seen(seen).await,
        }
    }

    /// The distillation after an answer, a metered model call of its own: `model.called` /
    /// `model.responded` priced like any call (so `exec.finished`'s totals include it) and refused
    /// beforehand if its most possible cost could cross the cost budget; then the facts as
    /// `memory.written`, or `memory.distill_failed` saying why none (or no more) were written.
    /// Nothing here fails the execution: only an append to the spine itself can err.
    async fn distil(
        &self,
        run: &mut Run,
        strategy: &Strategy,
        model: &dyn ModelProvider,
    ) -> Result<(), RuntimeError> {
        let failed = |call_id: Option<String>, written: usize, reason: String| {
            Payload::DistillFailed(DistillFailed {
                call_id,
                written: u32::try_from(written).unwrap_or(u32::MAX),
                reason,
            })
        };
        let request = match crate::recall::distill_request(self, strategy, &run.events).await {
            Ok(Some(request)) => request,
            Ok(None) => return Ok(()),
            Err(e) => {
                let why = format!("the distillation request could not be built: {e}");
                return run.record(failed(None, 0, why));
            }
        };
        if let Some(why) =
            crate::estimate::refuse_model_call(&self.prices, &strategy.model, &run.state, &request)
        {
            return run.record(failed(None, 0, why));
        }
        let call_id = format!(
            "{}{}",
            crate::recall::DISTILL_CALL_PREFIX,
            uuid::Uuid::now_v7()
        );
        run.record(Payload::ModelCalled(ModelCalled {
            call_id: call_id.clone(),
            model: strategy.model.clone(),
            prompt_version: Some(crate::recall::DISTILL_PROMPT_VERSION.to_owned()),
            request_ref: None,
        }))?;
        let reply = match model.chat(&request).await {
            Ok(reply) => reply,
            Err(e) => {
                run.record(Payload::ModelResponded(ModelResponded {
                    call_id: call_id.clone(),
                    model: strategy.model.clone(),
                    tokens: Tokens::default(),
                    // As for the agent's own calls: the usage of a failed reply is not known.
                    cost: Cost::Unknown,
                    latency_ms: 0,
                    response_ref: None,
                    error: Some(e.to_string()),
                }))?;
                let why = format!("the distillation's model call failed: {e}");
                return run.record(failed(Some(call_id), 0, why));
            }
        };
        // The raw reply is kept like any other; a blob store that fails loses the raw bytes
        // only, not the call's metering or the answer.
        let stored = self
            .blobs
            .put_for_append(reply.raw.clone().into_bytes())
            .await;
        run.record(Payload::ModelResponded(ModelResponded {
            call_id: call_id.clone(),
            model: reply.model.clone(),
            tokens: Tokens {
                input: reply.usage.input,
                output: reply.usage.output,
            },
            cost: self.prices.cost(&strategy.model, &reply.usage),
            latency_ms: u64::try_from(reply.latency.as_millis()).unwrap_or(u64::MAX),
            response_ref: stored.as_ref().ok().map(ToString::to_string),
            error: None,
        }))?;
        if let Err(e) = stored {
            let why = format!("the distillation reply could not be stored: {e}");
            return run.record(failed(Some(call_id), 0, why));
        }
        let text = reply.text.as_deref().unwrap_or_default();
        let (written, failure) =
            crate::recall::store_facts(self, strategy, &run.state, &run.events, &reply.model, text)
                .await;
        let n = written.len();
        for p in written {
            run.record(p)?;
        }
        match failure {
            Some(why) => run.record(failed(Some(call_id), n, why)),
            None => Ok(()),
        }
    }
}
