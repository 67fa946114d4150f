//! `keel.toml` as users run it, through the `keel` binary: `keel config check` on good and bad
//! files (every error names the key and the file; passwords and credentials never appear in any
//! output), and a `keel run` whose blobs live on S3 (a real moto server) and whose memory lives
//! in pgvector (a real PostgreSQL 18), chosen by the file alone, replayed from the recorded
//! outputs in the bucket; `keel memory erase` then reaches both. And a run whose memory embeds
//! with an OpenAI-compatible embedder (a real HTTP server on 127.0.0.1) the file names. The servers come from `scripts/test-services` (`$KEEL_TEST_MOTO_BIN`,
//! `$KEEL_TEST_PG_BIN`); missing ones fail the tests, never skip them.

#![allow(clippy::unwrap_used)]

mod common;
use common::{ok, repo};

use keel_memory::pgserver::PgServer;
use keel_spine::{BlobRef, BlobStore, S3BlobStore, S3Options, SpineError};
use keel_testkit::s3::{ACCESS_KEY_ID, MotoServer, SECRET_ACCESS_KEY};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

/// A password in database URLs; no output may show it.
const PG_PASSWORD: &str = "pgpw-Kx81-never-printed";

/// `keel ARGS…` from `cwd` with `env` set; fails the test if any secret shows in its output.
fn keel_with(cwd: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_keel"));
    c.current_dir(cwd)
        .args(args)
        .env_remove("KEEL_DATA")
        .env_remove("KEEL_CONFIG")
        .env_remove("KEEL_PROJECTIONS_URL");
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    for (name, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        let text = String::from_utf8_lossy(bytes);
        for secret in [PG_PASSWORD, SECRET_ACCESS_KEY] {
            assert!(
                !text.contains(secret),
                "keel {args:?} printed a secret on {name}:\n{text}"
            );
        }
    }
    out
}

