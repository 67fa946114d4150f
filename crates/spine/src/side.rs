//! Side writes: small rows that layers above the spine keep in the spine's own store (the tool
//! layer's idempotency ledger and rate budgets), carried by an append into the same transaction
//! as its events, so a keyed tool call's intent and its ledger mark cost one commit, not two.
//!
//! The spine only stores these rows and applies their rules (insert-if-absent, GCRA); what they
//! mean belongs to their owner (`keel-tools`). A backend that cannot carry side writes says so
//! ([`crate::EventLog::side_store`] is `None`) and the owner writes them through its own store.

use crate::log::AppendAck;

/// One write applied in an append's transaction, in order, after its events are accepted. If
/// the events are refused (a seq conflict, an ended execution), none of its side writes is
/// applied; a refused [`SideWrite::RateTake`] skips the side writes after it in the same request
/// ([`SideAnswer::Skipped`]) but neither its events nor any other request's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SideWrite {
    /// Marks an idempotency key `started` unless the tenant already has an entry for it.
    LedgerBegin {
        /// Tenant.
        tenant: String,
        /// Idempotency key.
        key: String,
        /// Tool name.
        tool: String,
        /// Execution making the call.
        exec_id: String,
        /// The call's id.
        call_id: String,
        /// Now, RFC 3339.
        now: String,
    },
    /// Records the outcome of the call holding a key.
    LedgerFinish {
        /// Tenant.
        tenant: String,
        /// Idempotency key.
        key: String,
        /// Now, RFC 3339.
        now: String,
        /// The call's status, as its owner spells it.
        status: String,
        /// The output's blob.
        output_ref: Option<String>,
        /// What the call cost, micro-USD (`None`: unknown).
        actual_cost: Option<i64>,
    },
    /// Forgets a key (the call did not act).
    LedgerRelease {
        /// Tenant.
        tenant: String,
        /// Idempotency key.
        key: String,
    },
    /// Takes one permit of a (tenant, tool) rate by GCRA: admitted while the theoretical arrival
    /// time is at most `tolerance_us` ahead of `now_us`, which moves it `interval_us` on.
    RateTake {
        /// Tenant.
        tenant: String,
        /// Tool name.
        tool: String,
        /// Emission interval, µs.
        interval_us: i64,
        /// Burst tolerance, µs.
        tolerance_us: i64,
        /// Now, µs since the Unix epoch.
        now_us: i64,
    },
}

impl SideWrite {
    /// True for the ledger's writes, which are durable on return whatever the append's mode
    /// (the ledger's contract); rate takes ride in whatever commit carries them.
    pub fn must_be_durable(&self) -> bool {
        !matches!(self, SideWrite::RateTake { .. })
    }
}

/// A ledger row as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerRow {
    /// Tool name.
    pub tool: String,
    /// Execution that began it.
    pub exec_id: String,
    /// Call id that began it.
    pub call_id: String,
    /// `started` or `finished`.
    pub state: String,
    /// The status, once finished.
    pub status: Option<String>,
    /// The output's blob, once finished.
    pub output_ref: Option<String>,
    /// The cost, micro-USD, once finished.
    pub actual_cost: Option<i64>,
}

/// What one side write did, in the order of the request's side writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SideAnswer {
    /// [`SideWrite::LedgerBegin`] inserted `started`: the call owns the key.
    Begun,
    /// [`SideWrite::LedgerBegin`] found this entry and wrote nothing.
    Existing(LedgerRow),
    /// A finish or release was written.
    Written,
    /// A rate permit was taken.
    Admitted,
    /// The rate is exhausted; nothing was taken.
    Refused,
    /// Not applied: a rate take before it in the request was refused.
    Skipped,
}

/// What an append with side writes committed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Appended {
    /// The events' offsets (`None` for a request of side writes only).
    pub ack: Option<AppendAck>,
    /// One answer per side write, in order.
    pub answers: Vec<SideAnswer>,
}
