//! The control plane's pure parts: the autonomy ladder (which actions may run alone, which pass
//! a gate) and the control state (kill-switches, demotions, certifications) as a fold over the
//! control stream, so it survives restarts and every change is an auditable event.

use crate::event::Event;
use crate::ids::ExecId;
use crate::payload::Payload;
use std::collections::BTreeMap;
use uuid::Uuid;

/// The spine stream that holds control events. It is not an execution: workers and projections
/// skip it.
pub const CONTROL_STREAM: ExecId =
    ExecId(Uuid::from_u128(0x0000_0000_0000_7000_8000_00c0_47c0_1000));

/// The tenant the control stream is recorded under (events name the tenant they act on).
pub const CONTROL_TENANT: &str = "_control";

/// How an action runs, by its consequence tier (from the tool contract) and the strategy's
/// ceiling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Autonomy {
    /// Tier 0, read-only: runs alone.
    Autonomous,
    /// Tier 1, reversible: runs alone; its events are the audit trail.
    Audited,
    /// Tier 2, visible: runs alone within budget; `sampled` says whether this call goes to the
    /// post-hoc review queue.
    Reviewed {
        /// Picked for post-hoc review.
        sampled: bool,
    },
    /// A person decides first.
    Gate {
        /// Why.
        reason: String,
    },
}

/// The ladder. `max_autonomous_tier` is the strategy's ceiling (after any demotion);
/// `review_draw` is a number in `[0, 1)` drawn for this call and `review_rate` the share of
/// tier-2 calls sampled for review. Tier 3 (irreversible / external) always gates.
pub fn autonomy(tier: u8, max_autonomous_tier: u8, review_rate: f64, review_draw: f64) -> Autonomy {
    if tier >= 3 {
        return Autonomy::Gate {
            reason: format!("tier-{tier} actions (irreversible or external) always pass a gate"),
        };
    }
    if tier > max_autonomous_tier {
        return Autonomy::Gate {
            reason: format!(
                "tier-{tier} action above the strategy's maximum autonomous tier {max_autonomous_tier}"
            ),
        };
    }
    match tier {
        0 => Autonomy::Autonomous,
        1 => Autonomy::Audited,
        _ => Autonomy::Reviewed {
            sampled: review_draw < review_rate,
        },
    }
}

/// A deterministic draw in `[0, 1)` from an id (a call id): the same call is always sampled the
/// same way, on every worker and in replay.
pub fn draw(id: &str) -> f64 {
    // FNV-1a: tiny, stable across versions and platforms.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// A kill-switch key: scope, name, and the tenant it applies in (`None`: every tenant).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct KillKey {
    /// `tenant`, `strategy` or `tool`.
    pub scope: String,
    /// What is switched off.
    pub name: String,
    /// Where.
    pub tenant: Option<String>,
}

/// A switch that is on.
#[derive(Clone, Debug, PartialEq)]
pub struct KillInfo {
    /// Why.
    pub reason: String,
    /// Who.
    pub by: String,
    /// When (RFC 3339).
    pub at: String,
}

/// A strategy version's current demotion.
#[derive(Clone, Debug, PartialEq)]
pub struct Demotion {
    /// The ceiling while demoted.
    pub max_autonomous_tier: u8,
    /// The rejection rate that triggered it.
    pub rejection_rate: f64,
    /// Decisions it was computed over.
    pub sample: u32,
    /// When (RFC 3339).
    pub at: String,
}

/// The fold of the control stream.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ControlState {
    /// Last folded seq.
    pub last_seq: u64,
    /// Switches that are on.
    pub kills: BTreeMap<KillKey, KillInfo>,
    /// Strategy versions demoted and not yet re-certified.
    pub demotions: BTreeMap<String, Demotion>,
    /// Per strategy version, the time (RFC 3339) of its last certification: demotion windows
    /// count only decisions after it.
    pub certified_at: BTreeMap<String, String>,
    /// Registered experiments (see [`crate::experiment::registry`]).
    pub experiments: crate::experiment::registry::Experiments,
    /// Monthly cost budgets by tenant (the latest `budget.set` of each).
    pub budgets: BTreeMap<String, crate::payload::BudgetSet>,
    /// (tenant, month) pairs whose budget alarm has fired.
    pub budget_alarms: std::collections::BTreeSet<(String, String)>,
}

