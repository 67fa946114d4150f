//! Metric names and help texts that keel-observe exports (Prometheus text, `/metrics`), in one
//! place so names are never ad-hoc strings in code.

use crate::slo::StrategySlo;

/// A per-strategy gauge: name, help, and how to read it from a strategy's SLOs.
pub type StrategyGauge = (&'static str, &'static str, fn(&StrategySlo) -> Option<f64>);

/// Per-strategy-version SLO gauges.
pub const STRATEGY_GAUGES: &[StrategyGauge] = &[
    (
        "keel_slo_executions",
        "Executions started in the SLO window.",
        |s| Some(s.executions as f64),
    ),
    (
        "keel_slo_outcome_rate",
        "Share of ended executions whose success criteria held.",
        |s| s.outcome_rate,
    ),
    (
        "keel_slo_gate_escalation_rate",
        "Share of ended executions that asked for a gate.",
        |s| s.gate_escalation_rate,
    ),
    (
        "keel_slo_steps_p50",
        "Median step count of ended executions.",
        |s| s.p50_steps,
    ),
    (
        "keel_slo_steps_p95",
        "95th percentile step count of ended executions.",
        |s| s.p95_steps,
    ),
    (
        "keel_slo_tokens_p50",
        "Median tokens (in + out) of ended executions.",
        |s| s.p50_tokens,
    ),
    (
        "keel_slo_tokens_p95",
        "95th percentile tokens (in + out) of ended executions.",
        |s| s.p95_tokens,
    ),
    (
        "keel_slo_cost_per_success_usd",
        "Total cost over successful executions, dollars.",
        |s| s.cost_per_success,
    ),
];

/// Per-contract failure rate.
pub const TOOL_FAILURE_RATE: &str = "keel_slo_tool_failure_rate";
/// Its help text.
pub const TOOL_FAILURE_RATE_HELP: &str = "Share of a contract's tool results that were not ok.";
