//! Crypto-shredding on the PostgreSQL spine: a subject-linked execution's personal fields are
//! never stored in clear; after erasure through one handle, every read path of another handle
//! (another machine) decodes them as `[erased]`, the execution's blobs are gone, the fold still
//! works, and other executions are untouched.

#![allow(clippy::unwrap_used)]

use futures::StreamExt;
use keel_core::payload::{Outcome, Payload, ToolStatus};
use keel_core::{Event, ExecutionState};
use keel_memory::pgserver::PgServer;
use keel_spine::shred::ERASED;
use keel_spine::{BlobStore, EventLog, LocalBlobStore, PgEventLog, PgOptions};
use keel_testkit::ExecBuilder;
use keel_testkit::builder::exec_id;
use std::time::Duration;

async fn personal_execution(blobs: &LocalBlobStore, n: u64) -> Vec<Event> {
    let output = blobs
        .put(format!(r#"{{"customer":"Zoltan Quixwright {n}"}}"#).into_bytes())
        .await
        .unwrap();
    let mut events = ExecBuilder::new(exec_id(n), "acme")
        .started("Refund order A-1001 for Zoltan Quixwright")
        .tool_call("lookup_order", ToolStatus::Ok)
        .step_completed()
        .finished(Outcome::Success)
        .build();
    for e in &mut events {
        match &mut e.payload {
            Payload::ToolCalled(c) => c.args = serde_json::json!({"customer": "Zoltan Quixwright"}),
            Payload::ToolResult(r) => r.output_ref = Some(output.to_string()),
            _ => {}
        }
    }
    events
}

fn personal_fields(e: &Event) -> Vec<String> {
    match &e.payload {
        Payload::ExecStarted(s) => vec![s.goal.clone()],
        Payload::ToolCalled(c) => vec![c.args.to_string()],
        _ => vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_through_one_handle_reaches_every_read_path_of_another() {
    let server = PgServer::start().unwrap();
    let url = server.create_database("keel").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let blobs = LocalBlobStore::new(dir.path().join("blobs"));
    let a = PgEventLog::connect(&url, PgOptions::default())
        .await
        .unwrap();
    let b = PgEventLog::connect(&url, PgOptions::default())
        .await
        .unwrap();

    let linked = personal_execution(&blobs, 1).await;
    let other = personal_execution(&blobs, 2).await;
    a.link_subject(exec_id(1), "acme", "subj-zq-7781")
        .await
        .unwrap();
    a.append(exec_id(1), 0, &linked).await.unwrap();
    a.append(exec_id(2), 0, &other).await.unwrap();
    assert_eq!(
        b.subject_of(exec_id(1)).await.unwrap().as_deref(),
        Some("subj-zq-7781")
    );
    assert_eq!(
        b.read(exec_id(1), 1).await.unwrap(),
        linked,
        "readable before erasure"
    );
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let stored: String = client
        .query_one(
            "SELECT string_agg(body, '') FROM keel_spine.batches WHERE exec_id = $1",
            &[&exec_id(1).to_string()],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!stored.contains("Quixwright") && stored.contains("enc:v1:"));
    assert!(
        a.link_subject(exec_id(1), "acme", "someone-else")
            .await
            .is_err()
    );
    assert!(
        a.link_subject(exec_id(2), "acme", "subj-zq-7781")
            .await
            .is_err()
    );

    let mut follower = b.subscribe(1);
    let erasure = a
        .erase_subject("acme", "subj-zq-7781", &blobs)
        .await
        .unwrap();
    assert_eq!(erasure.executions, vec![exec_id(1)]);
    assert_eq!(erasure.blobs_deleted.len(), 1);
    assert_eq!(b.subject_of(exec_id(1)).await.unwrap(), None);

    let erased = |events: &[Event]| {
        for e in events.iter().filter(|e| e.exec_id == exec_id(1)) {
            for f in personal_fields(e) {
                assert!(f.contains(ERASED) && !f.contains("Quixwright"), "{f}");
            }
        }
    };
    let read = b.read(exec_id(1), 1).await.unwrap();
    assert_eq!(read.len(), linked.len());
    erased(&read);
    assert!(ExecutionState::fold(&read).unwrap().status.is_terminal());
    let all: Vec<Event> = b
        .read_all(1, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.event)
        .collect();
    erased(&all);
    let mut streamed = Vec::new();
    for _ in 0..all.len() {
        let c = tokio::time::timeout(Duration::from_secs(30), follower.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        streamed.push(c.event);
    }
    erased(&streamed);
    assert_eq!(
        b.read(exec_id(2), 1).await.unwrap(),
        other,
        "others untouched"
    );
    let kept = other.iter().find_map(|e| match &e.payload {
        Payload::ToolResult(r) => r.output_ref.clone(),
        _ => None,
    });
    assert!(blobs.get(&kept.unwrap().parse().unwrap()).await.is_ok());
    let again = a
        .erase_subject("acme", "subj-zq-7781", &blobs)
        .await
        .unwrap();
    assert_eq!(again.executions, vec![exec_id(1)], "idempotent");
}
