//! The MCP adapter: tools on Model Context Protocol servers, through the official SDK (`rmcp`),
//! over stdio (a child process) or Streamable HTTP.
//!
//! Connections are opened lazily, one per server, shared by every contract that names the same
//! server, and dropped (to be reopened on the next call) when the transport fails.
//!
//! Output: the tool's `structuredContent` when it returns one; otherwise `{"content": [...]}`,
//! the content blocks as the server sent them. That value is what the output schema checks.

use super::{Adapter, AdapterCall, AdapterError};
use crate::contract::{ErrorClass, McpServer};
use crate::error::ToolError;
use async_trait::async_trait;
use rmcp::model::{CallToolRequestParams, Tool};
use rmcp::service::RunningService;
use rmcp::{RoleClient, ServiceError, ServiceExt};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

/// How long connecting (spawn + handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// A live session with one MCP server.
pub struct McpClient {
    server: McpServer,
    service: RunningService<RoleClient, ()>,
}

fn mcp_err(server: &McpServer, detail: impl std::fmt::Display) -> ToolError {
    ToolError::Mcp {
        server: server.to_string(),
        detail: detail.to_string(),
    }
}

impl McpClient {
    /// Connects (spawning the server for stdio) and completes the MCP handshake.
    pub async fn connect(server: &McpServer) -> Result<Self, ToolError> {
        let fut = async {
            match server {
                McpServer::Stdio { command, env } => {
                    let (program, args) = command
                        .split_first()
                        .ok_or_else(|| mcp_err(server, "empty command"))?;
                    let mut cmd = tokio::process::Command::new(program);
                    cmd.args(args).envs(env).kill_on_drop(true);
                    let (transport, _) = rmcp::transport::TokioChildProcess::builder(cmd)
                        .stderr(std::process::Stdio::inherit())
                        .spawn()
                        .map_err(|e| mcp_err(server, format!("cannot start {program}: {e}")))?;
                    ().serve(transport)
                        .await
                        .map_err(|e| mcp_err(server, format!("handshake failed: {e}")))
                }
                McpServer::Http { url } => {
                    let transport =
                        rmcp::transport::StreamableHttpClientTransport::from_uri(url.as_str());
                    ().serve(transport)
                        .await
                        .map_err(|e| mcp_err(server, format!("handshake failed: {e}")))
                }
            }
        };
        let service = tokio::time::timeout(CONNECT_TIMEOUT, fut)
            .await
            .map_err(|_| mcp_err(server, format!("no handshake within {CONNECT_TIMEOUT:?}")))??;
        Ok(Self {
            server: server.clone(),
            service,
        })
    }

    /// Every tool the server offers.
    pub async fn list_tools(&self) -> Result<Vec<Tool>, ToolError> {
        self.service
            .list_all_tools()
            .await
            .map_err(|e| mcp_err(&self.server, format!("tools/list failed: {e}")))
    }

    /// Calls `tool` with `args` (an object) and maps the reply to an output or an error class.
    pub async fn call(&self, tool: &str, args: &Value) -> Result<Value, AdapterError> {
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
                _ => ErrorClass::Connection,
            };
            AdapterError::new(class, format!("MCP {} tools/call {tool}: {e}", self.server))
        })?;
        let content = serde_json::to_value(&result.content).unwrap_or(Value::Null);
        if result.is_error == Some(true) {
            let text: Vec<&str> = content
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|b| b.get("text").and_then(Value::as_str))
                .collect();
            return Err(AdapterError::new(
                ErrorClass::ToolError,
                format!("MCP tool {tool} reported an error: {}", text.join(" ")),
            ));
        }
        Ok(match result.structured_content {
            Some(v) => v,
            None => json!({ "content": content }),
        })
    }

    /// Ends the session (and the child process, for stdio).
    pub async fn close(self) {
        let _ = self.service.cancel().await;
    }

    fn is_closed(&self) -> bool {
        self.service.is_closed()
    }
}

/// Shared connections, one per server.
#[derive(Clone, Default)]
pub struct McpPool {
    conns: Arc<Mutex<HashMap<McpServer, Arc<McpClient>>>>,
}

impl McpPool {
    async fn get(&self, server: &McpServer) -> Result<Arc<McpClient>, AdapterError> {
        let mut conns = self.conns.lock().await;
        if let Some(c) = conns.get(server).filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let client = McpClient::connect(server)
            .await
            .map_err(|e| AdapterError::new(ErrorClass::Connection, e.to_string()))?;
        let client = Arc::new(client);
        conns.insert(server.clone(), client.clone());
        Ok(client)
    }

    async fn evict(&self, server: &McpServer) {
        self.conns.lock().await.remove(server);
    }

    /// Closes every connection (stops stdio servers).
    pub async fn close_all(&self) {
        let drained: Vec<_> = self.conns.lock().await.drain().map(|(_, c)| c).collect();
        for c in drained {
            if let Ok(c) = Arc::try_unwrap(c) {
                c.close().await;
            }
        }
    }
}

/// A contract's tool on an MCP server.
#[derive(Clone)]
pub struct McpAdapter {
    pool: McpPool,
    server: McpServer,
    tool: String,
}

impl McpAdapter {
    /// The adapter for `tool` on `server`, sharing `pool`'s connections.
    pub fn new(pool: McpPool, server: McpServer, tool: String) -> Self {
        Self { pool, server, tool }
    }
}

#[async_trait]
impl Adapter for McpAdapter {
    async fn call(&self, call: AdapterCall<'_>) -> Result<Value, AdapterError> {
        let client = self.pool.get(&self.server).await?;
        let out = client.call(&self.tool, call.args).await;
        if let Err(e) = &out
            && e.class == ErrorClass::Connection
        {
            self.pool.evict(&self.server).await;
        }
        out
    }

    fn honours_idempotency_key(&self) -> bool {
        // MCP has no idempotency-key convention: a call with an unknown outcome is escalated.
        false
    }
}
