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
    // 2: offsets from transaction ids (docs/decisions/133): an append transaction's events take
    //    `((xid + offset_shift) << 16) + 1 …`, readers stop below the oldest transaction still
    //    running, and the single `head` row every append locked is gone. `offset_shift` lifts the
    //    new offsets above every offset already stored (the dense ones of version 1); the table
    //    lock keeps them from moving while it is computed.
    //    `keel_spine.expect` ends a transaction whose premise failed with its own SQLSTATE, so the
    //    writer can send a whole group's statements at once and tell "an execution moved" (it
    //    then decides the group row by row) from a storage error.
    "LOCK TABLE keel_spine.batches IN EXCLUSIVE MODE;
     DROP TABLE keel_spine.head;
     CREATE FUNCTION keel_spine.expect(ok boolean) RETURNS void LANGUAGE plpgsql AS $$
     BEGIN
         IF NOT ok THEN
             RAISE EXCEPTION 'an execution is not where the group expected it'
                 USING ERRCODE = 'KL001';
         END IF;
     END $$;
     INSERT INTO keel_spine.meta
     SELECT 'offset_shift', greatest(0, coalesce(max(last_offset), 0) / 65536 + 1
                                        - pg_current_xact_id()::text::int8)::text
     FROM keel_spine.batches;",
];

/// Bits of an offset below the transaction id: at most 65 535 events per append transaction.
pub(super) const OFFSET_BITS: u32 = 16;

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

/// The database's `offset_shift` (docs/decisions/133), after checking that this cluster's next
/// transaction ids still give offsets above every stored one: a database restored into another
/// cluster (a dump, logical replication) may have fewer transactions behind it than its offsets
/// say, and appends there would land behind events readers already passed.
pub(super) async fn offset_shift(client: &Client, shown: &Path) -> Result<i64, SpineError> {
    let row = client
        .query_one(
            "SELECT (SELECT value FROM keel_spine.meta WHERE key = 'offset_shift'),
                    pg_snapshot_xmax(pg_current_snapshot())::text::int8,
                    (SELECT coalesce(max(last_offset), 0) FROM keel_spine.batches)",
            &[],
        )
        .await
        .map_err(db_err(shown, "reading the offset shift"))?;
    let corrupt = |detail: String| SpineError::Corrupt {
        path: shown.to_owned(),
        detail,
    };
    let shift: i64 = row
        .get::<_, Option<String>>(0)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| corrupt("keel_spine.meta has no numeric offset_shift".into()))?;
    let (next_xid, newest): (i64, i64) = (row.get(1), row.get(2));
    let floor = next_xid.saturating_add(shift).checked_mul(1 << OFFSET_BITS);
    if floor.is_none_or(|f| f <= newest) {
        let needed = (newest >> OFFSET_BITS) + 1 - next_xid;
        return Err(corrupt(format!(
            "the stored offsets run ahead of this cluster's transaction ids (restored into \
             another cluster?): with no Keel process running, set keel_spine.meta's offset_shift \
             to at least {needed}"
        )));
    }
    Ok(shift)
}
