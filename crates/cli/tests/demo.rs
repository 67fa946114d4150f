//! `keel demo` as users run it, on a fresh data directory (real MiniLM from `$KEEL_MINILM_DIR`):
//! its stale-memory step. An execution pinned to semantic catalogue v1 answers from the fact
//! that v2 superseded and fails; its replay against v2 is recorded as a linked execution
//! (`replay_of` on its `exec.started`; in traces.steps, never in gold.executions) that retrieves
//! the corrected fact and succeeds. The step's expiry sweep touches its own tenant's memory only.

mod common;
use common::ok;

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

fn keel(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keel"))
        .arg("--data")
        .arg(data)
        .args(args)
        .output()
        .expect("running keel")
}

/// `keel demo` under `dir`; returns its stdout and the store it filled.
fn demo(dir: &Path) -> (String, std::path::PathBuf) {
    assert!(
        std::env::var_os("KEEL_MINILM_DIR").is_some(),
        "KEEL_MINILM_DIR is not set: the demo embeds memory with all-MiniLM-L6-v2 (run \
         scripts/test, or eval \"$(scripts/test-services)\")"
    );
    let stdout = ok(keel(dir, &["demo"]));
    (stdout, dir.to_path_buf())
}

fn sql(store: &Path, query: &str) -> Vec<Value> {
    let v: Value = serde_json::from_str(&ok(keel(store, &["sql", query, "--format", "json"])))
        .expect("keel sql --format json prints JSON");
    v.as_array().expect("an array of rows").clone()
}

fn events(store: &Path, exec: &str) -> Vec<Value> {
    ok(keel(store, &["events", exec]))
        .lines()
        .map(|l| serde_json::from_str(l).expect("keel events prints JSON lines"))
        .collect()
}

/// The one `memory.retrieved` event of an execution, and its `exec.finished` data.
fn retrieval_and_finish(events: &[Value]) -> (&Value, &Value) {
    let of = |t: &str| {
        let found: Vec<&Value> = events.iter().filter(|e| e["type"] == t).collect();
        assert_eq!(found.len(), 1, "one {t}: {events:#?}");
        &found[0]["data"]
    };
    (of("memory.retrieved"), of("exec.finished"))
}

