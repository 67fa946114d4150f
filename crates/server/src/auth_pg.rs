//! API tokens and web sessions in the PostgreSQL database of a shared spine (schema
//! `keel_auth`): every server on the spine resolves the same tokens, and a revocation refuses the
//! token on all of them at the next request (each request reads the table; nothing is cached).
//!
//! [`TokenStore`] is synchronous (the SQLite store it sits beside is), so the connection lives on
//! a thread of its own with its own small runtime: callers block on a reply for one round trip,
//! as they block on SQLite, from any context (no runtime flavour to get wrong).

use crate::auth::{AuthError, ID_LEN, Role, TokenInfo, TokenRow, TokenStore};
use std::sync::Mutex;
use std::sync::mpsc;
use tokio::runtime::Runtime;
use tokio_postgres::Client;

/// Created once per database, under an advisory lock (two servers starting together).
const SCHEMA: &str = "BEGIN;
SELECT pg_advisory_xact_lock(7305010201);
CREATE SCHEMA IF NOT EXISTS keel_auth;
CREATE TABLE IF NOT EXISTS keel_auth.tokens (
    hash TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    roles TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at BIGINT,
    last_used_at BIGINT,
    revoked_at BIGINT
);
CREATE TABLE IF NOT EXISTS keel_auth.sessions (
    hash TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
COMMIT;";

type Job = Box<dyn FnOnce(&Runtime, &Client) + Send>;

/// The token table in PostgreSQL. See the module documentation.
pub struct PgTokens {
    /// The server as messages show it (no password).
    shown: String,
    jobs: Mutex<mpsc::Sender<Job>>,
}

impl PgTokens {
    /// Connects to the database at `url` (the spine's) and creates the tables if needed.
    pub fn connect(url: &str) -> Result<Self, AuthError> {
        let (jobs, inbox) = mpsc::channel::<Job>();
        let (ready, connected) = mpsc::channel::<Result<String, AuthError>>();
        let url = url.to_owned();
        std::thread::Builder::new()
            .name("keel-auth-pg".into())
            .spawn(move || serve(&url, &ready, &inbox))
            .map_err(|e| AuthError {
                path: "postgres".into(),
                detail: format!("starting the token store's thread: {e}"),
            })?;
        let shown = connected.recv().map_err(|_| AuthError {
            path: "postgres".into(),
            detail: "the token store's thread ended".into(),
        })??;
        Ok(Self {
            shown,
            jobs: Mutex::new(jobs),
        })
    }

    /// Runs `f` on the connection's thread and waits for its answer.
    fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Runtime, &Client) -> Result<T, tokio_postgres::Error> + Send + 'static,
    ) -> Result<T, AuthError> {
        let err = |detail: String| AuthError {
            path: self.shown.clone(),
            detail,
        };
        let (tx, rx) = mpsc::channel();
        let job: Job = Box::new(move |rt, c| {
            let _ = tx.send(f(rt, c));
        });
        self.jobs
            .lock()
            .map_err(|_| err("lock poisoned".into()))?
            .send(job)
            .map_err(|_| err("the connection's thread ended".into()))?;
        rx.recv()
            .map_err(|_| err("the connection's thread ended".into()))?
            .map_err(|e| err(e.to_string()))
    }
}

