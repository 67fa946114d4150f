//! The deliveries' progress in a SQLite file (`DIR/notify.db`), shared by every process on an
//! embedded store's directory. Claims run in IMMEDIATE transactions, so two processes never
//! lease the same delivery.

use super::NotifyError;
use super::store::{Attempt, AttemptView, Claimed, DeliveryStore, DeliveryView, NewDelivery, Next};
use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The deliveries tables in their SQLite file.
#[derive(Clone)]
pub struct SqliteDeliveries {
    path: PathBuf,
    conn: Arc<Mutex<Connection>>,
}

impl SqliteDeliveries {
    /// Opens (creating if needed) the deliveries file at `path` (`DIR/notify.db`).
    pub fn open(path: &Path) -> Result<Self, NotifyError> {
        let fail = |e: rusqlite::Error| NotifyError::Store {
            path: path.display().to_string(),
            detail: e.to_string(),
        };
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(fail)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 10000;
             CREATE TABLE IF NOT EXISTS notify_cursor (
                 id INTEGER PRIMARY KEY CHECK (id = 1),
                 spine_offset INTEGER NOT NULL
             );
             CREATE TABLE IF NOT EXISTS deliveries (
                 id TEXT PRIMARY KEY,
                 webhook TEXT NOT NULL,
                 event_id TEXT NOT NULL,
                 exec_id TEXT NOT NULL,
                 seq INTEGER NOT NULL,
                 kind TEXT NOT NULL,
                 tenant TEXT NOT NULL,
                 gate_id TEXT NOT NULL,
                 queue TEXT NOT NULL,
                 status TEXT NOT NULL,
                 detail TEXT,
                 attempts INTEGER NOT NULL DEFAULT 0,
                 next_at_ms INTEGER NOT NULL,
                 lease_until_ms INTEGER NOT NULL DEFAULT 0
             );
             CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (status, next_at_ms);
             CREATE INDEX IF NOT EXISTS deliveries_gate ON deliveries (gate_id);
             CREATE TABLE IF NOT EXISTS delivery_attempts (
                 delivery_id TEXT NOT NULL,
                 n INTEGER NOT NULL,
                 at TEXT NOT NULL,
                 http_status INTEGER,
                 error TEXT,
                 latency_ms INTEGER NOT NULL,
                 PRIMARY KEY (delivery_id, n)
             ) WITHOUT ROWID;",
        )
        .map_err(fail)?;
        Ok(Self {
            path: path.to_owned(),
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, NotifyError> {
        let conn = self.conn.clone();
        let path = self.path.display().to_string();
        let p2 = path.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = conn.lock().map_err(|_| NotifyError::Store {
                path: path.clone(),
                detail: "connection lock poisoned".into(),
            })?;
            f(&mut c).map_err(|e| NotifyError::Store {
                path,
                detail: e.to_string(),
            })
        })
        .await
        .map_err(|e| NotifyError::Store {
            path: p2,
            detail: e.to_string(),
        })?
    }
}

#[async_trait]
impl DeliveryStore for SqliteDeliveries {
    async fn cursor(&self) -> Result<u64, NotifyError> {
        self.with(|c| {
            let v: Option<i64> = c
                .query_row(
                    "SELECT spine_offset FROM notify_cursor WHERE id = 1",
                    [],
                    |r| r.get(0),
                )
                .optional()?;
            Ok(v.and_then(|v| u64::try_from(v).ok()).unwrap_or(0))
        })
        .await
    }

