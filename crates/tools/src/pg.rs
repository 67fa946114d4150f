//! The idempotency ledger and the shared rate budgets on PostgreSQL, in the spine's own database
//! (tables `keel_spine.tool_ledger` and `keel_spine.tool_rates`, created by the PostgreSQL spine's
//! migrations), so every worker on every machine shares one ledger and one budget per
//! (tenant, tool).
//!
//! Both are written by the spine's group commit, as on SQLite (docs/decisions/121 and 125): a
//! call here is a request of side writes only on the spine handle's writer, and a
//! [`crate::ToolRunner`] on the same spine carries them in the appends of the call's events
//! instead, so a keyed side effect costs no commit of its own; a fast rate is taken in blocks of
//! permits, as on SQLite (decision 129). The statements (an
//! `INSERT … ON CONFLICT DO NOTHING` begin, a conditional GCRA upsert) live in `keel-spine`.

use crate::blocks::{Blocks, TakeCommit};
use crate::error::ToolError;
use crate::ledger::{
    Begin, Ledger, LedgerEntry, LedgerOutcome, LedgerStart, begin_of, begin_write, entry_of,
    finish_write,
};
use async_trait::async_trait;
use keel_spine::side::{SideAnswer, SideWrite};
use keel_spine::{EventLog, PgEventLog, PgOptions};
use std::path::{Path, PathBuf};

fn connect_err(e: keel_spine::SpineError, rates: bool) -> ToolError {
    let (path, context, detail) = (PathBuf::from("postgres"), "connecting", e.to_string());
    match rates {
        true => ToolError::Rates {
            path,
            context,
            detail,
        },
        false => ToolError::Ledger {
            path,
            context,
            detail,
        },
    }
}

/// The ledger in the PostgreSQL spine's database.
#[derive(Clone)]
pub struct PgLedger {
    log: PgEventLog,
}

impl PgLedger {
    /// The ledger in the database this spine handle writes (share the spine's handle: one
    /// writer, and a runner on it carries the ledger's writes in its appends).
    pub fn on(log: &PgEventLog) -> Self {
        Self { log: log.clone() }
    }

    /// Connects a spine handle of its own to the database at `url` (creating the schema if
    /// needed). Prefer [`PgLedger::on`] the process's spine handle.
    pub async fn connect(url: &str) -> Result<Self, ToolError> {
        let log = PgEventLog::connect(url, PgOptions::default())
            .await
            .map_err(|e| connect_err(e, false))?;
        Ok(Self { log })
    }

    async fn write(&self, write: SideWrite) -> Result<SideAnswer, ToolError> {
        let mut answers = self.log.write_side(vec![write], true).await?;
        answers.pop().ok_or_else(|| ToolError::Ledger {
            path: self.log.shown().to_owned(),
            context: "writing",
            detail: "the spine answered nothing".into(),
        })
    }
}

#[async_trait]
impl Ledger for PgLedger {
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
        EventLog::side_store(&self.log)
    }
}

/// Rate budgets in the PostgreSQL spine's database, shared by every worker on every machine.
/// A take alone commits without waiting for the flush (as on SQLite: every process sees it at
/// once; a server crash may forget the last few admissions). A fast rate is taken in blocks of
/// ~50 ms of permits per commit, as [`crate::SqliteRates`] takes it (the same bookkeeping).
pub type PgRates = Blocks<PgEventLog>;

#[async_trait]
impl TakeCommit for PgEventLog {
    async fn commit(&self, take: SideWrite) -> Result<SideAnswer, ToolError> {
        let answers = self.write_side(vec![take], false).await?;
        answers.into_iter().next().ok_or_else(|| ToolError::Rates {
            path: PgEventLog::shown(self).to_owned(),
            context: "deciding a rate budget",
            detail: "the spine answered nothing".into(),
        })
    }

    fn side_store(&self) -> Option<&Path> {
        EventLog::side_store(self)
    }

    fn shown(&self) -> PathBuf {
        PgEventLog::shown(self).to_owned()
    }
}

impl Blocks<PgEventLog> {
    /// The rate store in the database this spine handle writes (share the spine's handle).
    pub fn on(log: &PgEventLog) -> Self {
        Blocks::new(log.clone())
    }

    /// Connects a spine handle of its own to the database at `url` (creating the schema if
    /// needed). Prefer [`PgRates::on`] the process's spine handle.
    pub async fn connect(url: &str) -> Result<Self, ToolError> {
        let log = PgEventLog::connect(url, PgOptions::default())
            .await
            .map_err(|e| connect_err(e, true))?;
        Ok(Self::on(&log))
    }
}
