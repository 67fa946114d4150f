//! The registered experiments, as a fold of the control stream's `experiment.*` events, and
//! assignment: which arm (if any) a new execution runs.
//!
//! Assignment is a pure function of the unit and the frozen experiment, so it is sticky without
//! storing anything per unit: `bucket = u64(sha256(salt ‖ 0x00 ‖ unit)[0..8], big-endian) mod
//! 10 000`, and the arms own consecutive bucket ranges in the order listed, sized by weight.
//! Mutually exclusive experiments share a layer: a second hash with the layer's salt
//! (`layer:<name>`) picks which experiment's range of the layer a unit falls in (Statsig's
//! two-level scheme). Weights and ranges are frozen at registration, so a unit keeps its arm for
//! the experiment's life; only stopping an arm moves its units, back to the holdback.

use super::{Assignment, BUCKETS, Experiment, Unit};
use crate::payload::Payload;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};

/// Where an experiment is in its life.
#[derive(Clone, Debug, PartialEq)]
pub enum Status {
    /// Registered and not stopped (it assigns between its start and end).
    Running,
    /// Stopped early.
    Stopped {
        /// Why.
        reason: String,
        /// Who.
        by: String,
    },
    /// A decision was recorded.
    Concluded {
        /// The decision.
        decision: String,
        /// Who.
        by: String,
    },
}

/// One registered experiment.
#[derive(Clone, Debug, PartialEq)]
pub struct Registered {
    /// What was frozen.
    pub experiment: Experiment,
    /// Its layer range `[from, to)`.
    pub layer_range: (u32, u32),
    /// When it was registered.
    pub registered_at: DateTime<Utc>,
    /// Who registered it.
    pub by: String,
    /// Its status.
    pub status: Status,
    /// Arms stopped one by one (their units run the holdback).
    pub stopped_arms: BTreeSet<String>,
    /// Guardrails already recorded as breached, as (arm, metric): a breach is acted on once.
    pub breached: BTreeSet<(String, &'static str)>,
}

impl Registered {
    /// True while it assigns new executions at `now`.
    pub fn assigns_at(&self, now: DateTime<Utc>) -> bool {
        self.status == Status::Running && self.experiment.start <= now && now < self.experiment.end
    }

    /// True until it is stopped, concluded or past its end at `now`: it holds its layer range.
    pub fn live_at(&self, now: DateTime<Utc>) -> bool {
        self.status == Status::Running && now < self.experiment.end
    }

    /// Its state in one word.
    pub fn status_word(&self, now: DateTime<Utc>) -> &'static str {
        match self.status {
            Status::Stopped { .. } => "stopped",
            Status::Concluded { .. } => "concluded",
            Status::Running if now < self.experiment.start => "scheduled",
            Status::Running if now >= self.experiment.end => "ended",
            Status::Running => "running",
        }
    }
}

/// The units an execution could be assigned by.
#[derive(Clone, Copy, Debug)]
pub struct Units<'a> {
    /// The execution's id.
    pub exec_id: &'a str,
    /// The subject it is about, if any.
    pub subject: Option<&'a str>,
    /// Its tenant.
    pub tenant: &'a str,
}

impl Units<'_> {
    fn of(&self, unit: Unit) -> Option<&str> {
        match unit {
            Unit::Execution => Some(self.exec_id),
            Unit::Subject => self.subject,
            Unit::Tenant => Some(self.tenant),
        }
    }
}

/// A new execution's arm: what to record and which strategy to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Picked {
    /// For `exec.started`.
    pub assignment: Assignment,
    /// The arm's strategy (by name).
    pub strategy: String,
}

/// Why a registration is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    /// The name is registered with other frozen fields.
    #[error(
        "experiment {name} is {status} (registered {at}): its {fields} were frozen when it was \
         registered and cannot change; stop it and register the change under a new name"
    )]
    Frozen {
        /// The experiment.
        name: String,
        /// `running`, `stopped`, …
        status: &'static str,
        /// When it was registered.
        at: String,
        /// The frozen fields that differ.
        fields: String,
    },
    /// Its layer has no free range that wide.
    #[error(
        "experiment {name}: layer {layer} has no free range of {wanted} buckets ({taken}); lower \
         `traffic`, use another layer, or stop an experiment first"
    )]
    LayerFull {
        /// The experiment.
        name: String,
        /// The layer.
        layer: String,
        /// Buckets wanted.
        wanted: u32,
        /// Who holds the layer.
        taken: String,
    },
    /// It would share traffic with a live experiment it is not mutually exclusive with.
    #[error("experiment {name}: {detail}")]
    Overlap {
        /// The experiment.
        name: String,
        /// With whom, and what to do.
        detail: String,
    },
}

