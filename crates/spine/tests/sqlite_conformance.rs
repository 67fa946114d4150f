//! The `EventLog` conformance suite against the embedded SQLite backend, on a real file.

use keel_spine::{SqliteLog, SqliteOptions};

async fn fresh() -> (SqliteLog, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let log = SqliteLog::open(dir.path().join("spine.db"), SqliteOptions::default()).unwrap();
    (log, dir)
}

keel_spine::conformance_tests!(fresh());
