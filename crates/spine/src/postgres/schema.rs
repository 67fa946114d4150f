//! The PostgreSQL spine's tables (schema `keel_spine`) and their versioned migrations.
//!
//! Version lives in `keel_spine.meta`; migrations run under an advisory lock so processes starting
//! together migrate once; a database written by a newer Keel is refused.

use crate::error::SpineError;
use std::path::Path;
use tokio_postgres::Client;

/// Serialises migrations across processes ("keelspin").
const MIGRATION_LOCK: i64 = 0x6b65_656c_7370_696e;

/// Migration `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: the log, as in the embedded store: one row per appended batch (its events as a JSON
    //    array, sealed fields included), with the global offset of its first event. `head` is the
    //    single-row offset counter every append transaction takes FOR UPDATE (docs/decisions/090):
    //    offsets are handed out in commit order. `executions` keeps each execution's tenant, last
    //    seq, end and lease (owner, epoch, expiry), so the conditional append and the epoch fence
    //    are one locked point read. Subject keys, links and erasures, keel-tools' idempotency
    //    ledger and shared rate budgets (GCRA arrival times) as in the embedded store.
    "CREATE TABLE keel_spine.head (
         id          INTEGER PRIMARY KEY CHECK (id = 1),
         last_offset BIGINT  NOT NULL
     );
     INSERT INTO keel_spine.head VALUES (1, 0);
     CREATE TABLE keel_spine.batches (
         first_offset BIGINT PRIMARY KEY,
         last_offset  BIGINT NOT NULL UNIQUE,
         exec_id      TEXT   NOT NULL,
         first_seq    BIGINT NOT NULL,
         last_seq     BIGINT NOT NULL,
         body         TEXT   NOT NULL,
         UNIQUE (exec_id, first_seq)
     );
     CREATE TABLE keel_spine.executions (
         exec_id       TEXT        PRIMARY KEY,
         tenant        TEXT        NOT NULL,
         last_seq      BIGINT      NOT NULL DEFAULT 0,
         ended         BOOLEAN     NOT NULL DEFAULT false,
         lease_owner   TEXT,
         lease_epoch   BIGINT      NOT NULL DEFAULT 0,
         lease_expires TIMESTAMPTZ
     );
     CREATE INDEX executions_unfinished ON keel_spine.executions (tenant, exec_id) WHERE NOT ended;
     CREATE TABLE keel_spine.subject_keys (
         digest     TEXT  PRIMARY KEY,
         tenant     TEXT  NOT NULL,
         subject    TEXT  NOT NULL,
         key        BYTEA NOT NULL,
         created_at TIMESTAMPTZ NOT NULL DEFAULT now()
     );
     CREATE TABLE keel_spine.subject_execs (
         exec_id TEXT PRIMARY KEY,
         digest  TEXT NOT NULL
     );
     CREATE INDEX subject_execs_by_digest ON keel_spine.subject_execs (digest);
     CREATE TABLE keel_spine.erasures (
         digest     TEXT        NOT NULL,
         tenant     TEXT        NOT NULL,
         erased_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
         executions BIGINT      NOT NULL,
         blobs      BIGINT      NOT NULL
     );
     CREATE TABLE keel_spine.tool_ledger (
         tenant      TEXT   NOT NULL,
         key         TEXT   NOT NULL,
         tool        TEXT   NOT NULL,
         exec_id     TEXT   NOT NULL,
         call_id     TEXT   NOT NULL,
         state       TEXT   NOT NULL CHECK (state IN ('started', 'finished')),
         started_at  TEXT   NOT NULL,
         finished_at TEXT,
         status      TEXT,
         output_ref  TEXT,
         actual_cost BIGINT,
         PRIMARY KEY (tenant, key)
     );
     CREATE TABLE keel_spine.tool_rates (
         tenant TEXT   NOT NULL,
         tool   TEXT   NOT NULL,
         tat_us BIGINT NOT NULL,
         PRIMARY KEY (tenant, tool)
     );",
];

/// The schema version this build writes.
pub fn latest_version() -> i64 {
    MIGRATIONS.len() as i64
}

pub(super) fn db_err<'a>(
    shown: &'a Path,
    context: &'static str,
) -> impl Fn(tokio_postgres::Error) -> SpineError + 'a {
    move |e| SpineError::Storage {
        context,
        path: shown.to_owned(),
        // The server's message (never the password: it is not part of any message).
        // Else the client's, with its cause (a refused certificate, a reset connection).
        detail: e.as_db_error().map_or_else(
            || match std::error::Error::source(&e) {
                Some(cause) => format!("{e}: {cause}"),
                None => e.to_string(),
            },
            |d| d.message().to_owned(),
        ),
    }
}

/// Creates or migrates the schema to [`latest_version`].
pub(super) async fn migrate(client: &mut Client, shown: &Path) -> Result<(), SpineError> {
    let tx = client
        .transaction()
        .await
        .map_err(db_err(shown, "starting migration"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(db_err(shown, "locking for migration"))?;
    tx.batch_execute(
        "CREATE SCHEMA IF NOT EXISTS keel_spine;
         CREATE TABLE IF NOT EXISTS keel_spine.meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
    )
    .await
    .map_err(db_err(shown, "creating schema keel_spine"))?;
    let version: i64 = tx
        .query_opt(
            "SELECT value FROM keel_spine.meta WHERE key = 'schema_version'",
            &[],
        )
        .await
        .map_err(db_err(shown, "reading the schema version"))?
        .map(|r| r.get::<_, String>(0))
        .map_or(Ok(0), |v| v.parse())
        .map_err(|_| SpineError::Corrupt {
            path: shown.to_owned(),
            detail: "keel_spine.meta holds a schema_version that is not a number".into(),
        })?;
    if version > latest_version() {
        return Err(SpineError::NewerStore {
            path: shown.to_owned(),
            found: version,
            supported: latest_version(),
        });
    }
    for sql in MIGRATIONS.iter().skip(version.max(0) as usize) {
        tx.batch_execute(sql)
            .await
            .map_err(db_err(shown, "migrating"))?;
    }
    tx.execute(
        "INSERT INTO keel_spine.meta VALUES ('schema_version', $1)
         ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
        &[&latest_version().to_string()],
    )
    .await
    .map_err(db_err(shown, "recording the schema version"))?;
    tx.commit()
        .await
        .map_err(db_err(shown, "committing migration"))
}
