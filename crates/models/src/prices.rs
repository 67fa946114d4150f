//! The price table (`prices.toml`): USD per million tokens per model, for input, output and
//! cached input. A cost is computed for every model reply; a model missing from the table costs
//! `Unknown`, never zero, so totals cannot silently under-report.
//!
//! ```toml
//! [models."gpt-4o-mini"]
//! input = 0.15          # USD per 1M input tokens
//! output = 0.60         # USD per 1M output tokens
//! cached_input = 0.075  # optional; defaults to `input`
//! ```

use crate::error::ModelError;
use crate::provider::Usage;
use keel_core::Cost;
use serde::Deserialize;
use std::collections::BTreeMap;

/// Prices of one model, USD per million tokens.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    /// Input tokens.
    pub input: f64,
    /// Output tokens.
    pub output: f64,
    /// Cached input tokens (defaults to `input`).
    #[serde(default)]
    pub cached_input: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    models: BTreeMap<String, ModelPrice>,
}

/// Per-model prices.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PriceTable {
    models: BTreeMap<String, ModelPrice>,
}

impl PriceTable {
    /// Parses `prices.toml` text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self, ModelError> {
        let parsed: File = toml::from_str(text).map_err(|e| ModelError::Config {
            file: file.to_owned(),
            detail: e.to_string().trim().to_owned(),
        })?;
        for (model, p) in &parsed.models {
            for (field, v) in [
                ("input", Some(p.input)),
                ("output", Some(p.output)),
                ("cached_input", p.cached_input),
            ] {
                if let Some(v) = v
                    && !(v.is_finite() && v >= 0.0)
                {
                    return Err(ModelError::Config {
                        file: file.to_owned(),
                        detail: format!(
                            "models.{model}.{field}: price must be a non-negative number, found {v}"
                        ),
                    });
                }
            }
        }
        Ok(Self {
            models: parsed.models,
        })
    }

    /// Reads and parses a `prices.toml` file.
    pub fn load(path: &std::path::Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::Config {
            file: path.display().to_string(),
            detail: e.to_string(),
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// The price of `model`, if listed.
    pub fn get(&self, model: &str) -> Option<&ModelPrice> {
        self.models.get(model)
    }

    /// The cost of one reply. USD per million tokens is micro-USD per token, so the arithmetic is
    /// a weighted sum rounded once to the nearest micro-dollar.
    pub fn cost(&self, model: &str, usage: &Usage) -> Cost {
        let Some(p) = self.models.get(model) else {
            return Cost::Unknown;
        };
        let cached = usage.cached_input.min(usage.input);
        let micros = (usage.input - cached) as f64 * p.input
            + cached as f64 * p.cached_input.unwrap_or(p.input)
            + usage.output as f64 * p.output;
        Cost::Known(micros.round() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = r#"
        [models."gpt-4o-mini"]
        input = 0.15
        output = 0.60
        cached_input = 0.075
        [models."claude-sonnet-4-5"]
        input = 3.0
        output = 15.0
    "#;

    #[test]
    fn costs_are_exact_micro_dollars() {
        let t = PriceTable::parse(TABLE, "prices.toml").unwrap();
        let u = Usage {
            input: 1_000_000,
            output: 100_000,
            cached_input: 200_000,
        };
        // 800k × 0.15 + 200k × 0.075 + 100k × 0.60 = 120 000 + 15 000 + 60 000
        assert_eq!(t.cost("gpt-4o-mini", &u), Cost::Known(195_000));
        let u = Usage {
            input: 1200,
            output: 300,
            cached_input: 0,
        };
        assert_eq!(t.cost("claude-sonnet-4-5", &u), Cost::Known(3600 + 4500));
    }

    #[test]
    fn an_unknown_model_costs_unknown_not_zero() {
        let t = PriceTable::parse(TABLE, "prices.toml").unwrap();
        assert_eq!(
            t.cost(
                "gpt-9",
                &Usage {
                    input: 10,
                    output: 10,
                    cached_input: 0
                }
            ),
            Cost::Unknown
        );
    }

    #[test]
    fn bad_tables_name_the_file_and_field() {
        let err = PriceTable::parse("[models.m]\ninput = 1\noutptu = 2\n", "p.toml").unwrap_err();
        assert!(
            err.to_string().contains("p.toml") && err.to_string().contains("outptu"),
            "{err}"
        );
        let err = PriceTable::parse("[models.m]\ninput = -1\noutput = 2\n", "p.toml").unwrap_err();
        assert!(err.to_string().contains("models.m.input"), "{err}");
    }
}
