//! Replay: re-run a recorded execution as a new execution (linked by `exec.started.replay_of`)
//! against another strategy, prompt or model, without repeating a single side effect.
//!
//! The replay runs through the ordinary agent loop and contract layer, so it records the same
//! events a live run would. What differs is how tools are answered:
//! - **Side-effecting tools** (every contract that is not `read_only`) are never executed. Their
//!   adapter is replaced by one that answers from the original's recording: the first
//!   not-yet-used recorded call of the same tool with equal arguments gives its recorded output
//!   (or its recorded failure). A call with no match is recorded as a **would-be call**: the tool
//!   result is an error saying it was not executed, and [`Replay::would_be`] lists it.
//! - **Read-only tools** run live by default ([`ReadOnlyTools::Live`]) or are answered from the
//!   recording like the others ([`ReadOnlyTools::Recorded`]).
//! - **Gates**: a tier-3 action in the replay asks for a gate as usual; the replay decides it with
//!   the original's recorded decision on the same action (approver `replay:<who>`), or rejects it
//!   as a would-be call when the original never asked for it. No person is paged by a replay.
//!
//! - **Memory** is read at the version the chosen strategy pins (`keel replay --memory-version`),
//!   and never written: distillation is off in a replay.
//!
//! Model calls go to whichever model the chosen strategy names.

use crate::agent::Agent;
use crate::control::Control;
use crate::embedded::Config;
use crate::error::RuntimeError;
use crate::gates;
use crate::strategy::Strategy;
use keel_core::payload::{ExecStarted, Payload, ToolResult, ToolStatus, Verdict};
use keel_core::{CURRENT_SCHEMA_VERSION, Event, ExecId, ExecStatus, ExecutionState};
use keel_models::{ModelProvider, PriceTable};
use keel_spine::clock::{self, Clock, SystemClock};
use keel_spine::{BlobRef, BlobStore, EventLog, LocalBlobStore, SpineStore};
use keel_tools::adapter::AdapterError;
use keel_tools::adapter::builtin::Builtins;
use keel_tools::contract::{AdapterSpec, SideEffect};
use keel_tools::{ErrorClass, RateBudgets, Registry, ToolRunner, Wiring};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// How read-only tools are answered in a replay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ReadOnlyTools {
    /// Run them again (they change nothing).
    #[default]
    Live,
    /// Answer them from the recording too (a replay that reads nothing live).
    Recorded,
}

/// A call the replay wanted to make but did not, because nothing recorded answers it.
#[derive(Clone, Debug, PartialEq)]
pub struct WouldBe {
    /// The tool.
    pub tool: String,
    /// The arguments the replay asked for.
    pub args: Value,
    /// Why it was not executed.
    pub reason: String,
}

/// What a replay produced.
#[derive(Clone, Debug)]
pub struct Replay {
    /// The execution replayed.
    pub original: ExecId,
    /// The new execution.
    pub replay: ExecId,
    /// Its final state.
    pub state: ExecutionState,
    /// Calls answered from the recording.
    pub answered_from_recording: usize,
    /// Calls not executed because nothing recorded matched them.
    pub would_be: Vec<WouldBe>,
}

struct RecordedCall {
    tool: String,
    args: Value,
    result: Option<ToolResult>,
    used: bool,
}

/// The original's tool calls, consumed in order as the replay asks for them.
struct Recording {
    calls: Mutex<Vec<RecordedCall>>,
    blobs: Arc<dyn BlobStore>,
    answered: Mutex<usize>,
    would_be: Mutex<Vec<WouldBe>>,
}

impl Recording {
    fn new(events: &[Event], blobs: Arc<dyn BlobStore>) -> Self {
        let mut calls: Vec<RecordedCall> = Vec::new();
        for e in events {
            match &e.payload {
                Payload::ToolCalled(c) => calls.push(RecordedCall {
                    tool: c.tool.clone(),
                    args: c.args.clone(),
                    result: None,
                    used: false,
                }),
                Payload::ToolResult(r) => {
                    // The result belongs to the latest call of that tool still without one.
                    if let Some(call) = calls
                        .iter_mut()
                        .rev()
                        .find(|c| c.tool == r.tool && c.result.is_none())
                    {
                        call.result = Some(r.clone());
                    }
                }
                _ => {}
            }
        }
        // Calls the contract layer rejected or refused never reached a tool: nothing to answer.
        calls.retain(|c| {
            c.result
                .as_ref()
                .is_none_or(|r| !matches!(r.status, ToolStatus::Rejected | ToolStatus::Refused))
        });
        Self {
            calls: Mutex::new(calls),
            blobs,
            answered: Mutex::new(0),
            would_be: Mutex::new(Vec::new()),
        }
    }

