//! `ExecutionState`: what an execution is doing, computed only by folding its events. The runtime
//! keeps no state the log does not hold; resume after a crash is `fold(read(exec_id))`.
//!
//! The fold is also the referee: an event that is illegal in the current state (a result for a
//! call that was never made, anything after the end, a seq gap) is refused with a [`FoldError`]
//! and the state is left as it was.

use crate::cost::{Cost, Tokens};
use crate::error::{FoldError, IllegalEvent};
use crate::event::Event;
use crate::ids::{ExecId, TenantId, TraceId};
use crate::payload::{Budget, Outcome, Payload};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Where an execution is in its life.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ExecStatus {
    /// No event applied yet.
    #[default]
    NotStarted,
    /// Working.
    Running,
    /// Waiting for a human decision on a gate (durably; no worker is held).
    SuspendedAtGate {
        /// The pending gate.
        gate_id: String,
    },
    /// Suspended for another reason (worker shutdown, operator pause).
    Suspended,
    /// Ended with an outcome other than `error`.
    Finished {
        /// The typed outcome.
        outcome: Outcome,
    },
    /// Cancelled by an operator or a kill-switch before finishing.
    Cancelled,
    /// Ended with outcome `error`.
    Failed,
}

impl ExecStatus {
    /// True once nothing may follow.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::Finished { .. } | Self::Cancelled | Self::Failed)
    }
}

impl fmt::Display for ExecStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotStarted => f.write_str("not_started"),
            Self::Running => f.write_str("running"),
            Self::SuspendedAtGate { gate_id } => write!(f, "suspended_at_gate({gate_id})"),
            Self::Suspended => f.write_str("suspended"),
            Self::Finished { outcome } => write!(f, "finished({outcome:?})"),
            Self::Cancelled => f.write_str("cancelled"),
            Self::Failed => f.write_str("failed"),
        }
    }
}

/// A tool call that was recorded as `tool.called` and has no `tool.result` yet. After a crash,
/// this is the call to resolve through the idempotency ledger, never to blindly re-run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingToolCall {
    /// Call id.
    pub call_id: String,
    /// Tool name.
    pub tool: String,
    /// Idempotency key, if the tool has one.
    pub idempotency_key: Option<String>,
    /// Attempt number.
    pub attempt: u32,
    /// Seq of the `tool.called` event.
    pub seq: u64,
}

/// A gate that was requested and not yet decided.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingGate {
    /// Gate id.
    pub gate_id: String,
    /// Consequence tier of the gated action.
    pub consequence_tier: u8,
    /// Seq of the `gate.requested` event.
    pub seq: u64,
    /// The tool call the gate was opened during (an elicitation), which stays pending.
    #[serde(default)]
    pub during_call: Option<String>,
}

/// Running totals: the cost meter of one execution.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Tokens over every model call.
    pub tokens: Tokens,
    /// Model plus tool cost; unknown once any part was unknown.
    pub cost: Cost,
    /// Completed steps.
    pub steps: u32,
    /// Model calls made.
    pub model_calls: u32,
    /// Tool calls made (attempts).
    pub tool_calls: u32,
}

impl Default for Totals {
    fn default() -> Self {
        Self {
            tokens: Tokens::default(),
            cost: Cost::ZERO,
            steps: 0,
            model_calls: 0,
            tool_calls: 0,
        }
    }
}

/// The state of one execution, as a fold over its events.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct ExecutionState {
    /// The execution, once started.
    pub exec_id: Option<ExecId>,
    /// Owning tenant, once started.
    pub tenant: Option<TenantId>,
    /// Trace id, once started.
    pub trace_id: Option<TraceId>,
    /// Strategy version it runs, once started.
    pub strategy_version: Option<String>,
    /// Declared limits.
    pub budget: Budget,
    /// Where it is in its life.
    pub status: ExecStatus,
    /// Seq of the last event applied (0 before any).
    pub last_seq: u64,
    /// Current reasoning step.
    pub step_n: u32,
    /// Model call awaiting its response.
    pub pending_model_call: Option<String>,
    /// Tool call awaiting its result.
    pub pending_tool_call: Option<PendingToolCall>,
    /// Gate awaiting its decision.
    pub pending_gate: Option<PendingGate>,
    /// The cost meter.
    pub totals: Totals,
}

