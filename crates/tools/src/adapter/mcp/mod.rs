//! The MCP adapter: tools on Model Context Protocol servers, through the official SDK (`rmcp`),
//! over stdio (a child process) or Streamable HTTP.
//!
//! - Versions: a session opens with `server/discover` and per-request metadata (revision
//!   2026-07-28) when the server speaks it, and falls back to the `initialize` handshake at
//!   2025-11-25 when it does not; the legacy handshake never offers a revision that has none.
//! - At connect the server's tools are listed once, so a contract whose input schema no longer
//!   matches the server's is reported ([`McpClient::drift`]).
//! - Connections are opened lazily, one per server and elicitation policy, shared by every
//!   contract that names them, and dropped (to be reopened on the next call) when the transport
//!   fails or the server refuses the credentials. Under `elicitation: gate` a session serves one
//!   call at a time (idle ones are reused), so a server's question belongs to exactly one call.
//! - Credentials (HTTP only): headers from the secrets the contract names (environment
//!   variables, to the `keel` binary), OAuth 2.1 ([`oauth`]). A 401
//!   or 403 is class `auth`, which no policy retries.
//!
//! Output: the tool's `structuredContent` when it returns one; otherwise `{"content": [...]}`,
//! the content blocks as the server sent them. That value is what the output schema checks.

pub mod handler;
pub mod http;
pub mod oauth;

use super::{Adapter, AdapterCall, AdapterError};
use crate::contract::{ElicitationPolicy, ErrorClass, McpOAuth, McpServer};
use crate::error::ToolError;
use async_trait::async_trait;
use handler::KeelClient;
use keel_core::secrets::{SecretSource, Secrets};
use reqwest::header::{HeaderName, HeaderValue};
use rmcp::model::{CallToolRequestParams, ProtocolVersion, Tool};
use rmcp::service::{ClientInitializeError, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::auth::AuthClient;
use rmcp::transport::streamable_http_client::{
    AuthRequiredError, InsufficientScopeError, StreamableHttpClient,
    StreamableHttpClientTransportConfig,
};
use rmcp::{ClientLifecycleMode, ClientServiceExt, RoleClient, ServiceError};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

/// How long connecting (spawn, authorization, handshake, tool list) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The revisions Keel speaks, newest first: discovery offers these; the legacy handshake the
/// newest one that has an `initialize`.
fn lifecycle() -> ClientLifecycleMode {
    ClientLifecycleMode::Auto {
        preferred_versions: vec![ProtocolVersion::V_2026_07_28, ProtocolVersion::V_2025_11_25],
        legacy_version: Some(ProtocolVersion::LATEST_WITH_INITIALIZE),
    }
}

/// True if a failed discovery-first start should be retried with the legacy handshake alone on
/// a fresh transport. rmcp falls back by itself when a server rejects `server/discover` as a
/// legacy server should; some answer it with an empty success instead (or close the stream),
/// which leaves the first transport unusable. Credentials refused are final.
fn retry_legacy(e: &ClientInitializeError) -> bool {
    !(e.is_authorization_required()
        || e.auth_challenge().is_some()
        || is_auth_failure(e)
        || matches!(e, ClientInitializeError::Cancelled))
}

/// A live session with one MCP server.
pub struct McpClient {
    server: McpServer,
    service: RunningService<RoleClient, KeelClient>,
    tools: Vec<Tool>,
    asker: handler::Asker,
}

fn mcp_err(server: &McpServer, detail: impl std::fmt::Display) -> ToolError {
    ToolError::Mcp {
        server: server.to_string(),
        detail: detail.to_string(),
    }
}

fn auth_err(server: &McpServer, detail: impl std::fmt::Display) -> ToolError {
    ToolError::McpAuth {
        server: server.to_string(),
        detail: detail.to_string(),
    }
}

/// True if `e` (or what caused it) is the server refusing credentials (401/403).
fn is_auth_failure(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(c) = cur {
        if c.downcast_ref::<AuthRequiredError>().is_some()
            || c.downcast_ref::<InsufficientScopeError>().is_some()
        {
            return true;
        }
        cur = c.source();
    }
    let text = e.to_string();
    ["401", "403", "Unauthorized", "Forbidden"]
        .iter()
        .any(|w| text.contains(w))
}

/// The `WWW-Authenticate` challenge of a 401 or a 403 `insufficient_scope`, if that is what `e`
/// is: what a new authorization starts from.
fn auth_challenge(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur = Some(e);
    while let Some(c) = cur {
        if let Some(s) = c.downcast_ref::<InsufficientScopeError>() {
            return Some(s.www_authenticate_header.clone());
        }
        if let Some(s) = c.downcast_ref::<AuthRequiredError>() {
            return Some(s.www_authenticate_header.clone());
        }
        cur = c.source();
    }
    None
}

fn has_oauth(server: &McpServer) -> bool {
    matches!(server, McpServer::Http { oauth: Some(_), .. })
}

/// The request headers a contract names, their values taken from `secrets` now; an unset
/// variable is an error naming it (never a value).
fn env_headers(
    server: &McpServer,
    names: &BTreeMap<String, String>,
    secrets: &dyn SecretSource,
) -> Result<HashMap<HeaderName, HeaderValue>, ToolError> {
    let mut out = HashMap::new();
    for (header, var) in names {
        let value = secrets.get(var).ok_or_else(|| {
            auth_err(
                server,
                format!("header {header}: environment variable {var} is not set"),
            )
        })?;
        let name = HeaderName::from_bytes(header.as_bytes())
            .map_err(|_| mcp_err(server, format!("{header:?} is not a valid header name")))?;
        let value = HeaderValue::from_str(&value).map_err(|_| {
            mcp_err(
                server,
                format!("header {header}: the value of {var} is not a valid header value"),
            )
        })?;
        out.insert(name, value);
    }
    Ok(out)
}

fn http_client(server: &McpServer) -> Result<reqwest::Client, ToolError> {
    // reqwest is built without a default TLS provider (decision 062); a no-op under `keel`.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // No overall timeout: a session's standalone SSE stream stays open for its lifetime.
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| mcp_err(server, format!("HTTP client: {e}")))
}

