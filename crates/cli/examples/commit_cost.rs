use std::time::Instant;
fn run(label: &str, setup: &str, n: usize, ckpt_every: usize) {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let conn = rusqlite::Connection::open(dir.path().join("x.db")).unwrap();
    conn.execute_batch(setup).unwrap();
    conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)").unwrap();
    let body = "x".repeat(400);
    let t = Instant::now();
    for i in 0..n {
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        conn.execute("INSERT INTO t (body) VALUES (?1)", [&body]).unwrap();
        conn.execute_batch("COMMIT").unwrap();
        if ckpt_every > 0 && i % ckpt_every == 0 { conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE)").unwrap(); }
    }
    println!("{label}: {:.1} us/commit", t.elapsed().as_secs_f64() * 1e6 / n as f64);
}
fn main() {
    let base = "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA wal_autocheckpoint=0;";
    run("wal full, no ckpt (growing wal)", base, 2000, 0);
    run("wal full, ckpt every 500", base, 2000, 500);
    run("wal full, autockpt 1000 default", "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;", 2000, 0);
    run("wal normal", "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", 2000, 0);
    run("wal off", "PRAGMA journal_mode=WAL; PRAGMA synchronous=OFF;", 2000, 0);
    // in-place overwrite: prewarm wal then reset
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let conn = rusqlite::Connection::open(dir.path().join("x.db")).unwrap();
    conn.execute_batch(base).unwrap();
    conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)").unwrap();
    let body = "x".repeat(400);
    for _ in 0..3000 { conn.execute("INSERT INTO t (body) VALUES (?1)", [&body]).unwrap(); }
    conn.execute_batch("PRAGMA wal_checkpoint(RESTART)").unwrap();
    let t = Instant::now();
    for _ in 0..2000 { conn.execute("INSERT INTO t (body) VALUES (?1)", [&body]).unwrap(); }
    println!("wal full, overwriting a pre-grown wal: {:.1} us/commit", t.elapsed().as_secs_f64() * 1e6 / 2000.0);
    let f = std::fs::OpenOptions::new().create(true).write(true).open(dir.path().join("probe")).unwrap();
    use std::io::{Write, Seek};
    let mut f = f; let page=[1u8;4096];
    let t = Instant::now();
    for _ in 0..500 { f.seek(std::io::SeekFrom::Start(0)).unwrap(); f.write_all(&page).unwrap(); f.sync_all().unwrap(); }
    println!("plain fsync in place: {:.1} us", t.elapsed().as_secs_f64() * 1e6 / 500.0);
    let t = Instant::now();
    for _ in 0..500 { f.write_all(&page).unwrap(); f.sync_all().unwrap(); }
    println!("fsync appending: {:.1} us", t.elapsed().as_secs_f64() * 1e6 / 500.0);
    let t = Instant::now();
    for _ in 0..500 { f.seek(std::io::SeekFrom::Start(0)).unwrap(); f.write_all(&page).unwrap(); f.sync_data().unwrap(); }
    println!("fdatasync in place: {:.1} us", t.elapsed().as_secs_f64() * 1e6 / 500.0);
}