    async fn enqueue(
        &self,
        owed: Vec<NewDelivery>,
        offset: u64,
        now_ms: i64,
    ) -> Result<(), NotifyError> {
        let offset = i64::try_from(offset).unwrap_or(i64::MAX);
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            for d in &owed {
                tx.prepare_cached(
                    "INSERT OR IGNORE INTO deliveries (id, webhook, event_id, exec_id, seq, kind,
                        tenant, gate_id, queue, status, next_at_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'pending', ?10)",
                )?
                .execute(params![
                    d.id,
                    d.webhook,
                    d.event_id,
                    d.exec_id,
                    i64::try_from(d.seq).unwrap_or(i64::MAX),
                    d.kind,
                    d.tenant,
                    d.gate_id,
                    d.queue,
                    now_ms
                ])?;
            }
            tx.execute(
                "INSERT INTO notify_cursor (id, spine_offset) VALUES (1, ?1)
                 ON CONFLICT (id) DO UPDATE SET spine_offset = max(spine_offset, excluded.spine_offset)",
                params![offset],
            )?;
            tx.commit()
        })
        .await
    }

    async fn claim(
        &self,
        webhooks: Vec<String>,
        now_ms: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<Claimed>, NotifyError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // A webhook no longer configured keeps its deliveries for when it is again.
        let names = serde_json::to_string(&webhooks).unwrap_or_else(|_| "[]".into());
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut out = Vec::new();
            {
                let mut due = tx.prepare_cached(
                    "SELECT id, webhook, exec_id, seq, attempts FROM deliveries
                     WHERE status = 'pending' AND next_at_ms <= ?1 AND lease_until_ms <= ?1
                       AND webhook IN (SELECT value FROM json_each(?3))
                     ORDER BY next_at_ms LIMIT ?2",
                )?;
                let rows = due.query_map(params![now_ms, limit, names], |r| {
                    Ok(Claimed {
                        id: r.get(0)?,
                        webhook: r.get(1)?,
                        exec_id: r.get(2)?,
                        seq: u64::try_from(r.get::<_, i64>(3)?).unwrap_or(0),
                        attempts: u32::try_from(r.get::<_, i64>(4)?).unwrap_or(u32::MAX),
                    })
                })?;
                for r in rows {
                    out.push(r?);
                }
            }
            for d in &out {
                tx.prepare_cached("UPDATE deliveries SET lease_until_ms = ?2 WHERE id = ?1")?
                    .execute(params![d.id, now_ms.saturating_add(lease_ms)])?;
            }
            tx.commit()?;
            Ok(out)
        })
        .await
    }

    async fn record(
        &self,
        id: String,
        attempt: Option<Attempt>,
        next: Next,
    ) -> Result<(), NotifyError> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if let Some(a) = &attempt {
                tx.execute(
                    "INSERT OR REPLACE INTO delivery_attempts
                        (delivery_id, n, at, http_status, error, latency_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![
                        id,
                        a.n,
                        a.at,
                        a.http_status,
                        a.error,
                        i64::try_from(a.latency_ms).unwrap_or(i64::MAX)
                    ],
                )?;
            }
            let attempts = attempt.as_ref().map(|a| a.n);
            let (status, detail, next_at) = match &next {
                Next::Delivered => ("delivered", None, None),
                Next::RetryAt(at) => ("pending", None, Some(*at)),
                Next::Failed => ("failed", None, None),
                Next::Skipped(why) => ("skipped", Some(why.clone()), None),
            };
            tx.execute(
                "UPDATE deliveries SET status = ?2, detail = ?3,
                    attempts = coalesce(?4, attempts), next_at_ms = coalesce(?5, next_at_ms),
                    lease_until_ms = 0
                 WHERE id = ?1",
                params![id, status, detail, attempts, next_at],
            )?;
            tx.commit()
        })
        .await
    }

    async fn list(&self, gate_id: Option<String>) -> Result<Vec<DeliveryView>, NotifyError> {
        self.with(move |c| {
            let mut out = Vec::new();
            {
                let mut q = c.prepare(
                    "SELECT id, webhook, kind, tenant, gate_id, status, detail FROM deliveries
                     WHERE ?1 IS NULL OR gate_id = ?1 ORDER BY rowid",
                )?;
                let rows = q.query_map(params![gate_id], |r| {
                    Ok(DeliveryView {
                        id: r.get(0)?,
                        webhook: r.get(1)?,
                        kind: r.get(2)?,
                        tenant: r.get(3)?,
                        gate_id: r.get(4)?,
                        status: r.get(5)?,
                        detail: r.get(6)?,
                        attempts: Vec::new(),
                    })
                })?;
                for r in rows {
                    out.push(r?);
                }
            }
            let mut q = c.prepare(
                "SELECT n, at, http_status, error, latency_ms FROM delivery_attempts
                 WHERE delivery_id = ?1 ORDER BY n",
            )?;
            for d in &mut out {
                let rows = q.query_map(params![d.id], |r| {
                    Ok(AttemptView {
                        n: r.get(0)?,
                        at: r.get(1)?,
                        http_status: r.get(2)?,
                        error: r.get(3)?,
                        latency_ms: u64::try_from(r.get::<_, i64>(4)?).unwrap_or(0),
                    })
                })?;
                for r in rows {
                    d.attempts.push(r?);
                }
            }
            Ok(out)
        })
        .await
    }

    fn shown(&self) -> String {
        self.path.display().to_string()
    }
}
