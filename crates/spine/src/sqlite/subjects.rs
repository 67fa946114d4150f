//! Data subjects on the embedded spine: linking an execution to a subject (so its personal fields
//! are sealed under the subject's key, see [`crate::shred`]), and erasing a subject (deleting the
//! key, the blobs its executions reference, and recording a tombstone).

use super::{SqliteLog, schema, subject_key};
use crate::blob::BlobStore;
use crate::clock::{Clock, SystemClock};
use crate::error::SpineError;
use crate::shred::{self, Cipher};
use keel_core::ExecId;
use rusqlite::{OptionalExtension, params};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// What an erasure reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Erasure {
    /// `sha256(tenant \0 subject)`, the tombstone's key (the subject's name is not kept).
    pub digest: String,
    /// Executions whose sealed fields now decode as `[erased]`.
    pub executions: Vec<ExecId>,
    /// Blobs (model requests and replies, tool outputs) of those executions that were deleted.
    pub blobs_deleted: Vec<String>,
}

/// The digest a subject's key is filed under.
pub fn subject_digest(tenant: &str, subject: &str) -> String {
    let mut h = Sha256::new();
    h.update(tenant.as_bytes());
    h.update([0]);
    h.update(subject.as_bytes());
    hex::encode(h.finalize())
}

impl SqliteLog {
    /// The cipher an execution's events are sealed with (cached per execution).
    pub(super) async fn cipher_for(
        &self,
        exec_id: ExecId,
    ) -> Result<Option<Arc<Cipher>>, SpineError> {
        if let Some(c) = self
            .inner
            .ciphers
            .lock()
            .ok()
            .and_then(|m| m.get(&exec_id).cloned())
        {
            return Ok(c);
        }
        let key = exec_id.to_string();
        let found = self
            .with_reader(move |conn, path| {
                subject_key(conn, &key)
                    .map_err(|e| schema::map_err(path, "reading a subject link", e))
            })
            .await?;
        let cipher = match found {
            None => None,
            Some((_, Some(k))) => shred::cipher(&k).map(Arc::new),
            // Linked to an erased subject: seal under a key nobody keeps.
            Some((_, None)) => shred::cipher(&shred::new_key()).map(Arc::new),
        };
        if let Ok(mut m) = self.inner.ciphers.lock() {
            m.insert(exec_id, cipher.clone());
        }
        Ok(cipher)
    }

    /// Forgets the cached cipher of an execution that ended.
    pub(super) fn forget_cipher(&self, exec_id: ExecId) {
        if let Ok(mut m) = self.inner.ciphers.lock() {
            m.remove(&exec_id);
        }
    }

