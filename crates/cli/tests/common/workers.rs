//! Real `keel worker` processes for the lease drills: spawned one at a time on a store (an
//! SQLite directory, or the PostgreSQL spine a `keel.toml` beside it names), signalled
//! (SIGKILL, SIGSTOP, SIGCONT, SIGTERM) and read through their logs.

use keel_runtime::embedded::Config;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a drill may wait for anything before it gives up (a failure, not a measure).
pub const DEADLINE: Duration = Duration::from_secs(180);

/// A running `keel worker`, its stderr in a file beside the store.
pub struct Worker {
    pub child: Child,
    pub log: PathBuf,
}

impl Worker {
    /// `keel worker --concurrency 4 --pace-ms PACE` on the store `data` (with the keel.toml
    /// beside it, if any), leasing for `lease_secs`; returns once it says it started.
    pub fn spawn(data: &Path, config: &Config, name: &str, lease_secs: u64, pace_ms: u64) -> Self {
        let log = data.parent().unwrap().join(format!("{name}.log"));
        let mut c = Command::new(env!("CARGO_BIN_EXE_keel"));
        if let Some(file) = keel_toml(data) {
            c.arg("--config").arg(file);
        }
        c.arg("--data")
            .arg(data)
            .args(["worker", "--concurrency", "4", "--pace-ms"])
            .arg(pace_ms.to_string())
            .arg("--tools")
            .arg(&config.tools)
            .arg("--strategies")
            .arg(&config.strategies)
            .arg("--prices")
            .arg(&config.prices)
            .env("KEEL_WORKERS_LEASE_SECS", lease_secs.to_string())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let w = Worker {
            child: c.spawn().unwrap(),
            log,
        };
        // One at a time: processes opening a new SQLite spine file at the same instant may find
        // it locked while another sets it up.
        let started = Instant::now();
        while !w.stderr().contains("started") {
            assert!(started.elapsed() < DEADLINE, "{name}: {}", w.stderr());
            std::thread::sleep(Duration::from_millis(10));
        }
        w
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(ok.success(), "kill {sig}");
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, and reaped.
    pub fn kill(mut self) {
        self.signal("-KILL");
        self.child.wait().unwrap();
    }

    /// A clean stop (SIGTERM: the worker gives its leases up and exits).
    pub fn stop(mut self) -> String {
        self.signal("-TERM");
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{status}: {}", self.stderr());
        self.stderr()
    }
}

/// The keel.toml a test put beside `data` (naming a PostgreSQL spine), if any.
pub fn keel_toml(data: &Path) -> Option<PathBuf> {
    let file = data.parent()?.join("keel.toml");
    file.exists().then_some(file)
}

/// Polls `cond` until it holds (or fails the test at the deadline, saying `what` and showing
/// what the workers logged).
pub async fn until(what: &str, workers: &[&Worker], mut cond: impl FnMut() -> bool) {
    let started = Instant::now();
    while !cond() {
        if started.elapsed() > DEADLINE {
            let logs: Vec<String> = workers.iter().map(|w| w.stderr()).collect();
            panic!("never: {what}; the workers said:\n{}", logs.join("\n---\n"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
