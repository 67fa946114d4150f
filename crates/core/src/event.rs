//! The event envelope and its JSON encoding (the same bytes on the wire and in the store).
//!
//! Shape: `{"event_id", "exec_id", "tenant", "seq", "ts", "type", "trace_id", "step_n",
//! "schema_version", "data"}` — CloudEvents-like, with the typed payload under `data`. Decoding
//! reads `schema_version` first: the current version decodes straight into types; an older one is
//! upgraded by [`crate::compat`]; a newer one is refused, since guessing would corrupt meaning.

use crate::compat;
use crate::error::DecodeError;
use crate::ids::{EventId, ExecId, TenantId, TraceId};
use crate::payload::{EventType, Payload};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;
use std::borrow::Cow;

/// The schema version this build writes. Every older version still decodes (see `compat`).
pub const CURRENT_SCHEMA_VERSION: u16 = 2;

/// One immutable step of one execution.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// UUIDv7 of this event.
    pub event_id: EventId,
    /// The execution (stream) this event belongs to.
    pub exec_id: ExecId,
    /// Owning tenant.
    pub tenant: TenantId,
    /// 1-based, gapless position within the execution.
    pub seq: u64,
    /// When the event was created.
    pub ts: DateTime<Utc>,
    /// The execution's trace id.
    pub trace_id: TraceId,
    /// The reasoning step this event belongs to (0 before the first step).
    pub step_n: u32,
    /// Schema version of the payload shape. Decoded events always carry the current version,
    /// because decoding upgrades older shapes.
    pub schema_version: u16,
    /// The typed payload; its variant is the event type.
    pub payload: Payload,
}

impl Event {
    /// This event's type.
    pub fn event_type(&self) -> EventType {
        self.payload.event_type()
    }

    /// Encodes to the canonical JSON form.
    pub fn encode(&self) -> String {
        let mut out = Vec::with_capacity(512);
        self.encode_into(&mut out);
        // Every byte written is either ASCII or comes from serde_json, which writes UTF-8.
        String::from_utf8(out).unwrap_or_default()
    }

    /// Appends the canonical JSON form to `out`. This is the hot path of every append, so the
    /// envelope, whose fields have fixed, escape-free shapes (UUIDs, hex, numbers, RFC 3339
    /// times, type names), is written directly; only the tenant and the payload go through
    /// serde_json.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let mut uuid = uuid::Uuid::encode_buffer();
        let mut int = itoa::Buffer::new();
        out.extend_from_slice(b"{\"event_id\":\"");
        out.extend_from_slice(
            self.event_id
                .0
                .hyphenated()
                .encode_lower(&mut uuid)
                .as_bytes(),
        );
        out.extend_from_slice(b"\",\"exec_id\":\"");
        out.extend_from_slice(
            self.exec_id
                .0
                .hyphenated()
                .encode_lower(&mut uuid)
                .as_bytes(),
        );
        out.extend_from_slice(b"\",\"tenant\":");
        write_json(out, &self.tenant);
        out.extend_from_slice(b",\"seq\":");
        out.extend_from_slice(int.format(self.seq).as_bytes());
        out.extend_from_slice(b",\"ts\":");
        write_timestamp(out, &self.ts);
        out.extend_from_slice(b",\"type\":\"");
        out.extend_from_slice(self.event_type().as_str().as_bytes());
        out.extend_from_slice(b"\",\"trace_id\":\"");
        out.extend_from_slice(&self.trace_id.to_hex());
        out.extend_from_slice(b"\",\"step_n\":");
        out.extend_from_slice(int.format(self.step_n).as_bytes());
        out.extend_from_slice(b",\"schema_version\":");
        out.extend_from_slice(int.format(self.schema_version).as_bytes());
        out.extend_from_slice(b",\"data\":");
        write_json(out, &Data(&self.payload));
        out.push(b'}');
    }

    /// Decodes one event from its JSON form, upgrading older schema versions.
    pub fn decode(json: &str) -> Result<Event, DecodeError> {
        let probe: VersionProbe =
            serde_json::from_str(json).map_err(|e| DecodeError::Json(e.to_string()))?;
        let version = probe
            .schema_version
            .ok_or(DecodeError::MissingSchemaVersion)?;
        if version == CURRENT_SCHEMA_VERSION {
            return decode_current(json);
        }
        if version > CURRENT_SCHEMA_VERSION {
            return Err(DecodeError::NewerSchema {
                found: version,
                supported: CURRENT_SCHEMA_VERSION,
            });
        }
        let upgraded = compat::upgrade(json, version)?;
        decode_current(&upgraded)
    }
}

