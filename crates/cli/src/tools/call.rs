//! `keel tools call <contract-or-url> [tool] --args JSON`: one tool call through the contract
//! layer, exactly as an agent's would run (input and output validation, budgets, idempotency
//! ledger, `tool.called` / `tool.result` on the spine, output in the blob store), for a person
//! debugging a tool and for conformance runs.
//!
//! The target is a contract file, a folder of contracts (then the tool is named), or an MCP
//! server's Streamable HTTP URL: then the contract is drafted from the server's own tool list
//! (as `keel tools import-mcp` would) and the flags give what a contract would declare
//! (credentials, elicitation). The call is recorded in a scratch execution that starts and
//! finishes around it (`--exec` names a running execution to record it in instead).
//!
//! Running the command is the decision to make the call: no gate is opened, whatever the tier.
//! Prints one JSON object; exits 0 when the call succeeded, 1 otherwise.

use crate::config::secrets::ProcessEnv;
use anyhow::{Context, bail};
use clap::Args;
use keel_core::payload::{Budget, ExecFinished, ExecStarted, Outcome};
use keel_core::{CURRENT_SCHEMA_VERSION, Event, ExecId, ExecutionState, Payload, TenantId};
use keel_spine::clock::{self, Clock, SystemClock};
use keel_spine::{EventLog, SqliteOptions};
use keel_tools::adapter::builtin::Builtins;
use keel_tools::adapter::mcp::McpClient;
use keel_tools::contract::{
    AdapterSpec, Contract, ElicitationPolicy, McpIdp, McpOAuth, McpServer, OAuthGrant,
    PrivateKeySource,
};
use keel_tools::{CallContext, CallOutcome, Registry, ToolRunner};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `keel tools call` arguments.
#[derive(Args)]
pub struct CallArgs {
    /// A contract file, a folder of contracts, or an MCP server's URL (`http(s)://…`).
    pub target: String,
    /// The tool: required for a folder or a URL; for a file, the contract's own name.
    pub tool: Option<String>,
    /// The arguments, a JSON object.
    #[arg(long, default_value = "{}")]
    pub args: String,
    /// Tenant of the scratch execution (rates and the ledger are per tenant).
    #[arg(long, default_value = "default")]
    pub tenant: String,
    /// Record the call in this running execution instead of a scratch one.
    #[arg(long)]
    pub exec: Option<ExecId>,
    /// URL only: a request header from an environment variable, `NAME=VAR` (repeatable).
    #[arg(long = "header-env", value_name = "NAME=VAR")]
    pub header_env: Vec<String>,
    /// URL only: how the server's elicitation requests are answered.
    #[arg(long, default_value = "decline", value_parser = ["decline", "accept_defaults"])]
    pub elicitation: String,
    /// URL only: get an OAuth 2.1 token with this grant.
    #[arg(long, value_parser = ["authorization_code", "client_credentials", "enterprise_managed"])]
    pub oauth: Option<String>,
    /// URL only: environment variable holding a pre-registered OAuth client id.
    #[arg(long, requires = "oauth")]
    pub oauth_client_id_env: Option<String>,
    /// URL only: environment variable holding that client's secret.
    #[arg(long, requires = "oauth")]
    pub oauth_client_secret_env: Option<String>,
    /// URL only: a client ID metadata document URL.
    #[arg(long, requires = "oauth")]
    pub oauth_client_metadata_url: Option<String>,
    /// URL only, client_credentials: environment variable holding the client's private key
    /// (PEM), to authenticate with a signed assertion (private_key_jwt) instead of a secret.
    #[arg(long, requires = "oauth", conflicts_with = "oauth_private_key_file")]
    pub oauth_private_key_env: Option<String>,
    /// URL only, client_credentials: file holding the client's private key (PEM).
    #[arg(long, requires = "oauth")]
    pub oauth_private_key_file: Option<String>,
    /// URL only, enterprise_managed: the identity provider's issuer.
    #[arg(long, requires_all = ["oauth_idp_token_endpoint", "oauth_idp_client_id_env", "oauth_id_token_env"])]
    pub oauth_idp_issuer: Option<String>,
    /// URL only, enterprise_managed: the identity provider's token endpoint.
    #[arg(long, requires = "oauth_idp_issuer")]
    pub oauth_idp_token_endpoint: Option<String>,
    /// URL only, enterprise_managed: environment variable holding Keel's client id there.
    #[arg(long, requires = "oauth_idp_issuer")]
    pub oauth_idp_client_id_env: Option<String>,
    /// URL only, enterprise_managed: environment variable holding that client's secret.
    #[arg(long, requires = "oauth_idp_issuer")]
    pub oauth_idp_client_secret_env: Option<String>,
    /// URL only, enterprise_managed: environment variable holding the person's ID token.
    #[arg(long, requires = "oauth_idp_issuer")]
    pub oauth_id_token_env: Option<String>,
    /// URL only: a scope to ask for (repeatable).
    #[arg(long = "oauth-scope", requires = "oauth")]
    pub oauth_scopes: Vec<String>,
}

