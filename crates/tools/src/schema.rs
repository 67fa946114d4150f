//! JSON Schema (draft 2020-12) for tool inputs and outputs: checking a schema when a contract
//! loads, and validating instances with the compiled validator on every call.
//!
//! Remote `$ref`s are never fetched (jsonschema is built without its HTTP resolver): a contract
//! must be self-contained, so a call can never depend on a third-party URL being up.

use serde_json::Value;
use std::sync::Arc;

/// A schema that passed the 2020-12 meta-schema and compiled.
#[derive(Clone)]
pub struct CompiledSchema {
    raw: Arc<Value>,
    validator: Arc<jsonschema::Validator>,
}

impl std::fmt::Debug for CompiledSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("CompiledSchema").field(&self.raw).finish()
    }
}

const DRAFT_2020_12: &str = "https://json-schema.org/draft/2020-12/schema";

/// Renders a JSON pointer (`/properties/a/type`) as a dotted field path (`properties.a.type`).
fn dotted(pointer: &str) -> String {
    pointer
        .trim_start_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect::<Vec<_>>()
        .join(".")
}

impl CompiledSchema {
    /// Checks `schema` against the 2020-12 meta-schema and compiles it. On failure returns every
    /// problem as `(field path inside the schema, what is wrong)`.
    pub fn compile(schema: &Value) -> Result<Self, Vec<(String, String)>> {
        if !schema.is_object() && !schema.is_boolean() {
            return Err(vec![(
                String::new(),
                "must be a JSON Schema (an object or a boolean)".into(),
            )]);
        }
        if let Some(declared) = schema.get("$schema").and_then(Value::as_str)
            && declared.trim_end_matches('#') != DRAFT_2020_12
        {
            return Err(vec![(
                "$schema".into(),
                format!("only draft 2020-12 ({DRAFT_2020_12}) is supported, found {declared:?}"),
            )]);
        }
        let meta = jsonschema::draft202012::meta::validator();
        let problems: Vec<(String, String)> = meta
            .iter_errors(schema)
            .map(|e| (dotted(e.instance_path().as_str()), e.to_string()))
            .collect();
        if !problems.is_empty() {
            return Err(problems);
        }
        match jsonschema::draft202012::new(schema) {
            Ok(v) => Ok(Self {
                raw: Arc::new(schema.clone()),
                validator: Arc::new(v),
            }),
            Err(e) => Err(vec![(dotted(e.instance_path().as_str()), e.to_string())]),
        }
    }

    /// The schema as written.
    pub fn raw(&self) -> &Value {
        &self.raw
    }

    /// Every way `instance` fails the schema, each as `<path>: <what is wrong>` (path `$` for the
    /// root), readable by a person and by the model's next prompt. Empty when valid.
    pub fn errors(&self, instance: &Value) -> Vec<String> {
        if self.validator.is_valid(instance) {
            return Vec::new();
        }
        self.validator
            .iter_errors(instance)
            .map(|e| {
                let path = dotted(e.instance_path().as_str());
                let at = if path.is_empty() {
                    "$".into()
                } else {
                    format!("$.{path}")
                };
                format!("{at}: {e}")
            })
            .collect()
    }
}
