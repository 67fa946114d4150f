//! The agent loop. Per step: `model.called`, `model.responded`, then either tool calls through
//! the contract layer (`plan.proposed`, `tool.called` / `tool.result` …) and `step.completed`, or
//! an answer that ends the execution with `exec.finished` and an outcome evaluated against the
//! strategy's success criteria. Limits (steps, cost, tokens), kill-switches and unrecoverable
//! errors end it with their own outcomes.
//!
//! The loop holds nothing the log does not: `drive` starts by folding the execution's events,
//! so a fresh worker resumes a crashed execution exactly where its log stops. A tool call that
//! was recorded as called but has no result is resolved through the idempotency ledger, never
//! blindly re-run.

use crate::control::{Control, Scope};
use crate::conversation;
use crate::error::RuntimeError;
use crate::gates;
use crate::strategy::{Criterion, Strategy};
use keel_core::control::{Autonomy, ControlState, autonomy, draw};
use keel_core::payload::*;
use keel_core::{
    CURRENT_SCHEMA_VERSION, Cost, Event, ExecId, ExecStatus, ExecutionState, TenantId, Tokens,
};
use keel_models::{ChatRequest, ModelProvider, PriceTable, ToolCall, ToolSpec};
use keel_spine::clock::{self, Clock};
use keel_spine::{BlobStore, EventLog, SpineError};
use keel_tools::{CallContext, CallOutcome, ToolRunner};
use serde_json::{Value, json};
use std::sync::Arc;

/// Malformed replies in a row after which the execution ends with outcome `error`.
const MAX_MALFORMED_IN_A_ROW: u32 = 3;

/// What became of a tool call the model asked for.
enum Flow {
    /// It ran (or was refused with an event); the step goes on.
    Done,
    /// A person decides first: open a gate for this action.
    Gate {
        action: Value,
        tier: u8,
        reason: String,
    },
}

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

/// One execution being driven: its events so far and their fold.
struct Run<'a> {
    agent: &'a Agent,
    every_step: bool,
    events: Vec<Event>,
    state: ExecutionState,
}

impl Run<'_> {
    fn exec_id(&self) -> Result<ExecId, RuntimeError> {
        self.state
            .exec_id
            .ok_or_else(|| RuntimeError::UnknownExecution("(not started)".into()))
    }

    /// Appends one event after the last and folds it in; durable per the strategy's mode.
    async fn append(&mut self, payload: Payload) -> Result<(), RuntimeError> {
        let exec_id = self.exec_id()?;
        let event = Event {
            event_id: clock::new_event_id(),
            exec_id,
            tenant: self
                .state
                .tenant
                .clone()
                .unwrap_or_else(|| TenantId("".into())),
            seq: self.state.last_seq + 1,
            ts: self.agent.clock.now(),
            trace_id: self.state.trace_id.unwrap_or(keel_core::TraceId([1; 16])),
            step_n: self.state.totals.steps,
            schema_version: CURRENT_SCHEMA_VERSION,
            payload,
        };
        let next = self.state.apply(&event)?;
        // The loop's own events wait for the disk only at its consequence boundaries; tool
        // intents are made durable by the tool layer's log (see `embedded::EffectBarrier`).
        let durable = match &event.payload {
            Payload::ExecFinished(_) | Payload::GateRequested(_) | Payload::ExecCancelled(_) => {
                true
            }
            Payload::StepCompleted(_) => self.every_step,
            _ => false,
        };
        let batch = std::slice::from_ref(&event);
        let appended = if durable {
            self.agent
                .log
                .append(exec_id, self.state.last_seq, batch)
                .await
        } else {
            let log = &self.agent.log;
            log.append_buffered(exec_id, self.state.last_seq, batch)
                .await
        };
        match appended {
            Ok(_) => {}
            Err(SpineError::Conflict { .. }) => {
                return Err(RuntimeError::Contended(exec_id.to_string()));
            }
            Err(e) => return Err(e.into()),
        }
        self.state = next;
        self.events.push(event);
        Ok(())
    }

    /// Folds in events another component (the tool runner) appended.
    fn absorb(&mut self, events: Vec<Event>) -> Result<(), RuntimeError> {
        for e in events {
            self.state.apply_mut(&e)?;
            self.events.push(e);
        }
        Ok(())
    }

    async fn finish(
        &mut self,
        outcome: Outcome,
        detail: Option<String>,
    ) -> Result<(), RuntimeError> {
        let totals = self.state.totals.clone();
        let trace_id = self.state.trace_id.unwrap_or(keel_core::TraceId([1; 16]));
        self.append(Payload::ExecFinished(ExecFinished {
            outcome,
            steps_n: totals.steps,
            tokens: totals.tokens,
            cost: totals.cost,
            trace_id,
            detail,
        }))
        .await
    }

    /// Opens a gate: `gate.requested` with its evidence pack, durable; the execution waits.
    async fn request_gate(
        &mut self,
        strategy: &Strategy,
        action: Value,
        tier: u8,
        reason: String,
    ) -> Result<(), RuntimeError> {
        let tool = action["tool"].as_str().unwrap_or_default();
        let contract = self.agent.tools.contract(tool).map(|c| &**c);
        let evidence_pack =
            gates::evidence_pack(&self.events, &self.state, contract, &action, &reason);
        let a = &strategy.approval;
        self.append(Payload::GateRequested(GateRequested {
            gate_id: uuid::Uuid::now_v7().to_string(),
            action,
            consequence_tier: tier,
            evidence_pack,
            reason,
            queue: a.queue.clone(),
            deadline_ms: a.deadline_s.map(|s| s * 1000),
            expire_after_ms: a.expire_after_s.map(|s| s * 1000),
        }))
        .await
    }

    /// Records a call the runtime refuses itself (not offered, killed, needs approval).
    async fn refuse(
        &mut self,
        call: &ToolCall,
        status: ToolStatus,
        why: String,
    ) -> Result<(), RuntimeError> {
        let call_id = uuid::Uuid::now_v7().to_string();
        self.append(Payload::ToolCalled(ToolCalled {
            call_id: call_id.clone(),
            tool: call.name.clone(),
            args: call.arguments.clone(),
            idempotency_key: None,
            est_cost: Cost::ZERO,
            attempt: 1,
        }))
        .await?;
        self.append(Payload::ToolResult(ToolResult {
            call_id,
            tool: call.name.clone(),
            status,
            output_ref: None,
            actual_cost: Cost::ZERO,
            latency_ms: 0,
            error_class: None,
            errors: vec![why],
        }))
        .await
    }
}

