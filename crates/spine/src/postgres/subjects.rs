//! Data subjects on the PostgreSQL spine: linking an execution to a subject (its personal fields
//! are sealed under the subject's key, see [`crate::shred`]) and erasing a subject (deleting the
//! key and the blobs its executions reference, and recording a tombstone), as in the embedded
//! store, in the same database so every machine seals and erases alike.

use super::PgEventLog;
use crate::blob::BlobStore;
use crate::error::SpineError;
use crate::shred::{self, Cipher};
use crate::sqlite::{Erasure, subject_digest};
use keel_core::ExecId;
use std::sync::Arc;

impl PgEventLog {
    /// The stored cipher of an execution (`None` if not linked or erased).
    pub(super) async fn stored_cipher(&self, exec_key: &str) -> Result<Option<Cipher>, SpineError> {
        Ok(self
            .subject_key(exec_key)
            .await?
            .and_then(|(_, k)| k)
            .and_then(|k| shred::cipher(&k)))
    }

    /// The subject link of an execution: `Some((digest, key))`, the key `None` once erased.
    async fn subject_key(
        &self,
        exec_key: &str,
    ) -> Result<Option<(String, Option<Vec<u8>>)>, SpineError> {
        Ok(self
            .reader().await?
            .query_opt(
                "SELECT e.digest, k.key FROM keel_spine.subject_execs AS e
                 LEFT JOIN keel_spine.subject_keys AS k ON k.digest = e.digest WHERE e.exec_id = $1",
                &[&exec_key],
            )
            .await
            .map_err(self.err("reading a subject link"))?
            .map(|r| (r.get(0), r.get(1))))
    }

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
        let cipher = match self.subject_key(&exec_id.to_string()).await? {
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

    pub(super) fn forget_cipher(&self, exec_id: ExecId) {
        if let Ok(mut m) = self.inner.ciphers.lock() {
            m.remove(&exec_id);
        }
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
        let key = exec_id.to_string();
        let linked = {
            let mut client = self.tx_client().await?;
            let tx = client
                .transaction()
                .await
                .map_err(self.err("linking a subject"))?;
            let started: bool = tx
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM keel_spine.executions WHERE exec_id = $1 AND last_seq > 0)",
                    &[&key],
                )
                .await
                .map_err(self.err("linking a subject"))?
                .get(0);
            let existing: Option<String> = tx
                .query_opt(
                    "SELECT digest FROM keel_spine.subject_execs WHERE exec_id = $1",
                    &[&key],
                )
                .await
                .map_err(self.err("linking a subject"))?
                .map(|r| r.get(0));
            match (existing, started) {
                (Some(d), _) => Some(d == digest),
                (None, true) => None,
                (None, false) => {
                    tx.execute(
                        "INSERT INTO keel_spine.subject_keys (digest, tenant, subject, key)
                         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                        &[&digest, &tenant, &subject, &shred::new_key()],
                    )
                    .await
                    .map_err(self.err("linking a subject"))?;
                    tx.execute(
                        "INSERT INTO keel_spine.subject_execs (exec_id, digest) VALUES ($1, $2)",
                        &[&key, &digest],
                    )
                    .await
                    .map_err(self.err("linking a subject"))?;
                    tx.commit().await.map_err(self.err("linking a subject"))?;
                    Some(true)
                }
            }
        };
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
        Ok(self
            .reader()
            .await?
            .query_opt(
                "SELECT k.subject FROM keel_spine.subject_execs AS e
                 JOIN keel_spine.subject_keys AS k ON k.digest = e.digest WHERE e.exec_id = $1",
                &[&exec_id.to_string()],
            )
            .await
            .map_err(self.err("reading a subject link"))?
            .map(|r| r.get(0)))
    }

    /// Executions linked to `subject` of `tenant` (also after erasure: the link is by digest).
    pub async fn subject_executions(
        &self,
        tenant: &str,
        subject: &str,
    ) -> Result<Vec<ExecId>, SpineError> {
        let digest = subject_digest(tenant, subject);
        let rows = self
            .reader()
            .await?
            .query(
                "SELECT exec_id FROM keel_spine.subject_execs WHERE digest = $1 ORDER BY exec_id",
                &[&digest],
            )
            .await
            .map_err(self.err("listing subject executions"))?;
        rows.iter()
            .map(|r| {
                let k: String = r.get(0);
                k.parse().map_err(|_| SpineError::Corrupt {
                    path: self.inner.shown.clone(),
                    detail: format!("subject_execs holds a bad execution id {k:?}"),
                })
            })
            .collect()
    }

    /// Erases `subject` of `tenant`: deletes the blobs its executions reference from `blobs`,
    /// then the subject's key, records a tombstone, and rewrites the key table (`VACUUM FULL`)
    /// so the deleted key's row does not linger in the table's pages. Afterwards every read path
    /// on every machine decodes the executions' personal fields as `[erased]`. Idempotent.
    pub async fn erase_subject(
        &self,
        tenant: &str,
        subject: &str,
        blobs: &dyn BlobStore,
    ) -> Result<Erasure, SpineError> {
        let digest = subject_digest(tenant, subject);
        let executions = self.subject_executions(tenant, subject).await?;
        let blobs_deleted = shred::delete_referenced_blobs(self, &executions, blobs).await?;
        let (n_exec, n_blobs) = (executions.len() as i64, blobs_deleted.len() as i64);
        {
            let mut client = self.tx_client().await?;
            let tx = client
                .transaction()
                .await
                .map_err(self.err("erasing a subject"))?;
            tx.execute(
                "DELETE FROM keel_spine.subject_keys WHERE digest = $1",
                &[&digest],
            )
            .await
            .map_err(self.err("erasing a subject"))?;
            tx.execute(
                "INSERT INTO keel_spine.erasures (digest, tenant, executions, blobs) VALUES ($1, $2, $3, $4)",
                &[&digest, &tenant, &n_exec, &n_blobs],
            )
            .await
            .map_err(self.err("erasing a subject"))?;
            tx.commit().await.map_err(self.err("erasing a subject"))?;
            client
                .batch_execute("VACUUM FULL keel_spine.subject_keys")
                .await
                .map_err(self.err("compacting the subject keys"))?;
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
