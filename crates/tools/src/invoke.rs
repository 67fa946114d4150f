//! The one entry point for every tool call: [`ToolRunner::call`]. It performs the contract and
//! records it on the spine:
//!
//! 1. look the tool up; validate the model's arguments against the input schema
//!    (→ `rejected`, nothing runs);
//! 2. derive the idempotency key from the contract's key fields;
//! 3. check the cost budget and the tenant's rate, decided in the shared store (→ `refused`,
//!    nothing runs);
//! 4. append `tool.called` (durable), then mark the key `started` in the ledger (durable) — or
//!    answer from the ledger if the key already finished;
//! 5. run the adapter under the contract's timeout; retry declared classes with backoff and the
//!    same key, each attempt its own `tool.called`/`tool.result` pair;
//! 6. validate the output against the output schema (→ `invalid_output`), store it in the blob
//!    store, record it in the ledger, append `tool.result {ok, output_ref}`;
//! 7. on exhaustion: compensate (reversible tools), then escalate to a gate or fail, per policy.
//!
//! After a crash, [`ToolRunner::resolve_pending`] settles the call left without a result.

use crate::adapter::{Adapter, AdapterCall, AdapterError};
use crate::budget::{Ride, check_cost};
use crate::contract::{Contract, ErrorClass, IdempotencyMode, KeyField, OnExhaust, SideEffect};
use crate::error::ToolError;
use crate::ledger::{Begin, LedgerOutcome, LedgerStart, LedgerState};
use crate::record::{Recorder, ResultFields};
use crate::runner::{CallContext, ToolRunner};
use backon::BackoffBuilder;
use keel_core::payload::{ToolCalled, ToolStatus};
use keel_core::{Cost, Event, Payload};
use keel_spine::side::SideAnswer;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Instant;

/// How a call ended, for the runtime's next decision.
#[derive(Clone, Debug, PartialEq)]
pub enum CallOutcome {
    /// The tool ran (or the ledger already had its result) and the output passed its schema.
    Ok {
        /// The validated output.
        output: Value,
        /// Its blob.
        output_ref: String,
        /// True if answered from the idempotency ledger without calling the tool.
        from_ledger: bool,
    },
    /// The arguments failed the input schema (or named no tool); nothing ran.
    Rejected {
        /// Every reason, for the next prompt.
        errors: Vec<String>,
    },
    /// The tool ran but its output failed the output schema; nothing downstream may use it.
    InvalidOutput {
        /// Every reason.
        errors: Vec<String>,
        /// The offending output's blob (for audit).
        output_ref: String,
    },
    /// A budget refused the call; nothing ran.
    Refused {
        /// Why.
        reason: String,
    },
    /// The call failed and the policy says fail.
    Failed {
        /// Class of the last failure.
        error_class: ErrorClass,
        /// What happened, per attempt.
        errors: Vec<String>,
        /// True if the compensation tool ran successfully.
        compensated: bool,
    },
    /// A person must decide: the runtime turns this into a `gate.requested`.
    Escalate {
        /// Why.
        reason: String,
        /// Consequence tier from the contract.
        consequence_tier: u8,
        /// The exact action (tool, args, idempotency key) the approver decides on.
        action: Value,
        /// True if the compensation tool ran successfully.
        compensated: bool,
    },
}

/// The result of [`ToolRunner::call`]: the outcome and what was recorded.
#[derive(Clone, Debug)]
pub struct CallReport {
    /// How the call ended.
    pub outcome: CallOutcome,
    /// The call id (every attempt of the call shares it).
    pub call_id: String,
    /// The idempotency key, if the tool has one.
    pub idempotency_key: Option<String>,
    /// Attempts made (tool.called events for this call, compensation excluded).
    pub attempts: u32,
    /// The execution's last seq after the call.
    pub last_seq: u64,
    /// Every event appended, in order (fold them into the execution's state).
    pub events: Vec<Event>,
}

