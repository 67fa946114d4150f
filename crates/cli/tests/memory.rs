//! `keel memory` as users run it, on the store `keel demo` fills (real MiniLM, real spine, real
//! blobs): subject access, then erasure, after which no path — retrieval, `keel sql`,
//! `keel events`, blobs, the Parquet export, replay, subject access — returns the subject's data.

#![allow(clippy::unwrap_used)]

mod common;
use common::{files_contain, keel, ok};

/// Words only the subject's requests contain.
const SECRET: &str = "send me updates by e-mail";

#[test]
fn subject_access_then_erasure_reaches_every_path() {
    let tmp = tempfile::tempdir().unwrap();
    ok(keel(tmp.path(), &["demo"]));
    let store = tmp.path().to_path_buf();
    let config = tmp.path().join("config");

    let access: serde_json::Value = serde_json::from_str(&ok(keel(
        &store,
        &["memory", "subject-access", "cust-42", "--tenant", "acme"],
    )))
    .unwrap();
    let facts = access["facts"].as_array().unwrap();
    // The preference, and the policy claim waiting in review (the demo's stale-memory story
    // sweeps as of 30 days later, but only its own tenant).
    assert_eq!(facts.len(), 2, "{access:#}");
    assert!(
        facts
            .iter()
            .any(|f| f["text"] == "The customer wants order updates by e-mail"),
        "{access:#}"
    );
    assert!(
        facts.iter().any(|f| f["status"] == "review"
            && f["text"]
                .as_str()
                .is_some_and(|t| t.contains("shipping is free"))),
        "{access:#}"
    );
    assert!(
        facts
            .iter()
            .all(|f| f["provenance"]["trace_id"].is_string())
    );
    let execs = access["executions"].as_array().unwrap();
    assert_eq!(execs.len(), 2);
    assert!(execs[0]["goal"].as_str().unwrap().contains(SECRET));
    let first = execs[0]["exec_id"].as_str().unwrap().to_owned();
    assert!(ok(keel(&store, &["events", &first])).contains(SECRET));
    let search = ok(keel(
        &store,
        &[
            "memory",
            "search",
            "--tenant",
            "acme",
            "--subject",
            "cust-42",
            "how does the customer want updates",
        ],
    ));
    assert!(search.contains("updates by e-mail"), "{search}");
    ok(keel(&store, &["project"]));
    let sql = ok(keel(
        &store,
        &["sql", "SELECT * FROM gold.executions", "--format", "csv"],
    ));
    assert!(
        sql.contains(SECRET),
        "the projection holds the goal before erasure"
    );

    let report: serde_json::Value = serde_json::from_str(&ok(keel(
        &store,
        &["memory", "erase", "cust-42", "--tenant", "acme"],
    )))
    .unwrap();
    assert_eq!(report["facts_erased"].as_u64(), Some(facts.len() as u64));
    assert_eq!(report["executions_shredded"], 2);
    assert!(report["blobs_deleted"].as_u64().unwrap() > 0);
    assert_eq!(report["projections"], "rebuilt");
    // The tombstone is an event on the control stream, naming the subject only by digest.
    let control = ok(keel(
        &store,
        &["events", &keel_core::control::CONTROL_STREAM.to_string()],
    ));
    assert!(control.contains("\"subject.erased\""), "{control}");
    assert!(control.contains(report["tombstone"].as_str().unwrap()));
    assert!(!control.contains("cust-42"), "{control}");

    // Retrieval.
    let search = ok(keel(
        &store,
        &[
            "memory",
            "search",
            "--tenant",
            "acme",
            "--subject",
            "cust-42",
            "how does the customer want updates",
        ],
    ));
    assert!(!search.contains("e-mail"), "{search}");
    // Subject access.
    let access: serde_json::Value = serde_json::from_str(&ok(keel(
        &store,
        &["memory", "subject-access", "cust-42", "--tenant", "acme"],
    )))
    .unwrap();
    assert!(access["facts"].as_array().unwrap().is_empty());
    assert!(
        access["executions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["goal"] == "[erased]")
    );
    // keel events.
    let events = ok(keel(&store, &["events", &first]));
    assert!(
        !events.contains("e-mail") && events.contains("[erased]"),
        "{events}"
    );
    // keel sql.
    for table in [
        "gold.executions",
        "traces.steps",
        "traces.retrieval_samples",
    ] {
        let sql = ok(keel(
            &store,
            &["sql", &format!("SELECT * FROM {table}"), "--format", "csv"],
        ));
        assert!(!sql.contains("e-mail"), "{table}: {sql}");
    }
    // Parquet export.
    let out = tmp.path().join("parquet");
    ok(keel(
        &store,
        &["export", "parquet", "--out", out.to_str().unwrap()],
    ));
    assert!(files_contain(&out, "e-mail").is_empty());
    // Replay.
    let replay = keel(
        &store,
        &[
            "replay",
            &first,
            "--tools",
            config.join("tools").to_str().unwrap(),
            "--strategies",
            config.join("strategies").to_str().unwrap(),
            "--prices",
            config.join("prices.toml").to_str().unwrap(),
            "--json",
        ],
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&replay.stdout),
        String::from_utf8_lossy(&replay.stderr)
    );
    assert!(!text.contains("e-mail"), "{text}");
    // Blobs and every other file of the store (spine, memory, projections); the demo's
    // configuration beside them (its scripted model knows the phrase) is not the subject's data.
    let hits: Vec<String> = files_contain(&store, "e-mail")
        .into_iter()
        .filter(|h| !std::path::Path::new(h).starts_with(&config))
        .collect();
    assert!(hits.is_empty(), "subject data left in {hits:?}");
}
