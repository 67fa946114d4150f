//! The registry: the demo folder loads; a folder of broken contracts reports every problem, with
//! file and field path, not just the first.

// Test helpers too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use keel_core::Cost;
use keel_tools::contract::{
    AdapterSpec, ErrorClass, IdempotencyMode, KeyField, OnExhaust, SideEffect,
};
use keel_tools::shop::Shop;
use keel_tools::{Registry, ToolError};
use std::path::Path;
use std::time::Duration;

fn builtins() -> std::collections::BTreeSet<String> {
    let dir = tempfile::tempdir().unwrap();
    Shop::open(dir.path().join("shop.db"))
        .unwrap()
        .builtins()
        .names()
}

#[test]
fn the_demo_contracts_load_into_validated_types() {
    let reg = Registry::load_dir(&common::demo_tools_dir(), Some(&builtins())).unwrap();
    let names: Vec<_> = reg.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "discard_draft",
            "draft_reply",
            "issue_customer_refund",
            "lookup_order",
            "notify_team"
        ]
    );
    let refund = reg.get("issue_customer_refund").unwrap();
    assert_eq!(refund.side_effect, SideEffect::Irreversible);
    assert_eq!(refund.consequence_tier, 3);
    assert_eq!(refund.idempotency.mode, IdempotencyMode::Required);
    assert_eq!(
        refund.idempotency.key,
        [
            KeyField::Arg("order_id".into()),
            KeyField::Arg("amount_cents".into()),
            KeyField::ExecId
        ]
    );
    assert_eq!(refund.budgets.cost_est, Cost::Known(2_000));
    let rate = refund.budgets.rate_per_tenant.unwrap();
    assert_eq!((rate.calls, rate.per), (20, Duration::from_secs(60)));
    assert_eq!(
        refund.failure_policy.retryable,
        [ErrorClass::Timeout, ErrorClass::RateLimited]
    );
    assert_eq!(refund.failure_policy.max_attempts, 3);
    assert_eq!(refund.failure_policy.on_exhaust, OnExhaust::EscalateToGate);
    assert_eq!(refund.failure_policy.compensation, None);
    assert_eq!(refund.timeout, Duration::from_secs(5));
    assert_eq!(
        refund.adapter,
        AdapterSpec::Builtin {
            function: "issue_customer_refund".into()
        }
    );
    assert_eq!(
        reg.get("draft_reply")
            .unwrap()
            .failure_policy
            .compensation
            .as_deref(),
        Some("discard_draft")
    );
    let tiers: Vec<u8> = [
        "lookup_order",
        "draft_reply",
        "notify_team",
        "issue_customer_refund",
    ]
    .iter()
    .map(|n| reg.get(n).unwrap().consequence_tier)
    .collect();
    assert_eq!(tiers, [0, 1, 2, 3], "one demo tool per tier");
}

#[test]
fn a_broken_folder_reports_every_problem_with_file_and_field() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/broken");
    let Err(ToolError::Contracts(problems)) = Registry::load_dir(&dir, Some(&builtins())) else {
        panic!("the broken folder loaded")
    };
    let lines: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    let has = |file: &str, path: &str, words: &str| {
        assert!(
            problems
                .iter()
                .any(|p| p.file.ends_with(file) && p.path == path && p.message.contains(words)),
            "missing `{file}: {path}: …{words}…` in:\n{}",
            lines.join("\n")
        );
    };
    has(
        "bad_schema.yaml",
        "schema.input.type",
        "not a valid JSON Schema",
    );
    has(
        "bad_schema.yaml",
        "schema.input.properties.a.minimum",
        "not a valid JSON Schema",
    );
    has(
        "irreversible_low_tier.yaml",
        "consequence_tier",
        "irreversible tool must be tier 3",
    );
    has("unknown_fields.yaml", "retries", "unknown field");
    has(
        "unknown_fields.yaml",
        "failure_policy.retry_on",
        "unknown field",
    );
    has("many_problems.yaml", "name", "letters, digits");
    has("many_problems.yaml", "description", "is required");
    has("many_problems.yaml", "schema.output", "is required");
    has("many_problems.yaml", "side_effect", "\"sometimes\"");
    has("many_problems.yaml", "consequence_tier", "0–3");
    has("many_problems.yaml", "idempotency.mode", "\"always\"");
    has("many_problems.yaml", "budgets.rate", "20/min");
    has(
        "many_problems.yaml",
        "failure_policy.retryable.1",
        "gremlins",
    );
    has("many_problems.yaml", "failure_policy.max_attempts", "1–20");
    has(
        "many_problems.yaml",
        "failure_policy.on_exhaust",
        "\"panic\"",
    );
    has("many_problems.yaml", "timeout", "duration");
    has("many_problems.yaml", "adapter.kind", "\"grpc\"");
    has("not_yaml.yaml", "(file)", "not valid YAML");
    has(
        "compensation_missing.yaml",
        "adapter.function",
        "no_such_function",
    );
    // Cross-file problems of a file with per-file problems come in the same pass (they used to
    // appear only once everything else was fixed).
    has(
        "compensation_missing.yaml",
        "failure_policy.compensation",
        "\"cancel_room\", which is not a tool in this folder",
    );
    // A key field the input schema does not declare: every call would fail to derive its key.
    has(
        "compensation_missing.yaml",
        "idempotency.key.0",
        "\"room\" is not a property of schema.input",
    );
    // Every line is `<file>: <field path>: <what is wrong>`, and the valid file is not named.
    for l in &lines {
        assert_eq!(l.splitn(3, ": ").count(), 3, "{l}");
        assert!(!l.contains("fine.yaml"), "{l}");
    }
}

