//! Crypto-shredding on a real spine file: fields of a subject-linked execution never reach the
//! disk in clear; after erasure every read path (read, read_all, subscribe, a fresh handle) decodes
//! them as `[erased]`, the execution's blobs are gone, the fold still works, and other
//! executions are untouched.

#![allow(clippy::unwrap_used)]

use futures::StreamExt;
use keel_core::payload::{Outcome, Payload, ToolStatus};
use keel_core::{Event, ExecutionState};
use keel_spine::shred::ERASED;
use keel_spine::{BlobStore, EventLog, LocalBlobStore, SqliteLog, SqliteOptions};
use keel_testkit::ExecBuilder;
use keel_testkit::builder::exec_id;

const GOAL: &str = "Refund order A-1001 for Zoltan Quixwright, zoltan@example.org";

/// An execution with a personal goal, tool args, a blob-backed tool output and an answer.
async fn personal_execution(blobs: &LocalBlobStore, n: u64, tenant: &str) -> Vec<Event> {
    let output = blobs
        .put(format!(r#"{{"customer":"Zoltan Quixwright {n}"}}"#).into_bytes())
        .await
        .unwrap();
    let mut events = ExecBuilder::new(exec_id(n), tenant)
        .started(GOAL)
        .tool_call("lookup_order", ToolStatus::Ok)
        .step_completed()
        .finished(Outcome::Success)
        .build();
    for e in &mut events {
        match &mut e.payload {
            Payload::ToolCalled(c) => c.args = serde_json::json!({"customer": "Zoltan Quixwright"}),
            Payload::ToolResult(r) => r.output_ref = Some(output.to_string()),
            Payload::ExecFinished(f) => f.detail = Some("Refunded Zoltan Quixwright".into()),
            _ => {}
        }
    }
    events
}

fn file_contains(dir: &std::path::Path, needle: &str) -> bool {
    std::fs::read_dir(dir).unwrap().any(|e| {
        let p = e.unwrap().path();
        p.is_file()
            && std::fs::read(&p)
                .unwrap()
                .windows(needle.len())
                .any(|w| w == needle.as_bytes())
    })
}

fn personal_fields(e: &Event) -> Vec<String> {
    match &e.payload {
        Payload::ExecStarted(s) => vec![s.goal.clone()],
        Payload::ToolCalled(c) => vec![c.args.to_string()],
        Payload::ExecFinished(f) => vec![f.detail.clone().unwrap_or_default()],
        _ => vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_reaches_every_read_path_and_the_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spine.db");
    let blobs = LocalBlobStore::new(dir.path().join("blobs"));
    let log = SqliteLog::open(&path, SqliteOptions::default()).unwrap();

    let linked = personal_execution(&blobs, 1, "acme").await;
    let other = personal_execution(&blobs, 2, "acme").await;
    log.link_subject(exec_id(1), "acme", "subj-zq-7781")
        .await
        .unwrap();
    log.append(exec_id(1), 0, &linked).await.unwrap();
    log.append(exec_id(2), 0, &other).await.unwrap();
    assert_eq!(
        log.subject_of(exec_id(1)).await.unwrap().as_deref(),
        Some("subj-zq-7781")
    );
    assert_eq!(log.subject_of(exec_id(2)).await.unwrap(), None);

    // Readable before erasure, but never on disk in clear.
    assert_eq!(log.read(exec_id(1), 1).await.unwrap(), linked);
    log.checkpoint().await.unwrap();
    let rows: Vec<String> = {
        let c = rusqlite::Connection::open(&path).unwrap();
        let mut st = c
            .prepare("SELECT body FROM events WHERE exec_id = ?1")
            .unwrap();
        st.query_map([exec_id(1).to_string()], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    assert!(
        rows.iter().all(|b| !b.contains("Quixwright")),
        "clear text in the events view"
    );
    assert!(rows.iter().any(|b| b.contains("enc:v1:")));

    // A linked execution cannot be re-linked; one with events cannot be linked late.
    assert!(
        log.link_subject(exec_id(1), "acme", "someone-else")
            .await
            .is_err()
    );
    assert!(
        log.link_subject(exec_id(2), "acme", "subj-zq-7781")
            .await
            .is_err()
    );

    let erasure = log
        .erase_subject("acme", "subj-zq-7781", &blobs)
        .await
        .unwrap();
    assert_eq!(erasure.executions, vec![exec_id(1)]);
    assert_eq!(erasure.blobs_deleted.len(), 1);

    let check = |events: &[Event]| {
        for e in events.iter().filter(|e| e.exec_id == exec_id(1)) {
            for f in personal_fields(e) {
                assert!(f.contains(ERASED) && !f.contains("Quixwright"), "{f}");
            }
        }
    };
    let read = log.read(exec_id(1), 1).await.unwrap();
    assert_eq!(read.len(), linked.len());
    check(&read);
    let state = ExecutionState::fold(&read).unwrap();
    assert!(
        state.status.is_terminal(),
        "the fold still works on erased events"
    );
    let all: Vec<Event> = log
        .read_all(1, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.event)
        .collect();
    check(&all);
    let streamed: Vec<Event> = log
        .subscribe(1)
        .take(all.len())
        .map(|c| c.unwrap().event)
        .collect()
        .await;
    check(&streamed);
    let fresh = SqliteLog::open(&path, SqliteOptions::default()).unwrap();
    check(&fresh.read(exec_id(1), 1).await.unwrap());
    assert_eq!(fresh.subject_of(exec_id(1)).await.unwrap(), None);

    // Blobs of the erased execution are gone; the other execution is intact.
    let output_ref = |events: &[Event]| {
        events.iter().find_map(|e| match &e.payload {
            Payload::ToolResult(r) => r.output_ref.clone(),
            _ => None,
        })
    };
    let gone = output_ref(&linked).unwrap().parse().unwrap();
    assert!(blobs.get(&gone).await.is_err());
    let kept = output_ref(&other).unwrap().parse().unwrap();
    assert!(blobs.get(&kept).await.is_ok());
    assert_eq!(fresh.read(exec_id(2), 1).await.unwrap(), other);

    // The key itself is gone from the files (secure delete + WAL checkpoint), and a tombstone
    // without the subject's name remains.
    drop(fresh);
    drop(log);
    let c = rusqlite::Connection::open(&path).unwrap();
    let keys: i64 = c
        .query_row("SELECT count(*) FROM subject_keys", [], |r| r.get(0))
        .unwrap();
    assert_eq!(keys, 0);
    let (digest, n): (String, i64) = c
        .query_row("SELECT digest, executions FROM erasures", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(
        digest,
        keel_spine::sqlite::subject_digest("acme", "subj-zq-7781")
    );
    assert_eq!(n, 1);
    drop(c);
    assert!(
        !file_contains(dir.path(), "subj-zq-7781"),
        "the subject's name is still in the spine"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_appended_after_erasure_are_unreadable_too() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = LocalBlobStore::new(dir.path().join("blobs"));
    let log = SqliteLog::open(dir.path().join("spine.db"), SqliteOptions::default()).unwrap();
    let events = ExecBuilder::new(exec_id(5), "acme")
        .started(GOAL)
        .plan()
        .build();
    log.link_subject(exec_id(5), "acme", "zoltan")
        .await
        .unwrap();
    log.append(exec_id(5), 0, &events[..1]).await.unwrap();
    log.erase_subject("acme", "zoltan", &blobs).await.unwrap();
    let mut late = events[1].clone();
    if let Payload::PlanProposed(p) = &mut late.payload {
        p.steps = vec!["call Zoltan Quixwright back".into()];
    }
    log.append(exec_id(5), 1, &[late]).await.unwrap();
    let read = log.read(exec_id(5), 1).await.unwrap();
    match &read[1].payload {
        Payload::PlanProposed(p) => assert_eq!(p.steps, vec![ERASED.to_owned()]),
        other => panic!("{other:?}"),
    }
}