async fn serve_http<C: StreamableHttpClient + Sync>(
    client: C,
    url: &str,
    headers: HashMap<HeaderName, HeaderValue>,
    handler: KeelClient,
) -> Result<RunningService<RoleClient, KeelClient>, ClientInitializeError> {
    let transport = |client: C| {
        let mut config = StreamableHttpClientTransportConfig::with_uri(url);
        config.custom_headers = headers.clone();
        StreamableHttpClientTransport::with_client(http::Ordered::new(client), config)
    };
    match handler
        .clone()
        .serve_with_lifecycle(transport(client.clone()), lifecycle())
        .await
    {
        Err(e) if retry_legacy(&e) => {
            handler
                .serve_with_lifecycle(transport(client), ClientLifecycleMode::Initialize)
                .await
        }
        r => r,
    }
}

async fn serve_stdio(
    server: &McpServer,
    command: &[String],
    env: &BTreeMap<String, String>,
    handler: KeelClient,
) -> Result<RunningService<RoleClient, KeelClient>, ToolError> {
    let (program, args) = command
        .split_first()
        .ok_or_else(|| mcp_err(server, "empty command"))?;
    let spawn = || {
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args).envs(env).kill_on_drop(true);
        rmcp::transport::TokioChildProcess::builder(cmd)
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .map(|(transport, _)| transport)
            .map_err(|e| mcp_err(server, format!("cannot start {program}: {e}")))
    };
    let failed = |e: ClientInitializeError| mcp_err(server, format!("handshake failed: {e}"));
    match handler
        .clone()
        .serve_with_lifecycle(spawn()?, lifecycle())
        .await
    {
        Err(e) if retry_legacy(&e) => handler
            .serve_with_lifecycle(spawn()?, ClientLifecycleMode::Initialize)
            .await
            .map_err(failed),
        r => r.map_err(failed),
    }
}

