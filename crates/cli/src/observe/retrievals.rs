//! `keel retrievals …`: the sampled memory retrievals, and their relevance ratings (each a
//! `retrieval.rated` event, so projection rebuilds keep it).

use super::refresh;
use anyhow::Context;
use clap::Subcommand;
use keel_core::ExecId;
use keel_observe::rating::{self, Rate};
use keel_observe::sql::{Format, Scope};
use std::path::Path;

/// `keel retrievals` commands.
#[derive(Subcommand)]
pub enum RetrievalsCmd {
    /// The sampled retrievals, newest first.
    List {
        /// Only those not rated yet (the rating queue).
        #[arg(long)]
        unrated: bool,
        /// Only this tenant's.
        #[arg(long)]
        tenant: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Output format: table, json or csv.
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// Rate one sample: 0 irrelevant, 1 partly relevant, 2 relevant, 3 exactly what was needed.
    Rate {
        /// The execution that retrieved.
        exec_id: String,
        /// The seq of its `memory.retrieved` event (the `seq` column of `list`).
        seq: u64,
        /// The grade, 0–3.
        rating: u8,
        /// Who rates (default: `cli:$USER`).
        #[arg(long)]
        by: Option<String>,
        /// Why.
        #[arg(long)]
        note: Option<String>,
        /// Rate as this tenant (refused if the sample is another tenant's).
        #[arg(long)]
        tenant: Option<String>,
    },
}

/// Runs a retrievals command.
pub async fn retrievals(data: &Path, cmd: RetrievalsCmd) -> anyhow::Result<()> {
    let (log, mut p) = refresh(data).await?;
    match cmd {
        RetrievalsCmd::List {
            unrated,
            tenant,
            limit,
            format,
        } => {
            let format: Format = format.parse()?;
            let scope = tenant.map_or(Scope::Admin, Scope::Tenant);
            let rows = rating::samples(&*p, &scope, unrated, limit).await?;
            print!("{}", rows.render(format));
        }
        RetrievalsCmd::Rate {
            exec_id,
            seq,
            rating: grade,
            by,
            note,
            tenant,
        } => {
            let exec_id: ExecId = exec_id
                .parse()
                .with_context(|| format!("{exec_id:?} is not an execution id (expected a UUID)"))?;
            let scope = tenant.map_or(Scope::Admin, Scope::Tenant);
            let rate = Rate {
                exec_id,
                seq,
                rating: grade,
                rater: by.unwrap_or_else(crate::agents::operator),
                note,
            };
            let clock = keel_spine::clock::SystemClock;
            let event = rating::rate(&*log, &clock, &*p, &scope, rate).await?;
            p.catch_up(&*log).await?;
            eprintln!(
                "recorded: {} (control stream seq {})",
                keel_core::describe::describe(&event.payload),
                event.seq
            );
        }
    }
    Ok(())
}
