//! Worker leases on the PostgreSQL spine ([`crate::lease`]): columns of `keel_spine.executions`
//! (owner, epoch, expiry on the server's clock). Claims lock candidate rows with
//! `FOR UPDATE SKIP LOCKED`, so claimers never wait on each other or on an append in flight;
//! the append's own transaction checks the epoch on the row it locks (module `writer`).

use super::PgEventLog;
use crate::error::SpineError;
use crate::lease::{Lease, Leases};
use crate::log::AppendAck;
use async_trait::async_trait;
use keel_core::{Event, ExecId, TenantId};
use std::time::Duration;

fn secs(ttl: Duration) -> f64 {
    ttl.as_secs_f64()
}

fn lease_from(
    log: &PgEventLog,
    owner: &str,
    row: &tokio_postgres::Row,
) -> Result<Lease, SpineError> {
    let key: String = row.get(0);
    let (epoch, last_seq): (i64, i64) = (row.get(2), row.get(3));
    Ok(Lease {
        exec_id: key.parse().map_err(|_| SpineError::Corrupt {
            path: log.inner.shown.clone(),
            detail: format!("keel_spine.executions has a malformed exec_id {key:?}"),
        })?,
        tenant: TenantId(row.get(1)),
        owner: owner.to_owned(),
        epoch: u64::try_from(epoch).unwrap_or(0),
        last_seq: u64::try_from(last_seq).unwrap_or(0),
    })
}

