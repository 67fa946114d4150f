//! Enterprise-managed authorization (SEP-990, "cross-app access"): the person signed in to the
//! enterprise identity provider once; Keel exchanges their ID token there for an identity
//! assertion grant (ID-JAG, RFC 8693 token exchange) naming the MCP server's authorization
//! server and the MCP server, then redeems it at that authorization server (RFC 7523 JWT bearer
//! grant) for the access token. No browser, no consent screen: the enterprise decided.
//!
//! The two exchanges are rmcp's (`auth-enterprise-managed`: structure and binding checks on the
//! ID-JAG, no redirects, no retries); discovery of the MCP server's authorization server, with
//! its issuer checks, is rmcp's too. The ID token and both client secrets come from the
//! secrets the contract names (environment variables, to the `keel` binary) and never appear in
//! a message.

use super::{AuthFailure, env_var};
use crate::contract::McpIdp;
use keel_core::secrets::SecretSource;
use oauth2::ClientSecret;
use rmcp::transport::auth::enterprise::{
    EmaAuthorizationServer, EmaClientAuthentication, EmaExchangeRequest,
};
use rmcp::transport::auth::{AuthorizationMetadata, OAuthTokenResponse, default_oauth_http_client};
use serde_json::{Value, json};

/// How Keel's client authenticates at a server: with a secret, the way its metadata prefers
/// (HTTP Basic, RFC 6749's default, unless only the request body is offered); without one, as a
/// public client.
fn authentication(secret: Option<String>, methods: Option<&Value>) -> EmaClientAuthentication {
    let Some(secret) = secret else {
        return EmaClientAuthentication::None;
    };
    let offers = |m: &str| {
        methods
            .and_then(Value::as_array)
            .is_some_and(|l| l.iter().any(|v| v.as_str() == Some(m)))
    };
    if offers("client_secret_post") && !offers("client_secret_basic") {
        EmaClientAuthentication::ClientSecretPost(ClientSecret::new(secret))
    } else {
        EmaClientAuthentication::ClientSecretBasic(ClientSecret::new(secret))
    }
}

/// Both exchanges for the MCP server at `resource`, whose authorization server `metadata`
/// describes; the client there is `client_id` (with `client_secret`, if confidential).
pub async fn access_token(
    metadata: &AuthorizationMetadata,
    idp: &McpIdp,
    client_id: &str,
    client_secret: Option<String>,
    scopes: &[String],
    resource: &str,
    secrets: &dyn SecretSource,
) -> Result<OAuthTokenResponse, AuthFailure> {
    let var = |name: &str| env_var(secrets, name);
    let issuer = metadata
        .issuer
        .as_deref()
        .ok_or("the authorization server's metadata names no issuer (the ID-JAG's audience)")?;
    let id_token = var(&idp.id_token_env)?;
    let idp_secret = idp.client_secret_env.as_deref().map(var).transpose()?;
    let idp_server = EmaAuthorizationServer::new(
        idp.issuer.as_str(),
        idp.token_endpoint.as_str(),
        var(&idp.client_id_env)?,
    )
    .with_client_authentication(authentication(idp_secret, None));
    let resource_as =
        EmaAuthorizationServer::new(issuer, metadata.token_endpoint.as_str(), client_id)
            .with_client_authentication(authentication(
                client_secret,
                metadata
                    .additional_fields
                    .get("token_endpoint_auth_methods_supported"),
            ));
    let http = default_oauth_http_client().map_err(|e| format!("HTTP client: {e}"))?;
    let token = EmaExchangeRequest::new_with_id_token(idp_server, resource_as, resource, &id_token)
        .with_scopes(scopes.iter().cloned())
        .exchange(&http, &http)
        .await
        .map_err(|e| format!("enterprise-managed authorization: {e}"))?;
    let mut response = json!({
        "access_token": token.access_token.secret(),
        "token_type": "Bearer",
    });
    if let Some(ttl) = token.expires_in {
        response["expires_in"] = json!(ttl.as_secs());
    }
    if !token.scopes.is_empty() {
        let mut scopes: Vec<&str> = token.scopes.iter().map(String::as_str).collect();
        scopes.sort_unstable();
        response["scope"] = json!(scopes.join(" "));
    }
    serde_json::from_value(response)
        .map_err(|_| "enterprise-managed authorization: unusable access token".into())
}
