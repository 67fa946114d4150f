//! The single writer thread and its group commit.
//!
//! Appenders encode their events on their own threads and send a request here. The writer blocks
//! for the first request, then drains every request already queued (up to a cap) and commits them
//! all in one transaction: one WAL write and one fsync for the whole group. While it waits on the
//! fsync, new requests queue up and form the next group, so throughput grows with the number of
//! concurrent appenders while a lone appender still pays exactly one fsync.

use super::schema::map_err;
use crate::error::SpineError;
use crate::log::AppendAck;
use keel_core::ExecId;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior};
use std::path::Path;
use std::sync::mpsc::Receiver;
use tokio::sync::{oneshot, watch};

/// Most requests committed together; bounds one transaction's size and latency.
const MAX_GROUP_REQUESTS: usize = 1024;
/// Most events committed together.
const MAX_GROUP_EVENTS: usize = 16_384;

/// One append call on its way to the writer.
pub(super) struct AppendRequest {
    pub exec_id: ExecId,
    pub exec_key: String,
    pub tenant: String,
    pub expected_seq: u64,
    pub ends: bool,
    /// Number of events in the batch.
    pub len: u64,
    /// The batch, already encoded by the appender as a JSON array of events.
    pub body: String,
    pub reply: oneshot::Sender<Result<AppendAck, SpineError>>,
}

/// Runs until every sender is dropped, then returns after committing what was queued.
pub(super) fn run(
    mut conn: Connection,
    path: &Path,
    requests: Receiver<AppendRequest>,
    head: &watch::Sender<u64>,
) {
    while let Ok(first) = requests.recv() {
        let mut events = first.len as usize;
        let mut group = vec![first];
        while group.len() < MAX_GROUP_REQUESTS && events < MAX_GROUP_EVENTS {
            match requests.try_recv() {
                Ok(req) => {
                    events += req.len as usize;
                    group.push(req);
                }
                Err(_) => break,
            }
        }
        let results = commit_group(&mut conn, path, &group);
        let newest = results
            .iter()
            .filter_map(|r| r.as_ref().ok().map(|a| a.last_offset))
            .max();
        if let Some(offset) = newest {
            head.send_if_modified(|h| {
                let newer = offset > *h;
                *h = (*h).max(offset);
                newer
            });
        }
        for (req, result) in group.into_iter().zip(results) {
            // The appender may have given up waiting; its events are committed regardless.
            let _ = req.reply.send(result);
        }
    }
}

fn commit_group(
    conn: &mut Connection,
    path: &Path,
    group: &[AppendRequest],
) -> Vec<Result<AppendAck, SpineError>> {
    let fail_all = |e: SpineError| -> Vec<Result<AppendAck, SpineError>> {
        let detail = e.to_string();
        group
            .iter()
            .map(|_| {
                Err(SpineError::Storage {
                    context: "committing a group",
                    path: path.to_owned(),
                    detail: detail.clone(),
                })
            })
            .collect()
    };
    let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => return fail_all(map_err(path, "starting a transaction", e)),
    };
    // Offsets are assigned here, inside the write lock, so they follow commit order even when
    // several processes share the file.
    let head: Result<Option<u64>, _> = tx
        .prepare_cached("SELECT last_offset FROM batches ORDER BY first_offset DESC LIMIT 1")
        .and_then(|mut s| s.query_row([], |r| r.get(0)).optional());
    let mut next_offset = match head {
        Ok(h) => h.unwrap_or(0) + 1,
        Err(e) => return fail_all(map_err(path, "reading the head offset", e)),
    };
    // A lone request needs no savepoint: if it fails, the whole transaction rolls back.
    let isolate = group.len() > 1;
    let results: Vec<_> = group
        .iter()
        .map(|req| {
            let result = apply_isolated(&tx, path, req, next_offset, isolate);
            if let Ok(ack) = &result {
                next_offset = ack.last_offset + 1;
            }
            result
        })
        .collect();
    if results.iter().all(Result::is_err) {
        return results; // nothing to commit; dropping `tx` rolls back
    }
    match tx.commit() {
        Ok(()) => results,
        Err(e) => fail_all(map_err(path, "committing", e)),
    }
}

fn apply_isolated(
    tx: &Transaction<'_>,
    path: &Path,
    req: &AppendRequest,
    first_offset: u64,
    isolate: bool,
) -> Result<AppendAck, SpineError> {
    let err = |c| move |e| map_err(path, c, e);
    if isolate {
        tx.execute_batch("SAVEPOINT req").map_err(err("opening a savepoint"))?;
    }
    let result = apply(tx, path, req, first_offset);
    if isolate {
        let end = if result.is_ok() {
            "RELEASE req"
        } else {
            "ROLLBACK TO req; RELEASE req"
        };
        tx.execute_batch(end).map_err(err("closing a savepoint"))?;
    }
    result
}

fn apply(
    tx: &Transaction<'_>,
    path: &Path,
    req: &AppendRequest,
    first_offset: u64,
) -> Result<AppendAck, SpineError> {
    let err = |c| move |e| map_err(path, c, e);
    let stored: Option<(String, bool)> = tx
        .prepare_cached("SELECT tenant, ended FROM executions WHERE exec_id = ?1")
        .and_then(|mut s| {
            s.query_row([&req.exec_key], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .map_err(err("reading the execution"))?;
    let actual_seq: u64 = match stored {
        None => 0,
        Some(_) => tx
            .prepare_cached("SELECT coalesce(max(last_seq), 0) FROM batches WHERE exec_id = ?1")
            .and_then(|mut s| s.query_row([&req.exec_key], |r| r.get(0)))
            .map_err(err("reading the execution's last seq"))?,
    };
    if actual_seq != req.expected_seq {
        return Err(SpineError::Conflict {
            exec_id: req.exec_id,
            expected_seq: req.expected_seq,
            actual_seq,
        });
    }
    if let Some((tenant, ended)) = &stored {
        let refuse = |detail: &str| SpineError::InvalidAppend {
            exec_id: req.exec_id,
            detail: detail.into(),
        };
        if *tenant != req.tenant {
            return Err(refuse("the execution belongs to another tenant"));
        }
        if *ended {
            return Err(refuse("the execution has ended; nothing may follow its last event"));
        }
    }
    let last_offset = first_offset + req.len - 1;
    let last_seq = req.expected_seq + req.len;
    tx.prepare_cached(
        "INSERT INTO batches (first_offset, last_offset, exec_id, first_seq, last_seq, body)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .and_then(|mut s| {
        s.execute((
            first_offset,
            last_offset,
            &req.exec_key,
            req.expected_seq + 1,
            last_seq,
            &req.body,
        ))
    })
    .map_err(err("inserting a batch"))?;
    if stored.is_none() {
        tx.prepare_cached("INSERT INTO executions (exec_id, tenant, ended) VALUES (?1, ?2, ?3)")
            .and_then(|mut s| s.execute((&req.exec_key, &req.tenant, req.ends)))
            .map_err(err("recording the execution"))?;
    } else if req.ends {
        tx.prepare_cached("UPDATE executions SET ended = 1 WHERE exec_id = ?1")
            .and_then(|mut s| s.execute([&req.exec_key]))
            .map_err(err("recording the execution's end"))?;
    }
    Ok(AppendAck {
        first_offset,
        last_offset,
        last_seq,
    })
}
