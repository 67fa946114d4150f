//! Blob store: tool outputs and large payloads, addressed by content (`sha256:<hex>`), so an
//! event carries an `output_ref` instead of the bytes. Writes are atomic (temp file, fsync,
//! rename, fsync of the directory); reads re-hash and refuse bytes that do not match their name.

use crate::error::SpineError;
use async_trait::async_trait;
use sha2::{Digest, Sha256};
use std::fmt;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// A content address: `sha256:` and 64 lowercase hex digits.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BlobRef(String);

impl BlobRef {
    /// The reference of these bytes.
    pub fn of(bytes: &[u8]) -> Self {
        Self(format!("sha256:{}", hex::encode(Sha256::digest(bytes))))
    }

    /// The reference as text (what events carry).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub(crate) fn hex(&self) -> &str {
        self.0.strip_prefix("sha256:").unwrap_or(&self.0)
    }
}

impl fmt::Display for BlobRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for BlobRef {
    type Err = SpineError;
    fn from_str(s: &str) -> Result<Self, SpineError> {
        let ok = s.strip_prefix("sha256:").is_some_and(|h| {
            h.len() == 64
                && h.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        });
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(SpineError::BadBlobRef(s.to_owned()))
        }
    }
}

/// Content-addressed storage of immutable byte strings.
///
/// Contract: `put` returns only after the bytes are durable; `get` returns exactly the bytes that
/// hash to the reference or an error (never other bytes); putting the same bytes twice is a no-op.
#[async_trait]
pub trait BlobStore: Send + Sync {
    /// Stores `bytes`, returning their reference.
    async fn put(&self, bytes: Vec<u8>) -> Result<BlobRef, SpineError>;
    /// Like [`BlobStore::put`], for bytes that an event this process is about to append to the
    /// spine references: a store that keeps small blobs in the spine's own file may hold them
    /// until the next commit there, which makes them durable together with that reference (see
    /// `crate::sqlite::SqliteBlobs`). Readers in this process find them meanwhile.
    async fn put_for_append(&self, bytes: Vec<u8>) -> Result<BlobRef, SpineError> {
        self.put(bytes).await
    }
    /// The bytes stored under `reference`, verified.
    async fn get(&self, reference: &BlobRef) -> Result<Vec<u8>, SpineError>;
    /// Deletes a blob (subject erasure); `Ok(false)` if it was not there. Stores that cannot
    /// delete say so with an error rather than pretend.
    async fn delete(&self, reference: &BlobRef) -> Result<bool, SpineError> {
        Err(SpineError::Storage {
            context: "deleting a blob",
            path: std::path::PathBuf::new(),
            detail: format!("this blob store cannot delete {reference}"),
        })
    }
    /// True for a store that keeps blobs in local files, whose small blobs are cheaper in the
    /// spine's file beside it (see `crate::sqlite::inline_small_blobs`).
    fn is_local(&self) -> bool {
        false
    }
}

/// Largest blob whose existence `put` checks on the caller's thread before handing the write to
/// a blocking thread.
const INLINE_CHECK_MAX: usize = 64 * 1024;

/// Blobs as files under a local directory: `<root>/sha256/<2 hex>/<62 hex>`.
#[derive(Clone, Debug)]
pub struct LocalBlobStore {
    root: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpineError + '_ {
    move |source| SpineError::Io {
        path: path.to_owned(),
        source,
    }
}

impl LocalBlobStore {
    /// A store rooted at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    #[allow(
        clippy::string_slice,
        reason = "a BlobRef is only built as `sha256:` and 64 ASCII hex digits, so 2 is a char boundary"
    )]
    fn path_of(&self, r: &BlobRef) -> PathBuf {
        let hex = r.hex();
        self.root.join("sha256").join(&hex[..2]).join(&hex[2..])
    }

    fn put_blocking(&self, bytes: &[u8]) -> Result<BlobRef, SpineError> {
        let reference = BlobRef::of(bytes);
        let target = self.path_of(&reference);
        if target.exists() {
            return Ok(reference);
        }
        let dir = target.parent().unwrap_or(&self.root).to_owned();
        let tmp_dir = self.root.join("tmp");
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        fs::create_dir_all(&tmp_dir).map_err(io(&tmp_dir))?;
        let tmp = tmp_dir.join(format!("{}.{}", reference.hex(), uuid::Uuid::new_v4()));
        let written = (|| {
            let mut f = File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(io(&tmp)(e));
        }
        fs::rename(&tmp, &target).map_err(io(&target))?;
        // The rename is durable only once the directory entry is.
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&dir))?;
        Ok(reference)
    }

    fn get_blocking(&self, reference: &BlobRef) -> Result<Vec<u8>, SpineError> {
        let path = self.path_of(reference);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(SpineError::BlobNotFound(reference.to_string()));
            }
            Err(e) => return Err(io(&path)(e)),
        };
        let actual = BlobRef::of(&bytes);
        if actual != *reference {
            return Err(SpineError::BlobCorrupt {
                reference: reference.to_string(),
                actual: actual.hex().to_owned(),
                path,
            });
        }
        Ok(bytes)
    }
}

#[async_trait]
impl BlobStore for LocalBlobStore {
    async fn put(&self, bytes: Vec<u8>) -> Result<BlobRef, SpineError> {
        // Most small payloads repeat (the same tool output, the same reply): hashing them and
        // one `stat` cost a few microseconds, less than the hand-off to a blocking thread and
        // back, so a small blob that is already stored is answered here.
        if bytes.len() <= INLINE_CHECK_MAX {
            let reference = BlobRef::of(&bytes);
            if self.path_of(&reference).exists() {
                return Ok(reference);
            }
        }
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.put_blocking(&bytes))
            .await
            .map_err(|_| SpineError::Closed)?
    }

    async fn get(&self, reference: &BlobRef) -> Result<Vec<u8>, SpineError> {
        let store = self.clone();
        let reference = reference.clone();
        tokio::task::spawn_blocking(move || store.get_blocking(&reference))
            .await
            .map_err(|_| SpineError::Closed)?
    }
    async fn delete(&self, reference: &BlobRef) -> Result<bool, SpineError> {
        let path = self.path_of(reference);
        tokio::task::spawn_blocking(move || match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io(&path)(e)),
        })
        .await
        .map_err(|_| SpineError::Closed)?
    }

    fn is_local(&self) -> bool {
        true
    }
}
