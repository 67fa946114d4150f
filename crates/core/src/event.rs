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
use serde::ser::SerializeStruct;
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
        // Cannot fail: every map in these types has string keys, and serde_json writes
        // non-finite floats as null rather than erroring.
        #[allow(clippy::expect_used)]
        serde_json::to_string(self).expect("events always serialize")
    }

    /// Decodes one event from its JSON form, upgrading older schema versions.
    pub fn decode(json: &str) -> Result<Event, DecodeError> {
        let probe: VersionProbe =
            serde_json::from_str(json).map_err(|e| DecodeError::Json(e.to_string()))?;
        let version = probe.schema_version.ok_or(DecodeError::MissingSchemaVersion)?;
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

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Event", 10)?;
        st.serialize_field("event_id", &self.event_id)?;
        st.serialize_field("exec_id", &self.exec_id)?;
        st.serialize_field("tenant", &self.tenant)?;
        st.serialize_field("seq", &self.seq)?;
        st.serialize_field("ts", &self.ts)?;
        st.serialize_field("type", self.event_type().as_str())?;
        st.serialize_field("trace_id", &self.trace_id)?;
        st.serialize_field("step_n", &self.step_n)?;
        st.serialize_field("schema_version", &self.schema_version)?;
        st.serialize_field("data", &Data(&self.payload))?;
        st.end()
    }
}

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(d)?;
        Event::decode(raw.get()).map_err(serde::de::Error::custom)
    }
}