#[async_trait]
impl Leases for PgEventLog {
    async fn acquire(
        &self,
        exec_id: ExecId,
        tenant: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, SpineError> {
        let row = self
            .reader().await?
            .query_opt(
                "INSERT INTO keel_spine.executions AS e (exec_id, tenant, lease_owner, lease_epoch, lease_expires)
                 VALUES ($1, $2, $3, 1, clock_timestamp() + make_interval(secs => $4))
                 ON CONFLICT (exec_id) DO UPDATE SET
                     lease_owner = EXCLUDED.lease_owner,
                     lease_epoch = CASE WHEN e.lease_owner = EXCLUDED.lease_owner
                                        THEN e.lease_epoch ELSE e.lease_epoch + 1 END,
                     lease_expires = EXCLUDED.lease_expires
                 WHERE NOT e.ended AND e.tenant = EXCLUDED.tenant
                   AND (e.lease_owner IS NULL OR e.lease_owner = EXCLUDED.lease_owner
                        OR e.lease_expires < clock_timestamp())
                 RETURNING exec_id, tenant, lease_epoch, last_seq",
                &[&exec_id.to_string(), &tenant, &owner, &secs(ttl)],
            )
            .await
            .map_err(self.err("acquiring a lease"))?;
        row.map(|r| lease_from(self, owner, &r)).transpose()
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
        // Tenants with claimable work, in random order so that when there are more tenants than
        // `limit`, no tenant is always last.
        let limit_i = i64::try_from(limit).unwrap_or(i64::MAX);
        let tenants: Vec<String> = self
            .reader()
            .await?
            .query(
                "SELECT tenant FROM (SELECT DISTINCT tenant FROM keel_spine.executions
                     WHERE NOT ended AND last_seq > 0
                       AND (lease_owner IS NULL OR lease_expires < clock_timestamp())) AS t
                 ORDER BY random() LIMIT $1",
                &[&limit_i],
            )
            .await
            .map_err(self.err("finding claimable executions"))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if tenants.is_empty() {
            return Ok(Vec::new());
        }
        // An equal share per tenant: a tenant with a backlog of thousands takes no more of this
        // claim than one with a single execution waiting.
        let share = i64::try_from(limit.div_ceil(tenants.len())).unwrap_or(1);
        let rows = self
            .reader()
            .await?
            .query(
                "WITH pick AS (
                     SELECT x.exec_id FROM unnest($1::text[]) AS t(tenant)
                     CROSS JOIN LATERAL (
                         SELECT exec_id FROM keel_spine.executions AS c
                         WHERE c.tenant = t.tenant AND NOT c.ended AND c.last_seq > 0
                           AND (c.lease_owner IS NULL OR c.lease_expires < clock_timestamp())
                         ORDER BY c.exec_id LIMIT $2
                         FOR UPDATE SKIP LOCKED) AS x
                     LIMIT $5)
                 UPDATE keel_spine.executions AS e
                 SET lease_owner = $3, lease_epoch = e.lease_epoch + 1,
                     lease_expires = clock_timestamp() + make_interval(secs => $4)
                 FROM pick WHERE e.exec_id = pick.exec_id
                 RETURNING e.exec_id, e.tenant, e.lease_epoch, e.last_seq",
                &[&tenants, &share, &owner, &secs(ttl), &limit_i],
            )
            .await
            .map_err(self.err("claiming executions"))?;
        let mut leases = rows
            .iter()
            .map(|r| lease_from(self, owner, r))
            .collect::<Result<Vec<_>, _>>()?;
        leases.sort_by_key(|l| l.exec_id);
        Ok(leases)
    }

    async fn renew(&self, leases: &[Lease], ttl: Duration) -> Result<Vec<Lease>, SpineError> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = leases.iter().map(|l| l.exec_id.to_string()).collect();
        let epochs: Vec<i64> = leases
            .iter()
            .map(|l| i64::try_from(l.epoch).unwrap_or(i64::MAX))
            .collect();
        let owners: Vec<&str> = leases.iter().map(|l| l.owner.as_str()).collect();
        // The rows are locked in `exec_id` order, as the writer's group transactions lock
        // theirs: in any other order a heartbeat and a group could each hold a row the other
        // waits for, and PostgreSQL would end one of them as a deadlock (a failed group fails
        // every append in it; failed heartbeats lose leases).
        let kept: std::collections::HashSet<String> = self
            .reader()
            .await?
            .query(
                "WITH held AS (
                     SELECT e.exec_id FROM keel_spine.executions AS e
                     JOIN unnest($1::text[], $2::int8[], $3::text[]) AS l(exec_id, epoch, owner)
                       ON e.exec_id = l.exec_id
                     WHERE e.lease_epoch = l.epoch AND e.lease_owner = l.owner AND NOT e.ended
                     ORDER BY e.exec_id FOR UPDATE OF e)
                 UPDATE keel_spine.executions AS e
                 SET lease_expires = clock_timestamp() + make_interval(secs => $4)
                 FROM held WHERE e.exec_id = held.exec_id
                 RETURNING e.exec_id",
                &[&keys, &epochs, &owners, &secs(ttl)],
            )
            .await
            .map_err(self.err("renewing leases"))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        Ok(leases
            .iter()
            .filter(|l| !kept.contains(&l.exec_id.to_string()))
            .cloned()
            .collect())
    }

    async fn release(&self, lease: &Lease) -> Result<(), SpineError> {
        self.reader()
            .await?
            .execute(
                "UPDATE keel_spine.executions SET lease_owner = NULL, lease_expires = NULL
                 WHERE exec_id = $1 AND lease_epoch = $2 AND lease_owner = $3",
                &[
                    &lease.exec_id.to_string(),
                    &i64::try_from(lease.epoch).unwrap_or(i64::MAX),
                    &lease.owner,
                ],
            )
            .await
            .map_err(self.err("releasing a lease"))?;
        Ok(())
    }

    async fn holders(&self) -> Result<Vec<String>, SpineError> {
        Ok(self
            .reader()
            .await?
            .query(
                "SELECT DISTINCT lease_owner FROM keel_spine.executions
                 WHERE lease_owner IS NOT NULL AND lease_expires > clock_timestamp() AND NOT ended",
                &[],
            )
            .await
            .map_err(self.err("listing lease holders"))?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    async fn expire(&self, owner: &str) -> Result<u64, SpineError> {
        self.reader()
            .await?
            .execute(
                // Locked in `exec_id` order, as `renew` explains.
                "UPDATE keel_spine.executions AS e SET lease_owner = NULL, lease_expires = NULL
                 FROM (SELECT exec_id FROM keel_spine.executions WHERE lease_owner = $1
                       ORDER BY exec_id FOR UPDATE) AS mine
                 WHERE e.exec_id = mine.exec_id AND e.lease_owner = $1",
                &[&owner],
            )
            .await
            .map_err(self.err("expiring leases"))
    }

    async fn append_leased(
        &self,
        lease: &Lease,
        expected_seq: u64,
        events: &[Event],
    ) -> Result<AppendAck, SpineError> {
        self.send(lease.exec_id, expected_seq, events, Some(lease.epoch))
            .await
    }

    async fn append_leased_with(
        &self,
        lease: &Lease,
        expected_seq: u64,
        events: &[Event],
        side: Vec<crate::side::SideWrite>,
        durable: bool,
    ) -> Result<crate::side::Appended, SpineError> {
        if events.is_empty() {
            return Err(SpineError::InvalidAppend {
                exec_id: lease.exec_id,
                detail: "empty batch".into(),
            });
        }
        self.send_with(
            lease.exec_id,
            expected_seq,
            events,
            Some(lease.epoch),
            side,
            durable,
        )
        .await
    }
}
