//! Gates reach people: signed webhooks on `gate.requested` and on SLA escalation
//! (`gate.escalated`), per queue, configured in the project's `notifications.yaml`
//! ([`config`]). A [`Notifier`] runs beside the agent loop (its own task: a slow or failing
//! receiver never holds a step) in every `keel serve` and `keel worker`:
//!
//! 1. **scan**: reads the spine's commit order past its cursor and records, for every gate event
//!    a webhook wants, a delivery owed ([`store`]: `DIR/notify.db` beside an embedded spine, the
//!    spine's database beside a PostgreSQL one), moving the cursor in the same transaction;
//! 2. **deliver**: claims due deliveries with a lease, builds each body from the execution's
//!    events ([`body`]), signs it ([`sign`]) and POSTs it; every attempt is recorded, a failure
//!    is retried with exponential backoff until the webhook's `max_attempts`.
//!
//! What is owed is derived from the spine, never held in memory, so a notification pending
//! when a process stops is sent by the next one (decision 105).

pub mod body;
pub mod config;
#[cfg(feature = "postgres")]
pub mod pg;
pub mod sign;
pub mod sqlite;
pub mod store;

pub use config::{Retry, Secret, Webhook, WebhookSpec, Webhooks};
#[cfg(feature = "postgres")]
pub use pg::PgDeliveries;
pub use sqlite::SqliteDeliveries;
pub use store::{Deliveries, DeliveryStore, DeliveryView};

