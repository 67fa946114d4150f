//! OAuth 2.1 for MCP servers over HTTP, client side, through rmcp's `auth` feature: protected
//! resource and authorization server metadata discovery (from the server's `WWW-Authenticate`
//! challenge or the well-known paths), PKCE (S256), a pre-registered client, a client ID
//! metadata document or dynamic client registration, and the client credentials grant.
//!
//! Keel is not a browser. For the authorization code grant it requests the authorization URL
//! itself and takes the code from the redirect; a server that wants a person to sign in first
//! gets an `auth` error naming the URL to open, never a hang. Secrets come from the secret
//! source the runner was given, by the names the contract gives (environment variables, to the
//! `keel` binary), are looked up when a session opens, and never appear in a message.

use crate::contract::{McpOAuth, OAuthGrant, PrivateKeySource};
use keel_core::secrets::SecretSource;
use rmcp::transport::AuthorizationManager;
use rmcp::transport::auth::{
    AuthError, AuthorizationCallback, AuthorizationRequest, ClientCredentialsConfig, OAuthState,
};

mod jwt;
mod legacy;
mod xaa;

/// The redirect URI Keel registers; nothing listens there, the code is read off the redirect.
pub const REDIRECT_URI: &str = "http://127.0.0.1/keel/oauth/callback";

/// Why a token could not be had (never contains a secret).
pub type AuthFailure = String;

fn env_var(secrets: &dyn SecretSource, name: &str) -> Result<String, AuthFailure> {
    secrets
        .get(name)
        .ok_or_else(|| format!("environment variable {name} is not set"))
}

/// The contract's `private_key_jwt` signing key, read from where it names.
fn signing_key(
    oauth: &McpOAuth,
    secrets: &dyn SecretSource,
) -> Result<jwt::SigningKey, AuthFailure> {
    let (pem, source) = match &oauth.private_key {
        Some(PrivateKeySource::Env(var)) => (
            env_var(secrets, var)?,
            format!("environment variable {var}"),
        ),
        Some(PrivateKeySource::File(path)) => {
            // Named by its contract field, not its path: errors reach events and the API.
            let source = "the file adapter.oauth.private_key_file names".to_owned();
            let pem = std::fs::read_to_string(path)
                .map_err(|e| format!("{source} cannot be read: {}", e.kind()))?;
            (pem, source)
        }
        None => return Err("no private key is configured".into()),
    };
    jwt::SigningKey::from_pem(&pem, &source)
}

