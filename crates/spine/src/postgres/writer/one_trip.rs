//! A group's transaction in one round trip, for the common group: appends that expect their
//! executions where the group's requests chain them, and side writes that fit in one wave.
//!
//! The statements go out together: `BEGIN`, the transaction id, the new executions' rows, then
//! one statement that locks the group's executions (in `exec_id` order) and, through
//! `keel_spine.expect`, fails the transaction unless every one is where its first request
//! expects it (tenant, last seq, not ended, lease epoch). The inserts number their events from
//! the transaction id on the server, so nothing waits for an answer. When the premise fails
//! (a conflict, a fence, another tenant: rare) the transaction rolls back and the writer decides
//! the group row by row in two round trips, which refuses exactly the requests at fault.

use super::{Batches, Conn, ExecInfo, Execs, SideRun, lock_rates, rate_keys, run_wave};
use crate::error::SpineError;
use crate::log::AppendAck;
use crate::postgres::schema::db_err;
use crate::side::Appended;
use std::collections::HashMap;
use std::path::Path;
use tokio_postgres::types::ToSql;

/// The SQLSTATE `keel_spine.expect` raises.
const NOT_AS_EXPECTED: &str = "KL001";

/// What the group expects of one execution before its first request.
#[derive(Default)]
struct Expected<'a> {
    key: Vec<&'a str>,
    tenant: Vec<&'a str>,
    last_seq: Vec<i64>,
    epoch: Vec<Option<i64>>,
}

/// The group committed in one round trip; `Ok(None)` if it does not fit (or its premise failed
/// and it rolled back): then the caller decides it row by row.
pub(super) async fn try_commit(
    c: &Conn,
    shown: &Path,
    group: &[super::AppendRequest],
) -> Result<Option<Vec<Result<Appended, SpineError>>>, SpineError> {
    let mut expected = Expected::default();
    let mut new_keys: Vec<&str> = Vec::new();
    let mut new_tenants: Vec<&str> = Vec::new();
    // Per execution: where the group leaves it, and the fence its requests carry.
    let mut after: HashMap<&str, (ExecInfo, Option<u64>)> = HashMap::new();
    let mut touched: Vec<&str> = Vec::new();
    let mut batches = Batches::default();
    let mut results = Vec::with_capacity(group.len());
    // Offsets relative to the transaction's base, which only the server knows before it answers.
    let mut next = 1u64;
    for req in group {
        if req.len == 0 {
            return Ok(None);
        }
        let key = req.exec_key.as_str();
        match after.get(key) {
            None => {
                expected.key.push(key);
                expected.tenant.push(&req.tenant);
                expected.last_seq.push(super::to_i64(req.expected_seq));
                expected.epoch.push(req.fence.map(super::to_i64));
                if req.expected_seq == 0 {
                    new_keys.push(key);
                    new_tenants.push(&req.tenant);
                }
                touched.push(key);
            }
            Some((i, fence)) => {
                if i.ended || i.last_seq != req.expected_seq || *fence != req.fence {
                    return Ok(None);
                }
            }
        }
        let ack = AppendAck {
            first_offset: next,
            last_offset: next + req.len - 1,
            last_seq: req.expected_seq + req.len,
            control_seq: None,
        };
        next = ack.last_offset + 1;
        batches.push(req, &ack);
        let info = ExecInfo {
            tenant: req.tenant.clone(),
            last_seq: ack.last_seq,
            ended: req.ends,
            // Not written by the upsert.
            epoch: 0,
        };
        after.insert(key, (info, req.fence));
        results.push(Ok(Some(ack)));
    }
    let mut side = SideRun::new(group, &results);
    if side.must_run_apart() {
        return Ok(None);
    }
    // `expected` is in first-appearance order; the lock statement sorts.
    let mut execs = Execs::default();
    for &key in &touched {
        if let Some((i, _)) = after.get(key) {
            execs.push(key, i);
        }
    }
    let shift = c.shift;
    let create_params: [&(dyn ToSql + Sync); 2] = [&new_keys, &new_tenants];
    let expect_params: [&(dyn ToSql + Sync); 4] = [
        &expected.key,
        &expected.tenant,
        &expected.last_seq,
        &expected.epoch,
    ];
    let batch_params: [&(dyn ToSql + Sync); 7] = [
        &batches.first,
        &batches.last,
        &batches.exec,
        &batches.first_seq,
        &batches.last_seq,
        &batches.body,
        &shift,
    ];
    let exec_params: [&(dyn ToSql + Sync); 4] =
        [&execs.key, &execs.tenant, &execs.last_seq, &execs.ended];
    let create = async {
        if new_keys.is_empty() {
            return Ok(Vec::new());
        }
        c.client.query(&c.create_execs, &create_params).await
    };
    let wave = side.next_wave();
    let rates = rate_keys(group);
    let (begin, xid, created, expect, rates_locked, ins, ups, done, commit, control) = tokio::join!(
        c.client.batch_execute("BEGIN"),
        c.client.query_one(&c.xact_id, &[]),
        create,
        c.client.execute(&c.expect_execs, &expect_params),
        lock_rates(c, &rates),
        c.client.execute(&c.insert_batches_here, &batch_params),
        c.client.execute(&c.upsert_execs, &exec_params),
        run_wave(c, &wave),
        c.client.batch_execute("COMMIT"),
        // After the commit (or the rollback: then both are spare), as in the two-trip group.
        c.client.query_one(&c.after_commit, &[]),
    );
    begin.map_err(db_err(shown, "starting a transaction"))?;
    let xid: i64 = xid
        .map_err(db_err(shown, "taking the transaction id"))?
        .get(0);
    created.map_err(db_err(shown, "creating executions"))?;
    if let Err(e) = expect {
        if e.code().is_some_and(|s| s.code() == NOT_AS_EXPECTED) {
            // Everything after it was skipped and COMMIT rolled the transaction back.
            commit.map_err(db_err(shown, "rolling back"))?;
            return Ok(None);
        }
        return Err(db_err(shown, "locking the executions")(e));
    }
    rates_locked.map_err(db_err(shown, "locking rate budgets"))?;
    ins.map_err(db_err(shown, "inserting batches"))?;
    ups.map_err(db_err(shown, "recording executions"))?;
    let done = done.map_err(db_err(shown, "applying side writes"))?;
    commit.map_err(db_err(shown, "committing"))?;
    side.record(&wave, done, c, shown).await?;
    let base = super::offset_base(xid, shift, shown)?;
    let control = control
        .ok()
        .and_then(|r| u64::try_from(r.get::<_, i64>(0)).ok());
    for ack in results.iter_mut().flatten().flatten() {
        ack.first_offset += base;
        ack.last_offset += base;
        ack.control_seq = control;
    }
    Ok(Some(side.answer(results)))
}
