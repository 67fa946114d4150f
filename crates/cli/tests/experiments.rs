//! Strategy experiments through the `keel` binary as users run it (real spine, the demo's
//! scripted model): registering freezes an experiment and a change is refused; `keel run`
//! without a strategy is assigned an arm, sticky per subject across processes, recorded on
//! `exec.started`; the holdback's subjects only ever run the holdback's strategy; the readout
//! agrees with `keel sql` over `gold.executions`; stopping ends assignment (issue 15).

#![allow(clippy::unwrap_used)]

mod common;
use common::{events, keel_in_repo as keel, ok, repo};

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

fn run(data: &Path, subject: Option<&str>) -> Value {
    let mut args = vec!["run", "--json", "--tenant", "acme"];
    if let Some(s) = subject {
        args.extend(["--subject", s]);
    }
    args.push("Where is my order A-1017?");
    serde_json::from_str(&ok(keel(data, &args))).unwrap()
}

fn fails(out: std::process::Output) -> String {
    assert!(!out.status.success(), "expected a failure");
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn runs_are_assigned_sticky_arms_and_the_readout_agrees_with_sql() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // `keel run` creates the store; before any experiment, the default strategy runs.
    let before = run(&data, Some("cust-0"));
    assert_eq!(before["experiment"], Value::Null);
    assert!(
        before["strategy_version"]
            .as_str()
            .unwrap()
            .starts_with("support-short/")
    );

    let registered = keel(&data, &["experiments", "register"]);
    let msg = String::from_utf8(registered.stderr.clone()).unwrap();
    ok(registered);
    assert!(msg.contains("support-prompts registered (frozen)"), "{msg}");
    // Again, unchanged: a no-op.
    let again = keel(&data, &["experiments", "register"]);
    assert!(
        String::from_utf8(again.stderr.clone())
            .unwrap()
            .contains("unchanged")
    );
    ok(again);
    // A change to the arms or metrics of the running experiment is refused, naming them.
    let text = std::fs::read_to_string(repo().join("experiments/support-prompts.yaml")).unwrap();
    let changed = tmp.path().join("changed.yaml");
    std::fs::write(
        &changed,
        text.replace("weight: 50 }", "weight: 90 }").replace(
            "primary_metric: cost_per_success",
            "primary_metric: success_rate",
        ),
    )
    .unwrap();
    let err = fails(keel(
        &data,
        &["experiments", "register", changed.to_str().unwrap()],
    ));
    assert!(
        err.contains("experiment support-prompts is running")
            && err.contains("arms, primary_metric were frozen when it was registered"),
        "{err}"
    );
    // A malformed file names its field.
    let bad = tmp.path().join("bad.yaml");
    std::fs::write(&bad, text.replace("unit: subject", "unit: customer")).unwrap();
    let err = fails(keel(
        &data,
        &["experiments", "register", bad.to_str().unwrap()],
    ));
    assert!(err.contains("bad.yaml") && err.contains("unit"), "{err}");

    // Eight customers, twice each, every run its own process (a restart in between).
    let mut arm_of: BTreeMap<String, (String, u64)> = BTreeMap::new();
    for round in 0..2 {
        for i in 0..8 {
            let subject = format!("cust-{i}");
            let out = run(&data, Some(&subject));
            let x = &out["experiment"];
            assert_eq!(x["experiment"], "support-prompts", "{out}");
            let arm = x["arm"].as_str().unwrap().to_owned();
            let bucket = x["bucket"].as_u64().unwrap();
            // The holdback's customers run the holdback's strategy, and only they do.
            let version = out["strategy_version"].as_str().unwrap();
            let expected = if arm == "control" {
                "support-short/"
            } else {
                "support-long/"
            };
            assert!(version.starts_with(expected), "{arm}: {version}");
            // The arm is recorded on exec.started, and the subject is not (a digest is).
            let started = &events(&data, &out)[0];
            assert_eq!(started["data"]["experiment"], *x);
            assert!(!started.to_string().contains(&subject));
            match arm_of.get(&subject) {
                None => {
                    assert_eq!(round, 0);
                    arm_of.insert(subject, (arm, bucket));
                }
                Some(first) => assert_eq!(*first, (arm, bucket), "sticky"),
            }
        }
    }
    let arms: std::collections::BTreeSet<&str> = arm_of.values().map(|(a, _)| a.as_str()).collect();
    assert_eq!(arms.len(), 2, "both arms drawn: {arm_of:?}");
    // About no one: a subject experiment does not take it; the default strategy runs.
    assert_eq!(run(&data, None)["experiment"], Value::Null);

    // The readout counts what gold.executions holds, as `keel sql` sees it.
    let r: Value = serde_json::from_str(&ok(keel(
        &data,
        &["experiments", "readout", "support-prompts", "--json"],
    )))
    .unwrap();
    let sql: Value = serde_json::from_str(&ok(keel(
        &data,
        &[
            "sql",
            "--format",
            "json",
            "SELECT experiment_arm, COUNT(*) AS n, COUNT(DISTINCT experiment_unit) AS units, \
             AVG(outcome_success) AS sr, \
             SUM(total_cost) / NULLIF(SUM(outcome_success), 0) AS cps, \
             APPROX_PERCENTILE(total_cost, 0.95) AS p95 \
             FROM gold.executions WHERE experiment = 'support-prompts' GROUP BY 1 ORDER BY 1",
        ],
    )))
    .unwrap();
    let rows = sql.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{sql}");
    let mut total = 0;
    for row in rows {
        let arm = r["arms"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["arm"] == row["experiment_arm"])
            .unwrap();
        assert_eq!(arm["executions"], row["n"], "{arm} vs {row}");
        assert_eq!(arm["units"], row["units"], "{arm} vs {row}");
        total += arm["executions"].as_u64().unwrap();
        for (mine, theirs) in [
            ("success_rate", "sr"),
            ("cost_per_success", "cps"),
            ("p95_cost", "p95"),
        ] {
            let (a, b) = (arm[mine].as_f64(), row[theirs].as_f64());
            match (a, b) {
                (Some(a), Some(b)) => assert!((a - b).abs() < 1e-12, "{mine}: {a} vs {b}"),
                (a, b) => assert_eq!(a, b, "{mine}"),
            }
        }
    }
    assert_eq!(total, 16);
    assert_eq!(r["verdict"]["kind"], "not_enough_data", "{r}");
    assert!(r["method"].as_str().unwrap().contains("delta method"));
    let table = ok(keel(&data, &["experiments", "readout", "support-prompts"]));
    assert!(table.contains("verdict: not enough data"), "{table}");

    // A replay is not production (it does not count), and a rebuild of the projections from the
    // spine reads out the same: the arm lives on exec.started.
    let before = ok(keel(
        &data,
        &["experiments", "readout", "support-prompts", "--json"],
    ));
    let replayed = ok(keel(&data, &["replay", r_exec(&data).as_str(), "--json"]));
    assert!(!replayed.is_empty());
    ok(keel(&data, &["project", "--rebuild"]));
    let after = ok(keel(
        &data,
        &["experiments", "readout", "support-prompts", "--json"],
    ));
    assert_eq!(before, after);

    // Stopped: no new execution is assigned; the readout still reads what ran.
    ok(keel(
        &data,
        &[
            "experiments",
            "stop",
            "support-prompts",
            "--reason",
            "test over",
        ],
    ));
    assert_eq!(run(&data, Some("cust-1"))["experiment"], Value::Null);
    let list = ok(keel(&data, &["experiments", "list", "--json"]));
    let listed: Value = serde_json::from_str(list.lines().next().unwrap()).unwrap();
    assert_eq!(listed["status"], "stopped");
    let err = fails(keel(&data, &["experiments", "readout", "nope"]));
    assert!(err.contains("no experiment \"nope\""), "{err}");
}

