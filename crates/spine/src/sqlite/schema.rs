//! Opening a store file: pragmas, identity checks and versioned migrations.
//!
//! The file carries `application_id` = [`APPLICATION_ID`] (so a foreign SQLite file is refused)
//! and `user_version` = the schema version. Migrations are numbered, in code, applied in one
//! transaction each; a file with a version newer than [`MIGRATIONS`] knows is refused.

use super::{Durability, storage_err};
use crate::error::SpineError;
use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags};
use std::path::Path;

/// "KEEL" in ASCII: marks a SQLite file as a Keel store.
pub const APPLICATION_ID: i64 = 0x4B45_454C;

/// WAL size (in pages, 4 MiB) at which the writer checkpoints after a commit. A checkpoint writes
/// each page once however many commits rewrote it, so fewer, larger checkpoints copy less; much
/// larger WALs fall out of cache. Measured 256 / 1000 / 4000 / 16000: 1000 was best or near it
/// for single, batched and 64-way concurrent appends.
pub const WAL_CHECKPOINT_PAGES: u32 = 1000;

/// Schema migrations; migration `i` takes the store from version `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    // 1: the log. One row per appended batch (like a Kafka record batch): the batch's events as
    //    a JSON array, with the global offset of its first event. A batch is written once and
    //    never changed, so it is atomic by construction, and one row per append keeps the
    //    per-event cost of the index off the hot path. The `events` view unpacks it for humans
    //    and SQL tools. `executions` is written only when an execution starts and when it ends.
    "CREATE TABLE batches (
         first_offset INTEGER PRIMARY KEY,
         last_offset  INTEGER NOT NULL,
         exec_id      TEXT    NOT NULL,
         first_seq    INTEGER NOT NULL,
         last_seq     INTEGER NOT NULL,
         body         TEXT    NOT NULL
     );
     CREATE UNIQUE INDEX batches_by_exec ON batches (exec_id, last_seq);
     CREATE TABLE executions (
         exec_id TEXT    PRIMARY KEY,
         tenant  TEXT    NOT NULL,
         ended   INTEGER NOT NULL DEFAULT 0
     ) WITHOUT ROWID;
     CREATE INDEX executions_unfinished ON executions (exec_id) WHERE ended = 0;
     CREATE VIEW events AS
         SELECT b.first_offset + j.key AS log_offset,
                b.exec_id,
                b.first_seq + j.key AS seq,
                e.tenant,
                json_extract(j.value, '$.type') AS type,
                j.value AS body
         FROM batches AS b
         JOIN executions AS e USING (exec_id)
         JOIN json_each(b.body) AS j;",
    // 2: the idempotency ledger of keel-tools, in the same file so a tool call's `started` mark
    //    is as durable as the events around it. One row per (tenant, key): `started` is written
    //    (durably) before a side-effecting call runs, `finished` with the recorded outcome after.
    //    A row left `started` is a call whose outcome is unknown (a crash mid-call).
    "CREATE TABLE tool_ledger (
         tenant      TEXT    NOT NULL,
         key         TEXT    NOT NULL,
         tool        TEXT    NOT NULL,
         exec_id     TEXT    NOT NULL,
         call_id     TEXT    NOT NULL,
         state       TEXT    NOT NULL CHECK (state IN ('started', 'finished')),
         started_at  TEXT    NOT NULL,
         finished_at TEXT,
         status      TEXT,
         output_ref  TEXT,
         actual_cost INTEGER,
         PRIMARY KEY (tenant, key)
     ) WITHOUT ROWID;",
    // 3: kill-switches of the runtime, per tenant, strategy or tool. (The gates issue turns control
    //    state into a fold of control events; until then this table is the control state.)
    "CREATE TABLE kill_switches (
         scope  TEXT NOT NULL CHECK (scope IN ('tenant', 'strategy', 'tool')),
         name   TEXT NOT NULL,
         reason TEXT NOT NULL,
         set_at TEXT NOT NULL,
         PRIMARY KEY (scope, name)
     ) WITHOUT ROWID;",
    // 4: crypto-shredding (docs/decisions/030-crypto-shredding.md). One key per (tenant, subject),
    //    found by a digest so the subject's name is stored only beside its key and goes with it;
    //    executions linked to a subject; and a tombstone per erasure (digest, time, counts).
    "CREATE TABLE subject_keys (
         digest     TEXT PRIMARY KEY,
         tenant     TEXT NOT NULL,
         subject    TEXT NOT NULL,
         key        BLOB NOT NULL,
         created_at TEXT NOT NULL
     ) WITHOUT ROWID;
     CREATE TABLE subject_execs (
         exec_id TEXT PRIMARY KEY,
         digest  TEXT NOT NULL
     ) WITHOUT ROWID;
     CREATE INDEX subject_execs_by_digest ON subject_execs (digest);
     CREATE TABLE erasures (
         digest     TEXT NOT NULL,
         tenant     TEXT NOT NULL,
         erased_at  TEXT NOT NULL,
         executions INTEGER NOT NULL,
         blobs      INTEGER NOT NULL
     );",
];