#[derive(Deserialize)]
struct VersionProbe {
    schema_version: Option<u16>,
}

#[derive(Deserialize)]
struct RawEvent<'a> {
    event_id: EventId,
    exec_id: ExecId,
    #[serde(borrow)]
    tenant: Cow<'a, str>,
    seq: u64,
    ts: DateTime<Utc>,
    #[serde(rename = "type", borrow)]
    ty: Cow<'a, str>,
    trace_id: TraceId,
    step_n: u32,
    schema_version: u16,
    #[serde(borrow)]
    data: &'a RawValue,
}

fn decode_current(json: &str) -> Result<Event, DecodeError> {
    let raw: RawEvent<'_> =
        serde_json::from_str(json).map_err(|e| DecodeError::Envelope(e.to_string()))?;
    let ty = EventType::parse(&raw.ty).ok_or_else(|| DecodeError::UnknownType {
        ty: raw.ty.to_string(),
        event_id: raw.event_id,
    })?;
    let payload = Payload::decode_data(ty, raw.data.get()).map_err(|e| DecodeError::Payload {
        ty,
        event_id: raw.event_id,
        detail: e.to_string(),
    })?;
    Ok(Event {
        event_id: raw.event_id,
        exec_id: raw.exec_id,
        tenant: TenantId(raw.tenant.into_owned()),
        seq: raw.seq,
        ts: raw.ts,
        trace_id: raw.trace_id,
        step_n: raw.step_n,
        schema_version: raw.schema_version,
        payload,
    })
}

struct Data<'a>(&'a Payload);

impl Serialize for Data<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize_data(s)
    }
}

/// Writes `value` as JSON. Cannot fail for Keel's types: every map has string keys and
/// serde_json writes non-finite floats as null; writing to a Vec never fails.
fn write_json<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    if serde_json::to_writer(&mut *out, value).is_err() {
        out.extend_from_slice(b"null");
    }
}

/// RFC 3339 in UTC with `Z` and 0, 3, 6 or 9 fraction digits — the same text chrono's serde
/// writes, produced without the formatting machinery.
fn write_timestamp(out: &mut Vec<u8>, ts: &DateTime<Utc>) {
    use chrono::{Datelike, Timelike};
    let nanos = ts.nanosecond();
    let year = ts.year();
    if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
        // Far-off years and leap seconds are rare enough for the general path.
        write_json(out, ts);
        return;
    }
    let mut buf = *b"\"0000-00-00T00:00:00";
    let mut put = |at: usize, v: u32, width: usize| {
        let mut v = v;
        for i in (0..width).rev() {
            buf[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(1, year as u32, 4);
    put(6, ts.month(), 2);
    put(9, ts.day(), 2);
    put(12, ts.hour(), 2);
    put(15, ts.minute(), 2);
    put(18, ts.second(), 2);
    out.extend_from_slice(&buf);
    let (digits, frac) = if nanos == 0 {
        (0, 0)
    } else if nanos.is_multiple_of(1_000_000) {
        (3, nanos / 1_000_000)
    } else if nanos.is_multiple_of(1_000) {
        (6, nanos / 1_000)
    } else {
        (9, nanos)
    };
    if digits > 0 {
        out.push(b'.');
        let mut f = [b'0'; 9];
        let mut v = frac;
        for i in (0..digits).rev() {
            f[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
        out.extend_from_slice(&f[..digits]);
    }
    out.extend_from_slice(b"Z\"");
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // One encoder for every path, so the stored bytes and any other serialization agree.
        let raw = RawValue::from_string(self.encode()).map_err(serde::ser::Error::custom)?;
        raw.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(d)?;
        Event::decode(raw.get()).map_err(serde::de::Error::custom)
    }
}
