//! Executions about a data subject, through the `keel` binary as users run it (real spine, real
//! MiniLM memory, the demo's scripted model): `keel run --subject` seals the execution under the
//! subject's key so subject access and erasure reach it; a strategy can require a subject;
//! episodic memory distilled from one customer is never retrieved for another (issue 12, items
//! 3, 4 and 21).

#![allow(clippy::unwrap_used)]

mod common;
use common::serve::{free_addr, send, serve};
use common::{events, files_contain, keel_in_repo as keel, ok, repo};

use serde_json::Value;
use std::path::Path;

/// `keel run --json` with the memory strategy, about `subject` (if any), for tenant acme.
fn run_memory(data: &Path, subject: Option<&str>, goal: &str) -> Value {
    let strategies = repo().join("strategies/memory");
    let mut args = vec![
        "run",
        "--json",
        "--strategy",
        "support-memory",
        "--strategies",
        strategies.to_str().unwrap(),
        "--tenant",
        "acme",
    ];
    if let Some(s) = subject {
        args.extend(["--subject", s]);
    }
    args.push(goal);
    serde_json::from_str(&ok(keel(data, &args))).unwrap()
}

/// The facts each `memory.retrieved` of the execution showed the model.
fn retrieved(data: &Path, exec: &Value) -> Vec<String> {
    events(data, exec)
        .iter()
        .filter(|e| e["type"] == "memory.retrieved")
        .flat_map(|e| e["data"]["chunks"].as_array().cloned().unwrap_or_default())
        .map(|c| {
            c["provenance"]["fact"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

/// Regression (item 3): a customer asking "Where is my order 1031?" was told "As you asked
/// before, we will keep you updated by e-mail", a fact distilled from another customer's
/// conversation. Episodic memory is retrieved for its own subject only.
#[test]
fn one_customers_distilled_fact_is_never_retrieved_for_another() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path();
    let first = run_memory(
        data,
        Some("cust-a"),
        "Where is my order A-1007? Please always send me updates by e-mail.",
    );
    assert_eq!(first["outcome"], "success", "{first}");
    let fact = "The customer wants order updates by e-mail";
    assert!(
        events(data, &first)
            .iter()
            .any(|e| e["type"] == "memory.written" && e["data"]["provenance"]["fact"] == fact),
        "customer A's preference was distilled"
    );

    let other = run_memory(data, Some("cust-b"), "Where is my order A-1031?");
    assert_eq!(other["outcome"], "success", "{other}");
    assert!(retrieved(data, &other).is_empty(), "{other}");
    assert!(
        !other["answer"].as_str().unwrap().contains("As you asked"),
        "{other}"
    );

    let nobody = run_memory(data, None, "Where is my order A-1031?");
    assert!(retrieved(data, &nobody).is_empty(), "{nobody}");
    assert!(
        !nobody["answer"].as_str().unwrap().contains("As you asked"),
        "{nobody}"
    );

    let again = run_memory(data, Some("cust-a"), "Has order A-1007 shipped yet?");
    assert_eq!(retrieved(data, &again), vec![fact.to_owned()]);
    assert!(
        again["answer"]
            .as_str()
            .unwrap()
            .ends_with("As you asked before, we will keep you updated by e-mail."),
        "{again}"
    );
}

/// Regression (item 21): a `"` or `\` in a goal broke the demo model's distillation JSON and the
/// execution failed. Whatever the customer types reaches memory as typed.
#[test]
fn quotes_backslashes_and_newlines_in_a_goal_survive_distillation() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path();
    let goal = "Where is my order A-1007? Please always send me updates by e-mail.\n\
                Also, your policy says \"free\" shipping \\ returns on every order. Thanks {}";
    let r = run_memory(data, Some("cust-q"), goal);
    assert_eq!(r["outcome"], "success", "{r}");
    let written: Vec<String> = events(data, &r)
        .iter()
        .filter(|e| e["type"] == "memory.written")
        .map(|e| {
            e["data"]["provenance"]["fact"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert!(
        written.contains(
            &"The customer claims the policy says \"free\" shipping \\ returns on every order"
                .to_owned()
        ),
        "{written:?}"
    );
    let started = &events(data, &r)[0];
    assert_eq!(started["data"]["goal"], goal);
}

/// Item 4: `keel run --subject` seals the execution under the subject's key: the goal's e-mail
/// address is never in the store's files in clear, subject access lists the execution, and
/// after erasure the goal reads `[erased]` and nothing of it is left anywhere in the store.
#[test]
fn keel_run_with_a_subject_is_reached_by_subject_access_and_erasure() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path();
    let email = "jane.doe@example.com";
    let goal = format!("Where is my order A-1007? Write to me at {email}");
    let out = ok(keel(
        data,
        &[
            "run",
            "--json",
            "--strategy",
            "support-short",
            "--tenant",
            "acme",
            "--subject",
            "cust-j",
            &goal,
        ],
    ));
    let r: Value = serde_json::from_str(&out).unwrap();
    let exec = r["exec_id"].as_str().unwrap().to_owned();
    assert_eq!(events(data, &r)[0]["data"]["goal"], goal.as_str());
    assert!(
        files_contain(data, email).is_empty(),
        "sealed at append: {:?}",
        files_contain(data, email)
    );

    let access: Value = serde_json::from_str(&ok(keel(
        data,
        &["memory", "subject-access", "cust-j", "--tenant", "acme"],
    )))
    .unwrap();
    assert!(
        access.to_string().contains(&exec),
        "subject access lists the execution: {access:#}"
    );
    let other: Value = serde_json::from_str(&ok(keel(
        data,
        &["memory", "subject-access", "cust-j", "--tenant", "globex"],
    )))
    .unwrap();
    assert!(!other.to_string().contains(&exec), "{other:#}");

    ok(keel(
        data,
        &["memory", "erase", "cust-j", "--tenant", "acme"],
    ));
    assert_eq!(events(data, &r)[0]["data"]["goal"], "[erased]");
    assert!(files_contain(data, "Write to me at").is_empty());
    assert!(files_contain(data, email).is_empty());
}

/// Model replies and small tool outputs live in the spine's file (they ride in the step's commit,
/// with no file and no fsync of their own): `keel serve`, another process, serves them from
/// there; `keel memory erase` deletes them, so no row and no byte of them is left in the store
/// and the server answers 410 for them, also after a restart.
#[test]
fn erasure_reaches_the_replies_and_outputs_kept_in_the_spines_file() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path();
    let out = ok(keel(
        data,
        &[
            "run",
            "--json",
            "--strategy",
            "support-short",
            "--tenant",
            "acme",
            "--subject",
            "cust-i",
            "Where is my order A-1007?",
        ],
    ));
    let r: Value = serde_json::from_str(&out).unwrap();
    let exec = r["exec_id"].as_str().unwrap().to_owned();
    let mut refs: Vec<String> = Vec::new();
    for e in events(data, &r) {
        for field in ["response_ref", "output_ref"] {
            if let Some(b) = e["data"][field].as_str()
                && !refs.iter().any(|r| r == b)
            {
                refs.push(b.to_owned());
            }
        }
    }
    assert!(
        refs.len() >= 2,
        "a reply and a tool output at least: {refs:?}"
    );
    let spine = data.join("spine.db");
    let rows = |refs: &[String]| -> Vec<(String, Vec<u8>)> {
        let db = rusqlite::Connection::open(&spine).unwrap();
        refs.iter()
            .filter_map(|r| {
                db.query_row(
                    "SELECT bytes FROM inline_blobs WHERE ref = ?1",
                    [r],
                    |row| row.get::<_, Vec<u8>>(0),
                )
                .ok()
                .map(|b| (r.clone(), b))
            })
            .collect()
    };
    let stored = rows(&refs);
    assert_eq!(stored.len(), refs.len(), "every blob is inline: {refs:?}");
    assert!(
        !data.join("blobs").exists(),
        "no blob file was written for a small blob"
    );

    let token = ok(keel(
        data,
        &["tokens", "create", "--tenant", "acme", "--role", "agent"],
    ))
    .trim()
    .to_owned();
    let get = |addr: &str, blob: &str| {
        send(
            addr,
            &format!(
                "GET /v1/executions/{exec}/blobs/{blob} HTTP/1.1\r\nHost: x\r\n\
                 Authorization: Bearer {token}\r\nConnection: close\r\n\r\n"
            ),
        )
    };
    let addr = free_addr();
    let server = serve(data, &addr);
    for (blob, bytes) in &stored {
        let reply = get(&addr, blob);
        assert_eq!(reply.code, 200, "{blob}: {}", reply.body);
        assert_eq!(reply.json()["bytes"], bytes.len(), "{}", reply.body);
    }
    drop(server);

    ok(keel(
        data,
        &["memory", "erase", "cust-i", "--tenant", "acme"],
    ));
    assert_eq!(rows(&refs), Vec::new(), "erasure deleted every inline blob");
    for (blob, bytes) in &stored {
        // A distinctive slice of each blob's bytes is nowhere in the store's files.
        let text = String::from_utf8_lossy(bytes);
        let needle: String = text.chars().take(64).collect();
        assert!(
            files_contain(data, &needle).is_empty(),
            "{blob}: {:?}",
            files_contain(data, &needle)
        );
    }
    let addr = free_addr();
    let _server = serve(data, &addr);
    for (blob, _) in &stored {
        let reply = get(&addr, blob);
        assert_eq!(reply.code, 410, "{blob}: {}", reply.body);
    }
}

/// Item 4: a strategy with `subject: required` refuses a start without one (or with a malformed
/// one), with an error that says so, and stores nothing.
#[test]
fn a_strategy_can_require_a_subject() {
    let tmp = tempfile::tempdir().unwrap();
    let strategies = tmp.path().join("strategies");
    std::fs::create_dir_all(&strategies).unwrap();
    let text = std::fs::read_to_string(repo().join("strategies/support-short.yaml"))
        .unwrap()
        .replace("name: support-short", "name: support-kyc")
        .replace("../", &format!("{}/", repo().display()))
        + "subject: required\n";
    std::fs::write(strategies.join("support-kyc.yaml"), text).unwrap();
    let data = tmp.path().join("data");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "run",
            "--strategy",
            "support-kyc",
            "--strategies",
            strategies.to_str().unwrap(),
            "--tenant",
            "acme",
        ];
        args.extend_from_slice(extra);
        args.push("Where is my order A-1007?");
        keel(&data, &args)
    };
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--subject: strategy support-kyc requires a subject"),
        "{err}"
    );
    let out = run(&["--subject", " "]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--subject: must not be empty"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = ok(keel(
        &data,
        &[
            "sql",
            "--format",
            "csv",
            "SELECT count(*) FROM gold.executions",
        ],
    ));
    assert_eq!(
        listed.lines().last(),
        Some("0"),
        "nothing was started: {listed}"
    );
    let r = run(&["--subject", "cust-k"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
}
