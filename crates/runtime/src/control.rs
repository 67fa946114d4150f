//! Control state read from the spine's control stream: kill-switches per tenant, strategy (agent)
//! and tool, strategy demotions and re-certifications. Every change is an event on
//! [`CONTROL_STREAM`], so it survives restarts, is the same for every process on the store, and
//! is auditable; the state is [`ControlState`], the fold of those events. Reads catch up with the
//! stream first (a point query for its last seq, and a read only when it moved), so a switch set
//! by another process takes effect at the next step.

use crate::error::RuntimeError;
use keel_core::control::{CONTROL_STREAM, CONTROL_TENANT, ControlState, KillInfo, KillKey};
use keel_core::payload::{
    KillCleared, KillSet, Payload, StrategyCertified, StrategyDemoted, SubjectErased,
};
use keel_core::{CURRENT_SCHEMA_VERSION, Event, TenantId, TraceId};
use keel_spine::clock::{self, Clock};
use keel_spine::{EventLog, SpineError};
use std::sync::{Arc, Mutex};

/// What a kill-switch applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every execution of a tenant.
    Tenant,
    /// Every execution of a strategy (by name).
    Strategy,
    /// Every call of a tool.
    Tool,
}

impl Scope {
    /// The scope's name on events, the command line and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Tenant => "tenant",
            Scope::Strategy => "strategy",
            Scope::Tool => "tool",
        }
    }

    /// Parses `tenant`, `strategy` (or `agent`) or `tool`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "tenant" => Some(Scope::Tenant),
            "strategy" | "agent" => Some(Scope::Strategy),
            "tool" => Some(Scope::Tool),
            _ => None,
        }
    }
}

/// A switch that is on.
#[derive(Clone, Debug, PartialEq)]
pub struct Switch {
    /// Scope, name and tenant (`None`: every tenant).
    pub key: KillKey,
    /// Reason, who, when.
    pub info: KillInfo,
}

/// The control plane's state on a spine.
pub struct Control {
    log: Arc<dyn EventLog>,
    clock: Arc<dyn Clock>,
    state: Mutex<ControlState>,
}

impl Control {
    /// Control state on `log`, folded lazily.
    pub fn new(log: Arc<dyn EventLog>, clock: Arc<dyn Clock>) -> Self {
        Self {
            log,
            clock,
            state: Mutex::new(ControlState::default()),
        }
    }

