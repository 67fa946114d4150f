//! Worker leases on the SQLite spine ([`crate::lease`]): so two `keel worker` processes on one
//! store never drive the same execution.
//!
//! A `leases` table (one row per execution ever leased: tenant, owner, epoch, expiry in
//! milliseconds of the machine's clock, which every process on the store shares) is created on
//! first use, so stores that never lease are unchanged. Lease operations run on a connection of
//! their own in `BEGIN IMMEDIATE` transactions: SQLite's write lock serialises claimers, so no
//! two ever take the same execution, and a claim is one short transaction that never waits on
//! an append for longer than one group commit. Whether an execution has ended is read from
//! `executions`, never copied here. The fence itself is [`fence`], called by the writer for a
//! fenced append inside the group's transaction, on the row as that transaction sees it.

use super::{SqliteLog, schema};
use crate::error::SpineError;
use crate::lease::{Lease, Leases};
use crate::log::AppendAck;
use crate::side::{Appended, SideWrite};
use async_trait::async_trait;
use keel_core::{Event, ExecId, TenantId};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior};
use std::path::{Path, PathBuf};
use std::time::Duration;

const CREATE: &str = "CREATE TABLE IF NOT EXISTS leases (
     exec_id TEXT    PRIMARY KEY,
     tenant  TEXT    NOT NULL,
     owner   TEXT,
     epoch   INTEGER NOT NULL,
     expires INTEGER
 ) WITHOUT ROWID";

/// Now, in milliseconds since the Unix epoch, as SQLite sees it (one clock for every process
/// on the machine, like the PostgreSQL spine's `clock_timestamp()`).
const NOW_MS: &str = "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)";

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn ttl_ms(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 4)
}

/// The epoch check of a fenced append, inside the writer's transaction: `Some(LeaseLost)` if
/// the execution is held by an epoch other than `epoch` (or was never leased).
pub(super) fn fence(
    conn: &Connection,
    path: &Path,
    exec_id: ExecId,
    exec_key: &str,
    epoch: u64,
) -> Result<Option<SpineError>, SpineError> {
    let err = |c| move |e| schema::map_err(path, c, e);
    conn.prepare_cached(CREATE)
        .and_then(|mut s| s.execute([]))
        .map_err(err("creating the leases table"))?;
    let current: i64 = conn
        .prepare_cached("SELECT epoch FROM leases WHERE exec_id = ?1")
        .and_then(|mut s| s.query_row([exec_key], |r| r.get(0)).optional())
        .map_err(err("reading the execution's lease"))?
        .unwrap_or(0);
    let current = u64::try_from(current).unwrap_or(0);
    Ok((current != epoch).then_some(SpineError::LeaseLost {
        exec_id,
        epoch,
        current_epoch: current,
    }))
}

/// Runs `f` in a write transaction on a connection of its own, on a blocking thread.
async fn write<T: Send + 'static>(
    path: PathBuf,
    context: &'static str,
    f: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T> + Send + 'static,
) -> Result<T, SpineError> {
    transaction(path, TransactionBehavior::Immediate, context, f).await
}

/// Runs `f` in a transaction of `behavior` (deferred: reads only, no write lock taken unless
/// the table must be created) on a connection of its own, on a blocking thread.
async fn transaction<T: Send + 'static>(
    path: PathBuf,
    behavior: TransactionBehavior,
    context: &'static str,
    f: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T> + Send + 'static,
) -> Result<T, SpineError> {
    tokio::task::spawn_blocking(move || {
        let mut conn = schema::connect(&path, super::Durability::Full, true)?;
        let tx = conn
            .transaction_with_behavior(behavior)
            .map_err(|e| schema::map_err(&path, context, e))?;
        tx.execute_batch(CREATE)
            .map_err(|e| schema::map_err(&path, "creating the leases table", e))?;
        let out = f(&tx).map_err(|e| schema::map_err(&path, context, e))?;
        tx.commit()
            .map_err(|e| schema::map_err(&path, context, e))?;
        Ok(out)
    })
    .await
    .map_err(|_| SpineError::Closed)?
}

fn last_seq(tx: &Connection, exec_key: &str) -> rusqlite::Result<u64> {
    tx.prepare_cached("SELECT coalesce(max(last_seq), 0) FROM batches WHERE exec_id = ?1")?
        .query_row([exec_key], |r| r.get(0))
}

