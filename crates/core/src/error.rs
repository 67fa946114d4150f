//! The core's errors: an event that cannot be decoded, and an event that is illegal in the state
//! it is applied to. Both name the event and say why, so a log can be diagnosed from the message.

use crate::ids::EventId;
use crate::payload::EventType;

/// An event's bytes could not be turned into a typed [`crate::Event`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON at all (or truncated).
    #[error("malformed event JSON: {0}")]
    Json(String),
    /// JSON without a `schema_version`.
    #[error("event has no schema_version field")]
    MissingSchemaVersion,
    /// Written by a newer Keel; refusing rather than guessing.
    #[error(
        "event has schema_version {found}, newer than this Keel supports ({supported}); upgrade Keel"
    )]
    NewerSchema {
        /// Version found in the event.
        found: u16,
        /// Newest version this build understands.
        supported: u16,
    },
    /// The envelope fields are missing or mistyped.
    #[error("malformed event envelope: {0}")]
    Envelope(String),
    /// A `type` this version of Keel does not know.
    #[error("unknown event type {ty:?} in event {event_id}")]
    UnknownType {
        /// The type string found.
        ty: String,
        /// The event that carried it.
        event_id: EventId,
    },
    /// The payload does not match its type's shape.
    #[error("malformed {ty} payload in event {event_id}: {detail}")]
    Payload {
        /// The event type.
        ty: EventType,
        /// The event that carried it.
        event_id: EventId,
        /// What was wrong.
        detail: String,
    },
    /// An old-version event could not be upgraded.
    #[error("cannot upgrade event from schema_version {from}: {detail}")]
    Upgrade {
        /// The version it was written with.
        from: u16,
        /// What was wrong.
        detail: String,
    },
}

/// Why an event cannot be applied to the state it was offered to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IllegalEvent {
    /// The event belongs to another execution.
    #[error("it belongs to execution {found}, not {expected}")]
    WrongExecution {
        /// The state's execution.
        expected: String,
        /// The event's execution.
        found: String,
    },
    /// The event's seq is not the next one.
    #[error("seq gap: expected seq {expected}, found {found}")]
    SeqGap {
        /// The seq that would be legal.
        expected: u64,
        /// The seq found.
        found: u64,
    },
    /// The first event of an execution must be `exec.started`.
    #[error("the execution has not started (the first event must be exec.started)")]
    NotStarted,
    /// A second `exec.started`.
    #[error("the execution has already started")]
    AlreadyStarted,
    /// A control-stream event (kill-switch, demotion, certification) in an execution.
    #[error("control events belong on the control stream, not in an execution")]
    ControlInExecution,
    /// Anything after `exec.finished` or `exec.cancelled`.
    #[error("the execution has already ended")]
    AfterTerminal,
    /// A result for a call that is not pending.
    #[error("no {kind} call is pending (got call_id {call_id:?})")]
    NoPendingCall {
        /// `tool` or `model`.
        kind: &'static str,
        /// The call id the event named.
        call_id: String,
    },
    /// A result whose call id is not the pending one.
    #[error("the pending {kind} call is {pending:?}, not {found:?}")]
    CallMismatch {
        /// `tool` or `model`.
        kind: &'static str,
        /// The pending call id.
        pending: String,
        /// The call id the event named.
        found: String,
    },
    /// A new call (or the end) while a call is still unresolved.
    #[error("{kind} call {call_id:?} is still pending")]
    CallPending {
        /// `tool` or `model`.
        kind: &'static str,
        /// The pending call id.
        call_id: String,
    },
    /// A decision on a gate that is not pending.
    #[error("no gate is pending (got gate_id {gate_id:?})")]
    NoPendingGate {
        /// The gate id the event named.
        gate_id: String,
    },
    /// A decision on another gate than the pending one.
    #[error("the pending gate is {pending:?}, not {found:?}")]
    GateMismatch {
        /// The pending gate.
        pending: String,
        /// The gate the event named.
        found: String,
    },
    /// Work while the execution waits at a gate.
    #[error("the execution is suspended at gate {gate_id:?}")]
    AtGate {
        /// The pending gate.
        gate_id: String,
    },
    /// Work while the execution is suspended.
    #[error("the execution is suspended")]
    Suspended,
    /// `exec.resumed` on a running execution.
    #[error("the execution is not suspended")]
    NotSuspended,
    /// `step_n` went down.
    #[error("step_n went backwards from {current} to {found}")]
    StepBackwards {
        /// The current step.
        current: u32,
        /// The step found.
        found: u32,
    },
}

/// An event that is illegal in the current state, named with the state it met.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "illegal {event_type} (seq {seq}, event {event_id}) in state {state} after seq {last_seq}: {reason}"
)]
pub struct FoldError {
    /// The offending event's type.
    pub event_type: EventType,
    /// The offending event's seq.
    pub seq: u64,
    /// The offending event's id.
    pub event_id: EventId,
    /// The state's status, as text.
    pub state: String,
    /// The last seq applied.
    pub last_seq: u64,
    /// Why it is illegal.
    pub reason: Box<IllegalEvent>,
}
