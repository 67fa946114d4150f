//! Strategy experiments as data: the pre-registered shape of an experiment (arms with weights, a
//! permanent holdback arm, the unit of assignment, the primary metric, guardrails, the minimum
//! sample and the horizon), parsed once from its file into [`Experiment`], and the events that
//! register, stop and conclude one on the control stream. [`registry`] folds those events and
//! assigns units to arms; nothing here does I/O.
//!
//! ```yaml
//! name: support-prompts
//! unit: subject                 # execution | subject | tenant
//! arms:
//!   - { name: control, strategy: support-short, weight: 50, holdback: true }
//!   - { name: thorough, strategy: support-long, weight: 50 }
//! primary_metric: cost_per_success        # or success_rate
//! guardrails:
//!   - { metric: success_rate, direction: at_least, bound: 0.6 }
//!   - { metric: p95_cost, direction: at_most, bound: 0.05 }
//! min_sample: 100               # finished executions per arm before any verdict
//! start: 2026-11-01T00:00:00Z
//! end: 2026-11-15T00:00:00Z     # the pre-registered horizon: no verdict before it
//! ```

pub mod registry;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Buckets a unit hashes into (per experiment, and per layer).
pub const BUCKETS: u32 = 10_000;

/// Longest experiment, arm or layer name.
pub const MAX_NAME_CHARS: usize = 64;

/// What is randomised: every execution on its own, or everything about one subject or one tenant
/// together (sticky for the experiment's life).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// Each execution (its id).
    Execution,
    /// The data subject an execution is about; executions about no one are not in the experiment.
    Subject,
    /// The tenant.
    Tenant,
}

impl Unit {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Execution => "execution",
            Unit::Subject => "subject",
            Unit::Tenant => "tenant",
        }
    }
}

/// The metric a verdict is taken on. Both are ratios of sums over executions, so both get a
/// delta-method interval.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Total cost over successes (lower wins).
    #[default]
    CostPerSuccess,
    /// Successes over executions (higher wins).
    SuccessRate,
}

impl Metric {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::CostPerSuccess => "cost_per_success",
            Metric::SuccessRate => "success_rate",
        }
    }

    /// True when a smaller value is better.
    pub fn lower_is_better(self) -> bool {
        matches!(self, Metric::CostPerSuccess)
    }
}

/// What a guardrail watches, per arm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuardMetric {
    /// Share of executions that succeeded.
    SuccessRate,
    /// 95th percentile of an execution's cost, USD.
    P95Cost,
    /// 95th percentile of an execution's steps.
    P95Steps,
    /// Rejected gates over gates requested.
    GateRejectionRate,
    /// Mean user feedback rating (1 bad … 5 excellent) over the arm's rated executions.
    MeanFeedback,
}

impl GuardMetric {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            GuardMetric::SuccessRate => "success_rate",
            GuardMetric::P95Cost => "p95_cost",
            GuardMetric::P95Steps => "p95_steps",
            GuardMetric::GateRejectionRate => "gate_rejection_rate",
            GuardMetric::MeanFeedback => "mean_feedback",
        }
    }
}

/// Which side of its bound a guardrail must stay on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// The value must be at least the bound.
    AtLeast,
    /// The value must be at most the bound.
    AtMost,
}

impl Direction {
    /// True when `value` keeps to `bound`.
    pub fn holds(self, value: f64, bound: f64) -> bool {
        match self {
            Direction::AtLeast => value >= bound,
            Direction::AtMost => value <= bound,
        }
    }

    /// `>=` or `<=`.
    pub fn symbol(self) -> &'static str {
        match self {
            Direction::AtLeast => ">=",
            Direction::AtMost => "<=",
        }
    }
}

/// What a breached guardrail does besides recording `experiment.guardrail_breached`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnBreach {
    /// Only the event (people and dashboards act).
    #[default]
    Record,
    /// Stop the arm: its units return to the holdback.
    StopArm,
    /// Demote the arm's strategy version one autonomy tier (until re-certified).
    Demote,
}

impl OnBreach {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            OnBreach::Record => "record",
            OnBreach::StopArm => "stop_arm",
            OnBreach::Demote => "demote",
        }
    }
}

/// A bound an arm must keep.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Guardrail {
    /// What is watched.
    pub metric: GuardMetric,
    /// Which side of the bound is allowed.
    pub direction: Direction,
    /// The bound (USD for `p95_cost`, a share in 0..=1 for the rates).
    pub bound: f64,
    /// What a breach does.
    #[serde(default)]
    pub on_breach: OnBreach,
}

