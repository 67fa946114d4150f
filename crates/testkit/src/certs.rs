//! Throwaway X.509 material for the TLS tests, made by the `openssl` command: an authority, a
//! server certificate for 127.0.0.1 and client certificates whose CN is a PostgreSQL role (what
//! `hostssl … cert` in pg_hba.conf checks). EC P-256 keys, valid two days. Panics on failure:
//! test set-up only.

use std::path::{Path, PathBuf};
use std::process::Command;

/// `openssl ARGS…` in `dir`, failing the test on an error.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running openssl: {e}"));
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const EC: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
];

/// A self-signed certificate authority named `name` in `dir`: (its certificate, its key).
pub fn authority(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (format!("{name}.pem"), format!("{name}.key"));
    let subject = format!("/CN={name}");
    openssl(
        dir,
        &[
            &["req", "-x509"][..],
            &EC,
            &["-days", "2", "-subj", &subject],
            &["-keyout", &key, "-out", &cert],
        ]
        .concat(),
    );
    (dir.join(cert), dir.join(key))
}

/// A certificate with common name `cn` and the extensions `ext` (an openssl extension file's
/// lines), signed by `ca`, in `dir` as `{stem}.pem` and `{stem}.key` (PKCS#8).
fn signed(
    dir: &Path,
    ca: &(PathBuf, PathBuf),
    stem: &str,
    cn: &str,
    ext: &str,
) -> (PathBuf, PathBuf) {
    let (cert, key, req, cnf) = (
        format!("{stem}.pem"),
        format!("{stem}.key"),
        format!("{stem}.req"),
        format!("{stem}.cnf"),
    );
    let subject = format!("/CN={cn}");
    openssl(
        dir,
        &[
            &["req"][..],
            &EC,
            &["-subj", &subject, "-keyout", &key, "-out", &req],
        ]
        .concat(),
    );
    std::fs::write(dir.join(&cnf), ext).unwrap_or_else(|e| panic!("writing {cnf}: {e}"));
    let (ca_cert, ca_key) = (ca.0.display().to_string(), ca.1.display().to_string());
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &req,
            "-CA",
            &ca_cert,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &cnf,
            "-out",
            &cert,
        ],
    );
    (dir.join(cert), dir.join(key))
}

/// A server certificate and key for 127.0.0.1 signed by the authority `ca` (from
/// [`authority`]), in `dir`: (certificate, key).
pub fn leaf(dir: &Path, ca: &(PathBuf, PathBuf)) -> (PathBuf, PathBuf) {
    signed(
        dir,
        ca,
        "leaf",
        "127.0.0.1",
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
}

/// A client certificate for the role `user` (its CN) signed by the authority `ca`, in `dir`
/// under `stem`: (certificate, key in PKCS#8).
pub fn client(dir: &Path, ca: &(PathBuf, PathBuf), stem: &str, user: &str) -> (PathBuf, PathBuf) {
    signed(
        dir,
        ca,
        stem,
        user,
        "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
    )
}

/// `key` (PKCS#8 EC) rewritten as SEC1 (`BEGIN EC PRIVATE KEY`) next to it; its path.
pub fn sec1(key: &Path) -> PathBuf {
    let out = key.with_extension("sec1.key");
    let dir = key.parent().unwrap_or(Path::new("."));
    let (from, to) = (key.display().to_string(), out.display().to_string());
    openssl(dir, &["ec", "-in", &from, "-out", &to]);
    out
}
