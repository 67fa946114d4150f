//! Where the projections live: the [`ProjectionStore`] trait and the backend chosen by
//! configuration (an embedded SQLite file by default, PostgreSQL when a URL is given).
//!
//! Every backend keeps the same three tables (`traces.steps`, `gold.executions`,
//! `traces.retrieval_samples`) as a pure function of the spine's events, with the consumer's
//! checkpoint committed in the same transaction as the rows; the conformance tests in
//! `tests/projection_sql.rs` run against each.

use crate::error::Result;
use crate::sql::{Limits, Rows, Scope};
use async_trait::async_trait;
use keel_spine::{Committed, EventLog};
use std::path::Path;
use std::time::Duration;

/// Events read from the spine per applied batch.
pub const BATCH: usize = 4096;

/// The tables that a projection rebuild compares (and `keel export parquet` writes).
pub const TABLES: &[&str] = &["steps", "executions", "retrieval_samples"];

/// A projection store.
#[async_trait]
pub trait ProjectionStore: Send + Sync {
    /// Where the tables are, for messages (never contains a password).
    fn describe(&self) -> String;

    /// The first spine offset not yet applied, as of the last apply or open.
    fn next_offset(&self) -> u64;

    /// Applies a batch of committed events (in offset order) and moves the checkpoint past it,
    /// in one transaction. Events before the stored checkpoint are skipped, so a batch delivered
    /// twice — or by two consumers sharing the store — is applied once.
    async fn apply(&mut self, batch: &[Committed]) -> Result<()>;

    /// Empties every projection table and resets the checkpoint to offset 1.
    async fn reset(&mut self) -> Result<()>;

    /// The saved position of another consumer of the spine sharing this store (`otlp`, …);
    /// offset 1 when it never ran.
    async fn cursor(&self, name: &str) -> Result<u64>;

    /// Saves another consumer's position; `main` is the projections' own and refused.
    async fn set_cursor(&self, name: &str, next_offset: u64) -> Result<()>;

    /// Every row of `table` (one of [`TABLES`]) as text, in key order: what rebuild equality
    /// compares.
    async fn dump(&self, table: &str) -> Result<Vec<String>>;

    /// Runs one read-only query over the tables, as `scope` may see them.
    async fn query(&self, scope: &Scope, sql: &str) -> Result<Rows> {
        self.query_limited(scope, sql, &Limits::none()).await
    }

    /// [`ProjectionStore::query`] within `limits` (a [`crate::ObserveError::Limit`] past one).
    /// The query never blocks the async runtime's threads, and it is stopped on the database's
    /// side when the returned future is dropped (its caller went away).
    async fn query_limited(&self, scope: &Scope, sql: &str, limits: &Limits) -> Result<Rows>;

    /// The SQL dialect users write (`keel sql` prints it in errors and help).
    fn dialect(&self) -> &'static str;

    /// An expression for the UTC day (`YYYY-MM-DD` text) of time column `column`.
    fn day(&self, column: &str) -> String;

    /// The earliest day (`YYYY-MM-DD`) whose rows changed at or after spine offset `from`: the
    /// day of any new step, or the start day of any execution it updated. `None` when nothing
    /// changed. What the continuous Parquet export rewrites from.
    async fn changed_since(&self, from: u64) -> Result<Option<String>> {
        let rows = self
            .query(
                &Scope::Admin,
                &format!(
                    "SELECT min(d) FROM (
                         SELECT {} AS d FROM traces.steps WHERE log_offset >= {from}
                         UNION ALL
                         SELECT {} FROM gold.executions AS e
                         WHERE e.exec_id IN (SELECT exec_id FROM traces.steps WHERE log_offset >= {from})
                     ) AS changed",
                    self.day("ts"),
                    self.day("e.started_at")
                ),
            )
            .await?;
        Ok(rows
            .rows
            .first()
            .and_then(|r| r.first())
            .and_then(|v| v.as_str())
            .map(str::to_owned))
    }

    /// Applies every event the spine has committed past the checkpoint; returns how many.
    async fn catch_up(&mut self, log: &dyn EventLog) -> Result<u64> {
        let mut applied = 0u64;
        loop {
            let batch = log.read_all(self.next_offset(), BATCH).await?;
            if batch.is_empty() {
                return Ok(applied);
            }
            applied += batch.len() as u64;
            self.apply(&batch).await?;
        }
    }
}

