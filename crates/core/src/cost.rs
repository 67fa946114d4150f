//! Cost and token arithmetic. Money is integer micro-dollars so totals are exact; a cost that
//! could not be priced (unknown model, say) is `Unknown`, never zero, and poisons the sum so a
//! total never silently under-reports.

use serde::{Deserialize, Serialize};
use std::ops::Add;

/// A cost in micro-USD, or unknown. On the wire: a number of micro-USD, or `null` when unknown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(from = "Option<u64>", into = "Option<u64>")]
pub enum Cost {
    /// Priced exactly, in micro-USD.
    Known(u64),
    /// Could not be priced; sums involving it are unknown too.
    #[default]
    Unknown,
}

impl Cost {
    /// Zero cost (a step that was priced and cost nothing).
    pub const ZERO: Cost = Cost::Known(0);

    /// The micro-USD amount, if known.
    pub fn micros(self) -> Option<u64> {
        match self {
            Cost::Known(m) => Some(m),
            Cost::Unknown => None,
        }
    }
}

impl From<Option<u64>> for Cost {
    fn from(v: Option<u64>) -> Self {
        v.map_or(Cost::Unknown, Cost::Known)
    }
}

impl From<Cost> for Option<u64> {
    fn from(c: Cost) -> Self {
        c.micros()
    }
}

impl Add for Cost {
    type Output = Cost;
    fn add(self, rhs: Cost) -> Cost {
        match (self, rhs) {
            (Cost::Known(a), Cost::Known(b)) => Cost::Known(a.saturating_add(b)),
            _ => Cost::Unknown,
        }
    }
}

/// Token counts of a model call (or a total of them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Tokens {
    /// Prompt tokens, cached ones included.
    #[serde(rename = "in")]
    pub input: u64,
    /// Completion tokens.
    #[serde(rename = "out")]
    pub output: u64,
}

impl Add for Tokens {
    type Output = Tokens;
    fn add(self, rhs: Tokens) -> Tokens {
        Tokens {
            input: self.input.saturating_add(rhs.input),
            output: self.output.saturating_add(rhs.output),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_cost_poisons_sums() {
        assert_eq!(Cost::Known(2) + Cost::Known(3), Cost::Known(5));
        assert_eq!(Cost::Known(2) + Cost::Unknown, Cost::Unknown);
        assert_eq!(
            serde_json::to_string(&Cost::Unknown).ok().as_deref(),
            Some("null")
        );
    }
}
