//! A CLI that guides, driven as a new user drives it: list headers, next steps after a gate
//! opens and after a decision, unknown names answered with the known ones, flags accepted after
//! the subcommand (`--data`, the configuration folders) and `--json` before it, a hint when run
//! outside a project folder, and `keel --data DIR demo` keeping its store in DIR itself and
//! finding the embedding model with no variable set.

#![allow(clippy::unwrap_used)]

mod common;
use common::{keel, ok, repo};

use std::path::Path;
use std::process::{Command, Output};

/// `keel ARGS…` from the repository's root, with no `--data` in front (tests put it elsewhere).
fn keel_at(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keel"))
        .current_dir(cwd)
        .args(args)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn lists_have_headers_and_a_gate_says_what_to_do_next() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let d = data.to_str().unwrap();
    let root = repo();
    // A refund stops at a gate (tier 3).
    let run = keel_at(
        &root,
        &[
            "run",
            "--data",
            d,
            "--strategy",
            "support-short",
            "--tenant",
            "acme",
            "Please refund order 1003, it arrived damaged",
        ],
    );
    assert!(run.status.success(), "{}", stderr(&run));
    let next = stderr(&run);
    assert!(
        next.contains("next:")
            && next.contains("keel gates approve")
            && next.contains("keel worker --once"),
        "{next}"
    );
    let bad = keel_at(&root, &["run", "--data", d, "--strategy", "nope", "hello"]);
    assert!(
        stderr(&bad)
            .contains("no strategy \"nope\" in strategies; known: support-long, support-short"),
        "{}",
        stderr(&bad)
    );

    // Header first; `--data` and the configuration folders after the subcommand.
    let list = keel_at(
        &root,
        &[
            "gates",
            "list",
            "--data",
            d,
            "--tools",
            "tools",
            "--strategies",
            "strategies",
        ],
    );
    let out = ok(list.clone());
    let mut lines = out.lines();
    assert_eq!(
        lines.next(),
        Some("gate\ttenant\tqueue\ttier\ttool\targs\tstate\texecution")
    );
    let row: Vec<&str> = lines.next().unwrap().split('\t').collect();
    assert_eq!(
        (row[3], row[4], row[6]),
        ("3", "issue_customer_refund", "pending")
    );
    let gate = row[0].to_owned();
    let next = stderr(&list);
    assert!(
        next.contains("next:") && next.contains(&format!("keel gates approve {gate}")),
        "{next}"
    );
    // `--json` before the subcommand is the subcommand's.
    let json = ok(keel_at(&root, &["--json", "--data", d, "gates", "list"]));
    let v: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    assert_eq!(v["gate_id"], gate.as_str());

    // Unknown names are answered with the known ones.
    let bad = keel_at(
        &root,
        &["--data", d, "gates", "approve", "nope", "--reason", "x"],
    );
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stderr(&bad).contains(&format!("pending gates: {gate}")),
        "{}",
        stderr(&bad)
    );
    let bad = keel_at(&root, &["--data", d, "strategies", "certify", "nope"]);
    assert!(
        stderr(&bad).contains("known: support-long, support-short"),
        "{}",
        stderr(&bad)
    );

    // Deciding says how the execution runs on.
    let approve = keel_at(
        &root,
        &[
            "gates", "approve", &gate, "--reason", "checked", "--data", d,
        ],
    );
    assert!(approve.status.success(), "{}", stderr(&approve));
    assert!(
        stderr(&approve).contains("keel worker --once"),
        "{}",
        stderr(&approve)
    );

    // Every list: a header, even when empty (with a hint on stderr).
    let kill = keel(&data, &["kill", "list"]);
    assert_eq!(ok(kill.clone()), "scope\tname\ttenant\tsince\tby\treason\n");
    assert!(stderr(&kill).contains("hint: no kill-switch is on"));
    let kill = keel_at(
        &root,
        &["--data", d, "kill", "set", "tool", "refund_evrything"],
    );
    assert!(
        kill.status.success(),
        "a switch for a tool added later is allowed"
    );
    assert!(
        stderr(&kill).contains("no contract \"refund_evrything\" in tools/ (known: ")
            && stderr(&kill).contains("issue_customer_refund"),
        "{}",
        stderr(&kill)
    );
    let strategies = ok(keel_at(&root, &["--data", d, "strategies", "list"]));
    assert!(strategies.starts_with("strategy\tversion\tmax tier\teffective tier\tnote\n"));
    let sweep = ok(keel_at(&root, &["--data", d, "gates", "sweep"]));
    assert_eq!(sweep, "action\tqueue\tgate\n");
    let pending = keel_at(&root, &["--data", d, "gates", "list"]);
    assert_eq!(ok(pending.clone()).lines().count(), 1);
    assert!(stderr(&pending).contains("no pending gates"));
}

#[test]
fn outside_a_project_folder_the_error_says_where_to_run() {
    let tmp = tempfile::tempdir().unwrap();
    let out = keel_at(
        tmp.path(),
        &[
            "--data",
            "store",
            "run",
            "--strategy",
            "support-short",
            "hello",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("hint: no strategies or tools here") && err.contains("keel demo"),
        "{err}"
    );
}

/// `keel --data DATA demo` with no `KEEL_MINILM_DIR`: the model is found where the project's
/// install step (`scripts/test-services`, which `scripts/test` runs first) put it.
fn demo(data: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keel"))
        .env_remove("KEEL_MINILM_DIR")
        .arg("--data")
        .arg(data)
        .arg("demo")
        .output()
        .unwrap()
}

#[test]
fn the_demo_keeps_its_store_in_the_data_directory_and_finds_the_model_by_itself() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("d");
    let stdout = ok(demo(&data));
    assert!(data.join("spine.db").is_file() && data.join("config/tools").is_dir());
    assert!(!data.join("demo").exists(), "no nested store");
    // The id it suggests is read with the same --data.
    let exec = stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("inspect: keel --data {} trace ", data.display())))
        .unwrap_or_else(|| panic!("no inspect line in {stdout}"));
    assert!(ok(keel(&data, &["trace", exec])).contains(exec));
    // Again: the demo's own directory is cleared and refilled.
    ok(demo(&data));
    assert!(
        keel(&data, &["trace", exec]).status.code() == Some(1),
        "a fresh store"
    );
    // A directory of something else is never cleared.
    let other = tmp.path().join("work");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("notes.txt"), "mine").unwrap();
    let refused = demo(&other);
    assert_eq!(refused.status.code(), Some(1));
    assert!(stderr(&refused).contains("not empty and no earlier demo made it"));
    assert!(other.join("notes.txt").is_file());
}
