//! `keel kill …`: kill-switches per tenant, strategy (agent) and tool.

use super::{control, operator};
use anyhow::{Context, bail};
use clap::Subcommand;
use keel_runtime::control::Scope;
use std::path::Path;

/// `keel kill …`.
#[derive(Subcommand)]
pub enum KillCmd {
    /// Turn a kill-switch on: running executions stop at their next step; a killed tool refuses.
    Set {
        /// tenant, strategy (or agent), or tool.
        scope: String,
        /// The tenant, strategy name or tool name.
        name: String,
        /// Why (recorded on the executions it stops).
        #[arg(long, default_value = "killed by an operator")]
        reason: String,
        /// Only in this tenant (default: every tenant).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Turn a kill-switch off.
    Clear {
        /// tenant, strategy (or agent), or tool.
        scope: String,
        /// The tenant, strategy name or tool name.
        name: String,
        /// The tenant the switch was set in (default: the every-tenant switch).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// List the switches that are on.
    List,
}

fn scope(s: &str) -> anyhow::Result<Scope> {
    Scope::parse(s).with_context(|| format!("scope {s:?} is not one of tenant, strategy, tool"))
}

/// The known tools of `./tools` when `name` is not one of them; `None` when it is, or when there
/// is no readable contracts folder here to ask.
fn unknown_tool(name: &str) -> Option<String> {
    let registry = keel_tools::Registry::load_dir(Path::new("tools"), None).ok()?;
    if registry.get(name).is_some() {
        return None;
    }
    let known: Vec<String> = registry.iter().map(|c| c.name.clone()).collect();
    Some(crate::out::known(&known))
}

/// Runs a kill-switch command.
pub async fn kill(data: &Path, cmd: KillCmd) -> anyhow::Result<()> {
    let control = control(data)?;
    match cmd {
        KillCmd::Set {
            scope: s,
            name,
            reason,
            tenant,
        } => {
            control
                .kill(scope(&s)?, &name, tenant.as_deref(), &reason, &operator())
                .await?;
            eprintln!("kill-switch on: {s} {name}");
            if scope(&s)? == Scope::Tool
                && let Some(known) = unknown_tool(&name)
            {
                crate::out::hint(&format!(
                    "no contract {name:?} in tools/ (known: {known}); the switch is on anyway, \
                     for a tool added later"
                ));
            }
        }
        KillCmd::Clear {
            scope: s,
            name,
            tenant,
        } => {
            if !control
                .clear(scope(&s)?, &name, tenant.as_deref(), &operator())
                .await?
            {
                bail!("no kill-switch {s} {name} is on");
            }
            eprintln!("kill-switch off: {s} {name}");
        }
        KillCmd::List => {
            let switches = control.switches().await?;
            if switches.is_empty() {
                crate::out::hint("no kill-switch is on");
            }
            crate::out::table(
                &["scope", "name", "tenant", "since", "by", "reason"],
                switches.iter().map(|sw| {
                    vec![
                        sw.key.scope.to_string(),
                        sw.key.name.clone(),
                        sw.key.tenant.clone().unwrap_or_else(|| "*".into()),
                        sw.info.at.to_string(),
                        sw.info.by.clone(),
                        sw.info.reason.clone(),
                    ]
                }),
            );
        }
    }
    Ok(())
}
