//! The 2025-03-26 revision's discovery, for servers that still speak it: no protected resource
//! metadata; the authorization server metadata is at the MCP server's origin
//! (`/.well-known/oauth-authorization-server`, the path discarded), whatever the issuer's path.
//!
//! RFC 8414 wants the issuer to be the URL the well-known suffix was inserted into, which a
//! path-bearing issuer served at the root can never satisfy, so rmcp refuses such metadata. This
//! fallback is taken only when that check failed *and* the server publishes no protected
//! resource metadata at all (neither in its challenge nor at either well-known location): the
//! revisions since 2025-06-18 require that document, and where it exists rmcp's issuer checks
//! stand untouched. In its place the issuer must be on the MCP server's own origin: the origin
//! that answered for the metadata is the one it names, so metadata pointing at another
//! authorization server (a mix-up) is still refused.

use super::AuthFailure;
use rmcp::transport::auth::{
    AuthorizationMetadata, AuthorizationRequest, AuthorizationSession, OAuthState,
};
use std::time::Duration;

const AS_METADATA: &str = "/.well-known/oauth-authorization-server";
const PRM: &str = "/.well-known/oauth-protected-resource";

fn http() -> Result<reqwest::Client, AuthFailure> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| format!("HTTP client: {e}"))
}

/// The URL at `path` on `url`'s origin.
fn at_origin(url: &reqwest::Url, path: &str) -> reqwest::Url {
    let mut u = url.clone();
    u.set_query(None);
    u.set_fragment(None);
    u.set_path(path);
    u
}

/// True if the server publishes no protected resource metadata: the 2025-03-26 revision.
pub async fn is_2025_03_26(url: &str, challenge: Option<&str>) -> bool {
    if challenge.is_some_and(|c| c.contains("resource_metadata")) {
        return false;
    }
    let (Ok(url), Ok(http)) = (reqwest::Url::parse(url), http()) else {
        return false;
    };
    let path = url.path().trim_end_matches('/');
    let mut candidates = vec![at_origin(&url, PRM)];
    if !path.is_empty() {
        candidates.insert(0, at_origin(&url, &format!("{PRM}{path}")));
    }
    for candidate in candidates {
        match http.get(candidate).send().await {
            Ok(r) if r.status().as_u16() == 404 => {}
            // Found, or could not tell: not the legacy revision.
            _ => return false,
        }
    }
    true
}

/// The origin's authorization server metadata, its issuer on that same origin.
async fn metadata(url: &str) -> Result<AuthorizationMetadata, AuthFailure> {
    let url = reqwest::Url::parse(url).map_err(|_| "the server URL is not a URL".to_owned())?;
    let at = at_origin(&url, AS_METADATA);
    let resp = http()?
        .get(at.clone())
        .send()
        .await
        .map_err(|e| format!("authorization server metadata: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!(
            "authorization server metadata at {at}: HTTP {}",
            resp.status().as_u16()
        ));
    }
    let metadata: AuthorizationMetadata = resp
        .json()
        .await
        .map_err(|_| format!("authorization server metadata at {at} is not valid metadata"))?;
    let issuer = metadata
        .issuer
        .as_deref()
        .ok_or_else(|| format!("authorization server metadata at {at} names no issuer"))?;
    let same_origin = reqwest::Url::parse(issuer).is_ok_and(|i| i.origin() == url.origin());
    if !same_origin {
        return Err(format!(
            "authorization server metadata at {at} names issuer {issuer}, not on the server's \
             origin: refused"
        ));
    }
    Ok(metadata)
}

/// Starts the authorization session from the origin's metadata (`state` is unauthorized, as a
/// failed `start_authorization` leaves it).
pub async fn session(
    state: OAuthState,
    url: &str,
    request: AuthorizationRequest,
) -> Result<OAuthState, AuthFailure> {
    let OAuthState::Unauthorized(mut manager) = state else {
        return Err("authorization: unexpected OAuth state".into());
    };
    manager.set_metadata(metadata(url).await?);
    AuthorizationSession::new(manager, request)
        .await
        .map(OAuthState::Session)
        .map_err(|(_, e)| format!("authorization: {e}"))
}
