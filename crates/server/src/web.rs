//! What protects the browser-facing side of `keel serve`, applied to every route at once:
//!
//! - **UI sessions.** The `keel_session` cookie holds a random session id (never the API token),
//!   `HttpOnly; SameSite=Strict; Path=/ui`, `Secure` when the configured public origin is https,
//!   with a `Max-Age` equal to the session's server-side expiry.
//! - **CSRF.** Every state-changing UI request (a `POST` under `/ui/`) must come from our own
//!   origin (`Origin`, else `Sec-Fetch-Site`) and, once logged in, carry the session's CSRF token
//!   in its `csrf` form field. The token is derived from the session id, so it needs no storage
//!   and dies with the session.
//! - **JSON-only API.** A `/v1/` request that sends a body must say `Content-Type:
//!   application/json` (415 otherwise): a form or `text/plain` body, which a browser sends
//!   cross-origin without a preflight, never reaches a handler. The API authenticates by bearer
//!   token only (see [`crate::Caller`]).
//! - **Security headers** on every response: a Content-Security-Policy with no inline script or
//!   style, `nosniff`, no framing, no referrer, and `Cache-Control: no-store` unless a handler
//!   chose otherwise (only the stylesheet does).

use crate::State;
use crate::auth::Principal;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

/// The UI's session cookie.
pub const SESSION_COOKIE: &str = "keel_session";

/// How long a UI session lives (absolute, from login): a working day.
pub const SESSION_TTL_SECS: i64 = 12 * 3600;

/// Largest UI form body read for the CSRF check.
const MAX_FORM: usize = 64 * 1024;

/// The policy: our own stylesheet and script files (never inline), requests to ourselves only (a
/// page fetching stored inputs and outputs), forms posting to ourselves, nothing else.
const CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; connect-src 'self'; \
                   img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// How the server is reached by browsers.
#[derive(Clone, Debug, Default)]
pub struct WebConfig {
    /// The origin browsers use (`https://keel.example.com`), when the server sits behind a proxy
    /// or TLS terminator. With it, only that origin may post UI forms, and an https origin makes
    /// the session cookie `Secure`. Without it, the request's own `Host` is the origin.
    pub public_origin: Option<String>,
}

/// The server is already shared: configure it before serving.
#[derive(Debug, thiserror::Error)]
#[error("the web configuration is set before the server starts serving")]
pub struct AlreadyServing;

/// Sets how browsers reach the server; only before it is shared with the router.
pub fn configure(state: &mut State, cfg: WebConfig) -> Result<(), AlreadyServing> {
    let app = std::sync::Arc::get_mut(state).ok_or(AlreadyServing)?;
    app.web = cfg;
    Ok(())
}

/// Unix seconds now.
pub fn now_unix() -> i64 {
    use keel_spine::clock::Clock;
    keel_spine::clock::SystemClock.now().timestamp()
}

/// The CSRF token of a session.
pub fn csrf_token(sid: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"keel csrf v1\0");
    h.update(sid.as_bytes());
    hex::encode(h.finalize())
}

/// The CSRF token of the request's session (empty without one): what a page puts in its forms.
pub fn csrf_of(headers: &HeaderMap) -> String {
    crate::cookie(headers, SESSION_COOKIE)
        .map(|sid| csrf_token(&sid))
        .unwrap_or_default()
}

/// The principal of the request's UI session, if it is live.
pub fn session_principal(
    state: &State,
    headers: &HeaderMap,
) -> Result<Option<Principal>, crate::auth::AuthError> {
    match crate::cookie(headers, SESSION_COOKIE) {
        Some(sid) => state.tokens.resolve_session(&sid, now_unix()),
        None => Ok(None),
    }
}

/// The `Set-Cookie` value for a new session.
pub fn session_cookie(state: &State, sid: &str) -> String {
    let secure = if secure_origin(state) { "; Secure" } else { "" };
    format!(
        "{SESSION_COOKIE}={sid}; HttpOnly; SameSite=Strict; Path=/ui; Max-Age={SESSION_TTL_SECS}{secure}"
    )
}

/// The `Set-Cookie` value that removes the session cookie.
pub fn cleared_cookie(state: &State) -> String {
    let secure = if secure_origin(state) { "; Secure" } else { "" };
    format!("{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/ui; Max-Age=0{secure}")
}

fn secure_origin(state: &State) -> bool {
    is_https(state.web.public_origin.as_deref())
}

fn is_https(public_origin: Option<&str>) -> bool {
    public_origin.is_some_and(|o| o.to_ascii_lowercase().starts_with("https://"))
}

/// True if a browser says the request comes from our own origin, or says nothing (a client
/// that is not a browser, which carries no ambient cookie and still needs the CSRF token).
///
/// Our `Referrer-Policy: no-referrer` makes browsers send `Origin: null` on our own form posts
/// (the Fetch standard hides the origin along with the referrer); for those, `Sec-Fetch-Site`
/// decides, and without it (an old browser, or a sandboxed frame) the post is refused.
pub fn same_origin(state: &State, headers: &HeaderMap) -> bool {
    origin_allowed(state.web.public_origin.as_deref(), headers)
}

