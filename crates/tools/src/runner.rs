//! [`ToolRunner`]: the registry, one adapter per contract, and the stores a call is recorded in
//! (spine, blobs, ledger), wired once; plus [`CallContext`], where in an execution a call is made.
//! The call flow itself is in [`crate::invoke`].

use crate::adapter::Adapter;
use crate::adapter::builtin::Builtins;
use crate::adapter::http::{HttpAdapter, client};
use crate::adapter::mcp::{McpAdapter, McpPool};
use crate::budget::{RateStore, SqliteRates};
use crate::contract::{AdapterSpec, Contract, ErrorClass, SideEffect};
use crate::error::ToolError;
use crate::invoke::{Call, CallOutcome, CallReport, Partial};
use crate::ledger::{Begin, Ledger, LedgerStart, SqliteLedger};
use crate::record::{Recorder, ResultFields};
use crate::registry::Registry;
use keel_core::payload::ToolStatus;
use keel_core::secrets::Secrets;
use keel_core::{Cost, ExecId, ExecStatus, ExecutionState, Payload, TenantId, TraceId};
use keel_spine::clock::{Clock, SystemClock};
use keel_spine::{BlobStore, EventLog, LocalBlobStore, SqliteLog, SqliteOptions};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Where in an execution a tool call is made, and what it may still spend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallContext {
    /// The execution.
    pub exec_id: ExecId,
    /// Its tenant (rates and ledger keys are per tenant).
    pub tenant: TenantId,
    /// Its trace id.
    pub trace_id: TraceId,
    /// Its last seq: the call's events follow it (the append is conditional on it).
    pub last_seq: u64,
    /// The current reasoning step.
    pub step_n: u32,
    /// Cost so far (model + tools).
    pub spent: Cost,
    /// The execution's cost budget, micro-USD.
    pub max_cost_micros: Option<u64>,
    /// Where a server's question during the call goes to a person (`elicitation: gate`);
    /// without it such questions are declined.
    pub gates: Option<crate::elicit::Gates>,
}

impl CallContext {
    /// The context of an execution's current state; refuses a state in which a tool call is not
    /// legal (not running, at a gate, a tool call already pending).
    pub fn from_state(state: &ExecutionState) -> Result<Self, ToolError> {
        let ctx = Self::of(state)?;
        if let Some(p) = &state.pending_tool_call {
            return Err(ToolError::NotCallable {
                exec_id: ctx.exec_id.to_string(),
                detail: format!(
                    "tool call {} ({}) is still pending; resolve it first",
                    p.call_id, p.tool
                ),
            });
        }
        Ok(ctx)
    }

    /// This context, with questions during its calls answered by `gates`.
    pub fn with_gates(
        mut self,
        gates: std::sync::Arc<dyn crate::elicit::ElicitationGates>,
    ) -> Self {
        self.gates = Some(crate::elicit::Gates(gates));
        self
    }

    fn of(state: &ExecutionState) -> Result<Self, ToolError> {
        let not = |detail: String| ToolError::NotCallable {
            exec_id: state
                .exec_id
                .map(|e| e.to_string())
                .unwrap_or_else(|| "(none)".into()),
            detail,
        };
        if state.status != ExecStatus::Running {
            return Err(not(format!("execution is {}, not running", state.status)));
        }
        match (state.exec_id, &state.tenant, state.trace_id) {
            (Some(exec_id), Some(tenant), Some(trace_id)) => Ok(Self {
                exec_id,
                tenant: tenant.clone(),
                trace_id,
                last_seq: state.last_seq,
                step_n: state.step_n,
                spent: state.totals.cost,
                max_cost_micros: state.budget.max_cost_micros,
                gates: None,
            }),
            _ => Err(not("execution has not started".into())),
        }
    }
}

