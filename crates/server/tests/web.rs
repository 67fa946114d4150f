//! The browser-facing protections of a real server on 127.0.0.1: the UI's cookie is a session id
//! (not the token) that logout revokes, a cross-origin form post carrying the cookie changes
//! nothing, every UI post needs its session's CSRF token, the API takes only JSON bodies and only
//! bearer tokens, and every response carries the security headers.

#![allow(clippy::unwrap_used)]

mod common;
use common::repo;

use keel_runtime::embedded::{Config, Embedded};
use keel_server::auth::{Role, Tokens};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;
use std::time::{Duration, Instant};

struct Server {
    _tmp: tempfile::TempDir,
    _env: Embedded,
    base: String,
    http: reqwest::Client,
    token: String,
}

async fn server() -> Server {
    let tmp = tempfile::tempdir().unwrap();
    let repo = repo();
    let config = Config {
        tools: repo.join("tools"),
        strategies: repo.join("strategies"),
        prices: repo.join("prices.toml"),
    };
    let data = tmp.path().join("data");
    let env = common::open(&data, &config);
    let store = Tokens::open(&data).unwrap();
    let token = store
        .create(
            "acme",
            &[Role::Agent, Role::Approver, Role::Operator],
            "ada",
            "2026-11-25T00:00:00Z",
        )
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let state = keel_server::App::new(&env, store);
    tokio::spawn(keel_server::serve(listener, state));
    let _ = rustls::crypto::ring::default_provider().install_default();
    Server {
        _tmp: tmp,
        _env: env,
        base,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        token,
    }
}

