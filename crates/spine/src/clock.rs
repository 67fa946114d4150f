//! Where time and fresh identifiers enter Keel. The core takes both as values; this module is the
//! one place that reads the system clock or draws random ids.

use chrono::{DateTime, Utc};
use keel_core::{EventId, ExecId, TraceId};
use uuid::Uuid;

/// A source of the current time, so code that stamps events can be driven with fixed times.
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> DateTime<Utc>;
}

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the one sanctioned read of the wall clock
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A fresh UUIDv7 event id.
pub fn new_event_id() -> EventId {
    EventId(Uuid::now_v7())
}

/// A fresh UUIDv7 execution id (sorts by start time).
pub fn new_exec_id() -> ExecId {
    ExecId(Uuid::now_v7())
}

/// A fresh random W3C trace id.
pub fn new_trace_id() -> TraceId {
    let mut bytes = *Uuid::new_v4().as_bytes();
    bytes[15] |= 1; // all-zero is invalid; v4 leaves byte 15 fully random
    TraceId(bytes)
}
