//! `keel strategies …`: strategies with their effective autonomy, and re-certification after a
//! demotion.

use crate::agents::{ConfigArgs, operator};
use clap::Subcommand;
use std::path::Path;

/// `keel strategies …`.
#[derive(Subcommand)]
pub enum StrategiesCmd {
    /// Strategies with their configured and effective maximum autonomous tier.
    List,
    /// Re-certify a demoted strategy version: its configured autonomy applies again.
    Certify {
        /// Strategy name or full version.
        strategy: String,
        /// Why.
        #[arg(long, default_value = "re-certified by a person")]
        reason: String,
        /// Who (recorded on the event).
        #[arg(long = "as")]
        by: Option<String>,
    },
}

/// Runs a strategies command.
pub async fn strategies(data: &Path, cfg: &ConfigArgs, cmd: StrategiesCmd) -> anyhow::Result<()> {
    let env = crate::demo::open(data, &cfg.config())?;
    let control = env.agent.control.state().await?;
    match cmd {
        StrategiesCmd::List => {
            let mut rows = Vec::new();
            for s in env.strategies.iter() {
                let effective = control.max_autonomous_tier(&s.version, s.max_autonomous_tier);
                let note = match control.demotions.get(&s.version) {
                    Some(d) => format!(
                        "DEMOTED at {} ({:.0}% of {} decisions rejected)",
                        d.at,
                        d.rejection_rate * 100.0,
                        d.sample
                    ),
                    None => String::new(),
                };
                rows.push(vec![
                    s.name.clone(),
                    s.version.clone(),
                    s.max_autonomous_tier.to_string(),
                    effective.to_string(),
                    note,
                ]);
            }
            crate::out::table(
                &["strategy", "version", "max tier", "effective tier", "note"],
                rows,
            );
        }
        StrategiesCmd::Certify {
            strategy,
            reason,
            by,
        } => {
            let s = crate::agents::strategy(&env.strategies, &strategy, &cfg.strategies)?;
            let was = control.demotions.contains_key(&s.version);
            crate::experiments::certification_record(data, &control, &s.version).await?;
            env.agent
                .control
                .certify(&s.version, &by.unwrap_or_else(operator), &reason)
                .await?;
            eprintln!(
                "{} certified{}; maximum autonomous tier {}",
                s.version,
                if was { " (demotion lifted)" } else { "" },
                s.max_autonomous_tier
            );
        }
    }
    Ok(())
}
