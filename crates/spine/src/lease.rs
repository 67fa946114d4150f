//! Worker leases: which worker drives which unfinished execution, so two workers on one shared
//! spine never drive the same execution (and never pay for the same model call twice).
//!
//! A lease is (owner, epoch, expiry), kept by the store beside the execution. Time is the
//! store's clock, never a worker's, so machines with skewed clocks agree on expiry. Every change
//! of owner increments the epoch; an append that carries an epoch
//! ([`Leases::append_leased`]) is refused with [`SpineError::LeaseLost`] inside the append's own
//! transaction when a newer epoch holds the execution. A worker that stalls past its expiry
//! (a GC pause, SIGSTOP) therefore cannot write after another took over: the epoch is the fence,
//! the expiry only decides when taking over is allowed.
//!
//! Contract (checked by `conformance::leases` for every backend that keeps leases):
//! 1. At most one live lease per execution; [`Leases::acquire`] and [`Leases::claim`] never hand
//!    out an execution whose lease is live and another owner's.
//! 2. Epochs of an execution only grow; a new owner always gets a higher epoch.
//! 3. An append carrying a stale epoch stores nothing and fails with `LeaseLost`.
//! 4. [`Leases::claim`] takes only unfinished executions whose lease expired or was released,
//!    without waiting on rows another claimer holds, and spreads a claim over tenants so one
//!    tenant's backlog does not starve another's executions.

use crate::error::SpineError;
use crate::log::AppendAck;
use async_trait::async_trait;
use keel_core::{Event, ExecId, TenantId};
use std::time::Duration;

/// A held lease on one execution.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The execution.
    pub exec_id: ExecId,
    /// Its tenant.
    pub tenant: TenantId,
    /// Who holds it (a worker id, unique per process).
    pub owner: String,
    /// The fence: appends with this epoch are accepted until another owner takes over.
    pub epoch: u64,
    /// The execution's last stored seq when the lease was taken (0 for a new execution).
    pub last_seq: u64,
}

/// Leases on a shared spine. See the module documentation for the contract.
#[async_trait]
pub trait Leases: Send + Sync {
    /// Takes the lease of `exec_id` (creating the execution's entry if it has no events yet) for
    /// `ttl`, if it is free, expired, or already `owner`'s (then the epoch stays). `None` if another
    /// owner holds a live lease, or the execution has ended or belongs to another tenant.
    async fn acquire(
        &self,
        exec_id: ExecId,
        tenant: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, SpineError>;

    /// Takes up to `limit` unfinished executions whose lease expired or was released (resume
    /// after a worker died), oldest first within a tenant and spread across tenants.
    async fn claim(
        &self,
        owner: &str,
        ttl: Duration,
        limit: usize,
    ) -> Result<Vec<Lease>, SpineError>;

    /// Extends every lease in `leases` by `ttl` from now (one heartbeat for all of a worker's
    /// executions). Returns the leases that are lost (taken over, or the execution ended): the
    /// worker must stop driving those.
    async fn renew(&self, leases: &[Lease], ttl: Duration) -> Result<Vec<Lease>, SpineError>;

    /// Gives a lease up (the worker stops, or the execution waits on a gate): anyone may claim
    /// it at once. A no-op if the lease was already lost.
    async fn release(&self, lease: &Lease) -> Result<(), SpineError>;

    /// [`crate::EventLog::append`], fenced: refused with [`SpineError::LeaseLost`], in the same
    /// transaction, if the execution is held by an epoch other than `lease.epoch`.
    async fn append_leased(
        &self,
        lease: &Lease,
        expected_seq: u64,
        events: &[Event],
    ) -> Result<AppendAck, SpineError>;
}
