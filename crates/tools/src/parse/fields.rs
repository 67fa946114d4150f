//! Field parsers of a contract: rates, money, durations, the failure policy and the adapter.

use super::walk::{Obj, Problems};
use crate::contract::*;
use keel_core::Cost;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

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

pub(crate) fn budgets(p: &mut Problems, map: &Map<String, Value>) -> Option<Budgets> {
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
pub(crate) fn duration(p: &mut Problems, path: &str, v: &Value) -> Option<Duration> {
    let s = v.as_str().unwrap_or_default().trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    // `split` is where a char starts (or the end), so this never falls back.
    let (n, unit) = s.split_at_checked(split).unwrap_or((s, ""));
    let d = n.parse::<u64>().ok().and_then(|n| match unit.trim() {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" | "min" => n.checked_mul(60).map(Duration::from_secs),
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

pub(crate) fn failure_policy(p: &mut Problems, map: &Map<String, Value>) -> Option<FailurePolicy> {
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

pub(crate) fn adapter(
    p: &mut Problems,
    map: &Map<String, Value>,
    name: Option<&str>,
    builtins: Option<&BTreeSet<String>>,
) -> Option<AdapterSpec> {
    let mut o = Obj::new(map, "adapter");
    let kind = o.req_str(p, "kind");
    // In a closure so that an early `?` still reaches `o.finish` (unknown fields are reported).
    let mut spec_of = || match kind.as_deref() {
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
            let h = o.opt(p, "headers_from_env");
            let headers = string_map(p, "adapter.headers_from_env", h);
            let oauth_v = o.opt_obj(p, "oauth");
            let oauth = oauth_v.map(|m| mcp_oauth(p, m));
            let elicitation_v = o.opt(p, "elicitation");
            let elicitation = elicitation_policy(p, elicitation_v);
            let tool = o.opt_str(p, "tool").or_else(|| name.map(str::to_owned));
            let http_only = |p: &mut Problems, present: bool, field: &str| {
                if present {
                    p.add(
                        format!("adapter.{field}"),
                        "applies to an MCP server over HTTP (url), not to a stdio command",
                    );
                }
            };
            let server = match (command, url) {
                (Some(Value::Array(parts)), None)
                    if !parts.is_empty() && parts.iter().all(Value::is_string) =>
                {
                    http_only(p, h.is_some(), "headers_from_env");
                    http_only(p, oauth_v.is_some(), "oauth");
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
                    if e.is_some() {
                        p.add("adapter.env", "applies to a stdio command, not to a url");
                    }
                    Some(McpServer::Http {
                        url,
                        headers_from_env: headers?,
                        oauth: oauth.flatten(),
                    })
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
                elicitation: elicitation?,
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
    let spec = spec_of();
    o.finish(p);
    spec
}

/// `adapter.oauth`: `{grant, client_id_env?, client_secret_env?, client_metadata_url?, scopes?,
/// private_key_env? | private_key_file?}`.
fn mcp_oauth(p: &mut Problems, map: &Map<String, Value>) -> Option<McpOAuth> {
    let mut o = Obj::new(map, "adapter.oauth");
    let grant = match o.req_str(p, "grant").as_deref() {
        Some("authorization_code") => Some(OAuthGrant::AuthorizationCode),
        Some("client_credentials") => Some(OAuthGrant::ClientCredentials),
        Some("enterprise_managed") => Some(OAuthGrant::EnterpriseManaged),
        Some(other) => {
            p.add(
                "adapter.oauth.grant",
                format!(
                    "{other:?} is not one of authorization_code, client_credentials, \
                     enterprise_managed"
                ),
            );
            None
        }
        None => None,
    };
    let client_id_env = o.opt_str(p, "client_id_env");
    let client_secret_env = o.opt_str(p, "client_secret_env");
    let client_metadata_url = o.opt_str(p, "client_metadata_url");
    let private_key = match (
        o.opt_str(p, "private_key_env"),
        o.opt_str(p, "private_key_file"),
    ) {
        (Some(v), None) => Some(PrivateKeySource::Env(v)),
        (None, Some(f)) => Some(PrivateKeySource::File(f)),
        (None, None) => None,
        (Some(_), Some(_)) => {
            p.add(
                "adapter.oauth.private_key_file",
                "give private_key_env or private_key_file, not both",
            );
            return None;
        }
    };
    let idp = o.opt_obj(p, "idp").map(|m| mcp_idp(p, m));
    let scopes_v = o.opt(p, "scopes");
    let scopes = match scopes_v {
        None => Some(Vec::new()),
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => Some(
            items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
        ),
        Some(v) => {
            p.add(
                "adapter.oauth.scopes",
                format!("must be a list of strings, found {v}"),
            );
            None
        }
    };
    o.finish(p);
    if matches!(
        grant,
        Some(OAuthGrant::ClientCredentials | OAuthGrant::EnterpriseManaged)
    ) && client_id_env.is_none()
    {
        p.add(
            "adapter.oauth.client_id_env",
            "is required for the client_credentials and enterprise_managed grants (a \
             pre-registered client)",
        );
        return None;
    }
    if (grant == Some(OAuthGrant::EnterpriseManaged)) != idp.is_some() {
        p.add(
            "adapter.oauth.idp",
            "is required for the enterprise_managed grant, and only for it",
        );
        return None;
    }
    if private_key.is_some() && grant != Some(OAuthGrant::ClientCredentials) {
        p.add(
            "adapter.oauth.private_key_env",
            "a private key (private_key_jwt) is for the client_credentials grant",
        );
        return None;
    }
    if private_key.is_some() && client_secret_env.is_some() {
        p.add(
            "adapter.oauth.client_secret_env",
            "give a client secret or a private key, not both",
        );
        return None;
    }
    if client_secret_env.is_some() && client_id_env.is_none() {
        p.add(
            "adapter.oauth.client_secret_env",
            "needs client_id_env (a secret belongs to a pre-registered client)",
        );
        return None;
    }
    Some(McpOAuth {
        grant: grant?,
        client_id_env,
        client_secret_env,
        client_metadata_url,
        scopes: scopes?,
        private_key,
        idp: match idp {
            Some(i) => Some(Box::new(i?)),
            None => None,
        },
    })
}

/// `adapter.oauth.idp`: `{issuer, token_endpoint, client_id_env, client_secret_env?,
/// id_token_env}`.
fn mcp_idp(p: &mut Problems, map: &Map<String, Value>) -> Option<McpIdp> {
    let mut o = Obj::new(map, "adapter.oauth.idp");
    let issuer = o.req_str(p, "issuer");
    let token_endpoint = o.req_str(p, "token_endpoint");
    let client_id_env = o.req_str(p, "client_id_env");
    let client_secret_env = o.opt_str(p, "client_secret_env");
    let id_token_env = o.req_str(p, "id_token_env");
    o.finish(p);
    Some(McpIdp {
        issuer: issuer?,
        token_endpoint: token_endpoint?,
        client_id_env: client_id_env?,
        client_secret_env,
        id_token_env: id_token_env?,
    })
}

/// `adapter.elicitation`: `decline` (default), `accept_defaults`, `gate`, or
/// `{policy: gate, queue?, deadline_s?, expire_after_s?}`.
fn elicitation_policy(p: &mut Problems, v: Option<&Value>) -> Option<ElicitationPolicy> {
    const KEY: &str = "adapter.elicitation";
    const ONE_OF: &str = "is not one of decline, accept_defaults, gate";
    let map = match v {
        None => return Some(ElicitationPolicy::Decline),
        Some(Value::String(s)) => {
            return match s.as_str() {
                "decline" => Some(ElicitationPolicy::Decline),
                "accept_defaults" => Some(ElicitationPolicy::AcceptDefaults),
                "gate" => Some(ElicitationPolicy::Gate(Box::default())),
                other => {
                    p.add(KEY, format!("{other:?} {ONE_OF}"));
                    None
                }
            };
        }
        Some(Value::Object(m)) => m,
        Some(other) => {
            p.add(
                KEY,
                format!("must be a policy name or a mapping {{policy: gate, …}}, found {other}"),
            );
            return None;
        }
    };
    let mut o = Obj::new(map, KEY);
    let policy = o.req_str(p, "policy");
    let queue = o.opt_str(p, "queue");
    let seconds = |o: &mut Obj<'_>, p: &mut Problems, key: &'static str| {
        let v = o.opt(p, key);
        o.typed(p, key, v, "a whole number of seconds > 0", |v| {
            v.as_u64().filter(|n| *n > 0)
        })
    };
    let deadline_s = seconds(&mut o, p, "deadline_s");
    let expire_after_s = seconds(&mut o, p, "expire_after_s");
    o.finish(p);
    match policy.as_deref() {
        Some("gate") => {}
        Some(other @ ("decline" | "accept_defaults")) => {
            p.add(
                format!("{KEY}.policy"),
                format!("{other:?} takes no settings: write `elicitation: {other}`"),
            );
            return None;
        }
        Some(other) => {
            p.add(format!("{KEY}.policy"), format!("{other:?} {ONE_OF}"));
            return None;
        }
        None => return None,
    }
    if let Some(q) = &queue
        && q.trim().is_empty()
    {
        p.add(format!("{KEY}.queue"), "must not be empty");
        return None;
    }
    Some(ElicitationPolicy::Gate(Box::new(ElicitationGate {
        queue: queue.unwrap_or_else(|| "default".into()),
        deadline_s,
        expire_after_s: expire_after_s.unwrap_or(ElicitationGate::DEFAULT_EXPIRE_AFTER_S),
    })))
}