impl McpClient {
    /// Connects (spawning the server for stdio, authorizing for OAuth), completes the
    /// handshake and lists the server's tools.
    ///
    /// A server that refuses the token it just accepted (its authorization server changed,
    /// the grant was revoked) gets one new authorization from scratch: discovery, registration
    /// with the authorization server it names now, a new token. Header values and OAuth secrets
    /// come from `secrets`, by the names the contract gives.
    pub async fn connect(
        server: &McpServer,
        elicitation: ElicitationPolicy,
        secrets: &dyn SecretSource,
    ) -> Result<Self, ToolError> {
        match Self::connect_inner(server, elicitation.clone(), None, secrets).await {
            Err((_, Some(challenge))) if has_oauth(server) => {
                Self::connect_inner(server, elicitation, Some(challenge), secrets)
                    .await
                    .map_err(|(e, _)| e)
            }
            r => r.map_err(|(e, _)| e),
        }
    }

    /// Connects; with `challenge` (the `WWW-Authenticate` of a refusal), authorizes for it
    /// first. A failure carries the challenge of a refusal after the handshake, if any.
    async fn connect_inner(
        server: &McpServer,
        elicitation: ElicitationPolicy,
        challenge: Option<String>,
        secrets: &dyn SecretSource,
    ) -> Result<Self, (ToolError, Option<String>)> {
        let handler = KeelClient::new(elicitation.clone());
        let asker = handler.asker();
        let fut = async {
            let service = match server {
                McpServer::Stdio { command, env } => serve_stdio(server, command, env, handler)
                    .await
                    .map_err(|e| (e, None))?,
                McpServer::Http {
                    url,
                    headers_from_env,
                    oauth,
                } => {
                    let headers =
                        env_headers(server, headers_from_env, secrets).map_err(|e| (e, None))?;
                    let oauth = oauth.as_ref();
                    connect_http(server, url, headers, oauth, handler, challenge, secrets)
                        .await
                        .map_err(|e| (e, None))?
                }
            };
            let tools = service.list_all_tools().await.map_err(|e| {
                (
                    classify_connect(server, "tools/list failed", &e),
                    auth_challenge(&e),
                )
            })?;
            Ok::<_, (ToolError, Option<String>)>((service, tools))
        };
        let (service, tools) =
            tokio::time::timeout(CONNECT_TIMEOUT, fut)
                .await
                .map_err(|_| {
                    (
                        mcp_err(server, format!("no handshake within {CONNECT_TIMEOUT:?}")),
                        None,
                    )
                })??;
        Ok(Self {
            server: server.clone(),
            service,
            tools,
            asker,
        })
    }

    /// The tools the server listed when the session opened.
    pub fn tools(&self) -> &[Tool] {
        &self.tools
    }

    /// The protocol revision the session runs on.
    pub fn protocol_version(&self) -> Option<String> {
        self.service
            .peer_info()
            .map(|i| i.protocol_version.to_string())
    }

    /// Every tool the server offers, listed again now.
    pub async fn list_tools(&self) -> Result<Vec<Tool>, ToolError> {
        self.service
            .list_all_tools()
            .await
            .map_err(|e| classify_connect(&self.server, "tools/list failed", &e))
    }

    /// How the server's idea of `tool` differs from a contract's input schema `contract_input`:
    /// one line per difference (missing tool, properties added or removed, required changed,
    /// a property's type changed). Empty when they agree.
    pub fn drift(&self, tool: &str, contract_input: &Value) -> Vec<String> {
        let Some(t) = self.tools.iter().find(|t| t.name == tool) else {
            return vec![format!("the server lists no tool {tool:?}")];
        };
        schema_drift(&Value::Object((*t.input_schema).clone()), contract_input)
    }

    /// Calls `tool` with `args` (an object) and maps the reply to an output or an error class.
    pub async fn call(&self, tool: &str, args: &Value) -> Result<Value, AdapterError> {
        self.try_call(tool, args).await.map_err(|(e, _)| e)
    }

