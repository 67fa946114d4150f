//! Crypto-shredding: the one place where payload fields linked to a data subject are sealed at
//! append and opened at read (docs/decisions/030-crypto-shredding.md).
//!
//! An execution is linked to a subject ([`crate::SqliteLog::link_subject`]) before its first
//! append. Every event of a linked execution is stored with its personal fields sealed —
//! ChaCha20-Poly1305 under the subject's key, a fresh random nonce per field, the execution id,
//! seq and field path as associated data (so a sealed value cannot be moved to another event) —
//! as the string `enc:v1:<hex nonce ‖ ciphertext>`. Erasure deletes the key; from then on every
//! read path (read, read_all, subscribe, and everything built on them: `keel events`, replay,
//! projections rebuilt from the log) decodes those fields as `"[erased]"`.
//!
//! Sealed fields, by event type: `exec.started.goal`, `plan.proposed.steps[*]`,
//! `model.responded.error`, `memory.retrieved.{query, chunks[*].provenance}`,
//! `memory.written.{subject, provenance}`, `tool.called.args`, `tool.result.errors[*]`,
//! `gate.requested.{action, evidence_pack}`, `gate.decided.reason`, `exec.finished.detail`.
//! Envelopes, ids, types, costs, token counts, statuses and blob references stay clear, so
//! metering, SLOs and the fold keep working on erased executions.

use crate::error::SpineError;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use serde_json::Value;

/// Prefix of a sealed value.
pub const SEALED: &str = "enc:v1:";
/// What a sealed value decodes to once its key is gone.
pub const ERASED: &str = "[erased]";

/// A subject's cipher.
pub type Cipher = ChaCha20Poly1305;

/// A fresh random 256-bit key.
pub fn new_key() -> Vec<u8> {
    ChaCha20Poly1305::generate_key(&mut OsRng).to_vec()
}

/// The cipher for stored key bytes; `None` if they are not 32 bytes.
pub fn cipher(key: &[u8]) -> Option<Cipher> {
    (key.len() == 32).then(|| ChaCha20Poly1305::new(Key::from_slice(key)))
}

/// Sealed field paths of an event type; `*` is every element of an array.
fn sealed_fields(ty: &str) -> &'static [&'static [&'static str]] {
    match ty {
        "exec.started" => &[&["goal"]],
        "plan.proposed" => &[&["steps", "*"]],
        "model.responded" => &[&["error"]],
        "memory.retrieved" => &[&["query"], &["chunks", "*", "provenance"]],
        "memory.written" => &[&["subject"], &["provenance"]],
        "memory.distill_failed" => &[&["reason"]],
        "tool.called" => &[&["args"]],
        "tool.result" => &[&["errors", "*"]],
        "gate.requested" => &[&["action"], &["evidence_pack"]],
        "gate.decided" => &[&["reason"]],
        "exec.finished" => &[&["detail"]],
        _ => &[],
    }
}

fn walk(v: &mut Value, path: &[&str], at: &mut String, f: &mut dyn FnMut(&mut Value, &str)) {
    let Some((head, rest)) = path.split_first() else {
        f(v, at);
        return;
    };
    let len = at.len();
    if *head == "*" {
        if let Value::Array(items) = v {
            for (i, item) in items.iter_mut().enumerate() {
                at.push_str(&format!("/{i}"));
                walk(item, rest, at, f);
                at.truncate(len);
            }
        }
    } else if let Some(child) = v.get_mut(*head) {
        at.push('/');
        at.push_str(head);
        walk(child, rest, at, f);
        at.truncate(len);
    }
}

fn aad(v: &Value, path: &str) -> String {
    format!("{}/{}{path}", v["exec_id"].as_str().unwrap_or(""), v["seq"])
}

/// Seals the personal fields of one encoded event.
pub fn seal_event(json: &str, cipher: &Cipher) -> Result<String, SpineError> {
    let mut v: Value = serde_json::from_str(json).map_err(|e| SpineError::InvalidAppend {
        exec_id: keel_core::ExecId(uuid::Uuid::nil()),
        detail: format!("sealing: event is not JSON: {e}"),
    })?;
    let ty = v["type"].as_str().unwrap_or_default().to_owned();
    let envelope = v.clone();
    let mut failed = false;
    if let Some(data) = v.get_mut("data") {
        for path in sealed_fields(&ty) {
            walk(data, path, &mut String::new(), &mut |field, at| {
                if field.is_null() {
                    return;
                }
                let plain = field.to_string();
                let nonce = ChaCha20Poly1305::generate_nonce(&mut OsRng);
                let aad = aad(&envelope, at);
                match cipher.encrypt(
                    &nonce,
                    Payload {
                        msg: plain.as_bytes(),
                        aad: aad.as_bytes(),
                    },
                ) {
                    Ok(ct) => {
                        let mut out = String::with_capacity(SEALED.len() + 2 * (12 + ct.len()));
                        out.push_str(SEALED);
                        out.push_str(&hex::encode(nonce));
                        out.push_str(&hex::encode(ct));
                        *field = Value::String(out);
                    }
                    Err(_) => failed = true,
                }
            });
        }
    }
    if failed {
        return Err(SpineError::InvalidAppend {
            exec_id: keel_core::ExecId(uuid::Uuid::nil()),
            detail: "sealing a subject-linked field failed".into(),
        });
    }
    Ok(v.to_string())
}