/// Takes `exec_key` for `owner` (the caller checked it is claimable); returns the new epoch.
fn take(
    tx: &Connection,
    exec_key: &str,
    tenant: &str,
    owner: &str,
    ttl: i64,
) -> rusqlite::Result<i64> {
    tx.prepare_cached(&format!(
        "INSERT INTO leases (exec_id, tenant, owner, epoch, expires)
         VALUES (?1, ?2, ?3, 1, {NOW_MS} + ?4)
         ON CONFLICT (exec_id) DO UPDATE SET
             epoch = CASE WHEN owner IS excluded.owner THEN epoch ELSE epoch + 1 END,
             owner = excluded.owner, expires = excluded.expires
         RETURNING epoch"
    ))?
    .query_row((exec_key, tenant, owner, ttl), |r| r.get(0))
}

fn lease(
    path: &Path,
    key: &str,
    tenant: String,
    owner: &str,
    epoch: i64,
    last_seq: u64,
) -> Result<Lease, SpineError> {
    Ok(Lease {
        exec_id: key.parse().map_err(|_| SpineError::Corrupt {
            path: path.to_owned(),
            detail: format!("the leases table has a malformed exec_id {key:?}"),
        })?,
        tenant: TenantId(tenant),
        owner: owner.to_owned(),
        epoch: u64::try_from(epoch).unwrap_or(0),
        last_seq,
    })
}

