//! Keel's side of an MCP session: who the client is (name, version, capabilities) and how it
//! answers what the server asks of it. Elicitation is answered by the policy the contract
//! declares; under `gate` the question goes to the call it arrived during (a session with that
//! policy serves one call at a time), which asks a person through an approval gate.

use crate::contract::ElicitationPolicy;
use crate::elicit::{ElicitAnswer, ElicitAsk};
use rmcp::ClientHandler;
use rmcp::model::{
    ClientCapabilities, ClientConfig, ElicitRequestParams, ElicitResult, ElicitationAction,
    ElicitationCapability, ErrorData, FormElicitationCapability, Implementation, ProtocolVersion,
};
use rmcp::service::{RequestContext, RoleClient};
use serde_json::{Map, Value};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

/// Where the session's questions go: the call it serves now, if any.
pub type Asker = Arc<Mutex<Option<mpsc::Sender<ElicitAsk>>>>;

/// The name Keel gives itself in `clientInfo`.
pub const CLIENT_NAME: &str = "keel";

/// The client handler of every session Keel opens.
#[derive(Clone, Debug)]
pub struct KeelClient {
    elicitation: ElicitationPolicy,
    asker: Asker,
}

impl KeelClient {
    /// A handler answering elicitation by `elicitation`.
    pub fn new(elicitation: ElicitationPolicy) -> Self {
        Self {
            elicitation,
            asker: Asker::default(),
        }
    }

    /// Where questions under `elicitation: gate` go (set for the call the session serves).
    pub fn asker(&self) -> Asker {
        self.asker.clone()
    }

    /// A person's answer, through the call the session serves; declined when no call takes
    /// questions (a session used outside an execution, e.g. `keel tools call`).
    async fn ask_a_person(&self, message: String, requested_schema: Value) -> ElicitResult {
        let to = self.asker.lock().ok().and_then(|a| a.clone());
        let Some(to) = to else {
            return ElicitResult::new(ElicitationAction::Decline);
        };
        let (reply, answer) = oneshot::channel();
        let ask = ElicitAsk {
            message,
            requested_schema,
            reply,
        };
        if to.send(ask).await.is_err() {
            // The call ended meanwhile.
            return ElicitResult::new(ElicitationAction::Cancel);
        }
        match answer.await {
            Ok(ElicitAnswer::Accept(content)) => {
                ElicitResult::new(ElicitationAction::Accept).with_content(content)
            }
            Ok(ElicitAnswer::Decline) => ElicitResult::new(ElicitationAction::Decline),
            Ok(ElicitAnswer::Cancel) | Err(_) => ElicitResult::new(ElicitationAction::Cancel),
        }
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
        let answer = match (request, &self.elicitation) {
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
            (
                ElicitRequestParams::FormElicitationParams {
                    message,
                    requested_schema,
                    ..
                },
                ElicitationPolicy::Gate(_),
            ) => {
                let schema = serde_json::to_value(&requested_schema).unwrap_or(Value::Null);
                self.ask_a_person(message, schema).await
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
