//! `Idempotency-Key` on `POST /v1/executions`: a client that retries a start (its connection
//! dropped, the server was killed before the 201 reached it) gets the first execution back
//! instead of a duplicate.
//!
//! The key is not kept in a table of its own: the execution's id is derived from (tenant, key),
//! and the spine's conditional append (`expected_seq = 0`) lets exactly one `exec.started` exist
//! per id. So the key→execution mapping is committed in the same append as the start, durably,
//! in every process sharing the store, and nothing can commit one without the other.
//! A repeat whose body differs from the first (another goal, another strategy) is refused with
//! 422 rather than silently answered with an execution the client did not ask for.

use crate::error::ApiError;
use keel_core::ExecId;
use keel_core::payload::Payload;
use keel_spine::EventLog;
use sha2::{Digest, Sha256};

/// The header.
pub const HEADER: &str = "idempotency-key";

/// Longest key accepted (the IETF draft suggests UUIDs; 255 leaves room for any client scheme).
const MAX_KEY: usize = 255;

/// The key of a request, if it carries one; a 400 naming the header if it is unusable.
pub fn key(headers: &axum::http::HeaderMap) -> Result<Option<String>, ApiError> {
    let mut values = headers.get_all(HEADER).iter();
    let Some(v) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::bad("Idempotency-Key", "given more than once"));
    }
    let k = v
        .to_str()
        .map_err(|_| ApiError::bad("Idempotency-Key", "must be visible ASCII"))?
        .trim();
    if k.is_empty() {
        return Err(ApiError::bad("Idempotency-Key", "must not be empty"));
    }
    if k.len() > MAX_KEY {
        return Err(ApiError::bad(
            "Idempotency-Key",
            format!("longer than {MAX_KEY} characters"),
        ));
    }
    Ok(Some(k.to_owned()))
}

/// The execution id a (tenant, key) pair always starts: a UUIDv8 from SHA-256 of both,
/// length-prefixed so no two pairs share an input. Unlike minted ids (UUIDv7) it does not sort
/// by start time.
pub fn exec_id(tenant: &str, key: &str) -> ExecId {
    let mut h = Sha256::new();
    h.update(b"keel idempotency v1\0");
    h.update((tenant.len() as u64).to_be_bytes());
    h.update(tenant.as_bytes());
    h.update(key.as_bytes());
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    for (b, d) in bytes.iter_mut().zip(digest.iter()) {
        *b = *d;
    }
    ExecId(uuid::Builder::from_custom_bytes(bytes).into_uuid())
}

/// What an earlier start under the same key was.
pub struct Earlier {
    /// Its goal.
    pub goal: String,
    /// Its strategy version.
    pub strategy_version: String,
}

/// The execution an earlier request with this key started, if any (of this tenant only).
pub async fn earlier(
    log: &dyn EventLog,
    exec: ExecId,
    tenant: &str,
) -> Result<Option<Earlier>, ApiError> {
    let first = log.read(exec, 1).await?;
    Ok(first.first().and_then(|e| match &e.payload {
        Payload::ExecStarted(s) if e.tenant.0 == tenant => Some(Earlier {
            goal: s.goal.clone(),
            strategy_version: s.strategy_version.clone(),
        }),
        _ => None,
    }))
}

#[cfg(test)]
mod tests {
    use super::exec_id;

    #[test]
    fn ids_depend_on_tenant_and_key_only() {
        assert_eq!(exec_id("acme", "k1"), exec_id("acme", "k1"));
        assert_ne!(exec_id("acme", "k1"), exec_id("acme", "k2"));
        assert_ne!(exec_id("acme", "k1"), exec_id("globex", "k1"));
        // The length prefix: ("ab", "c") and ("a", "bc") differ.
        assert_ne!(exec_id("ab", "c"), exec_id("a", "bc"));
    }
}