/// The error a failing `keel ARGS…` printed (fails the test if it succeeded).
fn fails(out: Output) -> String {
    assert!(
        !out.status.success(),
        "expected a failure, got: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(out.status.code(), Some(1));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn no_file_is_the_embedded_default() {
    let tmp = tempfile::tempdir().unwrap();
    let out = ok(keel_with(tmp.path(), &[], &["config", "check"]));
    assert!(out.contains("# file: none"), "{out}");
    for line in [
        "spine.url = \"sqlite:.keel\"    # default",
        "memory.backend = \"embedded\"    # default",
        "blobs.url = \"file:.keel/blobs\"    # default",
        "workers.concurrency = 8    # default",
    ] {
        assert!(out.contains(line), "{line:?} missing in:\n{out}");
    }
    // Checking creates nothing.
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}

#[test]
fn bad_files_are_errors_naming_the_key_and_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("keel.toml");
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cases: Vec<(String, &[&str])> = vec![
        (
            "[memory]\nbakend = \"pgvector\"\n".into(),
            &["keel.toml:2:1: memory.bakend", "unknown field `bakend`"],
        ),
        (
            "colour = \"blue\"\n".into(),
            &["keel.toml:1:1: colour", "unknown field `colour`"],
        ),
        (
            "[workers]\nconcurrency = \"eight\"\n".into(),
            &["keel.toml:2:15: workers.concurrency", "invalid type: string \"eight\""],
        ),
        (
            "[workers\n".into(),
            &["keel.toml:1:", "not valid TOML"],
        ),
        (
            "[memory]\nbackend = \"redis\"\n".into(),
            &["keel.toml:2:11: memory.backend: unknown variant `redis`"],
        ),
        (
            "[blobs]\nurl = \"ftp://files/blobs\"\n".into(),
            &["keel.toml: blobs.url", "neither file:DIR nor s3://"],
        ),
        (
            format!("[blobs]\nurl = \"s3://b/p\"\nsecret_access_key_env = \"{SECRET_ACCESS_KEY}\"\n"),
            &["keel.toml: blobs.secret_access_key_env", "not an environment variable's name"],
        ),
        (
            "[blobs]\nurl = \"s3://b/p\"\naccess_key_id_env = \"KEEL_TEST_UNSET_VAR_1\"\nsecret_access_key_env = \"KEEL_TEST_UNSET_VAR_2\"\n".into(),
            &["keel.toml: blobs.access_key_id_env", "KEEL_TEST_UNSET_VAR_1 is not set"],
        ),
        (
            format!(
                "[memory]\nbackend = \"pgvector\"\nurl = \"postgres://keel:{PG_PASSWORD}@127.0.0.1:{closed_port}/keel\"\n"
            ),
            &[
                "keel.toml: memory.url: cannot connect to postgres://keel:***@127.0.0.1:",
                "Connection refused",
            ],
        ),
        (
            format!(
                "[projections]\nurl = \"postgresql://keel@127.0.0.1:{closed_port}/p?password={PG_PASSWORD}\"\n"
            ),
            &["keel.toml: projections.url: cannot connect to postgresql://keel@127.0.0.1:", "password=***"],
        ),
        (
            "[embedder]\nkind = \"openai\"\nurl = \"https://emb.example/v1\"\nmodel = \"m\"\n".into(),
            &["keel.toml: embedder.kind", "needs embedder.dim"],
        ),
    ];
    for (text, wanted) in cases {
        std::fs::write(&file, &text).unwrap();
        let err = fails(keel_with(tmp.path(), &[], &["config", "check"]));
        for w in wanted {
            assert!(err.contains(w), "for\n{text}\nwanted {w:?} in:\n{err}");
        }
        // A file that does not resolve breaks every command, with the same words, before
        // anything is opened (reaching the backends is for `config check` and their first use).
        if !text.contains("127.0.0.1") && !text.contains("UNSET") {
            let other = fails(keel_with(tmp.path(), &[], &["tools", "list"]));
            assert!(other.contains(wanted[0]), "{other}");
        }
    }
    assert!(!tmp.path().join(".keel").exists(), "no store was created");

    // An OpenAI-compatible embedder is configured by the NAME of its key's variable: unset, it is
    // an error naming the key; set, the check passes and never shows the key.
    std::fs::write(
        &file,
        "[embedder]\nkind = \"openai\"\nurl = \"http://127.0.0.1:9/v1\"\nmodel = \"text-embedding-3-small\"\ndim = 1536\napi_key_env = \"KEEL_TEST_EMBED_KEY\"\n",
    )
    .unwrap();
    let err = fails(keel_with(tmp.path(), &[], &["config", "check"]));
    assert!(
        err.contains(
            "keel.toml: embedder.api_key_env: the variable KEEL_TEST_EMBED_KEY is not set"
        ),
        "{err}"
    );
    let out = keel_with(
        tmp.path(),
        &[("KEEL_TEST_EMBED_KEY", SECRET_ACCESS_KEY)],
        &["config", "check"],
    );
    let stdout = ok(out);
    assert!(
        stdout.contains("embedder.kind = \"openai\"    # keel.toml")
            && stdout.contains("embedder.api_key_env = \"KEEL_TEST_EMBED_KEY\""),
        "{stdout}"
    );

    // A --config that does not exist is named.
    let err = fails(keel_with(
        tmp.path(),
        &[],
        &["--config", "nowhere/keel.toml", "config", "check"],
    ));
    assert!(
        err.contains("--config nowhere/keel.toml: no such file"),
        "{err}"
    );

    // An unreachable PostgreSQL spine is named, with its file, by the commands that run agents.
    std::fs::write(
        &file,
        format!("[spine]\nurl = \"postgres://keel:{PG_PASSWORD}@127.0.0.1:{closed_port}/spine\"\n"),
    )
    .unwrap();
    let err = fails(keel_with(
        tmp.path(),
        &[],
        &["run", "--strategy", "support-short", "hello"],
    ));
    assert!(
        err.contains(
            "keel.toml: spine.url: cannot open the PostgreSQL spine at postgres://keel:***@127.0.0.1:"
        ),
        "{err}"
    );
}

#[test]
fn a_wrong_password_is_named_and_never_shown() {
    let pg = PgServer::start().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(pg.add_password_role("keel", "the-right-one-Qz5"))
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("keel.toml"),
        format!(
            "[projections]\nurl = \"postgres://keel:{PG_PASSWORD}@127.0.0.1:{}/postgres\"\n",
            pg.port()
        ),
    )
    .unwrap();
    let err = fails(keel_with(tmp.path(), &[], &["config", "check"]));
    assert!(
        err.contains(
            "keel.toml: projections.url: cannot connect to postgres://keel:***@127.0.0.1:"
        ) && err.contains("password authentication failed for user \"keel\""),
        "{err}"
    );
    // The right password passes; the variable overrides the file, and says so.
    let right = format!(
        "postgres://keel:the-right-one-Qz5@127.0.0.1:{}/postgres",
        pg.port()
    );
    let out = keel_with(
        tmp.path(),
        &[("KEEL_PROJECTIONS_URL", &right)],
        &["config", "check"],
    );
    let stdout = ok(out);
    assert!(
        stdout.contains("projections.url = \"postgres://keel:***@127.0.0.1:")
            && stdout.contains("# $KEEL_PROJECTIONS_URL")
            && !stdout.contains("the-right-one-Qz5"),
        "{stdout}"
    );
}