/// Derives the idempotency key: `<tool>:<32 hex of sha256 over the key fields' values>`.
/// `None` when the tool has no key (or an optional key's fields are absent); `Err(field)` when a
/// required key field is missing from the arguments.
pub fn idempotency_key(
    contract: &Contract,
    args: &Value,
    exec_id: &str,
    tenant: &str,
) -> Result<Option<String>, String> {
    if contract.idempotency.mode == IdempotencyMode::None {
        return Ok(None);
    }
    let mut parts = Vec::with_capacity(contract.idempotency.key.len());
    for f in &contract.idempotency.key {
        parts.push(match f {
            KeyField::ExecId => Value::String(exec_id.to_owned()),
            KeyField::Tenant => Value::String(tenant.to_owned()),
            KeyField::Arg(name) => match args.get(name) {
                Some(v) => v.clone(),
                None if contract.idempotency.mode == IdempotencyMode::Optional => return Ok(None),
                None => return Err(name.clone()),
            },
        });
    }
    // serde_json's maps are sorted, so equal values always serialise to equal bytes.
    let canonical = serde_json::to_string(&json!([contract.name, parts])).unwrap_or_default();
    // The first 16 bytes, as 32 hex digits.
    let digest = hex::encode(&Sha256::digest(canonical.as_bytes())[..16]);
    Ok(Some(format!("{}:{digest}", contract.name)))
}

/// The state of one call as it moves through attempts.
pub(crate) struct Call {
    pub contract: Arc<Contract>,
    pub adapter: Arc<dyn Adapter>,
    pub called: ToolCalled,
    pub errors: Vec<String>,
}

impl ToolRunner {
    /// Performs `tool` with the model-proposed `args` for the execution at `ctx`, recording every
    /// step on the spine. Expected failures are outcomes, not errors; `Err` means the contract
    /// layer itself could not work (the spine, the ledger or the blob store failed, or another
    /// writer moved the execution on: `SpineError::Conflict`).
    pub async fn call(
        &self,
        ctx: &CallContext,
        tool: &str,
        args: Value,
    ) -> Result<CallReport, ToolError> {
        let mut rec = self.recorder(ctx);
        let budget = (ctx.spent, ctx.max_cost_micros);
        let outcome = self.call_with(&mut rec, budget, tool, args, true).await?;
        Ok(outcome.into_report(rec))
    }

    /// Like [`ToolRunner::call`], inside a step the caller commits itself: `held` are the step's
    /// events not yet on the spine (they end at `ctx.last_seq`). They go to the spine with the
    /// call's first barrier (the durable intent of a call that may act, or that holds an
    /// idempotency key) in one batch; a call that needs no barrier (read-only, without a key)
    /// appends nothing and leaves its events in `held` too, for the caller's commit. The
    /// report's `events` are all the call's events, held or not.
    pub async fn call_in_step(
        &self,
        ctx: &CallContext,
        held: &mut Vec<Event>,
        tool: &str,
        args: Value,
    ) -> Result<CallReport, ToolError> {
        let mut rec = self.recorder(ctx).holding(held);
        let budget = (ctx.spent, ctx.max_cost_micros);
        let outcome = self.call_with(&mut rec, budget, tool, args, true).await?;
        Ok(outcome.into_report(rec))
    }