/// The schema version this build writes.
pub fn latest_version() -> i64 {
    MIGRATIONS.len() as i64
}

/// Maps an engine error to a spine error, recognising corruption.
pub fn map_err(path: &Path, context: &'static str, e: rusqlite::Error) -> SpineError {
    use rusqlite::ffi::ErrorCode;
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => SpineError::Corrupt {
            path: path.to_owned(),
            detail: format!("{context}: {e}"),
        },
        _ => storage_err(path, context, e),
    }
}

/// Opens a connection with Keel's pragmas.
pub fn connect(
    path: &Path,
    durability: Durability,
    writer: bool,
) -> Result<Connection, SpineError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| map_err(path, "opening", e))?;
    // Plans must not depend on bound values. Without this, the bundled SQLite (built with STAT4)
    // marks a statement whose parameter meets an indexed column as "re-plan on rebind", and
    // the statement cache clears bindings on every reuse, so each cached query was parsed and
    // planned again on every call: most of a point read's CPU. We keep no statistics, so the
    // plans are the same.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
        .map_err(|e| map_err(path, "setting the query planner stability guarantee", e))?;
    let sync = match durability {
        Durability::Full => "FULL",
        Durability::Off => "OFF",
    };
    // WAL: readers never block the writer. The writer checkpoints itself (autocheckpoint):
    // a checkpoint that runs between its commits always completes, so the WAL restarts and later
    // commits overwrite it in place, which fsyncs about twice as fast as appending to a growing
    // file. A background checkpointer racing a busy writer never completes and lets the WAL grow.
    let pragmas = format!(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = {sync};
         PRAGMA busy_timeout = 10000;
         PRAGMA cache_size = -16000;
         {}",
        if writer {
            format!("PRAGMA wal_autocheckpoint = {WAL_CHECKPOINT_PAGES};")
        } else {
            "PRAGMA query_only = 1;".to_owned()
        }
    );
    conn.execute_batch(&pragmas)
        .map_err(|e| map_err(path, "setting pragmas", e))?;
    Ok(conn)
}

/// Checks the file's identity and version, and migrates it to the latest schema.
pub fn migrate(conn: &mut Connection, path: &Path) -> Result<(), SpineError> {
    let err = |c| move |e| map_err(path, c, e);
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(err("starting migration"))?;
    let app_id: i64 = tx
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .map_err(err("reading application_id"))?;
    let version: i64 = tx
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(err("reading user_version"))?;
    let has_tables: bool = tx
        .query_row("SELECT count(*) > 0 FROM sqlite_master", [], |r| r.get(0))
        .map_err(err("reading the schema"))?;
    if app_id != APPLICATION_ID && (app_id != 0 || has_tables) {
        return Err(SpineError::NotKeelStore {
            path: path.to_owned(),
            found: app_id,
        });
    }
    if version > latest_version() {
        return Err(SpineError::NewerStore {
            path: path.to_owned(),
            found: version,
            supported: latest_version(),
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        tx.execute_batch(sql).map_err(err("migrating"))?;
        tx.pragma_update(None, "user_version", i as i64 + 1)
            .map_err(err("migrating"))?;
    }
    tx.pragma_update(None, "application_id", APPLICATION_ID)
        .map_err(err("stamping application_id"))?;
    tx.commit().map_err(err("committing migration"))?;
    Ok(())
}