/// Runs `keel tools call`.
pub async fn run(data: &Path, a: CallArgs) -> anyhow::Result<()> {
    let args: Value = serde_json::from_str(&a.args).context("--args is not valid JSON")?;
    if !args.is_object() {
        bail!("--args must be a JSON object, found {args}");
    }
    let (registry, session) = resolve(&a).await?;
    let contract = match &a.tool {
        Some(_) if a.target.starts_with("http") => registry.iter().next().cloned(),
        Some(t) => registry.get(t).cloned(),
        None if registry.len() == 1 => registry.iter().next().cloned(),
        None => bail!(
            "{} holds {} contracts: name the tool",
            a.target,
            registry.len()
        ),
    }
    .with_context(|| format!("no contract for tool {:?} in {}", a.tool, a.target))?;
    if let Some(t) = &a.tool
        && !a.target.starts_with("http")
        && contract.name != *t
    {
        bail!(
            "{} is the contract of {:?}, not {t:?}",
            a.target,
            contract.name
        );
    }
    // The session that listed the tools is kept; one for a contract's MCP server is opened
    // here, so drift between the contract and the server is reported before the call.
    let session = match (session, &contract.adapter) {
        (Some(s), _) => Some(s),
        (
            None,
            AdapterSpec::Mcp {
                server,
                elicitation,
                ..
            },
        ) => match McpClient::connect(server, elicitation.clone(), &ProcessEnv).await {
            Ok(client) => Some((client, elicitation.clone())),
            // The call itself records the failure, classified (an `auth` failure is not
            // retried); only the drift check is lost.
            Err(e) => {
                eprintln!("drift not checked: {e}");
                None
            }
        },
        (None, _) => None,
    };
    let mut drift = Vec::new();
    let mut protocol = None;
    if let (Some((client, _)), AdapterSpec::Mcp { tool, .. }) = (&session, &contract.adapter) {
        drift = client.drift(tool, contract.input.raw());
        protocol = client.protocol_version();
        for d in &drift {
            eprintln!("drift: {}: {d}", contract.name);
        }
    }

    std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
    let builtins = builtins_for(data, &contract)?;
    let (runner, log) = ToolRunner::embedded(
        data,
        registry,
        builtins,
        SqliteOptions::default(),
        crate::config::secrets::process_env(),
    )?;
    if let Some((client, elicitation)) = session {
        runner.adopt_mcp(elicitation, client).await;
    }
    let result = call(&runner, &log, &a, &contract, args).await;
    runner.shutdown().await;
    let (exec_id, report) = result?;
    let mut out = json!({
        "exec_id": exec_id.to_string(),
        "tool": contract.name,
        "call_id": report.call_id,
        "attempts": report.attempts,
        "drift": drift,
    });
    if let Some(p) = protocol {
        out["protocol_version"] = json!(p);
    }
    let ok = outcome_json(&report.outcome, &mut out);
    println!("{out}");
    if !ok {
        bail!(
            "the call of {} did not succeed ({})",
            contract.name,
            out["outcome"]
        );
    }
    Ok(())
}

