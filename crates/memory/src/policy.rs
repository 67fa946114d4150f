//! The memory policy: TTL and freshness per volatility class, what the PII screen does per kind,
//! and the trust below which a fact waits for review. Deserialises from a strategy's `memory:`
//! section or `keel.toml`; every field has a default.

use crate::error::MemoryError;
use crate::fact::Trust;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// TTL and freshness of one volatility class.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolatilityClass {
    /// After this many days the fact is expired: never retrieved, purged by the sweep.
    pub ttl_days: f64,
    /// After this many days the fact is returned flagged `stale`.
    pub fresh_days: f64,
}

/// What the PII screen does with one kind of match.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PiiRule {
    /// Replace the match by `[<kind>]` and store the fact.
    Redact,
    /// Refuse the whole fact.
    Reject,
}

/// The whole policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryPolicy {
    /// Volatility classes by name.
    pub volatility: BTreeMap<String, VolatilityClass>,
    /// PII rule per kind (`email`, `phone`, `card`, `iban`, `national_id`, `secret`).
    pub pii: BTreeMap<String, PiiRule>,
    /// Facts from sources trusted less than this wait for review.
    pub review_below: Trust,
}

impl Default for MemoryPolicy {
    fn default() -> Self {
        let class = |ttl_days, fresh_days| VolatilityClass {
            ttl_days,
            fresh_days,
        };
        let volatility = BTreeMap::from([
            ("policy".to_owned(), class(7.0, 1.0)),
            ("preference".to_owned(), class(180.0, 60.0)),
            ("account".to_owned(), class(90.0, 30.0)),
            ("stable".to_owned(), class(3650.0, 365.0)),
        ]);
        let pii = BTreeMap::from([
            ("email".to_owned(), PiiRule::Redact),
            ("phone".to_owned(), PiiRule::Redact),
            ("card".to_owned(), PiiRule::Reject),
            ("iban".to_owned(), PiiRule::Reject),
            ("national_id".to_owned(), PiiRule::Reject),
            ("secret".to_owned(), PiiRule::Reject),
        ]);
        MemoryPolicy {
            volatility,
            pii,
            review_below: Trust::Agent,
        }
    }
}

impl MemoryPolicy {
    /// The class named `name`, or a config error naming the known classes.
    pub fn class(&self, name: &str) -> Result<VolatilityClass, MemoryError> {
        self.volatility
            .get(name)
            .copied()
            .ok_or_else(|| MemoryError::Config {
                field: "volatility".into(),
                detail: format!(
                    "unknown volatility class {name:?}; known: {}",
                    self.volatility
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })
    }

    /// The rule for a PII kind; kinds the policy does not name are rejected (fail closed).
    pub fn pii_rule(&self, kind: &str) -> PiiRule {
        self.pii.get(kind).copied().unwrap_or(PiiRule::Reject)
    }

    /// Checks the values (positive, fresh ≤ ttl).
    pub fn validate(&self) -> Result<(), MemoryError> {
        for (name, c) in &self.volatility {
            let ok = c.ttl_days.is_finite()
                && c.ttl_days > 0.0
                && c.fresh_days.is_finite()
                && c.fresh_days >= 0.0
                && c.fresh_days <= c.ttl_days;
            if !ok {
                return Err(MemoryError::Config {
                    field: format!("volatility.{name}"),
                    detail: "need 0 < ttl_days and 0 <= fresh_days <= ttl_days".into(),
                });
            }
        }
        Ok(())
    }
}
