//! Identifiers carried by every event. They are minted outside the core (which has no clock and no
//! randomness) and arrive here as values.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

/// One execution of an agent: the stream key of the spine. A UUIDv7, so ids sort by start time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ExecId(pub Uuid);

/// One event. A UUIDv7 minted when the event is created.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventId(pub Uuid);

/// The tenant that owns an execution; every read path is scoped by it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TenantId(pub String);

/// W3C trace id (16 bytes, 32 lowercase hex digits on the wire): the universal join key between
/// events, costs, gates, experiments and OpenTelemetry spans.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TraceId(pub [u8; 16]);

macro_rules! uuid_display {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
        impl FromStr for $t {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    )*};
}
uuid_display!(ExecId, EventId);

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TenantId {
    /// The tenant id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for TenantId {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

/// A trace id string that is not 32 hex digits, or is all zeros (invalid per W3C).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid trace id {0:?}: expected 32 lowercase hex digits, not all zero")]
pub struct InvalidTraceId(pub String);

impl TraceId {
    /// The 32 lowercase hex digits.
    pub fn to_hex(&self) -> [u8; 32] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 32];
        for (i, b) in self.0.iter().enumerate() {
            out[2 * i] = HEX[usize::from(b >> 4)];
            out[2 * i + 1] = HEX[usize::from(b & 0xf)];
        }
        out
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Hex digits are ASCII, so this never fails.
        f.write_str(std::str::from_utf8(&self.to_hex()).unwrap_or_default())
    }
}

impl FromStr for TraceId {
    type Err = InvalidTraceId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || InvalidTraceId(s.to_owned());
        if s.len() != 32 || !s.is_ascii() {
            return Err(bad());
        }
        let mut out = [0u8; 16];
        for (byte, pair) in out.iter_mut().zip(s.as_bytes().chunks_exact(2)) {
            let pair = std::str::from_utf8(pair).map_err(|_| bad())?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| bad())?;
        }
        if out == [0u8; 16] {
            return Err(bad());
        }
        Ok(Self(out))
    }
}

impl Serialize for TraceId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TraceId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_id_round_trips_through_hex() {
        let t = TraceId([0xab; 16]);
        assert_eq!(t.to_string(), "ab".repeat(16));
        assert_eq!(t.to_string().parse::<TraceId>(), Ok(t));
    }

    #[test]
    fn trace_id_rejects_bad_strings() {
        for s in [
            "",
            "abc",
            &"0".repeat(32),
            &"zz".repeat(16),
            &"é".repeat(16),
        ] {
            assert!(s.parse::<TraceId>().is_err(), "{s:?} should be rejected");
        }
    }
}
