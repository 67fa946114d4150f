//! `keel tokens …`: API tokens, scoped to a tenant and roles.

use anyhow::{Context, bail};
use clap::Subcommand;
use keel_server::auth::{Role, Tokens};
use keel_spine::clock::{Clock, SystemClock};
use std::path::Path;

/// `keel tokens …`.
#[derive(Subcommand)]
pub enum TokensCmd {
    /// Create a token; prints only the token (store it: only its hash is kept).
    Create {
        /// The tenant it is scoped to.
        #[arg(long)]
        tenant: String,
        /// agent, approver, operator or admin (repeat for several).
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        /// The name its decisions are recorded under (default: ROLE@TENANT).
        #[arg(long)]
        name: Option<String>,
    },
}

/// Runs a tokens command.
pub fn tokens(data: &Path, cmd: TokensCmd) -> anyhow::Result<()> {
    match cmd {
        TokensCmd::Create {
            tenant,
            roles,
            name,
        } => {
            if tenant.trim().is_empty() {
                bail!("--tenant: must not be empty");
            }
            let mut parsed = Vec::new();
            for r in &roles {
                parsed.push(Role::parse(r).with_context(|| {
                    format!("--role {r:?} is not one of agent, approver, operator, admin")
                })?);
            }
            let name = name.unwrap_or_else(|| format!("{}@{tenant}", roles.join("+")));
            let store = Tokens::open(data)?;
            let token = store.create(&tenant, &parsed, &name, &SystemClock.now().to_rfc3339())?;
            println!("{token}");
        }
    }
    Ok(())
}
