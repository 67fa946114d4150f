//! Gate-notification tests' receiver and project: a webhook receiver on a real TCP port that
//! checks every signature with its own HMAC-SHA256 (the `hmac` crate, not Keel's code), a
//! project folder with a gated strategy and `notifications.yaml`, and `keel` processes run in
//! it with the webhook's secret in their environment.

use super::repo;
use hmac::{KeyInit, Mac};
use keel_runtime::embedded::Config;
use keel_spine::clock::{Clock, SystemClock};
use serde_json::Value;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The webhook's secret (`KEEL_TEST_HOOK_SECRET`).
pub const SECRET: &str = "whsec-test-0f3a9c1e7b";

/// One request the receiver got, and what it answered.
#[derive(Clone, Debug)]
pub struct Received {
    pub event: String,
    pub delivery: String,
    pub attempt: u32,
    pub answered: u16,
    pub body: Value,
}

/// A webhook receiver on a real TCP port: checks the signature of every request (and answers
/// 401 to a bad one), fails the first `fail_first[event]` requests of an event with a 500, and
/// every request while `down`.
pub struct Receiver {
    pub addr: String,
    pub got: Arc<Mutex<Vec<Received>>>,
    pub down: Arc<AtomicBool>,
}

impl Receiver {
    pub fn start(fail_first: HashMap<&'static str, usize>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let down = Arc::new(AtomicBool::new(false));
        let (g, d) = (got.clone(), down.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let Some((headers, body)) = read_request(&mut conn) else {
                    continue;
                };
                let header = |k: &str| headers.get(k).cloned().unwrap_or_default();
                let event = header("keel-event");
                let signed = signature_ok(&header("keel-signature"), &body);
                let mut got = g.lock().unwrap();
                let earlier = got.iter().filter(|r| r.event == event).count();
                let answered = if !signed {
                    401
                } else if d.load(Ordering::SeqCst)
                    || earlier < fail_first.get(event.as_str()).copied().unwrap_or(0)
                {
                    500
                } else {
                    200
                };
                got.push(Received {
                    event,
                    delivery: header("keel-delivery"),
                    attempt: header("keel-attempt").parse().unwrap_or(0),
                    answered,
                    body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                });
                drop(got);
                let _ = write!(
                    conn,
                    "HTTP/1.1 {answered} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        Receiver { addr, got, down }
    }

    pub fn got(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Waits (60 s at most: a hang guard, not a timing assertion) until `done` holds.
    pub fn wait(&self, what: &str, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got = self.got();
            if done(&got) {
                return got;
            }
            assert!(Instant::now() < deadline, "{what}: received {got:#?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn read_request(conn: &mut std::net::TcpStream) -> Option<(HashMap<String, String>, Vec<u8>)> {
    let mut r = BufReader::new(conn);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let mut headers = HashMap::new();
    loop {
        line.clear();
        r.read_line(&mut line).ok()?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':')?;
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
    }
    let len: usize = headers.get("content-length")?.parse().ok()?;
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some((headers, body))
}

/// `Keel-Signature: t=<unix s>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`, checked with the
/// `hmac` crate (not Keel's code), and a timestamp within five minutes of now.
fn signature_ok(header: &str, body: &[u8]) -> bool {
    let parts: HashMap<&str, &str> = header
        .split(',')
        .filter_map(|p| p.split_once('='))
        .collect();
    let (Some(t), Some(v1)) = (parts.get("t"), parts.get("v1")) else {
        return false;
    };
    let Ok(t_s) = t.parse::<i64>() else {
        return false;
    };
    if (SystemClock.now().timestamp() - t_s).abs() > 300 {
        return false;
    }
    let mut mac = hmac::Hmac::<sha2_011::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    hex::encode(mac.finalize().into_bytes()) == *v1
}

/// A project folder: the repository's tools, prompts, model script and prices, its
/// `support-short` strategy with `approval`, and `notifications.yaml`.
pub fn project(dir: &Path, approval: &str, notifications: &str) -> PathBuf {
    let p = dir.join("project");
    for sub in ["tools", "prompts", "models"] {
        std::fs::create_dir_all(p.join(sub)).unwrap();
        for e in std::fs::read_dir(repo().join(sub)).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_file() {
                std::fs::copy(e.path(), p.join(sub).join(e.file_name())).unwrap();
            }
        }
    }
    std::fs::copy(repo().join("prices.toml"), p.join("prices.toml")).unwrap();
    std::fs::create_dir_all(p.join("strategies")).unwrap();
    let strategy = std::fs::read_to_string(repo().join("strategies/support-short.yaml")).unwrap();
    std::fs::write(
        p.join("strategies/support-short.yaml"),
        format!("{strategy}\napproval: {approval}\n"),
    )
    .unwrap();
    std::fs::write(p.join("notifications.yaml"), notifications).unwrap();
    p
}

pub fn config(project: &Path) -> Config {
    Config {
        tools: project.join("tools"),
        strategies: project.join("strategies"),
        prices: project.join("prices.toml"),
    }
}

pub struct Proc {
    pub child: Child,
    pub stderr: PathBuf,
}

impl Proc {
    pub fn spawn(project: &Path, data: &Path, args: &[&str], log: &Path) -> Proc {
        Proc::spawn_with(project, &[], data, args, log)
    }

    /// Like [`Proc::spawn`], with `global` arguments before `--data` (`--config keel.toml`).
    pub fn spawn_with(
        project: &Path,
        global: &[&OsStr],
        data: &Path,
        args: &[&str],
        log: &Path,
    ) -> Proc {
        let child = Command::new(env!("CARGO_BIN_EXE_keel"))
            .current_dir(project)
            .args(global)
            .arg("--data")
            .arg(data)
            .args(args)
            .env("KEEL_TEST_HOOK_SECRET", SECRET)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        Proc {
            child,
            stderr: log.to_owned(),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `notifications.yaml` with one webhook, `refunds-oncall`, to `receiver` for `events` of queue
/// `refunds`, retried quickly.
pub fn hook(receiver: &Receiver, events: &str) -> String {
    format!(
        "webhooks:\n  - name: refunds-oncall\n    url: http://{}/keel\n    secret_env: KEEL_TEST_HOOK_SECRET\n    queues: [refunds]\n    events: {events}\n    retry: {{ max_attempts: 20, initial_backoff_ms: 100, max_backoff_ms: 400 }}\n",
        receiver.addr
    )
}
