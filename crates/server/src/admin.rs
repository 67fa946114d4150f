//! The web UI's admin pages: the tenant's API tokens (id, roles, name, created, expires, last
//! used, status; never the secret) and their revocation. Admins only, and only their own
//! tenant's tokens; the revoke form carries the session's CSRF token like every UI form.

use crate::State;
use crate::auth::{Principal, Revoked, Role, TokenInfo};
use crate::error::ApiError;
use crate::ui::{principal, render, who};
use askama::Template;
use axum::Form;
use axum::Router;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

pub(crate) fn routes() -> Router<State> {
    Router::new()
        .route("/ui/tokens", get(tokens_page))
        .route("/ui/tokens/revoke", post(revoke))
}

struct TokenRow {
    id: String,
    roles: String,
    name: String,
    created: String,
    expires: String,
    last_used: String,
    status: &'static str,
    revocable: bool,
}

#[derive(Template)]
#[template(path = "tokens.html")]
struct TokensPage {
    title: &'static str,
    refresh: bool,
    who: String,
    flash: String,
    tenant: String,
    tokens: Vec<TokenRow>,
    csrf: String,
}

fn when(unix: Option<i64>, none: &str) -> String {
    unix.and_then(|t| chrono::DateTime::from_timestamp(t, 0))
        .map_or_else(
            || none.into(),
            |d| d.format("%Y-%m-%d %H:%M UTC").to_string(),
        )
}

fn row(t: &TokenInfo, now: i64) -> TokenRow {
    let roles: Vec<&str> = t.roles.iter().map(|r| r.as_str()).collect();
    TokenRow {
        id: t.id.clone(),
        roles: roles.join(", "),
        name: t.name.clone(),
        created: t
            .created_at
            .chars()
            .take(16)
            .collect::<String>()
            .replace('T', " "),
        expires: when(t.expires_at, "never"),
        last_used: when(t.last_used_at, "never"),
        status: t.status(now),
        revocable: t.revoked_at.is_none(),
    }
}

/// The admin of the session, or the response that refuses the page.
fn admin(state: &State, headers: &HeaderMap) -> Result<Principal, Box<Response>> {
    let p = principal(state, headers)?;
    if !p.roles.contains(&Role::Admin) {
        return Err(Box::new(
            ApiError::Forbidden("the token page is for admins".into()).into_response(),
        ));
    }
    Ok(p)
}

fn page(state: &State, p: &Principal, headers: &HeaderMap, flash: String) -> Response {
    let now = crate::web::now_unix();
    match state.tokens.list(Some(&p.tenant)) {
        Ok(list) => render(&TokensPage {
            title: "API tokens",
            refresh: false,
            who: who(p),
            flash,
            tenant: p.tenant.clone(),
            tokens: list.iter().map(|t| row(t, now)).collect(),
            csrf: crate::web::csrf_of(headers),
        }),
        Err(e) => ApiError::from(e).into_response(),
    }
}

async fn tokens_page(
    axum::extract::State(state): axum::extract::State<State>,
    headers: HeaderMap,
) -> Response {
    match admin(&state, &headers) {
        Ok(p) => page(&state, &p, &headers, String::new()),
        Err(r) => *r,
    }
}

#[derive(Deserialize)]
struct RevokeForm {
    #[serde(default)]
    id: String,
}

async fn revoke(
    axum::extract::State(state): axum::extract::State<State>,
    headers: HeaderMap,
    Form(f): Form<RevokeForm>,
) -> Response {
    let p = match admin(&state, &headers) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let flash = match state
        .tokens
        .revoke(&f.id, Some(&p.tenant), crate::web::now_unix())
    {
        Ok(Revoked::Now(t)) => format!("Token {} ({}) is revoked.", t.id, t.name),
        Ok(Revoked::Already(t)) => format!("Token {} ({}) was already revoked.", t.id, t.name),
        Ok(Revoked::Unknown) => "No token of this tenant has that id.".into(),
        Err(e) => return ApiError::from(e).into_response(),
    };
    // A revoked session of one's own token now redirects to the login page, as it should.
    match admin(&state, &headers) {
        Ok(p) => page(&state, &p, &headers, flash),
        Err(r) => *r,
    }
}