use keel_core::ExecId;
use keel_core::control::CONTROL_STREAM;
use keel_core::payload::Payload;
use keel_spine::clock::Clock;
use keel_spine::{EventLog, SpineError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use store::{Attempt, Claimed, NewDelivery, Next};

/// Why notifications cannot be configured or delivered (a receiver's failure is not one of
/// these: it is a recorded attempt).
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The notifications file is wrong.
    #[error("{file}: {detail}")]
    Config {
        /// The file (or the webhook).
        file: String,
        /// What and where.
        detail: String,
    },
    /// A webhook's secret or URL variable is not set.
    #[error("webhook {webhook}: environment variable {variable} is not set (or empty)")]
    Unresolved {
        /// The webhook.
        webhook: String,
        /// The variable.
        variable: String,
    },
    /// The deliveries' store failed.
    #[error("deliveries store {path}: {detail}")]
    Store {
        /// Its file, or its server (without a password).
        path: String,
        /// What failed.
        detail: String,
    },
    /// The spine failed.
    #[error(transparent)]
    Spine(#[from] SpineError),
}

/// Deliveries sent at a time by one process.
const BATCH: usize = 16;
/// Events read from the spine at a time by the scan.
const SCAN_BATCH: usize = 1024;
/// How often an idle notifier looks for new gates and due retries.
pub const TICK: Duration = Duration::from_millis(250);

/// Sends the notifications owed to the configured webhooks.
pub struct Notifier {
    log: Arc<dyn EventLog>,
    clock: Arc<dyn Clock>,
    store: Deliveries,
    hooks: Vec<Webhook>,
    public_url: Option<String>,
    http: reqwest::Client,
}

impl Notifier {
    /// A notifier over `log` for `hooks` (resolved by [`Webhooks::resolve`]), recording in
    /// `store`. The process must have chosen its TLS provider first (decision 062).
    pub fn new(
        log: Arc<dyn EventLog>,
        clock: Arc<dyn Clock>,
        store: Deliveries,
        hooks: Vec<Webhook>,
        public_url: Option<String>,
    ) -> Result<Self, NotifyError> {
        let http = reqwest::Client::builder()
            // A redirect would carry the signed body somewhere the file does not name.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("keel-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| NotifyError::Config {
                file: "webhook HTTP client".into(),
                detail: e.without_url().to_string(),
            })?;
        Ok(Self {
            log,
            clock,
            store,
            hooks,
            public_url,
            http,
        })
    }

    /// The deliveries table (to list what was sent).
    pub fn deliveries(&self) -> &Deliveries {
        &self.store
    }

    fn now_ms(&self) -> i64 {
        self.clock.now().timestamp_millis()
    }

    /// Records the deliveries owed for every gate event committed since the last scan (by any
    /// process); returns how many.
    pub async fn scan(&self) -> Result<usize, NotifyError> {
        let mut offset = self.store.cursor().await?;
        let mut found = 0;
        loop {
            let batch = self.log.read_all(offset + 1, SCAN_BATCH).await?;
            let Some(last) = batch.last().map(|c| c.offset) else {
                return Ok(found);
            };
            let mut owed = Vec::new();
            for c in &batch {
                let e = &c.event;
                if e.exec_id == CONTROL_STREAM {
                    continue;
                }
                let (kind, gate_id, queue) = match &e.payload {
                    Payload::GateRequested(g) => ("gate.requested", &g.gate_id, &g.queue),
                    Payload::GateEscalated(g) => ("gate.escalated", &g.gate_id, &g.queue),
                    _ => continue,
                };
                for h in self
                    .hooks
                    .iter()
                    .filter(|h| h.spec.wants(kind, queue, &e.tenant.0))
                {
                    owed.push(NewDelivery {
                        id: format!("{}:{}", h.spec.name, e.event_id),
                        webhook: h.spec.name.clone(),
                        event_id: e.event_id.to_string(),
                        exec_id: e.exec_id.to_string(),
                        seq: e.seq,
                        kind: kind.into(),
                        tenant: e.tenant.0.clone(),
                        gate_id: gate_id.clone(),
                        queue: queue.clone(),
                    });
                }
            }
            found += owed.len();
            self.store.enqueue(owed, last, self.now_ms()).await?;
            offset = last;
        }
    }

    /// Sends the deliveries due now (at most one batch, concurrently); returns how many were
    /// claimed.
    pub async fn deliver_due(&self) -> Result<usize, NotifyError> {
        let names = self.hooks.iter().map(|h| h.spec.name.clone()).collect();
        let lease = self
            .hooks
            .iter()
            .map(|h| h.spec.timeout)
            .max()
            .unwrap_or_default()
            .saturating_mul(2)
            .saturating_add(Duration::from_secs(5));
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        let claimed = self
            .store
            .claim(names, self.now_ms(), lease_ms, BATCH)
            .await?;
        let n = claimed.len();
        let results = futures::future::join_all(claimed.into_iter().map(|c| self.deliver(c))).await;
        results.into_iter().collect::<Result<Vec<()>, _>>()?;
        Ok(n)
    }

    async fn deliver(&self, c: Claimed) -> Result<(), NotifyError> {
        let Some(hook) = self.hooks.iter().find(|h| h.spec.name == c.webhook) else {
            return Ok(());
        };
        let Ok(exec) = c.exec_id.parse::<ExecId>() else {
            let why = format!("{:?} is not an execution id", c.exec_id);
            return self.store.record(c.id, None, Next::Skipped(why)).await;
        };
        let events = self.log.read(exec, 1).await?;
        let (kind, body) =
            match body::build(&events, c.seq, &c.id, hook, self.public_url.as_deref()) {
                Ok(b) => b,
                Err(why) => return self.store.record(c.id, None, Next::Skipped(why)).await,
            };
        let n = c.attempts.saturating_add(1);
        let now = self.clock.now();
        let signature = sign::signature_header_rotating(
            hook.secret.expose(),
            hook.previous.as_ref().map(Secret::expose),
            now.timestamp(),
            &body,
        );
        let began = Instant::now();
        let sent = self
            .http
            .post(hook.url.clone())
            .timeout(hook.spec.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(sign::SIGNATURE_HEADER, signature)
            .header(sign::DELIVERY_HEADER, &c.id)
            .header(sign::EVENT_HEADER, kind)
            .header(sign::ATTEMPT_HEADER, n.to_string())
            .body(body)
            .send()
            .await;
        let latency_ms = u64::try_from(began.elapsed().as_millis()).unwrap_or(u64::MAX);
        let (http_status, error) = match sent {
            Ok(r) if r.status().is_success() => (Some(r.status().as_u16()), None),
            Ok(r) => (
                Some(r.status().as_u16()),
                Some(format!("the receiver answered {}", r.status())),
            ),
            Err(e) => (None, Some(transport_error(e))),
        };
        let next = if error.is_none() {
            Next::Delivered
        } else if n >= hook.spec.retry.max_attempts {
            Next::Failed
        } else {
            let wait = i64::try_from(hook.spec.retry.backoff(n).as_millis()).unwrap_or(i64::MAX);
            Next::RetryAt(self.now_ms().saturating_add(wait))
        };
        let attempt = Attempt {
            n,
            at: now.to_rfc3339(),
            http_status,
            error,
            latency_ms,
        };
        self.store.record(c.id, Some(attempt), next).await
    }

    /// One round: scan, then send everything due now.
    pub async fn tick(&self) -> Result<(), NotifyError> {
        self.scan().await?;
        while self.deliver_due().await? == BATCH {}
        Ok(())
    }

    /// Runs [`Notifier::tick`] every [`TICK`] on its own task until the process stops; an error
    /// (a store or spine failure) goes to `report` and the next tick tries again.
    pub fn spawn(
        self: Arc<Self>,
        report: impl Fn(&NotifyError) + Send + Sync + 'static,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                if let Err(e) = self.tick().await {
                    report(&e);
                }
                tokio::time::sleep(TICK).await;
            }
        })
    }
}

/// A transport failure's description: reqwest's message and its causes, without the URL (which
/// may be a credential).
fn transport_error(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