/// Why the execution's tenant or strategy is switched off, if it is.
fn killed(control: &ControlState, strategy: &Strategy, tenant: &str) -> Option<String> {
    match control.kill_reason(Scope::Tenant.as_str(), tenant, tenant) {
        Some(k) => Some(format!("tenant {tenant} is killed: {}", k.reason)),
        None => control
            .kill_reason(Scope::Strategy.as_str(), &strategy.name, tenant)
            .map(|k| format!("strategy {} is killed: {}", strategy.name, k.reason)),
    }
}

/// Why a call of `tool` may not run now: its tenant, strategy or the tool itself is switched off.
fn tool_killed(
    control: &ControlState,
    strategy: &Strategy,
    tenant: &str,
    tool: &str,
) -> Option<String> {
    killed(control, strategy, tenant).or_else(|| {
        control
            .kill_reason(Scope::Tool.as_str(), tool, tenant)
            .map(|k| format!("kill-switch: tool {tool} is off: {}", k.reason))
    })
}

fn over_budget(state: &ExecutionState) -> Option<String> {
    let b = &state.budget;
    let t = &state.totals;
    if let (Some(max), Cost::Known(spent)) = (b.max_cost_micros, t.cost)
        && spent >= max
    {
        return Some(format!("spent {spent} µUSD of a {max} µUSD budget"));
    }
    let tokens = t.tokens.input + t.tokens.output;
    if let Some(max) = b.max_tokens
        && tokens >= max
    {
        return Some(format!("used {tokens} tokens of a {max} token budget"));
    }
    None
}

