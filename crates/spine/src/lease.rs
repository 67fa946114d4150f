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
use keel_core::control::CONTROL_STREAM;
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

    /// The owners holding live leases now (distinct), so a worker can tell whether one of them
    /// is a process it knows to be dead (on its own machine).
    async fn holders(&self) -> Result<Vec<String>, SpineError>;

    /// Ends every live lease of `owner` now (its epochs stay: the next owner gets a higher one,
    /// and a late append of `owner` is still refused). For an owner known to be dead, so its
    /// executions resume at once instead of at expiry. Returns how many leases it ended.
    async fn expire(&self, owner: &str) -> Result<u64, SpineError>;

    /// [`crate::EventLog::append`], fenced: refused with [`SpineError::LeaseLost`], in the same
    /// transaction, if the execution is held by an epoch other than `lease.epoch`.
    async fn append_leased(
        &self,
        lease: &Lease,
        expected_seq: u64,
        events: &[Event],
    ) -> Result<AppendAck, SpineError>;

    /// [`crate::EventLog::append_with`] (side writes, and `durable: false` for a buffered
    /// append), fenced like [`Leases::append_leased`]. The default appends durably and refuses
    /// side writes, for backends that carry none.
    async fn append_leased_with(
        &self,
        lease: &Lease,
        expected_seq: u64,
        events: &[Event],
        side: Vec<crate::side::SideWrite>,
        _durable: bool,
    ) -> Result<crate::side::Appended, SpineError> {
        if !side.is_empty() {
            return Err(SpineError::InvalidAppend {
                exec_id: lease.exec_id,
                detail: "this spine backend cannot carry side writes".into(),
            });
        }
        let ack = self.append_leased(lease, expected_seq, events).await?;
        Ok(crate::side::Appended {
            ack: Some(ack),
            answers: Vec::new(),
        })
    }
}

/// One worker's view of a shared spine through its leases: an [`EventLog`](crate::EventLog) that a worker's
/// agent loop can use unchanged. `list_unfinished` claims ([`Leases::claim`]) and lists only the
/// executions this view holds; `append` to a held execution is fenced by its epoch; a first
/// append (`expected_seq` 0) or an append to an execution nobody holds takes its lease first.
/// An append to an execution another worker holds fails with [`SpineError::LeaseLost`], and
/// nothing is stored. Reads are the spine's own. Call [`LeasedLog::heartbeat`] every third of the
/// lease length.
pub struct LeasedLog {
    inner: std::sync::Arc<dyn crate::EventLog>,
    leases: std::sync::Arc<dyn Leases>,
    owner: String,
    ttl: Duration,
    claim_limit: usize,
    held: std::sync::Mutex<std::collections::HashMap<ExecId, Lease>>,
    /// Leases a heartbeat found lost, kept until their driver's next append is refused with
    /// the store's epochs (which tell the operator who holds the execution now).
    lost: std::sync::Mutex<std::collections::HashMap<ExecId, Lease>>,
    dead: Option<OwnerIsDead>,
}

/// Tells whether a lease owner is a process known to be dead (say, one of this machine whose
/// pid is gone); given by the caller, since only it knows how owners are named.
pub type OwnerIsDead = Box<dyn Fn(&str) -> bool + Send + Sync>;