/// What a runner records into and runs with.
pub struct Wiring {
    /// The spine.
    pub log: Arc<dyn EventLog>,
    /// Where outputs go.
    pub blobs: Arc<dyn BlobStore>,
    /// The idempotency ledger.
    pub ledger: Arc<dyn Ledger>,
    /// Where per-tenant rate budgets are decided: a store every process on the spine shares
    /// ([`SqliteRates`] in the spine's file), unless the run is private (a replay).
    pub rates: Arc<dyn RateStore>,
    /// The clock that stamps events.
    pub clock: Arc<dyn Clock>,
    /// Builtin functions by name.
    pub builtins: Builtins,
    /// Where the header values and OAuth secrets that contracts name come from (the `keel`
    /// binary answers from the environment).
    pub secrets: Secrets,
}

/// Runs tool calls through their contracts. Cheap to share (`Arc`); calls may run concurrently
/// for different executions.
pub struct ToolRunner {
    pub(crate) registry: Arc<Registry>,
    adapters: HashMap<String, Arc<dyn Adapter>>,
    pub(crate) log: Arc<dyn EventLog>,
    pub(crate) blobs: Arc<dyn BlobStore>,
    pub(crate) ledger: Arc<dyn Ledger>,
    pub(crate) rates: Arc<dyn RateStore>,
    /// The ledger's writes are side writes of this runner's spine: `begin` and `finish` ride in
    /// the call's appends.
    pub(crate) ledger_rides: bool,
    /// Likewise for rate takes (of calls whose intent is appended before they run).
    pub(crate) rates_ride: bool,
    clock: Arc<dyn Clock>,
    mcp: McpPool,
}

impl ToolRunner {
    /// Wires one adapter per contract. Fails if a contract names a builtin that is not registered.
    pub fn new(registry: Registry, wiring: Wiring) -> Result<Self, ToolError> {
        let mcp = McpPool::new(wiring.secrets.clone());
        let http = client(Duration::from_secs(300))?;
        let mut adapters: HashMap<String, Arc<dyn Adapter>> = HashMap::new();
        for c in registry.iter() {
            let adapter: Arc<dyn Adapter> = match &c.adapter {
                AdapterSpec::Builtin { function } => {
                    Arc::new(wiring.builtins.adapter(function).ok_or_else(|| {
                        ToolError::Adapter {
                            tool: c.name.clone(),
                            detail: format!("builtin function {function:?} is not registered"),
                        }
                    })?)
                }
                AdapterSpec::Http {
                    url,
                    headers_from_env,
                } => Arc::new(HttpAdapter::new(
                    http.clone(),
                    url.clone(),
                    headers_from_env.clone(),
                    wiring.secrets.clone(),
                )),
                AdapterSpec::Mcp {
                    server,
                    tool,
                    elicitation,
                } => Arc::new(McpAdapter::new(
                    mcp.clone(),
                    server.clone(),
                    tool.clone(),
                    elicitation.clone(),
                )),
            };
            adapters.insert(c.name.clone(), adapter);
        }
        let same_store = |theirs: Option<&Path>| {
            theirs.is_some()
                && wiring
                    .log
                    .side_store()
                    .is_some_and(|ours| Some(ours) == theirs)
        };
        let ledger_rides = same_store(wiring.ledger.side_store());
        let rates_ride = same_store(wiring.rates.side_store());
        Ok(Self {
            registry: Arc::new(registry),
            adapters,
            ledger_rides,
            rates_ride,
            log: wiring.log,
            blobs: wiring.blobs,
            ledger: wiring.ledger,
            rates: wiring.rates,
            clock: wiring.clock,
            mcp,
        })
    }

