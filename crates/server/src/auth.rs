//! Bearer tokens. A token is scoped to one tenant and a set of roles; only its SHA-256 is
//! stored (in `DIR/auth.db`), so a leaked database does not leak tokens. Every request resolves
//! its token to a [`Principal`]; handlers then check the role and scope every lookup by the
//! principal's tenant, answering 404 for anything of another tenant.
//!
//! A token may expire (`expires_at`, unix seconds) and may be revoked (`revoked_at`); either
//! refuses it on the next request, in every process sharing the directory, because every request
//! reads the table (there is no cache to invalidate). Its last use is recorded to the minute
//! (`last_used_at`): one write per token per minute, not one per request. A token's public id is
//! the first 12 hex digits of its hash: enough to name it in `keel tokens revoke`, useless to
//! authenticate.
//!
//! The web UI does not carry the token: logging in with one creates a session (a random id whose
//! SHA-256 is stored in the `sessions` table beside the tokens, so it survives restarts and every
//! server process sharing the directory knows it), with an expiry; logging out deletes it.
//!
//! Beside a PostgreSQL spine both tables live in its database instead ([`TokenStore`], the
//! `postgres` feature's `auth_pg`), so every server sharing the spine shares them.

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

/// The token table: tokens and UI sessions, in a [`TokenStore`] — `DIR/auth.db`
/// ([`Tokens::open`]), or the PostgreSQL database of a shared spine ([`Tokens::on`]), so a token
/// made through one server works on every other and a revocation reaches them all at once.
pub struct Tokens {
    store: Box<dyn TokenStore>,
}

/// Where tokens and sessions are kept: only hashes, never a token or a session id in clear.
/// Every operation is one statement or one transaction, so processes sharing the store agree.
pub trait TokenStore: Send + Sync {
    /// Stores a new token's row.
    fn insert(&self, row: &TokenRow<'_>) -> Result<(), AuthError>;
    /// The tenant, roles and name of a live token (not revoked, not expired at `now`), and its
    /// last use.
    #[allow(clippy::type_complexity)]
    fn live(
        &self,
        hash: &str,
        now: i64,
    ) -> Result<Option<((String, String, String), Option<i64>)>, AuthError>;
    /// Records a token's use at `now`.
    fn touch(&self, hash: &str, now: i64) -> Result<(), AuthError>;
    /// Every token (of `tenant` only, when given), oldest first.
    fn list(&self, tenant: Option<&str>) -> Result<Vec<TokenInfo>, AuthError>;
    /// Revokes at `now` the tokens whose hash starts with `id` and deletes their sessions, in
    /// one transaction.
    fn revoke(&self, id: &str, now: i64) -> Result<(), AuthError>;
    /// Deletes the sessions expired at `now` and stores a new one.
    fn insert_session(
        &self,
        hash: &str,
        token_hash: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<(), AuthError>;
    /// The tenant, roles and name behind a live session whose token is live.
    fn session(&self, hash: &str, now: i64) -> Result<Option<(String, String, String)>, AuthError>;
    /// Deletes a session; whether it existed.
    fn delete_session(&self, hash: &str) -> Result<bool, AuthError>;
}

/// A new token's row.
pub struct TokenRow<'a> {
    /// SHA-256 of the token, hex.
    pub hash: &'a str,
    /// Its tenant.
    pub tenant: &'a str,
    /// Its roles, comma-separated.
    pub roles: &'a str,
    /// Its name.
    pub name: &'a str,
    /// When it was made (RFC 3339).
    pub created_at: &'a str,
    /// When it expires (unix seconds), if ever.
    pub expires_at: Option<i64>,
}

/// The token table in `DIR/auth.db` (SQLite).
pub struct SqliteTokens {
    path: PathBuf,
    conn: Mutex<Connection>,
}

fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// How many hex digits of a token's hash are its public id.
pub(crate) const ID_LEN: usize = 12;

/// How stale `last_used_at` may get, in seconds: the price of recording use without a write per
/// request.
const LAST_USED_GRAIN_SECS: i64 = 60;

/// Adds the expiry, last-use and revocation columns to a token table made before they existed.
fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let mut have = Vec::new();
    {
        let mut st = conn.prepare("PRAGMA table_info(tokens)")?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            have.push(r.get::<_, String>(1)?);
        }
    }
    for col in ["expires_at", "last_used_at", "revoked_at"] {
        if !have.iter().any(|c| c == col) {
            conn.execute_batch(&format!("ALTER TABLE tokens ADD COLUMN {col} INTEGER"))?;
        }
    }
    Ok(())
}