/// What registering would do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Registration {
    /// Append `experiment.registered` with this layer range.
    New {
        /// First bucket.
        from: u32,
        /// One past the last.
        to: u32,
    },
    /// The same experiment is already registered: nothing to append.
    Unchanged,
}

/// Every experiment registered on a store.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Experiments {
    /// By name.
    pub by_name: BTreeMap<String, Registered>,
}

/// `u64(sha256(salt ‖ 0x00 ‖ unit)[0..8])`, big-endian.
pub fn unit_hash(salt: &str, unit: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update([0u8]);
    h.update(unit.as_bytes());
    let d = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&d[..8]);
    u64::from_be_bytes(first)
}

/// The unit's bucket for `salt`, in `0..10 000`.
pub fn bucket(salt: &str, unit: &str) -> u32 {
    // The remainder is below 10 000, so it fits.
    (unit_hash(salt, unit) % u64::from(BUCKETS)) as u32
}

/// The layer's salt.
fn layer_salt(layer: &str) -> String {
    format!("layer:{layer}")
}

/// The arm owning `bucket`: arms own consecutive ranges, in the order listed, sized by weight.
pub fn arm_of(e: &Experiment, bucket: u32) -> Option<&super::Arm> {
    let total: u64 = e.arms.iter().map(|a| u64::from(a.weight)).sum();
    if total == 0 {
        return None;
    }
    let mut cum = 0u64;
    for a in &e.arms {
        cum += u64::from(a.weight);
        if u64::from(bucket) * total < cum * u64::from(BUCKETS) {
            return Some(a);
        }
    }
    e.arms.last()
}

impl Experiments {
    /// Folds one control event in (others are ignored); `at` is the event's time.
    pub fn apply(&mut self, payload: &Payload, at: DateTime<Utc>) {
        match payload {
            Payload::ExperimentRegistered(r) => {
                self.by_name
                    .entry(r.experiment.name.clone())
                    .or_insert_with(|| Registered {
                        experiment: r.experiment.clone(),
                        layer_range: (r.layer_from, r.layer_to),
                        registered_at: at,
                        by: r.by.clone(),
                        status: Status::Running,
                        stopped_arms: BTreeSet::new(),
                        breached: BTreeSet::new(),
                    });
            }
            Payload::ExperimentStopped(s) => {
                if let Some(x) = self.by_name.get_mut(&s.name) {
                    match &s.arm {
                        Some(arm) => {
                            x.stopped_arms.insert(arm.clone());
                        }
                        None if x.status == Status::Running => {
                            x.status = Status::Stopped {
                                reason: s.reason.clone(),
                                by: s.by.clone(),
                            };
                        }
                        None => {}
                    }
                }
            }
            Payload::GuardrailBreached(g) => {
                if let Some(x) = self.by_name.get_mut(&g.name) {
                    x.breached
                        .insert((g.arm.clone(), g.guardrail.metric.as_str()));
                }
            }
            Payload::ExperimentConcluded(c) => {
                if let Some(x) = self.by_name.get_mut(&c.name) {
                    x.status = Status::Concluded {
                        decision: c.decision.clone(),
                        by: c.by.clone(),
                    };
                }
            }
            _ => {}
        }
    }

