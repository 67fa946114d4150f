//! The `EventLog` conformance suite against the embedded SQLite backend, on a real file.

// Test helpers too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use keel_spine::{SqliteLog, SqliteOptions};

async fn fresh() -> (SqliteLog, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let log = SqliteLog::open(dir.path().join("spine.db"), SqliteOptions::default()).unwrap();
    (log, dir)
}

keel_spine::conformance_tests!(fresh());
keel_spine::lease_conformance_tests!(fresh());
