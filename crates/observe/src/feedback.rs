//! User feedback on an execution: a rating (1 bad … 5 excellent) and an optional comment, as a
//! `feedback.given` event on the spine's control stream keyed by the execution's id. Not on
//! the execution's own stream, because nothing may follow its terminal event and feedback
//! comes after it. The projections fold every rating into `gold.executions`
//! (`feedback_count`, `feedback_rating`: their mean), so `keel sql` and experiment readouts
//! see it.
//!
//! An execution the caller's scope cannot see is "not found": other tenants' executions do
//! not exist for a tenant. A comment may hold personal data; the control stream cannot seal a
//! field under a subject's key, so a comment on an execution about a data subject is refused
//! rather than stored where erasure would not reach it.

use crate::error::{ObserveError, Result};
use crate::rating::append_control;
use crate::sql::Scope;
use crate::store::ProjectionStore;
use keel_core::payload::{FeedbackGiven, MAX_FEEDBACK, MIN_FEEDBACK, Payload};
use keel_core::{Event, ExecId};
use keel_spine::EventLog;
use keel_spine::clock::Clock;

/// The longest comment kept, in bytes.
pub const MAX_COMMENT: usize = 4096;

/// One piece of feedback to record.
#[derive(Clone, Debug)]
pub struct Give {
    /// The execution rated.
    pub exec_id: ExecId,
    /// 1 bad … 5 excellent.
    pub rating: u8,
    /// Who rates.
    pub rater: String,
    /// Why, optionally.
    pub comment: Option<String>,
}

fn bad(what: &str, detail: impl Into<String>) -> ObserveError {
    ObserveError::Config {
        what: what.into(),
        detail: detail.into(),
    }
}

/// Records `give` as a `feedback.given` event, after checking the rating and comment and that
/// the execution is visible to `scope`. Returns the event appended; the projections show it
/// once they apply it.
pub async fn give(
    log: &dyn EventLog,
    clock: &dyn Clock,
    store: &dyn ProjectionStore,
    scope: &Scope,
    give: Give,
) -> Result<Event> {
    if !(MIN_FEEDBACK..=MAX_FEEDBACK).contains(&give.rating) {
        return Err(bad(
            "rating",
            format!(
                "{} is not a rating: use {MIN_FEEDBACK} (bad) to {MAX_FEEDBACK} (excellent)",
                give.rating
            ),
        ));
    }
    if give.rater.trim().is_empty() {
        return Err(bad("rater", "say who rates"));
    }
    let comment = give.comment.filter(|c| !c.trim().is_empty());
    if comment.as_ref().is_some_and(|c| c.len() > MAX_COMMENT) {
        return Err(bad("comment", format!("longer than {MAX_COMMENT} bytes")));
    }
    let found = store
        .query(
            scope,
            &format!(
                "SELECT tenant FROM gold.executions WHERE exec_id = '{}'",
                give.exec_id
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
            what: format!("execution {}", give.exec_id),
        });
    };
    if comment.is_some() && log.subject_of(give.exec_id).await?.is_some() {
        return Err(bad(
            "comment",
            "this execution is about a data subject, and a comment could hold their personal \
             data that erasure must reach; send the rating alone",
        ));
    }
    let payload = Payload::FeedbackGiven(FeedbackGiven {
        tenant: tenant.to_owned(),
        exec_id: give.exec_id,
        rating: give.rating,
        rater: give.rater,
        comment,
    });
    append_control(log, clock, payload, |_| false)
        .await?
        .ok_or_else(|| bad("feedback", "not recorded"))
}