    /// [`McpClient::call`], with the challenge of a 403 that asked for more scope.
    async fn try_call(
        &self,
        tool: &str,
        args: &Value,
    ) -> Result<Value, (AdapterError, Option<String>)> {
        let mut params = CallToolRequestParams::new(tool.to_owned());
        if let Some(map) = args.as_object() {
            params = params.with_arguments(map.clone());
        }
        let result = self.service.call_tool(params).await.map_err(|e| {
            let class = match &e {
                ServiceError::Timeout { .. } => ErrorClass::Timeout,
                ServiceError::McpError(_) | ServiceError::UnexpectedResponse => {
                    ErrorClass::Protocol
                }
                e if is_auth_failure(e) => ErrorClass::Auth,
                _ => ErrorClass::Connection,
            };
            let message = format!("MCP {} tools/call {tool}: {e}", self.server);
            (AdapterError::new(class, message), auth_challenge(&e))
        })?;
        let content = serde_json::to_value(&result.content).unwrap_or(Value::Null);
        if result.is_error == Some(true) {
            let text: Vec<&str> = content
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|b| b.get("text").and_then(Value::as_str))
                .collect();
            return Err((
                AdapterError::new(
                    ErrorClass::ToolError,
                    format!("MCP tool {tool} reported an error: {}", text.join(" ")),
                ),
                None,
            ));
        }
        Ok(match result.structured_content {
            Some(v) => v,
            None => json!({ "content": content }),
        })
    }

    /// Sends the server's questions to `to` (the call this session serves now), or declines
    /// them (`None`).
    fn ask_through(&self, to: Option<tokio::sync::mpsc::Sender<crate::elicit::ElicitAsk>>) {
        if let Ok(mut a) = self.asker.lock() {
            *a = to;
        }
    }

    /// Ends the session (and the child process, for stdio).
    pub async fn close(self) {
        let _ = self.service.cancel().await;
    }

    fn is_closed(&self) -> bool {
        self.service.is_closed()
    }
}

fn classify_connect(server: &McpServer, what: &str, e: &ServiceError) -> ToolError {
    if is_auth_failure(e) {
        auth_err(server, format!("{what}: {e}"))
    } else {
        mcp_err(server, format!("{what}: {e}"))
    }
}

/// Opens an HTTP session: with no OAuth, or OAuth not needed, plainly; with OAuth, after the
/// grant (client credentials up front; authorization code when the server challenges).
async fn connect_http(
    server: &McpServer,
    url: &str,
    headers: HashMap<HeaderName, HeaderValue>,
    oauth: Option<&McpOAuth>,
    handler: KeelClient,
    step_up: Option<String>,
    secrets: &dyn SecretSource,
) -> Result<RunningService<RoleClient, KeelClient>, ToolError> {
    let plain = http_client(server)?;
    let handshake = |e: ClientInitializeError| {
        if e.is_authorization_required() || e.auth_challenge().is_some() || is_auth_failure(&e) {
            auth_err(server, format!("the server refused the credentials: {e}"))
        } else {
            mcp_err(server, format!("handshake failed: {e}"))
        }
    };
    let challenge = match oauth {
        None => {
            return serve_http(plain, url, headers, handler)
                .await
                .map_err(handshake);
        }
        Some(_) if step_up.is_some() => step_up,
        Some(o) if o.grant == crate::contract::OAuthGrant::ClientCredentials => None,
        Some(_) => match serve_http(plain.clone(), url, headers.clone(), handler.clone()).await {
            Ok(service) => return Ok(service),
            Err(e) => match e.auth_challenge() {
                Some(c) => Some(c.to_owned()),
                None if e.is_authorization_required() => None,
                None => return Err(handshake(e)),
            },
        },
    };
    let Some(o) = oauth else {
        return Err(auth_err(server, "no OAuth configuration"));
    };
    let manager = oauth::authorize(url, o, challenge, secrets)
        .await
        .map_err(|e| auth_err(server, e))?;
    serve_http(AuthClient::new(plain, manager), url, headers, handler)
        .await
        .map_err(handshake)
}