/// True if an encoded event may hold sealed fields (cheap pre-check before parsing).
pub fn maybe_sealed(json: &str) -> bool {
    json.contains(SEALED)
}

/// Opens the sealed fields of one encoded event with `cipher`, or turns them into `"[erased]"`
/// when there is no key (erased) or a value does not authenticate.
pub fn open_event(json: &str, cipher: Option<&Cipher>) -> String {
    let Ok(mut v) = serde_json::from_str::<Value>(json) else {
        return json.to_owned();
    };
    let ty = v["type"].as_str().unwrap_or_default().to_owned();
    let envelope = v.clone();
    if let Some(data) = v.get_mut("data") {
        for path in sealed_fields(&ty) {
            walk(data, path, &mut String::new(), &mut |field, at| {
                let Some(sealed) = field.as_str().and_then(|s| s.strip_prefix(SEALED)) else {
                    return;
                };
                let opened = cipher.and_then(|c| {
                    let bytes = hex::decode(sealed).ok()?;
                    if bytes.len() < 12 {
                        return None;
                    }
                    let (nonce, ct) = bytes.split_at(12);
                    let aad = aad(&envelope, at);
                    let plain = c
                        .decrypt(
                            Nonce::from_slice(nonce),
                            Payload {
                                msg: ct,
                                aad: aad.as_bytes(),
                            },
                        )
                        .ok()?;
                    serde_json::from_slice::<Value>(&plain).ok()
                });
                *field = opened.unwrap_or_else(|| Value::String(ERASED.into()));
            });
        }
    }
    v.to_string()
}

/// The blobs an execution's events reference (model requests and replies, tool outputs), in
/// order, each once: what erasing its subject deletes.
pub fn referenced_blobs(events: &[keel_core::Event]) -> Vec<String> {
    use keel_core::payload::Payload;
    let mut refs: Vec<String> = Vec::new();
    for e in events {
        let r = match &e.payload {
            Payload::ModelCalled(c) => c.request_ref.clone(),
            Payload::ModelResponded(r) => r.response_ref.clone(),
            Payload::ToolResult(r) => r.output_ref.clone(),
            _ => None,
        };
        if let Some(r) = r
            && !refs.contains(&r)
        {
            refs.push(r);
        }
    }
    refs
}

/// Deletes from `blobs` every blob the `executions` reference (each once), and returns the
/// references of those that were there: erasure's blob half, the same on every spine.
pub(crate) async fn delete_referenced_blobs(
    log: &dyn crate::log::EventLog,
    executions: &[keel_core::ExecId],
    blobs: &dyn crate::blob::BlobStore,
) -> Result<Vec<String>, SpineError> {
    let mut refs: Vec<String> = Vec::new();
    for exec in executions {
        for r in referenced_blobs(&log.read(*exec, 1).await?) {
            if !refs.contains(&r) {
                refs.push(r);
            }
        }
    }
    let mut deleted = Vec::new();
    for r in &refs {
        let parsed: crate::blob::BlobRef = r.parse()?;
        if blobs.delete(&parsed).await? {
            deleted.push(r.clone());
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EV: &str = r#"{"event_id":"01900000-0000-7000-8000-000000000001","exec_id":"01900000-0000-7000-8000-0000000000aa","tenant":"acme","seq":4,"ts":1780000000000,"type":"tool.called","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","step_n":0,"schema_version":1,"data":{"call_id":"t1","tool":"lookup_order","args":{"email":"jane@example.com"},"attempt":1}}"#;

    #[test]
    fn seal_open_and_erase() {
        let key = new_key();
        let c = cipher(&key).unwrap();
        let sealed = seal_event(EV, &c).unwrap();
        assert!(!sealed.contains("jane@example.com"));
        assert!(
            sealed.contains("lookup_order"),
            "non-personal fields stay clear"
        );
        let opened: Value = serde_json::from_str(&open_event(&sealed, Some(&c))).unwrap();
        assert_eq!(opened["data"]["args"]["email"], "jane@example.com");
        let erased: Value = serde_json::from_str(&open_event(&sealed, None)).unwrap();
        assert_eq!(erased["data"]["args"], ERASED);
        let other = cipher(&new_key()).unwrap();
        let wrong: Value = serde_json::from_str(&open_event(&sealed, Some(&other))).unwrap();
        assert_eq!(wrong["data"]["args"], ERASED);
        // Moved to another seq, the value no longer authenticates.
        let moved = sealed.replace("\"seq\":4", "\"seq\":5");
        let moved: Value = serde_json::from_str(&open_event(&moved, Some(&c))).unwrap();
        assert_eq!(moved["data"]["args"], ERASED);
    }
}
