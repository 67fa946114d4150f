//! `keel budgets set TENANT --monthly-usd N [--alarm-at P] [--hard-stop]` and `keel budgets
//! list`: per-tenant monthly cost budgets (`budget.set` events on the control stream), and the
//! check `keel run` makes before it starts an execution ([`keel_observe::budget::check`]).

use crate::observe::{open_log, open_projections};
use anyhow::bail;
use clap::Subcommand;
use keel_core::TenantId;
use keel_core::payload::BudgetSet;
use keel_observe::budget;
use keel_spine::EventLog;
use keel_spine::clock::SystemClock;
use std::path::Path;

/// `keel budgets` commands.
#[derive(Subcommand)]
pub enum BudgetsCmd {
    /// Set a tenant's monthly cost budget (replaces the one before).
    Set {
        /// The tenant.
        tenant: String,
        /// The budget per calendar month (UTC), in US dollars.
        #[arg(long)]
        monthly_usd: f64,
        /// Append `budget.alarmed` (once a month) when spend reaches this percent.
        #[arg(long, default_value_t = 80)]
        alarm_at: u8,
        /// Refuse new executions of the tenant once the month's budget is spent.
        #[arg(long)]
        hard_stop: bool,
        /// Who sets it (default: `cli:$USER`).
        #[arg(long)]
        by: Option<String>,
    },
    /// Every tenant's budget and this month's spend.
    List,
}

/// Runs a `keel budgets` command.
pub async fn run(data: &Path, cmd: BudgetsCmd) -> anyhow::Result<()> {
    let log = open_log(data)?;
    match cmd {
        BudgetsCmd::Set {
            tenant,
            monthly_usd,
            alarm_at,
            hard_stop,
            by,
        } => {
            if !monthly_usd.is_finite() || !(0.0..=1e9).contains(&monthly_usd) {
                bail!("--monthly-usd: {monthly_usd} is not an amount of dollars from 0 to 1e9");
            }
            let b = BudgetSet {
                tenant,
                monthly_micros: (monthly_usd * 1e6).round() as u64,
                alarm_percent: alarm_at,
                hard_stop,
                by: by.unwrap_or_else(crate::agents::operator),
            };
            let e = budget::set(&*log, &SystemClock, b).await?;
            eprintln!("recorded: {}", keel_core::describe::describe(&e.payload));
        }
        BudgetsCmd::List => {
            let mut p = open_projections(data).await?;
            p.catch_up(&*log).await?;
            let now = keel_spine::clock::Clock::now(&SystemClock);
            for b in budget::list(&*log).await? {
                let spent = budget::spent(&*p, &TenantId(b.tenant.clone()), now).await?;
                println!(
                    "{}\t${:.2}/month\tspent ${:.4}\talarm at {}%\t{}",
                    b.tenant,
                    b.monthly_micros as f64 / 1e6,
                    spent as f64 / 1e6,
                    b.alarm_percent,
                    if b.hard_stop {
                        "hard stop"
                    } else {
                        "alarm only"
                    }
                );
            }
        }
    }
    Ok(())
}

/// Before `keel run` starts an execution of `tenant`: the budget's alarm and hard stop.
pub async fn guard(data: &Path, log: &dyn EventLog, tenant: &str) -> anyhow::Result<()> {
    let mut p = open_projections(data).await?;
    p.catch_up(log).await?;
    if let Err(over) = budget::check(log, &SystemClock, &*p, &TenantId(tenant.to_owned())).await? {
        bail!("{over}");
    }
    Ok(())
}