/// A control-stream event that does not fit.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("control stream event seq {seq} ({event_type}): {detail}")]
pub struct ControlError {
    /// Its seq.
    pub seq: u64,
    /// Its type.
    pub event_type: String,
    /// What is wrong.
    pub detail: String,
}

impl ControlState {
    /// Folds one control event in.
    pub fn apply(&mut self, e: &Event) -> Result<(), ControlError> {
        let bad = |detail: String| ControlError {
            seq: e.seq,
            event_type: e.event_type().to_string(),
            detail,
        };
        if e.seq != self.last_seq + 1 {
            return Err(bad(format!("expected seq {}", self.last_seq + 1)));
        }
        let at = e.ts.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        match &e.payload {
            Payload::KillSet(k) => {
                self.kills.insert(
                    KillKey {
                        scope: k.scope.clone(),
                        name: k.name.clone(),
                        tenant: k.tenant.clone(),
                    },
                    KillInfo {
                        reason: k.reason.clone(),
                        by: k.by.clone(),
                        at,
                    },
                );
            }
            Payload::KillCleared(k) => {
                self.kills.remove(&KillKey {
                    scope: k.scope.clone(),
                    name: k.name.clone(),
                    tenant: k.tenant.clone(),
                });
            }
            Payload::StrategyDemoted(d) => {
                self.demotions.insert(
                    d.strategy_version.clone(),
                    Demotion {
                        max_autonomous_tier: d.max_autonomous_tier,
                        rejection_rate: d.rejection_rate,
                        sample: d.sample,
                        at,
                    },
                );
            }
            Payload::StrategyCertified(c) => {
                self.demotions.remove(&c.strategy_version);
                self.certified_at.insert(c.strategy_version.clone(), at);
            }
            // SLO alarms are signals for people and dashboards; they change no control state.
            Payload::SloAlarmed(_) => {}
            // The tombstone of an erasure: audit only.
            Payload::SubjectErased(_) => {}
            // Relevance ratings feed the SLO projections; they change no control state.
            Payload::RetrievalRated(_) => {}
            // User feedback feeds gold.executions; it changes no control state.
            Payload::FeedbackGiven(_) => {}
            Payload::BudgetSet(b) => {
                self.budgets.insert(b.tenant.clone(), b.clone());
            }
            Payload::BudgetAlarmed(a) => {
                self.budget_alarms
                    .insert((a.tenant.clone(), a.month.clone()));
            }
            Payload::ExperimentRegistered(_)
            | Payload::ExperimentStopped(_)
            | Payload::ExperimentConcluded(_)
            | Payload::GuardrailBreached(_) => self.experiments.apply(&e.payload, e.ts),
            _ => return Err(bad("not a control event".into())),
        }
        self.last_seq = e.seq;
        Ok(())
    }

    /// Why `name` in `scope` is switched off for `tenant`, if it is (a switch for every tenant
    /// counts too).
    pub fn kill_reason(&self, scope: &str, name: &str, tenant: &str) -> Option<&KillInfo> {
        let key = |tenant: Option<String>| KillKey {
            scope: scope.to_owned(),
            name: name.to_owned(),
            tenant,
        };
        self.kills
            .get(&key(Some(tenant.to_owned())))
            .or_else(|| self.kills.get(&key(None)))
    }

    /// A strategy version's ceiling: its configured one, lowered while it is demoted, and capped
    /// while it is a new arm of a running experiment that no person has certified from its
    /// production record (offline results never lift the cap).
    pub fn max_autonomous_tier(&self, strategy_version: &str, configured: u8) -> u8 {
        let tier = self
            .demotions
            .get(strategy_version)
            .map_or(configured, |d| d.max_autonomous_tier.min(configured));
        match self.experiments.tier_cap(strategy_version) {
            Some(cap) if !self.certified_at.contains_key(strategy_version) => tier.min(cap),
            _ => tier,
        }
    }

    /// True while `strategy_version` is capped as a new experiment arm awaiting certification.
    pub fn tier_capped(&self, strategy_version: &str) -> Option<u8> {
        self.experiments
            .tier_cap(strategy_version)
            .filter(|_| !self.certified_at.contains_key(strategy_version))
    }
}

/// When to demote: the last `window` decisions of a strategy version (since its last
/// certification), if there are at least `min_sample`, rejected at a rate above `max_rejection_rate`.
#[derive(Clone, Debug, PartialEq)]
pub struct DemotionPolicy {
    /// Decisions looked at (the most recent).
    pub window: usize,
    /// Fewest decisions to judge on.
    pub min_sample: usize,
    /// Highest tolerated share of rejections.
    pub max_rejection_rate: f64,
}