    /// The embedded default under a data directory: spine, ledger and rate budgets in
    /// `DIR/spine.db` (one writer: the ledger's and the rates' writes ride in the spine's group
    /// commit), blobs in `DIR/blobs`, the system clock, and the contracts' secrets from
    /// `secrets`. Returns the spine too, for the caller's own appends.
    pub fn embedded(
        data: &Path,
        registry: Registry,
        builtins: Builtins,
        options: SqliteOptions,
        secrets: Secrets,
    ) -> Result<(Self, SqliteLog), ToolError> {
        let spine = data.join("spine.db");
        let log = SqliteLog::open(&spine, options)?;
        let ledger = SqliteLedger::on(&log);
        let runner = Self::new(
            registry,
            Wiring {
                log: Arc::new(log.clone()),
                blobs: Arc::new(LocalBlobStore::new(data.join("blobs"))),
                ledger: Arc::new(ledger),
                rates: Arc::new(SqliteRates::on(&log)),
                clock: Arc::new(SystemClock),
                builtins,
                secrets,
            },
        )?;
        Ok((runner, log))
    }

    /// The registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// A contract by name (e.g. for the runtime's gate-before-tier-3 check).
    pub fn contract(&self, name: &str) -> Option<&Arc<Contract>> {
        self.registry.get(name)
    }

    /// Hands the runner an MCP session opened elsewhere (one that listed the tools a contract
    /// was drafted from), so the contract's calls reuse it.
    pub async fn adopt_mcp(
        &self,
        elicitation: crate::contract::ElicitationPolicy,
        client: crate::adapter::mcp::McpClient,
    ) {
        self.mcp.adopt(elicitation, client).await;
    }

    /// Closes MCP sessions (stops stdio servers).
    pub async fn shutdown(&self) {
        self.mcp.close_all().await;
    }

    pub(crate) fn lookup(&self, tool: &str) -> Option<(Arc<Contract>, Arc<dyn Adapter>)> {
        Some((
            self.registry.get(tool)?.clone(),
            self.adapters.get(tool)?.clone(),
        ))
    }

