//! The crate's one error enum. A contract that does not load is not an error here but a list of
//! [`crate::registry::Problem`]s; a tool call that goes wrong in an expected way (rejected args,
//! a refusal, an exhausted retry) is an [`crate::invoke::CallOutcome`], recorded on the spine.
//! `ToolError` is for what stops the contract layer itself: the store, the spine, a bad call site.

use std::path::PathBuf;

/// What stopped the contract layer.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// A contract folder did not load; every problem is listed, one a line.
    #[error("{} problem(s) in the tool contracts:\n{}", .0.len(), .0.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n"))]
    Contracts(Vec<crate::registry::Problem>),
    /// No contract with this name is registered.
    #[error("unknown tool {0:?}: no contract with that name is registered")]
    UnknownTool(String),
    /// Reading a file or directory failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The idempotency ledger's store failed.
    #[error("idempotency ledger at {}: {context}: {detail}", path.display())]
    Ledger {
        /// The store file.
        path: PathBuf,
        /// What was being done.
        context: &'static str,
        /// The engine's message.
        detail: String,
    },
    /// The shared rate-budget store failed.
    #[error("rate budget store at {}: {context}: {detail}", path.display())]
    Rates {
        /// The store file.
        path: PathBuf,
        /// What was being done.
        context: &'static str,
        /// The engine's message.
        detail: String,
    },
    /// The shop database (built-in demo tools) failed.
    #[error("shop store at {}: {context}: {detail}", path.display())]
    Shop {
        /// The store file.
        path: PathBuf,
        /// What was being done.
        context: &'static str,
        /// The engine's message.
        detail: String,
    },
    /// Appending to or reading the spine, or the blob store, failed.
    #[error("spine: {0}")]
    Spine(#[from] keel_spine::SpineError),
    /// The execution is not in a state where a tool call can be recorded.
    #[error("execution {exec_id}: {detail}")]
    NotCallable {
        /// The execution.
        exec_id: String,
        /// Why not (not started, finished, at a gate, another call pending…).
        detail: String,
    },
    /// An MCP server could not be reached, started or listed.
    #[error("MCP server {server}: {detail}")]
    Mcp {
        /// The command or URL.
        server: String,
        /// What went wrong.
        detail: String,
    },
    /// An MCP server refused Keel's credentials (401/403), or they could not be had (an unset
    /// variable, a failed OAuth grant). Never retried: the same credentials get the same answer.
    #[error("MCP server {server}: not authorized: {detail}")]
    McpAuth {
        /// The URL.
        server: String,
        /// What went wrong (never a secret).
        detail: String,
    },
    /// Building an HTTP client failed.
    #[error("HTTP client: {0}")]
    Http(String),
    /// An adapter named in a contract is not wired (e.g. an unregistered builtin function).
    #[error("tool {tool:?}: {detail}")]
    Adapter {
        /// The tool.
        tool: String,
        /// What is missing.
        detail: String,
    },
}