fn origin_allowed(public_origin: Option<&str>, headers: &HeaderMap) -> bool {
    let site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if headers
        .get(header::ORIGIN)
        .is_some_and(|o| o.as_bytes() == b"null")
    {
        return site == Some("same-origin");
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        let origin = origin.trim_end_matches('/').to_ascii_lowercase();
        return match public_origin {
            Some(o) => origin == o.trim_end_matches('/').to_ascii_lowercase(),
            None => {
                let host = headers
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or_default()
                    .to_ascii_lowercase();
                !host.is_empty()
                    && (origin == format!("http://{host}") || origin == format!("https://{host}"))
            }
        };
    }
    match site {
        Some(site) => matches!(site, "same-origin" | "none"),
        None => true,
    }
}

fn refused(why: &str) -> Response {
    (
        StatusCode::FORBIDDEN,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("refused: {why}\n"),
    )
        .into_response()
}

/// Equal in time independent of where the strings differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Refuses cross-origin UI posts, and UI posts of a session without its CSRF token.
pub async fn csrf(
    axum::extract::State(state): axum::extract::State<State>,
    req: Request,
    next: Next,
) -> Response {
    if req.method() != Method::POST || !req.uri().path().starts_with("/ui/") {
        return next.run(req).await;
    }
    if !same_origin(&state, req.headers()) {
        return refused("a form of the web UI posted from another origin");
    }
    if req.uri().path() == "/ui/login" {
        return next.run(req).await;
    }
    let Some(sid) = crate::cookie(req.headers(), SESSION_COOKIE) else {
        // Not logged in: the handler sends the browser to the login page.
        return next.run(req).await;
    };
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_FORM).await else {
        return refused("the form is larger than the web UI's forms");
    };
    let given = form_urlencoded::parse(&bytes)
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    if !same(&given, &csrf_token(&sid)) {
        return refused("the form's CSRF token is missing or not this session's; reload the page");
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase())
        .is_some_and(|m| m == "application/json" || m.ends_with("+json"))
}

/// 415 for a `/v1/` request whose body is not declared JSON.
pub async fn json_only(req: Request, next: Next) -> Response {
    let writes = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if writes && req.uri().path().starts_with("/v1/") {
        let h = req.headers();
        let has_body = h.contains_key(header::TRANSFER_ENCODING)
            || h.contains_key(header::CONTENT_TYPE)
            || h.get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.trim() != "0");
        if has_body && !is_json(h) {
            return crate::error::ApiError::UnsupportedMediaType(
                "the API takes request bodies as Content-Type: application/json".into(),
            )
            .into_response();
        }
    }
    next.run(req).await
}

/// Adds the security headers every response carries.
pub async fn security_headers(req: Request, next: Next) -> Response {
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    let set = |h: &mut HeaderMap, name: header::HeaderName, v: &'static str| {
        if !h.contains_key(&name) {
            h.insert(name, HeaderValue::from_static(v));
        }
    };
    set(h, header::CONTENT_SECURITY_POLICY, CSP);
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(h, header::X_FRAME_OPTIONS, "DENY");
    set(h, header::REFERRER_POLICY, "no-referrer");
    set(h, header::CACHE_CONTROL, "no-store");
    r
}

/// The UI's stylesheet (a file, so the policy needs no `unsafe-inline`).
pub async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("../templates/keel.css"),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::{csrf_token, is_https, origin_allowed, same};
    use axum::http::{HeaderMap, HeaderValue};

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn a_configured_public_origin_is_the_only_one_and_https_makes_cookies_secure() {
        let public = Some("https://keel.example.com");
        let ours = headers(&[
            ("origin", "https://keel.example.com"),
            ("host", "10.0.0.5:8080"),
        ]);
        let by_host = headers(&[
            ("origin", "http://10.0.0.5:8080"),
            ("host", "10.0.0.5:8080"),
        ]);
        assert!(origin_allowed(public, &ours));
        assert!(
            !origin_allowed(public, &by_host),
            "behind a proxy, Host is not the origin"
        );
        assert!(origin_allowed(None, &by_host));
        assert!(!origin_allowed(
            None,
            &headers(&[
                ("origin", "https://evil.example"),
                ("host", "10.0.0.5:8080")
            ])
        ));
        assert!(is_https(public) && !is_https(Some("http://localhost:8080")) && !is_https(None));
    }

    #[test]
    fn csrf_tokens_are_per_session() {
        assert_eq!(csrf_token("ks_a"), csrf_token("ks_a"));
        assert_ne!(csrf_token("ks_a"), csrf_token("ks_b"));
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("abc", "ab"));
    }
}