    fn would_be(&self, tool: &str, args: &Value, reason: String) -> AdapterError {
        if let Ok(mut w) = self.would_be.lock() {
            w.push(WouldBe {
                tool: tool.to_owned(),
                args: args.clone(),
                reason: reason.clone(),
            });
        }
        AdapterError::new(ErrorClass::ClientError, reason)
    }

    async fn answer(&self, tool: &str, args: Value) -> Result<Value, AdapterError> {
        let found = match self.calls.lock() {
            Ok(mut calls) => calls
                .iter_mut()
                .find(|c| !c.used && c.tool == tool && c.args == args)
                .map(|c| {
                    c.used = true;
                    c.result.clone()
                }),
            Err(_) => None,
        };
        let result = match found {
            None => {
                return Err(self.would_be(
                    tool,
                    &args,
                    format!(
                        "not executed in a replay: the original made no call of {tool} with \
                         these arguments (a would-be call)"
                    ),
                ));
            }
            Some(None) => {
                return Err(self.would_be(
                    tool,
                    &args,
                    format!(
                        "not executed in a replay: the original's call of {tool} has no recorded \
                         result (a would-be call)"
                    ),
                ));
            }
            Some(Some(r)) => r,
        };
        if let Ok(mut n) = self.answered.lock() {
            *n += 1;
        }
        if result.status != ToolStatus::Ok {
            let class = result
                .error_class
                .as_deref()
                .and_then(ErrorClass::parse)
                .unwrap_or(ErrorClass::ToolError);
            return Err(AdapterError::new(
                class,
                format!("replayed from the recording: {}", result.errors.join("; ")),
            ));
        }
        let Some(reference) = result.output_ref else {
            return Ok(Value::Null);
        };
        let bad = |detail: String| AdapterError::new(ErrorClass::Protocol, detail);
        let reference: BlobRef = reference
            .parse()
            .map_err(|e| bad(format!("recorded output_ref: {e}")))?;
        let bytes = self
            .blobs
            .get(&reference)
            .await
            .map_err(|e| bad(format!("recorded output {reference}: {e}")))?;
        serde_json::from_slice(&bytes).map_err(|e| bad(format!("recorded output {reference}: {e}")))
    }
}

/// Replays executions of the embedded store under a data directory.
pub struct Replayer {
    data: PathBuf,
    config: Config,
    log: Arc<dyn SpineStore>,
    /// The spine's idempotency ledger (replays key their tool calls apart from production's).
    ledger: Arc<dyn keel_tools::Ledger>,
    blobs: Arc<dyn BlobStore>,
    prices: PriceTable,
    clock: Arc<dyn Clock>,
    /// Governed memory: the caller's, or (opened without backends) the embedded one, opened the
    /// first time a replayed strategy retrieves.
    memory: Mutex<Option<Arc<keel_memory::Memory>>>,
    /// The MiniLM directory to open the embedded memory with on first use (no backends were
    /// given; see [`Replayer::with_embedded_memory`]).
    lazy_memory: Option<PathBuf>,
    /// The builtin functions live read-only tools call (as in [`crate::embedded::Embedded`]).
    builtins: Builtins,
    /// The secrets live tools' contracts name (the caller's backends').
    secrets: keel_core::secrets::Secrets,
}

impl Replayer {
    /// Opens the store under `data` with the tool contracts and prices of `config`, with no
    /// builtin functions.
    pub fn open(data: &Path, config: &Config) -> Result<Self, RuntimeError> {
        Self::open_with(data, config, |_| {})
    }

    /// Like [`Replayer::open`], with the builtin functions `register` adds (a replay with live
    /// read-only tools calls them).
    pub fn open_with(
        data: &Path,
        config: &Config,
        register: impl FnOnce(&mut Builtins),
    ) -> Result<Self, RuntimeError> {
        let backends = crate::embedded::Backends {
            spine: crate::embedded::Spine::embedded(data)?,
            drive: None,
            blobs: Arc::new(LocalBlobStore::new(data.join("blobs"))),
            memory: None,
            secrets: keel_core::secrets::none(),
        };
        Self::open_wired(data, config, backends, register)
    }

