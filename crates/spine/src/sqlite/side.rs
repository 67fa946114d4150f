//! Side writes on the SQLite spine: the tool ledger (`tool_ledger`, migration 2) and the rate
//! budgets (`tool_rates`), written by the group commit's leader inside the group's transaction
//! (see [`crate::side`]), so they share its fsync and its write lock: no second connection, no
//! second commit, and the writer's cache stays valid (its own commits do not move
//! `data_version`).

use super::schema::map_err;
use crate::error::SpineError;
use crate::side::{LedgerRow, SideAnswer, SideWrite};
use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;

/// The rate budgets' table. Not a numbered migration: stores written before it existed had it
/// created by the tool layer's own rate store on first use, so it may already be there.
pub(super) const RATES_TABLE: &str = "CREATE TABLE IF NOT EXISTS tool_rates (
     tenant TEXT NOT NULL,
     tool   TEXT NOT NULL,
     tat_us INTEGER NOT NULL,
     PRIMARY KEY (tenant, tool)
 ) WITHOUT ROWID;";

/// Applies `side` in order on the writer's open transaction. A storage error fails the whole
/// group (the caller rolls it back).
pub(super) fn apply(
    conn: &Connection,
    path: &Path,
    side: &[SideWrite],
) -> Result<Vec<SideAnswer>, SpineError> {
    let mut answers = Vec::with_capacity(side.len());
    let mut refused = false;
    for write in side {
        if refused {
            answers.push(SideAnswer::Skipped);
            continue;
        }
        let answer = apply_one(conn, path, write)?;
        refused = answer == SideAnswer::Refused;
        answers.push(answer);
    }
    Ok(answers)
}

fn apply_one(conn: &Connection, path: &Path, write: &SideWrite) -> Result<SideAnswer, SpineError> {
    let err = |c| move |e| map_err(path, c, e);
    match write {
        SideWrite::LedgerBegin {
            tenant,
            key,
            tool,
            exec_id,
            call_id,
            now,
        } => {
            let inserted = conn
                .prepare_cached(
                    "INSERT INTO tool_ledger (tenant, key, tool, exec_id, call_id, state, started_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'started', ?6) ON CONFLICT DO NOTHING",
                )
                .and_then(|mut s| s.execute(params![tenant, key, tool, exec_id, call_id, now]))
                .map_err(err("recording a ledger key started"))?;
            if inserted == 1 {
                return Ok(SideAnswer::Begun);
            }
            // The conflict and this read are in one transaction: the row is there.
            match ledger_row(conn, tenant, key).map_err(err("reading a ledger entry"))? {
                Some(row) => Ok(SideAnswer::Existing(row)),
                None => Err(SpineError::Corrupt {
                    path: path.to_owned(),
                    detail: "a ledger key conflicted on insert but has no row".into(),
                }),
            }
        }
        SideWrite::LedgerFinish {
            tenant,
            key,
            now,
            status,
            output_ref,
            actual_cost,
        } => {
            conn.prepare_cached(
                "UPDATE tool_ledger SET state = 'finished', finished_at = ?3, status = ?4,
                     output_ref = ?5, actual_cost = ?6
                 WHERE tenant = ?1 AND key = ?2",
            )
            .and_then(|mut s| s.execute(params![tenant, key, now, status, output_ref, actual_cost]))
            .map_err(err("recording a ledger outcome"))?;
            Ok(SideAnswer::Written)
        }
        SideWrite::LedgerRelease { tenant, key } => {
            conn.prepare_cached("DELETE FROM tool_ledger WHERE tenant = ?1 AND key = ?2")
                .and_then(|mut s| s.execute(params![tenant, key]))
                .map_err(err("releasing a ledger key"))?;
            Ok(SideAnswer::Written)
        }
        SideWrite::RateTake {
            tenant,
            tool,
            interval_us,
            tolerance_us,
            now_us,
        } => {
            // The group holds the write lock (BEGIN IMMEDIATE), so no other process reads the
            // same arrival time between this read and the write.
            let tat: Option<i64> = conn
                .prepare_cached("SELECT tat_us FROM tool_rates WHERE tenant = ?1 AND tool = ?2")
                .and_then(|mut s| s.query_row(params![tenant, tool], |r| r.get(0)).optional())
                .map_err(err("reading a rate budget"))?;
            let tat = tat.unwrap_or(*now_us).max(*now_us);
            if tat.saturating_sub(*now_us) > *tolerance_us {
                return Ok(SideAnswer::Refused);
            }
            conn.prepare_cached(
                "INSERT INTO tool_rates (tenant, tool, tat_us) VALUES (?1, ?2, ?3)
                 ON CONFLICT (tenant, tool) DO UPDATE SET tat_us = excluded.tat_us",
            )
            .and_then(|mut s| s.execute(params![tenant, tool, tat.saturating_add(*interval_us)]))
            .map_err(err("taking a rate permit"))?;
            Ok(SideAnswer::Admitted)
        }
    }
}

/// The ledger's row for (tenant, key), if any.
pub(super) fn ledger_row(
    conn: &Connection,
    tenant: &str,
    key: &str,
) -> rusqlite::Result<Option<LedgerRow>> {
    conn.prepare_cached(
        "SELECT tool, exec_id, call_id, state, status, output_ref, actual_cost
         FROM tool_ledger WHERE tenant = ?1 AND key = ?2",
    )?
    .query_row(params![tenant, key], |r| {
        Ok(LedgerRow {
            tool: r.get(0)?,
            exec_id: r.get(1)?,
            call_id: r.get(2)?,
            state: r.get(3)?,
            status: r.get(4)?,
            output_ref: r.get(5)?,
            actual_cost: r.get(6)?,
        })
    })
    .optional()
}