/// What is known of a token, never the token itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenInfo {
    /// Public id: the first 12 hex digits of the token's SHA-256.
    pub id: String,
    /// The tenant it is scoped to.
    pub tenant: String,
    /// Roles it holds.
    pub roles: Vec<Role>,
    /// The name its decisions are recorded under.
    pub name: String,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// Unix seconds after which it is refused, if it expires.
    pub expires_at: Option<i64>,
    /// Unix seconds of its last use (to the minute), if it was used.
    pub last_used_at: Option<i64>,
    /// Unix seconds of its revocation, if revoked.
    pub revoked_at: Option<i64>,
}

impl TokenInfo {
    /// `active`, `expired` or `revoked` at `now`.
    pub fn status(&self, now: i64) -> &'static str {
        if self.revoked_at.is_some() {
            "revoked"
        } else if self.expires_at.is_some_and(|e| e <= now) {
            "expired"
        } else {
            "active"
        }
    }
}

/// What [`Tokens::revoke`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Revoked {
    /// Revoked now (its sessions ended with it).
    Now(TokenInfo),
    /// It was revoked before.
    Already(TokenInfo),
    /// No token of that tenant has that id.
    Unknown,
}

/// A principal from a row's tenant, roles and name.
fn principal((tenant, roles, name): (String, String, String)) -> Principal {
    Principal {
        tenant,
        roles: roles.split(',').filter_map(Role::parse).collect(),
        name,
    }
}

impl SqliteTokens {
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
                 created_at TEXT NOT NULL,
                 expires_at INTEGER,
                 last_used_at INTEGER,
                 revoked_at INTEGER
             ) STRICT;
             CREATE TABLE IF NOT EXISTS sessions (
                 hash TEXT PRIMARY KEY,
                 token_hash TEXT NOT NULL,
                 created_at INTEGER NOT NULL,
                 expires_at INTEGER NOT NULL
             ) STRICT;",
        )
        .map_err(err)?;
        migrate(&conn).map_err(err)?;
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
}

