//! Parse, don't validate: one contract file's YAML becomes a [`Contract`] here, once, or a list of
//! every problem found in it (not just the first), each with the field path it concerns.
//!
//! The YAML is read into a generic JSON value first (`serde-saphyr`), then walked by hand: serde's
//! derive stops at the first error, and a contract author wants them all at once.

mod fields;
mod walk;

pub use fields::usd_micros;

use crate::contract::*;
use crate::schema::CompiledSchema;
use fields::{adapter, budgets, duration, failure_policy};
use walk::{Obj, Problems};

use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

/// Problems found in one file: `(field path, what is wrong)`.
pub type FieldProblems = Vec<(String, String)>;

/// A file that is not a valid contract: every problem found in it, and what it still declares
/// that other files may refer to, so the registry checks cross-file rules (duplicate names,
/// compensation tools) in the same pass instead of after every per-file error is fixed.
#[derive(Debug, Default)]
pub struct Rejected {
    /// Every problem of the file.
    pub problems: FieldProblems,
    /// The tool name it declares, when that field itself is valid.
    pub name: Option<String>,
    /// The compensation tool it names, if any.
    pub compensation: Option<String>,
}

impl Rejected {
    fn file(msg: String) -> Self {
        Self {
            problems: vec![("(file)".into(), msg)],
            ..Self::default()
        }
    }
}

/// Parses one contract from YAML text. `builtins`, when given, are the builtin function names
/// that exist (an unknown one is a problem).
pub fn parse_contract(
    text: &str,
    source: &Path,
    builtins: Option<&BTreeSet<String>>,
) -> Result<Contract, Rejected> {
    let value: Value = match serde_saphyr::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            let msg = e.to_string().lines().next().unwrap_or("").to_owned();
            return Err(Rejected::file(format!("not valid YAML: {msg}")));
        }
    };
    let mut p = Problems::default();
    let Some(map) = value.as_object() else {
        return Err(Rejected::file(
            "must be a mapping with the contract's fields".into(),
        ));
    };
    let mut top = Obj::new(map, "");
    let name = top.req_str(&mut p, "name");
    if let Some(n) = &name
        && (n.is_empty()
            || !n
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'))
    {
        p.add(
            "name",
            "must be non-empty and use only letters, digits, '_' and '-'",
        );
    }
    let declared_name = name.clone().filter(|_| p.0.is_empty());
    let description = top.req_str(&mut p, "description");
    let (input, output) = match top.req_obj(&mut p, "schema") {
        Some(s) => {
            let mut s = Obj::new(s, "schema");
            let input = s
                .req(&mut p, "input")
                .and_then(|v| schema(&mut p, "schema.input", v));
            let output = s
                .req(&mut p, "output")
                .and_then(|v| schema(&mut p, "schema.output", v));
            s.finish(&mut p);
            (input, output)
        }
        None => (None, None),
    };
    let side_effect = top
        .req_str(&mut p, "side_effect")
        .and_then(|s| match s.as_str() {
            "read_only" => Some(SideEffect::ReadOnly),
            "reversible" => Some(SideEffect::Reversible),
            "irreversible" => Some(SideEffect::Irreversible),
            other => {
                p.add(
                    "side_effect",
                    format!("{other:?} is not one of read_only, reversible, irreversible"),
                );
                None
            }
        });
    let tier = top
        .req(&mut p, "consequence_tier")
        .and_then(|v| match v.as_u64() {
            Some(t @ 0..=3) => Some(t as u8),
            _ => {
                p.add(
                    "consequence_tier",
                    format!("must be an integer 0–3, found {v}"),
                );
                None
            }
        });
    let tier_override = top.opt_str(&mut p, "tier_override");
    if let (Some(SideEffect::Irreversible), Some(t)) = (side_effect, tier)
        && t < 3
        && tier_override.as_deref().is_none_or(|r| r.trim().is_empty())
    {
        p.add(
            "consequence_tier",
            format!("an irreversible tool must be tier 3 (found {t}); set tier_override: \"<reason>\" to allow it"),
        );
    }
    let idempotency = idempotency(&mut p, &mut top, input.as_ref().map(CompiledSchema::raw));
    if let (Some(se), Some(idem)) = (side_effect, &idempotency)
        && se != SideEffect::ReadOnly
        && idem.mode == IdempotencyMode::None
    {
        p.add(
            "idempotency",
            format!(
                "a {} tool must have an idempotency key (mode required or optional)",
                se.as_str()
            ),
        );
    }
    let budgets = match top.opt_obj(&mut p, "budgets") {
        Some(b) => budgets(&mut p, b),
        None => Some(Budgets::default()),
    };
    let policy = match top.opt_obj(&mut p, "failure_policy") {
        Some(f) => failure_policy(&mut p, f),
        None => Some(FailurePolicy::default()),
    };
    if let (Some(se), Some(pol)) = (side_effect, &policy)
        && pol.compensation.is_some()
        && se != SideEffect::Reversible
    {
        p.add(
            "failure_policy.compensation",
            format!(
                "only a reversible tool can be compensated (this one is {}); irreversible ⇒ gate before, not undo after",
                se.as_str()
            ),
        );
    }
    let timeout = match top.opt(&mut p, "timeout") {
        Some(v) => duration(&mut p, "timeout", v),
        None => Some(Duration::from_secs(30)),
    };
    let adapter = top
        .req_obj(&mut p, "adapter")
        .and_then(|a| adapter(&mut p, a, name.as_deref(), builtins));
    top.finish(&mut p);

    match (
        name,
        description,
        input,
        output,
        side_effect,
        tier,
        idempotency,
        budgets,
        policy,
        timeout,
        adapter,
    ) {
        (
            Some(name),
            Some(description),
            Some(input),
            Some(output),
            Some(side_effect),
            Some(consequence_tier),
            Some(idempotency),
            Some(budgets),
            Some(failure_policy),
            Some(timeout),
            Some(adapter),
        ) if p.0.is_empty() => Ok(Contract {
            name,
            description,
            input,
            output,
            side_effect,
            consequence_tier,
            idempotency,
            budgets,
            failure_policy,
            timeout,
            adapter,
            source: source.to_owned(),
        }),
        _ => Err(Rejected {
            problems: p.0,
            name: declared_name,
            compensation: map
                .get("failure_policy")
                .and_then(|f| f.get("compensation"))
                .and_then(Value::as_str)
                .filter(|c| *c != "none")
                .map(str::to_owned),
        }),
    }
}

