use keel_spine::{Durability, EventLog, SqliteLog, SqliteOptions};
use keel_testkit::ExecBuilder;
use std::time::Instant;
#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let log = SqliteLog::open(dir.path().join("x.db"), SqliteOptions { durability: Durability::Off }).unwrap();
    let exec = keel_spine::clock::new_exec_id();
    let mut b = ExecBuilder::new(exec, "bench").started("bench");
    for _ in 0..20 { b = b.typical_step(); }
    let mut all = b.take();
    all.truncate(100);
    let mut last = 0u64;
    let t = Instant::now();
    let mut enc = std::time::Duration::ZERO;
    for _ in 0..3000 {
        for (i, e) in all.iter_mut().enumerate() { e.seq = last + 1 + i as u64; }
        let t2 = Instant::now();
        let s: usize = all.iter().map(|e| e.encode().len()).sum();
        std::hint::black_box(s);
        enc += t2.elapsed();
        last = log.append(exec, last, &all).await.unwrap().last_seq;
    }
    let el = t.elapsed().as_secs_f64() - enc.as_secs_f64();
    println!("{:.0} events/s (encode separately {:.2} us/event)", 300000.0 / el, enc.as_secs_f64() * 1e6 / 300000.0);
}
