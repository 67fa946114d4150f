//! `keel tools import-mcp`: lists an MCP server's tools and drafts one contract file per tool,
//! mapping the server's annotations to defaults that a person then reviews. Annotations are hints
//! from the server, not promises, so every draft says so at the top.
//!
//! | annotation | draft |
//! |---|---|
//! | `readOnlyHint: true` | `side_effect: read_only`, tier 0, `idempotency: none`, retry timeouts |
//! | `destructiveHint: true` (the MCP default when not read-only) | `irreversible`, tier 3, escalate on exhaustion |
//! | `destructiveHint: false` | `reversible`, tier 1 |
//! | `idempotentHint: true` | repeats are harmless: retry timeouts and connection errors |

use crate::contract::{ElicitationPolicy, McpServer, PrivateKeySource};
use crate::error::ToolError;
use rmcp::model::Tool;
use serde_json::{Map, Value, json};

/// One drafted contract file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Draft {
    /// Suggested file name (`<name>.yaml`).
    pub file_name: String,
    /// The contract's YAML text, with a review note on top.
    pub yaml: String,
}

/// Parses a CLI target: an `http(s)://` URL, or a command line split on whitespace.
pub fn server_from_target(target: &[String]) -> Option<McpServer> {
    let words: Vec<String> = target
        .iter()
        .flat_map(|t| t.split_whitespace().map(str::to_owned))
        .collect();
    match words.as_slice() {
        [] => None,
        [url] if url.starts_with("http://") || url.starts_with("https://") => {
            Some(McpServer::http(url.clone()))
        }
        _ => Some(McpServer::Stdio {
            command: words,
            env: Default::default(),
        }),
    }
}

/// Connects to `server` (its header values and OAuth secrets from `secrets`), lists its tools
/// and drafts a contract for each.
pub async fn import(
    server: &McpServer,
    secrets: &dyn keel_core::secrets::SecretSource,
) -> Result<Vec<Draft>, ToolError> {
    let client =
        crate::adapter::mcp::McpClient::connect(server, ElicitationPolicy::Decline, secrets)
            .await?;
    let drafts = client.tools().iter().map(|t| draft(server, t)).collect();
    client.close().await;
    Ok(drafts)
}