    pub(crate) fn recorder(&self, ctx: &CallContext) -> Recorder<'_> {
        Recorder::new(
            self.log.as_ref(),
            self.clock.as_ref(),
            (ctx.exec_id, ctx.tenant.clone(), ctx.trace_id),
            ctx.last_seq,
            ctx.step_n,
        )
        .asking(ctx.gates.clone())
    }

    /// Runs a call that a person approved at a gate opened for an [`CallOutcome::Escalate`].
    /// If the call's idempotency key is still held `started` (an earlier attempt's outcome was
    /// unknown), the approval is the decision that it may run again, so the key is released
    /// first; otherwise this is [`ToolRunner::call`]. Never call it without that decision.
    pub async fn call_after_gate(
        &self,
        ctx: &CallContext,
        tool: &str,
        args: serde_json::Value,
    ) -> Result<CallReport, ToolError> {
        self.release_unknown(ctx, tool, &args).await?;
        self.call(ctx, tool, args).await
    }

    /// [`ToolRunner::call_after_gate`] inside a step the caller commits (see
    /// [`ToolRunner::call_in_step`]).
    pub async fn call_after_gate_in_step(
        &self,
        ctx: &CallContext,
        held: &mut Vec<keel_core::Event>,
        tool: &str,
        args: serde_json::Value,
    ) -> Result<CallReport, ToolError> {
        self.release_unknown(ctx, tool, &args).await?;
        self.call_in_step(ctx, held, tool, args).await
    }

    /// Releases a key still held `started` by an earlier attempt whose outcome is unknown: only
    /// after a person's approval to run the call again.
    async fn release_unknown(
        &self,
        ctx: &CallContext,
        tool: &str,
        args: &serde_json::Value,
    ) -> Result<(), ToolError> {
        let tenant = ctx.tenant.as_str();
        let Some(contract) = self.registry.get(tool) else {
            return Ok(());
        };
        // The key of the call as it will be made: without the nulls that mean "not provided".
        let args = &contract.input.without_optional_nulls(args.clone());
        if contract.input.errors(args).is_empty()
            && let Ok(Some(key)) =
                crate::invoke::idempotency_key(contract, args, &ctx.exec_id.to_string(), tenant)
            && let Some(entry) = self.ledger.get(tenant, &key).await?
            && entry.state == crate::ledger::LedgerState::Started
        {
            self.ledger.release(tenant, &key).await?;
        }
        Ok(())
    }

    /// Settles the tool call an execution was left with (a `tool.called` with no result: the
    /// process died mid-call). `Ok(None)` if nothing is pending.
    ///
    /// Never blindly re-runs a side effect: if the ledger holds the result it is used; if the
    /// ledger never saw the call, the adapter never ran and the call runs now; if the call
    /// started and its outcome is unknown it is repeated with the same key only when the adapter
    /// deduplicates on it, and escalated to a person otherwise.
    pub async fn resolve_pending(
        &self,
        state: &ExecutionState,
    ) -> Result<Option<CallReport>, ToolError> {
        let Some(pending) = &state.pending_tool_call else {
            return Ok(None);
        };
        let ctx = CallContext::of(state)?;
        let exec = ctx.exec_id.to_string();
        let called = self
            .log
            .read(ctx.exec_id, pending.seq)
            .await?
            .into_iter()
            .next()
            .and_then(|e| match e.payload {
                Payload::ToolCalled(c) if e.seq == pending.seq => Some(c),
                _ => None,
            })
            .ok_or_else(|| ToolError::NotCallable {
                exec_id: exec.clone(),
                detail: format!(
                    "seq {} should be the pending tool.called, but is not",
                    pending.seq
                ),
            })?;
        let mut rec = self.recorder(&ctx);
        let Some((contract, adapter)) = self.lookup(&called.tool) else {
            let errors = vec![format!(
                "tool {:?} is no longer registered; the interrupted call cannot be settled",
                called.tool
            )];
            let mut r = ResultFields::nothing_ran(ToolStatus::Error, errors.clone());
            r.error_class = Some(ErrorClass::Interrupted.as_str().into());
            rec.append(vec![Recorder::result(&called, r)]).await?;
            let attempts = called.attempt;
            let outcome = CallOutcome::Failed {
                error_class: ErrorClass::Interrupted,
                errors,
                compensated: false,
            };
            return Ok(Some(
                Partial {
                    outcome,
                    called,
                    attempts,
                }
                .into_report(rec),
            ));
        };
        let mut call = Call {
            contract,
            adapter,
            called,
            errors: Vec::new(),
        };
        match call.called.idempotency_key.clone() {
            Some(key) => {
                let now = self.clock.now().to_rfc3339();
                let begin = self
                    .ledger
                    .begin(&LedgerStart {
                        tenant: ctx.tenant.as_str(),
                        key: &key,
                        tool: &call.called.tool,
                        exec_id: &exec,
                        call_id: &call.called.call_id,
                        now: &now,
                    })
                    .await?;
                // `Started`: the ledger never saw the call, so the adapter never ran.
                if let Begin::Existing(entry) = begin
                    && let Some(done) = self.answer_from_ledger(&mut rec, &mut call, entry).await?
                {
                    return Ok(Some(done.into_report(rec)));
                }
            }
            None if call.contract.side_effect == SideEffect::ReadOnly
                && !crate::invoke::asks_a_person(&call.contract) => {}
            None => {
                let reason = format!(
                    "call {} of {} was interrupted and has no idempotency key; its outcome is unknown, so a person must decide",
                    call.called.call_id, call.called.tool
                );
                let mut r = ResultFields::nothing_ran(ToolStatus::Error, vec![reason.clone()]);
                r.error_class = Some(ErrorClass::Interrupted.as_str().into());
                rec.append(vec![Recorder::result(&call.called, r)]).await?;
                let outcome = CallOutcome::Escalate {
                    reason,
                    consequence_tier: call.contract.consequence_tier,
                    action: serde_json::json!({"tool": call.called.tool, "args": call.called.args, "idempotency_key": null}),
                    compensated: false,
                };
                let attempts = call.called.attempt;
                return Ok(Some(
                    Partial {
                        outcome,
                        called: call.called,
                        attempts,
                    }
                    .into_report(rec),
                ));
            }
        }
        let done = self.attempts(&mut rec, call, true).await?;
        Ok(Some(done.into_report(rec)))
    }
}