/// `experiment.guardrail_breached` (control stream): an arm crossed a guardrail's bound over at
/// least the minimum sample; `action` says what followed (its own event comes next).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GuardrailBreached {
    /// The experiment.
    pub name: String,
    /// The arm.
    pub arm: String,
    /// The guardrail.
    pub guardrail: Guardrail,
    /// The arm's value.
    pub value: f64,
    /// Finished executions it was computed over.
    pub sample: u64,
}

/// One arm: a strategy and its share of the experiment's traffic.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Arm {
    /// The arm's name (`control`, `thorough`).
    pub name: String,
    /// The strategy (by name) its executions run.
    pub strategy: String,
    /// Relative weight (arms' shares are weight over the sum of weights).
    pub weight: u32,
    /// The permanent holdback: the production strategy, never exposed to the other arms.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub holdback: bool,
}

/// An experiment file as written; [`Experiment::parse`] validates it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentFile {
    name: String,
    #[serde(default)]
    salt: Option<String>,
    unit: Unit,
    arms: Vec<Arm>,
    #[serde(default)]
    primary_metric: Metric,
    #[serde(default)]
    guardrails: Vec<Guardrail>,
    min_sample: u64,
    start: String,
    end: String,
    #[serde(default)]
    layer: Option<String>,
    #[serde(default)]
    traffic: Option<f64>,
    #[serde(default)]
    tenants: Option<Vec<String>>,
    #[serde(default)]
    tier_cap: Option<u8>,
}

/// A validated experiment: everything registration freezes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    /// Unique for the store's life (a stopped experiment's name is not reused).
    pub name: String,
    /// Mixed into the unit's hash; the name unless given.
    pub salt: String,
    /// What is randomised.
    pub unit: Unit,
    /// The arms; exactly one is the holdback.
    pub arms: Vec<Arm>,
    /// The metric the verdict is taken on.
    pub primary_metric: Metric,
    /// Bounds every arm must keep.
    pub guardrails: Vec<Guardrail>,
    /// Finished executions per arm before a verdict.
    pub min_sample: u64,
    /// When assignment begins.
    pub start: DateTime<Utc>,
    /// The pre-registered horizon: assignment stops and a verdict may be given.
    pub end: DateTime<Utc>,
    /// Experiments in one layer are mutually exclusive (each owns a range of its buckets).
    pub layer: String,
    /// Share of the layer's traffic this experiment takes, in buckets (1..=10 000).
    pub traffic_buckets: u32,
    /// The tenants it runs for; every tenant when absent.
    #[serde(default)]
    pub tenants: Option<Vec<String>>,
    /// The highest autonomous tier of the new arms' strategy versions until each is certified
    /// from its production record (`keel strategies certify`); the holdback is not capped.
    #[serde(default = "default_tier_cap")]
    pub tier_cap: u8,
}

fn default_tier_cap() -> u8 {
    1
}

fn check_name(what: &str, name: &str, problems: &mut Vec<String>) {
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        problems.push(format!("{what}: must be 1 to {MAX_NAME_CHARS} characters"));
    } else if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        problems.push(format!(
            "{what}: {name:?} may hold only ASCII letters, digits, '-', '_' and '.'"
        ));
    }
}

fn time(what: &str, text: &str, problems: &mut Vec<String>) -> Option<DateTime<Utc>> {
    match DateTime::parse_from_rfc3339(text) {
        Ok(t) => Some(t.with_timezone(&Utc)),
        Err(e) => {
            problems.push(format!(
                "{what}: {text:?} is not an RFC 3339 time ({e}), e.g. 2026-11-01T00:00:00Z"
            ));
            None
        }
    }
}