/// Follows the spine until `stop` resolves: catches up, then applies new events as they commit
/// (polling every `poll` when idle). Each applied batch is checkpointed.
pub async fn follow(
    store: &mut dyn ProjectionStore,
    log: &dyn EventLog,
    poll: Duration,
    mut on_batch: impl FnMut(&[Committed]),
    stop: impl std::future::Future<Output = ()>,
) -> Result<()> {
    tokio::pin!(stop);
    loop {
        let batch = log.read_all(store.next_offset(), BATCH).await?;
        if batch.is_empty() {
            tokio::select! {
                _ = &mut stop => return Ok(()),
                _ = tokio::time::sleep(poll) => continue,
            }
        }
        store.apply(&batch).await?;
        on_batch(&batch);
    }
}

/// Which backend holds the projections.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The embedded default: a SQLite file of its own beside the spine.
    Sqlite(std::path::PathBuf),
    /// PostgreSQL at this URL (`postgres://…`).
    Postgres(String),
}

impl Backend {
    /// The backend configured by `url` (`KEEL_PROJECTIONS_URL`): PostgreSQL for a
    /// `postgres://` or `postgresql://` URL, else the SQLite file `default_file`.
    pub fn from_config(url: Option<&str>, default_file: &Path) -> Result<Self> {
        match url.map(str::trim).filter(|u| !u.is_empty()) {
            None => Ok(Backend::Sqlite(default_file.to_owned())),
            Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => {
                Ok(Backend::Postgres(u.to_owned()))
            }
            Some(u) if u.starts_with("sqlite:") => Ok(Backend::Sqlite(
                u.trim_start_matches("sqlite:")
                    .trim_start_matches("//")
                    .into(),
            )),
            Some(u) => Err(crate::ObserveError::Config {
                what: "KEEL_PROJECTIONS_URL".into(),
                detail: format!("{:?} is neither postgres://… nor sqlite:PATH", redact(u)),
            }),
        }
    }

    /// Opens (creating the tables if needed) the store.
    pub fn open(&self) -> futures::future::BoxFuture<'_, Result<Box<dyn ProjectionStore>>> {
        // Boxed here, where its types are concrete: callers' futures (axum handlers) then stay
        // provably `Send`.
        Box::pin(async move {
            Ok(match self {
                Backend::Sqlite(path) => {
                    Box::new(crate::Projector::open(path)?) as Box<dyn ProjectionStore>
                }
                #[cfg(feature = "postgres")]
                Backend::Postgres(url) => Box::new(crate::pg::PgProjections::connect(url).await?),
                #[cfg(not(feature = "postgres"))]
                Backend::Postgres(url) => {
                    return Err(crate::ObserveError::Config {
                        what: "KEEL_PROJECTIONS_URL".into(),
                        detail: format!(
                            "{:?}: this build has no PostgreSQL projection store (keel-observe's `postgres` feature)",
                            redact(url)
                        ),
                    });
                }
            })
        })
    }
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// The schema-qualified name of a projection table, as queries write it.
// Only the PostgreSQL store uses it.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) fn qualified(table: &str) -> String {
    match table {
        "executions" => "gold.executions".into(),
        other => format!("traces.{other}"),
    }
}

/// Refuses the projections' own checkpoint name as another consumer's cursor.
pub(crate) fn check_cursor_name(name: &str) -> Result<()> {
    if name == "main" {
        return Err(crate::ObserveError::Config {
            what: "cursor name".into(),
            detail: "`main` is the projections' own checkpoint".into(),
        });
    }
    Ok(())
}

/// The key a dump of `table` is ordered by; refuses anything but a projection table.
pub(crate) fn dump_key(table: &str) -> Result<&'static str> {
    match table {
        "executions" => Ok("exec_id"),
        "steps" | "retrieval_samples" => Ok("log_offset"),
        _ => Err(crate::ObserveError::QueryRefused {
            reason: format!(
                "{table:?} is not a projection table ({})",
                TABLES.join(", ")
            ),
        }),
    }
}
