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

    /// `instance` without the top-level properties that are `null`, not `required`, and refused
    /// by the schema as `null`: such a null means "not provided" (MCP's header mapping, SEP-2243,
    /// treats the two alike, and models often send null for an optional argument). A null the
    /// schema accepts is a value and stays; a null for a required property stays and fails
    /// validation.
    pub fn without_optional_nulls(&self, instance: Value) -> Value {
        let has_null = instance
            .as_object()
            .is_some_and(|m| m.values().any(Value::is_null));
        if !has_null || self.validator.is_valid(&instance) {
            return instance;
        }
        let required: Vec<&str> = self
            .raw
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let refused: Vec<String> = self
            .validator
            .iter_errors(&instance)
            .filter_map(|e| {
                // Only an error about a top-level property itself (`/name`), not inside it.
                let pointer = e.instance_path().as_str().to_owned();
                let key = pointer.strip_prefix('/')?;
                (!key.is_empty() && !key.contains('/'))
                    .then(|| key.replace("~1", "/").replace("~0", "~"))
            })
            .collect();
        let Value::Object(mut map) = instance else {
            return instance;
        };
        for key in refused {
            if map.get(&key).is_some_and(Value::is_null) && !required.contains(&key.as_str()) {
                map.remove(&key);
            }
        }
        Value::Object(map)
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_null_for_an_optional_property_is_not_provided_and_other_nulls_stay() {
        let schema = CompiledSchema::compile(&json!({
            "type": "object",
            "properties": {
                "region": {"type": "string"},
                "verbose": {"type": "boolean"},
                "note": {"type": ["string", "null"]}
            },
            "required": ["region"]
        }))
        .unwrap();
        let args = json!({"region": "eu", "verbose": null, "note": null});
        let kept = schema.without_optional_nulls(args);
        assert_eq!(kept, json!({"region": "eu", "note": null}));
        assert!(schema.errors(&kept).is_empty());
        // A required property's null is not "not provided": it still fails validation.
        let args = json!({"region": null, "verbose": true});
        let kept = schema.without_optional_nulls(args.clone());
        assert_eq!(kept, args);
        assert!(!schema.errors(&kept).is_empty());
        // A wrong non-null value is left for validation to refuse.
        let args = json!({"region": "eu", "verbose": "yes"});
        assert_eq!(schema.without_optional_nulls(args.clone()), args);
    }
}
