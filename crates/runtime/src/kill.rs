//! Kill-switches per tenant, per strategy (agent) and per tool, kept in the spine's file so every
//! worker on it sees them. A running execution checks before every step (and stops with outcome
//! `killed`); a killed tool refuses calls with an event.

use crate::error::RuntimeError;
use rusqlite::{Connection, OptionalExtension};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// What a switch applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every execution of a tenant.
    Tenant,
    /// Every execution of a strategy (by name).
    Strategy,
    /// Every call of a tool.
    Tool,
}

impl Scope {
    /// The scope's name in the table and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Tenant => "tenant",
            Scope::Strategy => "strategy",
            Scope::Tool => "tool",
        }
    }

    /// Parses `tenant`, `strategy` (or `agent`) or `tool`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "tenant" => Some(Scope::Tenant),
            "strategy" | "agent" => Some(Scope::Strategy),
            "tool" => Some(Scope::Tool),
            _ => None,
        }
    }
}

/// A switch that is on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Switch {
    /// Scope.
    pub scope: String,
    /// The tenant, strategy or tool.
    pub name: String,
    /// Why.
    pub reason: String,
    /// When (RFC 3339).
    pub set_at: String,
}

/// The kill-switch table of a store.
pub struct KillSwitches {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl KillSwitches {
    /// Opens the table in the spine file at `path` (the spine must have been opened once, which
    /// creates the table).
    pub fn open(path: &Path) -> Result<Self, RuntimeError> {
        let conn = Connection::open(path).map_err(|e| kill_err(path, e))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(|e| kill_err(path, e))?;
        Ok(Self {
            path: path.to_owned(),
            conn: Mutex::new(conn),
        })
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, RuntimeError> {
        let conn = self.conn.lock().map_err(|_| RuntimeError::Kill {
            path: self.path.display().to_string(),
            detail: "lock poisoned".into(),
        })?;
        f(&conn).map_err(|e| kill_err(&self.path, e))
    }

    /// Turns a switch on (or updates its reason).
    pub fn set(
        &self,
        scope: Scope,
        name: &str,
        reason: &str,
        at: &str,
    ) -> Result<(), RuntimeError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO kill_switches (scope, name, reason, set_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (scope, name) DO UPDATE SET reason = excluded.reason, set_at = excluded.set_at",
                (scope.as_str(), name, reason, at),
            )
            .map(|_| ())
        })
    }

    /// Turns a switch off; true if it was on.
    pub fn clear(&self, scope: Scope, name: &str) -> Result<bool, RuntimeError> {
        self.with(|c| {
            c.execute(
                "DELETE FROM kill_switches WHERE scope = ?1 AND name = ?2",
                (scope.as_str(), name),
            )
            .map(|n| n > 0)
        })
    }

    /// Every switch that is on.
    pub fn list(&self) -> Result<Vec<Switch>, RuntimeError> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT scope, name, reason, set_at FROM kill_switches ORDER BY scope, name",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(Switch {
                    scope: r.get(0)?,
                    name: r.get(1)?,
                    reason: r.get(2)?,
                    set_at: r.get(3)?,
                })
            })?;
            rows.collect()
        })
    }

    /// The reason `name` in `scope` is killed, if it is.
    pub fn reason(&self, scope: Scope, name: &str) -> Result<Option<String>, RuntimeError> {
        self.with(|c| {
            c.prepare_cached("SELECT reason FROM kill_switches WHERE scope = ?1 AND name = ?2")?
                .query_row((scope.as_str(), name), |r| r.get(0))
                .optional()
        })
    }
}

fn kill_err(path: &Path, e: rusqlite::Error) -> RuntimeError {
    RuntimeError::Kill {
        path: path.display().to_string(),
        detail: e.to_string(),
    }
}
