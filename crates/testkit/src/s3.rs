//! A real S3-compatible server for tests: PyPI's `moto[server]` (`moto_server`), installed by
//! `scripts/test-services` (`$KEEL_TEST_MOTO_BIN`), started on a free port of 127.0.0.1 and killed
//! when the handle drops. Missing binaries fail the test; they never skip it. moto accepts any
//! access key and secret, and keeps its buckets in the process's memory.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The access key id tests sign with (moto accepts any).
pub const ACCESS_KEY_ID: &str = "keel-test-access";
/// The secret access key tests sign with; tests check it is never printed.
pub const SECRET_ACCESS_KEY: &str = "keel-test-secret-Vq93-never-printed";

/// A running `moto_server`.
pub struct MotoServer {
    child: Child,
    port: u16,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

impl MotoServer {
    /// Starts `$KEEL_TEST_MOTO_BIN` (panics, failing the test, if it is not set or does not start).
    pub fn start() -> Self {
        let bin = std::env::var_os("KEEL_TEST_MOTO_BIN").expect(
            "KEEL_TEST_MOTO_BIN is not set: run scripts/test (scripts/test-services installs moto[server])",
        );
        Self::start_from(Path::new(&bin))
    }

    /// Starts the `moto_server` at `bin`.
    pub fn start_from(bin: &Path) -> Self {
        for _attempt in 0..5 {
            let port = free_port();
            let mut child = Command::new(bin)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return MotoServer { child, port };
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break; // exited: most likely the port was taken; try another
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("moto_server ({}) did not start", bin.display());
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Creates a bucket (moto takes an unsigned `PUT /bucket`).
    pub fn create_bucket(&self, name: &str) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connecting to moto");
        write!(
            s,
            "PUT /{name} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )
        .expect("sending CreateBucket");
        let mut reply = String::new();
        s.read_to_string(&mut reply)
            .expect("reading CreateBucket's reply");
        assert!(
            reply.starts_with("HTTP/1.1 200") || reply.starts_with("HTTP/1.0 200"),
            "CreateBucket {name}: {reply}"
        );
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
