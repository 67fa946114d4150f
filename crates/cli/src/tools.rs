//! `keel tools check|list|import-mcp|call`: the tool contract registry from the command line.
//!
//! `check` prints every problem of a contract folder to stdout, one a line, as
//! `<file>: <field path>: <what is wrong>`, and exits 1 if there is any.

mod call;

use anyhow::{Context, bail};
use clap::Subcommand;
use keel_tools::contract::{AdapterSpec, Contract, IdempotencyMode};
use keel_tools::{Registry, ToolError};
use serde_json::json;
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Tool contract commands.
#[derive(Subcommand)]
pub enum ToolsCmd {
    /// Check a folder of contracts (`*.yaml`): exit 0 if all are valid, else print every problem.
    Check {
        /// The folder.
        #[arg(default_value = "tools")]
        dir: PathBuf,
    },
    /// List the tools of a folder of contracts.
    List {
        /// The folder.
        #[arg(long, default_value = "tools")]
        dir: PathBuf,
        /// One JSON object per tool instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Draft contracts for an MCP server's tools (review them before use).
    ImportMcp {
        /// Folder to write `<tool>.yaml` files into.
        #[arg(long, default_value = "tools")]
        out: PathBuf,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
        /// A Streamable HTTP URL (`http://host:port/mcp`) or a stdio command and its arguments.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        server: Vec<String>,
    },
    /// Make one call through the contract layer (a contract file, folder or MCP server URL),
    /// recorded in a scratch execution; prints the outcome as JSON.
    Call(Box<call::CallArgs>),
}

/// Runs a tools command.
pub async fn run(data: &Path, cmd: ToolsCmd) -> anyhow::Result<()> {
    match cmd {
        ToolsCmd::Check { dir } => check(&dir),
        ToolsCmd::List { dir, json } => list(&dir, json),
        ToolsCmd::ImportMcp { out, force, server } => import(&out, force, &server).await,
        ToolsCmd::Call(args) => call::run(data, *args).await,
    }
}

pub(crate) fn builtins() -> BTreeSet<String> {
    keel_tools::shop::BUILTIN_NAMES
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn load(dir: &Path) -> Result<Registry, ToolError> {
    Registry::load_dir(dir, Some(&builtins()))
}

fn check(dir: &Path) -> anyhow::Result<()> {
    match load(dir) {
        Ok(reg) => {
            eprintln!("{}: {} contract(s), all valid", dir.display(), reg.len());
            Ok(())
        }
        Err(ToolError::Contracts(problems)) => {
            let mut out = std::io::stdout().lock();
            for p in &problems {
                writeln!(out, "{p}")?;
            }
            out.flush()?;
            bail!(
                "{} problem(s) in the contracts of {}",
                problems.len(),
                dir.display()
            )
        }
        Err(e) => Err(e.into()),
    }
}

fn adapter_text(c: &Contract) -> String {
    match &c.adapter {
        AdapterSpec::Http { url, .. } => format!("http {url}"),
        AdapterSpec::Mcp { server, tool, .. } => format!("mcp {tool} @ {server}"),
        AdapterSpec::Builtin { function } => format!("builtin {function}"),
    }
}

fn list(dir: &Path, json_out: bool) -> anyhow::Result<()> {
    let reg = load(dir)?;
    let mut out = std::io::stdout().lock();
    if !json_out {
        writeln!(
            out,
            "{:<28} {:>4}  {:<12} {:<11} {:<10} {:>10}  adapter",
            "tool", "tier", "side_effect", "idempotency", "rate", "cost_est"
        )?;
    }
    for c in reg.iter() {
        let rate = c
            .budgets
            .rate_per_tenant
            .map(|r| format!("{}/{}s", r.calls, r.per.as_secs()));
        let cost = c.budgets.cost_est.micros();
        if json_out {
            let line = json!({
                "tool": c.name, "consequence_tier": c.consequence_tier,
                "side_effect": c.side_effect.as_str(), "idempotency": c.idempotency.mode.as_str(),
                "rate_per_tenant": rate, "cost_est_micros": cost,
                "adapter": c.adapter.kind(), "file": c.source.display().to_string(),
            });
            writeln!(out, "{line}")?;
        } else {
            let idem = match c.idempotency.mode {
                IdempotencyMode::None => "none".to_owned(),
                m => m.as_str().to_owned(),
            };
            let cost = cost.map_or("unknown".to_owned(), |m| format!("${:.6}", m as f64 / 1e6));
            writeln!(
                out,
                "{:<28} {:>4}  {:<12} {:<11} {:<10} {:>10}  {}",
                c.name,
                c.consequence_tier,
                c.side_effect.as_str(),
                idem,
                rate.unwrap_or_else(|| "-".into()),
                cost,
                adapter_text(c)
            )?;
        }
    }
    Ok(())
}

async fn import(out_dir: &Path, force: bool, target: &[String]) -> anyhow::Result<()> {
    let server = keel_tools::import::server_from_target(target).context("no MCP server given")?;
    eprintln!("listing the tools of MCP server {server}…");
    let drafts = keel_tools::import::import(&server, &crate::config::secrets::ProcessEnv).await?;
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let existing: Vec<_> = drafts
        .iter()
        .map(|d| out_dir.join(&d.file_name))
        .filter(|p| p.exists())
        .collect();
    if !force && !existing.is_empty() {
        bail!(
            "would overwrite {} (pass --force to replace them)",
            existing
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let mut out = std::io::stdout().lock();
    for d in &drafts {
        let path = out_dir.join(&d.file_name);
        std::fs::write(&path, &d.yaml).with_context(|| format!("writing {}", path.display()))?;
        writeln!(out, "{}", path.display())?;
    }
    eprintln!(
        "wrote {} draft contract(s): review side_effect, tier, idempotency and budgets, then `keel tools check {}`",
        drafts.len(),
        out_dir.display()
    );
    Ok(())
}