#[test]
fn cross_file_rules_name_the_file_and_field() {
    let one = |name: &str, extra: &str| {
        format!(
            "name: {name}\ndescription: d\nschema: {{input: {{type: object, properties: {{id: {{type: string}}}}, required: [id]}}, output: {{type: object}}}}\n\
             side_effect: reversible\nconsequence_tier: 1\nidempotency: {{mode: required, key: [id]}}\n\
             adapter: {{kind: http, url: \"http://127.0.0.1:9/x\"}}\n{extra}"
        )
    };
    let sources = vec![
        (
            "a.yaml".into(),
            one("book", "failure_policy: {compensation: unbook}"),
        ),
        ("b.yaml".into(), one("book", "")),
        ("c.yaml".into(), one("read", "side_effect_note: x")),
    ];
    let Err(ToolError::Contracts(problems)) = Registry::from_sources(&sources, None) else {
        panic!()
    };
    let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    let text = text.join("\n");
    assert!(
        text.contains("b.yaml: name: tool \"book\" is already defined in a.yaml"),
        "{text}"
    );
    assert!(
        text.contains("a.yaml: failure_policy.compensation: names \"unbook\""),
        "{text}"
    );
    assert!(
        text.contains("c.yaml: side_effect_note: unknown field"),
        "{text}"
    );
}

#[test]
fn a_side_effecting_tool_must_have_a_key_and_only_reversible_tools_compensate() {
    let src = "name: t\ndescription: d\nschema: {input: {type: object}, output: {type: object}}\n\
               side_effect: irreversible\nconsequence_tier: 3\nidempotency: none\n\
               failure_policy: {compensation: other}\nadapter: {kind: builtin, function: f}\n";
    let Err(ToolError::Contracts(problems)) =
        Registry::from_sources(&[("t.yaml".into(), src.into())], None)
    else {
        panic!()
    };
    let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    let text = text.join("\n");
    assert!(
        text.contains("t.yaml: idempotency: a irreversible tool must have an idempotency key"),
        "{text}"
    );
    assert!(
        text.contains("t.yaml: failure_policy.compensation: only a reversible tool"),
        "{text}"
    );
    // With an explicit, reasoned override an irreversible tool may sit below tier 3.
    let ok = "name: t\ndescription: d\nschema: {input: {type: object, properties: {id: {type: string}}, required: [id]}, output: {type: object}}\n\
              side_effect: irreversible\nconsequence_tier: 2\ntier_override: \"sandbox account, no real money\"\n\
              idempotency: {mode: required, key: [id]}\nadapter: {kind: builtin, function: f}\n";
    Registry::from_sources(&[("t.yaml".into(), ok.into())], None).unwrap();
}

#[test]
fn usd_amounts_parse_exactly_to_micro_dollars() {
    use keel_tools::parse::usd_micros;
    use serde_json::json;
    assert_eq!(usd_micros(&json!("$0.002")), Some(2_000));
    assert_eq!(usd_micros(&json!("$0.002/call")), Some(2_000));
    assert_eq!(usd_micros(&json!("$12")), Some(12_000_000));
    assert_eq!(usd_micros(&json!(0.5)), Some(500_000));
    assert_eq!(
        usd_micros(&json!("$0.0000001")),
        None,
        "below a micro-dollar"
    );
    assert_eq!(usd_micros(&json!("-1")), None);
    assert_eq!(usd_micros(&json!("cheap")), None);
}