impl DemotionPolicy {
    /// The rejection rate and sample size if `rejected` (most recent last) calls for a demotion.
    pub fn judge(&self, rejected: &[bool]) -> Option<(f64, u32)> {
        let recent = &rejected[rejected.len().saturating_sub(self.window)..];
        if recent.len() < self.min_sample.max(1) {
            return None;
        }
        let n = recent.iter().filter(|r| **r).count();
        let rate = n as f64 / recent.len() as f64;
        (rate > self.max_rejection_rate).then_some((rate, recent.len() as u32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ladder_per_tier() {
        assert_eq!(autonomy(0, 2, 0.5, 0.1), Autonomy::Autonomous);
        assert_eq!(autonomy(1, 2, 0.5, 0.1), Autonomy::Audited);
        assert_eq!(
            autonomy(2, 2, 0.5, 0.1),
            Autonomy::Reviewed { sampled: true }
        );
        assert_eq!(
            autonomy(2, 2, 0.5, 0.9),
            Autonomy::Reviewed { sampled: false }
        );
        assert!(matches!(autonomy(3, 3, 0.0, 0.0), Autonomy::Gate { .. }));
        // Above the ceiling gates, whatever the tier.
        assert!(matches!(autonomy(2, 1, 0.0, 0.0), Autonomy::Gate { .. }));
        assert!(matches!(autonomy(1, 0, 0.0, 0.0), Autonomy::Gate { .. }));
        assert_eq!(autonomy(0, 0, 0.0, 0.0), Autonomy::Autonomous);
    }

    #[test]
    fn draws_are_stable_and_spread() {
        assert_eq!(draw("call-1"), draw("call-1"));
        let n = (0..10_000)
            .filter(|i| draw(&format!("call-{i}")) < 0.25)
            .count();
        assert!((2_000..3_000).contains(&n), "{n}");
    }

    #[test]
    fn a_new_experiment_arm_is_capped_until_certified() {
        use crate::experiment::{Experiment, ExperimentFile, ExperimentRegistered};
        let file: ExperimentFile = serde_json::from_str(
            "{\"name\":\"e\",\"unit\":\"subject\",\"min_sample\":1,\
             \"start\":\"2026-01-01T00:00:00Z\",\"end\":\"2026-02-01T00:00:00Z\",\
             \"arms\":[{\"name\":\"a\",\"strategy\":\"old\",\"weight\":1,\"holdback\":true},\
             {\"name\":\"b\",\"strategy\":\"new\",\"weight\":1}]}",
        )
        .unwrap();
        let experiment = Experiment::parse(file).unwrap();
        let mut s = ControlState::default();
        assert_eq!(s.max_autonomous_tier("new/v2/m/abcd", 2), 2);
        s.experiments.apply(
            &Payload::ExperimentRegistered(ExperimentRegistered {
                experiment,
                layer_from: 0,
                layer_to: 10_000,
                by: "t".into(),
            }),
            chrono::DateTime::default(),
        );
        assert_eq!(s.max_autonomous_tier("new/v2/m/abcd", 2), 1, "capped");
        assert_eq!(s.max_autonomous_tier("new/v2/m/abcd", 0), 0, "never raised");
        assert_eq!(
            s.max_autonomous_tier("old/v1/m/abcd", 2),
            2,
            "the holdback runs as it did"
        );
        s.certified_at
            .insert("new/v2/m/abcd".into(), "2026-01-10T00:00:00Z".into());
        assert_eq!(s.max_autonomous_tier("new/v2/m/abcd", 2), 2, "certified");
        // Another version of the same strategy is new again.
        assert_eq!(s.max_autonomous_tier("new/v3/m/ef01", 2), 1);
    }

    #[test]
    fn demotion_needs_a_sample_and_a_rate() {
        let p = DemotionPolicy {
            window: 4,
            min_sample: 3,
            max_rejection_rate: 0.5,
        };
        assert_eq!(p.judge(&[true, true]), None);
        assert_eq!(p.judge(&[true, false, false]), None);
        assert_eq!(p.judge(&[true, true, false]), Some((2.0 / 3.0, 3)));
        // Only the window counts.
        assert_eq!(
            p.judge(&[true, true, true, false, false, false, false]),
            None
        );
    }
}
