//! `keel economics [--days N] [--tenant T] [--json]`: the seed's per-strategy table (cost per
//! success per strategy version, cheapest first), cost by tenant, by tool and by model, and cost
//! per success per strategy version per day, from the projections (so it agrees with `keel sql`).
//! On the machine that holds the store it sees every tenant, as `keel sql` does; `--tenant`
//! narrows it to one.

use crate::observe::refresh;
use clap::Args;
use keel_observe::economics;
use std::path::Path;

/// `keel economics` arguments.
#[derive(Args)]
pub struct EconomicsArgs {
    /// Executions started in the last N days (the seed's `CURRENT_DATE - 14`).
    #[arg(long, default_value_t = 14)]
    days: u32,
    /// One tenant's executions only.
    #[arg(long)]
    tenant: Option<String>,
    /// One JSON object (with the per-day series) instead of tables.
    #[arg(long)]
    json: bool,
}

/// Runs `keel economics`.
pub async fn run(data: &Path, args: EconomicsArgs) -> anyhow::Result<()> {
    let now = keel_spine::clock::Clock::now(&keel_spine::clock::SystemClock);
    let since = economics::since(now, args.days)?;
    let (_log, p) = refresh(data).await?;
    let e = economics::compute(&*p, &since, args.tenant.as_deref()).await?;
    if args.json {
        println!("{}", serde_json::to_string(&e)?);
    } else {
        print!("{}", economics::render(&e));
    }
    Ok(())
}
