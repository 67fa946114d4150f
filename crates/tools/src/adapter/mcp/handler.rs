//! Keel's side of an MCP session: who the client is (name, version, capabilities) and how it
//! answers what the server asks of it. No person sits behind a tool call, so elicitation is
//! answered by the policy the contract declares.

use crate::contract::ElicitationPolicy;
use rmcp::ClientHandler;
use rmcp::model::{
    ClientCapabilities, ClientConfig, ElicitRequestParams, ElicitResult, ElicitationAction,
    ElicitationCapability, ErrorData, FormElicitationCapability, Implementation, ProtocolVersion,
};
use rmcp::service::{RequestContext, RoleClient};
use serde_json::{Map, Value};

/// The name Keel gives itself in `clientInfo`.
pub const CLIENT_NAME: &str = "keel";

/// The client handler of every session Keel opens.
#[derive(Clone, Copy, Debug)]
pub struct KeelClient {
    elicitation: ElicitationPolicy,
}

impl KeelClient {
    /// A handler answering elicitation by `elicitation`.
    pub fn new(elicitation: ElicitationPolicy) -> Self {
        Self { elicitation }
    }
}

/// `clientInfo` and capabilities: Keel and its version, form elicitation (answered by policy).
pub fn client_config() -> ClientConfig {
    let mut caps = ClientCapabilities::default();
    let mut elicitation = ElicitationCapability::new();
    elicitation.form = Some(FormElicitationCapability::default());
    caps.elicitation = Some(elicitation);
    let mut info = Implementation::new(CLIENT_NAME, env!("CARGO_PKG_VERSION"));
    info.title = Some("Keel".to_owned());
    // rmcp's default version is the newest, which has no `initialize`: the legacy handshake
    // must name the newest revision that has one.
    ClientConfig::new(caps, info).with_protocol_version(ProtocolVersion::LATEST_WITH_INITIALIZE)
}

/// The content of an "accept with defaults" answer: each property's `default`, where it has one.
pub fn schema_defaults(schema: &Value) -> Map<String, Value> {
    schema
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(name, prop)| Some((name.clone(), prop.get("default")?.clone())))
        .collect()
}

impl ClientHandler for KeelClient {
    fn get_info(&self) -> ClientConfig {
        client_config()
    }

    async fn create_elicitation(
        &self,
        request: ElicitRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        let answer = match (request, self.elicitation) {
            (
                ElicitRequestParams::FormElicitationParams {
                    requested_schema, ..
                },
                ElicitationPolicy::AcceptDefaults,
            ) => {
                let schema = serde_json::to_value(&requested_schema).unwrap_or(Value::Null);
                ElicitResult::new(ElicitationAction::Accept)
                    .with_content(Value::Object(schema_defaults(&schema)))
            }
            // A URL elicitation needs a person at a browser: declined under every policy.
            _ => ElicitResult::new(ElicitationAction::Decline),
        };
        Ok(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_are_taken_per_property_and_missing_ones_left_out() {
        let schema = json!({"type": "object", "properties": {
            "name": {"type": "string", "default": "John Doe"},
            "age": {"type": "integer", "default": 30},
            "note": {"type": "string"}
        }});
        assert_eq!(
            Value::Object(schema_defaults(&schema)),
            json!({"name": "John Doe", "age": 30})
        );
        assert!(schema_defaults(&json!("not a schema")).is_empty());
    }

    #[test]
    fn the_client_names_itself_keel_with_its_version() {
        let c = client_config();
        assert_eq!(c.client_info.name, "keel");
        assert_eq!(c.client_info.version, env!("CARGO_PKG_VERSION"));
        assert_eq!(c.protocol_version, ProtocolVersion::V_2025_11_25);
    }
}