impl Server {
    async fn api(&self, method: reqwest::Method, path: &str, body: Option<&str>) -> Value {
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            r = r
                .header("content-type", "application/json")
                .body(b.to_owned());
        }
        let resp = r.send().await.unwrap();
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
        resp.json().await.unwrap()
    }

    /// Logs in through the form; returns the `Set-Cookie` header and the `name=value` pair.
    async fn login(&self) -> (String, String) {
        let r = self
            .http
            .post(format!("{}/ui/login", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("origin", &self.base)
            .body(format!("token={}", self.token))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        let set = r.headers()["set-cookie"].to_str().unwrap().to_owned();
        let pair = set.split(';').next().unwrap().to_owned();
        (set, pair)
    }

    async fn page(&self, cookie: &str, path: &str) -> (StatusCode, HeaderMap, String) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap();
        (r.status(), r.headers().clone(), r.text().await.unwrap())
    }

    /// A form post with the cookie, from `origin` (or no Origin header at all).
    async fn post_form(
        &self,
        cookie: &str,
        origin: Option<&str>,
        path: &str,
        form: &str,
    ) -> StatusCode {
        let mut r = self
            .http
            .post(format!("{}{path}", self.base))
            .header("cookie", cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form.to_owned());
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        r.send().await.unwrap().status()
    }

    async fn pending_gate(&self) -> (String, String) {
        let v = self
            .api(
                reqwest::Method::POST,
                "/v1/executions",
                Some(r#"{"goal":"Please refund order 1001"}"#),
            )
            .await;
        let exec = v["exec_id"].as_str().unwrap().to_owned();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v = self
                .api(reqwest::Method::GET, "/v1/gates?status=pending", None)
                .await;
            if let Some(g) = v["gates"]
                .as_array()
                .unwrap()
                .iter()
                .find(|g| g["exec_id"] == exec.as_str())
            {
                return (exec, g["gate_id"].as_str().unwrap().to_owned());
            }
            assert!(Instant::now() < deadline, "no gate for {exec}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn gate_pending(&self, gate: &str) -> bool {
        let v = self
            .api(reqwest::Method::GET, &format!("/v1/gates/{gate}"), None)
            .await;
        v["decision"].is_null()
    }

    async fn switches(&self) -> usize {
        let v = self
            .api(reqwest::Method::GET, "/v1/kill-switches", None)
            .await;
        v["kill_switches"].as_array().unwrap().len()
    }
}

fn csrf_in(html: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let at = html.find(marker).expect("a form with a CSRF token") + marker.len();
    html.get(at..)
        .unwrap()
        .chars()
        .take_while(|c| *c != '"')
        .collect()
}

fn assert_security_headers(h: &HeaderMap, what: &str) {
    let get = |n: &str| {
        h.get(n)
            .unwrap_or_else(|| panic!("{what}: no {n}"))
            .to_str()
            .unwrap()
            .to_owned()
    };
    let csp = get("content-security-policy");
    assert!(
        csp.contains("frame-ancestors 'none'") && !csp.contains("unsafe-inline"),
        "{what}: {csp}"
    );
    assert_eq!(get("x-content-type-options"), "nosniff", "{what}");
    assert_eq!(get("x-frame-options"), "DENY", "{what}");
    assert_eq!(get("referrer-policy"), "no-referrer", "{what}");
    assert_eq!(get("cache-control"), "no-store", "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_origin_post_with_the_session_cookie_changes_nothing() {
    let srv = server().await;
    let (_exec, gate) = srv.pending_gate().await;
    let (set_cookie, cookie) = srv.login().await;
    // The cookie is a session id, never the token, and scoped to the UI.
    assert!(!set_cookie.contains(&srv.token), "{set_cookie}");
    assert!(cookie.starts_with("keel_session=ks_"), "{set_cookie}");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/ui", "Max-Age="] {
        assert!(set_cookie.contains(attr), "{attr}: {set_cookie}");
    }
    let (status, headers, html) = srv.page(&cookie, "/ui/gates").await;
    assert_eq!(status, StatusCode::OK);
    assert_security_headers(&headers, "/ui/gates");
    let csrf = csrf_in(&html);
    let decide = format!("/ui/gates/{gate}/decision");
    let reject = format!("verdict=reject&reason=forged&csrf={csrf}");

    // Another origin, even with the right CSRF token: refused, the gate stays pending.
    let s = srv
        .post_form(&cookie, Some("http://evil.example"), &decide, &reject)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let r = srv
        .http
        .post(format!("{}{decide}", srv.base))
        .header("cookie", &cookie)
        .header("sec-fetch-site", "cross-site")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(reject.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // `Origin: null` (a sandboxed frame, or our own no-referrer page): Sec-Fetch-Site decides.
    for site in [Some("cross-site"), None] {
        let mut r = srv
            .http
            .post(format!("{}{decide}", srv.base))
            .header("cookie", &cookie)
            .header("origin", "null")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(reject.clone());
        if let Some(site) = site {
            r = r.header("sec-fetch-site", site);
        }
        assert_eq!(r.send().await.unwrap().status(), StatusCode::FORBIDDEN);
    }
    // Our origin without the token, or with another: refused too.
    let s = srv
        .post_form(
            &cookie,
            Some(&srv.base),
            &decide,
            "verdict=reject&reason=forged",
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let s = srv
        .post_form(
            &cookie,
            Some(&srv.base),
            &decide,
            &format!("verdict=reject&reason=forged&csrf={}", "0".repeat(64)),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(srv.gate_pending(&gate).await, "the gate is still pending");

    // The kill-switch panel: a cross-origin set changes nothing; our own form works.
    let set = format!("scope=tool&name=issue_customer_refund&reason=forged&csrf={csrf}");
    let s = srv
        .post_form(
            &cookie,
            Some("http://evil.example"),
            "/ui/kill-switches/set",
            &set,
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(srv.switches().await, 0);
    let s = srv
        .post_form(&cookie, Some(&srv.base), "/ui/kill-switches/set", &set)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(srv.switches().await, 1);
    let clear = format!("scope=tool&name=issue_customer_refund&csrf={csrf}");
    let s = srv
        .post_form(
            &cookie,
            Some("http://evil.example"),
            "/ui/kill-switches/clear",
            &clear,
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(
        srv.switches().await,
        1,
        "a cross-origin clear changes nothing"
    );
    let s = srv
        .post_form(&cookie, Some(&srv.base), "/ui/kill-switches/clear", &clear)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(srv.switches().await, 0);

    // Logging out revokes the session: the old cookie opens nothing and decides nothing.
    let (s, _, _) = srv.page(&cookie, "/ui/logout").await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let (s, headers, _) = srv.page(&cookie, "/ui/gates").await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(headers["location"], "/ui/login");
    let s = srv
        .post_form(
            &cookie,
            Some(&srv.base),
            &decide,
            &format!("verdict=reject&reason=after+logout&csrf={csrf}"),
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert!(srv.gate_pending(&gate).await);
    let (s, _, _) = srv.page(&cookie, "/ui/retrievals").await;
    assert_eq!(s, StatusCode::SEE_OTHER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_takes_json_bodies_and_bearer_tokens_only() {
    let srv = server().await;
    let url = format!("{}/v1/executions", srv.base);
    let goal = r#"{"goal":"Where is my order 1007?"}"#;
    // A text/plain body (what a cross-origin form or fetch sends without a preflight): 415.
    for ct in ["text/plain", "application/x-www-form-urlencoded"] {
        let r = srv
            .http
            .post(&url)
            .bearer_auth(&srv.token)
            .header("content-type", ct)
            .body(goal)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ct}");
        assert_security_headers(r.headers(), "a 415");
    }
    let r = srv
        .http
        .post(&url)
        .bearer_auth(&srv.token)
        .body(goal)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "no type");
    // The UI's session cookie does not authenticate the API, nor does the raw token as a cookie.
    let (_, cookie) = srv.login().await;
    for c in [cookie, format!("keel_token={}", srv.token)] {
        let r = srv
            .http
            .post(&url)
            .header("cookie", &c)
            .header("content-type", "application/json")
            .body(goal)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{c}");
    }
    let r = srv
        .http
        .post(&url)
        .bearer_auth(&srv.token)
        .header("content-type", "application/json; charset=utf-8")
        .body(goal)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_security_headers(r.headers(), "POST /v1/executions");
    // A switch with no body needs no content type.
    let r = srv
        .http
        .put(format!("{}/v1/kill-switches/tool/notify_team", srv.base))
        .bearer_auth(&srv.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Public pages carry the headers too; the stylesheet is a file (no inline style needed).
    let r = srv
        .http
        .get(format!("{}/ui/login", srv.base))
        .send()
        .await
        .unwrap();
    let h = r.headers().clone();
    assert_security_headers(&h, "/ui/login");
    let html = r.text().await.unwrap();
    assert!(
        !html.contains("<style") && !html.contains("style=") && !html.contains("<script"),
        "{html}"
    );
    let r = srv
        .http
        .get(format!("{}/ui/keel.css", srv.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().await.unwrap().contains("body {"));
}
