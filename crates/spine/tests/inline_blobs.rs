//! Small blobs in the SQLite spine's file: a blob put for an append costs no file and no fsync of
//! its own and is committed by the append that references it; another connection (as another
//! process would) reads it only once that commit is done; large blobs and blobs written as files
//! before stay files; erasing a subject deletes its inline blobs whatever blob store the caller
//! passes, and their bytes are left nowhere in the store's files.

#![allow(clippy::unwrap_used)]

use keel_core::payload::{Outcome, Payload, ToolStatus};
use keel_spine::sqlite::{INLINE_MAX, inline_small_blobs};
use keel_spine::{
    BlobRef, BlobStore, EventLog, LocalBlobStore, SpineError, SqliteLog, SqliteOptions,
};
use keel_testkit::ExecBuilder;
use keel_testkit::builder::exec_id;
use std::path::Path;
use std::sync::Arc;

/// The row of `r` as another connection sees it.
fn row(db: &Path, r: &BlobRef) -> Option<Vec<u8>> {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row(
        "SELECT bytes FROM inline_blobs WHERE ref = ?1",
        [r.as_str()],
        |row| row.get(0),
    )
    .ok()
}

fn file_of(root: &Path, r: &BlobRef) -> std::path::PathBuf {
    let hex = r.as_str().trim_start_matches("sha256:");
    let (head, tail) = hex.split_at_checked(2).unwrap();
    root.join("blobs").join("sha256").join(head).join(tail)
}

fn any_file_contains(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            hits.extend(any_file_contains(&p, needle));
        } else if std::fs::read(&p)
            .unwrap()
            .windows(needle.len())
            .any(|w| w == needle)
        {
            hits.push(p.display().to_string());
        }
    }
    hits
}

