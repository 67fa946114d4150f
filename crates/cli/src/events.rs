//! `keel events <exec_id>`: an execution's events as JSON lines.

use anyhow::{Context, bail};
use keel_core::ExecId;
use std::io::Write;
use std::path::Path;

/// Prints every event of `exec_id` to stdout, one JSON object per line.
pub async fn print(data: &Path, exec_id: &str) -> anyhow::Result<()> {
    let id: ExecId = exec_id
        .parse()
        .with_context(|| format!("{exec_id:?} is not an execution id (expected a UUID)"))?;
    let log = crate::observe::open_log(data)?;
    let events = log.read(id, 1).await?;
    if events.is_empty() {
        bail!("no execution {id} in {}", log.shown());
    }
    let mut out = std::io::stdout().lock();
    for e in events {
        writeln!(out, "{}", e.encode())?;
    }
    out.flush()?;
    Ok(())
}