/// An assigned execution's id, from the projections.
fn r_exec(data: &Path) -> String {
    let v: Value = serde_json::from_str(&ok(keel(
        data,
        &[
            "sql",
            "--format",
            "json",
            "SELECT exec_id FROM gold.executions WHERE experiment IS NOT NULL LIMIT 1",
        ],
    )))
    .unwrap();
    v[0]["exec_id"].as_str().unwrap().to_owned()
}

fn run_with(data: &Path, strategy: &str, goal: &str) -> Value {
    serde_json::from_str(&ok(keel(
        data,
        &[
            "run",
            "--json",
            "--tenant",
            "acme",
            "--strategy",
            strategy,
            goal,
        ],
    )))
    .unwrap()
}

/// The tier-cap half of issue 15 item 3: a strategy version that is a new arm of a running
/// experiment runs at most tier 1 alone until a person certifies it from its production record;
/// with no production record the certification is refused.
#[test]
fn a_new_arm_is_capped_until_certified_from_its_production_record() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let complaint = "This is terrible, my order A-1017 arrived broken";
    // Before any experiment: support-long sends its tier-2 notification alone.
    let free = run_with(&data, "support-long", complaint);
    let gated = |out: &Value| {
        events(&data, out)
            .iter()
            .filter(|e| e["type"] == "gate.requested")
            .map(|e| e["data"]["reason"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert!(gated(&free).is_empty(), "{:?}", gated(&free));
    ok(keel(&data, &["experiments", "register"]));
    let list = ok(keel(&data, &["strategies", "list"]));
    assert!(list.contains("support-long"), "{list}");

    // Registered as the new arm: its tier-2 call now waits at a gate.
    let capped = run_with(&data, "support-long", complaint);
    let reasons = gated(&capped);
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(
        reasons[0].contains("maximum autonomous tier 1"),
        "{reasons:?}"
    );
    // The holdback is not capped.
    assert!(gated(&run_with(&data, "support-short", complaint)).is_empty());

    // This version has finished production executions from before (the first run), so it may
    // be certified; the record is printed.
    let out = keel(
        &data,
        &[
            "strategies",
            "certify",
            "support-long",
            "--reason",
            "record ok",
        ],
    );
    let msg = String::from_utf8(out.stderr.clone()).unwrap();
    ok(out);
    assert!(msg.contains("production record of support-long/"), "{msg}");
    assert!(msg.contains("1 finished executions"), "{msg}");
    assert!(gated(&run_with(&data, "support-long", complaint)).is_empty());

    // In a fresh store, a capped version with no production record cannot be certified.
    let fresh = tmp.path().join("fresh");
    run_with(&fresh, "support-short", "Where is my order A-1017?");
    ok(keel(&fresh, &["experiments", "register"]));
    let err = fails(keel(&fresh, &["strategies", "certify", "support-long"]));
    assert!(err.contains("no production record"), "{err}");
}

/// A breached guardrail acts without a person: `keel experiments check` records the breach and
/// stops the arm, whose units then run the holdback; a second check does nothing new.
#[test]
fn a_breached_guardrail_stops_its_arm() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let text = std::fs::read_to_string(repo().join("experiments/support-prompts.yaml")).unwrap();
    let file = tmp.path().join("guarded.yaml");
    // Every finished execution takes at least one step, so `p95_steps <= 0` is breached.
    std::fs::write(
        &file,
        text.replace("name: support-prompts", "name: guarded")
            .replace("unit: subject", "unit: execution")
            .replace("min_sample: 100", "min_sample: 1")
            .replace(
                "{ metric: p95_steps, direction: at_most, bound: 8 }",
                "{ metric: p95_steps, direction: at_most, bound: 0, on_breach: stop_arm }",
            ),
    )
    .unwrap();
    run(&data, None);
    ok(keel(
        &data,
        &["experiments", "register", file.to_str().unwrap()],
    ));
    let mut arms = std::collections::BTreeSet::new();
    for _ in 0..12 {
        arms.insert(
            run(&data, None)["experiment"]["arm"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(arms.len(), 2, "{arms:?}");
    let out = ok(keel(&data, &["experiments", "check"]));
    assert!(out.contains("guarded\tthorough\tp95_steps <= 0"), "{out}");
    assert!(out.contains("stop_arm"), "{out}");
    // The holdback also breaches it, but the holdback is never stopped.
    assert!(!out.contains("\tcontrol\t"), "{out}");
    let list = ok(keel(&data, &["experiments", "list", "--json"]));
    let listed: Value = serde_json::from_str(list.lines().next().unwrap()).unwrap();
    assert_eq!(listed["arms"][1]["stopped"], true, "{listed}");
    for _ in 0..8 {
        let x = run(&data, None);
        assert_eq!(x["experiment"]["arm"], "control", "{x}");
        assert!(
            x["strategy_version"]
                .as_str()
                .unwrap()
                .starts_with("support-short/")
        );
    }
    let again = keel(&data, &["experiments", "check"]);
    let msg = String::from_utf8(again.stderr.clone()).unwrap();
    assert!(ok(again).is_empty());
    assert!(msg.contains("0 new guardrail breaches"), "{msg}");
}

/// `keel demo` runs its two strategies as a registered experiment with a holdback (customers
/// of tenant umbrella, no strategy named) and prints the readout.
#[test]
fn the_demo_runs_its_strategies_as_a_registered_experiment() {
    assert!(
        std::env::var_os("KEEL_MINILM_DIR").is_some(),
        "KEEL_MINILM_DIR is not set: the demo embeds memory with all-MiniLM-L6-v2 (run \
         scripts/test, or eval \"$(scripts/test-services)\")"
    );
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("demo");
    let out = ok(common::keel(&store, &["demo"]));
    let section = out
        .split("EXPERIMENT support-prompts")
        .nth(1)
        .unwrap_or_else(|| panic!("no EXPERIMENT section in:\n{out}"));
    assert!(section.contains("control*"), "{section}");
    assert!(
        section.contains("verdict: no verdict before the pre-registered horizon"),
        "{section}"
    );
    let r: Value = serde_json::from_str(&ok(common::keel(
        &store,
        &[
            "experiments",
            "readout",
            "support-prompts",
            "--json",
            "--tenant",
            "umbrella",
        ],
    )))
    .unwrap();
    let arms = r["arms"].as_array().unwrap();
    let n: u64 = arms.iter().map(|a| a["executions"].as_u64().unwrap()).sum();
    assert_eq!(n, 40, "{r}");
    assert_eq!(arms[0]["strategy"], "support-short");
    assert_eq!(arms[0]["holdback"], true);
    assert!(
        arms.iter().all(|a| a["executions"].as_u64().unwrap() > 0),
        "{r}"
    );
}

/// `on_breach: demote` lowers the arm's strategy version one tier below its current ceiling
/// (capped at 1 as a new arm: demoted to 0), with a `strategy.demoted` control event.
#[test]
fn a_breached_guardrail_can_demote_its_arm() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let text = std::fs::read_to_string(repo().join("experiments/support-prompts.yaml")).unwrap();
    let file = tmp.path().join("demoting.yaml");
    std::fs::write(
        &file,
        text.replace("name: support-prompts", "name: demoting")
            .replace("unit: subject", "unit: execution")
            .replace("min_sample: 100", "min_sample: 1")
            .replace(
                "{ metric: p95_steps, direction: at_most, bound: 8 }",
                "{ metric: p95_steps, direction: at_most, bound: 0, on_breach: demote }",
            ),
    )
    .unwrap();
    run(&data, None);
    ok(keel(
        &data,
        &["experiments", "register", file.to_str().unwrap()],
    ));
    for _ in 0..12 {
        run(&data, None);
    }
    let out = ok(keel(&data, &["experiments", "check"]));
    assert!(out.contains("demoting\tthorough\tp95_steps <= 0"), "{out}");
    let control: Vec<Value> = ok(keel(
        &data,
        &["events", "00000000-0000-7000-8000-00c047c01000"],
    ))
    .lines()
    .map(|l| serde_json::from_str(l).unwrap())
    .collect();
    let types: Vec<&str> = control
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "experiment.registered",
            "experiment.guardrail_breached",
            "strategy.demoted"
        ],
        "{control:#?}"
    );
    let demoted = &control[2]["data"];
    assert!(
        demoted["strategy_version"]
            .as_str()
            .unwrap()
            .starts_with("support-long/")
    );
    assert_eq!(demoted["max_autonomous_tier"], 0);
}
