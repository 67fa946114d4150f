//! Keel's domain, and nothing else: the event envelope and payloads every agent step is recorded
//! as, their versioned JSON encoding, and `ExecutionState`, the pure fold over an execution's events.
//!
//! What this crate is not: it does no I/O, spawns nothing, reads no clock and draws no random
//! numbers. Time and identifiers enter as values, so every fold and policy here is a function that
//! tests can drive with fixed inputs. `.ci/run` checks that no I/O or async crate is linked in.

pub mod compat;
pub mod control;
pub mod cost;
pub mod describe;
pub mod error;
pub mod event;
pub mod experiment;
pub mod ids;
pub mod payload;
pub mod secrets;
pub mod state;

pub use cost::{Cost, Tokens};
pub use error::{DecodeError, FoldError, IllegalEvent};
pub use event::{CURRENT_SCHEMA_VERSION, Event};
pub use ids::{EventId, ExecId, TenantId, TraceId};
pub use payload::{EventType, Payload};
pub use state::{ExecStatus, ExecutionState};