/// The blob references of an execution's events.
fn output_refs(events: &str) -> Vec<BlobRef> {
    events
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|e| e["data"]["output_ref"].as_str().map(str::to_owned))
        .map(|r| r.parse().unwrap())
        .collect()
}

#[test]
fn a_run_on_s3_blobs_and_pgvector_memory_through_keel_toml_then_erasure_reaches_both() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let moto = MotoServer::start();
    moto.create_bucket("keel-blobs");
    let pg = PgServer::start().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let db = rt.block_on(pg.create_database("keel_memory")).unwrap();
    // Trust authentication ignores the password; it is there to be redacted.
    let db = db.replacen("postgres@", &format!("postgres:{PG_PASSWORD}@"), 1);
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("keel.toml");
    std::fs::write(
        &file,
        format!(
            r#"# A scaled-out deployment's backends, picked by configuration alone.
[spine]
url = "sqlite:store"

[memory]
backend = "pgvector"
url = "{db}"

[blobs]
url = "s3://keel-blobs/prod"
endpoint = "{endpoint}"
region = "us-east-1"
access_key_id_env = "KEEL_TEST_S3_KEY_ID"
secret_access_key_env = "KEEL_TEST_S3_SECRET"

[workers]
concurrency = 4
"#,
            endpoint = moto.endpoint()
        ),
    )
    .unwrap();
    let config = file.to_str().unwrap();
    let env = [
        ("KEEL_TEST_S3_KEY_ID", ACCESS_KEY_ID),
        ("KEEL_TEST_S3_SECRET", SECRET_ACCESS_KEY),
    ];
    let keel = |args: &[&str]| {
        let mut all = vec!["--config", config];
        all.extend(args);
        keel_with(&repo(), &env, &all)
    };

    let check = ok(keel(&["config", "check"]));
    assert!(
        check.contains(&format!("# file: {config}"))
            && check.contains("memory.url = \"postgresql://postgres:***@127.0.0.1:")
            && check.contains("blobs.url = \"s3://keel-blobs/prod\"")
            && check.contains("blobs.secret_access_key_env = \"KEEL_TEST_S3_SECRET\"")
            && check.contains("workers.concurrency = 4"),
        "{check}"
    );

    let strategies = repo().join("strategies/memory");
    let run: Value = serde_json::from_str(&ok(keel(&[
        "run",
        "--json",
        "--strategy",
        "support-memory",
        "--strategies",
        strategies.to_str().unwrap(),
        "--tenant",
        "acme",
        "--subject",
        "cust-7",
        "Where is order A-1001? Please always send me updates by e-mail.",
    ])))
    .unwrap();
    assert_eq!(run["outcome"], "success", "{run}");
    let store = tmp.path().join("store");
    assert!(
        store.join("spine.db").is_file(),
        "spine.url names the store"
    );
    assert!(!store.join("blobs").exists(), "no blob was written locally");
    assert!(
        !store.join("memory.db").exists(),
        "no embedded memory was opened"
    );

    let exec = run["exec_id"].as_str().unwrap();
    let refs = output_refs(&ok(keel(&["events", exec])));
    assert!(!refs.is_empty(), "the tools' outputs are blobs");
    let blobs = S3BlobStore::new(&S3Options {
        bucket: "keel-blobs".into(),
        prefix: "prod".into(),
        endpoint: Some(moto.endpoint()),
        region: "us-east-1".into(),
        access_key_id: ACCESS_KEY_ID.into(),
        secret_access_key: SECRET_ACCESS_KEY.into(),
        session_token: None,
        timeout: Duration::from_secs(10),
    })
    .unwrap();
    for r in &refs {
        assert!(rt.block_on(blobs.get(r)).is_ok(), "{r} is in the bucket");
    }

    let facts = ok(keel(&[
        "memory",
        "list",
        "--tenant",
        "acme",
        "--subject",
        "cust-7",
    ]));
    assert!(
        facts.contains("updates by e-mail"),
        "pgvector holds the fact: {facts}"
    );
    let in_pg: i64 = rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(&db, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
            .query_one("SELECT count(*) FROM keel_facts", &[])
            .await
            .unwrap()
            .get(0)
    });
    assert!(in_pg >= 1, "the facts are rows of the pgvector database");

    // A replay reads the recorded outputs from the bucket (and retrieves from pgvector).
    let replay: Value = serde_json::from_str(&ok(keel(&[
        "replay",
        exec,
        "--strategies",
        strategies.to_str().unwrap(),
        "--recorded-reads",
        "--json",
    ])))
    .unwrap();
    assert_eq!(replay["original"], exec, "{replay}");
    assert_eq!(replay["diff"]["after"]["outcome"], "success", "{replay}");
    assert!(!store.join("blobs").exists() && !store.join("memory.db").exists());

    let report: Value = serde_json::from_str(&ok(keel(&[
        "memory", "erase", "cust-7", "--tenant", "acme",
    ])))
    .unwrap();
    assert!(report["facts_erased"].as_u64().unwrap() >= 1, "{report}");
    assert!(report["blobs_deleted"].as_u64().unwrap() >= 1, "{report}");
    for r in &refs {
        assert!(
            matches!(rt.block_on(blobs.get(r)), Err(SpineError::BlobNotFound(_))),
            "{r} left the bucket"
        );
    }
    let facts = ok(keel(&[
        "memory",
        "list",
        "--tenant",
        "acme",
        "--subject",
        "cust-7",
    ]));
    assert!(facts.trim().is_empty(), "{facts}");
}