    pub(crate) async fn call_with(
        &self,
        rec: &mut Recorder<'_>,
        (spent, max_cost): (Cost, Option<u64>),
        tool: &str,
        args: Value,
        allow_compensation: bool,
    ) -> Result<Partial, ToolError> {
        let call_id = uuid::Uuid::now_v7().to_string();
        let mut called = ToolCalled {
            call_id: call_id.clone(),
            tool: tool.to_owned(),
            args,
            idempotency_key: None,
            est_cost: Cost::ZERO,
            attempt: 1,
        };
        let Some((contract, adapter)) = self.lookup(tool) else {
            let errors = vec![format!("no tool named {tool:?} is registered")];
            return self
                .end_before_run(rec, called, ToolStatus::Rejected, errors)
                .await;
        };
        called.est_cost = contract.budgets.cost_est;
        called.args = contract
            .input
            .without_optional_nulls(std::mem::take(&mut called.args));
        let errors = contract.input.errors(&called.args);
        if !errors.is_empty() {
            return self
                .end_before_run(rec, called, ToolStatus::Rejected, errors)
                .await;
        }
        let exec = rec.exec_id().to_string();
        match idempotency_key(&contract, &called.args, &exec, rec.tenant().as_str()) {
            Ok(k) => called.idempotency_key = k,
            Err(field) => {
                let errors = vec![format!(
                    "$.{field}: required for the idempotency key but missing"
                )];
                return self
                    .end_before_run(rec, called, ToolStatus::Rejected, errors)
                    .await;
            }
        }
        if let Err(reason) = check_cost(spent, contract.budgets.cost_est, max_cost) {
            return self
                .end_before_run(rec, called, ToolStatus::Refused, vec![reason])
                .await;
        }
        // A side effect's intent is durable before anything can act; a read-only call's intent
        // is written with its result (one commit instead of two). The intent's append carries
        // the rate take and the ledger's `started` mark when they are side writes of the spine:
        // one commit for all three.
        let needs_barrier = barrier(&contract, &called);
        let rate = contract.budgets.rate_per_tenant;
        let now_us = rec.clock().now().timestamp_micros();
        let tenant = rec.tenant().as_str().to_owned();
        let mut side = Vec::new();
        // The rate whose take rides in the intent's append (none when the store's handle already
        // holds a permit of a block it took).
        let mut carried = None;
        if let Some(rate) = rate {
            if needs_barrier && self.rates_ride {
                if let Ride::Carry(take) = self.rates.ride(tool, &tenant, rate, now_us) {
                    side.push(take);
                    carried = Some(rate);
                }
            } else if let Err(reason) = self.rates.take(tool, &tenant, rate, now_us).await? {
                return self
                    .end_before_run(rec, called, ToolStatus::Refused, vec![reason])
                    .await;
            }
        }
        let key = called.idempotency_key.clone();
        let now = rec.clock().now().to_rfc3339();
        let start = key.as_deref().map(|key| LedgerStart {
            tenant: &tenant,
            key,
            tool,
            exec_id: &exec,
            call_id: &call_id,
            now: &now,
        });
        // A key always makes a barrier, so its `started` mark can ride in the intent's append.
        let mut begin_rides = needs_barrier && self.ledger_rides && start.is_some();
        if let Some(start) = start.as_ref().filter(|_| begin_rides) {
            side.push(crate::ledger::begin_write(start));
        }
        let mut answers = Vec::new().into_iter();
        if needs_barrier {
            answers = rec
                .append_barrier_with(vec![Payload::ToolCalled(called.clone())], side)
                .await?
                .into_iter();
        } else {
            rec.defer(Payload::ToolCalled(called.clone()));
        }
        if let Some(rate) = carried {
            let admitted = answers.next() == Some(SideAnswer::Admitted);
            // A refused take skipped the begin after it; a block's refusal may still leave one
            // permit (taken on its own), and then the key begins on its own too.
            begin_rides &= admitted;
            let decided = self
                .rates
                .ridden(tool, &tenant, rate, now_us, admitted)
                .await?;
            if let Err(reason) = decided {
                // The intent is on the spine; its result says why nothing ran.
                let result = Recorder::result(
                    &called,
                    ResultFields::nothing_ran(ToolStatus::Refused, vec![reason.clone()]),
                );
                rec.append(vec![result]).await?;
                return Ok(Partial {
                    outcome: CallOutcome::Refused { reason },
                    called,
                    attempts: 1,
                });
            }
        }
        let mut call = Call {
            contract,
            adapter,
            called,
            errors: Vec::new(),
        };
        if let Some(start) = start {
            let begin = if begin_rides {
                crate::ledger::begin_of(answers.next())?
            } else {
                self.ledger.begin(&start).await?
            };
            if let Begin::Existing(entry) = begin
                && let Some(done) = self.answer_from_ledger(rec, &mut call, entry).await?
            {
                return Ok(done);
            }
        }
        self.attempts(rec, call, allow_compensation).await
    }

    /// Records a call that ends before any adapter runs (rejected, refused).
    async fn end_before_run(
        &self,
        rec: &mut Recorder<'_>,
        called: ToolCalled,
        status: ToolStatus,
        errors: Vec<String>,
    ) -> Result<Partial, ToolError> {
        let result = Recorder::result(&called, ResultFields::nothing_ran(status, errors.clone()));
        rec.append(vec![Payload::ToolCalled(called.clone()), result])
            .await?;
        let outcome = match status {
            ToolStatus::Refused => CallOutcome::Refused {
                reason: errors.join("; "),
            },
            _ => CallOutcome::Rejected { errors },
        };
        Ok(Partial {
            outcome,
            called,
            attempts: 1,
        })
    }

