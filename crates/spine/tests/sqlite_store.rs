//! The SQLite store as a file: durable across re-opens, several handles on one file, and clear
//! errors (never panics) for newer, foreign, corrupt and truncated files and tampered rows.

// Test helpers too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use futures::StreamExt;
use keel_core::payload::Outcome;
use keel_spine::{EventLog, SpineError, SqliteLog, SqliteOptions};
use keel_testkit::ExecBuilder;
use keel_testkit::builder::{exec_id, execution_with_steps};
use std::path::Path;
use std::time::Duration;

fn open(path: &Path) -> Result<SqliteLog, SpineError> {
    SqliteLog::open(path, SqliteOptions::default())
}

async fn fill(log: &SqliteLog, execs: u64, steps: u32) {
    for n in 0..execs {
        let events = execution_with_steps(exec_id(n), steps);
        log.append(exec_id(n), 0, &events).await.unwrap();
    }
}

#[tokio::test]
async fn everything_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spine.db");
    let log = open(&path).unwrap();
    fill(&log, 3, 4).await;
    let before = log.read_all(1, 10_000).await.unwrap();
    drop(log);
    let log = open(&path).unwrap();
    assert_eq!(log.read_all(1, 10_000).await.unwrap(), before);
    // Offsets continue after the stored head.
    let more = ExecBuilder::new(exec_id(9), "acme").started("g").build();
    let ack = log.append(exec_id(9), 0, &more).await.unwrap();
    assert_eq!(ack.first_offset, before.last().unwrap().offset + 1);
}

#[tokio::test]
async fn a_store_from_a_newer_keel_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spine.db");
    drop(open(&path).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let err = open(&path).err().unwrap();
    assert!(
        matches!(err, SpineError::NewerStore { found: 99, .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("newer") && msg.contains("spine.db"), "{msg}");
}

#[tokio::test]
async fn a_foreign_sqlite_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch("CREATE TABLE customers (id INTEGER);")
        .unwrap();
    drop(conn);
    let err = open(&path).err().unwrap();
    assert!(matches!(err, SpineError::NotKeelStore { .. }), "{err:?}");
    // Nothing of the foreign file was touched.
    let conn = rusqlite::Connection::open(&path).unwrap();
    let tables: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .unwrap();
    assert_eq!(tables, 1);
}

#[tokio::test]
async fn a_garbage_file_is_reported_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spine.db");
    std::fs::write(&path, vec![0xA5u8; 8192]).unwrap();
    let err = open(&path).err().unwrap();
    assert!(matches!(err, SpineError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("spine.db"), "{err}");
}

#[tokio::test]
async fn a_truncated_file_gives_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spine.db");
    let log = open(&path).unwrap();
    fill(&log, 40, 10).await;
    log.checkpoint().await.unwrap();
    drop(log);
    let len = std::fs::metadata(&path).unwrap().len();
    assert!(
        len > 64 * 1024,
        "store should span many pages, is {len} bytes"
    );
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(len * 6 / 10).unwrap();
    drop(file);
    let outcome = match open(&path) {
        Err(e) => Err(e),
        Ok(log) => log.read_all(1, 1_000_000).await.map(|v| v.len()),
    };
    let err = outcome.expect_err("reading a truncated store must fail");
    assert!(matches!(err, SpineError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("corrupt"), "{err}");
}

#[tokio::test]
async fn a_tampered_row_is_a_decode_error_naming_the_event() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spine.db");
    let log = open(&path).unwrap();
    fill(&log, 3, 2).await;
    drop(log);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let tamper = |n: u64, sql: &str| {
        conn.execute(
            &format!("UPDATE batches SET body = {sql} WHERE exec_id = ?1"),
            [exec_id(n).to_string()],
        )
        .unwrap();
    };
    tamper(1, "json_set(body, '$[2]', 'garbage')");
    tamper(2, "json_set(body, '$[3].seq', 9)");
    drop(conn);
    let log = open(&path).unwrap();
    match log.read(exec_id(1), 1).await {
        Err(SpineError::Decode {
            seq: 3, exec_id: e, ..
        }) => assert_eq!(e, exec_id(1).to_string()),
        other => panic!("expected a decode error at seq 3, got {other:?}"),
    }
    let err = log.read(exec_id(2), 1).await.unwrap_err();
    assert!(matches!(err, SpineError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("seq 4"), "{err}");
    // The untouched execution still reads.
    assert_eq!(log.read(exec_id(0), 1).await.unwrap().len(), 2 + 2 * 5 + 1);
}

#[tokio::test]
async fn the_events_view_unpacks_batches_for_sql_tools() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spine.db");
    let log = open(&path).unwrap();
    fill(&log, 2, 1).await;
    let all = log.read_all(1, 1000).await.unwrap();
    drop(log);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let mut stmt = conn
        .prepare("SELECT log_offset, exec_id, seq, tenant, type FROM events ORDER BY log_offset")
        .unwrap();
    let rows: Vec<(u64, String, u64, String, String)> = stmt
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows.len(), all.len());
    for (row, c) in rows.iter().zip(&all) {
        assert_eq!(row.0, c.offset);
        assert_eq!(row.1, c.event.exec_id.to_string());
        assert_eq!(row.2, c.event.seq);
        assert_eq!(row.3, c.event.tenant.as_str());
        assert_eq!(row.4, c.event.event_type().as_str());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_handles_on_one_file_race_and_exactly_one_wins_each_seq() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spine.db");
    let a = open(&path).unwrap();
    let b = open(&path).unwrap();
    keel_spine::conformance::race_two_writers(&a, &b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_sees_appends_made_through_another_handle() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spine.db");
    let reader = open(&path).unwrap();
    let writer = open(&path).unwrap();
    let mut stream = reader.subscribe(1);
    let events = ExecBuilder::new(exec_id(1), "acme")
        .started("g")
        .finished(Outcome::Success)
        .build();
    writer.append(exec_id(1), 0, &events).await.unwrap();
    for e in &events {
        let got = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .unwrap();
        assert_eq!(&got.unwrap().unwrap().event, e);
    }
}

#[tokio::test]
async fn durability_off_still_stores_and_reads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spine.db");
    let options = SqliteOptions {
        durability: keel_spine::Durability::Off,
    };
    let log = SqliteLog::open(&path, options).unwrap();
    fill(&log, 2, 3).await;
    assert_eq!(
        log.read_all(1, 1000).await.unwrap().len(),
        2 * (2 + 3 * 5 + 1)
    );
}