/// The differences between the server's input schema and the contract's, one line each.
pub fn schema_drift(server: &Value, contract: &Value) -> Vec<String> {
    let props = |s: &Value| -> BTreeMap<String, Value> {
        s.get("properties")
            .and_then(Value::as_object)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    };
    let required = |s: &Value| -> Vec<String> {
        let mut r: Vec<String> = s
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        r.sort();
        r
    };
    let (sp, cp) = (props(server), props(contract));
    let mut out = Vec::new();
    for (name, s) in &sp {
        match cp.get(name) {
            None => out.push(format!(
                "property {name:?} is on the server, not in the contract"
            )),
            Some(c) if s.get("type") != c.get("type") => out.push(format!(
                "property {name:?}: the server says type {}, the contract {}",
                s.get("type").unwrap_or(&Value::Null),
                c.get("type").unwrap_or(&Value::Null)
            )),
            Some(_) => {}
        }
    }
    for name in cp.keys().filter(|n| !sp.contains_key(*n)) {
        out.push(format!(
            "property {name:?} is in the contract, not on the server"
        ));
    }
    let (sr, cr) = (required(server), required(contract));
    if sr != cr {
        out.push(format!(
            "required: the server says {sr:?}, the contract {cr:?}"
        ));
    }
    out
}

/// The secret source a pool's sessions take header values and OAuth secrets from.
#[derive(Clone)]
struct SessionSecrets(Secrets);

impl Default for SessionSecrets {
    fn default() -> Self {
        Self(keel_core::secrets::none())
    }
}

impl McpPool {
    /// A pool whose sessions take header values and OAuth secrets from `secrets`.
    pub fn new(secrets: Secrets) -> Self {
        Self {
            secrets: SessionSecrets(secrets),
            ..Self::default()
        }
    }
}

/// What a session is shared by: the server and how elicitation is answered.
type SessionKey = (McpServer, ElicitationPolicy);

/// Shared connections, one per server and elicitation policy; under `elicitation: gate`, idle
/// sessions each serving one call at a time.
#[derive(Clone, Default)]
pub struct McpPool {
    secrets: SessionSecrets,
    conns: Arc<Mutex<HashMap<SessionKey, Arc<McpClient>>>>,
    idle: Arc<Mutex<HashMap<SessionKey, Vec<McpClient>>>>,
}

fn exclusive(elicitation: &ElicitationPolicy) -> bool {
    matches!(elicitation, ElicitationPolicy::Gate(_))
}

fn connect_failed(e: ToolError) -> AdapterError {
    let class = match e {
        ToolError::McpAuth { .. } => ErrorClass::Auth,
        _ => ErrorClass::Connection,
    };
    AdapterError::new(class, e.to_string())
}

impl McpPool {
    async fn get(
        &self,
        server: &McpServer,
        elicitation: &ElicitationPolicy,
    ) -> Result<Arc<McpClient>, AdapterError> {
        let mut conns = self.conns.lock().await;
        let key = (server.clone(), elicitation.clone());
        if let Some(c) = conns.get(&key).filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let client = McpClient::connect(server, elicitation.clone(), &*self.secrets.0)
            .await
            .map_err(connect_failed)?;
        let client = Arc::new(client);
        conns.insert(key, client.clone());
        Ok(client)
    }

    /// An idle session of its own for one call (a new one if none is idle).
    async fn take(
        &self,
        server: &McpServer,
        elicitation: &ElicitationPolicy,
    ) -> Result<McpClient, AdapterError> {
        let key = (server.clone(), elicitation.clone());
        loop {
            let next = self.idle.lock().await.get_mut(&key).and_then(Vec::pop);
            match next {
                Some(c) if !c.is_closed() => return Ok(c),
                Some(c) => c.close().await,
                None => break,
            }
        }
        McpClient::connect(server, elicitation.clone(), &*self.secrets.0)
            .await
            .map_err(connect_failed)
    }

    /// Adopts a session opened elsewhere (e.g. one that listed the tools a contract was drafted
    /// from), so calls reuse it instead of opening a second one.
    pub async fn adopt(&self, elicitation: ElicitationPolicy, client: McpClient) {
        let key = (client.server.clone(), elicitation);
        if exclusive(&key.1) {
            client.ask_through(None);
            self.idle.lock().await.entry(key).or_default().push(client);
        } else {
            self.conns.lock().await.insert(key, Arc::new(client));
        }
    }

    async fn evict(&self, server: &McpServer, elicitation: &ElicitationPolicy) {
        self.conns
            .lock()
            .await
            .remove(&(server.clone(), elicitation.clone()));
    }

