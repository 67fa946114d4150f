//! Bearer tokens. A token is scoped to one tenant and a set of roles; only its SHA-256 is
//! stored (in `DIR/auth.db`), so a leaked database does not leak tokens. Every request resolves
//! its token to a [`Principal`]; handlers then check the role and scope every lookup by the
//! principal's tenant, answering 404 for anything of another tenant.
//!
//! The web UI does not carry the token: logging in with one creates a session (a random id whose
//! SHA-256 is stored in the `sessions` table beside the tokens, so it survives restarts and every
//! server process sharing the directory knows it), with an expiry; logging out deletes it.

use rand::RngCore;
use rusqlite::{Connection, OptionalExtension};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Start executions and read them.
    Agent,
    /// Read and decide gates.
    Approver,
    /// Kill-switches, metrics, reading everything of the tenant.
    Operator,
    /// Everything of the tenant.
    Admin,
}

impl Role {
    /// Parses `agent`, `approver`, `operator` or `admin`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "agent" => Role::Agent,
            "approver" => Role::Approver,
            "operator" => Role::Operator,
            "admin" => Role::Admin,
            _ => return None,
        })
    }

    /// The spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Approver => "approver",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

/// Who is calling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The tenant every lookup is scoped to.
    pub tenant: String,
    /// Roles held.
    pub roles: Vec<Role>,
    /// The name decisions and switches are recorded under.
    pub name: String,
}

impl Principal {
    /// True if the principal holds any of `roles` (admin holds all).
    pub fn may(&self, roles: &[Role]) -> bool {
        self.roles
            .iter()
            .any(|r| *r == Role::Admin || roles.contains(r))
    }
}

/// The token store failed.
#[derive(Debug, thiserror::Error)]
#[error("token store {path}: {detail}")]
pub struct AuthError {
    /// The database.
    pub path: String,
    /// What failed.
    pub detail: String,
}

/// The token table.
pub struct Tokens {
    path: PathBuf,
    conn: Mutex<Connection>,
}

fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl Tokens {
    /// Opens (creating) `DIR/auth.db`.
    pub fn open(data: &Path) -> Result<Self, AuthError> {
        let path = data.join("auth.db");
        let err = |e: rusqlite::Error| AuthError {
            path: path.display().to_string(),
            detail: e.to_string(),
        };
        std::fs::create_dir_all(data).map_err(|e| AuthError {
            path: data.display().to_string(),
            detail: e.to_string(),
        })?;
        let conn = Connection::open(&path).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(err)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS tokens (
                 hash TEXT PRIMARY KEY,
                 tenant TEXT NOT NULL,
                 roles TEXT NOT NULL,
                 name TEXT NOT NULL,
                 created_at TEXT NOT NULL
             ) STRICT;
             CREATE TABLE IF NOT EXISTS sessions (
                 hash TEXT PRIMARY KEY,
                 token_hash TEXT NOT NULL,
                 created_at INTEGER NOT NULL,
                 expires_at INTEGER NOT NULL
             ) STRICT;",
        )
        .map_err(err)?;
        Ok(Self {
            path,
            conn: Mutex::new(conn),
        })
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, AuthError> {
        let err = |detail: String| AuthError {
            path: self.path.display().to_string(),
            detail,
        };
        let conn = self.conn.lock().map_err(|_| err("lock poisoned".into()))?;
        f(&conn).map_err(|e| err(e.to_string()))
    }

    /// Creates a token and returns it (the only time it exists in clear).
    pub fn create(
        &self,
        tenant: &str,
        roles: &[Role],
        name: &str,
        now: &str,
    ) -> Result<String, AuthError> {
        let mut bytes = [0u8; 24];
        rand::rng().fill_bytes(&mut bytes);
        let token = format!("keel_{}", hex::encode(bytes));
        let roles: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        self.with(|c| {
            c.execute(
                "INSERT INTO tokens (hash, tenant, roles, name, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                (hash(&token), tenant, roles.join(","), name, now),
            )
        })?;
        Ok(token)
    }

    /// The principal a token stands for, if it is one of ours.
    pub fn resolve(&self, token: &str) -> Result<Option<Principal>, AuthError> {
        let row: Option<(String, String, String)> = self.with(|c| {
            c.prepare_cached("SELECT tenant, roles, name FROM tokens WHERE hash = ?1")?
                .query_row([hash(token)], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()
        })?;
        Ok(row.map(|(tenant, roles, name)| Principal {
            tenant,
            roles: roles.split(',').filter_map(Role::parse).collect(),
            name,
        }))
    }

    /// Opens a UI session for `token` (unix seconds `now`, lasting `ttl_secs`): the session id,
    /// the only time it exists in clear, or `None` if the token is not one of ours. Expired
    /// sessions are deleted on the way.
    pub fn create_session(
        &self,
        token: &str,
        now: i64,
        ttl_secs: i64,
    ) -> Result<Option<String>, AuthError> {
        if self.resolve(token)?.is_none() {
            return Ok(None);
        }
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let sid = format!("ks_{}", hex::encode(bytes));
        self.with(|c| {
            c.execute("DELETE FROM sessions WHERE expires_at <= ?1", [now])?;
            c.execute(
                "INSERT INTO sessions (hash, token_hash, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
                (hash(&sid), hash(token), now, now.saturating_add(ttl_secs)),
            )
        })?;
        Ok(Some(sid))
    }

    /// The principal of a live session (not expired at `now`, its token still known).
    pub fn resolve_session(&self, sid: &str, now: i64) -> Result<Option<Principal>, AuthError> {
        let row: Option<(String, String, String)> = self.with(|c| {
            c.prepare_cached(
                "SELECT t.tenant, t.roles, t.name FROM sessions AS s JOIN tokens AS t
                 ON t.hash = s.token_hash WHERE s.hash = ?1 AND s.expires_at > ?2",
            )?
            .query_row((hash(sid), now), |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()
        })?;
        Ok(row.map(|(tenant, roles, name)| Principal {
            tenant,
            roles: roles.split(',').filter_map(Role::parse).collect(),
            name,
        }))
    }

    /// Ends a session (logout): its id is worthless from now on, in every process.
    pub fn revoke_session(&self, sid: &str) -> Result<bool, AuthError> {
        let n = self.with(|c| c.execute("DELETE FROM sessions WHERE hash = ?1", [hash(sid)]))?;
        Ok(n > 0)
    }
}
