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

/// One worker's view of a shared spine through its leases: an [`EventLog`](crate::EventLog) that a worker's
/// agent loop can use unchanged. `list_unfinished` claims ([`Leases::claim`]) and lists only the
/// executions this view holds; `append` to a held execution is fenced by its epoch; a first
/// append (`expected_seq` 0) or an append to an execution nobody holds takes its lease first.
/// An append to an execution another worker holds fails with [`SpineError::LeaseLost`], and
/// nothing is stored. Reads are the spine's own. Call [`LeasedLog::heartbeat`] every third of the
/// lease length.
pub struct LeasedLog<L> {
    inner: std::sync::Arc<L>,
    owner: String,
    ttl: Duration,
    claim_limit: usize,
    held: std::sync::Mutex<std::collections::HashMap<ExecId, Lease>>,
}

impl<L: crate::EventLog + Leases> LeasedLog<L> {
    /// A view for worker `owner` (unique per process), leases of length `ttl`, claiming at most
    /// `claim_limit` executions per `list_unfinished`.
    pub fn new(inner: std::sync::Arc<L>, owner: &str, ttl: Duration, claim_limit: usize) -> Self {
        Self {
            inner,
            owner: owner.to_owned(),
            ttl,
            claim_limit,
            held: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// This worker's id.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The leases this view holds.
    pub fn held(&self) -> Vec<Lease> {
        self.held
            .lock()
            .map(|h| h.values().cloned().collect())
            .unwrap_or_default()
    }

    fn forget(&self, exec_id: ExecId) {
        if let Ok(mut h) = self.held.lock() {
            h.remove(&exec_id);
        }
    }

    fn hold(&self, lease: Lease) {
        if let Ok(mut h) = self.held.lock() {
            h.insert(lease.exec_id, lease);
        }
    }

    /// Renews every held lease; returns (and forgets) the lost ones, whose executions this
    /// worker must stop driving.
    pub async fn heartbeat(&self) -> Result<Vec<Lease>, SpineError> {
        let lost = self.inner.renew(&self.held(), self.ttl).await?;
        for l in &lost {
            self.forget(l.exec_id);
        }
        Ok(lost)
    }

    /// Gives every held lease up (on shutdown), so others resume at once instead of at expiry.
    pub async fn release_all(&self) -> Result<(), SpineError> {
        for l in self.held() {
            self.inner.release(&l).await?;
            self.forget(l.exec_id);
        }
        Ok(())
    }

    async fn lease_for(&self, exec_id: ExecId, tenant: &str) -> Result<Lease, SpineError> {
        let held = self.held.lock().ok().and_then(|h| h.get(&exec_id).cloned());
        if let Some(l) = held {
            return Ok(l);
        }
        match self
            .inner
            .acquire(exec_id, tenant, &self.owner, self.ttl)
            .await?
        {
            Some(l) => {
                self.hold(l.clone());
                Ok(l)
            }
            None => Err(SpineError::LeaseLost {
                exec_id,
                epoch: 0,
                current_epoch: 0,
            }),
        }
    }
}

#[async_trait]
impl<L: crate::EventLog + Leases + 'static> crate::EventLog for LeasedLog<L> {
    async fn append(
        &self,
        exec_id: ExecId,
        expected_seq: u64,
        events: &[Event],
    ) -> Result<AppendAck, SpineError> {
        let tenant = events.first().map(|e| e.tenant.0.as_str()).unwrap_or("");
        crate::log::validate_batch(exec_id, expected_seq, events)?;
        let lease = self.lease_for(exec_id, tenant).await?;
        let result = self.inner.append_leased(&lease, expected_seq, events).await;
        let ended = events.iter().any(|e| e.event_type().is_terminal());
        match &result {
            Err(SpineError::LeaseLost { .. }) => self.forget(exec_id),
            Ok(_) if ended => self.forget(exec_id),
            Ok(ack) => {
                if let Ok(mut h) = self.held.lock()
                    && let Some(l) = h.get_mut(&exec_id)
                {
                    l.last_seq = ack.last_seq;
                }
            }
            Err(_) => {}
        }
        result
    }

    async fn read(&self, exec_id: ExecId, from_seq: u64) -> Result<Vec<Event>, SpineError> {
        self.inner.read(exec_id, from_seq).await
    }

    async fn appended_after(&self, exec_id: ExecId, seq: u64) -> Result<bool, SpineError> {
        self.inner.appended_after(exec_id, seq).await
    }

    async fn read_all(
        &self,
        from_offset: u64,
        limit: usize,
    ) -> Result<Vec<crate::Committed>, SpineError> {
        self.inner.read_all(from_offset, limit).await
    }

    fn subscribe(
        &self,
        from_offset: u64,
    ) -> futures::stream::BoxStream<'static, Result<crate::Committed, SpineError>> {
        self.inner.subscribe(from_offset)
    }

    /// Claims what is free (resume after a worker died), then lists what this worker holds.
    async fn list_unfinished(&self) -> Result<Vec<crate::ExecSummary>, SpineError> {
        for l in self
            .inner
            .claim(&self.owner, self.ttl, self.claim_limit)
            .await?
        {
            self.hold(l);
        }
        let mut out: Vec<crate::ExecSummary> = Vec::new();
        // The last seq as of the claim or this view's last append (others' unfenced appends, a
        // gate decision say, may have followed: callers fold the log before acting anyway).
        for l in self.held().into_iter().filter(|l| l.last_seq > 0) {
            out.push(crate::ExecSummary {
                exec_id: l.exec_id,
                tenant: l.tenant,
                last_seq: l.last_seq,
            });
        }
        out.sort_by_key(|s| s.exec_id);
        Ok(out)
    }

    async fn link_subject(
        &self,
        exec_id: ExecId,
        tenant: &str,
        subject: &str,
    ) -> Result<(), SpineError> {
        self.inner.link_subject(exec_id, tenant, subject).await
    }

    async fn subject_of(&self, exec_id: ExecId) -> Result<Option<String>, SpineError> {
        self.inner.subject_of(exec_id).await
    }
}
