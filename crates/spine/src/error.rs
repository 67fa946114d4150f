//! The spine's one error enum. Every variant names what and where (execution, seq, offset, file),
//! and none carries event payloads, so secrets in arguments never leak into error text.

use keel_core::{DecodeError, ExecId};
use std::path::PathBuf;

/// What can go wrong in the spine or the blob store.
#[derive(Debug, thiserror::Error)]
pub enum SpineError {
    /// Another writer appended first: the caller's view of the execution is stale.
    #[error(
        "append conflict on execution {exec_id}: expected last seq {expected_seq}, found {actual_seq}"
    )]
    Conflict {
        /// The execution.
        exec_id: ExecId,
        /// The last seq the caller believed.
        expected_seq: u64,
        /// The last seq actually stored.
        actual_seq: u64,
    },
    /// The append was fenced: it carried lease epoch `epoch`, but a newer lease (another worker's)
    /// now holds the execution. The caller lost the lease and must stop driving the execution.
    #[error(
        "execution {exec_id} is held by a newer lease (epoch {current_epoch}); this worker's lease (epoch {epoch}) was lost"
    )]
    LeaseLost {
        /// The execution.
        exec_id: ExecId,
        /// The epoch the append carried.
        epoch: u64,
        /// The epoch that holds the execution now.
        current_epoch: u64,
    },
    /// The batch itself is malformed (empty, wrong execution, non-contiguous seqs, mixed tenants).
    #[error("invalid append to execution {exec_id}: {detail}")]
    InvalidAppend {
        /// The execution.
        exec_id: ExecId,
        /// What is wrong.
        detail: String,
    },
    /// A stored event does not decode.
    #[error(
        "stored event at offset {offset} (execution {exec_id}, seq {seq}) does not decode: {source}"
    )]
    Decode {
        /// Global offset of the row.
        offset: u64,
        /// Execution column of the row.
        exec_id: String,
        /// Seq column of the row.
        seq: u64,
        /// Why.
        source: DecodeError,
    },
    /// The store file is damaged.
    #[error("store {path} is corrupt: {detail}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What SQLite or our checks found.
        detail: String,
    },
    /// The store was written by a newer Keel.
    #[error(
        "store {path} has schema version {found}, newer than this Keel supports ({supported}); upgrade Keel to open it"
    )]
    NewerStore {
        /// The file.
        path: PathBuf,
        /// Version found.
        found: i64,
        /// Newest version this build knows.
        supported: i64,
    },
    /// The file is a SQLite database but not a Keel store.
    #[error("{path} is not a Keel store (application_id {found:#x})")]
    NotKeelStore {
        /// The file.
        path: PathBuf,
        /// The application id found.
        found: i64,
    },
    /// The storage engine failed.
    #[error("storage error while {context} ({path}): {detail}")]
    Storage {
        /// What we were doing.
        context: &'static str,
        /// The file.
        path: PathBuf,
        /// The engine's message.
        detail: String,
    },
    /// A file system operation failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A blob reference that is not `sha256:` plus 64 lowercase hex digits.
    #[error("invalid blob reference {0:?}: expected sha256:<64 hex digits>")]
    BadBlobRef(String),
    /// No blob with this reference.
    #[error("blob {0} not found")]
    BlobNotFound(String),
    /// The bytes stored under a reference do not hash to it.
    #[error("blob {reference} is corrupt: content hashes to sha256:{actual} ({path})")]
    BlobCorrupt {
        /// The reference asked for.
        reference: String,
        /// The hash of what is stored.
        actual: String,
        /// The file.
        path: PathBuf,
    },
    /// A remote store (S3-compatible object storage) failed or refused the request.
    #[error("{context} at {location}: {detail}")]
    Remote {
        /// What we were doing.
        context: &'static str,
        /// The bucket or object (`s3://bucket/key`; never a credential).
        location: String,
        /// The client's message.
        detail: String,
    },
    /// The log's writer has stopped (the log is closing or its thread died).
    #[error("the event log is closed")]
    Closed,
}