impl LeasedLog {
    /// A view for worker `owner` (unique per process), leases of length `ttl`, claiming at most
    /// `claim_limit` executions per `list_unfinished`.
    pub fn new<L: crate::EventLog + Leases + 'static>(
        inner: std::sync::Arc<L>,
        owner: &str,
        ttl: Duration,
        claim_limit: usize,
    ) -> Self {
        Self::over(inner.clone(), inner, owner, ttl, claim_limit)
    }

    /// Like [`LeasedLog::new`], on a spine and its leases handed over separately (both the same
    /// store, as trait objects).
    pub fn over(
        inner: std::sync::Arc<dyn crate::EventLog>,
        leases: std::sync::Arc<dyn Leases>,
        owner: &str,
        ttl: Duration,
        claim_limit: usize,
    ) -> Self {
        Self {
            inner,
            leases,
            owner: owner.to_owned(),
            ttl,
            claim_limit,
            held: std::sync::Mutex::new(std::collections::HashMap::new()),
            lost: std::sync::Mutex::new(std::collections::HashMap::new()),
            dead: None,
        }
    }

    /// Before each claim, ends the leases of owners `dead` says are dead, so their executions
    /// resume at once rather than when their leases expire.
    pub fn take_over_dead(mut self, dead: OwnerIsDead) -> Self {
        self.dead = Some(dead);
        self
    }

    /// This worker's id.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The lease length.
    pub fn ttl(&self) -> Duration {
        self.ttl
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
        if let Ok(mut l) = self.lost.lock() {
            l.remove(&exec_id);
        }
    }

    fn hold(&self, lease: Lease) {
        if let Ok(mut l) = self.lost.lock() {
            l.remove(&lease.exec_id);
        }
        if let Ok(mut h) = self.held.lock() {
            h.insert(lease.exec_id, lease);
        }
    }

    /// Renews every held lease; returns (and forgets) the lost ones, whose executions this
    /// worker must stop driving.
    pub async fn heartbeat(&self) -> Result<Vec<Lease>, SpineError> {
        let lost = self.leases.renew(&self.held(), self.ttl).await?;
        for l in &lost {
            if let Ok(mut h) = self.held.lock() {
                h.remove(&l.exec_id);
            }
            if let Ok(mut m) = self.lost.lock() {
                m.insert(l.exec_id, l.clone());
            }
        }
        Ok(lost)
    }

    /// Gives every held lease up (on shutdown), so others resume at once instead of at expiry.
    pub async fn release_all(&self) -> Result<(), SpineError> {
        for l in self.held() {
            self.leases.release(&l).await?;
            self.forget(l.exec_id);
        }
        if let Ok(mut l) = self.lost.lock() {
            l.clear();
        }
        Ok(())
    }

    async fn lease_for(
        &self,
        exec_id: ExecId,
        tenant: &str,
        expected_seq: u64,
    ) -> Result<Lease, SpineError> {
        let held = self.held.lock().ok().and_then(|h| h.get(&exec_id).cloned());
        if let Some(l) = held {
            return Ok(l);
        }
        // Lost: the store refuses the append and says which epoch holds the execution now.
        let lost = self.lost.lock().ok().and_then(|l| l.get(&exec_id).cloned());
        if let Some(l) = lost {
            return Ok(l);
        }
        match self
            .leases
            .acquire(exec_id, tenant, &self.owner, self.ttl)
            .await?
        {
            Some(l) => {
                self.hold(l.clone());
                Ok(l)
            }
            // Another owner holds it. If the append could not have succeeded anyway (a start
            // repeated after the execution began, say), say so as the spine would have.
            None => match self.inner.read(exec_id, expected_seq + 1).await?.last() {
                Some(last) => Err(SpineError::Conflict {
                    exec_id,
                    expected_seq,
                    actual_seq: last.seq,
                }),
                None => Err(SpineError::LeaseLost {
                    exec_id,
                    epoch: 0,
                    current_epoch: 0,
                }),
            },
        }
    }
}

impl LeasedLog {
    /// Every append goes here: unfenced for writers that do not drive, fenced by the held
    /// lease (taken first if need be) for the driver's own.
    async fn append_any(
        &self,
        exec_id: ExecId,
        expected_seq: u64,
        events: &[Event],
        side: Vec<crate::side::SideWrite>,
        durable: bool,
    ) -> Result<crate::side::Appended, SpineError> {
        // The control stream has no driver: its writers (kill-switches, demotions) race on the
        // conditional append as before, whichever process they run in. Nor is a gate's decision
        // (a person's, or its SLA's escalation) a driver's step: it is appended for whichever
        // worker holds the execution, which then reads it.
        if exec_id == CONTROL_STREAM || events.iter().all(is_decision) {
            if !side.is_empty() {
                return self
                    .inner
                    .append_with(exec_id, expected_seq, events, side, durable)
                    .await;
            }
            let ack = match durable {
                true => self.inner.append(exec_id, expected_seq, events).await?,
                false => {
                    self.inner
                        .append_buffered(exec_id, expected_seq, events)
                        .await?
                }
            };
            return Ok(crate::side::Appended {
                ack: Some(ack),
                answers: Vec::new(),
            });
        }
        let tenant = events.first().map(|e| e.tenant.0.as_str()).unwrap_or("");
        crate::log::validate_batch(exec_id, expected_seq, events)?;
        let lease = self.lease_for(exec_id, tenant, expected_seq).await?;
        let result = self
            .leases
            .append_leased_with(&lease, expected_seq, events, side, durable)
            .await;
        let ended = events.iter().any(|e| e.event_type().is_terminal());
        match &result {
            Err(SpineError::LeaseLost { .. }) => self.forget(exec_id),
            Ok(_) if ended => self.forget(exec_id),
            Ok(a) => {
                if let Ok(mut h) = self.held.lock()
                    && let Some(l) = h.get_mut(&exec_id)
                    && let Some(ack) = a.ack
                {
                    l.last_seq = ack.last_seq;
                }
            }
            Err(_) => {}
        }
        result
    }
}