    /// This replayer, opening the embedded memory (`DIR/memory.db`, all-MiniLM-L6-v2 from
    /// `minilm_dir`) the first time a replayed strategy retrieves, when its backends had none.
    pub fn with_embedded_memory(mut self, minilm_dir: PathBuf) -> Self {
        self.lazy_memory = Some(minilm_dir);
        self
    }

    /// Like [`Replayer::open_with`], on the `backends` the caller built (the blobs the
    /// recorded outputs are read from, the memory replayed strategies retrieve from).
    pub fn open_wired(
        data: &Path,
        config: &Config,
        backends: crate::embedded::Backends,
        register: impl FnOnce(&mut Builtins),
    ) -> Result<Self, RuntimeError> {
        let mut builtins = Builtins::default();
        register(&mut builtins);
        // Recorded replies and outputs may be inline in the spine's file (as the agent wrote them).
        let blobs = keel_spine::sqlite::inline_small_blobs(
            backends.spine.store.side_store(),
            backends.blobs,
        );
        Ok(Self {
            data: data.to_owned(),
            config: config.clone(),
            log: backends.spine.store,
            ledger: backends.spine.ledger,
            blobs,
            prices: PriceTable::load(&config.prices)?,
            clock: Arc::new(SystemClock),
            memory: Mutex::new(backends.memory),
            lazy_memory: None,
            builtins,
            secrets: backends.secrets,
        })
    }

    /// The spine the replays are written to.
    pub fn log(&self) -> &Arc<dyn SpineStore> {
        &self.log
    }

    /// An agent whose side-effecting tools (and read-only ones, if asked) answer from
    /// `recording`.
    fn agent(
        &self,
        recording: Arc<Recording>,
        read_only: ReadOnlyTools,
        strategy: &Strategy,
    ) -> Result<Agent, RuntimeError> {
        let memory = if strategy.memory.enabled {
            let mut slot = self.memory.lock().map_err(|_| RuntimeError::Replay {
                exec: String::new(),
                detail: "memory handle poisoned".into(),
            })?;
            if let (None, Some(dir)) = (slot.as_ref(), &self.lazy_memory) {
                *slot = Some(Arc::new(crate::recall::open_embedded(&self.data, dir)?));
            }
            slot.clone()
        } else {
            None
        };
        let mut builtins = self.builtins.clone();
        let mut registry = Registry::load_dir(&self.config.tools, Some(&builtins.names()))?;
        let replaced: Vec<String> = registry
            .iter()
            .filter(|c| {
                c.side_effect != SideEffect::ReadOnly || read_only == ReadOnlyTools::Recorded
            })
            .map(|c| c.name.clone())
            .collect();
        for name in replaced {
            let function = format!("replay:{name}");
            let rec = recording.clone();
            let tool = name.clone();
            builtins.register(
                &function,
                false,
                Arc::new(move |args, _key| {
                    let rec = rec.clone();
                    let tool = tool.clone();
                    Box::pin(async move { rec.answer(&tool, args).await })
                }),
            );
            registry.set_adapter(&name, AdapterSpec::Builtin { function });
        }
        let log: Arc<dyn EventLog> = self.log.clone();
        let runner = ToolRunner::new(
            registry,
            Wiring {
                log: log.clone(),
                blobs: self.blobs.clone(),
                ledger: self.ledger.clone(),
                // A replay is not production: it neither spends nor is held to the tenant's
                // shared rate budgets.
                rates: Arc::new(RateBudgets::default()),
                clock: self.clock.clone(),
                builtins,
                secrets: self.secrets.clone(),
            },
        )?;
        Ok(Agent {
            log: log.clone(),
            blobs: self.blobs.clone(),
            tools: Arc::new(runner),
            prices: self.prices.clone(),
            control: Arc::new(Control::new(log, self.clock.clone())),
            clock: self.clock.clone(),
            pace: std::time::Duration::ZERO,
            memory,
        })
    }

