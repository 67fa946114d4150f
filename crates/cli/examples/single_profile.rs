use keel_spine::{EventLog, SqliteLog, SqliteOptions};
use keel_testkit::ExecBuilder;
use std::time::Instant;
#[tokio::main(flavor = "current_thread")]
async fn main() {
    let dir = tempfile::tempdir_in("/work").unwrap();
    let log = SqliteLog::open(dir.path().join("x.db"), SqliteOptions::default()).unwrap();
    let exec = keel_spine::clock::new_exec_id();
    let mut b = ExecBuilder::new(exec, "bench").started("bench");
    let mut last = 0u64;
    let n: usize = std::env::var("N").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let t = Instant::now();
    for _ in 0..n {
        b = b.plan();
        let ev = b.take();
        let ev = if last == 0 { ev } else { ev[ev.len()-1..].to_vec() };
        last = log.append(exec, last, &ev).await.unwrap().last_seq;
    }
    println!("{:.1} us per single append", t.elapsed().as_secs_f64() * 1e6 / n as f64);
}
