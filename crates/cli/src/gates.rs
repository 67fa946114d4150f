//! `keel gates …`: the approval queue from the command line (list, approve, reject), the SLA
//! sweep and the labelled verdict export, one module each.

mod decide;
mod export;
mod list;
mod sweep;

use crate::agents::ConfigArgs;
use clap::Subcommand;
use keel_core::payload::Verdict;
use std::path::{Path, PathBuf};

/// `keel gates …`.
#[derive(Subcommand)]
pub enum GatesCmd {
    /// Gates of the store, oldest first.
    List {
        /// Only this tenant's.
        #[arg(long)]
        tenant: Option<String>,
        /// pending, decided or all.
        #[arg(long, default_value = "pending")]
        status: String,
        /// One JSON object per line (with the evidence pack).
        #[arg(long)]
        json: bool,
    },
    /// Approve a gate: the action runs (with its idempotency key) when a worker picks it up.
    /// A gate opened by an MCP server's question during a call takes the answer as --input.
    Approve {
        /// The gate id.
        gate_id: String,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
        /// Who decides (recorded on the event).
        #[arg(long = "as")]
        approver: Option<String>,
        /// The answer to the server's question, a JSON object valid against the schema it
        /// asked for (`keel gates list --json` shows it).
        #[arg(long, conflicts_with = "input_file")]
        input: Option<String>,
        /// The answer, read from a JSON file.
        #[arg(long)]
        input_file: Option<PathBuf>,
    },
    /// Reject a gate: the model is told, with the reason.
    Reject {
        /// The gate id.
        gate_id: String,
        /// Why (the agent sees it).
        #[arg(long)]
        reason: String,
        /// Who decides.
        #[arg(long = "as")]
        approver: Option<String>,
    },
    /// Escalate gates past their SLA deadline and expire those past their expiry, once.
    Sweep,
    /// Decided gates as a labelled dataset (features: the evidence pack; label: the verdict).
    Export {
        /// Only jsonl is supported.
        #[arg(long, default_value = "jsonl")]
        format: String,
        /// Write to this file instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Also export gates of replays (decisions replayed from recordings, not people's),
        /// each marked with `is_replay` and `replay_of`; left out by default.
        #[arg(long)]
        include_replays: bool,
    },
}

/// Runs a gates command.
pub async fn gates(data: &Path, cfg: &ConfigArgs, cmd: GatesCmd) -> anyhow::Result<()> {
    let env = crate::demo::open(data, &cfg.config())?;
    match cmd {
        GatesCmd::List {
            tenant,
            status,
            json,
        } => list::list(&env, tenant.as_deref(), &status, json).await,
        GatesCmd::Approve {
            gate_id,
            reason,
            approver,
            input,
            input_file,
        } => {
            let input = decide::input(input.as_deref(), input_file.as_deref())?;
            let verdict = (Verdict::Approve, reason.as_str());
            decide::decide(&env, &gate_id, verdict, approver, input).await
        }
        GatesCmd::Reject {
            gate_id,
            reason,
            approver,
        } => {
            let verdict = (Verdict::Reject, reason.as_str());
            decide::decide(&env, &gate_id, verdict, approver, None).await
        }
        GatesCmd::Sweep => sweep::sweep(&env).await,
        GatesCmd::Export {
            format,
            out,
            include_replays,
        } => export::export(&env, &format, out.as_deref(), include_replays).await,
    }
}
