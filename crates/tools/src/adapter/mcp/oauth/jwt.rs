//! `private_key_jwt` client authentication (RFC 7523 §2.2) for the client credentials grant:
//! the client proves who it is with an assertion signed by its private key instead of a shared
//! secret. Signed with ring, the crypto library the workspace already links (rmcp's own
//! implementation needs jsonwebtoken on aws-lc, a C build the workspace avoids, decision 062).
//!
//! The key is a PEM (PKCS#8 `PRIVATE KEY` for EC P-256, P-384 or RSA; PKCS#1 `RSA PRIVATE KEY`)
//! from the environment variable or file the contract names, read when a session opens. Neither
//! the key nor the assertion ever appears in a message: errors say which source and what kind
//! of problem, nothing of the content.

use super::AuthFailure;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use keel_spine::clock::Clock;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, RsaKeyPair};
use rmcp::transport::auth::{AuthorizationMetadata, OAuthTokenResponse};
use serde_json::{Value, json};
use std::time::Duration;

/// A client's signing key, with the JWS algorithm it signs with.
pub enum SigningKey {
    /// ECDSA (ES256 on P-256, ES384 on P-384).
    Ec(EcdsaKeyPair, &'static str),
    /// RSA PKCS#1 v1.5 with SHA-256 (RS256).
    Rsa(RsaKeyPair),
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({}, <redacted>)", self.alg())
    }
}

impl SigningKey {
    /// Parses a PEM private key; `source` names where it came from, for errors.
    pub fn from_pem(pem: &str, source: &str) -> Result<Self, AuthFailure> {
        let bad = |what: &str| format!("the private key in {source} {what}");
        let (label, der) = pem_block(pem).ok_or_else(|| bad("is not a PEM block"))?;
        let rng = SystemRandom::new();
        match label {
            "PRIVATE KEY" => {
                for (alg, name) in [
                    (&signature::ECDSA_P256_SHA256_FIXED_SIGNING, "ES256"),
                    (&signature::ECDSA_P384_SHA384_FIXED_SIGNING, "ES384"),
                ] {
                    if let Ok(k) = EcdsaKeyPair::from_pkcs8(alg, &der, &rng) {
                        return Ok(Self::Ec(k, name));
                    }
                }
                RsaKeyPair::from_pkcs8(&der)
                    .map(Self::Rsa)
                    .map_err(|_| bad("is not an EC P-256, EC P-384 or RSA PKCS#8 key"))
            }
            "RSA PRIVATE KEY" => RsaKeyPair::from_der(&der)
                .map(Self::Rsa)
                .map_err(|_| bad("is not a valid RSA key")),
            _ => Err(bad(
                "must be a PKCS#8 \"PRIVATE KEY\" or \"RSA PRIVATE KEY\" PEM block",
            )),
        }
    }

    /// The JWS `alg`.
    pub fn alg(&self) -> &'static str {
        match self {
            Self::Ec(_, alg) => alg,
            Self::Rsa(_) => "RS256",
        }
    }

    /// A compact JWS of `claims`.
    fn sign(&self, claims: &Value) -> Result<String, AuthFailure> {
        // Explicit typing (draft-ietf-oauth-rfc7523bis), as rmcp does.
        let header = json!({"alg": self.alg(), "typ": "client-authentication+jwt"});
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let rng = SystemRandom::new();
        let sig = match self {
            Self::Ec(k, _) => k
                .sign(&rng, input.as_bytes())
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| "signing the client assertion failed".to_owned())?,
            Self::Rsa(k) => {
                let mut sig = vec![0; k.public().modulus_len()];
                k.sign(
                    &signature::RSA_PKCS1_SHA256,
                    &rng,
                    input.as_bytes(),
                    &mut sig,
                )
                .map_err(|_| "signing the client assertion failed".to_owned())?;
                sig
            }
        };
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig)))
    }
}

/// The first PEM block's label and DER bytes.
fn pem_block(pem: &str) -> Option<(&str, Vec<u8>)> {
    let begin = pem.find("-----BEGIN ")?;
    let rest = pem.get(begin + "-----BEGIN ".len()..)?;
    let (label, rest) = rest.split_once("-----")?;
    let end = format!("-----END {label}-----");
    let (body, _) = rest.split_once(end.as_str())?;
    let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    Some((label, STANDARD.decode(b64).ok()?))
}

