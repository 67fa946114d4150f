//! Guardrails that act with only `keel serve` running: every `experiments.check_secs` seconds
//! (keel.toml; default 60, 0 for never) the server checks every running experiment's guardrails
//! over every tenant and acts on each new breach as the experiment says — what
//! `keel experiments check` does once. A breach is recorded once, so a check that finds nothing
//! new changes nothing; a failed check is reported and the next one runs as planned.

use keel_runtime::embedded::Embedded;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Starts the periodic check on a task of its own (nothing when `secs` is 0); `who` prefixes
/// its messages.
pub fn spawn(data: &Path, env: &Embedded, secs: u64, who: &'static str) {
    if secs == 0 {
        eprintln!("{who}: experiment guardrails are not checked (experiments.check_secs = 0)");
        return;
    }
    let data: PathBuf = data.to_path_buf();
    let control = env.agent.control.clone();
    let strategies = env.strategies.clone();
    let clock = env.agent.clock.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(secs));
        // A check that overran is not made up for with a burst.
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let now = clock.now();
            match crate::experiments::check_guardrails(&data, &control, &strategies, None, now)
                .await
            {
                Ok(acted) => {
                    for line in acted {
                        eprintln!("{who}: guardrail breached, acted on: {line}");
                    }
                }
                Err(e) => eprintln!("{who}: experiment guardrails: {e:#}"),
            }
        }
    });
}
