//! Keel's tool contract layer: an agent's tools are an integration surface called by a model,
//! which cannot be trusted to remember anything, so the orchestrator enforces the contract.
//!
//! - [`registry`]: contracts as data (`tools/*.yaml`), parsed once into [`contract`] types, with
//!   every problem reported as `<file>: <field path>: <what is wrong>`.
//! - [`schema`]: JSON Schema 2020-12 validation of arguments (before any adapter runs) and of
//!   outputs (before anything downstream sees them).
//! - [`ledger`]: the durable idempotency ledger (in the spine's SQLite file).
//! - `pg` (feature `postgres`): the ledger and rate budgets in the PostgreSQL spine's database.
//! - [`budget`]: per-tenant rates (decided in the shared store) and per-execution cost budgets;
//!   over budget is refused.
//! - [`adapter`]: HTTP, MCP (stdio and Streamable HTTP) and builtin tools.
//! - [`ToolRunner::call`]: the one entry point; it records `tool.called` / `tool.result` on the
//!   spine and stores outputs in the blob store. See [`invoke`] for the flow.
//! - [`import`]: `keel tools import-mcp`: contract drafts from an MCP server's tool list.
//! - [`shop`]: the demo's builtin tools, acting on a small SQLite shop.
//!
//! What it is not: it does not decide *whether* to call a tool (the runtime's agent loop and its
//! gates do), and it never opens a gate itself: an escalation is an outcome the runtime turns
//! into `gate.requested`, and a server's question during a call is handed to the runtime's
//! [`elicit::ElicitationGates`], which opens the gate.

pub mod adapter;
mod blocks;
pub mod budget;
pub mod contract;
pub mod elicit;
pub mod error;
pub mod import;
pub mod invoke;
pub mod ledger;
pub mod parse;
#[cfg(feature = "postgres")]
pub mod pg;
pub mod record;
pub mod registry;
pub mod runner;
pub mod schema;
pub mod shop;

pub use blocks::Blocks;
pub use budget::{RateBudgets, RateStore, SqliteRates};
pub use contract::{Contract, ErrorClass};
pub use error::ToolError;
pub use invoke::{CallOutcome, CallReport};
pub use ledger::{Ledger, SqliteLedger};
pub use registry::{Problem, Registry};
pub use runner::{CallContext, ToolRunner, Wiring};