    /// What registering `e` at `now` would do, or why it is refused.
    pub fn register(
        &self,
        e: &Experiment,
        now: DateTime<Utc>,
    ) -> Result<Registration, RegisterError> {
        if let Some(x) = self.by_name.get(&e.name) {
            let fields = x.experiment.differences(e);
            if fields.is_empty() {
                return Ok(Registration::Unchanged);
            }
            return Err(RegisterError::Frozen {
                name: e.name.clone(),
                status: x.status_word(now),
                at: x.registered_at.to_rfc3339(),
                fields: fields.join(", "),
            });
        }
        let live: Vec<&Registered> = self.by_name.values().filter(|x| x.live_at(now)).collect();
        for x in &live {
            let o = &x.experiment;
            let shared = match (&o.tenants, &e.tenants) {
                (Some(a), Some(b)) => a.iter().any(|t| b.contains(t)),
                _ => true,
            };
            if o.layer != e.layer && shared {
                return Err(RegisterError::Overlap {
                    name: e.name.clone(),
                    detail: format!(
                        "experiment {} (layer {}) runs on the same tenants' traffic; an execution \
                         runs one strategy, so put both in one layer (mutually exclusive) or give \
                         them disjoint `tenants`",
                        o.name, o.layer
                    ),
                });
            }
            if o.layer == e.layer && o.unit != e.unit {
                return Err(RegisterError::Overlap {
                    name: e.name.clone(),
                    detail: format!(
                        "layer {} is split by {} (experiment {}); experiments of one layer share \
                         their unit",
                        e.layer,
                        o.unit.as_str(),
                        o.name
                    ),
                });
            }
        }
        let mut taken: Vec<(u32, u32, &str)> = live
            .iter()
            .filter(|x| x.experiment.layer == e.layer)
            .map(|x| (x.layer_range.0, x.layer_range.1, x.experiment.name.as_str()))
            .collect();
        taken.sort();
        let mut from = 0u32;
        for (a, b, _) in &taken {
            if a.saturating_sub(from) >= e.traffic_buckets {
                break;
            }
            from = from.max(*b);
        }
        if BUCKETS.saturating_sub(from) < e.traffic_buckets {
            return Err(RegisterError::LayerFull {
                name: e.name.clone(),
                layer: e.layer.clone(),
                wanted: e.traffic_buckets,
                taken: taken
                    .iter()
                    .map(|(a, b, n)| format!("{n} holds {a}..{b}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        Ok(Registration::New {
            from,
            to: from + e.traffic_buckets,
        })
    }

    /// The tier cap on `strategy_version` while it is a new arm (not the holdback) of a running
    /// experiment: the lowest cap of those experiments. Certification lifts it (see
    /// [`crate::control::ControlState::max_autonomous_tier`]).
    pub fn tier_cap(&self, strategy_version: &str) -> Option<u8> {
        let name = strategy_version.split('/').next().unwrap_or_default();
        self.by_name
            .values()
            .filter(|x| x.status == Status::Running)
            .filter(|x| {
                x.experiment
                    .arms
                    .iter()
                    .any(|a| !a.holdback && a.strategy == name)
            })
            .map(|x| x.experiment.tier_cap)
            .min()
    }

    /// The arm a new execution of `tenant` runs at `now`, if an experiment takes it: the first
    /// layer (by name) whose hash lands the unit in an assigning experiment's range.
    pub fn assign(&self, units: &Units<'_>, now: DateTime<Utc>) -> Option<Picked> {
        let mut layers: BTreeMap<&str, Vec<&Registered>> = BTreeMap::new();
        for x in self.by_name.values() {
            if x.assigns_at(now) && x.experiment.covers(units.tenant) {
                layers
                    .entry(x.experiment.layer.as_str())
                    .or_default()
                    .push(x);
            }
        }
        for (layer, xs) in layers {
            for x in xs {
                let e = &x.experiment;
                let Some(unit) = units.of(e.unit) else {
                    continue;
                };
                let lb = bucket(&layer_salt(layer), unit);
                if !(x.layer_range.0 <= lb && lb < x.layer_range.1) {
                    continue;
                }
                let h = unit_hash(&e.salt, unit);
                let b = (h % u64::from(BUCKETS)) as u32;
                let mut arm = arm_of(e, b)?;
                if x.stopped_arms.contains(&arm.name) {
                    arm = e.holdback()?;
                }
                return Some(Picked {
                    assignment: Assignment {
                        experiment: e.name.clone(),
                        arm: arm.name.clone(),
                        bucket: b,
                        unit_key: format!("{h:016x}"),
                    },
                    strategy: arm.strategy.clone(),
                });
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::{Arm, ExperimentRegistered, ExperimentStopped, Metric};

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn exp(name: &str, unit: Unit, weights: &[u32]) -> Experiment {
        Experiment {
            name: name.into(),
            salt: name.into(),
            unit,
            arms: weights
                .iter()
                .enumerate()
                .map(|(i, w)| Arm {
                    name: format!("arm{i}"),
                    strategy: format!("s{i}"),
                    weight: *w,
                    holdback: i == 0,
                })
                .collect(),
            primary_metric: Metric::CostPerSuccess,
            guardrails: vec![],
            min_sample: 10,
            start: t("2026-01-01T00:00:00Z"),
            end: t("2026-02-01T00:00:00Z"),
            layer: "default".into(),
            traffic_buckets: BUCKETS,
            tenants: None,
            tier_cap: 1,
        }
    }

    fn registered(xs: &mut Experiments, e: Experiment) {
        let Registration::New { from, to } = xs.register(&e, t("2026-01-02T00:00:00Z")).unwrap()
        else {
            panic!("not new")
        };
        xs.apply(
            &Payload::ExperimentRegistered(ExperimentRegistered {
                experiment: e,
                layer_from: from,
                layer_to: to,
                by: "test".into(),
            }),
            t("2026-01-01T00:00:00Z"),
        );
    }

    fn units(i: usize) -> (String, String) {
        (format!("exec-{i}"), format!("subject-{i}"))
    }

    #[test]
    fn hash_vectors_are_stable() {
        // Pinned (computed with Python's hashlib): any other implementation, or a later Keel,
        // must bucket units identically, or running experiments would move their units.
        assert_eq!(
            unit_hash("support-prompts", "cust-42"),
            0x8ab3_e8d7_9845_b0b4
        );
        assert_eq!(bucket("support-prompts", "cust-42"), 9_316);
        assert_eq!(bucket("exp", "unit-1"), 4_522);
        assert_eq!(bucket(&layer_salt("default"), "acme"), 2_801);
    }

    #[test]
    fn assigned_shares_match_the_weights() {
        // 20 000 execution units (ids fixed by a seed of 7), weights 2:3:5. A chi-square test
        // at p = 0.001 (2 degrees of freedom: 13.82) rejects a wrong split, and would fail
        // once in a thousand seeds for a right one; this seed is fixed, so the test is stable.
        let mut xs = Experiments::default();
        registered(&mut xs, exp("w", Unit::Execution, &[2, 3, 5]));
        let now = t("2026-01-10T00:00:00Z");
        let mut seen = [0f64; 3];
        let mut state = 7u64;
        for _ in 0..20_000 {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            let id = format!("{state:016x}");
            let p = xs
                .assign(
                    &Units {
                        exec_id: &id,
                        subject: None,
                        tenant: "t",
                    },
                    now,
                )
                .unwrap();
            let i: usize = p.assignment.arm.trim_start_matches("arm").parse().unwrap();
            seen[i] += 1.0;
            assert_eq!(p.strategy, format!("s{i}"));
        }
        let expected = [4_000.0, 6_000.0, 10_000.0];
        let chi2: f64 = seen
            .iter()
            .zip(expected)
            .map(|(o, e)| (o - e) * (o - e) / e)
            .sum();
        assert!(chi2 < 13.82, "chi2 {chi2} for {seen:?}");
    }

    #[test]
    fn weights_split_the_buckets_in_order() {
        let e = exp("e", Unit::Execution, &[1, 3]);
        assert_eq!(arm_of(&e, 0).unwrap().name, "arm0");
        assert_eq!(arm_of(&e, 2_499).unwrap().name, "arm0");
        assert_eq!(arm_of(&e, 2_500).unwrap().name, "arm1");
        assert_eq!(arm_of(&e, 9_999).unwrap().name, "arm1");
    }

    #[test]
    fn assignment_is_sticky_and_holdback_units_stay_there() {
        let mut xs = Experiments::default();
        registered(&mut xs, exp("e", Unit::Subject, &[1, 1]));
        let now = t("2026-01-10T00:00:00Z");
        for i in 0..200 {
            let (ex, s) = units(i);
            let u = Units {
                exec_id: &ex,
                subject: Some(&s),
                tenant: "acme",
            };
            let first = xs.assign(&u, now).unwrap();
            // Another execution about the same subject, later: the same arm.
            let again = xs
                .assign(
                    &Units {
                        exec_id: "another",
                        ..u
                    },
                    t("2026-01-20T00:00:00Z"),
                )
                .unwrap();
            assert_eq!(first, again);
        }
        // No subject: not in a subject experiment.
        let u = Units {
            exec_id: "x",
            subject: None,
            tenant: "acme",
        };
        assert_eq!(xs.assign(&u, now), None);
        // Outside the window: nothing.
        let u = Units {
            exec_id: "x",
            subject: Some("s"),
            tenant: "acme",
        };
        assert_eq!(xs.assign(&u, t("2026-02-01T00:00:00Z")), None);
        assert_eq!(xs.assign(&u, t("2025-12-31T00:00:00Z")), None);
    }

    #[test]
    fn a_stopped_arm_returns_its_units_to_the_holdback_only() {
        let mut xs = Experiments::default();
        registered(&mut xs, exp("e", Unit::Execution, &[1, 1]));
        let now = t("2026-01-10T00:00:00Z");
        let before: Vec<_> = (0..100)
            .map(|i| {
                let (ex, _) = units(i);
                xs.assign(
                    &Units {
                        exec_id: &ex,
                        subject: None,
                        tenant: "t",
                    },
                    now,
                )
                .unwrap()
            })
            .collect();
        xs.apply(
            &Payload::ExperimentStopped(ExperimentStopped {
                name: "e".into(),
                arm: Some("arm1".into()),
                reason: "guardrail".into(),
                by: "test".into(),
            }),
            now,
        );
        for (i, b) in before.iter().enumerate() {
            let (ex, _) = units(i);
            let after = xs
                .assign(
                    &Units {
                        exec_id: &ex,
                        subject: None,
                        tenant: "t",
                    },
                    now,
                )
                .unwrap();
            assert_eq!(after.assignment.arm, "arm0");
            assert_eq!(after.assignment.bucket, b.assignment.bucket);
        }
    }

    #[test]
    fn a_registered_experiment_is_frozen() {
        let mut xs = Experiments::default();
        let e = exp("e", Unit::Subject, &[1, 1]);
        registered(&mut xs, e.clone());
        let now = t("2026-01-10T00:00:00Z");
        assert_eq!(xs.register(&e, now), Ok(Registration::Unchanged));
        let mut changed = e.clone();
        changed.primary_metric = Metric::SuccessRate;
        changed.arms[1].weight = 3;
        let err = xs.register(&changed, now).unwrap_err().to_string();
        assert!(err.contains("experiment e is running"), "{err}");
        assert!(err.contains("arms, primary_metric were frozen"), "{err}");
    }

    #[test]
    fn one_layer_is_split_between_its_experiments() {
        let mut xs = Experiments::default();
        let now = t("2026-01-10T00:00:00Z");
        let mut a = exp("a", Unit::Execution, &[1, 1]);
        a.traffic_buckets = 4_000;
        registered(&mut xs, a);
        let mut b = exp("b", Unit::Execution, &[1, 1]);
        b.traffic_buckets = 6_000;
        registered(&mut xs, b);
        let mut c = exp("c", Unit::Execution, &[1, 1]);
        c.traffic_buckets = 1;
        assert!(matches!(
            xs.register(&c, now),
            Err(RegisterError::LayerFull { .. })
        ));
        c.layer = "other".into();
        assert!(matches!(
            xs.register(&c, now),
            Err(RegisterError::Overlap { .. })
        ));
        c.tenants = Some(vec!["solo".into()]);
        c.layer = "default".into();
        assert!(xs.register(&c, now).is_err(), "still the same traffic");
        // Each unit is in exactly one of them, at about the share of its range.
        let mut count = BTreeMap::new();
        for i in 0..10_000 {
            let (ex, _) = units(i);
            let p = xs
                .assign(
                    &Units {
                        exec_id: &ex,
                        subject: None,
                        tenant: "t",
                    },
                    now,
                )
                .unwrap();
            *count.entry(p.assignment.experiment).or_insert(0) += 1;
        }
        let a = count["a"];
        assert!((3_700..4_300).contains(&a), "{count:?}");
        assert_eq!(count.values().sum::<i32>(), 10_000);
    }
}
