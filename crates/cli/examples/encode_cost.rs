use keel_testkit::builder::{execution_with_steps, exec_id};
use std::time::Instant;
fn main() {
    let events = execution_with_steps(exec_id(1), 200);
    let n = events.len();
    let t = Instant::now();
    let mut total = 0;
    for _ in 0..20 { for e in &events { total += e.encode().len(); } }
    let el = t.elapsed().as_secs_f64();
    println!("encode: {:.2} us/event, avg {} bytes", el * 1e6 / (20 * n) as f64, total / (20 * n));
    let bodies: Vec<String> = events.iter().map(|e| e.encode()).collect();
    let t = Instant::now();
    for _ in 0..20 { for b in &bodies { std::hint::black_box(keel_core::Event::decode(b).unwrap()); } }
    println!("decode: {:.2} us/event", t.elapsed().as_secs_f64() * 1e6 / (20 * n) as f64);
    let t = Instant::now();
    for _ in 0..20 { for e in &events { std::hint::black_box(e.exec_id.to_string()); } }
    println!("exec_id to_string: {:.3} us", t.elapsed().as_secs_f64() * 1e6 / (20 * n) as f64);
    // raw sqlite insert
    let dir = tempfile::tempdir().unwrap();
    let conn = rusqlite::Connection::open(dir.path().join("x.db")).unwrap();
    conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=OFF; CREATE TABLE events (log_offset INTEGER PRIMARY KEY, exec_id TEXT NOT NULL, seq INTEGER NOT NULL, tenant TEXT NOT NULL, type TEXT NOT NULL, body TEXT NOT NULL); CREATE UNIQUE INDEX e ON events(exec_id, seq);").unwrap();
    let key = events[0].exec_id.to_string();
    let t = Instant::now();
    let reps = 20;
    for r in 0..reps {
        let tx = conn.unchecked_transaction().unwrap();
        { let mut st = tx.prepare_cached("INSERT INTO events (exec_id, seq, tenant, type, body) VALUES (?1,?2,?3,?4,?5)").unwrap();
        for (i, b) in bodies.iter().enumerate() { st.execute((&key, (r * n + i) as i64, "acme", "tool.called", b)).unwrap(); } }
        tx.commit().unwrap();
    }
    println!("sqlite insert text key: {:.2} us/event", t.elapsed().as_secs_f64() * 1e6 / (reps * n) as f64);
}