/// True if any of the strategy's criteria holds for this log and answer.
pub fn succeeded(strategy: &Strategy, events: &[Event], answer: &str) -> bool {
    strategy.success.iter().any(|c| match c {
        Criterion::AnswerMatches(re) => re.is_match(answer),
        Criterion::ToolStatus { tool, status } => events.iter().any(|e| match &e.payload {
            Payload::ToolResult(r) => {
                r.tool == *tool
                    && serde_json::to_value(r.status)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .as_deref()
                        == Some(status.as_str())
            }
            _ => false,
        }),
    })
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

    /// Drives an execution from wherever its log stops until it ends (or suspends). Returns its
    /// final state. A panic in a step does not escape and is never retried: the failed step is
    /// recorded and the execution ends with outcome `error` naming the panic (see
    /// [`crate::worker::end_after_panic`]).
    pub async fn drive(
        &self,
        strategy: &Strategy,
        model: &dyn ModelProvider,
        exec_id: ExecId,
    ) -> Result<ExecutionState, RuntimeError> {
        use futures::FutureExt;
        let steps = std::panic::AssertUnwindSafe(self.drive_steps(strategy, model, exec_id));
        match steps.catch_unwind().await {
            Ok(result) => result,
            Err(panic) => {
                let why = crate::worker::panic_message(&*panic);
                crate::worker::end_after_panic_guarded(self, exec_id, &why).await
            }
        }
    }

    async fn drive_steps(
        &self,
        strategy: &Strategy,
        model: &dyn ModelProvider,
        exec_id: ExecId,
    ) -> Result<ExecutionState, RuntimeError> {
        let events = self.log.read(exec_id, 1).await?;
        if events.is_empty() {
            return Err(RuntimeError::UnknownExecution(exec_id.to_string()));
        }
        let state = ExecutionState::fold(&events)?;
        let mut run = Run {
            agent: self,
            every_step: strategy.durability == crate::strategy::Durability::EveryStep,
            events,
            state,
        };
        let tools = self.tool_specs(strategy);
        let mut malformed_in_a_row = 0;
        let mut outputs = conversation::OutputCache::new();
        // A crash during the distillation after an answer: its call is closed as failed, never
        // answered with the agent's own request below. The answer itself is only in the model's
        // raw reply, so the loop then asks for it again, as after any crash before `exec.finished`.
        if let Some(call_id) = run.state.pending_model_call.clone()
            && crate::recall::is_distill_call(&call_id)
            && !run.state.status.is_terminal()
        {
            let why = "no reply: the worker stopped during the distillation".to_owned();
            run.append(Payload::ModelResponded(ModelResponded {
                call_id: call_id.clone(),
                model: strategy.model.clone(),
                tokens: Tokens::default(),
                // Unmetered, like an agent's call lost with its worker (asked again under the
                // same id): an unknown cost here would make every later budget check refuse.
                cost: Cost::ZERO,
                latency_ms: 0,
                response_ref: None,
                error: Some(why.clone()),
            }))
            .await?;
            run.append(Payload::DistillFailed(DistillFailed {
                call_id: Some(call_id),
                written: 0,
                reason: why,
            }))
            .await?;
        }
        // A crash can cut a step after the model answered or after a tool returned; close that
        // step so the next model call starts a new one and sees what the cut step did.
        let cut = run.events.last().is_some_and(|e| {
            matches!(
                e.payload,
                Payload::ModelResponded(_) | Payload::PlanProposed(_) | Payload::ToolResult(_)
            )
        });
        if cut && !run.state.status.is_terminal() && run.state.pending_tool_call.is_none() {
            run.append(Payload::StepCompleted(StepCompleted {
                summary: Some("resumed: closing a step cut short by a crash".into()),
            }))
            .await?;
        }
        loop {
            match &run.state.status {
                s if s.is_terminal() => return Ok(run.state),
                ExecStatus::Suspended | ExecStatus::SuspendedAtGate { .. } => return Ok(run.state),
                _ => {}
            }
            if run.state.pending_tool_call.is_some() {
                // A crash between tool.called and tool.result: the ledger decides, not a re-run.
                if let Some(report) = self.tools.resolve_pending(&run.state).await? {
                    run.absorb(report.events)?;
                }
                run.append(Payload::StepCompleted(StepCompleted {
                    summary: Some("resumed: resolved the in-flight tool call".into()),
                }))
                .await?;
                continue;
            }
            if let Some(Payload::GateDecided(d)) = run.events.last().map(|e| &e.payload) {
                let d = d.clone();
                // Read after the decision, never before: a switch set while the gate waited (by
                // any process) stops the approved action.
                let control = self.control.state().await?;
                self.carry_out(&mut run, strategy, &control, d).await?;
                continue;
            }
            let tenant = run.state.tenant.clone().map(|t| t.0).unwrap_or_default();
            // One catch-up read of the control stream per step, used by the step's tool calls too.
            let control = self.control.state().await?;
            if let Some(why) = killed(&control, strategy, &tenant) {
                run.finish(Outcome::Killed, Some(why)).await?;
                continue;
            }
            if run.state.totals.steps >= strategy.max_steps {
                let why = format!("reached max_steps {}", strategy.max_steps);
                run.finish(Outcome::MaxSteps, Some(why)).await?;
                continue;
            }
            if let Some(why) = over_budget(&run.state) {
                run.finish(Outcome::BudgetExhausted, Some(why)).await?;
                continue;
            }

            if !self.pace.is_zero() {
                tokio::time::sleep(self.pace).await;
            }
            if let Some(p) =
                crate::recall::before_first_call(self, strategy, &run.state, &run.events).await?
            {
                run.append(p).await?;
            }
            let messages =
                conversation::rebuild(&strategy.prompt, &run.events, &*self.blobs, &mut outputs)
                    .await?;
            let request = ChatRequest {
                model: strategy.model.clone(),
                messages,
                tools: tools.clone(),
                max_tokens: strategy.max_tokens,
            };
            // The call that would cross the budget is never made: its most possible cost is
            // checked first (see `crate::estimate`).
            if let Some(why) = crate::estimate::refuse_model_call(
                &self.prices,
                &strategy.model,
                &run.state,
                &request,
            ) {
                run.finish(Outcome::BudgetExhausted, Some(why)).await?;
                continue;
            }
            let call_id = match run.state.pending_model_call.clone() {
                // A crash while the model was thinking: ask again under the same call.
                Some(id) => id,
                None => {
                    let id = format!("model-{}", uuid::Uuid::now_v7());
                    run.append(Payload::ModelCalled(ModelCalled {
                        call_id: id.clone(),
                        model: strategy.model.clone(),
                        prompt_version: Some(strategy.prompt_version.clone()),
                        request_ref: None,
                    }))
                    .await?;
                    id
                }
            };
            match model.chat(&request).await {
                Ok(reply) => {
                    malformed_in_a_row = 0;
                    let response_ref = self.blobs.put(reply.raw.clone().into_bytes()).await?;
                    run.append(Payload::ModelResponded(ModelResponded {
                        call_id,
                        model: reply.model.clone(),
                        tokens: Tokens {
                            input: reply.usage.input,
                            output: reply.usage.output,
                        },
                        // Priced by the strategy's model name: vendors answer with dated names.
                        cost: self.prices.cost(&strategy.model, &reply.usage),
                        latency_ms: reply.latency.as_millis() as u64,
                        response_ref: Some(response_ref.to_string()),
                        error: None,
                    }))
                    .await?;
                    if reply.tool_calls.is_empty() {
                        let answer = reply.text.unwrap_or_default();
                        run.append(Payload::StepCompleted(StepCompleted {
                            summary: Some("answered".into()),
                        }))
                        .await?;
                        let outcome = if succeeded(strategy, &run.events, &answer) {
                            Outcome::Success
                        } else {
                            Outcome::Failure
                        };
                        self.distil(&mut run, strategy, model).await?;
                        run.finish(outcome, Some(answer)).await?;
                        continue;
                    }
                    if let Some(text) = &reply.text {
                        run.append(Payload::PlanProposed(PlanProposed {
                            steps: text.lines().map(str::to_owned).collect(),
                            model: reply.model.clone(),
                            prompt_version: strategy.prompt_version.clone(),
                        }))
                        .await?;
                    }
                    let names: Vec<String> =
                        reply.tool_calls.iter().map(|c| c.name.clone()).collect();
                    let mut gate = None;
                    for (i, call) in reply.tool_calls.iter().enumerate() {
                        if let Flow::Gate {
                            action,
                            tier,
                            reason,
                        } = self.call_tool(&mut run, strategy, &control, call).await?
                        {
                            // Nothing may follow the gate until it is decided: the step's later
                            // calls are refused now, and the model can ask again afterwards.
                            for later in &reply.tool_calls[i + 1..] {
                                let why = format!(
                                    "not run: {} waits for an approval decision; ask again after it",
                                    call.name
                                );
                                run.refuse(later, ToolStatus::Refused, why).await?;
                            }
                            gate = Some((action, tier, reason));
                            break;
                        }
                    }
                    match gate {
                        Some((action, tier, reason)) => {
                            run.request_gate(strategy, action, tier, reason).await?;
                        }
                        None => {
                            run.append(Payload::StepCompleted(StepCompleted {
                                summary: Some(format!("called {}", names.join(", "))),
                            }))
                            .await?;
                        }
                    }
                }
                Err(e) => {
                    let recoverable = e.is_recoverable();
                    run.append(Payload::ModelResponded(ModelResponded {
                        call_id,
                        model: strategy.model.clone(),
                        tokens: Tokens::default(),
                        // The provider's usage of a reply we could not parse is not known.
                        cost: Cost::Unknown,
                        latency_ms: 0,
                        response_ref: None,
                        error: Some(e.to_string()),
                    }))
                    .await?;
                    if !recoverable {
                        run.finish(Outcome::Error, Some(e.to_string())).await?;
                        continue;
                    }
                    malformed_in_a_row += 1;
                    run.append(Payload::StepCompleted(StepCompleted {
                        summary: Some("malformed model reply; asking again".into()),
                    }))
                    .await?;
                    if malformed_in_a_row >= MAX_MALFORMED_IN_A_ROW {
                        let why =
                            format!("{malformed_in_a_row} malformed replies in a row; last: {e}");
                        run.finish(Outcome::Error, Some(why)).await?;
                    }
                }
            }
        }
    }

    /// The distillation after an answer, a metered model call of its own: `model.called` /
    /// `model.responded` priced like any call (so `exec.finished`'s totals include it) and refused
    /// beforehand if its most possible cost could cross the cost budget; then the facts as
    /// `memory.written`, or `memory.distill_failed` saying why none (or no more) were written.
    /// Nothing here fails the execution: only an append to the spine itself can err.
    async fn distil(
        &self,
        run: &mut Run<'_>,
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
                return run.append(failed(None, 0, why)).await;
            }
        };
        if let Some(why) =
            crate::estimate::refuse_model_call(&self.prices, &strategy.model, &run.state, &request)
        {
            return run.append(failed(None, 0, why)).await;
        }
        let call_id = format!(
            "{}{}",
            crate::recall::DISTILL_CALL_PREFIX,
            uuid::Uuid::now_v7()
        );
        run.append(Payload::ModelCalled(ModelCalled {
            call_id: call_id.clone(),
            model: strategy.model.clone(),
            prompt_version: Some(crate::recall::DISTILL_PROMPT_VERSION.to_owned()),
            request_ref: None,
        }))
        .await?;
        let reply = match model.chat(&request).await {
            Ok(reply) => reply,
            Err(e) => {
                run.append(Payload::ModelResponded(ModelResponded {
                    call_id: call_id.clone(),
                    model: strategy.model.clone(),
                    tokens: Tokens::default(),
                    // As for the agent's own calls: the usage of a failed reply is not known.
                    cost: Cost::Unknown,
                    latency_ms: 0,
                    response_ref: None,
                    error: Some(e.to_string()),
                }))
                .await?;
                let why = format!("the distillation's model call failed: {e}");
                return run.append(failed(Some(call_id), 0, why)).await;
            }
        };
        // The raw reply is kept like any other; a blob store that fails loses the raw bytes
        // only, not the call's metering or the answer.
        let stored = self.blobs.put(reply.raw.clone().into_bytes()).await;
        run.append(Payload::ModelResponded(ModelResponded {
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
        }))
        .await?;
        if let Err(e) = stored {
            let why = format!("the distillation reply could not be stored: {e}");
            return run.append(failed(Some(call_id), 0, why)).await;
        }
        let text = reply.text.as_deref().unwrap_or_default();
        let (written, failure) =
            crate::recall::store_facts(self, strategy, &run.state, &run.events, &reply.model, text)
                .await;
        let n = written.len();
        for p in written {
            run.append(p).await?;
        }
        match failure {
            Some(why) => run.append(failed(Some(call_id), n, why)).await,
            None => Ok(()),
        }
    }

    /// `control` is the control state read at the start of this step.
    async fn call_tool(
        &self,
        run: &mut Run<'_>,
        strategy: &Strategy,
        control: &ControlState,
        call: &ToolCall,
    ) -> Result<Flow, RuntimeError> {
        if !strategy.tools.contains(&call.name) {
            let why = format!(
                "tool {:?} is not offered by strategy {}",
                call.name, strategy.name
            );
            run.refuse(call, ToolStatus::Rejected, why).await?;
            return Ok(Flow::Done);
        }
        let tenant = run.state.tenant.clone().map(|t| t.0).unwrap_or_default();
        if let Some(k) = control.kill_reason(Scope::Tool.as_str(), &call.name, &tenant) {
            let why = format!("kill-switch: tool {} is off: {}", call.name, k.reason);
            run.refuse(call, ToolStatus::Refused, why).await?;
            return Ok(Flow::Done);
        }
        let mut sampled = None;
        // Arguments that break the input schema never reach a gate: the contract layer rejects
        // them with an event, before any adapter.
        if let Some(c) = self.tools.contract(&call.name)
            && c.input.errors(&call.arguments).is_empty()
        {
            let ceiling =
                control.max_autonomous_tier(&strategy.version, strategy.max_autonomous_tier);
            let review = &strategy.approval;
            // The draw is keyed by the call's position in the log, so a resumed or replayed
            // execution samples the same calls.
            let key = format!("{}:{}:{}", run.exec_id()?, run.state.last_seq, call.name);
            match autonomy(c.consequence_tier, ceiling, review.review_rate, draw(&key)) {
                Autonomy::Gate { reason } => {
                    let key = keel_tools::invoke::idempotency_key(
                        c,
                        &call.arguments,
                        &run.exec_id()?.to_string(),
                        &tenant,
                    )
                    .ok()
                    .flatten();
                    return Ok(Flow::Gate {
                        action: json!({
                            "tool": call.name,
                            "args": call.arguments,
                            "idempotency_key": key,
                        }),
                        tier: c.consequence_tier,
                        reason,
                    });
                }
                Autonomy::Reviewed { sampled: true } => {
                    sampled = Some((c.consequence_tier, review.review_rate))
                }
                _ => {}
            }
        }
        let ctx = CallContext::from_state(&run.state)?;
        let report = self
            .tools
            .call(&ctx, &call.name, call.arguments.clone())
            .await?;
        run.absorb(report.events)?;
        if let CallOutcome::Escalate {
            reason,
            consequence_tier,
            action,
            ..
        } = report.outcome
        {
            return Ok(Flow::Gate {
                action,
                tier: consequence_tier,
                reason: format!("escalated by the tool's failure policy: {reason}"),
            });
        }
        if let Some((consequence_tier, rate)) = sampled {
            run.append(Payload::ReviewSampled(ReviewSampled {
                call_id: report.call_id.clone(),
                tool: call.name.clone(),
                consequence_tier,
                rate,
            }))
            .await?;
        }
        Ok(Flow::Done)
    }

    /// Acts on a gate's decision: an approved action runs (with its idempotency key, through the
    /// contract layer); a rejected or expired one is recorded as refused with the approver's
    /// reason, which is what the model sees next.
    ///
    /// `control` is read after the decision: an approved action whose tenant, strategy or tool
    /// was switched off meanwhile does not run; it is recorded as refused with the switch's
    /// reason (and a tenant or strategy switch then ends the execution `killed`).
    async fn carry_out(
        &self,
        run: &mut Run<'_>,
        strategy: &Strategy,
        control: &ControlState,
        d: GateDecided,
    ) -> Result<(), RuntimeError> {
        let action = run
            .events
            .iter()
            .rev()
            .find_map(|e| match &e.payload {
                Payload::GateRequested(g) if g.gate_id == d.gate_id => Some(g.action.clone()),
                _ => None,
            })
            .ok_or_else(|| gates::GateError::Unknown(d.gate_id.clone()))?;
        let call = ToolCall {
            id: format!("gate-{}", d.gate_id),
            name: action["tool"].as_str().unwrap_or_default().to_owned(),
            arguments: action["args"].clone(),
        };
        let tenant = run.state.tenant.clone().map(|t| t.0).unwrap_or_default();
        let summary = match d.verdict {
            Verdict::Approve => match tool_killed(control, strategy, &tenant, &call.name) {
                Some(why) => {
                    run.refuse(&call, ToolStatus::Refused, why.clone()).await?;
                    format!("approved by {} but not run: {why}", d.approver)
                }
                None => {
                    let ctx = CallContext::from_state(&run.state)?;
                    let report = self
                        .tools
                        .call_after_gate(&ctx, &call.name, call.arguments.clone())
                        .await?;
                    run.absorb(report.events)?;
                    format!("approved by {}: called {}", d.approver, call.name)
                }
            },
            verdict => {
                let why = match verdict {
                    Verdict::Expired => format!("expired at the gate: {}", d.reason),
                    _ => format!("rejected at the gate by {}: {}", d.approver, d.reason),
                };
                run.refuse(&call, ToolStatus::Rejected, why).await?;
                format!("{} at the gate: {}", verdict.as_str(), call.name)
            }
        };
        run.append(Payload::StepCompleted(StepCompleted {
            summary: Some(summary),
        }))
        .await
    }
}
