//! The orchestrator: runs an agent execution as a loop over the spine. Every step is appended as
//! events before the loop moves on, and the loop's only state is the fold of those events, so
//! any worker can pick an execution up where the last one stopped.
//!
//! - [`strategy`]: what an execution runs — prompt version × model × tool policy × limits ×
//!   success criteria, loaded from `strategies/*.yaml`.
//! - [`decide`]: the loop's policy as a pure function: the next actions and events, as data.
//! - [`agent`]: the loop's executor (model call, tool calls through the contract layer, outcomes).
//! - [`conversation`]: rebuilding the model's view of the execution from its events.
//! - [`control`]: kill-switches, demotions and certifications, folded from the control stream.
//! - [`estimate`]: a model call's most possible cost, checked against the budget before it.
//! - [`experiment`]: experiments on the spine: register, stop, conclude; a new execution's arm.
//! - [`evidence`]: what an approver reads next to a gate (tool outputs, earlier actions on the
//!   same object, the subject's history, the strategy's record at the tier).
//! - [`gates`]: approval gates — evidence packs, decisions, the queue, SLAs, demotion.
//! - [`elicit`]: gates during a call — an MCP server's question answered by a person.
//! - [`notify`]: gates reach people — signed webhooks on new gates and SLA escalations.
//! - [`subject`]: who an execution is about (sealing, erasure, per-subject memory).

pub mod agent;
pub mod control;
pub mod conversation;
pub mod decide;
pub mod elicit;
pub mod embedded;
pub mod error;
pub mod estimate;
pub mod evidence;
pub mod experiment;
pub mod gates;
pub mod notify;
pub mod recall;
pub mod replay;
pub mod strategy;
pub mod subject;
pub mod worker;

pub use agent::Agent;
pub use control::Control;
pub use error::RuntimeError;
pub use strategy::{Strategy, StrategySet};