#[test]
fn demo_replays_the_stale_memory_answer_against_the_corrected_catalogue() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let (stdout, store) = demo(tmp.path());

    // The replay is the demo's only one, linked to its original. A replay is not production: it
    // has no gold.executions row (decision 059), only its steps in traces.steps, marked.
    let replays = sql(
        &store,
        "SELECT exec_id, tenant, summary FROM traces.steps
         WHERE event_type = 'exec.started' AND summary LIKE 'replay of %'",
    );
    assert_eq!(replays.len(), 1, "{replays:#?}");
    let replay = &replays[0];
    let replay_id = replay["exec_id"].as_str().expect("exec_id");
    assert_eq!(replay["tenant"], "initech");
    assert!(
        replay["summary"]
            .as_str()
            .is_some_and(|v| v.contains("[support-carrier/") && v.contains("+memory-v2]")),
        "{replay}"
    );
    let started = events(&store, replay_id);
    let original_id = started[0]["data"]["replay_of"]
        .as_str()
        .expect("replay_of")
        .to_owned();
    let original_id = original_id.as_str();
    assert!(
        sql(
            &store,
            &format!("SELECT exec_id FROM gold.executions WHERE exec_id = '{replay_id}'"),
        )
        .is_empty(),
        "the replay counts in no production figure"
    );
    let original = sql(
        &store,
        &format!(
            "SELECT tenant, strategy_version, outcome, replay_of, retrievals
             FROM gold.executions WHERE exec_id = '{original_id}'"
        ),
    );
    assert_eq!(original.len(), 1, "the original is projected too");
    let original = &original[0];
    assert_eq!(original["tenant"], "initech");
    assert_eq!(original["outcome"], "failure");
    assert_eq!(original["replay_of"], Value::Null);
    assert_eq!(original["retrievals"], 1);

    // The original retrieved the fact v2 superseded, from catalogue v1, and answered from it.
    let before = events(&store, original_id);
    let (retrieved, finished) = retrieval_and_finish(&before);
    assert!(
        retrieved["memory_version"]
            .as_str()
            .is_some_and(|v| v.ends_with("#semantic-v1")),
        "{retrieved}"
    );
    let chunks = retrieved["chunks"].as_array().expect("chunks");
    assert_eq!(chunks.len(), 1, "{retrieved}");
    let stale = &chunks[0];
    assert_eq!(
        stale["provenance"]["fact"],
        "Carrier policy: delivery takes 5 days."
    );
    assert_eq!(stale["provenance"]["status"], "superseded");
    assert_eq!(stale["provenance"]["tier"], "semantic");
    assert_eq!(finished["outcome"], "failure");
    assert_eq!(finished["detail"], "Order A-1003 arrives within 5 days.");

    // The replay asked the same question of catalogue v2 and got the corrected fact.
    let after = events(&store, replay_id);
    assert_eq!(
        after[0]["data"]["goal"], before[0]["data"]["goal"],
        "same request"
    );
    assert_eq!(after[0]["data"]["replay_of"], original_id);
    let (retrieved, finished) = retrieval_and_finish(&after);
    assert!(
        retrieved["memory_version"]
            .as_str()
            .is_some_and(|v| v.ends_with("#semantic-v2")),
        "{retrieved}"
    );
    let chunks = retrieved["chunks"].as_array().expect("chunks");
    assert_eq!(chunks.len(), 1, "{retrieved}");
    assert_eq!(
        chunks[0]["provenance"]["fact"],
        "Carrier policy: delivery takes 2 days."
    );
    assert_eq!(chunks[0]["provenance"]["status"], "active");
    assert_ne!(chunks[0]["id"], stale["id"]);
    assert_eq!(finished["outcome"], "success");
    assert_eq!(finished["detail"], "Order A-1003 arrives within 2 days.");

    // And the demo says so, with the diff.
    let story = stdout
        .split("STALE MEMORY")
        .nth(1)
        .unwrap_or_else(|| panic!("no STALE MEMORY section in:\n{stdout}"));
    assert!(
        story.contains(&format!("1. {original_id} ")) && story.contains("→ failure"),
        "{story}"
    );
    assert!(
        story.contains(&format!(
            "keel replay {original_id} --memory-version 2 → replay {replay_id} → success"
        )),
        "{story}"
    );
    assert!(
        story.contains("- memory semantic-v1:")
            && story.contains("+ memory semantic-v2:")
            && story.contains("+ outcome success"),
        "{story}"
    );
}

/// Regression test: the stale-memory step purged expired facts "as of 30 days later" for every
/// tenant (`Memory::sweep` has no scope), so the memory step's policy claim for tenant acme —
/// which the demo tells the user "waits in review: keel memory list --tenant acme" — was gone
/// when the demo ended. The step now sweeps its own tenant only (`Memory::sweep_tenant`).
#[test]
fn demo_stale_memory_sweep_leaves_other_tenants_memory_alone() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let (stdout, store) = demo(tmp.path());
    assert!(
        stdout.contains("the policy claim waits in review"),
        "{stdout}"
    );
    let facts: Vec<Value> = ok(keel(&store, &["memory", "list", "--tenant", "acme"]))
        .lines()
        .map(|l| serde_json::from_str(l).expect("keel memory list prints JSON lines"))
        .collect();
    assert!(
        facts.iter().any(|f| f["status"] == "review"
            && f["text"]
                .as_str()
                .is_some_and(|t| t.contains("shipping is free"))),
        "acme's policy claim is still in review: {facts:#?}"
    );
    // The step's own sweep still did its job: initech's episodic drafts (7-day policy facts,
    // swept as of +30 days) are gone; only the two semantic facts promoted from them remain.
    let initech: Vec<Value> = ok(keel(&store, &["memory", "list", "--tenant", "initech"]))
        .lines()
        .map(|l| serde_json::from_str(l).expect("keel memory list prints JSON lines"))
        .collect();
    assert_eq!(initech.len(), 2, "{initech:#?}");
    assert!(
        initech.iter().all(|f| f["tier"] == "semantic"),
        "{initech:#?}"
    );
}