/// An execution whose tool result references `output`.
fn execution(n: u64, output: &BlobRef) -> Vec<keel_core::Event> {
    let mut events = ExecBuilder::new(exec_id(n), "acme")
        .started("Where is order A-1001?")
        .tool_call("lookup_order", ToolStatus::Ok)
        .step_completed()
        .finished(Outcome::Success)
        .build();
    for e in &mut events {
        if let Payload::ToolResult(r) = &mut e.payload {
            r.output_ref = Some(output.to_string());
        }
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_blob_rides_the_commit_of_the_append_that_references_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("spine.db");
    let log = SqliteLog::open(&db, SqliteOptions::default()).unwrap();
    let files: Arc<dyn BlobStore> = Arc::new(LocalBlobStore::new(dir.path().join("blobs")));
    let blobs = inline_small_blobs(log.side_store(), files);

    let bytes = br#"{"order_id":"A-1001","status":"shipped"}"#.to_vec();
    let r = blobs.put_for_append(bytes.clone()).await.unwrap();
    assert_eq!(r, BlobRef::of(&bytes));
    assert_eq!(row(&db, &r), None, "not committed before the append");
    assert_eq!(blobs.get(&r).await.unwrap(), bytes, "read here meanwhile");

    let groups = log
        .stats()
        .groups
        .load(std::sync::atomic::Ordering::Relaxed);
    log.append(exec_id(1), 0, &execution(1, &r)).await.unwrap();
    assert_eq!(
        log.stats()
            .groups
            .load(std::sync::atomic::Ordering::Relaxed),
        groups + 1,
        "the blob costs no commit of its own"
    );
    assert_eq!(
        row(&db, &r),
        Some(bytes.clone()),
        "committed with the event"
    );
    assert!(!file_of(dir.path(), &r).exists(), "no file, no file fsync");
    assert!(!dir.path().join("blobs").exists());

    // Put again (a repeated reply): the same reference, one row.
    let again = blobs.put_for_append(bytes.clone()).await.unwrap();
    log.append(exec_id(2), 0, &execution(2, &again))
        .await
        .unwrap();
    let conn = rusqlite::Connection::open(&db).unwrap();
    let n: i64 = conn
        .query_row("SELECT count(*) FROM inline_blobs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);

    // A plain put is durable on return: committed alone, still no file.
    let alone = blobs.put(b"durable on its own".to_vec()).await.unwrap();
    assert_eq!(
        row(&db, &alone).as_deref(),
        Some(&b"durable on its own"[..])
    );

    // A handle opened later (a restart) reads what was committed.
    drop(blobs);
    drop(log);
    let log = SqliteLog::open(&db, SqliteOptions::default()).unwrap();
    let files: Arc<dyn BlobStore> = Arc::new(LocalBlobStore::new(dir.path().join("blobs")));
    let blobs = inline_small_blobs(log.side_store(), files);
    assert_eq!(blobs.get(&r).await.unwrap(), bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_blobs_and_blobs_written_as_files_before_stay_files() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("spine.db");
    // A store from before: a small blob written as a file.
    let old = LocalBlobStore::new(dir.path().join("blobs"));
    let before = old
        .put(b"written before inline blobs".to_vec())
        .await
        .unwrap();

    let log = SqliteLog::open(&db, SqliteOptions::default()).unwrap();
    let files: Arc<dyn BlobStore> = Arc::new(old);
    let blobs = inline_small_blobs(log.side_store(), files.clone());
    assert_eq!(
        blobs.get(&before).await.unwrap(),
        b"written before inline blobs",
        "read without a migration"
    );
    let large = vec![b'x'; INLINE_MAX + 1];
    let r = blobs.put_for_append(large.clone()).await.unwrap();
    assert!(file_of(dir.path(), &r).is_file(), "a large blob is a file");
    assert_eq!(row(&db, &r), None);
    assert_eq!(blobs.get(&r).await.unwrap(), large);
    let edge = vec![b'y'; INLINE_MAX];
    let r = blobs.put(edge.clone()).await.unwrap();
    assert!(!file_of(dir.path(), &r).exists(), "64 KiB is still inline");
    assert_eq!(row(&db, &r), Some(edge));

    // Not a SQLite spine open here, or not a local store: the given store, unchanged.
    let elsewhere = dir.path().join("other.db");
    let plain = inline_small_blobs(Some(&elsewhere), files.clone());
    let r = plain.put_for_append(b"to a file".to_vec()).await.unwrap();
    assert!(file_of(dir.path(), &r).is_file());
    let plain = inline_small_blobs(None, files);
    let r = plain.put_for_append(b"also a file".to_vec()).await.unwrap();
    assert!(file_of(dir.path(), &r).is_file());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_deletes_a_subjects_inline_blobs_through_any_blob_store() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("spine.db");
    let log = SqliteLog::open(&db, SqliteOptions::default()).unwrap();
    let local = LocalBlobStore::new(dir.path().join("blobs"));
    let files: Arc<dyn BlobStore> = Arc::new(local.clone());
    let blobs = inline_small_blobs(log.side_store(), files);

    let secret = br#"{"customer":"Zoltan Quixwright","card":"4111-1111"}"#.to_vec();
    let kept = br#"{"customer":"somebody else entirely"}"#.to_vec();
    let r = blobs.put_for_append(secret.clone()).await.unwrap();
    let k = blobs.put_for_append(kept.clone()).await.unwrap();
    log.link_subject(exec_id(1), "acme", "subj-zq")
        .await
        .unwrap();
    log.append(exec_id(1), 0, &execution(1, &r)).await.unwrap();
    log.append(exec_id(2), 0, &execution(2, &k)).await.unwrap();
    log.checkpoint().await.unwrap();
    assert!(!any_file_contains(dir.path(), b"Zoltan Quixwright").is_empty());

    // The caller passes the plain directory store (as an older wiring would): the spine deletes
    // the rows in its own file regardless.
    let erased = log.erase_subject("acme", "subj-zq", &local).await.unwrap();
    assert_eq!(erased.blobs_deleted, vec![r.to_string()]);
    assert!(matches!(
        blobs.get(&r).await,
        Err(SpineError::BlobNotFound(_))
    ));
    assert_eq!(row(&db, &r), None);
    assert_eq!(
        blobs.get(&k).await.unwrap(),
        kept,
        "another execution's blob stays"
    );
    assert_eq!(
        any_file_contains(dir.path(), b"Zoltan Quixwright"),
        Vec::<String>::new(),
        "the bytes are overwritten, and the WAL's copy checkpointed away"
    );

    // Through the wrapping store: its delete reaches the row too.
    assert!(blobs.delete(&k).await.unwrap());
    assert!(!blobs.delete(&k).await.unwrap());
    assert!(matches!(
        blobs.get(&k).await,
        Err(SpineError::BlobNotFound(_))
    ));
}
