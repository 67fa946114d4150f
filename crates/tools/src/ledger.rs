//! The idempotency ledger: durable memory of side-effecting calls, keyed by (tenant, key).
//!
//! Protocol, per call with a key: [`Ledger::begin`] records `started` durably *before* the adapter
//! runs (or returns the entry already there); [`Ledger::finish`] records the outcome after;
//! [`Ledger::release`] forgets a call that definitely did not act (so it may be tried again). A
//! repeat of a finished key is answered from the ledger without calling the tool; an entry found
//! `started` means a call whose outcome is unknown, resolved by the caller's policy.
//!
//! The trait is small on purpose so a PostgreSQL ledger can follow. The SQLite ledger lives in
//! the spine's own file (`spine.db`, table `tool_ledger`, created by the spine's migrations) and
//! is written by the spine's group commit.

use crate::error::ToolError;
use async_trait::async_trait;
use keel_core::Cost;
use keel_core::payload::ToolStatus;
use keel_spine::side::{LedgerRow, SideAnswer, SideWrite};
use keel_spine::{Durability, EventLog, SqliteLog, SqliteOptions};
use std::path::{Path, PathBuf};

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
    /// The spine store this ledger's rows live in, if they are spine side writes
    /// ([`keel_spine::EventLog::side_store`]): a runner whose spine has the same store carries
    /// `begin` and `finish` in the call's own appends. `None` (the default): always call the
    /// ledger.
    fn side_store(&self) -> Option<&Path> {
        None
    }
}

/// The ledger in the spine's SQLite file (table `tool_ledger`), written by the spine's own group
/// commit: a write here is a request of side writes only (see [`keel_spine::side`]); a
/// [`crate::ToolRunner`] on the same spine carries `begin` and `finish` in the appends of the
/// call's events instead, so they cost no commit of their own.
#[derive(Clone)]
pub struct SqliteLedger {
    log: SqliteLog,
}

pub(crate) fn status_str(s: ToolStatus) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The side write that begins a keyed call.
pub(crate) fn begin_write(s: &LedgerStart<'_>) -> SideWrite {
    SideWrite::LedgerBegin {
        tenant: s.tenant.to_owned(),
        key: s.key.to_owned(),
        tool: s.tool.to_owned(),
        exec_id: s.exec_id.to_owned(),
        call_id: s.call_id.to_owned(),
        now: s.now.to_owned(),
    }
}

/// The side write that records a keyed call's outcome.
pub(crate) fn finish_write(
    tenant: &str,
    key: &str,
    outcome: &LedgerOutcome,
    now: &str,
) -> SideWrite {
    SideWrite::LedgerFinish {
        tenant: tenant.to_owned(),
        key: key.to_owned(),
        now: now.to_owned(),
        status: status_str(outcome.status),
        output_ref: outcome.output_ref.clone(),
        actual_cost: outcome
            .actual_cost
            .micros()
            .map(|c| i64::try_from(c).unwrap_or(i64::MAX)),
    }
}

/// What the spine answered to a [`begin_write`].
pub(crate) fn begin_of(answer: Option<SideAnswer>) -> Result<Begin, ToolError> {
    match answer {
        Some(SideAnswer::Begun) => Ok(Begin::Started),
        Some(SideAnswer::Existing(row)) => Ok(Begin::Existing(entry_of(row))),
        other => Err(unexpected("beginning a key", other)),
    }
}

fn unexpected(context: &'static str, answer: Option<SideAnswer>) -> ToolError {
    ToolError::Ledger {
        path: PathBuf::new(),
        context,
        detail: format!("the spine answered {answer:?}"),
    }
}

/// A stored row as the ledger's entry.
pub(crate) fn entry_of(row: LedgerRow) -> LedgerEntry {
    let state = if row.state == "finished" {
        LedgerState::Finished
    } else {
        LedgerState::Started
    };
    let outcome = row
        .status
        .and_then(|s| serde_json::from_value::<ToolStatus>(serde_json::Value::String(s)).ok())
        .map(|status| LedgerOutcome {
            status,
            output_ref: row.output_ref,
            actual_cost: row.actual_cost.map_or(Cost::Unknown, |c| {
                Cost::Known(u64::try_from(c).unwrap_or(0))
            }),
        });
    LedgerEntry {
        tool: row.tool,
        exec_id: row.exec_id,
        call_id: row.call_id,
        state,
        outcome: if state == LedgerState::Finished {
            outcome
        } else {
            None
        },
    }
}

impl SqliteLedger {
    /// The ledger in the spine this handle writes (share the spine's handle: one writer).
    pub fn on(log: &SqliteLog) -> Self {
        Self { log: log.clone() }
    }

    /// The ledger in the spine file at `path` (`DIR/spine.db`): through the handle this process
    /// already has open on it (one writer), else a new one (creating and migrating the file if
    /// needed).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, ToolError> {
        Self::open_with(path, true)
    }

    /// Like [`SqliteLedger::open`]; `durable: false` skips fsync (for benchmarks of the CPU path
    /// and throwaway stores, like the spine's `Durability::Off`).
    pub fn open_with(path: impl AsRef<Path>, durable: bool) -> Result<Self, ToolError> {
        let durability = if durable {
            Durability::Full
        } else {
            Durability::Off
        };
        let log = SqliteLog::open_shared(path, SqliteOptions { durability })?;
        Ok(Self { log })
    }

    async fn write(&self, write: SideWrite) -> Result<SideAnswer, ToolError> {
        let mut answers = self.log.write_side(vec![write], true).await?;
        answers.pop().ok_or_else(|| unexpected("writing", None))
    }
}

#[async_trait]
impl Ledger for SqliteLedger {
    async fn begin(&self, s: &LedgerStart<'_>) -> Result<Begin, ToolError> {
        begin_of(Some(self.write(begin_write(s)).await?))
    }

    async fn finish(
        &self,
        tenant: &str,
        key: &str,
        outcome: &LedgerOutcome,
        now: &str,
    ) -> Result<(), ToolError> {
        self.write(finish_write(tenant, key, outcome, now)).await?;
        Ok(())
    }

    async fn release(&self, tenant: &str, key: &str) -> Result<(), ToolError> {
        let release = SideWrite::LedgerRelease {
            tenant: tenant.to_owned(),
            key: key.to_owned(),
        };
        self.write(release).await?;
        Ok(())
    }

    async fn get(&self, tenant: &str, key: &str) -> Result<Option<LedgerEntry>, ToolError> {
        Ok(self.log.ledger_entry(tenant, key).await?.map(entry_of))
    }

    fn side_store(&self) -> Option<&Path> {
        self.log.side_store()
    }
}