/// The assertion's claims: the client is issuer and subject, the audience is the
/// authorization server's issuer identifier (its token endpoint when it names none), valid five
/// minutes, a unique `jti` against replay.
fn claims(client_id: &str, audience: &str, now: Duration) -> Value {
    let now = now.as_secs();
    json!({
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "iat": now,
        "exp": now + 300,
        "jti": uuid::Uuid::now_v7().to_string(),
    })
}

/// Runs the client credentials grant at the server's token endpoint, authenticating with a
/// signed assertion; `resource` is the MCP server (RFC 8707).
pub async fn client_credentials(
    metadata: &AuthorizationMetadata,
    client_id: &str,
    key: &SigningKey,
    scopes: &[String],
    resource: &str,
) -> Result<OAuthTokenResponse, AuthFailure> {
    let field = |name: &str| {
        metadata
            .additional_fields
            .get(name)
            .and_then(Value::as_array)
    };
    let offered = |list: &Vec<Value>, want: &str| list.iter().any(|v| v.as_str() == Some(want));
    if let Some(methods) = field("token_endpoint_auth_methods_supported")
        && !offered(methods, "private_key_jwt")
    {
        return Err("the authorization server does not accept private_key_jwt".into());
    }
    if let Some(algs) = field("token_endpoint_auth_signing_alg_values_supported")
        && !offered(algs, key.alg())
    {
        return Err(format!(
            "the authorization server does not accept {} client assertions",
            key.alg()
        ));
    }
    let audience = metadata
        .issuer
        .as_deref()
        .unwrap_or(&metadata.token_endpoint);
    let now = keel_spine::clock::SystemClock.now().timestamp().max(0);
    let now = Duration::from_secs(u64::try_from(now).unwrap_or_default());
    let assertion = key.sign(&claims(client_id, audience, now))?;
    let mut form = vec![
        ("grant_type", "client_credentials".to_owned()),
        (
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_owned(),
        ),
        ("client_assertion", assertion),
        ("resource", resource.to_owned()),
    ];
    if !scopes.is_empty() {
        form.push(("scope", scopes.join(" ")));
    }
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| format!("HTTP client: {e}"))?;
    let resp = http
        .post(&metadata.token_endpoint)
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(body)
        .send()
        .await
        .map_err(|e| format!("token endpoint: {}", e.without_url()))?;
    let status = resp.status();
    let body = resp.bytes().await.unwrap_or_default();
    if !status.is_success() {
        // The server's `error` code only: its description may echo what was sent.
        let code = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v.get("error")?.as_str().map(str::to_owned))
            .unwrap_or_else(|| "no error code".into());
        return Err(format!(
            "client credentials grant refused: HTTP {} ({code})",
            status.as_u16()
        ));
    }
    serde_json::from_slice(&body)
        .map_err(|_| "the token endpoint's answer is not a token response".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::KeyPair;

    #[test]
    fn an_ec_key_signs_an_assertion_its_public_key_verifies() {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map(|d| STANDARD.encode(d.as_ref()))
            .expect("a generated key");
        let pem = format!("-----BEGIN PRIVATE KEY-----\n{pkcs8}\n-----END PRIVATE KEY-----\n");
        let key = SigningKey::from_pem(&pem, "KEY").expect("a P-256 key");
        assert_eq!(key.alg(), "ES256");
        let jws = key
            .sign(&claims(
                "c1",
                "https://as.example",
                Duration::from_secs(1000),
            ))
            .expect("signed");
        let parts: Vec<&str> = jws.split('.').collect();
        assert_eq!(parts.len(), 3);
        let SigningKey::Ec(pair, _) = &key else {
            panic!("an EC key")
        };
        let public = signature::UnparsedPublicKey::new(
            &signature::ECDSA_P256_SHA256_FIXED,
            pair.public_key().as_ref(),
        );
        let sig = URL_SAFE_NO_PAD.decode(parts[2]).expect("base64url");
        let input = format!("{}.{}", parts[0], parts[1]);
        assert!(public.verify(input.as_bytes(), &sig).is_ok());
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("base64url"))
                .expect("json");
        assert_eq!(claims["iss"], "c1");
        assert_eq!(claims["sub"], "c1");
        assert_eq!(claims["aud"], "https://as.example");
        assert_eq!(claims["exp"], 1300);
    }

    #[test]
    fn a_bad_key_is_refused_without_showing_it() {
        let pem = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LXN0dWZm\n-----END PRIVATE KEY-----\n";
        let err = SigningKey::from_pem(pem, "environment variable K").unwrap_err();
        assert!(err.contains("environment variable K"), "{err}");
        assert!(!err.contains("c2VjcmV0"), "{err}");
        assert!(SigningKey::from_pem("not a pem", "K").is_err());
    }
}
