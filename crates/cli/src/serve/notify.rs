//! Gate notifications in `keel serve` and `keel worker`: the project's `notifications.yaml`
//! (beside its strategies folder), with each webhook's secret read from the environment here, at
//! the edge. Without the file, nothing is sent. The deliveries' progress is kept where the
//! configuration's spine is (`DIR/notify.db`, or a PostgreSQL spine's database).

use crate::agents::ConfigArgs;
use anyhow::Context;
use keel_runtime::embedded::Embedded;
use keel_runtime::notify::{Notifier, Webhooks};
use keel_spine::EventLog;
use keel_spine::clock::SystemClock;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The notifications file of the project whose strategies are `cfg.strategies`.
pub fn file(cfg: &ConfigArgs) -> PathBuf {
    cfg.strategies
        .parent()
        .unwrap_or(Path::new(""))
        .join("notifications.yaml")
}

/// Starts sending the notifications `cfg`'s project configures (if it has a notifications
/// file) on a task of its own; `who` prefixes its messages. Links in bodies are absolute when
/// the file names a `public_url`, else when `public_origin` is given.
pub async fn spawn(
    data: &Path,
    cfg: &ConfigArgs,
    env: &Embedded,
    public_origin: Option<&str>,
    who: &'static str,
) -> anyhow::Result<()> {
    let file = file(cfg);
    if !file.exists() {
        return Ok(());
    }
    let hooks = Webhooks::load(&file)?;
    if hooks.hooks.is_empty() {
        return Ok(());
    }
    let resolved = hooks.resolve(|var| std::env::var(var).ok())?;
    let store = crate::config::current().deliveries(data).await?;
    let shown = store.shown();
    let log: Arc<dyn EventLog> = env.agent.log.clone();
    let public_url = hooks
        .public_url
        .clone()
        .or_else(|| public_origin.map(|o| o.trim_end_matches('/').to_owned()));
    let notifier = Notifier::new(log, Arc::new(SystemClock), store, resolved, public_url)
        .context("gate notifications")?;
    let names: Vec<&str> = hooks.hooks.iter().map(|h| h.name.as_str()).collect();
    eprintln!(
        "{who}: gate notifications to {} (from {}; deliveries recorded in {})",
        names.join(", "),
        file.display(),
        shown
    );
    Arc::new(notifier).spawn(move |e| eprintln!("{who}: gate notifications: {e}"));
    Ok(())
}