/// A minimal OpenAI-compatible `/v1/embeddings` server on 127.0.0.1 (HTTP/1.1, keep-alive):
/// 16-dimensional bag-of-words vectors, and every `Authorization` header it was sent.
fn embeddings_server() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let log = log.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut out = conn;
                loop {
                    let (mut length, mut auth) = (0usize, String::new());
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    loop {
                        line.clear();
                        reader.read_line(&mut line).unwrap();
                        let l = line.trim_end();
                        if l.is_empty() {
                            break;
                        }
                        if let Some((k, v)) = l.split_once(':') {
                            match k.to_ascii_lowercase().as_str() {
                                "content-length" => length = v.trim().parse().unwrap(),
                                "authorization" => auth = v.trim().to_owned(),
                                _ => {}
                            }
                        }
                    }
                    log.lock().unwrap().push(auth);
                    let mut body = vec![0u8; length];
                    reader.read_exact(&mut body).unwrap();
                    let req: Value = serde_json::from_slice(&body).unwrap();
                    let data: Vec<Value> = req["input"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .enumerate()
                        .map(|(i, t)| {
                            let mut v = [0.01f64; 16];
                            for w in t
                                .as_str()
                                .unwrap()
                                .to_lowercase()
                                .split(|c: char| !c.is_alphanumeric())
                            {
                                if !w.is_empty() {
                                    let b = w.bytes().map(usize::from).sum::<usize>() % 16;
                                    v[b] += 1.0;
                                }
                            }
                            serde_json::json!({"index": i, "embedding": v.to_vec()})
                        })
                        .collect();
                    let reply = serde_json::json!({"object": "list", "data": data}).to_string();
                    write!(
                        out,
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{reply}",
                        reply.len()
                    )
                    .unwrap();
                }
            });
        }
    });
    (url, seen)
}

#[test]
fn a_run_embeds_with_the_openai_compatible_embedder_keel_toml_names() {
    let (url, seen) = embeddings_server();
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("keel.toml");
    std::fs::write(
        &file,
        format!(
            "[embedder]\nkind = \"openai\"\nurl = \"{url}\"\nmodel = \"bag-of-words\"\nversion = \"t1\"\ndim = 16\napi_key_env = \"KEEL_TEST_EMBED_KEY\"\n"
        ),
    )
    .unwrap();
    let data = tmp.path().join("store");
    let env = [("KEEL_TEST_EMBED_KEY", SECRET_ACCESS_KEY)];
    let keel = |args: &[&str]| {
        let mut all = vec![
            "--config",
            file.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
        ];
        all.extend(args);
        keel_with(&repo(), &env, &all)
    };
    let strategies = repo().join("strategies/memory");
    let run: Value = serde_json::from_str(&ok(keel(&[
        "run",
        "--json",
        "--strategy",
        "support-memory",
        "--strategies",
        strategies.to_str().unwrap(),
        "--tenant",
        "acme",
        "--subject",
        "cust-9",
        "Where is order A-1001? Please always send me updates by e-mail.",
    ])))
    .unwrap();
    assert_eq!(run["outcome"], "success", "{run}");
    let search = ok(keel(&[
        "memory",
        "search",
        "--tenant",
        "acme",
        "--subject",
        "cust-9",
        "how does the customer want order updates",
    ]));
    assert!(search.contains("updates by e-mail"), "{search}");
    assert!(
        search.contains("bag-of-words@t1/16"),
        "pinned to the configured model: {search}"
    );
    let seen = seen.lock().unwrap();
    assert!(!seen.is_empty(), "the configured server embedded");
    assert!(
        seen.iter()
            .all(|a| *a == format!("Bearer {SECRET_ACCESS_KEY}")),
        "the key came from the variable keel.toml names"
    );
}