    /// A key found in the ledger: a finished one is answered from it; a started one (outcome
    /// unknown) is repeated only if the adapter deduplicates on the key, else escalated.
    /// `Ok(None)`: go on and call the adapter (with the same key).
    pub(crate) async fn answer_from_ledger(
        &self,
        rec: &mut Recorder<'_>,
        call: &mut Call,
        entry: crate::ledger::LedgerEntry,
    ) -> Result<Option<Partial>, ToolError> {
        match (entry.state, entry.outcome) {
            (LedgerState::Finished, Some(o)) => {
                let output = match &o.output_ref {
                    Some(r) => {
                        let bytes = self.blobs.get(&r.parse()?).await?;
                        serde_json::from_slice(&bytes).unwrap_or(Value::Null)
                    }
                    None => Value::Null,
                };
                let result = Recorder::result(
                    &call.called,
                    ResultFields {
                        status: o.status,
                        output_ref: o.output_ref.clone(),
                        // Nothing ran now; the first call was already paid for.
                        actual_cost: Cost::ZERO,
                        latency_ms: 0,
                        error_class: None,
                        errors: vec![format!(
                            "answered from the idempotency ledger (first call {} of execution {})",
                            entry.call_id, entry.exec_id
                        )],
                    },
                );
                rec.append(vec![result]).await?;
                let outcome = match o.status {
                    ToolStatus::InvalidOutput => CallOutcome::InvalidOutput {
                        errors: call.contract.output.errors(&output),
                        output_ref: o.output_ref.unwrap_or_default(),
                    },
                    _ => CallOutcome::Ok {
                        output,
                        output_ref: o.output_ref.unwrap_or_default(),
                        from_ledger: true,
                    },
                };
                Ok(Some(Partial {
                    outcome,
                    called: call.called.clone(),
                    attempts: call.called.attempt,
                }))
            }
            _ if call.adapter.honours_idempotency_key() => Ok(None),
            _ => {
                let reason = format!(
                    "an earlier call with idempotency key {} (call {} of execution {}) started and never finished; its outcome is unknown and {} cannot deduplicate, so a person must decide",
                    call.called.idempotency_key.as_deref().unwrap_or(""),
                    entry.call_id,
                    entry.exec_id,
                    call.contract.adapter.kind()
                );
                let result = Recorder::result(
                    &call.called,
                    ResultFields {
                        status: ToolStatus::Error,
                        output_ref: None,
                        actual_cost: Cost::ZERO,
                        latency_ms: 0,
                        error_class: Some(ErrorClass::Interrupted.as_str().into()),
                        errors: vec![reason.clone()],
                    },
                );
                rec.append(vec![result]).await?;
                Ok(Some(Partial {
                    outcome: escalate(&call.contract, &call.called, reason, false),
                    called: call.called.clone(),
                    attempts: call.called.attempt,
                }))
            }
        }
    }

    /// Runs attempts from `call.called.attempt` on; that attempt's `tool.called` is already
    /// appended.
    pub(crate) async fn attempts(
        &self,
        rec: &mut Recorder<'_>,
        mut call: Call,
        allow_compensation: bool,
    ) -> Result<Partial, ToolError> {
        let policy = call.contract.failure_policy.clone();
        let mut delays = backon::ExponentialBuilder::default()
            .with_min_delay(policy.backoff.initial)
            .with_max_delay(policy.backoff.max)
            .with_factor(policy.backoff.factor as f32)
            .with_jitter()
            .without_max_times()
            .build();
        loop {
            let started = Instant::now();
            let attempt = AdapterCall {
                tool: &call.called.tool,
                args: &call.called.args,
                idempotency_key: call.called.idempotency_key.as_deref(),
                attempt: call.called.attempt,
                elicit: None,
            };
            let ran = self.run_attempt(rec, &call, attempt).await?;
            let latency_ms = started.elapsed().as_millis() as u64;
            let err = match ran {
                Ok(output) => return self.finish_ran(rec, call, output, latency_ms).await,
                Err(e) => e,
            };
            call.errors.push(format!(
                "attempt {}: {}: {}",
                call.called.attempt,
                err.class.as_str(),
                err.message
            ));
            let result = Recorder::result(
                &call.called,
                ResultFields {
                    status: ToolStatus::Error,
                    output_ref: None,
                    actual_cost: call.contract.budgets.cost_est,
                    latency_ms,
                    error_class: Some(err.class.as_str().into()),
                    errors: vec![err.message.clone()],
                },
            );
            let retry =
                policy.retryable.contains(&err.class) && call.called.attempt < policy.max_attempts;
            if retry {
                rec.append(vec![result]).await?;
                let delay = delays.next().unwrap_or(policy.backoff.max);
                tokio::time::sleep(delay).await;
                call.called.attempt += 1;
                if barrier(&call.contract, &call.called) {
                    rec.append_barrier(vec![Payload::ToolCalled(call.called.clone())])
                        .await?;
                } else {
                    rec.defer(Payload::ToolCalled(call.called.clone()));
                }
                continue;
            }
            rec.append(vec![result]).await?;
            return self
                .exhausted(rec, call, err.class, allow_compensation)
                .await;
        }
    }

