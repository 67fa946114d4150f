//! Distillation as a metered step, through the `keel` binary as users run it (real spine, real
//! MiniLM memory, the scripted model): the distillation's model call is recorded like any other
//! and counted in `exec.finished` and `gold.executions`; a distiller that fails still lets the
//! answer finish the execution, with the failure as a `memory.distill_failed` event and no
//! further model call (issue 13, item 3).

#![allow(clippy::unwrap_used)]

mod common;
use common::{events, keel_in_repo as keel, ok, repo};

use serde_json::Value;
use std::path::{Path, PathBuf};

/// `keel run --json` of strategy `support-memory` from `strategies` for tenant acme.
fn run(data: &Path, strategies: &Path, goal: &str) -> Value {
    let args = [
        "run",
        "--json",
        "--strategy",
        "support-memory",
        "--strategies",
        strategies.to_str().unwrap(),
        "--tenant",
        "acme",
        goal,
    ];
    serde_json::from_str(&ok(keel(data, &args))).unwrap()
}

fn of_type<'a>(events: &'a [Value], ty: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == ty).collect()
}

/// The sums of every `model.responded`'s tokens, and the cost of every model and tool call.
fn metered(events: &[Value]) -> (u64, u64, u64) {
    let tools: u64 = of_type(events, "tool.result")
        .iter()
        .map(|e| e["data"]["actual_cost"].as_u64().unwrap())
        .sum();
    of_type(events, "model.responded")
        .iter()
        .fold((0, 0, tools), |(i, o, c), e| {
            let d = &e["data"];
            (
                i + d["tokens"]["in"].as_u64().unwrap(),
                o + d["tokens"]["out"].as_u64().unwrap(),
                c + d["cost"].as_u64().unwrap_or(0),
            )
        })
}

const GOAL: &str = "Where is order A-1001? Please always send me updates by e-mail.";

#[test]
fn a_distilling_executions_totals_include_the_distillation_call() {
    let tmp = tempfile::tempdir().unwrap();
    let exec = run(tmp.path(), &repo().join("strategies/memory"), GOAL);
    let events = events(tmp.path(), &exec);
    let distill: Vec<_> = of_type(&events, "model.called")
        .into_iter()
        .filter(|e| e["data"]["prompt_version"] == "distill-v1")
        .collect();
    assert_eq!(
        distill.len(),
        1,
        "one metered distillation call: {events:#?}"
    );
    let call_id = distill[0]["data"]["call_id"].as_str().unwrap();
    let reply = of_type(&events, "model.responded")
        .into_iter()
        .find(|e| e["data"]["call_id"] == call_id)
        .unwrap();
    assert!(reply["data"]["tokens"]["in"].as_u64().unwrap() > 0);
    assert!(reply["data"]["cost"].as_u64().unwrap() > 0, "{reply:#}");
    assert_eq!(of_type(&events, "memory.written").len(), 1);

    let finished = of_type(&events, "exec.finished")[0]["data"].clone();
    let (tokens_in, tokens_out, cost) = metered(&events);
    assert_eq!(finished["tokens"]["in"].as_u64(), Some(tokens_in));
    assert_eq!(finished["tokens"]["out"].as_u64(), Some(tokens_out));
    assert_eq!(finished["cost"].as_u64(), Some(cost));
    assert_eq!(finished["outcome"], "success", "{finished:#}");

    let id = exec["exec_id"].as_str().unwrap();
    let sql = format!(
        "SELECT tokens_in, tokens_out, cost_micros, model_calls FROM gold.executions WHERE exec_id = '{id}'"
    );
    let rows = ok(keel(tmp.path(), &["sql", &sql, "--format", "json"]));
    let rows: Value = serde_json::from_str(&rows).unwrap();
    let row = &rows.as_array().unwrap()[0];
    assert_eq!(row["tokens_in"].as_u64(), Some(tokens_in), "{rows}");
    assert_eq!(row["tokens_out"].as_u64(), Some(tokens_out), "{rows}");
    assert_eq!(row["cost_micros"].as_u64(), Some(cost), "{rows}");
    let calls = of_type(&events, "model.called").len() as u64;
    assert_eq!(row["model_calls"].as_u64(), Some(calls), "{rows}");
}

/// A copy of the memory strategy whose script's distillation rule replies with `then`.
fn failing_distiller(dir: &Path, then: &str) -> PathBuf {
    let script = std::fs::read_to_string(repo().join("models/support.yaml")).unwrap();
    let rules = "rules:\n  - name: distill-broken\n    when: { prompt: '(?i)^distil durable facts' }\n    then: ";
    let script = script.replacen("rules:\n", &format!("{rules}{then}\n"), 1);
    let script_file = dir.join("support.yaml");
    std::fs::write(&script_file, script).unwrap();
    let strategies = dir.join("strategies");
    std::fs::create_dir(&strategies).unwrap();
    let strategy = std::fs::read_to_string(repo().join("strategies/memory/support-memory.yaml"))
        .unwrap()
        .replace("../../prompts/", &format!("{}/prompts/", repo().display()))
        .replace("../../models/support.yaml", script_file.to_str().unwrap());
    std::fs::write(strategies.join("support-memory.yaml"), strategy).unwrap();
    strategies
}

fn finishes_with_its_answer_despite(then: &str, reason: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let strategies = failing_distiller(tmp.path(), then);
    let data = tmp.path().join("store");
    let exec = run(&data, &strategies, GOAL);
    let events = events(&data, &exec);
    let finished = of_type(&events, "exec.finished");
    assert_eq!(finished.len(), 1, "{events:#?}");
    let finished = &finished[0]["data"];
    assert_eq!(finished["outcome"], "success", "{finished:#}");
    assert!(
        finished["detail"]
            .as_str()
            .unwrap()
            .starts_with("Order A-1001 is"),
        "{finished:#}"
    );
    let failed = of_type(&events, "memory.distill_failed");
    assert_eq!(failed.len(), 1, "{events:#?}");
    let why = failed[0]["data"]["reason"].as_str().unwrap();
    assert!(why.contains(reason), "{why}");
    assert!(of_type(&events, "memory.written").is_empty());
    // The agent's two steps (look up, answer) and the distillation, each answered, and nothing
    // after: the answer is not asked for again.
    let called = of_type(&events, "model.called");
    let prompts: Vec<&str> = called
        .iter()
        .map(|e| e["data"]["prompt_version"].as_str().unwrap())
        .collect();
    assert_eq!(prompts, ["v1", "v1", "distill-v1"], "{events:#?}");
    assert_eq!(of_type(&events, "model.responded").len(), 3);
    assert_eq!(events.last().unwrap()["type"], "exec.finished");
    let (tokens_in, _, _) = metered(&events);
    assert_eq!(finished["tokens"]["in"].as_u64(), Some(tokens_in));
    // Finished means finished: driving the store again calls no model.
    let strategies = strategies.to_str().unwrap();
    ok(keel(
        &data,
        &["worker", "--once", "--strategies", strategies],
    ));
    assert_eq!(events.len(), self::events(&data, &exec).len());
}

#[test]
fn a_distiller_replying_without_json_still_lets_the_answer_finish() {
    finishes_with_its_answer_despite("{ text: \"I would rather not.\" }", "not the facts JSON");
}

#[test]
fn a_distiller_whose_call_fails_still_lets_the_answer_finish() {
    finishes_with_its_answer_despite(
        "{ malformed: \"the distiller broke\" }",
        "model call failed",
    );
}
