//! The one check that stands between a reading command and a directory without a store.
//!
//! Opening the spine, the projections or memory creates their files when they are missing, which
//! is what `keel run` or `keel serve` on a fresh directory wants. For a reading command it is
//! wrong: a mistyped `--data` would silently create an empty store and print nothing, which reads
//! as "no data" instead of "wrong place". So every command that does not create a store calls
//! [`require`] before anything opens a file.

use anyhow::bail;
use std::path::Path;

/// The spine's file in a store directory: a store exists when this file does.
pub const SPINE_FILE: &str = "spine.db";

/// Ok when `data` holds a store; otherwise an error naming the directory. Creates nothing.
pub fn require(data: &Path) -> anyhow::Result<()> {
    // A PostgreSQL spine is the store; its database says what exists.
    if data.join(SPINE_FILE).is_file() || crate::config::current().spine_postgres.is_some() {
        return Ok(());
    }
    bail!(
        "no Keel store at {} ({SPINE_FILE} not found); check --data (or KEEL_DATA), or create \
         a store with `keel run`, `keel demo` or `keel serve`",
        data.display()
    )
}
