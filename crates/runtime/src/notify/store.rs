//! The deliveries' progress: which notifications are owed, and every attempt to deliver them,
//! behind [`DeliveryStore`] — `DIR/notify.db` ([`super::sqlite`]) beside an embedded spine, the
//! spine's own PostgreSQL database (`super::pg`) beside a shared one, so the processes sharing
//! a spine share its deliveries and a gate is notified once, not once per machine. What is owed
//! is derived from the spine (the gate events past `cursor`); a store holds only progress, so a
//! restart picks up where the last process stopped.
//!
//! A delivery is claimed with a lease before it is sent, so two processes never claim the same
//! one; a process that dies mid-send leaves the lease to run out and the delivery is tried
//! again: delivery is at least once, and `Keel-Delivery` lets a receiver drop a repeat.

use super::NotifyError;
use async_trait::async_trait;
use std::path::Path;
use std::sync::Arc;

/// A notification owed, as the scan of the spine finds it.
#[derive(Clone, Debug)]
pub struct NewDelivery {
    /// `{webhook}:{event_id}`: the same on every attempt and in every process.
    pub id: String,
    /// The webhook's name.
    pub webhook: String,
    /// The gate event.
    pub event_id: String,
    /// Its execution.
    pub exec_id: String,
    /// Its seq there.
    pub seq: u64,
    /// `gate.requested` or `gate.escalated`.
    pub kind: String,
    /// Its tenant.
    pub tenant: String,
    /// The gate.
    pub gate_id: String,
    /// The gate's queue.
    pub queue: String,
}

/// A delivery claimed for sending.
#[derive(Clone, Debug)]
pub struct Claimed {
    /// Its id.
    pub id: String,
    /// The webhook's name.
    pub webhook: String,
    /// The gate event's execution.
    pub exec_id: String,
    /// The gate event's seq.
    pub seq: u64,
    /// Attempts made before this one.
    pub attempts: u32,
}

/// What one attempt did.
#[derive(Clone, Debug)]
pub struct Attempt {
    /// 1-based.
    pub n: u32,
    /// When it started (RFC 3339).
    pub at: String,
    /// The receiver's status, if it answered.
    pub http_status: Option<u16>,
    /// Why it failed (never a URL or a secret).
    pub error: Option<String>,
    /// How long it took.
    pub latency_ms: u64,
}

/// Where a delivery stands after an attempt (or instead of one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// The receiver took it (2xx).
    Delivered,
    /// Try again at this time (unix ms).
    RetryAt(i64),
    /// Every attempt failed.
    Failed,
    /// Not sent: the gate was decided, or belongs to a replay, before it could be (the reason).
    Skipped(String),
}

/// A delivery and its attempts, as recorded.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DeliveryView {
    /// Its id.
    pub id: String,
    /// The webhook's name.
    pub webhook: String,
    /// `gate.requested` or `gate.escalated`.
    pub kind: String,
    /// Its tenant.
    pub tenant: String,
    /// The gate.
    pub gate_id: String,
    /// `pending`, `delivered`, `failed` or `skipped`.
    pub status: String,
    /// Why it was skipped.
    pub detail: Option<String>,
    /// Its attempts, in order.
    pub attempts: Vec<AttemptView>,
}

/// One recorded attempt.
#[derive(Clone, Debug, serde::Serialize)]
pub struct AttemptView {
    /// 1-based.
    pub n: u32,
    /// When.
    pub at: String,
    /// The receiver's status.
    pub http_status: Option<u16>,
    /// Why it failed.
    pub error: Option<String>,
    /// How long it took.
    pub latency_ms: u64,
}

/// Where the deliveries' progress is kept. Every method is one transaction of the store.
#[async_trait]
pub trait DeliveryStore: Send + Sync {
    /// The spine offset the scan has reached.
    async fn cursor(&self) -> Result<u64, NotifyError>;

    /// Records `owed` (each once, whichever process finds it first) and moves the cursor to
    /// `offset` (never back), in one transaction: a crash between the two cannot lose a
    /// delivery.
    async fn enqueue(
        &self,
        owed: Vec<NewDelivery>,
        offset: u64,
        now_ms: i64,
    ) -> Result<(), NotifyError>;

    /// Claims up to `limit` deliveries due at `now_ms` whose webhook is one of `webhooks`,
    /// leasing them until `now_ms + lease_ms`: no other claim returns them before then.
    async fn claim(
        &self,
        webhooks: Vec<String>,
        now_ms: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<Claimed>, NotifyError>;

    /// Records an attempt (if one was made) and where the delivery stands now, releasing its
    /// lease.
    async fn record(
        &self,
        id: String,
        attempt: Option<Attempt>,
        next: Next,
    ) -> Result<(), NotifyError>;

    /// The deliveries of one gate (or every one), with their attempts, oldest first.
    async fn list(&self, gate_id: Option<String>) -> Result<Vec<DeliveryView>, NotifyError>;

    /// Where the store is, for messages: a file, or a server without its password.
    fn shown(&self) -> String;
}

/// The deliveries' progress, in whichever [`DeliveryStore`] the deployment chose. Cheap to
/// clone.
#[derive(Clone)]
pub struct Deliveries(Arc<dyn DeliveryStore>);

impl Deliveries {
    /// Opens (creating if needed) the deliveries file at `path` (`DIR/notify.db`).
    pub fn open(path: &Path) -> Result<Self, NotifyError> {
        Ok(Self(Arc::new(super::sqlite::SqliteDeliveries::open(path)?)))
    }

    /// The deliveries kept in `store`.
    pub fn on(store: Arc<dyn DeliveryStore>) -> Self {
        Self(store)
    }

    /// Where they are kept, for messages.
    pub fn shown(&self) -> String {
        self.0.shown()
    }

    /// See [`DeliveryStore::cursor`].
    pub async fn cursor(&self) -> Result<u64, NotifyError> {
        self.0.cursor().await
    }

    /// See [`DeliveryStore::enqueue`].
    pub async fn enqueue(
        &self,
        owed: Vec<NewDelivery>,
        offset: u64,
        now_ms: i64,
    ) -> Result<(), NotifyError> {
        self.0.enqueue(owed, offset, now_ms).await
    }

    /// See [`DeliveryStore::claim`].
    pub async fn claim(
        &self,
        webhooks: Vec<String>,
        now_ms: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<Claimed>, NotifyError> {
        self.0.claim(webhooks, now_ms, lease_ms, limit).await
    }

    /// See [`DeliveryStore::record`].
    pub async fn record(
        &self,
        id: String,
        attempt: Option<Attempt>,
        next: Next,
    ) -> Result<(), NotifyError> {
        self.0.record(id, attempt, next).await
    }

    /// See [`DeliveryStore::list`].
    pub async fn list(&self, gate_id: Option<String>) -> Result<Vec<DeliveryView>, NotifyError> {
        self.0.list(gate_id).await
    }
}
