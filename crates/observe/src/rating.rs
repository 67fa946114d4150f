//! Retrieval-relevance rating: people rate the retrievals the projections sampled
//! (`traces.retrieval_samples`), and each rating is a `retrieval.rated` event on the spine's
//! control stream — so it is audited like every decision, and a projection rebuild (on either
//! backend) restores it.
//!
//! A sample is named by its execution and the seq of its `memory.retrieved` event. Rating a
//! sample the caller's scope cannot see is "not found", never "forbidden": other tenants'
//! samples do not exist for a tenant.

use crate::error::{ObserveError, Result};
use crate::sql::{Rows, Scope};
use crate::store::ProjectionStore;
use keel_core::control::{CONTROL_STREAM, CONTROL_TENANT};
use keel_core::payload::{MAX_RELEVANCE, Payload, RetrievalRated};
use keel_core::{CURRENT_SCHEMA_VERSION, Event, ExecId, TenantId, TraceId};
use keel_spine::clock::{self, Clock};
use keel_spine::{EventLog, SpineError};

/// The columns listed for a sample.
const COLUMNS: &str = "exec_id, seq, tenant, trace_id, step_n, ts, query, memory_version, \
                       chunks, rating, rated_by, rated_at, rating_note";

/// The samples `scope` may see, newest first; only the unrated ones when `unrated`.
pub async fn samples(
    store: &dyn ProjectionStore,
    scope: &Scope,
    unrated: bool,
    limit: usize,
) -> Result<Rows> {
    samples_after(store, scope, unrated, limit, None).await
}

/// Like [`samples`], continuing after the sample `after` (execution, seq) of an earlier page;
/// [`ObserveError::NotFound`] when `scope` has no such sample.
pub async fn samples_after(
    store: &dyn ProjectionStore,
    scope: &Scope,
    unrated: bool,
    limit: usize,
    after: Option<(ExecId, u64)>,
) -> Result<Rows> {
    let mut filters = Vec::new();
    if unrated {
        filters.push("rating IS NULL".to_owned());
    }
    if let Some((exec_id, seq)) = after {
        let at = store
            .query(
                scope,
                &format!(
                    "SELECT log_offset FROM traces.retrieval_samples
                     WHERE exec_id = '{exec_id}' AND seq = {seq}"
                ),
            )
            .await?;
        let Some(offset) = at
            .rows
            .first()
            .and_then(|r| r.first())
            .and_then(|v| v.as_i64())
        else {
            return Err(ObserveError::NotFound {
                what: format!("sampled retrieval at seq {seq} of execution {exec_id}"),
            });
        };
        filters.push(format!("log_offset < {offset}"));
    }
    let filter = if filters.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", filters.join(" AND "))
    };
    store
        .query(
            scope,
            &format!(
                "SELECT {COLUMNS} FROM traces.retrieval_samples {filter}
                 ORDER BY log_offset DESC LIMIT {limit}"
            ),
        )
        .await
}

/// One rating to record.
#[derive(Clone, Debug)]
pub struct Rate {
    /// The execution that retrieved.
    pub exec_id: ExecId,
    /// The seq of its `memory.retrieved` event.
    pub seq: u64,
    /// 0 irrelevant … 3 exactly what was needed.
    pub rating: u8,
    /// Who rates.
    pub rater: String,
    /// Why, optionally.
    pub note: Option<String>,
}

/// Records `rate` as a `retrieval.rated` event, after checking that the sample exists and is
/// visible to `scope`. Returns the event appended. The projections show it once they apply it.
pub async fn rate(
    log: &dyn EventLog,
    clock: &dyn Clock,
    store: &dyn ProjectionStore,
    scope: &Scope,
    rate: Rate,
) -> Result<Event> {
    if rate.rating > MAX_RELEVANCE {
        return Err(ObserveError::Config {
            what: "rating".into(),
            detail: format!(
                "{} is not a relevance grade (0 irrelevant, 1 partly, 2 relevant, \
                 {MAX_RELEVANCE} exactly what was needed)",
                rate.rating
            ),
        });
    }
    if rate.rater.trim().is_empty() {
        return Err(ObserveError::Config {
            what: "rater".into(),
            detail: "say who rates".into(),
        });
    }
    let found = store
        .query(
            scope,
            &format!(
                "SELECT tenant FROM traces.retrieval_samples WHERE exec_id = '{}' AND seq = {}",
                rate.exec_id, rate.seq
            ),
        )
        .await?;
    let Some(tenant) = found
        .rows
        .first()
        .and_then(|r| r.first())
        .and_then(|v| v.as_str())
    else {
        return Err(ObserveError::NotFound {
            what: format!(
                "no sampled retrieval at seq {} of execution {}",
                rate.seq, rate.exec_id
            ),
        });
    };
    let payload = Payload::RetrievalRated(RetrievalRated {
        tenant: tenant.to_owned(),
        exec_id: rate.exec_id,
        seq: rate.seq,
        rating: rate.rating,
        rater: rate.rater,
        note: rate.note.filter(|n| !n.trim().is_empty()),
    });
    append_control(log, clock, payload, |_| false)
        .await?
        .ok_or_else(|| ObserveError::Config {
            what: "rating".into(),
            detail: "not recorded".into(),
        })
}

/// Appends `payload` after the control stream's last event, unless `already(stream)` says the
/// stream holds it; retries when another writer got there first. `None` when it was already
/// there.
pub(crate) async fn append_control(
    log: &dyn EventLog,
    clock: &dyn Clock,
    payload: Payload,
    already: impl Fn(&[Event]) -> bool,
) -> Result<Option<Event>> {
    for _ in 0..64 {
        let stream = log.read(CONTROL_STREAM, 1).await?;
        if already(&stream) {
            return Ok(None);
        }
        let last = stream.last().map_or(0, |e| e.seq);
        let event = Event {
            event_id: clock::new_event_id(),
            exec_id: CONTROL_STREAM,
            tenant: TenantId(CONTROL_TENANT.into()),
            seq: last + 1,
            ts: clock.now(),
            // The control stream's one fixed trace (as the runtime writes it).
            trace_id: TraceId(*b"keel-control-str"),
            step_n: 0,
            schema_version: CURRENT_SCHEMA_VERSION,
            payload: payload.clone(),
        };
        match log
            .append(CONTROL_STREAM, last, std::slice::from_ref(&event))
            .await
        {
            Ok(_) => return Ok(Some(event)),
            Err(SpineError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ObserveError::Config {
        what: "control stream".into(),
        detail: "stayed contended for 64 attempts".into(),
    })
}
