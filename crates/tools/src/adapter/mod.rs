//! Adapters: the one place a tool actually runs. The contract layer around them (validation,
//! ledger, budgets, retries, events) is the same for every kind.
//!
//! - [`http`]: POST JSON to a URL, with the idempotency key as the `Idempotency-Key` header.
//! - [`mcp`]: a tool on an MCP server, over stdio or Streamable HTTP (`rmcp`).
//! - [`builtin`]: a Rust function registered by name.

pub mod builtin;
pub mod http;
pub mod mcp;

use crate::contract::ErrorClass;
use async_trait::async_trait;
use serde_json::Value;

/// One attempt, as an adapter sees it: arguments already valid against the input schema.
#[derive(Clone, Copy, Debug)]
pub struct AdapterCall<'a> {
    /// Tool name in the registry.
    pub tool: &'a str,
    /// Validated arguments.
    pub args: &'a Value,
    /// The call's idempotency key, the same on every attempt.
    pub idempotency_key: Option<&'a str>,
    /// Attempt number, 1-based.
    pub attempt: u32,
    /// Where an MCP server's elicitation goes to be answered by a person (contracts with
    /// `elicitation: gate`); `None` declines.
    pub elicit: Option<&'a tokio::sync::mpsc::Sender<crate::elicit::ElicitAsk>>,
}

/// A failed attempt, classified so the failure policy can decide.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdapterError {
    /// The class the failure policy matches on.
    pub class: ErrorClass,
    /// What happened, without secrets.
    pub message: String,
}

impl AdapterError {
    /// An error of `class`.
    pub fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        Self {
            class,
            message: message.into(),
        }
    }
}

/// Something that runs a tool. The caller applies the contract's timeout around `call`.
#[async_trait]
pub trait Adapter: Send + Sync {
    /// Runs one attempt; the output is validated by the caller.
    async fn call(&self, call: AdapterCall<'_>) -> Result<Value, AdapterError>;

    /// True if the far side deduplicates on the idempotency key, so a call whose outcome is
    /// unknown (a crash mid-call) can be safely repeated with the same key.
    fn honours_idempotency_key(&self) -> bool;
}