/// A contract name from an MCP tool name (contracts allow letters, digits, `_`, `-`).
fn contract_name(tool: &str) -> String {
    tool.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// MCP servers often emit draft-07 schemas (`$schema: …draft-07…`); the keywords they use mean
/// the same in 2020-12, so the declaration is dropped and the result checked as 2020-12.
fn as_2020_12(schema: &Map<String, Value>) -> Value {
    let mut s = schema.clone();
    s.remove("$schema");
    Value::Object(s)
}

/// Drafts the contract for one tool (elicitation declined).
pub fn draft(server: &McpServer, tool: &Tool) -> Draft {
    draft_with(server, ElicitationPolicy::Decline, tool)
}

/// The `adapter:` section naming `tool` on `server`, credentials and elicitation included.
pub fn adapter_json(server: &McpServer, elicitation: ElicitationPolicy, tool: &str) -> Value {
    let mut a = match server {
        McpServer::Stdio { command, env } => {
            let mut a = json!({"kind": "mcp", "command": command, "tool": tool});
            if !env.is_empty() {
                a["env"] = json!(env);
            }
            a
        }
        McpServer::Http {
            url,
            headers_from_env,
            oauth,
        } => {
            let mut a = json!({"kind": "mcp", "url": url, "tool": tool});
            if !headers_from_env.is_empty() {
                a["headers_from_env"] = json!(headers_from_env);
            }
            if let Some(o) = oauth {
                let mut j = json!({"grant": o.grant.as_str()});
                if let Some(v) = &o.client_id_env {
                    j["client_id_env"] = json!(v);
                }
                if let Some(v) = &o.client_secret_env {
                    j["client_secret_env"] = json!(v);
                }
                if let Some(v) = &o.client_metadata_url {
                    j["client_metadata_url"] = json!(v);
                }
                if !o.scopes.is_empty() {
                    j["scopes"] = json!(o.scopes);
                }
                if let Some(i) = &o.idp {
                    let mut idp = json!({"issuer": i.issuer, "token_endpoint": i.token_endpoint,
                        "client_id_env": i.client_id_env, "id_token_env": i.id_token_env});
                    if let Some(v) = &i.client_secret_env {
                        idp["client_secret_env"] = json!(v);
                    }
                    j["idp"] = idp;
                }
                match &o.private_key {
                    Some(PrivateKeySource::Env(v)) => j["private_key_env"] = json!(v),
                    Some(PrivateKeySource::File(f)) => j["private_key_file"] = json!(f),
                    None => {}
                }
                a["oauth"] = j;
            }
            a
        }
    };
    if let ElicitationPolicy::Gate(g) = &elicitation {
        a["elicitation"] =
            json!({"policy": "gate", "queue": g.queue, "expire_after_s": g.expire_after_s});
        if let Some(d) = g.deadline_s {
            a["elicitation"]["deadline_s"] = json!(d);
        }
    } else if elicitation != ElicitationPolicy::Decline {
        a["elicitation"] = json!(elicitation.as_str());
    }
    a
}

/// Drafts the contract for one tool, answering elicitation by `elicitation`.
pub fn draft_with(server: &McpServer, elicitation: ElicitationPolicy, tool: &Tool) -> Draft {
    let name = contract_name(&tool.name);
    let a = tool.annotations.clone().unwrap_or_default();
    let read_only = a.read_only_hint == Some(true);
    let destructive = !read_only && a.destructive_hint != Some(false);
    let idempotent = read_only || a.idempotent_hint == Some(true);
    let (side_effect, tier) = match (read_only, destructive) {
        (true, _) => ("read_only", 0),
        (false, true) => ("irreversible", 3),
        (false, false) => ("reversible", 1),
    };
    let input = as_2020_12(&tool.input_schema);
    let output = match &tool.output_schema {
        Some(s) => as_2020_12(s),
        None => {
            json!({"type": "object", "properties": {"content": {"type": "array"}}, "required": ["content"]})
        }
    };
    let mut key: Vec<Value> = input
        .get("required")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    key.push(json!("exec_id"));
    let idempotency = if read_only {
        json!("none")
    } else {
        json!({"mode": "required", "key": key})
    };
    let retryable = if idempotent {
        json!(["timeout", "connection"])
    } else {
        json!(["connection"])
    };
    let adapter = adapter_json(server, elicitation, &tool.name);
    let contract = json!({
        "name": name,
        "description": tool.description.as_deref().unwrap_or(tool.title.as_deref().unwrap_or("")),
        "schema": {"input": input, "output": output},
        "side_effect": side_effect,
        "consequence_tier": tier,
        "idempotency": idempotency,
        "budgets": {"rate": "60/min", "cost_est": "$0"},
        "failure_policy": {
            "retryable": retryable,
            "max_attempts": 3,
            "backoff": {"initial": "200ms", "max": "5s"},
            "compensation": "none",
            "on_exhaust": if destructive { "escalate_to_gate" } else { "fail" },
        },
        "timeout": "30s",
        "adapter": adapter,
    });
    let hints = format!(
        "readOnlyHint={:?} destructiveHint={:?} idempotentHint={:?} openWorldHint={:?}",
        a.read_only_hint, a.destructive_hint, a.idempotent_hint, a.open_world_hint
    );
    let body = serde_saphyr::to_string(&contract).unwrap_or_default();
    let yaml = format!(
        "# Drafted by `keel tools import-mcp` from MCP server {server}, tool {:?}.\n\
         # REVIEW before use: side_effect, consequence_tier, idempotency key, budgets and\n\
         # failure_policy are defaults derived from the server's annotations, which are hints:\n\
         # {hints}\n{body}",
        tool.name
    );
    Draft {
        file_name: format!("{name}.yaml"),
        yaml,
    }
}
