//! `keel feedback ID --rating N [--comment TEXT]`: a user's rating of an execution's result
//! (1 bad … 5 excellent), recorded as a `feedback.given` event and folded into
//! `gold.executions` (`feedback_count`, `feedback_rating`).

use crate::observe::{exec_by_trace, refresh};
use anyhow::{Context, bail};
use clap::Args;
use keel_core::{ExecId, TraceId};
use keel_observe::feedback::{self, Give};
use keel_observe::sql::Scope;
use std::path::Path;

/// `keel feedback` arguments.
#[derive(Args)]
pub struct FeedbackArgs {
    /// The execution rated: its id (UUID) or its trace id (32 hex digits).
    id: String,
    /// 1 (bad) to 5 (excellent).
    #[arg(long)]
    rating: u8,
    /// Why, optionally (refused for an execution about a data subject: it could hold their
    /// personal data).
    #[arg(long)]
    comment: Option<String>,
    /// Who rates (default: `cli:$USER`).
    #[arg(long)]
    by: Option<String>,
    /// Rate as this tenant (an execution of another tenant is then not found).
    #[arg(long)]
    tenant: Option<String>,
}

/// Runs `keel feedback`.
pub async fn run(data: &Path, args: FeedbackArgs) -> anyhow::Result<()> {
    let (log, mut p) = refresh(data).await?;
    let id = args.id.as_str();
    // 32 hex digits without hyphens is a trace id (it would also parse as a UUID).
    let exec_id = match id.parse::<ExecId>() {
        Ok(exec) if id.contains('-') => exec,
        _ => match id.parse::<TraceId>() {
            Ok(trace) => exec_by_trace(data, &*log, trace)
                .await?
                .with_context(|| format!("no execution with trace id {trace}"))?,
            Err(_) => {
                bail!("{id:?} is neither an execution id (UUID) nor a trace id (32 hex digits)")
            }
        },
    };
    let scope = args.tenant.map_or(Scope::Admin, Scope::Tenant);
    let give = Give {
        exec_id,
        rating: args.rating,
        rater: args.by.unwrap_or_else(crate::agents::operator),
        comment: args.comment,
    };
    let event = feedback::give(&*log, &keel_spine::clock::SystemClock, &*p, &scope, give).await?;
    p.catch_up(&*log).await?;
    eprintln!(
        "recorded: {} (control stream seq {})",
        keel_core::describe::describe(&event.payload),
        event.seq
    );
    Ok(())
}