#[tokio::test]
async fn buffered_appends_are_hidden_from_readers_until_a_durable_append() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir.path().join("spine.db")).unwrap();
    let events = execution_with_steps(exec_id(1), 1);
    log.append_buffered(exec_id(1), 0, &events[..3])
        .await
        .unwrap();
    assert!(
        log.read(exec_id(1), 1).await.unwrap().is_empty(),
        "not durable yet, not visible"
    );
    assert!(log.read_all(1, 100).await.unwrap().is_empty());
    // The writer already builds on them: the next append's condition is seq 3.
    log.append_buffered(exec_id(1), 3, &events[3..5])
        .await
        .unwrap();
    log.append(exec_id(1), 5, &events[5..6]).await.unwrap();
    assert_eq!(log.read(exec_id(1), 1).await.unwrap(), events[..6].to_vec());
    assert_eq!(log.read_all(1, 100).await.unwrap().len(), 6);
}

/// A handle's unflushed appends hide only its own execution: what another handle (another
/// process) commits to another execution afterwards — a kill-switch on the control stream — is
/// read at once. Before, the handle hid everything after its first unflushed append, so a
/// worker running read-only steps never saw a kill-switch set by `keel kill`.
#[tokio::test]
async fn buffered_appends_hide_only_their_own_execution() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spine.db");
    let worker = open(&path).unwrap();
    let operator = open(&path).unwrap();
    let running = execution_with_steps(exec_id(1), 3);
    worker
        .append_buffered(exec_id(1), 0, &running[..3])
        .await
        .unwrap();
    let switch = execution_with_steps(exec_id(2), 0);
    operator.append(exec_id(2), 0, &switch[..1]).await.unwrap();
    assert_eq!(
        worker.read(exec_id(2), 1).await.unwrap(),
        switch[..1].to_vec(),
        "another process's durable commit is visible to a handle with unflushed appends"
    );
    assert!(
        worker.read(exec_id(1), 1).await.unwrap().is_empty(),
        "the handle's own unflushed appends stay hidden"
    );
    worker.append(exec_id(1), 3, &running[3..4]).await.unwrap();
    assert_eq!(
        worker.read(exec_id(1), 1).await.unwrap(),
        running[..4].to_vec()
    );
}