/// The connection's thread: connect (and create the tables), say so, then run jobs in order,
/// reconnecting first when the connection was lost.
fn serve(url: &str, ready: &mpsc::Sender<Result<String, AuthError>>, inbox: &mpsc::Receiver<Job>) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(AuthError {
                path: "postgres".into(),
                detail: format!("starting a runtime: {e}"),
            }));
            return;
        }
    };
    let open = || {
        rt.block_on(async {
            let (client, shown) =
                keel_spine::postgres::connect_session(url)
                    .await
                    .map_err(|e| AuthError {
                        path: "postgres".into(),
                        detail: e.to_string(),
                    })?;
            let shown = shown.display().to_string();
            client.batch_execute(SCHEMA).await.map_err(|e| AuthError {
                path: shown.clone(),
                detail: format!("creating the token tables: {e}"),
            })?;
            Ok::<_, AuthError>((client, shown))
        })
    };
    let mut client = match open() {
        Ok((client, shown)) => {
            let _ = ready.send(Ok(shown));
            client
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    while let Ok(job) = inbox.recv() {
        if client.is_closed()
            && let Ok((fresh, _)) = open()
        {
            client = fresh;
        }
        job(&rt, &client);
    }
}

fn info(r: &tokio_postgres::Row) -> TokenInfo {
    let h: String = r.get(0);
    let roles: String = r.get(2);
    TokenInfo {
        id: h.chars().take(ID_LEN).collect(),
        tenant: r.get(1),
        roles: roles.split(',').filter_map(Role::parse).collect(),
        name: r.get(3),
        created_at: r.get(4),
        expires_at: r.get(5),
        last_used_at: r.get(6),
        revoked_at: r.get(7),
    }
}

impl TokenStore for PgTokens {
    fn insert(&self, r: &TokenRow<'_>) -> Result<(), AuthError> {
        let (h, tenant, roles, name, created, expires) = (
            r.hash.to_owned(),
            r.tenant.to_owned(),
            r.roles.to_owned(),
            r.name.to_owned(),
            r.created_at.to_owned(),
            r.expires_at,
        );
        self.run(move |rt, c| {
            rt.block_on(c.execute(
                "INSERT INTO keel_auth.tokens (hash, tenant, roles, name, created_at, expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[&h, &tenant, &roles, &name, &created, &expires],
            ))
            .map(drop)
        })
    }

    fn live(
        &self,
        h: &str,
        now: i64,
    ) -> Result<Option<((String, String, String), Option<i64>)>, AuthError> {
        let h = h.to_owned();
        self.run(move |rt, c| {
            let row = rt.block_on(c.query_opt(
                "SELECT tenant, roles, name, last_used_at FROM keel_auth.tokens WHERE hash = $1
                 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2)",
                &[&h, &now],
            ))?;
            Ok(row.map(|r| ((r.get(0), r.get(1), r.get(2)), r.get(3))))
        })
    }

    fn touch(&self, h: &str, now: i64) -> Result<(), AuthError> {
        let h = h.to_owned();
        self.run(move |rt, c| {
            rt.block_on(c.execute(
                "UPDATE keel_auth.tokens SET last_used_at = $2 WHERE hash = $1",
                &[&h, &now],
            ))
            .map(drop)
        })
    }

    fn list(&self, tenant: Option<&str>) -> Result<Vec<TokenInfo>, AuthError> {
        let tenant = tenant.map(str::to_owned);
        self.run(move |rt, c| {
            let rows = rt.block_on(c.query(
                "SELECT hash, tenant, roles, name, created_at, expires_at, last_used_at, revoked_at
                 FROM keel_auth.tokens WHERE $1::text IS NULL OR tenant = $1
                 ORDER BY created_at, hash",
                &[&tenant],
            ))?;
            Ok(rows.iter().map(info).collect())
        })
    }

    fn revoke(&self, id: &str, now: i64) -> Result<(), AuthError> {
        // `id` is 12 hex digits (checked by the caller): no LIKE wildcard in it.
        let pattern = format!("{id}%");
        self.run(move |rt, c| {
            rt.block_on(async {
                c.batch_execute("BEGIN").await?;
                let done = async {
                    c.execute(
                        "UPDATE keel_auth.tokens SET revoked_at = $2
                         WHERE hash LIKE $1 AND revoked_at IS NULL",
                        &[&pattern, &now],
                    )
                    .await?;
                    c.execute(
                        "DELETE FROM keel_auth.sessions WHERE token_hash LIKE $1",
                        &[&pattern],
                    )
                    .await?;
                    c.batch_execute("COMMIT").await
                }
                .await;
                if done.is_err() {
                    let _ = c.batch_execute("ROLLBACK").await;
                }
                done
            })
        })
    }

    fn insert_session(
        &self,
        h: &str,
        token_hash: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<(), AuthError> {
        let (h, token_hash) = (h.to_owned(), token_hash.to_owned());
        self.run(move |rt, c| {
            rt.block_on(async {
                c.execute(
                    "DELETE FROM keel_auth.sessions WHERE expires_at <= $1",
                    &[&now],
                )
                .await?;
                c.execute(
                    "INSERT INTO keel_auth.sessions (hash, token_hash, created_at, expires_at)
                     VALUES ($1, $2, $3, $4)",
                    &[&h, &token_hash, &now, &expires_at],
                )
                .await
                .map(drop)
            })
        })
    }

    fn session(&self, h: &str, now: i64) -> Result<Option<(String, String, String)>, AuthError> {
        let h = h.to_owned();
        self.run(move |rt, c| {
            let row = rt.block_on(c.query_opt(
                "SELECT t.tenant, t.roles, t.name FROM keel_auth.sessions AS s
                 JOIN keel_auth.tokens AS t ON t.hash = s.token_hash
                 WHERE s.hash = $1 AND s.expires_at > $2 AND t.revoked_at IS NULL
                 AND (t.expires_at IS NULL OR t.expires_at > $2)",
                &[&h, &now],
            ))?;
            Ok(row.map(|r| (r.get(0), r.get(1), r.get(2))))
        })
    }

    fn delete_session(&self, h: &str) -> Result<bool, AuthError> {
        let h = h.to_owned();
        self.run(move |rt, c| {
            rt.block_on(c.execute("DELETE FROM keel_auth.sessions WHERE hash = $1", &[&h]))
                .map(|n| n > 0)
        })
    }
}