impl TokenStore for SqliteTokens {
    fn insert(&self, r: &TokenRow<'_>) -> Result<(), AuthError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO tokens (hash, tenant, roles, name, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                (
                    r.hash,
                    r.tenant,
                    r.roles,
                    r.name,
                    r.created_at,
                    r.expires_at,
                ),
            )
        })?;
        Ok(())
    }

    fn live(
        &self,
        h: &str,
        now: i64,
    ) -> Result<Option<((String, String, String), Option<i64>)>, AuthError> {
        self.with(|c| {
            c.prepare_cached(
                "SELECT tenant, roles, name, last_used_at FROM tokens WHERE hash = ?1
                 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?2)",
            )?
            .query_row((h, now), |r| {
                Ok(((r.get(0)?, r.get(1)?, r.get(2)?), r.get(3)?))
            })
            .optional()
        })
    }

    fn touch(&self, h: &str, now: i64) -> Result<(), AuthError> {
        self.with(|c| {
            c.prepare_cached("UPDATE tokens SET last_used_at = ?2 WHERE hash = ?1")?
                .execute((h, now))
        })?;
        Ok(())
    }

    fn list(&self, tenant: Option<&str>) -> Result<Vec<TokenInfo>, AuthError> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT hash, tenant, roles, name, created_at, expires_at, last_used_at, revoked_at
                 FROM tokens WHERE ?1 IS NULL OR tenant = ?1 ORDER BY created_at, hash",
            )?;
            let rows = st.query_map([tenant], |r| {
                let h: String = r.get(0)?;
                let roles: String = r.get(2)?;
                Ok(TokenInfo {
                    id: h.chars().take(ID_LEN).collect(),
                    tenant: r.get(1)?,
                    roles: roles.split(',').filter_map(Role::parse).collect(),
                    name: r.get(3)?,
                    created_at: r.get(4)?,
                    expires_at: r.get(5)?,
                    last_used_at: r.get(6)?,
                    revoked_at: r.get(7)?,
                })
            })?;
            rows.collect()
        })
    }

    fn revoke(&self, id: &str, now: i64) -> Result<(), AuthError> {
        let pattern = format!("{id}%");
        self.with(|c| {
            let tx = c.unchecked_transaction()?;
            tx.execute(
                "UPDATE tokens SET revoked_at = ?2 WHERE hash LIKE ?1 AND revoked_at IS NULL",
                (&pattern, now),
            )?;
            tx.execute("DELETE FROM sessions WHERE token_hash LIKE ?1", [&pattern])?;
            tx.commit()
        })
    }

    fn insert_session(
        &self,
        h: &str,
        token_hash: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<(), AuthError> {
        self.with(|c| {
            c.execute("DELETE FROM sessions WHERE expires_at <= ?1", [now])?;
            c.execute(
                "INSERT INTO sessions (hash, token_hash, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
                (h, token_hash, now, expires_at),
            )
        })?;
        Ok(())
    }

    fn session(&self, h: &str, now: i64) -> Result<Option<(String, String, String)>, AuthError> {
        self.with(|c| {
            c.prepare_cached(
                "SELECT t.tenant, t.roles, t.name FROM sessions AS s JOIN tokens AS t
                 ON t.hash = s.token_hash WHERE s.hash = ?1 AND s.expires_at > ?2
                 AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > ?2)",
            )?
            .query_row((h, now), |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()
        })
    }

    fn delete_session(&self, h: &str) -> Result<bool, AuthError> {
        let n = self.with(|c| c.execute("DELETE FROM sessions WHERE hash = ?1", [h]))?;
        Ok(n > 0)
    }
}

impl Tokens {
    /// Opens (creating) `DIR/auth.db`.
    pub fn open(data: &Path) -> Result<Self, AuthError> {
        Ok(Self::on(Box::new(SqliteTokens::open(data)?)))
    }

    /// The tokens kept in `store`.
    pub fn on(store: Box<dyn TokenStore>) -> Self {
        Self { store }
    }

    /// Creates a token that never expires and returns it (the only time it exists in clear).
    pub fn create(
        &self,
        tenant: &str,
        roles: &[Role],
        name: &str,
        now: &str,
    ) -> Result<String, AuthError> {
        self.issue(tenant, roles, name, now, None)
    }

    /// Creates a token refused after unix second `expires_at` (never, if `None`) and returns it,
    /// the only time it exists in clear. Its id is [`Tokens::id_of`] it.
    pub fn issue(
        &self,
        tenant: &str,
        roles: &[Role],
        name: &str,
        now: &str,
        expires_at: Option<i64>,
    ) -> Result<String, AuthError> {
        let mut bytes = [0u8; 24];
        rand::rng().fill_bytes(&mut bytes);
        let token = format!("keel_{}", hex::encode(bytes));
        let roles: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        self.store.insert(&TokenRow {
            hash: &hash(&token),
            tenant,
            roles: &roles.join(","),
            name,
            created_at: now,
            expires_at,
        })?;
        Ok(token)
    }

    /// The public id of a token (what `list` shows and `revoke` takes).
    pub fn id_of(token: &str) -> String {
        hash(token).chars().take(ID_LEN).collect()
    }

