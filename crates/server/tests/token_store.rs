//! The token store's contract, run on both backends (`DIR/auth.db` and a real PostgreSQL 18
//! server started by the test), each through two handles standing for two server processes: a
//! token made through one resolves through the other, a revocation through one refuses it on
//! both at once and ends its sessions, expiry and unknown ids hold, and sessions are shared.

#![allow(clippy::unwrap_used)]

use keel_memory::pgserver::PgServer;
use keel_server::auth::{Revoked, Role, Tokens};
use keel_server::auth_pg::PgTokens;

fn contract(a: &Tokens, b: &Tokens) {
    let now = 1_000;
    let token = a
        .create(
            "acme",
            &[Role::Agent, Role::Approver],
            "bot",
            "2026-11-27T00:00:00Z",
        )
        .unwrap();
    let p = b
        .resolve(&token, now)
        .unwrap()
        .expect("made on A, known on B");
    assert_eq!((p.tenant.as_str(), p.name.as_str()), ("acme", "bot"));
    assert!(p.may(&[Role::Approver]));
    assert_eq!(b.resolve("keel_not-a-token", now).unwrap(), None);

    // Listing is per tenant and shows the use, never the token.
    let listed = b.list(Some("acme")).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, Tokens::id_of(&token));
    assert_eq!(listed[0].last_used_at, Some(now));
    assert!(b.list(Some("globex")).unwrap().is_empty());

    // A session opened through A is known to B.
    let sid = a.create_session(&token, now, 3_600).unwrap().unwrap();
    assert_eq!(
        b.resolve_session(&sid, now + 1).unwrap().unwrap().tenant,
        "acme"
    );
    assert_eq!(
        b.resolve_session(&sid, now + 3_600).unwrap(),
        None,
        "expired"
    );

    // Revoked through B: refused by both at the next request, its sessions gone.
    let id = Tokens::id_of(&token);
    assert_eq!(
        b.revoke(&id, Some("globex"), now + 2).unwrap(),
        Revoked::Unknown
    );
    assert!(matches!(
        b.revoke(&id, Some("acme"), now + 2).unwrap(),
        Revoked::Now(_)
    ));
    assert_eq!(a.resolve(&token, now + 3).unwrap(), None);
    assert_eq!(b.resolve(&token, now + 3).unwrap(), None);
    assert_eq!(a.resolve_session(&sid, now + 3).unwrap(), None);
    assert!(matches!(
        a.revoke(&id, None, now + 4).unwrap(),
        Revoked::Already(_)
    ));
    assert_eq!(a.list(None).unwrap()[0].status(now + 4), "revoked");

    // Expiry; logout.
    let short = a
        .issue(
            "acme",
            &[Role::Agent],
            "temp",
            "2026-11-27T00:00:01Z",
            Some(now + 10),
        )
        .unwrap();
    assert!(b.resolve(&short, now + 9).unwrap().is_some());
    assert_eq!(b.resolve(&short, now + 10).unwrap(), None);
    let other = a
        .create("acme", &[Role::Operator], "ops", "2026-11-27T00:00:02Z")
        .unwrap();
    let sid = b.create_session(&other, now, 60).unwrap().unwrap();
    assert!(a.revoke_session(&sid).unwrap());
    assert_eq!(b.resolve_session(&sid, now + 1).unwrap(), None);
    assert!(!b.revoke_session(&sid).unwrap());
    assert_eq!(b.create_session("keel_unknown", now, 60).unwrap(), None);
}

#[test]
fn tokens_on_sqlite() {
    let tmp = tempfile::tempdir().unwrap();
    contract(
        &Tokens::open(tmp.path()).unwrap(),
        &Tokens::open(tmp.path()).unwrap(),
    );
}

#[test]
fn tokens_on_postgres() {
    let pg = PgServer::start().unwrap();
    let url = pg.url("postgres");
    let a = Tokens::on(Box::new(PgTokens::connect(&url).unwrap()));
    let b = Tokens::on(Box::new(PgTokens::connect(&url).unwrap()));
    contract(&a, &b);
}

#[test]
fn an_unreachable_token_database_is_an_error_without_the_password() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = PgTokens::connect(&format!(
        "postgres://keel:pw-Tq9-never-shown@127.0.0.1:{port}/keel"
    ))
    .err()
    .expect("nothing listens there")
    .to_string();
    assert!(!err.contains("pw-Tq9-never-shown"), "{err}");
    assert!(err.contains("127.0.0.1"), "{err}");
}