impl Experiment {
    /// Validates a file's contents; every problem is reported, one a string, as
    /// `<field path>: <what is wrong>`.
    pub fn parse(f: ExperimentFile) -> Result<Self, Vec<String>> {
        let mut problems = Vec::new();
        check_name("name", &f.name, &mut problems);
        if f.arms.len() < 2 {
            problems.push("arms: give at least two (one of them the holdback)".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, a) in f.arms.iter().enumerate() {
            check_name(&format!("arms[{i}].name"), &a.name, &mut problems);
            if !seen.insert(a.name.as_str()) {
                problems.push(format!("arms[{i}].name: {:?} is used twice", a.name));
            }
            if a.strategy.trim().is_empty() {
                problems.push(format!("arms[{i}].strategy: must name a strategy"));
            }
            if a.weight == 0 || a.weight > BUCKETS {
                problems.push(format!("arms[{i}].weight: must be 1..={BUCKETS}"));
            }
        }
        match f.arms.iter().filter(|a| a.holdback).count() {
            1 => {}
            0 => problems.push(
                "arms: mark exactly one arm `holdback: true` (the production strategy, kept \
                 as a permanent comparison)"
                    .into(),
            ),
            n => problems.push(format!(
                "arms: {n} arms are marked holdback; mark exactly one"
            )),
        }
        for (i, g) in f.guardrails.iter().enumerate() {
            let rate = matches!(
                g.metric,
                GuardMetric::SuccessRate | GuardMetric::GateRejectionRate
            );
            if !g.bound.is_finite() || g.bound < 0.0 || (rate && g.bound > 1.0) {
                problems.push(format!(
                    "guardrails[{i}].bound: {} is not a {}",
                    g.bound,
                    if rate {
                        "share in 0..=1"
                    } else {
                        "non-negative number"
                    }
                ));
            }
        }
        if f.min_sample == 0 {
            problems.push("min_sample: must be at least 1".into());
        }
        let start = time("start", &f.start, &mut problems);
        let end = time("end", &f.end, &mut problems);
        if let (Some(s), Some(e)) = (start, end)
            && e <= s
        {
            problems.push(format!("end: {} is not after start {}", f.end, f.start));
        }
        let layer = f.layer.unwrap_or_else(|| "default".into());
        check_name("layer", &layer, &mut problems);
        let traffic = f.traffic.unwrap_or(1.0);
        let traffic_buckets = if traffic.is_finite() && traffic > 0.0 && traffic <= 1.0 {
            // In 0..=10 000 by the check above, so the conversion cannot truncate wrongly.
            ((traffic * f64::from(BUCKETS)).round() as u32).max(1)
        } else {
            problems.push(format!(
                "traffic: {traffic} is not a share of the layer in (0, 1]"
            ));
            BUCKETS
        };
        if let Some(ts) = &f.tenants
            && (ts.is_empty() || ts.iter().any(|t| t.trim().is_empty()))
        {
            problems.push(
                "tenants: list at least one tenant, none empty (or leave it out for every tenant)"
                    .into(),
            );
        }
        let tier_cap = f.tier_cap.unwrap_or_else(default_tier_cap);
        if tier_cap > 3 {
            problems.push(format!("tier_cap: {tier_cap} is not a tier (0..=3)"));
        }
        if let Some(salt) = &f.salt
            && salt.is_empty()
        {
            problems.push("salt: must not be empty (or leave it out: the name is used)".into());
        }
        match (start, end) {
            (Some(start), Some(end)) if problems.is_empty() => Ok(Self {
                salt: f.salt.unwrap_or_else(|| f.name.clone()),
                name: f.name,
                unit: f.unit,
                arms: f.arms,
                primary_metric: f.primary_metric,
                guardrails: f.guardrails,
                min_sample: f.min_sample,
                start,
                end,
                layer,
                traffic_buckets,
                tenants: f.tenants,
                tier_cap,
            }),
            _ => Err(problems),
        }
    }

    /// The holdback arm (`parse` guarantees exactly one).
    pub fn holdback(&self) -> Option<&Arm> {
        self.arms.iter().find(|a| a.holdback)
    }

    /// The arm by name.
    pub fn arm(&self, name: &str) -> Option<&Arm> {
        self.arms.iter().find(|a| a.name == name)
    }

    /// Whether it runs for `tenant`.
    pub fn covers(&self, tenant: &str) -> bool {
        self.tenants
            .as_ref()
            .is_none_or(|ts| ts.iter().any(|t| t == tenant))
    }

    /// The frozen fields that differ from `other`, by name (what a refused re-registration
    /// names).
    pub fn differences(&self, other: &Experiment) -> Vec<&'static str> {
        let mut d = Vec::new();
        let mut check = |name, same: bool| {
            if !same {
                d.push(name);
            }
        };
        check("arms", self.arms == other.arms);
        check(
            "primary_metric",
            self.primary_metric == other.primary_metric,
        );
        check("guardrails", self.guardrails == other.guardrails);
        check("unit", self.unit == other.unit);
        check("salt", self.salt == other.salt);
        check("min_sample", self.min_sample == other.min_sample);
        check("start", self.start == other.start);
        check("end", self.end == other.end);
        check("layer", self.layer == other.layer);
        check("traffic", self.traffic_buckets == other.traffic_buckets);
        check("tenants", self.tenants == other.tenants);
        check("tier_cap", self.tier_cap == other.tier_cap);
        d
    }
}

