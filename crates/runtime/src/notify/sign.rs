//! Webhook signatures: HMAC-SHA256 over `"{t}.{body}"` in a `Keel-Signature: t=…,v1=…` header,
//! the scheme Stripe uses. The timestamp is inside what is signed, so a receiver that refuses
//! old timestamps refuses replays of a captured request; `Keel-Delivery` (stable across
//! retries) lets it drop a repeat it already handled.

use sha2::{Digest, Sha256};

/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "Keel-Signature";
/// The header naming the delivery: the same on every attempt of one notification.
pub const DELIVERY_HEADER: &str = "Keel-Delivery";
/// The header naming the event type (`gate.requested`, `gate.escalated`).
pub const EVENT_HEADER: &str = "Keel-Event";
/// The header numbering the attempt (1 for the first).
pub const ATTEMPT_HEADER: &str = "Keel-Attempt";
/// How far a signature's timestamp may be from the receiver's clock, by default (5 minutes, as
/// Stripe's libraries do).
pub const DEFAULT_TOLERANCE_S: i64 = 300;

const BLOCK: usize = 64;

/// HMAC-SHA256 (RFC 2104) of `msg` under `key`. Written out over the workspace's `sha2` rather
/// than taken from the `hmac` crate, whose current release needs another major of `sha2`.
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(msg);
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// The `Keel-Signature` value for `body` sent at unix time `t` (seconds).
pub fn signature_header(secret: &[u8], t: i64, body: &[u8]) -> String {
    signature_header_rotating(secret, None, t, body)
}

/// The `Keel-Signature` value signed under `secret` and, while a rotation is under way, also
/// under the `previous` one (`t=…,v1=<new>,v1=<old>`): a receiver still holding the old secret
/// keeps verifying until it is given the new one.
pub fn signature_header_rotating(
    secret: &[u8],
    previous: Option<&[u8]>,
    t: i64,
    body: &[u8],
) -> String {
    let mut h = format!("t={t},v1={}", hex::encode(signed(secret, t, body)));
    if let Some(old) = previous {
        h.push_str(",v1=");
        h.push_str(&hex::encode(signed(old, t, body)));
    }
    h
}

fn signed(secret: &[u8], t: i64, body: &[u8]) -> [u8; 32] {
    let mut msg = Vec::with_capacity(body.len() + 24);
    msg.extend_from_slice(t.to_string().as_bytes());
    msg.push(b'.');
    msg.extend_from_slice(body);
    hmac_sha256(secret, &msg)
}

/// Why a signature is refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The header is not `t=<seconds>,v1=<hex>[,v1=<hex>…]`.
    #[error("malformed Keel-Signature header (expected t=<unix seconds>,v1=<hex>)")]
    Malformed,
    /// The timestamp is further than the tolerance from now: a replay, or a skewed clock.
    #[error("Keel-Signature timestamp is {0} s away from now")]
    Stale(i64),
    /// No `v1` matches the body under the secret.
    #[error("no Keel-Signature v1 matches the body")]
    Mismatch,
}

/// Checks a `Keel-Signature` header against the raw `body` as received, the `secret`, and the
/// receiver's clock (`now` in unix seconds): what a receiver written in Rust calls.
pub fn verify(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now: i64,
    tolerance_s: i64,
) -> Result<(), SignatureError> {
    let mut t = None;
    let mut sigs = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = Some(v.parse::<i64>().map_err(|_| SignatureError::Malformed)?),
            Some(("v1", v)) => sigs.push(hex::decode(v).map_err(|_| SignatureError::Malformed)?),
            // Other schemes (a future v2) are for other receivers.
            Some(_) => {}
            None => return Err(SignatureError::Malformed),
        }
    }
    let t = t.ok_or(SignatureError::Malformed)?;
    let skew = now.saturating_sub(t).saturating_abs();
    if skew > tolerance_s {
        return Err(SignatureError::Stale(skew));
    }
    let want = signed(secret, t, body);
    if sigs.iter().any(|s| constant_time_eq(s, &want)) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231's test cases 1, 2 and 6 (a key longer than the block is hashed first).
    #[test]
    fn hmac_sha256_matches_rfc_4231() {
        let cases: [(&[u8], &[u8], &str); 3] = [
            (
                &[0x0b; 20],
                b"Hi There",
                "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
            ),
            (
                b"Jefe",
                b"what do ya want for nothing?",
                "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
            ),
            (
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First",
                "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
            ),
        ];
        for (key, msg, want) in cases {
            assert_eq!(hex::encode(hmac_sha256(key, msg)), want);
        }
    }

    #[test]
    fn a_signature_verifies_only_for_its_body_secret_and_time() {
        let body = br#"{"type":"gate.requested"}"#;
        let h = signature_header(b"s3cret", 1_700_000_000, body);
        assert!(h.starts_with("t=1700000000,v1="));
        assert_eq!(verify(b"s3cret", &h, body, 1_700_000_100, 300), Ok(()));
        assert_eq!(
            verify(b"other", &h, body, 1_700_000_100, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"s3cret", &h, b"{}", 1_700_000_100, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"s3cret", &h, body, 1_700_001_000, 300),
            Err(SignatureError::Stale(1000))
        );
        let both = signature_header_rotating(b"new", Some(b"old"), 1_700_000_000, body);
        for secret in [&b"new"[..], b"old"] {
            assert_eq!(verify(secret, &both, body, 1_700_000_000, 300), Ok(()));
        }
        assert_eq!(
            verify(b"other", &both, body, 1_700_000_000, 300),
            Err(SignatureError::Mismatch)
        );
        for bad in ["", "v1=00", "t=x,v1=00", "t=1,v1=zz", "garbage"] {
            assert_eq!(
                verify(b"s3cret", bad, body, 1, 300),
                Err(SignatureError::Malformed),
                "{bad:?}"
            );
        }
    }
}
