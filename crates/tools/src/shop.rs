//! The demo's "shop" (orders A-1001 to A-1050): a small SQLite database (`DIR/shop.db`, separate
//! from Keel's store: it is the outside world the agent acts on) and the four builtin tools that
//! act on it, one per consequence tier, so side effects are real and countable:
//!
//! | tool | tier | effect |
//! |---|---|---|
//! | `lookup_order` | 0 | reads an order |
//! | `draft_reply` | 1 | saves a reply draft (undone by `discard_draft`) |
//! | `notify_team` | 2 | posts a message to a team channel |
//! | `issue_customer_refund` | 3 | moves money: inserts a refund |
//!
//! `issue_customer_refund` deduplicates on its idempotency key like a payment API does
//! (`refunds.idempotency_key` is unique): a repeat with the same key returns the first refund.

use crate::adapter::AdapterError;
use crate::adapter::builtin::Builtins;
use crate::contract::ErrorClass;
use crate::error::ToolError;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The builtin functions the shop registers (for checking contracts without opening a shop).
pub const BUILTIN_NAMES: [&str; 5] = [
    "lookup_order",
    "draft_reply",
    "discard_draft",
    "notify_team",
    "issue_customer_refund",
];

/// The shop database.
#[derive(Clone)]
pub struct Shop {
    path: PathBuf,
    conn: Arc<Mutex<Connection>>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS orders (
    order_id TEXT PRIMARY KEY, customer TEXT NOT NULL, amount_cents INTEGER NOT NULL,
    status TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS refunds (
    refund_id INTEGER PRIMARY KEY, order_id TEXT NOT NULL, amount_cents INTEGER NOT NULL,
    reason TEXT NOT NULL, idempotency_key TEXT UNIQUE);
CREATE TABLE IF NOT EXISTS drafts (
    draft_id INTEGER PRIMARY KEY, order_id TEXT NOT NULL, body TEXT NOT NULL,
    discarded INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS notifications (
    notification_id INTEGER PRIMARY KEY, channel TEXT NOT NULL, message TEXT NOT NULL);
INSERT OR IGNORE INTO orders VALUES
    ('A-1001', 'ada@example.com', 4999, 'delivered'),
    ('A-1002', 'grace@example.com', 12900, 'delivered'),
    ('A-1003', 'linus@example.com', 2500, 'shipped');
INSERT OR IGNORE INTO orders
    WITH RECURSIVE n(i) AS (SELECT 1004 UNION ALL SELECT i + 1 FROM n WHERE i < 1050)
    SELECT 'A-' || i, 'customer' || i || '@example.com', 1500 + (i * 7919) % 20000,
           CASE i % 4 WHEN 0 THEN 'placed' WHEN 3 THEN 'shipped' ELSE 'delivered' END
    FROM n;
";

/// How long an opener waits for another process holding the shop's file.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// The pause between tries while another opener sets a new file up.
const BUSY_RETRY: Duration = Duration::from_millis(20);

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

fn arg_str<'a>(args: &'a Value, field: &str) -> Result<&'a str, AdapterError> {
    args.get(field).and_then(Value::as_str).ok_or_else(|| {
        AdapterError::new(
            ErrorClass::ClientError,
            format!("argument {field} must be a string"),
        )
    })
}

impl Shop {
    /// Opens (creating and seeding if needed) the shop at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, ToolError> {
        let path = path.as_ref().to_owned();
        let err = |context| {
            let path = path.clone();
            move |e: rusqlite::Error| ToolError::Shop {
                path,
                context,
                detail: e.to_string(),
            }
        };
        let conn = Connection::open(&path).map_err(err("opening"))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(err("setting the busy timeout"))?;
        // Processes starting together on one data directory (workers and servers) race to
        // switch a new file to WAL and create its tables; SQLite may answer a loser "database
        // is locked" at once, without waiting on the busy timeout (where waiting could
        // deadlock). The winner is done in milliseconds: try again, up to the busy timeout.
        let mut waited = Duration::ZERO;
        loop {
            let made = conn
                .execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;")
                .map_err(|e| ("setting pragmas", e))
                .and_then(|()| {
                    conn.execute_batch(SCHEMA)
                        .map_err(|e| ("creating tables", e))
                });
            match made {
                Ok(()) => break,
                Err((_, e)) if is_busy(&e) && waited < BUSY_TIMEOUT => {
                    std::thread::sleep(BUSY_RETRY);
                    waited += BUSY_RETRY;
                }
                Err((context, e)) => return Err(err(context)(e)),
            }
        }
        Ok(Self {
            path,
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` on the connection on a blocking thread; engine errors become `5xx`-class.
    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, AdapterError> + Send + 'static,
    ) -> Result<T, AdapterError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let guard = conn
                .lock()
                .map_err(|_| AdapterError::new(ErrorClass::ServerError, "shop lock poisoned"))?;
            f(&guard)
        })
        .await
        .map_err(|e| AdapterError::new(ErrorClass::ServerError, e.to_string()))?
    }

    /// Counts rows of a table (for tests and the demo's summary).
    pub fn count(&self, table: &str) -> Result<u64, ToolError> {
        let table = match table {
            "orders" | "refunds" | "drafts" | "notifications" => table,
            _ => {
                return Err(ToolError::Shop {
                    path: self.path.clone(),
                    context: "counting",
                    detail: format!("no table {table}"),
                });
            }
        };
        let conn = self.conn.lock().map_err(|_| ToolError::Shop {
            path: self.path.clone(),
            context: "counting",
            detail: "lock poisoned".into(),
        })?;
        let sql = if table == "drafts" {
            "SELECT count(*) FROM drafts WHERE discarded = 0".to_owned()
        } else {
            format!("SELECT count(*) FROM {table}")
        };
        conn.query_row(&sql, [], |r| r.get(0))
            .map_err(|e| ToolError::Shop {
                path: self.path.clone(),
                context: "counting",
                detail: e.to_string(),
            })
    }

    /// The shop's builtin functions, ready for a registry.
    pub fn builtins(&self) -> Builtins {
        let mut b = Builtins::default();
        let db =
            |e: rusqlite::Error| AdapterError::new(ErrorClass::ServerError, format!("shop: {e}"));

        let shop = self.clone();
        b.register("lookup_order", false, Arc::new(move |args, _key| {
            let shop = shop.clone();
            Box::pin(async move {
                let id = arg_str(&args, "order_id")?.to_owned();
                shop.with(move |c| {
                    c.query_row("SELECT order_id, customer, amount_cents, status FROM orders WHERE order_id = ?1", [&id], |r| {
                        Ok(json!({"order_id": r.get::<_, String>(0)?, "customer": r.get::<_, String>(1)?,
                                  "amount_cents": r.get::<_, i64>(2)?, "status": r.get::<_, String>(3)?}))
                    }).optional().map_err(db)?
                    .ok_or_else(|| AdapterError::new(ErrorClass::ToolError, format!("no order {id}")))
                }).await
            })
        }));

        let shop = self.clone();
        b.register(
            "draft_reply",
            false,
            Arc::new(move |args, _key| {
                let shop = shop.clone();
                Box::pin(async move {
                    let (order, body) = (
                        arg_str(&args, "order_id")?.to_owned(),
                        arg_str(&args, "body")?.to_owned(),
                    );
                    shop.with(move |c| {
                        c.execute(
                            "INSERT INTO drafts (order_id, body) VALUES (?1, ?2)",
                            params![order, body],
                        )
                        .map_err(db)?;
                        Ok(json!({"draft_id": c.last_insert_rowid()}))
                    })
                    .await
                })
            }),
        );

        let shop = self.clone();
        b.register("discard_draft", false, Arc::new(move |args, _key| {
            let shop = shop.clone();
            Box::pin(async move {
                let (order, body) = (arg_str(&args, "order_id")?.to_owned(), arg_str(&args, "body")?.to_owned());
                shop.with(move |c| {
                    let n = c.execute("UPDATE drafts SET discarded = 1 WHERE order_id = ?1 AND body = ?2 AND discarded = 0", params![order, body]).map_err(db)?;
                    Ok(json!({"discarded": n}))
                }).await
            })
        }));

        let shop = self.clone();
        b.register(
            "notify_team",
            false,
            Arc::new(move |args, _key| {
                let shop = shop.clone();
                Box::pin(async move {
                    let (channel, msg) = (
                        arg_str(&args, "channel")?.to_owned(),
                        arg_str(&args, "message")?.to_owned(),
                    );
                    shop.with(move |c| {
                        c.execute(
                            "INSERT INTO notifications (channel, message) VALUES (?1, ?2)",
                            params![channel, msg],
                        )
                        .map_err(db)?;
                        Ok(json!({"notification_id": c.last_insert_rowid()}))
                    })
                    .await
                })
            }),
        );

        let shop = self.clone();
        b.register("issue_customer_refund", true, Arc::new(move |args, key| {
            let shop = shop.clone();
            Box::pin(async move {
                let order = arg_str(&args, "order_id")?.to_owned();
                let reason = arg_str(&args, "reason")?.to_owned();
                let amount = args.get("amount_cents").and_then(Value::as_i64).ok_or_else(|| AdapterError::new(ErrorClass::ClientError, "argument amount_cents must be an integer"))?;
                shop.with(move |c| {
                    if let Some(k) = &key {
                        let found: Option<i64> = c.query_row("SELECT refund_id FROM refunds WHERE idempotency_key = ?1", [k], |r| r.get(0)).optional().map_err(db)?;
                        if let Some(id) = found {
                            return Ok(json!({"refund_id": format!("rf_{id}"), "status": "issued"}));
                        }
                    }
                    let paid: Option<i64> = c.query_row("SELECT amount_cents FROM orders WHERE order_id = ?1", [&order], |r| r.get(0)).optional().map_err(db)?;
                    match paid {
                        None => return Err(AdapterError::new(ErrorClass::ToolError, format!("no order {order}"))),
                        Some(p) if amount > p => return Ok(json!({"refund_id": "", "status": "rejected"})),
                        Some(_) => {}
                    }
                    c.execute("INSERT INTO refunds (order_id, amount_cents, reason, idempotency_key) VALUES (?1, ?2, ?3, ?4)", params![order, amount, reason, key]).map_err(db)?;
                    Ok(json!({"refund_id": format!("rf_{}", c.last_insert_rowid()), "status": "issued"}))
                }).await
            })
        }));
        b
    }
}