/// Runs the contract's grant against the server at `url` and returns the authorized manager.
/// `challenge` is the `WWW-Authenticate` header of the 401 that started it, if any.
pub async fn authorize(
    url: &str,
    oauth: &McpOAuth,
    challenge: Option<String>,
    secrets: &dyn SecretSource,
) -> Result<AuthorizationManager, AuthFailure> {
    let var = |name: &str| env_var(secrets, name);
    let client_id = oauth.client_id_env.as_deref().map(var).transpose()?;
    let client_secret = oauth.client_secret_env.as_deref().map(var).transpose()?;
    let mut state = OAuthState::new(url, None)
        .await
        .map_err(|e| format!("OAuth set-up: {e}"))?;
    match oauth.grant {
        OAuthGrant::ClientCredentials if oauth.private_key.is_some() => {
            let key = signing_key(oauth, secrets)?;
            let client_id = client_id.ok_or("client_credentials needs client_id_env")?;
            let OAuthState::Unauthorized(manager) = &state else {
                return Err("OAuth set-up: unexpected state".into());
            };
            let found = manager
                .resolve_metadata_from_challenge(challenge.as_deref())
                .await
                .map_err(|e| format!("authorization server discovery: {e}"))?;
            let token =
                jwt::client_credentials(&found.metadata, &client_id, &key, &oauth.scopes, url)
                    .await?;
            state
                .set_credentials(&client_id, token)
                .await
                .map_err(|e| format!("client credentials grant: {e}"))?;
        }
        OAuthGrant::EnterpriseManaged => {
            let idp = oauth
                .idp
                .as_ref()
                .ok_or("enterprise_managed needs an idp")?;
            let client_id = client_id.ok_or("enterprise_managed needs client_id_env")?;
            let OAuthState::Unauthorized(manager) = &state else {
                return Err("OAuth set-up: unexpected state".into());
            };
            let found = manager
                .resolve_metadata_from_challenge(challenge.as_deref())
                .await
                .map_err(|e| format!("authorization server discovery: {e}"))?;
            let token = xaa::access_token(
                &found.metadata,
                idp,
                &client_id,
                client_secret,
                &oauth.scopes,
                url,
                secrets,
            )
            .await?;
            state
                .set_credentials(&client_id, token)
                .await
                .map_err(|e| format!("enterprise-managed authorization: {e}"))?;
        }
        OAuthGrant::ClientCredentials => {
            let (Some(client_id), Some(client_secret)) = (client_id, client_secret) else {
                return Err(
                    "client_credentials needs client_id_env and client_secret_env or a private key"
                        .into(),
                );
            };
            state
                .authenticate_client_credentials(ClientCredentialsConfig::ClientSecret {
                    client_id,
                    client_secret,
                    scopes: oauth.scopes.clone(),
                    // RFC 8707: the token is for this MCP server and no other.
                    resource: Some(url.to_owned()),
                })
                .await
                .map_err(|e| format!("client credentials grant: {e}"))?;
        }
        OAuthGrant::AuthorizationCode => {
            let mut request = AuthorizationRequest::new(REDIRECT_URI).with_client_name("Keel");
            if let Some(id) = client_id {
                request = request.with_preregistered_client(id);
            }
            if let Some(secret) = client_secret {
                request = request.with_client_secret(secret);
            }
            if let Some(doc) = &oauth.client_metadata_url {
                request = request.with_client_metadata_url(doc.clone());
            }
            if !oauth.scopes.is_empty() {
                request = request.with_scopes(oauth.scopes.iter().cloned());
            }
            let legacy_challenge = challenge.clone();
            if let Some(c) = challenge {
                request = request.with_challenge(c);
            }
            match state.start_authorization(request.clone()).await {
                Ok(()) => {}
                // The 2025-03-26 revision (no protected resource metadata) serves the metadata
                // at the server's origin, whatever path its issuer has.
                Err(AuthError::AuthorizationServerMismatch { .. })
                    if legacy::is_2025_03_26(url, legacy_challenge.as_deref()).await =>
                {
                    state = legacy::session(state, url, request).await?;
                }
                Err(e) => return Err(format!("authorization: {e}")),
            }
            let auth_url = state
                .get_authorization_url()
                .await
                .map_err(|e| format!("authorization URL: {e}"))?;
            let callback = follow_authorization(&auth_url).await?;
            state
                .handle_callback_with_issuer(
                    &callback.code,
                    &callback.csrf_token,
                    callback.issuer.as_deref(),
                )
                .await
                .map_err(|e| format!("token exchange: {e}"))?;
        }
    }
    state
        .into_authorization_manager()
        .ok_or_else(|| "the authorization did not complete".to_owned())
}

/// Requests the authorization URL and reads the code off its redirect to [`REDIRECT_URI`].
async fn follow_authorization(auth_url: &str) -> Result<AuthorizationCallback, AuthFailure> {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("HTTP client: {e}"))?;
    let resp = http
        .get(auth_url)
        .send()
        .await
        .map_err(|e| format!("authorization endpoint: {e}"))?;
    let location = resp
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .filter(|l| l.starts_with(REDIRECT_URI))
        .ok_or_else(|| {
            format!(
                "the authorization server wants a person to sign in (HTTP {}); open {auth_url} \
                 once, or use the client_credentials grant for headless use",
                resp.status().as_u16()
            )
        })?;
    AuthorizationCallback::from_redirect_url(location)
        .map_err(|e| format!("authorization redirect: {e}"))
}