/// The top-level property names of an input schema, and which of them are required, including
/// those of `allOf` branches (all of which apply to every call).
fn declared_fields(input: &Value) -> (BTreeSet<&str>, BTreeSet<&str>) {
    let mut props = BTreeSet::new();
    let mut required = BTreeSet::new();
    let branches = input.get("allOf").and_then(Value::as_array);
    for s in std::iter::once(input).chain(branches.into_iter().flatten()) {
        if let Some(m) = s.get("properties").and_then(Value::as_object) {
            props.extend(m.keys().map(String::as_str));
        }
        if let Some(r) = s.get("required").and_then(Value::as_array) {
            required.extend(r.iter().filter_map(Value::as_str));
        }
    }
    (props, required)
}

fn schema(p: &mut Problems, path: &str, v: &Value) -> Option<CompiledSchema> {
    match CompiledSchema::compile(v) {
        Ok(s) => Some(s),
        Err(errs) => {
            for (inner, msg) in errs {
                let at = if inner.is_empty() {
                    path.to_owned()
                } else {
                    format!("{path}.{inner}")
                };
                p.add(at, format!("not a valid JSON Schema (2020-12): {msg}"));
            }
            None
        }
    }
}

/// `input` is the tool's input schema when it compiled: every key field taken from the arguments
/// must be one of its properties (else every call fails to derive its key), and a required key's
/// fields must be required by it (else a call that omits one fails).
fn idempotency(p: &mut Problems, top: &mut Obj<'_>, input: Option<&Value>) -> Option<Idempotency> {
    let v = top.req(p, "idempotency")?;
    // Shorthand for read-only tools: `idempotency: none`.
    if v.as_str() == Some("none") {
        return Some(Idempotency {
            mode: IdempotencyMode::None,
            key: Vec::new(),
        });
    }
    let Some(map) = v.as_object() else {
        p.add(
            "idempotency",
            format!("must be `none` or a mapping {{mode, key}}, found {v}"),
        );
        return None;
    };
    let mut o = Obj::new(map, "idempotency");
    let mode = o.req_str(p, "mode").and_then(|m| match m.as_str() {
        "required" => Some(IdempotencyMode::Required),
        "optional" => Some(IdempotencyMode::Optional),
        "none" => Some(IdempotencyMode::None),
        other => {
            p.add(
                "idempotency.mode",
                format!("{other:?} is not one of required, optional, none"),
            );
            None
        }
    });
    let key_v = o.opt(p, "key");
    let declared = input.map(declared_fields);
    let key = match key_v {
        None => Some(Vec::new()),
        Some(Value::Array(items)) => {
            let mut key = Vec::new();
            for (i, item) in items.iter().enumerate() {
                match item.as_str() {
                    Some("exec_id") => key.push(KeyField::ExecId),
                    Some("tenant") => key.push(KeyField::Tenant),
                    Some(s) if !s.is_empty() => {
                        if let Some((props, required)) = &declared {
                            if !props.contains(s) {
                                p.add(
                                    format!("idempotency.key.{i}"),
                                    format!("{s:?} is not a property of schema.input, so no call could derive its key (exec_id and tenant come from the call)"),
                                );
                            } else if mode == Some(IdempotencyMode::Required)
                                && !required.contains(s)
                            {
                                p.add(
                                    format!("idempotency.key.{i}"),
                                    format!("{s:?} is not in schema.input.required, so a call without it could not derive its required key"),
                                );
                            }
                        }
                        key.push(KeyField::Arg(s.to_owned()));
                    }
                    _ => p.add(
                        format!("idempotency.key.{i}"),
                        format!("must be a field name, found {item}"),
                    ),
                }
            }
            Some(key)
        }
        Some(other) => {
            p.add(
                "idempotency.key",
                format!("must be a list of field names, found {other}"),
            );
            None
        }
    };
    o.finish(p);
    let (mode, key) = (mode?, key?);
    if mode != IdempotencyMode::None && key.is_empty() {
        p.add(
            "idempotency.key",
            "must name the fields that identify this effect, e.g. [order_id, amount, exec_id]",
        );
    }
    if mode == IdempotencyMode::None && !key.is_empty() {
        p.add("idempotency.key", "given but mode is none");
    }
    Some(Idempotency { mode, key })
}
