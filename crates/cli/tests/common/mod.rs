//! Set-up shared by the CLI's integration tests: running the `keel` binary, and, for tests that
//! open a store in-process, the embedded runtime wired as the demo wires it, with the shop
//! (`data/shop.db`) whose builtins the repository's `tools/` call.

#![allow(clippy::unwrap_used, dead_code)]

pub mod pg_tls;
pub mod serve;
pub mod webhooks;
pub mod workers;

use keel_runtime::embedded::{Config, Embedded};
use keel_runtime::replay::Replayer;
use keel_tools::adapter::builtin::Builtins;
use keel_tools::shop::Shop;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The shop under `data` (created and seeded the first time).
pub fn shop(data: &Path) -> Shop {
    std::fs::create_dir_all(data).unwrap();
    Shop::open(data.join("shop.db")).unwrap()
}

/// The embedded runtime under `data` with the shop's builtins.
pub fn open(data: &Path, config: &Config) -> Embedded {
    open_with(data, config, |_| {})
}

/// The embedded runtime under `data` with the shop's builtins and those `more` adds.
pub fn open_with(data: &Path, config: &Config, more: impl FnOnce(&mut Builtins)) -> Embedded {
    let shop = shop(data);
    Embedded::open_with(data, config, |b| {
        *b = shop.builtins();
        more(b);
    })
    .unwrap()
}

/// A replayer of the store under `data`, whose live read-only tools call the shop.
pub fn replayer(data: &Path, config: &Config) -> Replayer {
    let shop = shop(data);
    Replayer::open_with(data, config, |b| *b = shop.builtins()).unwrap()
}

/// The repository's root: the demo's tools, strategies and prices.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root")
}

/// The standard output of a successful run (fails the test with its stderr otherwise).
pub fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "keel failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("keel prints UTF-8")
}

/// The events of the execution `exec` (a `keel run --json` object), as `keel events` prints them.
pub fn events(data: &Path, exec: &Value) -> Vec<Value> {
    ok(keel_in_repo(
        data,
        &["events", exec["exec_id"].as_str().unwrap()],
    ))
    .lines()
    .map(|l| serde_json::from_str(l).unwrap())
    .collect()
}

/// Every byte of every file under `dir`, searched for `needle`.
pub fn files_contain(dir: &Path, needle: &str) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if std::fs::read(&p)
                .unwrap()
                .windows(needle.len())
                .any(|w| w == needle.as_bytes())
            {
                hits.push(p.display().to_string());
            }
        }
    }
    hits
}

/// Runs `keel --data DATA ARGS…` in the test's working directory.
pub fn keel(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keel"))
        .arg("--data")
        .arg(data)
        .args(args)
        .output()
        .unwrap()
}

/// Runs `keel --data DATA ARGS…` from the repository's root (its `tools/`, `strategies/`, …).
pub fn keel_in_repo(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keel"))
        .current_dir(repo())
        .arg("--data")
        .arg(data)
        .args(args)
        .output()
        .unwrap()
}

/// Writes strategy `runaway` under `dir/strategies`: a scripted model that looks the same order
/// up forever (3 000 steps, a budget it never reaches), for tests that stop a live execution.
pub fn write_runaway(dir: &Path) {
    std::fs::create_dir_all(dir.join("strategies")).unwrap();
    std::fs::write(dir.join("prompt.md"), "Look the order up.").unwrap();
    std::fs::write(
        dir.join("loop.yaml"),
        "rules:\n  - then: { call: { tool: lookup_order, args: { order_id: A-1001 } }, output_tokens: 5 }\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("strategies/runaway.yaml"),
        "name: runaway
prompt: { file: ../prompt.md, version: v1 }
model: { provider: scripted, name: scripted-small, script: ../loop.yaml }
tools: [lookup_order]
max_steps: 3000
budget: { max_cost_usd: 1000, max_tokens: 1000000000 }
success: [ { answer_matches: 'never' } ]
",
    )
    .unwrap();
}
