use std::time::Instant;
fn main() {
    for ps in [4096, 16384, 65536] {
        for ckpt in [false, true] {
        let dir = tempfile::tempdir_in("/tmp").unwrap();
        let conn = rusqlite::Connection::open(dir.path().join("x.db")).unwrap();
        conn.execute_batch(&format!("PRAGMA page_size={ps}; PRAGMA journal_mode=WAL; PRAGMA synchronous=OFF; PRAGMA wal_autocheckpoint=0; CREATE TABLE t (id INTEGER PRIMARY KEY, k TEXT, s INTEGER, body TEXT); CREATE UNIQUE INDEX i ON t(k, s);")).unwrap();
        let body = "x".repeat(40000);
        let n = 3000;
        let t = Instant::now();
        for i in 0..n {
            conn.execute_batch("BEGIN IMMEDIATE").unwrap();
            conn.prepare_cached("INSERT INTO t (k, s, body) VALUES ('0190abcd-0000-7000-8000-000000000001', ?1, ?2)").unwrap().execute((i, &body)).unwrap();
            conn.execute_batch("COMMIT").unwrap();
            if ckpt && i % 200 == 0 { conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE)").unwrap(); }
        }
        println!("page {ps} ckpt {ckpt}: {:.1} us per 40KB row", t.elapsed().as_secs_f64() * 1e6 / n as f64);
        }
    }
}
