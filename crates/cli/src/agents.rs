//! Running agent executions on the embedded default and looking at them: `keel run`,
//! `keel worker`, `keel trace` and `keel kill`, one module each, and what they share (where the
//! configuration is read from, how an outcome and an operator are named).

pub mod kill;
pub mod run;
pub mod trace;
pub mod worker;

use clap::Args;
use keel_core::payload::Outcome;
use keel_core::{ExecStatus, ExecutionState};
use keel_runtime::StrategySet;
use keel_runtime::control::Control;
use keel_runtime::embedded::Config;
use keel_runtime::strategy::Strategy;
use keel_spine::clock::SystemClock;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where the configuration is read from.
#[derive(Args, Clone, Debug)]
pub struct ConfigArgs {
    /// Tool contracts folder.
    #[arg(long, global = true, default_value = "tools")]
    pub tools: PathBuf,
    /// Strategies folder.
    #[arg(long, global = true, default_value = "strategies")]
    pub strategies: PathBuf,
    /// Price table.
    #[arg(long, global = true, default_value = "prices.toml")]
    pub prices: PathBuf,
}

impl ConfigArgs {
    /// As the runtime's config.
    pub fn config(&self) -> Config {
        Config {
            tools: self.tools.clone(),
            strategies: self.strategies.clone(),
            prices: self.prices.clone(),
        }
    }
}

/// The outcome of a final state, as a word (`success`, `max_steps`, …), or its status.
pub fn outcome_word(state: &ExecutionState) -> String {
    let outcome = match &state.status {
        ExecStatus::Finished { outcome } => *outcome,
        ExecStatus::Failed => Outcome::Error,
        other => return other.to_string(),
    };
    serde_json::to_value(outcome)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

pub use keel_core::describe::dollars;

/// The strategy `name` (a name or a full version) of `set`, loaded from `dir`; an unknown one is
/// an error that names the known ones.
pub fn strategy<'a>(set: &'a StrategySet, name: &str, dir: &Path) -> anyhow::Result<&'a Strategy> {
    set.get(name).ok_or_else(|| {
        let known: Vec<String> = set.iter().map(|s| s.name.clone()).collect();
        anyhow::anyhow!(
            "no strategy {name:?} in {}; known: {}",
            dir.display(),
            crate::out::known(&known)
        )
    })
}

/// What to do after an execution stopped in `state`: at a gate, how to see and decide it and run
/// the execution on; otherwise how to look at what it did.
pub fn next_steps(exec: keel_core::ExecId, state: &ExecutionState) -> Vec<String> {
    match &state.status {
        ExecStatus::SuspendedAtGate { gate_id } => vec![
            "keel gates list                                  # the evidence of the waiting gate"
                .into(),
            format!("keel gates approve {gate_id} --reason \"…\"   # or: keel gates reject {gate_id} --reason \"…\""),
            "keel worker --once                               # runs the execution on after the decision".into(),
        ],
        _ => vec![format!("keel trace {exec}                 # its steps, tokens, cost and latency")],
    }
}

/// Opens the control stream of the store at `data`.
pub fn control(data: &Path) -> anyhow::Result<Control> {
    let log = crate::config::current().spine_log(data)?;
    Ok(Control::new(log, Arc::new(SystemClock)))
}

/// Who a command-line change is recorded as.
pub fn operator() -> String {
    format!(
        "cli:{}",
        std::env::var("USER").unwrap_or_else(|_| "operator".into())
    )
}