    /// Runs one attempt under the contract's timeout. Under `elicitation: gate` the server's
    /// questions are taken meanwhile: each opens a gate during the call (through the runtime's
    /// [`crate::elicit::ElicitationGates`]) and the time a person takes is not counted against
    /// the timeout, which bounds the tool's own work (the gate's `expire_after_s` bounds the
    /// person's).
    async fn run_attempt(
        &self,
        rec: &mut Recorder<'_>,
        call: &Call,
        attempt: AdapterCall<'_>,
    ) -> Result<Result<Value, AdapterError>, ToolError> {
        let timeout = call.contract.timeout;
        let timed_out = || {
            Err(AdapterError::new(
                ErrorClass::Timeout,
                format!("no answer within {timeout:?}"),
            ))
        };
        let gate = match &call.contract.adapter {
            crate::contract::AdapterSpec::Mcp {
                elicitation: crate::contract::ElicitationPolicy::Gate(g),
                ..
            } if rec.gates().is_some() => g.clone(),
            _ => {
                return Ok(tokio::time::timeout(timeout, call.adapter.call(attempt))
                    .await
                    .unwrap_or_else(|_| timed_out()));
            }
        };
        let (tx, mut asks) = tokio::sync::mpsc::channel(1);
        let attempt = AdapterCall {
            elicit: Some(&tx),
            ..attempt
        };
        let running = call.adapter.call(attempt);
        tokio::pin!(running);
        let mut deadline = tokio::time::Instant::now() + timeout;
        loop {
            tokio::select! {
                ran = &mut running => return Ok(ran),
                Some(ask) = asks.recv() => {
                    let paused = tokio::time::Instant::now();
                    let answer = self.gate_during_call(rec, call, &gate, &ask).await?;
                    // The server may have gone; then the call itself reports that.
                    let _ = ask.reply.send(answer);
                    deadline += paused.elapsed();
                }
                () = tokio::time::sleep_until(deadline) => return Ok(timed_out()),
            }
        }
    }

    /// One question during a call: the runtime opens the gate and waits; what was appended
    /// meanwhile joins the call's events.
    async fn gate_during_call(
        &self,
        rec: &mut Recorder<'_>,
        call: &Call,
        gate: &crate::contract::ElicitationGate,
        ask: &crate::elicit::ElicitAsk,
    ) -> Result<crate::elicit::ElicitAnswer, ToolError> {
        let Some(gates) = rec.gates().cloned() else {
            return Ok(crate::elicit::ElicitAnswer::Decline);
        };
        let (trace_id, step_n) = rec.position();
        let tenant = rec.tenant().clone();
        let answered = gates
            .0
            .ask(crate::elicit::DuringCall {
                exec_id: rec.exec_id(),
                tenant: &tenant,
                trace_id,
                step_n,
                last_seq: rec.last_seq,
                called: &call.called,
                consequence_tier: call.contract.consequence_tier,
                gate,
                message: &ask.message,
                requested_schema: &ask.requested_schema,
            })
            .await?;
        rec.absorb(answered.events);
        Ok(answered.answer)
    }

    async fn finish_ran(
        &self,
        rec: &mut Recorder<'_>,
        call: Call,
        output: Value,
        latency_ms: u64,
    ) -> Result<Partial, ToolError> {
        let bytes = serde_json::to_vec(&output).unwrap_or_default();
        // The result that references the output is appended next: the output may ride in its commit.
        let output_ref = self.blobs.put_for_append(bytes).await?.to_string();
        let errors = call.contract.output.errors(&output);
        let status = if errors.is_empty() {
            ToolStatus::Ok
        } else {
            ToolStatus::InvalidOutput
        };
        // The outcome is in the ledger no later than the result is on the spine: in the
        // result's own append when the ledger rides the spine, before it otherwise.
        let mut side = Vec::new();
        if let Some(key) = &call.called.idempotency_key {
            let now = rec.clock().now().to_rfc3339();
            let outcome = LedgerOutcome {
                status,
                output_ref: Some(output_ref.clone()),
                actual_cost: call.contract.budgets.cost_est,
            };
            let tenant = rec.tenant().as_str();
            if self.ledger_rides && rec.carries_side() {
                side.push(crate::ledger::finish_write(tenant, key, &outcome, &now));
            } else {
                self.ledger.finish(tenant, key, &outcome, &now).await?;
            }
        }
        let result = Recorder::result(
            &call.called,
            ResultFields {
                status,
                output_ref: Some(output_ref.clone()),
                actual_cost: call.contract.budgets.cost_est,
                latency_ms,
                error_class: None,
                errors: errors.clone(),
            },
        );
        rec.append_with(vec![result], side).await?;
        let outcome = if errors.is_empty() {
            CallOutcome::Ok {
                output,
                output_ref,
                from_ledger: false,
            }
        } else {
            CallOutcome::InvalidOutput { errors, output_ref }
        };
        Ok(Partial {
            outcome,
            attempts: call.called.attempt,
            called: call.called,
        })
    }