#[async_trait]
impl Leases for SqliteLog {
    async fn acquire(
        &self,
        exec_id: ExecId,
        tenant: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, SpineError> {
        let (key, tenant, owner_s) = (exec_id.to_string(), tenant.to_owned(), owner.to_owned());
        let ttl = ttl_ms(ttl);
        let got = write(self.path().to_owned(), "acquiring a lease", move |tx| {
            let exec: Option<(String, bool)> = tx
                .prepare_cached("SELECT tenant, ended FROM executions WHERE exec_id = ?1")?
                .query_row([&key], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            match &exec {
                Some((t, ended)) if *ended || *t != tenant => return Ok(None),
                _ => {}
            }
            let held: Option<(String, Option<String>, bool)> = tx
                .prepare_cached(&format!(
                    "SELECT tenant, owner, coalesce(expires <= {NOW_MS}, 1) FROM leases
                     WHERE exec_id = ?1"
                ))?
                .query_row([&key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()?;
            if let Some((t, holder, expired)) = held {
                let other = holder.as_deref().is_some_and(|h| h != owner_s);
                if t != tenant || (other && !expired) {
                    return Ok(None);
                }
            }
            let epoch = take(tx, &key, &tenant, &owner_s, ttl)?;
            Ok(Some((
                key.clone(),
                tenant.clone(),
                epoch,
                last_seq(tx, &key)?,
            )))
        })
        .await?;
        got.map(|(key, tenant, epoch, seq)| lease(self.path(), &key, tenant, owner, epoch, seq))
            .transpose()
    }

    async fn claim(
        &self,
        owner: &str,
        ttl: Duration,
        limit: usize,
    ) -> Result<Vec<Lease>, SpineError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let owner_s = owner.to_owned();
        let ttl = ttl_ms(ttl);
        let claimable = format!(
            "SELECT e.exec_id FROM executions AS e LEFT JOIN leases AS l USING (exec_id)
             WHERE e.ended = 0 AND e.tenant = ?1
               AND (l.owner IS NULL OR l.expires <= {NOW_MS})
             ORDER BY e.exec_id LIMIT ?2"
        );
        let taken = write(self.path().to_owned(), "claiming executions", move |tx| {
            // Tenants with claimable work, in random order so that when there are more tenants
            // than `limit`, no tenant is always last.
            let tenants: Vec<String> = tx
                .prepare_cached(&format!(
                    "SELECT tenant FROM (SELECT DISTINCT e.tenant FROM executions AS e
                         LEFT JOIN leases AS l USING (exec_id)
                         WHERE e.ended = 0 AND (l.owner IS NULL OR l.expires <= {NOW_MS}))
                     ORDER BY random() LIMIT ?1"
                ))?
                .query_map([to_i64(limit as u64)], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            if tenants.is_empty() {
                return Ok(Vec::new());
            }
            // An equal share per tenant: a tenant with a backlog of thousands takes no more of
            // this claim than one with a single execution waiting.
            let share = to_i64(limit.div_ceil(tenants.len()) as u64);
            let mut out = Vec::new();
            for tenant in tenants {
                let keys: Vec<String> = tx
                    .prepare_cached(&claimable)?
                    .query_map((&tenant, share), |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?;
                for key in keys {
                    if out.len() >= limit {
                        break;
                    }
                    let epoch = take(tx, &key, &tenant, &owner_s, ttl)?;
                    let seq = last_seq(tx, &key)?;
                    out.push((key, tenant.clone(), epoch, seq));
                }
            }
            Ok(out)
        })
        .await?;
        let mut leases = taken
            .into_iter()
            .map(|(key, tenant, epoch, seq)| lease(self.path(), &key, tenant, owner, epoch, seq))
            .collect::<Result<Vec<_>, _>>()?;
        leases.sort_by_key(|l| l.exec_id);
        Ok(leases)
    }

    async fn renew(&self, leases: &[Lease], ttl: Duration) -> Result<Vec<Lease>, SpineError> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let held: Vec<(String, i64, String)> = leases
            .iter()
            .map(|l| (l.exec_id.to_string(), to_i64(l.epoch), l.owner.clone()))
            .collect();
        let ttl = ttl_ms(ttl);
        let kept = write(self.path().to_owned(), "renewing leases", move |tx| {
            let mut kept = Vec::with_capacity(held.len());
            let mut renew = tx.prepare_cached(&format!(
                "UPDATE leases SET expires = {NOW_MS} + ?4
                 WHERE exec_id = ?1 AND epoch = ?2 AND owner = ?3
                   AND NOT EXISTS (SELECT 1 FROM executions AS e
                                   WHERE e.exec_id = ?1 AND e.ended = 1)"
            ))?;
            for (key, epoch, owner) in &held {
                kept.push(renew.execute((key, epoch, owner, ttl))? > 0);
            }
            Ok(kept)
        })
        .await?;
        Ok(leases
            .iter()
            .zip(kept)
            .filter(|(_, kept)| !kept)
            .map(|(l, _)| l.clone())
            .collect())
    }

    async fn release(&self, lease: &Lease) -> Result<(), SpineError> {
        let (key, epoch, owner) = (
            lease.exec_id.to_string(),
            to_i64(lease.epoch),
            lease.owner.clone(),
        );
        write(self.path().to_owned(), "releasing a lease", move |tx| {
            tx.prepare_cached(
                "UPDATE leases SET owner = NULL, expires = NULL
                 WHERE exec_id = ?1 AND epoch = ?2 AND owner = ?3",
            )?
            .execute((key, epoch, owner))
        })
        .await?;
        Ok(())
    }

    async fn holders(&self) -> Result<Vec<String>, SpineError> {
        let path = self.path().to_owned();
        transaction(
            path,
            TransactionBehavior::Deferred,
            "listing lease holders",
            |tx| {
                tx.prepare_cached(&format!(
                    "SELECT DISTINCT l.owner FROM leases AS l JOIN executions AS e USING (exec_id)
                 WHERE l.owner IS NOT NULL AND l.expires > {NOW_MS} AND e.ended = 0"
                ))?
                .query_map([], |r| r.get(0))?
                .collect()
            },
        )
        .await
    }

    async fn expire(&self, owner: &str) -> Result<u64, SpineError> {
        let owner = owner.to_owned();
        let n = write(self.path().to_owned(), "expiring leases", move |tx| {
            tx.prepare_cached("UPDATE leases SET owner = NULL, expires = NULL WHERE owner = ?1")?
                .execute([owner])
        })
        .await?;
        Ok(n as u64)
    }

    async fn append_leased_with(
        &self,
        lease: &Lease,
        expected_seq: u64,
        events: &[Event],
        side: Vec<SideWrite>,
        durable: bool,
    ) -> Result<Appended, SpineError> {
        self.send_with(
            lease.exec_id,
            expected_seq,
            events,
            side,
            durable,
            Some(lease.epoch),
        )
        .await
    }

    async fn append_leased(
        &self,
        lease: &Lease,
        expected_seq: u64,
        events: &[Event],
    ) -> Result<AppendAck, SpineError> {
        let appended = self
            .send_with(
                lease.exec_id,
                expected_seq,
                events,
                Vec::new(),
                true,
                Some(lease.epoch),
            )
            .await?;
        appended.ack.ok_or_else(|| SpineError::InvalidAppend {
            exec_id: lease.exec_id,
            detail: "empty batch".into(),
        })
    }
}
