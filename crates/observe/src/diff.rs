//! A step-by-step diff of two executions (what `keel replay` prints): per step, the memory
//! retrieved, the plan, the tool calls with their arguments and statuses, the gates, tokens and cost; then the totals and
//! the outcome. Pure: it reads two event lists and returns rows.

use keel_core::payload::{Payload, ToolStatus};
use keel_core::{Cost, Event, ExecutionState};
use serde::Serialize;
use std::collections::BTreeMap;

/// What one step did, reduced to the parts worth comparing.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct StepView {
    /// The plan text of the step, if any.
    pub plan: Option<String>,
    /// `memory <version>: id (score), …` per retrieval.
    pub memory: Vec<String>,
    /// `tool(args) → status` per call, in order.
    pub calls: Vec<String>,
    /// `gate tool → verdict` per gate.
    pub gates: Vec<String>,
    /// Tokens in + out of the step's model calls.
    pub tokens: u64,
    /// The step's cost in micro-USD (model + tools); `None` when unknown.
    pub cost_micros: Option<u64>,
}

/// One step of the diff.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StepDiff {
    /// Step number.
    pub step_n: u32,
    /// The original's step (absent if it had fewer steps).
    pub before: Option<StepView>,
    /// The replay's step.
    pub after: Option<StepView>,
    /// True when the plan, calls or gates differ.
    pub changed: bool,
}

/// Totals of one execution.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Totals {
    /// Outcome word (`success`, `failure`, …) or status while unfinished.
    pub outcome: String,
    /// Steps completed.
    pub steps: u32,
    /// Tokens in + out.
    pub tokens: u64,
    /// Cost in micro-USD, if known.
    pub cost_micros: Option<u64>,
    /// The final answer or error detail.
    pub detail: Option<String>,
}

/// The diff of two executions.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ExecDiff {
    /// Per step, in order.
    pub steps: Vec<StepDiff>,
    /// The original's totals.
    pub before: Totals,
    /// The replay's totals.
    pub after: Totals,
}

fn status_word(s: ToolStatus) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn steps(events: &[Event]) -> BTreeMap<u32, StepView> {
    let mut out: BTreeMap<u32, (StepView, Cost)> = BTreeMap::new();
    let mut pending: BTreeMap<String, String> = BTreeMap::new();
    for e in events {
        let (v, cost) = out
            .entry(e.step_n)
            .or_insert((StepView::default(), Cost::ZERO));
        match &e.payload {
            Payload::PlanProposed(p) => v.plan = Some(p.steps.join(" / ")),
            Payload::MemoryRetrieved(m) => {
                let chunks: Vec<String> = m
                    .chunks
                    .iter()
                    .map(|c| {
                        let text = c.provenance.get("fact").and_then(|f| f.as_str());
                        match text {
                            Some(t) => format!("{} {t:?} ({:.2})", c.id, c.score),
                            None => format!("{} ({:.2})", c.id, c.score),
                        }
                    })
                    .collect();
                let version = m
                    .memory_version
                    .rsplit_once('#')
                    .map_or(m.memory_version.as_str(), |(_, v)| v);
                v.memory
                    .push(format!("memory {version}: {}", chunks.join(", ")));
            }
            Payload::ModelResponded(r) => {
                v.tokens += r.tokens.input + r.tokens.output;
                *cost = *cost + r.cost;
            }
            Payload::ToolCalled(c) => {
                pending.insert(c.call_id.clone(), format!("{}({})", c.tool, c.args));
            }
            Payload::ToolResult(r) => {
                let call = pending
                    .remove(&r.call_id)
                    .unwrap_or_else(|| format!("{}(?)", r.tool));
                v.calls.push(format!("{call} → {}", status_word(r.status)));
                *cost = *cost + r.actual_cost;
            }
            Payload::GateDecided(d) => {
                let verdict = serde_json::to_value(d.verdict)
                    .ok()
                    .and_then(|x| x.as_str().map(str::to_owned))
                    .unwrap_or_default();
                v.gates.push(format!("gate → {verdict}"));
            }
            _ => {}
        }
    }
    out.into_iter()
        // Steps with nothing to show (the final, step-less finish) are dropped.
        .filter(|(_, (v, _))| {
            v.plan.is_some()
                || !v.memory.is_empty()
                || !v.calls.is_empty()
                || v.tokens > 0
                || !v.gates.is_empty()
        })
        .map(|(n, (mut v, cost))| {
            v.cost_micros = cost.micros();
            (n, v)
        })
        .collect()
}

