//! Small blobs kept in the spine's own file (`inline_blobs`), so a model reply or a small tool
//! output costs no file, no file fsync and no directory fsync of its own: it rides in the group
//! commit of the step that references it.
//!
//! [`SqliteBlobs::put_for_append`] stages the bytes in memory, per file ([`Staged`]); the next
//! group commit of any handle on that file in this process writes everything staged inside its
//! transaction. The event that references a blob is appended after the put returned, so its group
//! (or an earlier one, serialised before it by SQLite's write lock) carries the blob: the bytes
//! are exactly as durable as the reference. Larger blobs, and every blob of a store that does not
//! keep files locally (S3), go to the wrapped store as before; blobs written as files before
//! this existed are still read from there.

use super::SqliteLog;
use super::schema::map_err;
use crate::blob::{BlobRef, BlobStore};
use crate::error::SpineError;
use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Largest blob kept in the spine's file: a model reply or a typical tool output fits; a page of
/// a document does not, and stays a file (a bigger row would spill over many WAL pages per step).
pub const INLINE_MAX: usize = 64 * 1024;

/// The table. Not a numbered migration: created `IF NOT EXISTS` when a handle opens the file, so
/// older files gain it without a schema bump and older readers never see it.
pub(super) const TABLE: &str = "CREATE TABLE IF NOT EXISTS inline_blobs (
     ref   TEXT PRIMARY KEY,
     bytes BLOB NOT NULL
 );";

/// Blobs put for an append and not yet committed, shared by every handle on one file in this
/// process (see the module documentation).
#[derive(Default)]
pub(super) struct Staged {
    blobs: Mutex<HashMap<String, Arc<Vec<u8>>>>,
}

impl Staged {
    fn stage(&self, reference: &BlobRef, bytes: Vec<u8>) -> Result<(), SpineError> {
        let mut staged = self.blobs.lock().map_err(|_| SpineError::Closed)?;
        staged
            .entry(reference.as_str().to_owned())
            .or_insert_with(|| Arc::new(bytes));
        Ok(())
    }

    fn get(&self, reference: &BlobRef) -> Option<Arc<Vec<u8>>> {
        self.blobs.lock().ok()?.get(reference.as_str()).cloned()
    }

    pub(super) fn forget(&self, reference: &BlobRef) -> bool {
        self.blobs
            .lock()
            .is_ok_and(|mut s| s.remove(reference.as_str()).is_some())
    }

    /// Everything staged, taken for the group being written.
    pub(super) fn take(&self) -> Vec<(String, Arc<Vec<u8>>)> {
        match self.blobs.lock() {
            Ok(mut s) if !s.is_empty() => s.drain().collect(),
            _ => Vec::new(),
        }
    }

    /// Puts back what a group took and did not commit; called before its rollback releases the
    /// write lock, so no later group can commit a reference without its bytes.
    pub(super) fn restore(&self, taken: Vec<(String, Arc<Vec<u8>>)>) {
        if let Ok(mut s) = self.blobs.lock() {
            for (r, b) in taken {
                s.entry(r).or_insert(b);
            }
        }
    }
}

/// Writes the staged blobs in the group's open transaction (a blob already stored is left as it
/// is: the same reference names the same bytes).
pub(super) fn write_staged(
    conn: &Connection,
    path: &Path,
    staged: &[(String, Arc<Vec<u8>>)],
) -> Result<(), SpineError> {
    for (reference, bytes) in staged {
        conn.prepare_cached(
            "INSERT INTO inline_blobs (ref, bytes) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
        )
        .and_then(|mut s| s.execute(params![reference, bytes.as_slice()]))
        .map_err(|e| map_err(path, "storing a small blob", e))?;
    }
    Ok(())
}

/// Deletes the inline copies of `references` in the caller's transaction; returns those deleted.
pub(super) fn delete_rows(
    conn: &Connection,
    references: &[String],
) -> rusqlite::Result<Vec<String>> {
    let mut deleted = Vec::new();
    for r in references {
        if conn.execute("DELETE FROM inline_blobs WHERE ref = ?1", [r])? == 1 {
            deleted.push(r.clone());
        }
    }
    Ok(deleted)
}