    /// No attempt left (or the failure is not retryable): settle the ledger, compensate if the
    /// contract says so, then escalate or fail.
    async fn exhausted(
        &self,
        rec: &mut Recorder<'_>,
        call: Call,
        class: ErrorClass,
        allow_compensation: bool,
    ) -> Result<Partial, ToolError> {
        let contract = call.contract.clone();
        let mut compensated = false;
        let compensation = contract
            .failure_policy
            .compensation
            .clone()
            .filter(|_| allow_compensation && contract.side_effect == SideEffect::Reversible);
        if let Some(comp) = compensation {
            // Undoing is never refused for budget: it reduces exposure.
            let no_budget = (Cost::ZERO, None);
            let undo =
                Box::pin(self.call_with(rec, no_budget, &comp, call.called.args.clone(), false))
                    .await?;
            compensated = matches!(undo.outcome, CallOutcome::Ok { .. });
        }
        if let Some(key) = &call.called.idempotency_key {
            // A definite failure (or an undone one) did not act: the key may be used again. An
            // unknown outcome keeps its `started` mark, so a repeat cannot blindly act twice.
            if compensated || !class.outcome_unknown() {
                self.ledger.release(rec.tenant().as_str(), key).await?;
            }
        }
        let errors = call.errors.clone();
        let outcome = match contract.failure_policy.on_exhaust {
            OnExhaust::EscalateToGate => escalate(
                &contract,
                &call.called,
                format!(
                    "{} failed after {} attempt(s): {}",
                    contract.name,
                    call.called.attempt,
                    errors.join("; ")
                ),
                compensated,
            ),
            OnExhaust::Fail => CallOutcome::Failed {
                error_class: class,
                errors,
                compensated,
            },
        };
        Ok(Partial {
            outcome,
            attempts: call.called.attempt,
            called: call.called,
        })
    }
}

/// True if a call's `tool.called` must be durable before its adapter runs: it may act on the
/// world, or it holds an idempotency key whose ledger entry must follow the intent.
fn barrier(contract: &Contract, called: &ToolCalled) -> bool {
    contract.side_effect != SideEffect::ReadOnly
        || called.idempotency_key.is_some()
        || asks_a_person(contract)
}

/// True if the tool's server may ask a person during the call (`elicitation: gate`): its intent
/// must be on the spine before the gate that names it, and after a crash it is never repeated
/// blindly (the person's answer may have acted).
pub(crate) fn asks_a_person(contract: &Contract) -> bool {
    matches!(
        &contract.adapter,
        crate::contract::AdapterSpec::Mcp {
            elicitation: crate::contract::ElicitationPolicy::Gate(_),
            ..
        }
    )
}

fn escalate(
    contract: &Contract,
    called: &ToolCalled,
    reason: String,
    compensated: bool,
) -> CallOutcome {
    CallOutcome::Escalate {
        reason,
        consequence_tier: contract.consequence_tier,
        action: json!({
            "tool": called.tool,
            "args": called.args,
            "idempotency_key": called.idempotency_key,
        }),
        compensated,
    }
}

/// A call's outcome before it is packed into a report.
pub(crate) struct Partial {
    pub outcome: CallOutcome,
    pub called: ToolCalled,
    pub attempts: u32,
}

impl Partial {
    pub(crate) fn into_report(self, rec: Recorder<'_>) -> CallReport {
        CallReport {
            outcome: self.outcome,
            call_id: self.called.call_id,
            idempotency_key: self.called.idempotency_key,
            attempts: self.attempts,
            last_seq: rec.last_seq,
            events: rec.events,
        }
    }
}
