//! `keel events <exec_id>`: an execution's events as JSON lines.

use anyhow::{Context, bail};
use keel_core::ExecId;
use keel_spine::{EventLog, SqliteLog, SqliteOptions};
use std::io::Write;
use std::path::Path;

/// The spine file inside a data directory.
pub fn spine_path(data: &Path) -> std::path::PathBuf {
    data.join("spine.db")
}

/// Prints every event of `exec_id` to stdout, one JSON object per line.
pub async fn print(data: &Path, exec_id: &str) -> anyhow::Result<()> {
    let id: ExecId = exec_id
        .parse()
        .with_context(|| format!("{exec_id:?} is not an execution id (expected a UUID)"))?;
    let path = spine_path(data);
    if !path.exists() {
        bail!("no Keel store at {} (is --data right?)", path.display());
    }
    let log = SqliteLog::open(&path, SqliteOptions::default())?;
    let events = log.read(id, 1).await?;
    if events.is_empty() {
        bail!("no execution {id} in {}", path.display());
    }
    let mut out = std::io::stdout().lock();
    for e in events {
        writeln!(out, "{}", e.encode())?;
    }
    out.flush()?;
    Ok(())
}
