//! A real `keel serve` process for the tests that talk to it over HTTP, and a bare HTTP/1.1
//! client (one request a connection) that shows status, headers and body as they came.

use super::repo;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `keel serve`; killed (SIGKILL) and reaped when dropped.
pub struct Serve(pub Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `keel --data DATA serve --addr ADDR` from the repository's root, once it listens.
pub fn serve(data: &Path, addr: &str) -> Serve {
    serve_with(&[], data, addr)
}

/// Like [`serve`], with `global` arguments before `--data` (`--config keel.toml`).
pub fn serve_with(global: &[&std::ffi::OsStr], data: &Path, addr: &str) -> Serve {
    spawn(global, data, addr, &[], Stdio::null())
}

/// Like [`serve_with`], with `extra` arguments after `serve` (`--no-workers`) and its stderr
/// written to `log`.
pub fn serve_logged(
    global: &[&std::ffi::OsStr],
    data: &Path,
    addr: &str,
    extra: &[&str],
    log: &Path,
) -> Serve {
    spawn(
        global,
        data,
        addr,
        extra,
        std::fs::File::create(log).unwrap().into(),
    )
}

fn spawn(
    global: &[&std::ffi::OsStr],
    data: &Path,
    addr: &str,
    extra: &[&str],
    stderr: Stdio,
) -> Serve {
    let child = Command::new(env!("CARGO_BIN_EXE_keel"))
        .current_dir(repo())
        .args(global)
        .arg("--data")
        .arg(data)
        .args(["serve", "--addr", addr])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "keel serve did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    Serve(child)
}

/// A free local address to listen on.
pub fn free_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

/// What came back.
pub struct Reply {
    /// The status code.
    pub code: u16,
    /// The status line and headers.
    pub head: String,
    /// The body.
    pub body: String,
}

impl Reply {
    /// The body as JSON (null if it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_default()
    }

    /// The value of the first `name` header (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Sends one raw request (it should say `Connection: close`) and reads the whole reply.
pub fn send(addr: &str, request: &str) -> Reply {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let code = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap();
    Reply {
        code,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}