    fn locked(&self) -> Result<std::sync::MutexGuard<'_, ControlState>, RuntimeError> {
        self.state
            .lock()
            .map_err(|_| RuntimeError::Control("control state lock poisoned".into()))
    }

    /// The state, caught up with the stream. Asks the spine first whether anything was appended
    /// after the last folded event (a point query, see [`EventLog::appended_after`]), and reads
    /// only then: a switch set by any process is seen at the next call either way.
    pub async fn state(&self) -> Result<ControlState, RuntimeError> {
        self.state_seen(None).await
    }

    /// [`Control::state`], where `seen` is the stream's last seq read right after a commit that
    /// just returned (`AppendAck::control_seq`): it stands in for the point query, as fresh.
    pub async fn state_seen(&self, seen: Option<u64>) -> Result<ControlState, RuntimeError> {
        let last = self.locked()?.last_seq;
        let moved = match seen {
            Some(seq) => seq > last,
            None => self.log.appended_after(CONTROL_STREAM, last).await?,
        };
        if !moved {
            return Ok(self.locked()?.clone());
        }
        let new = self.log.read(CONTROL_STREAM, last + 1).await?;
        let mut state = self.locked()?;
        for e in &new {
            // Another caller may have folded these meanwhile.
            if e.seq <= state.last_seq {
                continue;
            }
            state
                .apply(e)
                .map_err(|e| RuntimeError::Control(e.to_string()))?;
        }
        Ok(state.clone())
    }

    /// Appends one control event after the stream's last, retrying if another writer won.
    async fn record(&self, payload: Payload) -> Result<(), RuntimeError> {
        self.record_if(|_| Ok(Some(payload.clone())))
            .await
            .map(|_| ())
    }

    /// Appends the event `decide` makes of the state it is appended after, if any; `decide`
    /// runs again on the newer state when another writer won, so a check it makes (a name not
    /// yet taken) holds for the state the event lands on. Returns whether it appended.
    pub(crate) async fn record_if(
        &self,
        decide: impl Fn(&ControlState) -> Result<Option<Payload>, RuntimeError>,
    ) -> Result<bool, RuntimeError> {
        for _ in 0..64 {
            let state = self.state().await?;
            let last = state.last_seq;
            let Some(payload) = decide(&state)? else {
                return Ok(false);
            };
            let event = Event {
                event_id: clock::new_event_id(),
                exec_id: CONTROL_STREAM,
                tenant: TenantId(CONTROL_TENANT.into()),
                seq: last + 1,
                ts: self.clock.now(),
                // One fixed trace for the whole control stream (all-zero ids are invalid).
                trace_id: TraceId(*b"keel-control-str"),
                step_n: 0,
                schema_version: CURRENT_SCHEMA_VERSION,
                payload,
            };
            match self.log.append(CONTROL_STREAM, last, &[event]).await {
                Ok(_) => {
                    self.state().await?;
                    return Ok(true);
                }
                Err(SpineError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(RuntimeError::Control(
            "the control stream stayed contended for 64 attempts".into(),
        ))
    }

    /// Turns a switch on (or updates its reason). `tenant: None` applies to every tenant.
    pub async fn kill(
        &self,
        scope: Scope,
        name: &str,
        tenant: Option<&str>,
        reason: &str,
        by: &str,
    ) -> Result<(), RuntimeError> {
        self.record(Payload::KillSet(KillSet {
            scope: scope.as_str().into(),
            name: name.into(),
            tenant: tenant.map(str::to_owned),
            reason: reason.into(),
            by: by.into(),
        }))
        .await
    }

    /// Turns a switch off; false if it was not on.
    pub async fn clear(
        &self,
        scope: Scope,
        name: &str,
        tenant: Option<&str>,
        by: &str,
    ) -> Result<bool, RuntimeError> {
        let key = KillKey {
            scope: scope.as_str().into(),
            name: name.into(),
            tenant: tenant.map(str::to_owned),
        };
        if !self.state().await?.kills.contains_key(&key) {
            return Ok(false);
        }
        self.record(Payload::KillCleared(KillCleared {
            scope: key.scope,
            name: key.name,
            tenant: key.tenant,
            by: by.into(),
        }))
        .await?;
        Ok(true)
    }

    /// Every switch that is on.
    pub async fn switches(&self) -> Result<Vec<Switch>, RuntimeError> {
        Ok(self
            .state()
            .await?
            .kills
            .into_iter()
            .map(|(key, info)| Switch { key, info })
            .collect())
    }

    /// Why `name` in `scope` is off for executions of `tenant`, if it is.
    pub async fn kill_reason(
        &self,
        scope: Scope,
        name: &str,
        tenant: &str,
    ) -> Result<Option<String>, RuntimeError> {
        Ok(self
            .state()
            .await?
            .kill_reason(scope.as_str(), name, tenant)
            .map(|i| i.reason.clone()))
    }

    /// Records an erasure's tombstone (the subject by digest only).
    pub async fn erased(&self, tombstone: SubjectErased) -> Result<(), RuntimeError> {
        self.record(Payload::SubjectErased(tombstone)).await
    }

    /// Demotes a strategy version.
    pub async fn demote(&self, d: StrategyDemoted) -> Result<(), RuntimeError> {
        self.record(Payload::StrategyDemoted(d)).await
    }

    /// Re-certifies a strategy version (lifts its demotion; later demotions count decisions from
    /// now on).
    pub async fn certify(
        &self,
        strategy_version: &str,
        by: &str,
        reason: &str,
    ) -> Result<(), RuntimeError> {
        self.record(Payload::StrategyCertified(StrategyCertified {
            strategy_version: strategy_version.into(),
            by: by.into(),
            reason: reason.into(),
        }))
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_spine::clock::SystemClock;
    use keel_spine::{SqliteLog, SqliteOptions};

    /// Regression for skipping the catch-up read while the stream has not moved: a switch set
    /// through another handle on the same file (as another process would) is seen by the very
    /// next read, and so is its clearing.
    async fn reason(c: &Control) -> Option<String> {
        c.kill_reason(Scope::Tenant, "acme", "acme").await.unwrap()
    }

    #[tokio::test]
    async fn a_switch_set_by_another_process_is_seen_by_the_next_read() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("spine.db");
        let open = || -> Arc<dyn EventLog> {
            Arc::new(SqliteLog::open(&path, SqliteOptions::default()).unwrap())
        };
        let here = Control::new(open(), Arc::new(SystemClock));
        let there = Control::new(open(), Arc::new(SystemClock));
        assert_eq!(reason(&here).await, None);
        assert_eq!(reason(&here).await, None, "a second read with nothing new");
        there
            .kill(Scope::Tenant, "acme", None, "incident 42", "test")
            .await
            .unwrap();
        assert_eq!(reason(&here).await.as_deref(), Some("incident 42"));
        assert!(
            there
                .clear(Scope::Tenant, "acme", None, "test")
                .await
                .unwrap()
        );
        assert_eq!(reason(&here).await, None);
    }
}