fn totals(events: &[Event]) -> Totals {
    let state = ExecutionState::fold(events).unwrap_or_default();
    let mut t = Totals {
        outcome: state.status.to_string(),
        steps: state.totals.steps,
        tokens: state.totals.tokens.input + state.totals.tokens.output,
        cost_micros: state.totals.cost.micros(),
        detail: None,
    };
    for e in events {
        if let Payload::ExecFinished(f) = &e.payload {
            t.outcome = serde_json::to_value(f.outcome)
                .ok()
                .and_then(|x| x.as_str().map(str::to_owned))
                .unwrap_or_default();
            t.detail = f.detail.clone();
        }
    }
    t
}

/// Diffs two executions' events (each in seq order).
pub fn diff(before: &[Event], after: &[Event]) -> ExecDiff {
    let a = steps(before);
    let b = steps(after);
    let keys: std::collections::BTreeSet<u32> = a.keys().chain(b.keys()).copied().collect();
    let steps = keys
        .into_iter()
        .map(|n| {
            let (x, y) = (a.get(&n).cloned(), b.get(&n).cloned());
            let changed = match (&x, &y) {
                (Some(x), Some(y)) => {
                    x.plan != y.plan
                        || x.memory != y.memory
                        || x.calls != y.calls
                        || x.gates != y.gates
                }
                _ => true,
            };
            StepDiff {
                step_n: n,
                before: x,
                after: y,
                changed,
            }
        })
        .collect();
    ExecDiff {
        steps,
        before: totals(before),
        after: totals(after),
    }
}

fn dollars(m: Option<u64>) -> String {
    m.map_or("unknown".into(), |m| format!("${:.6}", m as f64 / 1e6))
}

impl ExecDiff {
    /// Renders the diff for a terminal: `-` lines are the original, `+` the replay, unchanged
    /// steps are shown once.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let view = |prefix: &str, v: &StepView, out: &mut String| {
            for m in &v.memory {
                out.push_str(&format!("  {prefix} {m}\n"));
            }
            if let Some(p) = &v.plan {
                out.push_str(&format!("  {prefix} plan: {p}\n"));
            }
            for c in &v.calls {
                out.push_str(&format!("  {prefix} call: {c}\n"));
            }
            for g in &v.gates {
                out.push_str(&format!("  {prefix} {g}\n"));
            }
            out.push_str(&format!(
                "  {prefix} tokens {}  cost {}\n",
                v.tokens,
                dollars(v.cost_micros)
            ));
        };
        for s in &self.steps {
            let mark = if s.changed { "changed" } else { "same" };
            out.push_str(&format!("step {} ({mark})\n", s.step_n));
            match (&s.before, &s.after, s.changed) {
                (Some(a), Some(_), false) => view(" ", a, &mut out),
                (a, b, _) => {
                    match a {
                        Some(a) => view("-", a, &mut out),
                        None => out.push_str("  - (no such step)\n"),
                    }
                    match b {
                        Some(b) => view("+", b, &mut out),
                        None => out.push_str("  + (no such step)\n"),
                    }
                }
            }
        }
        let t = |p: &str, t: &Totals| {
            format!(
                "{p} outcome {}  steps {}  tokens {}  cost {}{}\n",
                t.outcome,
                t.steps,
                t.tokens,
                dollars(t.cost_micros),
                t.detail
                    .as_ref()
                    .map(|d| format!("  answer: {d}"))
                    .unwrap_or_default()
            )
        };
        out.push_str("totals\n");
        out.push_str(&t("  -", &self.before));
        out.push_str(&t("  +", &self.after));
        out
    }
}