    pub(super) async fn with_writer<T: Send + 'static>(
        &self,
        context: &'static str,
        f: impl FnOnce(&mut rusqlite::Connection) -> Result<T, rusqlite::Error> + Send + 'static,
    ) -> Result<T, SpineError> {
        let path = self.inner.path.clone();
        let durability = self.inner.durability;
        tokio::task::spawn_blocking(move || {
            let mut conn = schema::connect(&path, durability, true)?;
            f(&mut conn).map_err(|e| schema::map_err(&path, context, e))
        })
        .await
        .map_err(|_| SpineError::Closed)?
    }

    /// Links `exec_id` (of `tenant`) to data subject `subject` before its first event is appended:
    /// its personal fields will be sealed under the subject's key (created on first use).
    pub async fn link_subject(
        &self,
        exec_id: ExecId,
        tenant: &str,
        subject: &str,
    ) -> Result<(), SpineError> {
        let digest = subject_digest(tenant, subject);
        let (tenant, subject, key) = (tenant.to_owned(), subject.to_owned(), exec_id.to_string());
        let now = SystemClock.now().to_rfc3339();
        let linked = self
            .with_writer("linking a subject", move |conn| {
                let tx = conn.transaction()?;
                let started: bool = tx.query_row(
                    "SELECT EXISTS (SELECT 1 FROM batches WHERE exec_id = ?1)",
                    [&key],
                    |r| r.get(0),
                )?;
                let existing: Option<String> = tx
                    .query_row(
                        "SELECT digest FROM subject_execs WHERE exec_id = ?1",
                        [&key],
                        |r| r.get(0),
                    )
                    .optional()?;
                if let Some(d) = existing {
                    return Ok(Some(d == digest));
                }
                if started {
                    return Ok(None);
                }
                tx.execute(
                    "INSERT OR IGNORE INTO subject_keys (digest, tenant, subject, key, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![digest, tenant, subject, shred::new_key(), now],
                )?;
                tx.execute(
                    "INSERT INTO subject_execs (exec_id, digest) VALUES (?1, ?2)",
                    params![key, digest],
                )?;
                tx.commit()?;
                Ok(Some(true))
            })
            .await?;
        self.forget_cipher(exec_id);
        match linked {
            Some(true) => Ok(()),
            Some(false) => Err(SpineError::InvalidAppend {
                exec_id,
                detail: "the execution is already linked to another subject".into(),
            }),
            None => Err(SpineError::InvalidAppend {
                exec_id,
                detail: "link a subject before the execution's first append".into(),
            }),
        }
    }

    /// The subject an execution is linked to; `None` if none or erased.
    pub async fn subject_of(&self, exec_id: ExecId) -> Result<Option<String>, SpineError> {
        let key = exec_id.to_string();
        self.with_reader(move |conn, path| {
            conn.query_row(
                "SELECT k.subject FROM subject_execs AS e JOIN subject_keys AS k ON k.digest = e.digest
                 WHERE e.exec_id = ?1",
                [&key],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| schema::map_err(path, "reading a subject link", e))
        })
        .await
    }

    /// Executions linked to `subject` of `tenant` (also after erasure: the link is by digest).
    pub async fn subject_executions(
        &self,
        tenant: &str,
        subject: &str,
    ) -> Result<Vec<ExecId>, SpineError> {
        let digest = subject_digest(tenant, subject);
        let keys: Vec<String> = self
            .with_reader(move |conn, path| {
                let mut st = conn
                    .prepare("SELECT exec_id FROM subject_execs WHERE digest = ?1 ORDER BY exec_id")
                    .map_err(|e| schema::map_err(path, "listing subject executions", e))?;
                st.query_map([&digest], |r| r.get(0))
                    .and_then(|rows| rows.collect())
                    .map_err(|e| schema::map_err(path, "listing subject executions", e))
            })
            .await?;
        keys.iter()
            .map(|k| {
                k.parse().map_err(|_| SpineError::Corrupt {
                    path: self.inner.path.clone(),
                    detail: format!("subject_execs holds a bad execution id {k:?}"),
                })
            })
            .collect()
    }

    /// Erases `subject` of `tenant`: deletes the blobs its executions reference from `blobs`,
    /// then the subject's key (with SQLite's secure delete, and a WAL checkpoint so no copy of
    /// the key stays in the WAL), and records a tombstone. Afterwards every read path decodes the
    /// executions' personal fields as `[erased]`. Idempotent.
    pub async fn erase_subject(
        &self,
        tenant: &str,
        subject: &str,
        blobs: &dyn BlobStore,
    ) -> Result<Erasure, SpineError> {
        let digest = subject_digest(tenant, subject);
        let executions = self.subject_executions(tenant, subject).await?;
        let mut blobs_deleted = shred::delete_referenced_blobs(self, &executions, blobs).await?;
        // Small blobs kept in this file go with the key, whatever store the caller passed.
        let mut inline: Vec<String> = Vec::new();
        for exec in &executions {
            for r in shred::referenced_blobs(&crate::log::EventLog::read(self, *exec, 1).await?) {
                if !inline.contains(&r) {
                    inline.push(r);
                }
            }
        }
        self.forget_staged(&inline);
        let (d, t) = (digest.clone(), tenant.to_owned());
        let n_exec = executions.len() as i64;
        let known = blobs_deleted.clone();
        let now = SystemClock.now().to_rfc3339();
        let deleted_here = self
            .with_writer("erasing a subject", move |conn| {
                conn.pragma_update(None, "secure_delete", "ON")?;
                let tx = conn.transaction()?;
                let rows = super::blobs::delete_rows(&tx, &inline)?;
                let n_blobs = known.iter().chain(rows.iter().filter(|r| !known.contains(r))).count();
                tx.execute("DELETE FROM subject_keys WHERE digest = ?1", [&d])?;
                tx.execute(
                    "INSERT INTO erasures (digest, tenant, erased_at, executions, blobs) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![d, t, now, n_exec, i64::try_from(n_blobs).unwrap_or(i64::MAX)],
                )?;
                tx.commit()?;
                conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?;
                Ok(rows)
            })
            .await?;
        for r in deleted_here {
            if !blobs_deleted.contains(&r) {
                blobs_deleted.push(r);
            }
        }
        for exec in &executions {
            self.forget_cipher(*exec);
        }
        Ok(Erasure {
            digest,
            executions,
            blobs_deleted,
        })
    }
}
