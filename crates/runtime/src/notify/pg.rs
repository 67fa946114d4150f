//! The deliveries' progress in the PostgreSQL spine's own database (schema `keel_notify`), so
//! every `keel serve` and `keel worker` on a shared spine, on any machine, shares one cursor and
//! one set of deliveries: a gate is notified once, not once per machine, and a failed delivery
//! is retried by whichever process is up.
//!
//! A claim is one statement: the due rows are picked `FOR UPDATE SKIP LOCKED` and their lease is
//! set in the same `UPDATE`, so two processes claiming at once never get the same delivery and
//! never wait on each other. The connection is the spine's kind (`connect_session`: TLS from the
//! URL's `sslmode`/`sslrootcert`), re-opened before the next operation when it was lost.

use super::NotifyError;
use super::store::{Attempt, AttemptView, Claimed, DeliveryStore, DeliveryView, NewDelivery, Next};
use async_trait::async_trait;
use tokio_postgres::Client;

/// Created once per database, under an advisory lock (two processes starting together).
const SCHEMA: &str = "BEGIN;
SELECT pg_advisory_xact_lock(7305010501);
CREATE SCHEMA IF NOT EXISTS keel_notify;
CREATE TABLE IF NOT EXISTS keel_notify.cursor (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    spine_offset BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS keel_notify.deliveries (
    id TEXT PRIMARY KEY,
    created BIGSERIAL,
    webhook TEXT NOT NULL,
    event_id TEXT NOT NULL,
    exec_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    kind TEXT NOT NULL,
    tenant TEXT NOT NULL,
    gate_id TEXT NOT NULL,
    queue TEXT NOT NULL,
    status TEXT NOT NULL,
    detail TEXT,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_at_ms BIGINT NOT NULL,
    lease_until_ms BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS deliveries_due ON keel_notify.deliveries (status, next_at_ms);
CREATE INDEX IF NOT EXISTS deliveries_gate ON keel_notify.deliveries (gate_id);
CREATE TABLE IF NOT EXISTS keel_notify.attempts (
    delivery_id TEXT NOT NULL,
    n BIGINT NOT NULL,
    at TEXT NOT NULL,
    http_status INTEGER,
    error TEXT,
    latency_ms BIGINT NOT NULL,
    PRIMARY KEY (delivery_id, n)
);
COMMIT;";

/// The deliveries in the PostgreSQL spine's database.
pub struct PgDeliveries {
    url: String,
    shown: String,
    client: tokio::sync::Mutex<Client>,
}

fn detail(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map_or_else(|| e.to_string(), |d| d.message().to_owned())
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl PgDeliveries {
    /// Connects to the spine's database at `url` and creates the tables if needed.
    pub async fn connect(url: &str) -> Result<Self, NotifyError> {
        let (client, shown) = open(url).await?;
        Ok(Self {
            url: url.to_owned(),
            shown,
            client: tokio::sync::Mutex::new(client),
        })
    }

    fn err(&self, context: &'static str) -> impl Fn(tokio_postgres::Error) -> NotifyError + '_ {
        move |e| NotifyError::Store {
            path: self.shown.clone(),
            detail: format!("{context}: {}", detail(&e)),
        }
    }

    /// The connection, re-opened first if it was lost (a server restart, a network cut).
    async fn session(&self) -> Result<tokio::sync::MutexGuard<'_, Client>, NotifyError> {
        let mut client = self.client.lock().await;
        if client.is_closed() {
            *client = open(&self.url).await?.0;
        }
        Ok(client)
    }
}

/// One session on the spine's database with the schema in place, and the server as messages
/// may show it.
async fn open(url: &str) -> Result<(Client, String), NotifyError> {
    let (client, shown) = keel_spine::postgres::connect_session(url)
        .await
        .map_err(|e| NotifyError::Store {
            path: "postgres".into(),
            detail: e.to_string(),
        })?;
    let shown = shown.display().to_string();
    client
        .batch_execute(SCHEMA)
        .await
        .map_err(|e| NotifyError::Store {
            path: shown.clone(),
            detail: format!("creating schema keel_notify: {}", detail(&e)),
        })?;
    Ok((client, shown))
}

#[async_trait]
impl DeliveryStore for PgDeliveries {
    async fn cursor(&self) -> Result<u64, NotifyError> {
        let client = self.session().await?;
        let row = client
            .query_opt(
                "SELECT spine_offset FROM keel_notify.cursor WHERE id = 1",
                &[],
            )
            .await
            .map_err(self.err("reading the cursor"))?;
        Ok(row
            .and_then(|r| u64::try_from(r.get::<_, i64>(0)).ok())
            .unwrap_or(0))
    }

    async fn enqueue(
        &self,
        owed: Vec<NewDelivery>,
        offset: u64,
        now_ms: i64,
    ) -> Result<(), NotifyError> {
        let mut client = self.session().await?;
        let tx = client
            .transaction()
            .await
            .map_err(self.err("recording deliveries"))?;
        let insert = tx
            .prepare(
                "INSERT INTO keel_notify.deliveries (id, webhook, event_id, exec_id, seq, kind,
                    tenant, gate_id, queue, status, next_at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'pending', $10)
                 ON CONFLICT (id) DO NOTHING",
            )
            .await
            .map_err(self.err("recording deliveries"))?;
        for d in &owed {
            tx.execute(
                &insert,
                &[
                    &d.id,
                    &d.webhook,
                    &d.event_id,
                    &d.exec_id,
                    &clamp(d.seq),
                    &d.kind,
                    &d.tenant,
                    &d.gate_id,
                    &d.queue,
                    &now_ms,
                ],
            )
            .await
            .map_err(self.err("recording a delivery"))?;
        }
        tx.execute(
            "INSERT INTO keel_notify.cursor (id, spine_offset) VALUES (1, $1)
             ON CONFLICT (id) DO UPDATE
             SET spine_offset = GREATEST(keel_notify.cursor.spine_offset, excluded.spine_offset)",
            &[&clamp(offset)],
        )
        .await
        .map_err(self.err("moving the cursor"))?;
        tx.commit().await.map_err(self.err("recording deliveries"))
    }

    async fn claim(
        &self,
        webhooks: Vec<String>,
        now_ms: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<Claimed>, NotifyError> {
        let client = self.session().await?;
        // A webhook no longer configured keeps its deliveries for when it is again.
        let rows = client
            .query(
                "UPDATE keel_notify.deliveries SET lease_until_ms = $3
                 WHERE id IN (
                     SELECT id FROM keel_notify.deliveries
                     WHERE status = 'pending' AND next_at_ms <= $1 AND lease_until_ms <= $1
                       AND webhook = ANY($4)
                     ORDER BY next_at_ms LIMIT $2
                     FOR UPDATE SKIP LOCKED)
                 RETURNING id, webhook, exec_id, seq, attempts, next_at_ms",
                &[
                    &now_ms,
                    &clamp(u64::try_from(limit).unwrap_or(u64::MAX)),
                    &now_ms.saturating_add(lease_ms),
                    &webhooks,
                ],
            )
            .await
            .map_err(self.err("claiming deliveries"))?;
        let mut out: Vec<(i64, Claimed)> = rows
            .iter()
            .map(|r| {
                (
                    r.get::<_, i64>(5),
                    Claimed {
                        id: r.get(0),
                        webhook: r.get(1),
                        exec_id: r.get(2),
                        seq: u64::try_from(r.get::<_, i64>(3)).unwrap_or(0),
                        attempts: u32::try_from(r.get::<_, i64>(4)).unwrap_or(u32::MAX),
                    },
                )
            })
            .collect();
        // RETURNING keeps no order; the oldest due first, as SQLite returns them.
        out.sort_by_key(|(at, _)| *at);
        Ok(out.into_iter().map(|(_, c)| c).collect())
    }

    async fn record(
        &self,
        id: String,
        attempt: Option<Attempt>,
        next: Next,
    ) -> Result<(), NotifyError> {
        let mut client = self.session().await?;
        let tx = client
            .transaction()
            .await
            .map_err(self.err("recording an attempt"))?;
        if let Some(a) = &attempt {
            tx.execute(
                "INSERT INTO keel_notify.attempts
                    (delivery_id, n, at, http_status, error, latency_ms)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (delivery_id, n) DO UPDATE SET at = excluded.at,
                    http_status = excluded.http_status, error = excluded.error,
                    latency_ms = excluded.latency_ms",
                &[
                    &id,
                    &i64::from(a.n),
                    &a.at,
                    &a.http_status.map(i32::from),
                    &a.error,
                    &clamp(a.latency_ms),
                ],
            )
            .await
            .map_err(self.err("recording an attempt"))?;
        }
        let attempts = attempt.as_ref().map(|a| i64::from(a.n));
        let (status, detail, next_at) = match &next {
            Next::Delivered => ("delivered", None, None),
            Next::RetryAt(at) => ("pending", None, Some(*at)),
            Next::Failed => ("failed", None, None),
            Next::Skipped(why) => ("skipped", Some(why.clone()), None),
        };
        tx.execute(
            "UPDATE keel_notify.deliveries SET status = $2, detail = $3,
                attempts = coalesce($4, attempts), next_at_ms = coalesce($5, next_at_ms),
                lease_until_ms = 0
             WHERE id = $1",
            &[&id, &status, &detail, &attempts, &next_at],
        )
        .await
        .map_err(self.err("recording a delivery's state"))?;
        tx.commit().await.map_err(self.err("recording an attempt"))
    }

    async fn list(&self, gate_id: Option<String>) -> Result<Vec<DeliveryView>, NotifyError> {
        let client = self.session().await?;
        let rows = client
            .query(
                "SELECT id, webhook, kind, tenant, gate_id, status, detail
                 FROM keel_notify.deliveries
                 WHERE $1::TEXT IS NULL OR gate_id = $1 ORDER BY created",
                &[&gate_id],
            )
            .await
            .map_err(self.err("listing deliveries"))?;
        let mut out: Vec<DeliveryView> = rows
            .iter()
            .map(|r| DeliveryView {
                id: r.get(0),
                webhook: r.get(1),
                kind: r.get(2),
                tenant: r.get(3),
                gate_id: r.get(4),
                status: r.get(5),
                detail: r.get(6),
                attempts: Vec::new(),
            })
            .collect();
        let ids: Vec<String> = out.iter().map(|d| d.id.clone()).collect();
        let rows = client
            .query(
                "SELECT delivery_id, n, at, http_status, error, latency_ms
                 FROM keel_notify.attempts WHERE delivery_id = ANY($1)
                 ORDER BY delivery_id, n",
                &[&ids],
            )
            .await
            .map_err(self.err("listing attempts"))?;
        for r in &rows {
            let id: String = r.get(0);
            if let Some(d) = out.iter_mut().find(|d| d.id == id) {
                d.attempts.push(AttemptView {
                    n: u32::try_from(r.get::<_, i64>(1)).unwrap_or(u32::MAX),
                    at: r.get(2),
                    http_status: r
                        .get::<_, Option<i32>>(3)
                        .and_then(|s| u16::try_from(s).ok()),
                    error: r.get(4),
                    latency_ms: u64::try_from(r.get::<_, i64>(5)).unwrap_or(0),
                });
            }
        }
        Ok(out)
    }

    fn shown(&self) -> String {
        self.shown.clone()
    }
}
