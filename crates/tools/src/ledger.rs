//! The idempotency ledger: durable memory of side-effecting calls, keyed by (tenant, key).
//!
//! Protocol, per call with a key: [`Ledger::begin`] records `started` durably *before* the adapter
//! runs (or returns the entry already there); [`Ledger::finish`] records the outcome after;
//! [`Ledger::release`] forgets a call that definitely did not act (so it may be tried again). A
//! repeat of a finished key is answered from the ledger without calling the tool; an entry found
//! `started` means a call whose outcome is unknown, resolved by the caller's policy.
//!
//! The trait is small on purpose so a PostgreSQL ledger can follow. The SQLite ledger lives in
//! the spine's own file (`spine.db`, table `tool_ledger`, created by the spine's migrations).

use crate::error::ToolError;
use async_trait::async_trait;
use keel_core::Cost;
use keel_core::payload::ToolStatus;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Where a keyed call stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LedgerState {
    /// Begun; no outcome recorded (in flight, or interrupted by a crash).
    Started,
    /// Outcome recorded.
    Finished,
}

/// What `begin` is told about the call.
#[derive(Clone, Debug)]
pub struct LedgerStart<'a> {
    /// Tenant (keys never collide across tenants).
    pub tenant: &'a str,
    /// The idempotency key.
    pub key: &'a str,
    /// Tool name.
    pub tool: &'a str,
    /// Execution making the call.
    pub exec_id: &'a str,
    /// The `tool.called` call id.
    pub call_id: &'a str,
    /// Now, RFC 3339.
    pub now: &'a str,
}

/// The recorded outcome of a finished call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerOutcome {
    /// Status the call ended with (`ok` or `invalid_output`: the tool acted).
    pub status: ToolStatus,
    /// Blob of the output.
    pub output_ref: Option<String>,
    /// What it cost.
    pub actual_cost: Cost,
}

/// One ledger row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerEntry {
    /// Tool name.
    pub tool: String,
    /// Execution that began it.
    pub exec_id: String,
    /// Call id that began it.
    pub call_id: String,
    /// Started or finished.
    pub state: LedgerState,
    /// The outcome, once finished.
    pub outcome: Option<LedgerOutcome>,
}

/// What `begin` found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Begin {
    /// No entry existed; this call now owns the key (`started` is durable).
    Started,
    /// An entry existed; nothing was written.
    Existing(LedgerEntry),
}

/// Durable idempotency ledger. Contract: `begin` is atomic (of two concurrent begins on one key,
/// exactly one gets [`Begin::Started`]) and durable on return; `finish` and `release` are durable
/// on return; `get` sees every returned write.
#[async_trait]
pub trait Ledger: Send + Sync {
    /// Records `started` for the key unless an entry exists, which is returned instead.
    async fn begin(&self, start: &LedgerStart<'_>) -> Result<Begin, ToolError>;
    /// Records the outcome of the call holding the key.
    async fn finish(
        &self,
        tenant: &str,
        key: &str,
        outcome: &LedgerOutcome,
        now: &str,
    ) -> Result<(), ToolError>;
    /// Forgets the key: the call definitely did not act, so it may be tried again.
    async fn release(&self, tenant: &str, key: &str) -> Result<(), ToolError>;
    /// The entry for the key, if any.
    async fn get(&self, tenant: &str, key: &str) -> Result<Option<LedgerEntry>, ToolError>;
}

/// The ledger in the spine's SQLite file.
#[derive(Clone)]
pub struct SqliteLedger {
    path: PathBuf,
    conn: Arc<Mutex<Connection>>,
}

fn status_str(s: ToolStatus) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

impl SqliteLedger {
    /// Opens the ledger in the spine file at `path` (`DIR/spine.db`). The spine must have been
    /// opened (and so migrated) first: the table is one of its migrations.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, ToolError> {
        Self::open_with(path, true)
    }