    /// Replays `original` under `strategy` with `model`, to its end; see the module docs.
    pub async fn replay(
        &self,
        original: ExecId,
        strategy: &Strategy,
        model: &dyn ModelProvider,
        read_only: ReadOnlyTools,
    ) -> Result<Replay, RuntimeError> {
        let bad = |detail: String| RuntimeError::Replay {
            exec: original.to_string(),
            detail,
        };
        let recorded = self.log.read(original, 1).await?;
        let Some(first) = recorded.first() else {
            return Err(RuntimeError::UnknownExecution(original.to_string()));
        };
        let Payload::ExecStarted(started) = &first.payload else {
            return Err(bad("its first event is not exec.started".into()));
        };
        if !recorded
            .last()
            .is_some_and(|e| e.event_type().is_terminal())
        {
            return Err(bad("it has not ended yet; replay ended executions".into()));
        }
        // A replay reads memory (at the strategy's pinned version) but never writes it.
        let mut strategy = strategy.clone();
        strategy.memory.distill = false;
        let strategy = &strategy;
        let recording = Arc::new(Recording::new(&recorded, self.blobs.clone()));
        let agent = self.agent(recording.clone(), read_only, strategy)?;
        let replay = clock::new_exec_id();
        let start = Event {
            event_id: clock::new_event_id(),
            exec_id: replay,
            tenant: first.tenant.clone(),
            seq: 1,
            ts: self.clock.now(),
            trace_id: clock::new_trace_id(),
            step_n: 0,
            schema_version: CURRENT_SCHEMA_VERSION,
            payload: Payload::ExecStarted(ExecStarted {
                goal: started.goal.clone(),
                strategy_version: strategy.version.clone(),
                budget: strategy.budget.clone(),
                experiment_arm: strategy.experiment_arm.clone(),
                replay_of: Some(original),
                experiment: None,
            }),
        };
        // A replay of an execution about a subject is about the same subject: its copy of the goal
        // is sealed under the subject's key (erasure reaches it), and it retrieves that subject's
        // memory as the original did.
        if let Some(subject) = self.log.subject_of(original).await? {
            self.log
                .link_subject(replay, &first.tenant.0, &subject)
                .await?;
        }
        self.log.append(replay, 0, &[start]).await?;
        let mut used_gates: Vec<String> = Vec::new();
        let mut state = agent.drive(strategy, model, replay).await?;
        for _ in 0..64 {
            let gate_id = match &state.status {
                ExecStatus::SuspendedAtGate { gate_id } => gate_id.clone(),
                s if s.is_terminal() => break,
                other => return Err(bad(format!("the replay stopped while {other}"))),
            };
            let events = self.log.read(replay, 1).await?;
            let action = events
                .iter()
                .find_map(|e| match &e.payload {
                    Payload::GateRequested(g) if g.gate_id == gate_id => Some(g.action.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            let same = |a: &Value| {
                a.get("tool") == action.get("tool") && a.get("args") == action.get("args")
            };
            let decision = recorded.iter().find_map(|e| match &e.payload {
                Payload::GateRequested(g)
                    if same(&g.action) && !used_gates.contains(&g.gate_id) =>
                {
                    recorded.iter().find_map(|d| match &d.payload {
                        Payload::GateDecided(d) if d.gate_id == g.gate_id => Some(d.clone()),
                        _ => None,
                    })
                }
                _ => None,
            });
            let (verdict, approver, reason) = match decision {
                Some(d) => {
                    used_gates.push(d.gate_id.clone());
                    (
                        d.verdict,
                        format!("replay:{}", d.approver),
                        format!("decision replayed from execution {original}: {}", d.reason),
                    )
                }
                None => {
                    let reason = "not executed in a replay: the original never asked for this \
                                  action, so no decision was recorded (a would-be call)"
                        .to_owned();
                    if let Ok(mut w) = recording.would_be.lock() {
                        w.push(WouldBe {
                            tool: action
                                .get("tool")
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_owned(),
                            args: action.get("args").cloned().unwrap_or_default(),
                            reason: reason.clone(),
                        });
                    }
                    (Verdict::Reject, "replay".to_owned(), reason)
                }
            };
            gates::decide(
                &*self.log,
                &*self.clock,
                replay,
                &gate_id,
                &approver,
                verdict,
                &reason,
            )
            .await?;
            state = agent.drive(strategy, model, replay).await?;
        }
        let answered = recording.answered.lock().map(|n| *n).unwrap_or(0);
        let would_be = recording
            .would_be
            .lock()
            .map(|w| w.clone())
            .unwrap_or_default();
        Ok(Replay {
            original,
            replay,
            state,
            answered_from_recording: answered,
            would_be,
        })
    }
}