impl ExecutionState {
    /// Folds a whole sequence of events from the empty state.
    pub fn fold<'a>(events: impl IntoIterator<Item = &'a Event>) -> Result<Self, FoldError> {
        let mut state = Self::default();
        for e in events {
            state.apply_mut(e)?;
        }
        Ok(state)
    }

    /// Returns the state after `event`, or why `event` is illegal here.
    pub fn apply(&self, event: &Event) -> Result<Self, FoldError> {
        let mut next = self.clone();
        next.apply_mut(event)?;
        Ok(next)
    }

    /// Applies `event` in place. On error the state is unchanged: every check runs before any
    /// field is written.
    pub fn apply_mut(&mut self, event: &Event) -> Result<(), FoldError> {
        self.check(event).map_err(|reason| FoldError {
            event_type: event.event_type(),
            seq: event.seq,
            event_id: event.event_id,
            state: self.status.to_string(),
            last_seq: self.last_seq,
            reason: Box::new(reason),
        })?;
        self.transition(event);
        Ok(())
    }

    fn check(&self, e: &Event) -> Result<(), IllegalEvent> {
        use IllegalEvent as I;
        if let Some(id) = self.exec_id
            && id != e.exec_id
        {
            return Err(I::WrongExecution {
                expected: id.to_string(),
                found: e.exec_id.to_string(),
            });
        }
        if e.seq != self.last_seq + 1 {
            return Err(I::SeqGap {
                expected: self.last_seq + 1,
                found: e.seq,
            });
        }
        if e.event_type().is_control() {
            return Err(I::ControlInExecution);
        }
        match (&self.status, &e.payload) {
            (ExecStatus::NotStarted, Payload::ExecStarted(_)) => return Ok(()),
            (ExecStatus::NotStarted, _) => return Err(I::NotStarted),
            (s, _) if s.is_terminal() => return Err(I::AfterTerminal),
            (_, Payload::ExecStarted(_)) => return Err(I::AlreadyStarted),
            _ => {}
        }
        if e.step_n < self.step_n {
            return Err(I::StepBackwards {
                current: self.step_n,
                found: e.step_n,
            });
        }
        let pending_tool = || match &self.pending_tool_call {
            Some(p) => Err(I::CallPending {
                kind: "tool",
                call_id: p.call_id.clone(),
            }),
            None => Ok(()),
        };
        let pending_model = || match &self.pending_model_call {
            Some(p) => Err(I::CallPending {
                kind: "model",
                call_id: p.clone(),
            }),
            None => Ok(()),
        };
        // While suspended only the way out (resume, decision, cancel) is legal.
        match (&self.status, &e.payload) {
            (_, Payload::ExecCancelled(_)) => return Ok(()),
            (ExecStatus::SuspendedAtGate { .. }, Payload::GateDecided(_)) => {}
            (ExecStatus::SuspendedAtGate { gate_id }, Payload::GateEscalated(g)) => {
                if *gate_id != g.gate_id {
                    return Err(I::GateMismatch {
                        pending: gate_id.clone(),
                        found: g.gate_id.clone(),
                    });
                }
                return Ok(());
            }
            (ExecStatus::SuspendedAtGate { gate_id }, _) => {
                return Err(I::AtGate {
                    gate_id: gate_id.clone(),
                });
            }
            (ExecStatus::Suspended, Payload::ExecResumed(_)) => return Ok(()),
            (ExecStatus::Suspended, _) => return Err(I::Suspended),
            (_, Payload::ExecResumed(_)) => return Err(I::NotSuspended),
            _ => {}
        }
        match &e.payload {
            Payload::ModelCalled(_) => pending_model()?,
            Payload::ModelResponded(r) => match &self.pending_model_call {
                None => {
                    return Err(I::NoPendingCall {
                        kind: "model",
                        call_id: r.call_id.clone(),
                    });
                }
                Some(p) if *p != r.call_id => {
                    return Err(I::CallMismatch {
                        kind: "model",
                        pending: p.clone(),
                        found: r.call_id.clone(),
                    });
                }
                Some(_) => {}
            },
            Payload::ToolCalled(_) => pending_tool()?,
            Payload::ToolResult(r) => match &self.pending_tool_call {
                None => {
                    return Err(I::NoPendingCall {
                        kind: "tool",
                        call_id: r.call_id.clone(),
                    });
                }
                Some(p) if p.call_id != r.call_id => {
                    return Err(I::CallMismatch {
                        kind: "tool",
                        pending: p.call_id.clone(),
                        found: r.call_id.clone(),
                    });
                }
                Some(_) => {}
            },
            // A gate during a call answers the call's own question: it needs that very call
            // pending. Any other gate needs no call pending.
            Payload::GateRequested(g) => match (&g.during_call, &self.pending_tool_call) {
                (None, _) => pending_tool()?,
                (Some(c), None) => {
                    return Err(I::NoPendingCall {
                        kind: "tool",
                        call_id: c.clone(),
                    });
                }
                (Some(c), Some(p)) if *c != p.call_id => {
                    return Err(I::CallMismatch {
                        kind: "tool",
                        pending: p.call_id.clone(),
                        found: c.clone(),
                    });
                }
                (Some(_), Some(_)) => {}
            },
            Payload::GateEscalated(g) => {
                return Err(I::NoPendingGate {
                    gate_id: g.gate_id.clone(),
                });
            }
            Payload::GateDecided(d) => match &self.pending_gate {
                None => {
                    return Err(I::NoPendingGate {
                        gate_id: d.gate_id.clone(),
                    });
                }
                Some(p) if p.gate_id != d.gate_id => {
                    return Err(I::GateMismatch {
                        pending: p.gate_id.clone(),
                        found: d.gate_id.clone(),
                    });
                }
                Some(_) => {}
            },
            Payload::ExecSuspended(_) | Payload::ExecFinished(_) => {
                pending_tool()?;
                pending_model()?;
            }
            _ => {}
        }
        Ok(())
    }

    fn transition(&mut self, e: &Event) {
        self.last_seq = e.seq;
        self.step_n = e.step_n;
        match &e.payload {
            Payload::ExecStarted(s) => {
                self.exec_id = Some(e.exec_id);
                self.tenant = Some(e.tenant.clone());
                self.trace_id = Some(e.trace_id);
                self.strategy_version = Some(s.strategy_version.clone());
                self.budget = s.budget.clone();
                self.status = ExecStatus::Running;
            }
            Payload::ModelCalled(c) => {
                self.pending_model_call = Some(c.call_id.clone());
                self.totals.model_calls += 1;
            }
            Payload::ModelResponded(r) => {
                self.pending_model_call = None;
                self.totals.tokens = self.totals.tokens + r.tokens;
                self.totals.cost = self.totals.cost + r.cost;
            }
            Payload::ToolCalled(c) => {
                self.pending_tool_call = Some(PendingToolCall {
                    call_id: c.call_id.clone(),
                    tool: c.tool.clone(),
                    idempotency_key: c.idempotency_key.clone(),
                    attempt: c.attempt,
                    seq: e.seq,
                });
                self.totals.tool_calls += 1;
            }
            Payload::ToolResult(r) => {
                self.pending_tool_call = None;
                self.totals.cost = self.totals.cost + r.actual_cost;
            }
            Payload::GateRequested(g) => {
                self.pending_gate = Some(PendingGate {
                    gate_id: g.gate_id.clone(),
                    consequence_tier: g.consequence_tier,
                    seq: e.seq,
                    during_call: g.during_call.clone(),
                });
                self.status = ExecStatus::SuspendedAtGate {
                    gate_id: g.gate_id.clone(),
                };
            }
            Payload::GateDecided(_) => {
                self.pending_gate = None;
                self.status = ExecStatus::Running;
            }
            Payload::StepCompleted(_) => self.totals.steps += 1,
            Payload::ExecSuspended(_) => self.status = ExecStatus::Suspended,
            Payload::ExecResumed(_) => self.status = ExecStatus::Running,
            Payload::ExecCancelled(_) => {
                self.status = ExecStatus::Cancelled;
                self.pending_gate = None;
            }
            Payload::ExecFinished(f) => {
                self.status = match f.outcome {
                    Outcome::Error => ExecStatus::Failed,
                    outcome => ExecStatus::Finished { outcome },
                };
            }
            Payload::PlanProposed(_)
            | Payload::MemoryRetrieved(_)
            | Payload::MemoryWritten(_)
            | Payload::DistillFailed(_)
            | Payload::GateEscalated(_)
            | Payload::ReviewSampled(_)
            | Payload::KillSet(_)
            | Payload::KillCleared(_)
            | Payload::StrategyDemoted(_)
            | Payload::StrategyCertified(_)
            | Payload::SloAlarmed(_)
            | Payload::SubjectErased(_)
            | Payload::RetrievalRated(_)
            | Payload::FeedbackGiven(_)
            | Payload::BudgetSet(_)
            | Payload::BudgetAlarmed(_)
            | Payload::ExperimentRegistered(_)
            | Payload::ExperimentStopped(_)
            | Payload::ExperimentConcluded(_)
            | Payload::GuardrailBreached(_) => {}
        }
    }
}