    /// Like [`SqliteLedger::open`]; `durable: false` skips fsync (for benchmarks of the CPU path
    /// and throwaway stores, like the spine's `Durability::Off`).
    pub fn open_with(path: impl AsRef<Path>, durable: bool) -> Result<Self, ToolError> {
        let path = path.as_ref().to_owned();
        let err = |context| {
            let path = path.clone();
            move |e: rusqlite::Error| ToolError::Ledger {
                path,
                context,
                detail: e.to_string(),
            }
        };
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(err("opening"))?;
        // Same durability as the spine: `started` must survive a crash that follows it.
        let sync = if durable { "FULL" } else { "OFF" };
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync}; PRAGMA busy_timeout = 10000;"
        ))
        .map_err(err("setting pragmas"))?;
        conn.query_row("SELECT count(*) FROM tool_ledger WHERE 0", [], |_| Ok(()))
            .map_err(err(
                "finding table tool_ledger (open the spine first: its migrations create it)",
            ))?;
        Ok(Self {
            path,
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    async fn with<T: Send + 'static>(
        &self,
        context: &'static str,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, ToolError> {
        let conn = self.conn.clone();
        let path = self.path.clone();
        let fail = move |detail: String| ToolError::Ledger {
            path,
            context,
            detail,
        };
        let fail2 = fail.clone();
        tokio::task::spawn_blocking(move || {
            let guard = match conn.lock() {
                Ok(g) => g,
                Err(_) => return Err(fail("connection lock poisoned".into())),
            };
            f(&guard).map_err(|e| fail(e.to_string()))
        })
        .await
        .map_err(|e| fail2(e.to_string()))?
    }
}

fn read_entry(conn: &Connection, tenant: &str, key: &str) -> rusqlite::Result<Option<LedgerEntry>> {
    conn.prepare_cached(
        "SELECT tool, exec_id, call_id, state, status, output_ref, actual_cost
         FROM tool_ledger WHERE tenant = ?1 AND key = ?2",
    )?
    .query_row(params![tenant, key], |r| {
        let state: String = r.get(3)?;
        let status: Option<String> = r.get(4)?;
        let cost: Option<i64> = r.get(6)?;
        let state = if state == "finished" {
            LedgerState::Finished
        } else {
            LedgerState::Started
        };
        let outcome = status
            .and_then(|s| serde_json::from_value::<ToolStatus>(serde_json::Value::String(s)).ok())
            .map(|status| LedgerOutcome {
                status,
                output_ref: r.get(5).ok().flatten(),
                actual_cost: cost.map_or(Cost::Unknown, |c| Cost::Known(c.max(0) as u64)),
            });
        Ok(LedgerEntry {
            tool: r.get(0)?,
            exec_id: r.get(1)?,
            call_id: r.get(2)?,
            state,
            outcome: if state == LedgerState::Finished {
                outcome
            } else {
                None
            },
        })
    })
    .optional()
}

#[async_trait]
impl Ledger for SqliteLedger {
    async fn begin(&self, s: &LedgerStart<'_>) -> Result<Begin, ToolError> {
        let row = [s.tenant, s.key, s.tool, s.exec_id, s.call_id, s.now].map(str::to_owned);
        self.with("recording started", move |conn| {
            let inserted = conn
                .prepare_cached(
                    "INSERT INTO tool_ledger (tenant, key, tool, exec_id, call_id, state, started_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'started', ?6) ON CONFLICT DO NOTHING",
                )?
                .execute(params![row[0], row[1], row[2], row[3], row[4], row[5]])?;
            if inserted == 1 {
                return Ok(Begin::Started);
            }
            match read_entry(conn, &row[0], &row[1])? {
                Some(e) => Ok(Begin::Existing(e)),
                // Released between our insert and read: a rare race; report it as ours to retry.
                None => Err(rusqlite::Error::QueryReturnedNoRows),
            }
        })
        .await
    }

    async fn finish(
        &self,
        tenant: &str,
        key: &str,
        outcome: &LedgerOutcome,
        now: &str,
    ) -> Result<(), ToolError> {
        let (tenant, key, now) = (tenant.to_owned(), key.to_owned(), now.to_owned());
        let status = status_str(outcome.status);
        let output_ref = outcome.output_ref.clone();
        let cost = outcome.actual_cost.micros().map(|c| c as i64);
        self.with("recording the outcome", move |conn| {
            conn.prepare_cached(
                "UPDATE tool_ledger SET state = 'finished', finished_at = ?3, status = ?4,
                     output_ref = ?5, actual_cost = ?6
                 WHERE tenant = ?1 AND key = ?2",
            )?
            .execute(params![tenant, key, now, status, output_ref, cost])?;
            Ok(())
        })
        .await
    }

    async fn release(&self, tenant: &str, key: &str) -> Result<(), ToolError> {
        let (tenant, key) = (tenant.to_owned(), key.to_owned());
        self.with("releasing a key", move |conn| {
            conn.prepare_cached("DELETE FROM tool_ledger WHERE tenant = ?1 AND key = ?2")?
                .execute(params![tenant, key])?;
            Ok(())
        })
        .await
    }

    async fn get(&self, tenant: &str, key: &str) -> Result<Option<LedgerEntry>, ToolError> {
        let (tenant, key) = (tenant.to_owned(), key.to_owned());
        self.with("reading an entry", move |conn| {
            read_entry(conn, &tenant, &key)
        })
        .await
    }
}
