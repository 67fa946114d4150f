//! Parse, don't validate: one contract file's YAML becomes a [`Contract`] here, once, or a list of
//! every problem found in it (not just the first), each with the field path it concerns.
//!
//! The YAML is read into a generic JSON value first (`serde-saphyr`), then walked by hand: serde's
//! derive stops at the first error, and a contract author wants them all at once.

use crate::contract::*;
use crate::schema::CompiledSchema;
use keel_core::Cost;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

/// Problems found in one file: `(field path, what is wrong)`.
pub type FieldProblems = Vec<(String, String)>;

/// Parses one contract from YAML text. `builtins`, when given, are the builtin function names
/// that exist (an unknown one is a problem).
pub fn parse_contract(
    text: &str,
    source: &Path,
    builtins: Option<&BTreeSet<String>>,
) -> Result<Contract, FieldProblems> {
    let value: Value = match serde_saphyr::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            let msg = e.to_string().lines().next().unwrap_or("").to_owned();
            return Err(vec![("(file)".into(), format!("not valid YAML: {msg}"))]);
        }
    };
    let mut p = Problems::default();
    let Some(map) = value.as_object() else {
        return Err(vec![(
            "(file)".into(),
            "must be a mapping with the contract's fields".into(),
        )]);
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
    let idempotency = idempotency(&mut p, &mut top);
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
        _ => Err(p.0),
    }
}

#[derive(Default)]
struct Problems(FieldProblems);

impl Problems {
    fn add(&mut self, path: impl Into<String>, msg: impl Into<String>) {
        self.0.push((path.into(), msg.into()));
    }
}

/// A mapping being walked: remembers which keys were read so the rest are reported as unknown.
struct Obj<'a> {
    map: &'a Map<String, Value>,
    path: String,
    seen: BTreeSet<&'static str>,
}

