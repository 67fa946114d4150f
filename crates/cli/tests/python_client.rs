//! The Python client (`clients/python`) against a real `keel serve`: the package is pip-installed
//! from the repository into a fresh directory with the Python of `scripts/test-python-client` (a
//! cached venv with only the build backend and mypy), mypy `--strict` checks the package and its
//! tests (type hints throughout), and its own unittest suite runs against the server this test
//! starts.

#![allow(clippy::unwrap_used)]

mod common;
use common::repo;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The Python of `scripts/test-python-client` (setuptools, wheel, mypy): `KEEL_PYTHON_CLIENT_PY`
/// as `scripts/test` exports it, or the script run here when a test is run on its own.
fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("KEEL_PYTHON_CLIENT_PY") {
        return PathBuf::from(p);
    }
    let out = run(&mut Command::new(repo().join("scripts/test-python-client")));
    let line = String::from_utf8(out.stdout).unwrap();
    let p = line
        .trim()
        .strip_prefix("export KEEL_PYTHON_CLIENT_PY=")
        .expect("scripts/test-python-client prints an export line");
    PathBuf::from(p)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let name = e.file_name();
        let n = name.to_string_lossy();
        // Build leftovers of a developer's own `pip install` are not the package.
        if n == "build" || n.ends_with(".egg-info") || n == "__pycache__" {
            continue;
        }
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(&name));
        } else {
            std::fs::copy(e.path(), to.join(&name)).unwrap();
        }
    }
}

fn free_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

#[test]
fn the_python_client_passes_its_tests_against_keel_serve() {
    let tmp = tempfile::tempdir().unwrap();
    let python = python();

    // `pip install ./clients/python`, from a copy (the build writes beside its sources) into a
    // directory of this run's own, so concurrent runs never share an install.
    let src = tmp.path().join("client");
    copy_dir(&repo().join("clients/python"), &src);
    let site = tmp.path().join("site");
    run(Command::new(&python)
        .args(["-m", "pip", "install", "--quiet"])
        .args([
            "--disable-pip-version-check",
            "--no-index",
            "--no-build-isolation",
            "--no-deps",
            "--target",
        ])
        .arg(&site)
        .arg(&src));
    assert!(
        site.join("keel_client/py.typed").exists(),
        "typed package installed"
    );

    let out = Command::new(&python)
        .args(["-m", "mypy", "--strict", "--cache-dir"])
        .arg(tmp.path().join("mypy-cache"))
        .args(["src/keel_client", "tests"])
        .current_dir(&src)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mypy --strict:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let data = tmp.path().join("data");
    let out = run(Command::new(env!("CARGO_BIN_EXE_keel"))
        .arg("--data")
        .arg(&data)
        .args(["tokens", "create", "--tenant", "acme"])
        .args([
            "--role", "agent", "--role", "approver", "--role", "operator",
        ]));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let addr = free_addr();
    let _serve = Serve(
        Command::new(env!("CARGO_BIN_EXE_keel"))
            .current_dir(repo())
            .arg("--data")
            .arg(&data)
            .args(["serve", "--addr", &addr])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(Instant::now() < deadline, "keel serve did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }

    let out = Command::new(&python)
        .args(["-m", "unittest", "discover", "-v", "-s"])
        .arg(src.join("tests"))
        .current_dir(tmp.path())
        .env("PYTHONPATH", &site)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("KEEL_URL", format!("http://{addr}"))
        .env("KEEL_TOKEN", &token)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "python tests failed:\n{report}");
    assert!(
        !report.contains("skipped"),
        "no test may skip here:\n{report}"
    );
    assert!(report.contains("Ran 7 tests"), "{report}");
}
