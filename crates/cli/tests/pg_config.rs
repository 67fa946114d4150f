//! Bad PostgreSQL configuration, as every command that opens the spine meets it (`config
//! check`, `run`, `worker`, `serve`): an unknown key or a wrong type beside or on the line that
//! holds the URL's password, a URL the driver cannot parse, nothing listening, a wrong password
//! (a real PostgreSQL 18 with a password role). Each is an error naming the key and the file,
//! exits non-zero (a server never starts on it), and never shows the password.

#![allow(clippy::unwrap_used)]

mod common;
use common::repo;
use common::serve::free_addr;

use keel_memory::pgserver::PgServer;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The password in every URL; never printed.
const SECRET: &str = "pw-Hm52-config-never-printed";

/// `keel ARGS…` with `cfg` from the repository's root, killed after 30 s if it has not ended
/// (a server that started despite a bad file). Returns its exit success and everything it printed.
fn keel_bounded(cfg: &Path, data: &Path, args: &[&str]) -> (bool, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_keel"))
        .current_dir(repo())
        .arg("--config")
        .arg(cfg)
        .arg("--data")
        .arg(data)
        .args(args)
        .env_remove("KEEL_SPINE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn bad_postgres_configuration_stops_every_command_naming_key_and_file_never_the_password() {
    let pg = PgServer::start().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(pg.add_password_role("keel", "the-right-one-Vb6"))
        .unwrap();
    let port = pg.port();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = |port: &str| format!("postgres://keel:{SECRET}@127.0.0.1:{port}/postgres");
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("keel.toml");
    let data = tmp.path().join("data");
    let right = format!("postgres://keel:the-right-one-Vb6@127.0.0.1:{port}/postgres");
    let cases: Vec<(String, Vec<String>)> = vec![
        // An unknown key beside a URL that holds the password.
        (
            format!(
                "[spine]\nurl = \"{}\"\npool_size = 4\n",
                url(&port.to_string())
            ),
            vec!["keel.toml:3:1: spine.pool_size: unknown field `pool_size`".into()],
        ),
        // The wrong type, on the password's own line.
        (
            format!("[spine]\nurl = [\"{}\"]\n", url(&port.to_string())),
            vec!["keel.toml:2:7: spine.url: invalid type: sequence, expected a string".into()],
        ),
        (
            format!("[spine]\nurl = \"{right}\"\n[workers]\nlease_secs = \"thirty\"\n"),
            vec!["keel.toml:4:14: workers.lease_secs: invalid type: string \"thirty\"".into()],
        ),
        // A URL the driver cannot parse, an unreachable one, a wrong password.
        (
            format!("[spine]\nurl = \"{}\"\n", url("no-port")),
            vec![
                "keel.toml: spine.url: cannot".into(),
                "postgres://keel:***@127.0.0.1:no-port/postgres".into(),
            ],
        ),
        (
            format!("[spine]\nurl = \"{}\"\n", url(&closed.to_string())),
            vec![
                format!("keel.toml: spine.url: cannot"),
                format!("postgres://keel:***@127.0.0.1:{closed}/postgres"),
                "Connection refused".into(),
            ],
        ),
        (
            format!("[spine]\nurl = \"{}\"\n", url(&port.to_string())),
            vec![
                "keel.toml: spine.url: cannot".into(),
                "password authentication failed for user \"keel\"".into(),
            ],
        ),
    ];
    let addr = free_addr();
    let commands: [&[&str]; 4] = [
        &["config", "check"],
        &["run", "--tenant", "acme", "Where is my order A-1017?"],
        &["worker", "--once"],
        &["serve", "--addr", &addr, "--no-workers"],
    ];
    for (text, wanted) in &cases {
        std::fs::write(&cfg, text).unwrap();
        for args in commands {
            let (ok, out) = keel_bounded(&cfg, &data, args);
            assert!(!ok, "keel {args:?} accepted\n{text}\n{out}");
            for w in wanted {
                assert!(
                    out.contains(w.as_str()),
                    "keel {args:?} on\n{text}\nwanted {w:?} in:\n{out}"
                );
            }
            assert!(
                !out.contains(SECRET),
                "keel {args:?} printed the password:\n{out}"
            );
        }
    }
    // The right password: every command reaches the spine.
    std::fs::write(&cfg, format!("[spine]\nurl = \"{right}\"\n")).unwrap();
    let (ok, out) = keel_bounded(&cfg, &data, commands[1]);
    assert!(ok, "{out}");
}
