//! `keel project`: bring the projections up to date with the spine, follow it, or rebuild them.

use super::{open_log, open_projections};
use std::path::Path;
use std::time::Duration;

/// Catches the projections up (after emptying them when `rebuild`); keeps following when `follow`.
pub async fn project(data: &Path, follow: bool, rebuild: bool) -> anyhow::Result<()> {
    let log = open_log(data)?;
    let mut p = open_projections(data).await?;
    if rebuild {
        p.reset().await?;
        eprintln!("projections emptied; rebuilding from offset 1");
    }
    let applied = p.catch_up(&*log).await?;
    eprintln!(
        "applied {applied} events into {}; checkpoint at offset {}",
        p.describe(),
        p.next_offset()
    );
    if follow {
        eprintln!("following the spine (Ctrl-C to stop)");
        keel_observe::store::follow(
            &mut *p,
            &*log,
            Duration::from_millis(100),
            |batch| eprintln!("applied {} events", batch.len()),
            async {
                let _ = tokio::signal::ctrl_c().await;
            },
        )
        .await?;
    }
    Ok(())
}