impl<'a> Obj<'a> {
    fn new(map: &'a Map<String, Value>, path: &str) -> Self {
        Self {
            map,
            path: path.to_owned(),
            seen: BTreeSet::new(),
        }
    }
    fn at(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }
    fn opt(&mut self, _p: &mut Problems, key: &'static str) -> Option<&'a Value> {
        self.seen.insert(key);
        self.map.get(key).filter(|v| !v.is_null())
    }
    fn req(&mut self, p: &mut Problems, key: &'static str) -> Option<&'a Value> {
        let v = self.opt(p, key);
        if v.is_none() {
            p.add(self.at(key), "is required");
        }
        v
    }
    fn typed<T>(
        &self,
        p: &mut Problems,
        key: &str,
        v: Option<&'a Value>,
        want: &str,
        f: impl FnOnce(&'a Value) -> Option<T>,
    ) -> Option<T> {
        let v = v?;
        let out = f(v);
        if out.is_none() {
            p.add(self.at(key), format!("must be {want}, found {v}"));
        }
        out
    }
    fn req_str(&mut self, p: &mut Problems, key: &'static str) -> Option<String> {
        let v = self.req(p, key);
        self.typed(p, key, v, "a string", |v| v.as_str().map(str::to_owned))
    }
    fn opt_str(&mut self, p: &mut Problems, key: &'static str) -> Option<String> {
        let v = self.opt(p, key);
        self.typed(p, key, v, "a string", |v| v.as_str().map(str::to_owned))
    }
    fn req_obj(&mut self, p: &mut Problems, key: &'static str) -> Option<&'a Map<String, Value>> {
        let v = self.req(p, key);
        self.typed(p, key, v, "a mapping", Value::as_object)
    }
    fn opt_obj(&mut self, p: &mut Problems, key: &'static str) -> Option<&'a Map<String, Value>> {
        let v = self.opt(p, key);
        self.typed(p, key, v, "a mapping", Value::as_object)
    }
    fn finish(self, p: &mut Problems) {
        for k in self.map.keys() {
            if !self.seen.contains(k.as_str()) {
                let known: Vec<_> = self.seen.iter().copied().collect();
                p.add(
                    self.at(k),
                    format!("unknown field (known here: {})", known.join(", ")),
                );
            }
        }
    }
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

fn idempotency(p: &mut Problems, top: &mut Obj<'_>) -> Option<Idempotency> {
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
    let key = match key_v {
        None => Some(Vec::new()),
        Some(Value::Array(items)) => {
            let mut key = Vec::new();
            for (i, item) in items.iter().enumerate() {
                match item.as_str() {
                    Some("exec_id") => key.push(KeyField::ExecId),
                    Some("tenant") => key.push(KeyField::Tenant),
                    Some(s) if !s.is_empty() => key.push(KeyField::Arg(s.to_owned())),
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

/// Parses `20/min`, `5/s`, `100/hour`.
fn rate(p: &mut Problems, path: &str, v: &Value) -> Option<Rate> {
    let s = v.as_str().unwrap_or_default();
    let parsed = s.split_once('/').and_then(|(n, per)| {
        let calls: u32 = n.trim().parse().ok().filter(|n| *n > 0)?;
        let per = match per.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            _ => return None,
        };
        Some(Rate { calls, per })
    });
    if parsed.is_none() {
        p.add(
            path,
            format!("must look like \"20/min\" (per s, min or hour), found {v}"),
        );
    }
    parsed
}

/// Parses a USD amount into micro-USD exactly: `"$0.002"`, `"$0.002/call"`, `0.002`.
pub fn usd_micros(v: &Value) -> Option<u64> {
    let text = match v {
        Value::String(s) => s
            .trim()
            .trim_end_matches("/call")
            .trim()
            .trim_start_matches('$')
            .to_owned(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    let (whole, frac) = text.split_once('.').unwrap_or((&text, ""));
    if frac.len() > 6
        || !whole.chars().all(|c| c.is_ascii_digit())
        || !frac.chars().all(|c| c.is_ascii_digit())
        || whole.is_empty()
    {
        return None;
    }
    let whole: u64 = whole.parse().ok()?;
    let frac_micros: u64 = format!("{frac:0<6}").parse().ok()?;
    whole.checked_mul(1_000_000)?.checked_add(frac_micros)
}

fn budgets(p: &mut Problems, map: &Map<String, Value>) -> Option<Budgets> {
    let mut o = Obj::new(map, "budgets");
    let rate = match o.opt(p, "rate") {
        Some(v) => Some(rate(p, "budgets.rate", v)?),
        None => None,
    };
    let cost = match o.opt(p, "cost_est") {
        Some(v) => match usd_micros(v) {
            Some(m) => Cost::Known(m),
            None => {
                p.add(
                    "budgets.cost_est",
                    format!("must be a USD amount like \"$0.002\" (at most 6 decimals), found {v}"),
                );
                return None;
            }
        },
        None => Cost::Unknown,
    };
    o.finish(p);
    Some(Budgets {
        rate_per_tenant: rate,
        cost_est: cost,
    })
}

/// Parses `250ms`, `10s`, `2m`.
fn duration(p: &mut Problems, path: &str, v: &Value) -> Option<Duration> {
    let s = v.as_str().unwrap_or_default().trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let d = n.parse::<u64>().ok().and_then(|n| match unit.trim() {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" | "min" => Some(Duration::from_secs(n * 60)),
        _ => None,
    });
    match d {
        Some(d) if !d.is_zero() => Some(d),
        _ => {
            p.add(
                path,
                format!("must be a positive duration like \"250ms\", \"10s\" or \"2m\", found {v}"),
            );
            None
        }
    }
}

fn failure_policy(p: &mut Problems, map: &Map<String, Value>) -> Option<FailurePolicy> {
    let mut o = Obj::new(map, "failure_policy");
    let mut ok = true;
    let mut policy = FailurePolicy::default();
    match o.opt(p, "retryable") {
        None => {}
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                match item.as_str().and_then(ErrorClass::parse) {
                    Some(
                        c @ (ErrorClass::Timeout
                        | ErrorClass::RateLimited
                        | ErrorClass::ServerError
                        | ErrorClass::Connection),
                    ) => policy.retryable.push(c),
                    _ => {
                        ok = false;
                        p.add(format!("failure_policy.retryable.{i}"), format!("{item} is not a retryable class (timeout, rate_limited, 5xx, connection)"));
                    }
                }
            }
        }
        Some(v) => {
            ok = false;
            p.add(
                "failure_policy.retryable",
                format!("must be a list of error classes, found {v}"),
            );
        }
    }
    match o.opt(p, "backoff") {
        None => {}
        Some(Value::Object(b)) => {
            let mut bo = Obj::new(b, "failure_policy.backoff");
            if let Some(v) = bo.opt(p, "initial") {
                match duration(p, "failure_policy.backoff.initial", v) {
                    Some(d) => policy.backoff.initial = d,
                    None => ok = false,
                }
            }
            if let Some(v) = bo.opt(p, "max") {
                match duration(p, "failure_policy.backoff.max", v) {
                    Some(d) => policy.backoff.max = d,
                    None => ok = false,
                }
            }
            if let Some(v) = bo.opt(p, "factor") {
                match v.as_u64().filter(|f| (1..=10).contains(f)) {
                    Some(f) => policy.backoff.factor = f as u32,
                    None => {
                        ok = false;
                        p.add(
                            "failure_policy.backoff.factor",
                            format!("must be an integer 1–10, found {v}"),
                        )
                    }
                }
            }
            bo.finish(p);
        }
        Some(v) => {
            ok = false;
            p.add(
                "failure_policy.backoff",
                format!("must be a mapping {{initial, max, factor}}, found {v}"),
            );
        }
    }
    if let Some(v) = o.opt(p, "max_attempts") {
        match v.as_u64().filter(|n| (1..=20).contains(n)) {
            Some(n) => policy.max_attempts = n as u32,
            None => {
                ok = false;
                p.add(
                    "failure_policy.max_attempts",
                    format!("must be an integer 1–20, found {v}"),
                )
            }
        }
    } else if !policy.retryable.is_empty() {
        policy.max_attempts = 3;
    }
    match o.opt_str(p, "compensation").as_deref() {
        None | Some("none") => {}
        Some(tool) => policy.compensation = Some(tool.to_owned()),
    }
    match o.opt_str(p, "on_exhaust").as_deref() {
        None | Some("fail") => {}
        Some("escalate_to_gate") => policy.on_exhaust = OnExhaust::EscalateToGate,
        Some(other) => {
            ok = false;
            p.add(
                "failure_policy.on_exhaust",
                format!("{other:?} is not one of escalate_to_gate, fail"),
            )
        }
    }
    o.finish(p);
    ok.then_some(policy)
}

fn string_map(p: &mut Problems, path: &str, v: Option<&Value>) -> Option<BTreeMap<String, String>> {
    let Some(v) = v else {
        return Some(BTreeMap::new());
    };
    let Some(m) = v.as_object() else {
        p.add(path, format!("must be a mapping of strings, found {v}"));
        return None;
    };
    let mut out = BTreeMap::new();
    for (k, v) in m {
        match v.as_str() {
            Some(s) => {
                out.insert(k.clone(), s.to_owned());
            }
            None => {
                p.add(
                    format!("{path}.{k}"),
                    format!("must be a string, found {v}"),
                );
                return None;
            }
        }
    }
    Some(out)
}

fn adapter(
    p: &mut Problems,
    map: &Map<String, Value>,
    name: Option<&str>,
    builtins: Option<&BTreeSet<String>>,
) -> Option<AdapterSpec> {
    let mut o = Obj::new(map, "adapter");
    let kind = o.req_str(p, "kind");
    let spec = match kind.as_deref() {
        Some("http") => {
            let url = o.req_str(p, "url");
            if let Some(u) = &url
                && !(u.starts_with("http://") || u.starts_with("https://"))
            {
                p.add(
                    "adapter.url",
                    format!("must be an http:// or https:// URL, found {u:?}"),
                );
            }
            let h = o.opt(p, "headers_from_env");
            let headers = string_map(p, "adapter.headers_from_env", h);
            Some(AdapterSpec::Http {
                url: url?,
                headers_from_env: headers?,
            })
        }
        Some("mcp") => {
            let command = o.opt(p, "command");
            let url = o.opt_str(p, "url");
            let e = o.opt(p, "env");
            let env = string_map(p, "adapter.env", e);
            let tool = o.opt_str(p, "tool").or_else(|| name.map(str::to_owned));
            let server = match (command, url) {
                (Some(Value::Array(parts)), None)
                    if !parts.is_empty() && parts.iter().all(Value::is_string) =>
                {
                    Some(McpServer::Stdio {
                        command: parts
                            .iter()
                            .filter_map(|v| v.as_str().map(str::to_owned))
                            .collect(),
                        env: env?,
                    })
                }
                (Some(c), None) => {
                    p.add(
                        "adapter.command",
                        format!("must be a non-empty list [program, args…], found {c}"),
                    );
                    None
                }
                (None, Some(url)) if url.starts_with("http://") || url.starts_with("https://") => {
                    Some(McpServer::Http { url })
                }
                (None, Some(url)) => {
                    p.add(
                        "adapter.url",
                        format!("must be an http(s) URL, found {url:?}"),
                    );
                    None
                }
                (Some(_), Some(_)) => {
                    p.add(
                        "adapter",
                        "give either command (stdio) or url (streamable HTTP), not both",
                    );
                    None
                }
                (None, None) => {
                    p.add(
                        "adapter",
                        "an mcp adapter needs command (stdio) or url (streamable HTTP)",
                    );
                    None
                }
            };
            Some(AdapterSpec::Mcp {
                server: server?,
                tool: tool?,
            })
        }
        Some("builtin") => {
            let function = o.req_str(p, "function")?;
            if let Some(known) = builtins
                && !known.contains(&function)
            {
                p.add(
                    "adapter.function",
                    format!(
                        "no builtin function {function:?} is registered (known: {})",
                        known.iter().cloned().collect::<Vec<_>>().join(", ")
                    ),
                );
            }
            Some(AdapterSpec::Builtin { function })
        }
        Some(other) => {
            p.add(
                "adapter.kind",
                format!("{other:?} is not one of http, mcp, builtin"),
            );
            None
        }
        None => None,
    };
    o.finish(p);
    spec
}