/// The registry to call from, and the MCP session that drafted it (URL targets).
async fn resolve(
    a: &CallArgs,
) -> anyhow::Result<(Registry, Option<(McpClient, ElicitationPolicy)>)> {
    if !(a.target.starts_with("http://") || a.target.starts_with("https://")) {
        let path = PathBuf::from(&a.target);
        let names = crate::tools::builtins();
        let registry = if path.is_dir() {
            Registry::load_dir(&path, Some(&names))?
        } else {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            Registry::from_sources(&[(path.clone(), text)], Some(&names))?
        };
        return Ok((registry, None));
    }
    let tool = a
        .tool
        .as_deref()
        .context("name the tool to call on the MCP server")?;
    let server = url_server(a)?;
    let elicitation = match a.elicitation.as_str() {
        "accept_defaults" => ElicitationPolicy::AcceptDefaults,
        _ => ElicitationPolicy::Decline,
    };
    let client = McpClient::connect(&server, elicitation.clone(), &ProcessEnv).await?;
    let listed = client
        .tools()
        .iter()
        .find(|t| t.name == tool)
        .with_context(|| {
            format!(
                "MCP server {server} has no tool {tool:?} (it lists: {})",
                client
                    .tools()
                    .iter()
                    .map(|t| t.name.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
    let draft = keel_tools::import::draft_with(&server, elicitation.clone(), listed);
    let registry = Registry::from_sources(
        &[(PathBuf::from(format!("{server} {tool}")), draft.yaml)],
        None,
    )?;
    Ok((registry, Some((client, elicitation))))
}

/// The MCP server a URL target and its flags describe.
fn url_server(a: &CallArgs) -> anyhow::Result<McpServer> {
    let mut headers = BTreeMap::new();
    for h in &a.header_env {
        let (name, var) = h
            .split_once('=')
            .filter(|(n, v)| !n.is_empty() && !v.is_empty())
            .with_context(|| format!("--header-env {h:?}: expected NAME=VAR"))?;
        headers.insert(name.to_owned(), var.to_owned());
    }
    let idp = match (
        &a.oauth_idp_issuer,
        &a.oauth_idp_token_endpoint,
        &a.oauth_idp_client_id_env,
        &a.oauth_id_token_env,
    ) {
        (Some(issuer), Some(token_endpoint), Some(client_id_env), Some(id_token_env)) => {
            Some(Box::new(McpIdp {
                issuer: issuer.clone(),
                token_endpoint: token_endpoint.clone(),
                client_id_env: client_id_env.clone(),
                client_secret_env: a.oauth_idp_client_secret_env.clone(),
                id_token_env: id_token_env.clone(),
            }))
        }
        _ => None,
    };
    if (a.oauth.as_deref() == Some("enterprise_managed")) != idp.is_some() {
        bail!(
            "--oauth enterprise_managed needs the --oauth-idp-* and --oauth-id-token-env flags, and only it takes them"
        );
    }
    let oauth = a.oauth.as_deref().map(|g| McpOAuth {
        grant: match g {
            "client_credentials" => OAuthGrant::ClientCredentials,
            "enterprise_managed" => OAuthGrant::EnterpriseManaged,
            _ => OAuthGrant::AuthorizationCode,
        },
        idp: idp.clone(),
        client_id_env: a.oauth_client_id_env.clone(),
        client_secret_env: a.oauth_client_secret_env.clone(),
        client_metadata_url: a.oauth_client_metadata_url.clone(),
        scopes: a.oauth_scopes.clone(),
        private_key: match (&a.oauth_private_key_env, &a.oauth_private_key_file) {
            (Some(v), _) => Some(PrivateKeySource::Env(v.clone())),
            (None, Some(f)) => Some(PrivateKeySource::File(f.clone())),
            (None, None) => None,
        },
    });
    Ok(McpServer::Http {
        url: a.target.clone(),
        headers_from_env: headers,
        oauth,
    })
}

/// The demo shop's builtins when the contract calls one (decision 068), else none.
fn builtins_for(data: &Path, contract: &Contract) -> anyhow::Result<Builtins> {
    Ok(match &contract.adapter {
        AdapterSpec::Builtin { function }
            if keel_tools::shop::BUILTIN_NAMES.contains(&function.as_str()) =>
        {
            keel_tools::shop::Shop::open(data.join("shop.db"))?.builtins()
        }
        _ => Builtins::default(),
    })
}

fn event(state: &ExecutionState, exec_id: ExecId, tenant: &TenantId, payload: Payload) -> Event {
    Event {
        event_id: clock::new_event_id(),
        exec_id,
        tenant: tenant.clone(),
        seq: state.last_seq + 1,
        ts: SystemClock.now(),
        trace_id: state.trace_id.unwrap_or_else(clock::new_trace_id),
        step_n: state.step_n,
        schema_version: CURRENT_SCHEMA_VERSION,
        payload,
    }
}

/// Makes the call in the named execution, or in a scratch one started and finished around it.
async fn call(
    runner: &ToolRunner,
    log: &keel_spine::SqliteLog,
    a: &CallArgs,
    contract: &Arc<Contract>,
    args: Value,
) -> anyhow::Result<(ExecId, keel_tools::CallReport)> {
    if let Some(exec_id) = a.exec {
        let events = log.read(exec_id, 1).await?;
        if events.is_empty() {
            bail!("no execution {exec_id} in this store");
        }
        let state = ExecutionState::fold(&events)?;
        let ctx = CallContext::from_state(&state)?;
        return Ok((exec_id, runner.call(&ctx, &contract.name, args).await?));
    }
    let exec_id = clock::new_exec_id();
    let tenant = TenantId(a.tenant.clone());
    let mut state = ExecutionState::default();
    let started = event(
        &state,
        exec_id,
        &tenant,
        Payload::ExecStarted(ExecStarted {
            goal: format!("keel tools call {} {}", a.target, contract.name),
            strategy_version: "keel-tools-call".into(),
            budget: Budget::default(),
            experiment_arm: None,
            replay_of: None,
            experiment: None,
        }),
    );
    log.append(exec_id, 0, std::slice::from_ref(&started))
        .await?;
    state.apply_mut(&started)?;
    let ctx = CallContext::from_state(&state)?;
    let report = runner.call(&ctx, &contract.name, args).await?;
    for e in &report.events {
        state.apply_mut(e)?;
    }
    // A scratch execution ends with its call, so no worker ever tries to resume it.
    let outcome = match report.outcome {
        CallOutcome::Ok { .. } => Outcome::Success,
        _ => Outcome::Failure,
    };
    let finished = event(
        &state,
        exec_id,
        &tenant,
        Payload::ExecFinished(ExecFinished {
            outcome,
            steps_n: state.totals.steps,
            tokens: state.totals.tokens,
            cost: state.totals.cost,
            trace_id: state.trace_id.unwrap_or_else(clock::new_trace_id),
            detail: Some("keel tools call".into()),
        }),
    );
    log.append(exec_id, state.last_seq, std::slice::from_ref(&finished))
        .await?;
    Ok((exec_id, report))
}

/// Writes the outcome into `out`; true if the call succeeded.
fn outcome_json(outcome: &CallOutcome, out: &mut Value) -> bool {
    match outcome {
        CallOutcome::Ok {
            output,
            output_ref,
            from_ledger,
        } => {
            out["outcome"] = json!("ok");
            out["output"] = output.clone();
            out["output_ref"] = json!(output_ref);
            out["from_ledger"] = json!(from_ledger);
            true
        }
        CallOutcome::Rejected { errors } => {
            out["outcome"] = json!("rejected");
            out["errors"] = json!(errors);
            false
        }
        CallOutcome::InvalidOutput { errors, output_ref } => {
            out["outcome"] = json!("invalid_output");
            out["errors"] = json!(errors);
            out["output_ref"] = json!(output_ref);
            false
        }
        CallOutcome::Refused { reason } => {
            out["outcome"] = json!("refused");
            out["errors"] = json!([reason]);
            false
        }
        CallOutcome::Failed {
            error_class,
            errors,
            ..
        } => {
            out["outcome"] = json!("failed");
            out["error_class"] = json!(error_class.as_str());
            out["errors"] = json!(errors);
            false
        }
        CallOutcome::Escalate { reason, .. } => {
            out["outcome"] = json!("escalate");
            out["errors"] = json!([reason]);
            false
        }
    }
}