    /// Closes every connection (stops stdio servers).
    pub async fn close_all(&self) {
        let drained: Vec<_> = self.conns.lock().await.drain().map(|(_, c)| c).collect();
        for c in drained {
            if let Ok(c) = Arc::try_unwrap(c) {
                c.close().await;
            }
        }
        let idle: Vec<_> = self
            .idle
            .lock()
            .await
            .drain()
            .flat_map(|(_, v)| v)
            .collect();
        for c in idle {
            c.close().await;
        }
    }
}

/// A contract's tool on an MCP server.
#[derive(Clone)]
pub struct McpAdapter {
    pool: McpPool,
    server: McpServer,
    tool: String,
    elicitation: ElicitationPolicy,
}

impl McpAdapter {
    /// The adapter for `tool` on `server`, sharing `pool`'s connections.
    pub fn new(
        pool: McpPool,
        server: McpServer,
        tool: String,
        elicitation: ElicitationPolicy,
    ) -> Self {
        Self {
            pool,
            server,
            tool,
            elicitation,
        }
    }
}

#[async_trait]
impl Adapter for McpAdapter {
    async fn call(&self, call: AdapterCall<'_>) -> Result<Value, AdapterError> {
        if exclusive(&self.elicitation) {
            return self.call_alone(call).await;
        }
        let client = self.pool.get(&self.server, &self.elicitation).await?;
        let (e, challenge) = match client.try_call(&self.tool, call.args).await {
            Ok(v) => return Ok(v),
            Err(failed) => failed,
        };
        if matches!(e.class, ErrorClass::Connection | ErrorClass::Auth) {
            self.pool.evict(&self.server, &self.elicitation).await;
        }
        self.step_up(call, e, challenge).await
    }

    fn honours_idempotency_key(&self) -> bool {
        // MCP has no idempotency-key convention: a call with an unknown outcome is escalated.
        false
    }
}

impl McpAdapter {
    /// A call on a session of its own (`elicitation: gate`): the server's questions during it
    /// go to this call's person, never to another call's.
    async fn call_alone(&self, call: AdapterCall<'_>) -> Result<Value, AdapterError> {
        let client = self.pool.take(&self.server, &self.elicitation).await?;
        client.ask_through(call.elicit.cloned());
        let out = client.try_call(&self.tool, call.args).await;
        client.ask_through(None);
        let (e, challenge) = match out {
            Ok(v) => {
                self.pool.adopt(self.elicitation.clone(), client).await;
                return Ok(v);
            }
            Err(failed) => failed,
        };
        if matches!(e.class, ErrorClass::Connection | ErrorClass::Auth) {
            client.close().await;
        } else {
            self.pool.adopt(self.elicitation.clone(), client).await;
        }
        self.step_up(call, e, challenge).await
    }

    /// Step-up, or a token the server no longer takes: the server refused the call (it did not
    /// run); authorize once for what its challenge names and repeat the call on the new session.
    async fn step_up(
        &self,
        call: AdapterCall<'_>,
        e: AdapterError,
        challenge: Option<String>,
    ) -> Result<Value, AdapterError> {
        let (Some(challenge), true) = (challenge, has_oauth(&self.server)) else {
            return Err(e);
        };
        let stepped = McpClient::connect_inner(
            &self.server,
            self.elicitation.clone(),
            Some(challenge),
            &*self.pool.secrets.0,
        )
        .await
        .map_err(|(err, _)| AdapterError::new(ErrorClass::Auth, err.to_string()))?;
        stepped.ask_through(call.elicit.cloned());
        let out = stepped.call(&self.tool, call.args).await;
        self.pool.adopt(self.elicitation.clone(), stepped).await;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drift_names_each_difference_and_nothing_when_equal() {
        let server = json!({"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}, "required": ["a", "b"]});
        assert!(schema_drift(&server, &server).is_empty());
        let contract = json!({"type": "object", "properties": {"a": {"type": "string"}, "c": {"type": "number"}}, "required": ["a"]});
        let d = schema_drift(&server, &contract);
        assert_eq!(d.len(), 4, "{d:?}");
        assert!(d[0].contains("\"a\"") && d[0].contains("type"));
        assert!(d[1].contains("\"b\" is on the server"));
        assert!(d[2].contains("\"c\" is in the contract"));
        assert!(d[3].starts_with("required"));
    }
}