/// `experiment.registered` (control stream): the experiment, frozen, and the range of its
/// layer's buckets it owns.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExperimentRegistered {
    /// Everything pre-registered.
    pub experiment: Experiment,
    /// First layer bucket it owns.
    pub layer_from: u32,
    /// One past its last layer bucket.
    pub layer_to: u32,
    /// Who registered it.
    pub by: String,
}

/// `experiment.stopped` (control stream): assignment ends early, for the whole experiment or, with
/// `arm`, for one arm (its units return to the holdback).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExperimentStopped {
    /// The experiment.
    pub name: String,
    /// One arm only, if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arm: Option<String>,
    /// Why.
    pub reason: String,
    /// Who (a person, or a guardrail).
    pub by: String,
}

/// `experiment.concluded` (control stream): a person recorded the decision the readout supports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExperimentConcluded {
    /// The experiment.
    pub name: String,
    /// The decision, in words (`ship thorough`, `keep control`).
    pub decision: String,
    /// Who.
    pub by: String,
}

/// What `exec.started` records about an assigned execution, so resume, replay and every
/// projection read the same arm.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// The experiment.
    pub experiment: String,
    /// The arm.
    pub arm: String,
    /// The unit's bucket in the experiment, 0..10 000.
    pub bucket: u32,
    /// A digest of the unit (16 hex digits), never the unit itself: readouts cluster by it, and a
    /// subject's name never reaches the log in the clear.
    pub unit_key: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(extra: &str) -> Result<Experiment, Vec<String>> {
        let text = format!(
            "{{\"name\":\"e1\",\"unit\":\"subject\",\"min_sample\":10,\
             \"start\":\"2026-01-01T00:00:00Z\",\"end\":\"2026-02-01T00:00:00Z\",\
             \"arms\":[{{\"name\":\"a\",\"strategy\":\"s1\",\"weight\":1,\"holdback\":true}},\
             {{\"name\":\"b\",\"strategy\":\"s2\",\"weight\":1}}]{extra}}}"
        );
        let f: ExperimentFile = serde_json::from_str(&text).map_err(|e| vec![e.to_string()])?;
        Experiment::parse(f)
    }

    #[test]
    fn a_valid_file_gets_its_defaults() {
        let e = file("").unwrap();
        assert_eq!(e.salt, "e1");
        assert_eq!(e.primary_metric, Metric::CostPerSuccess);
        assert_eq!(e.layer, "default");
        assert_eq!(e.traffic_buckets, BUCKETS);
        assert_eq!(e.holdback().map(|a| a.name.as_str()), Some("a"));
        assert!(e.covers("anyone"));
        assert_eq!(e.tier_cap, 1);
    }

    #[test]
    fn every_problem_is_named() {
        let p = file(
            ",\"guardrails\":[{\"metric\":\"success_rate\",\"direction\":\"at_least\",\"bound\":2}],\
             \"traffic\":0,\"tenants\":[]",
        )
        .unwrap_err();
        assert!(
            p.iter().any(|x| x.starts_with("guardrails[0].bound")),
            "{p:?}"
        );
        assert!(p.iter().any(|x| x.starts_with("traffic:")), "{p:?}");
        assert!(p.iter().any(|x| x.starts_with("tenants:")), "{p:?}");
        let text = "{\"name\":\"bad name\",\"unit\":\"tenant\",\"min_sample\":0,\
                    \"start\":\"yesterday\",\"end\":\"2026-02-01T00:00:00Z\",\
                    \"arms\":[{\"name\":\"a\",\"strategy\":\"s\",\"weight\":0}]}";
        let p = Experiment::parse(serde_json::from_str(text).unwrap()).unwrap_err();
        for field in ["name:", "arms:", "arms[0].weight", "min_sample", "start:"] {
            assert!(p.iter().any(|x| x.starts_with(field)), "{field} in {p:?}");
        }
        assert!(p.iter().any(|x| x.contains("holdback")), "{p:?}");
    }

    #[test]
    fn the_horizon_comes_after_the_start() {
        let text = "{\"name\":\"e\",\"unit\":\"tenant\",\"min_sample\":1,\
                    \"start\":\"2026-02-01T00:00:00Z\",\"end\":\"2026-02-01T00:00:00Z\",\
                    \"arms\":[{\"name\":\"a\",\"strategy\":\"s\",\"weight\":1,\"holdback\":true},\
                    {\"name\":\"b\",\"strategy\":\"t\",\"weight\":1}]}";
        let p = Experiment::parse(serde_json::from_str(text).unwrap()).unwrap_err();
        assert!(p[0].starts_with("end:"), "{p:?}");
    }
}