    /// The principal a token stands for at unix second `now`, if it is one of ours, not revoked
    /// and not expired. Records its use (to the minute).
    pub fn resolve(&self, token: &str, now: i64) -> Result<Option<Principal>, AuthError> {
        let h = hash(token);
        let row = self.store.live(&h, now)?;
        let Some((row, last_used)) = row else {
            return Ok(None);
        };
        if last_used.is_none_or(|t| now.saturating_sub(t) >= LAST_USED_GRAIN_SECS) {
            self.store.touch(&h, now)?;
        }
        Ok(Some(principal(row)))
    }

    /// Every token (of `tenant` only, when given), oldest first; never the tokens themselves.
    pub fn list(&self, tenant: Option<&str>) -> Result<Vec<TokenInfo>, AuthError> {
        self.store.list(tenant)
    }

    /// Revokes the token with public id `id` (of `tenant` only, when given) at unix second
    /// `now`, and ends its UI sessions: the next request with it is refused, in every process.
    /// An id that names more than one token (a 48-bit prefix collision) revokes none.
    pub fn revoke(&self, id: &str, tenant: Option<&str>, now: i64) -> Result<Revoked, AuthError> {
        let id = id.trim().to_ascii_lowercase();
        if id.len() != ID_LEN || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(Revoked::Unknown);
        }
        let found: Vec<TokenInfo> = self
            .list(tenant)?
            .into_iter()
            .filter(|t| t.id == id)
            .collect();
        let [info] = found.as_slice() else {
            return Ok(Revoked::Unknown);
        };
        if info.revoked_at.is_some() {
            return Ok(Revoked::Already(info.clone()));
        }
        self.store.revoke(&id, now)?;
        let mut info = info.clone();
        info.revoked_at = Some(now);
        Ok(Revoked::Now(info))
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
        if self.resolve(token, now)?.is_none() {
            return Ok(None);
        }
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let sid = format!("ks_{}", hex::encode(bytes));
        self.store
            .insert_session(&hash(&sid), &hash(token), now, now.saturating_add(ttl_secs))?;
        Ok(Some(sid))
    }

    /// The principal of a live session (not expired at `now`, its token still known, not
    /// revoked and not expired).
    pub fn resolve_session(&self, sid: &str, now: i64) -> Result<Option<Principal>, AuthError> {
        let row = self.store.session(&hash(sid), now)?;
        Ok(row.map(principal))
    }

    /// Ends a session (logout): its id is worthless from now on, in every process.
    pub fn revoke_session(&self, sid: &str) -> Result<bool, AuthError> {
        self.store.delete_session(&hash(sid))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_token_table_from_before_expiry_and_revocation_is_migrated_and_its_tokens_work() {
        let tmp = tempfile::tempdir().unwrap();
        let old = Connection::open(tmp.path().join("auth.db")).unwrap();
        old.execute_batch(
            "CREATE TABLE tokens (hash TEXT PRIMARY KEY, tenant TEXT NOT NULL, roles TEXT NOT NULL,
                 name TEXT NOT NULL, created_at TEXT NOT NULL) STRICT;",
        )
        .unwrap();
        old.execute(
            "INSERT INTO tokens VALUES (?1, 'acme', 'agent', 'bot', '2026-01-01T00:00:00Z')",
            [hash("keel_old")],
        )
        .unwrap();
        drop(old);
        let t = Tokens::open(tmp.path()).unwrap();
        assert_eq!(t.resolve("keel_old", 100).unwrap().unwrap().tenant, "acme");
        let id = Tokens::id_of("keel_old");
        assert!(matches!(
            t.revoke(&id, Some("globex"), 101).unwrap(),
            Revoked::Unknown
        ));
        assert!(matches!(t.revoke(&id, None, 101).unwrap(), Revoked::Now(_)));
        assert_eq!(t.resolve("keel_old", 102).unwrap(), None);
        let info = &t.list(None).unwrap()[0];
        assert_eq!((info.last_used_at, info.revoked_at), (Some(100), Some(101)));
        assert_eq!(info.status(102), "revoked");
    }
}