/// A blob store over the SQLite spine: small blobs in the spine's file, the rest in `files`.
pub struct SqliteBlobs {
    log: SqliteLog,
    files: Arc<dyn BlobStore>,
}

impl SqliteBlobs {
    /// Small blobs on the spine at `spine` (a file this process already has open as a spine),
    /// larger ones in `files`. `None` when no handle on that file is open here (the spine is
    /// not SQLite, or not this one): then `files` keeps every blob, as before.
    pub fn over(spine: &Path, files: Arc<dyn BlobStore>) -> Option<Self> {
        SqliteLog::already_open(spine).map(|log| Self { log, files })
    }

    fn verified(&self, reference: &BlobRef, bytes: Vec<u8>) -> Result<Vec<u8>, SpineError> {
        let actual = BlobRef::of(&bytes);
        if actual != *reference {
            return Err(SpineError::BlobCorrupt {
                reference: reference.to_string(),
                actual: actual.hex().to_owned(),
                path: self.log.path().to_owned(),
            });
        }
        Ok(bytes)
    }
}

/// The store a runtime on the spine at `spine` (`EventLog::side_store`) should use: `files`
/// with small blobs moved into the spine's file when that is a SQLite spine open in this process
/// and `files` keeps blobs locally; `files` unchanged otherwise (S3, PostgreSQL).
pub fn inline_small_blobs(spine: Option<&Path>, files: Arc<dyn BlobStore>) -> Arc<dyn BlobStore> {
    match spine {
        Some(path) if files.is_local() => match SqliteBlobs::over(path, files.clone()) {
            Some(store) => Arc::new(store),
            None => files,
        },
        _ => files,
    }
}

#[async_trait]
impl BlobStore for SqliteBlobs {
    /// Durable on return: a small blob is committed on its own (one WAL fsync, no file and no
    /// directory fsync).
    async fn put(&self, bytes: Vec<u8>) -> Result<BlobRef, SpineError> {
        if bytes.len() > INLINE_MAX {
            return self.files.put(bytes).await;
        }
        let reference = self.put_for_append(bytes).await?;
        self.log.write_side(Vec::new(), true).await?;
        Ok(reference)
    }

    async fn put_for_append(&self, bytes: Vec<u8>) -> Result<BlobRef, SpineError> {
        if bytes.len() > INLINE_MAX {
            return self.files.put(bytes).await;
        }
        let reference = BlobRef::of(&bytes);
        self.log.inner.staged.stage(&reference, bytes)?;
        Ok(reference)
    }

    async fn get(&self, reference: &BlobRef) -> Result<Vec<u8>, SpineError> {
        if let Some(bytes) = self.log.inner.staged.get(reference) {
            return Ok(bytes.as_ref().clone());
        }
        let key = reference.as_str().to_owned();
        let row: Option<Vec<u8>> = self
            .log
            .with_reader(move |conn, path| {
                conn.prepare_cached("SELECT bytes FROM inline_blobs WHERE ref = ?1")
                    .and_then(|mut s| s.query_row([&key], |r| r.get(0)).optional())
                    .map_err(|e| map_err(path, "reading a small blob", e))
            })
            .await?;
        match row {
            Some(bytes) => self.verified(reference, bytes),
            None => self.files.get(reference).await,
        }
    }

    /// Deletes both copies (erasure): the row with SQLite's secure delete, so its bytes are
    /// overwritten in the file; the WAL's copy goes with the erasure's checkpoint.
    async fn delete(&self, reference: &BlobRef) -> Result<bool, SpineError> {
        let staged = self.log.inner.staged.forget(reference);
        let key = vec![reference.as_str().to_owned()];
        let rows = self
            .log
            .with_writer("deleting a small blob", move |conn| {
                conn.pragma_update(None, "secure_delete", "ON")?;
                delete_rows(conn, &key)
            })
            .await?;
        let file = match self.files.delete(reference).await {
            Ok(found) => found,
            // A file store that cannot delete has no copy of an inline blob to keep.
            Err(_) if !rows.is_empty() || staged => false,
            Err(e) => return Err(e),
        };
        Ok(staged || !rows.is_empty() || file)
    }
}