fn ack_of(exec_id: ExecId, a: crate::side::Appended) -> Result<AppendAck, SpineError> {
    a.ack.ok_or_else(|| SpineError::InvalidAppend {
        exec_id,
        detail: "empty batch".into(),
    })
}

#[async_trait]
impl crate::EventLog for LeasedLog {
    async fn append(
        &self,
        exec_id: ExecId,
        expected_seq: u64,
        events: &[Event],
    ) -> Result<AppendAck, SpineError> {
        let a = self
            .append_any(exec_id, expected_seq, events, Vec::new(), true)
            .await?;
        ack_of(exec_id, a)
    }

    async fn append_buffered(
        &self,
        exec_id: ExecId,
        expected_seq: u64,
        events: &[Event],
    ) -> Result<AppendAck, SpineError> {
        let a = self
            .append_any(exec_id, expected_seq, events, Vec::new(), false)
            .await?;
        ack_of(exec_id, a)
    }

    fn side_store(&self) -> Option<&std::path::Path> {
        self.inner.side_store()
    }

    async fn append_with(
        &self,
        exec_id: ExecId,
        expected_seq: u64,
        events: &[Event],
        side: Vec<crate::side::SideWrite>,
        durable: bool,
    ) -> Result<crate::side::Appended, SpineError> {
        self.append_any(exec_id, expected_seq, events, side, durable)
            .await
    }

    async fn read(&self, exec_id: ExecId, from_seq: u64) -> Result<Vec<Event>, SpineError> {
        self.inner.read(exec_id, from_seq).await
    }

    async fn read_first(&self, exec_id: ExecId) -> Result<Option<Event>, SpineError> {
        self.inner.read_first(exec_id).await
    }

    async fn read_many(&self, exec_ids: &[ExecId]) -> Result<Vec<Vec<Event>>, SpineError> {
        self.inner.read_many(exec_ids).await
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
        if let Some(dead) = &self.dead {
            for owner in self.leases.holders().await? {
                if owner != self.owner && dead(&owner) {
                    self.leases.expire(&owner).await?;
                }
            }
        }
        // A claim takes an equal share from each tenant with work; tenants with less than
        // their share leave the rest of it untaken, so claim again for that rest (each round
        // takes something or ends the loop) until the limit is reached or nothing is free.
        let mut wanted = self.claim_limit;
        while wanted > 0 {
            let claimed = self.leases.claim(&self.owner, self.ttl, wanted).await?;
            if claimed.is_empty() {
                break;
            }
            wanted = wanted.saturating_sub(claimed.len());
            for l in claimed {
                self.hold(l);
            }
        }
        let mut out: Vec<crate::ExecSummary> = Vec::new();
        // The last seq as of the claim or this view's last append (others' unfenced appends, a
        // gate decision say, may have followed: callers fold the log before acting anyway).
        for l in self
            .held()
            .into_iter()
            .filter(|l| l.last_seq > 0 && l.exec_id != CONTROL_STREAM)
        {
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

/// Events appended about an execution by someone other than its driver.
fn is_decision(event: &Event) -> bool {
    matches!(
        event.payload,
        keel_core::payload::Payload::GateDecided(_) | keel_core::payload::Payload::GateEscalated(_)
    )
}