/// An MCP contract's OAuth credentials: a private key (private_key_jwt) from a variable or a
/// file, one of them, for client credentials only; enterprise-managed authorization needs its
/// identity provider and nothing else takes one.
#[test]
fn mcp_oauth_private_keys_and_the_enterprise_idp_are_parsed_and_checked() {
    use keel_tools::contract::{McpServer, OAuthGrant, PrivateKeySource};
    use keel_tools::parse::parse_contract;
    let contract = |oauth: &str| {
        format!(
            "name: t\ndescription: d\nschema: {{input: {{type: object}}, output: {{type: object}}}}\n\
             side_effect: read_only\nconsequence_tier: 0\nidempotency: none\ntimeout: 5s\n\
             adapter: {{kind: mcp, url: \"http://127.0.0.1:1/mcp\", oauth: {oauth}}}\n"
        )
    };
    let oauth_of = |text: &str| match parse_contract(text, Path::new("t.yaml"), None) {
        Ok(c) => match c.adapter {
            AdapterSpec::Mcp {
                server: McpServer::Http { oauth, .. },
                ..
            } => oauth.unwrap(),
            other => panic!("not an MCP HTTP adapter: {other:?}"),
        },
        Err(r) => panic!("{:?}", r.problems),
    };
    let problems = |text: &str| match parse_contract(text, Path::new("t.yaml"), None) {
        Ok(_) => panic!("accepted: {text}"),
        Err(r) => r.problems.into_iter().map(|(f, _)| f).collect::<Vec<_>>(),
    };
    let o = oauth_of(&contract(
        "{grant: client_credentials, client_id_env: ID, private_key_env: KEY}",
    ));
    assert_eq!(o.private_key, Some(PrivateKeySource::Env("KEY".into())));
    let o = oauth_of(&contract(
        "{grant: client_credentials, client_id_env: ID, private_key_file: /k.pem}",
    ));
    assert_eq!(o.private_key, Some(PrivateKeySource::File("/k.pem".into())));
    assert!(problems(&contract(
        "{grant: client_credentials, client_id_env: ID, private_key_env: K, private_key_file: f}"
    ))
    .contains(&"adapter.oauth.private_key_file".to_owned()));
    assert!(problems(&contract(
        "{grant: client_credentials, client_id_env: ID, client_secret_env: S, private_key_env: K}"
    ))
    .contains(&"adapter.oauth.client_secret_env".to_owned()));
    assert!(
        problems(&contract("{grant: authorization_code, private_key_env: K}"))
            .contains(&"adapter.oauth.private_key_env".to_owned())
    );
    let o = oauth_of(&contract(
        "{grant: enterprise_managed, client_id_env: ID, client_secret_env: S, idp: {issuer: \
         \"https://idp\", token_endpoint: \"https://idp/token\", client_id_env: IDP, \
         id_token_env: TOK}}",
    ));
    assert_eq!(o.grant, OAuthGrant::EnterpriseManaged);
    let idp = o.idp.unwrap();
    assert_eq!(
        (idp.issuer.as_str(), idp.id_token_env.as_str()),
        ("https://idp", "TOK")
    );
    assert!(
        problems(&contract("{grant: enterprise_managed, client_id_env: ID}"))
            .contains(&"adapter.oauth.idp".to_owned())
    );
    assert!(
        problems(&contract(
            "{grant: enterprise_managed, client_id_env: ID, idp: {issuer: \"https://idp\"}}"
        ))
        .contains(&"adapter.oauth.idp.token_endpoint".to_owned())
    );
}

/// `adapter.elicitation`: a policy name, or `{policy: gate, queue, deadline_s, expire_after_s}`;
/// anything else is a problem naming the key.
#[test]
fn mcp_elicitation_policies_are_parsed_and_bad_values_name_the_key() {
    use keel_tools::contract::{ElicitationGate, ElicitationPolicy};
    use keel_tools::parse::parse_contract;
    let contract = |elicitation: &str| {
        format!(
            "name: t\ndescription: d\nschema: {{input: {{type: object}}, output: {{type: object}}}}\n\
             side_effect: read_only\nconsequence_tier: 0\nidempotency: none\ntimeout: 5s\n\
             adapter: {{kind: mcp, command: [srv], elicitation: {elicitation}}}\n"
        )
    };
    let policy = |text: &str| match parse_contract(text, Path::new("t.yaml"), None) {
        Ok(c) => match c.adapter {
            AdapterSpec::Mcp { elicitation, .. } => elicitation,
            other => panic!("not an MCP adapter: {other:?}"),
        },
        Err(r) => panic!("{:?}", r.problems),
    };
    let problems = |text: &str| match parse_contract(text, Path::new("t.yaml"), None) {
        Ok(_) => panic!("accepted: {text}"),
        Err(r) => r.problems,
    };
    assert_eq!(policy(&contract("decline")), ElicitationPolicy::Decline);
    assert_eq!(
        policy(&contract("accept_defaults")),
        ElicitationPolicy::AcceptDefaults
    );
    assert_eq!(
        policy(&contract("gate")),
        ElicitationPolicy::Gate(Box::default())
    );
    assert_eq!(
        policy(&contract(
            "{policy: gate, queue: refunds, deadline_s: 60, expire_after_s: 900}"
        )),
        ElicitationPolicy::Gate(Box::new(ElicitationGate {
            queue: "refunds".into(),
            deadline_s: Some(60),
            expire_after_s: 900,
        }))
    );
    for (bad, key) in [
        ("ask_someone", "adapter.elicitation"),
        ("42", "adapter.elicitation"),
        (
            "{policy: gate, expire_after_s: 0}",
            "adapter.elicitation.expire_after_s",
        ),
        (
            "{policy: gate, deadline_s: soon}",
            "adapter.elicitation.deadline_s",
        ),
        ("{policy: gate, queue: \"\"}", "adapter.elicitation.queue"),
        ("{policy: gate, when: never}", "adapter.elicitation.when"),
        ("{policy: decline}", "adapter.elicitation.policy"),
        ("{queue: q}", "adapter.elicitation.policy"),
    ] {
        let p = problems(&contract(bad));
        assert!(
            p.iter().any(|(f, m)| f == key && !m.is_empty()),
            "{bad}: {p:?}"
        );
    }
}
