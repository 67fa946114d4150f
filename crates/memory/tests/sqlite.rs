//! keel-memory against the embedded backend (a real SQLite file, the in-process vector index,
//! real MiniLM embeddings): the conformance suite, the SIGKILL-mid-migration drill, and erasure
//! leaving no bytes of the subject in the database file.

#![allow(clippy::unwrap_used)]

use keel_memory::conformance::{fact, minilm, minilm_128, pinned_model};
use keel_memory::{Embedder, Memory, MemoryPolicy, MemoryStore, Query, SqliteMemory, Trust};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn fresh() -> (Arc<dyn MemoryStore>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteMemory::open(dir.path().join("memory.db"), &pinned_model()).unwrap();
    (Arc::new(store), dir)
}

keel_memory::memory_conformance_tests!(fresh());

const CHILD_ENV: &str = "KEEL_TEST_MIGRATE_CHILD";

/// The child side of the crash drill: migrates the store named by the environment, one fact per
/// batch, until the parent kills it.
#[tokio::test]
#[ignore = "run by sigkill_mid_migration_leaves_the_old_index_serving"]
async fn migration_child() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let store = Arc::new(SqliteMemory::open(&path, &pinned_model()).unwrap());
    let m = Memory::new(store, Arc::new(minilm()), MemoryPolicy::default()).unwrap();
    m.migrate(&minilm_128(), 1).await.unwrap();
}

fn side_rows(path: &std::path::Path) -> i64 {
    let c = rusqlite::Connection::open(path).unwrap();
    c.query_row(
        "SELECT count(*) FROM vectors WHERE model = ?1",
        [minilm_128().model().key()],
        |r| r.get(0),
    )
    .unwrap_or(0)
}

/// Rule 7: a migration killed by SIGKILL half way leaves the old index serving; a rerun finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_migration_leaves_the_old_index_serving() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("memory.db");
    let now = chrono::DateTime::parse_from_rfc3339("2026-11-01T09:00:00Z")
        .unwrap()
        .to_utc();
    {
        let store = Arc::new(SqliteMemory::open(&path, &pinned_model()).unwrap());
        let m = Memory::new(store, Arc::new(minilm()), MemoryPolicy::default()).unwrap();
        for i in 0..80 {
            let text = format!(
                "Customer number {i} prefers deliveries on day {} of the week",
                i % 7
            );
            m.write_tenant_wide(fact("acme", None, &text, "stable", Trust::ToolRecord), now)
                .await
                .unwrap();
        }
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "migration_child", "--ignored", "--nocapture"])
        .env(CHILD_ENV, &path)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while side_rows(&path) < 5 {
        assert!(
            Instant::now() < deadline,
            "the child never started migrating"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the child finished before the kill"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let built = side_rows(&path);
    assert!(
        (5..80).contains(&built),
        "killed with {built} of 80 re-embedded"
    );

    let store = Arc::new(SqliteMemory::open(&path, &pinned_model()).unwrap());
    assert_eq!(
        store.pinned().await.unwrap(),
        pinned_model(),
        "the old model is still pinned"
    );
    let old = Memory::new(store.clone(), Arc::new(minilm()), MemoryPolicy::default()).unwrap();
    let q = Query {
        tenant: "acme".into(),
        subject: None,
        text: "which customer wants deliveries on day 3".into(),
        k: 10,
        min_score: 0.0,
        semantic_version: None,
    };
    assert_eq!(
        old.retrieve(&q, now).await.unwrap().hits.len(),
        10,
        "the old index serves"
    );
    let new = Memory::new(
        store.clone(),
        Arc::new(minilm_128()),
        MemoryPolicy::default(),
    )
    .unwrap();
    assert!(
        new.retrieve(&q, now).await.is_err(),
        "the half-built index is not served"
    );
    let done = old.migrate(&minilm_128(), 16).await.unwrap();
    assert_eq!(
        done as i64,
        80 - built,
        "the rerun continues where the kill stopped it"
    );
    assert_eq!(new.retrieve(&q, now).await.unwrap().hits.len(), 10);
    assert!(old.retrieve(&q, now).await.is_err());
}

/// Rule 6: after erasure the subject's text is nowhere in the database files (secure_delete and
/// a WAL checkpoint), not merely hidden from queries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erased_facts_leave_no_bytes_in_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("memory.db");
    let store = Arc::new(SqliteMemory::open(&path, &pinned_model()).unwrap());
    let m = Memory::new(store.clone(), Arc::new(minilm()), MemoryPolicy::default()).unwrap();
    let now = chrono::DateTime::parse_from_rfc3339("2026-11-01T09:00:00Z")
        .unwrap()
        .to_utc();
    m.write(
        fact(
            "acme",
            Some("frank"),
            "Frank Zappelmeier wants parcels left at Zanzibarstrasse",
            "preference",
            Trust::Agent,
        ),
        now,
    )
    .await
    .unwrap();
    m.write(
        fact(
            "acme",
            Some("gina"),
            "Gina prefers morning deliveries",
            "preference",
            Trust::Agent,
        ),
        now,
    )
    .await
    .unwrap();
    let contains = |needle: &str| {
        std::fs::read_dir(dir.path()).unwrap().any(|e| {
            let bytes = std::fs::read(e.unwrap().path()).unwrap();
            bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
        })
    };
    assert!(contains("Zappelmeier"));
    assert_eq!(m.erase_subject("acme", "frank").await.unwrap().len(), 1);
    assert!(!contains("Zappelmeier"), "erased text still on disk");
    assert!(!contains("Zanzibarstrasse"));
    assert!(contains("Gina prefers"));
}
