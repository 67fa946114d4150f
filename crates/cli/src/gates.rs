//! `keel gates …` (the approval queue from the command line, the SLA sweep, the labelled verdict
//! export), `keel strategies …` (list with their effective autonomy, re-certify after a
//! demotion), `keel tokens create` and `keel serve`.

use crate::agents::{ConfigArgs, operator};
use anyhow::{Context, bail};
use clap::Subcommand;
use keel_core::payload::Verdict;
use keel_runtime::embedded::Embedded;
use keel_runtime::gates::GateView;
use keel_server::auth::{Role, Tokens};
use keel_spine::clock::{Clock, SystemClock};
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};

/// `keel gates …`.
#[derive(Subcommand)]
pub enum GatesCmd {
    /// Gates of the store, oldest first.
    List {
        /// Only this tenant's.
        #[arg(long)]
        tenant: Option<String>,
        /// pending, decided or all.
        #[arg(long, default_value = "pending")]
        status: String,
        /// One JSON object per line (with the evidence pack).
        #[arg(long)]
        json: bool,
    },
    /// Approve a gate: the action runs (with its idempotency key) when a worker picks it up.
    Approve {
        /// The gate id.
        gate_id: String,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
        /// Who decides (recorded on the event).
        #[arg(long = "as")]
        approver: Option<String>,
    },
    /// Reject a gate: the model is told, with the reason.
    Reject {
        /// The gate id.
        gate_id: String,
        /// Why (the agent sees it).
        #[arg(long)]
        reason: String,
        /// Who decides.
        #[arg(long = "as")]
        approver: Option<String>,
    },
    /// Escalate gates past their SLA deadline and expire those past their expiry, once.
    Sweep,
    /// Decided gates as a labelled dataset (features: the evidence pack; label: the verdict).
    Export {
        /// Only jsonl is supported.
        #[arg(long, default_value = "jsonl")]
        format: String,
        /// Write to this file instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Also export gates of replays (decisions replayed from recordings, not people's),
        /// each marked with `is_replay` and `replay_of`; left out by default.
        #[arg(long)]
        include_replays: bool,
    },
}

/// `keel strategies …`.
#[derive(Subcommand)]
pub enum StrategiesCmd {
    /// Strategies with their configured and effective maximum autonomous tier.
    List,
    /// Re-certify a demoted strategy version: its configured autonomy applies again.
    Certify {
        /// Strategy name or full version.
        strategy: String,
        /// Why.
        #[arg(long, default_value = "re-certified by a person")]
        reason: String,
        /// Who (recorded on the event).
        #[arg(long = "as")]
        by: Option<String>,
    },
}

/// `keel tokens …`.
#[derive(Subcommand)]
pub enum TokensCmd {
    /// Create a token; prints only the token (store it: only its hash is kept).
    Create {
        /// The tenant it is scoped to.
        #[arg(long)]
        tenant: String,
        /// agent, approver, operator or admin (repeat for several).
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        /// The name its decisions are recorded under (default: ROLE@TENANT).
        #[arg(long)]
        name: Option<String>,
    },
}

fn open(data: &Path, cfg: &ConfigArgs) -> anyhow::Result<Embedded> {
    crate::demo::open(data, &cfg.config())
}

fn gate_line(g: &GateView) -> String {
    let state = match &g.decision {
        Some(d) => format!("{} by {}", d.verdict.as_str(), d.approver),
        None if g.closed => "closed".into(),
        None if g.escalated => "pending (SLA breached)".into(),
        None => "pending".into(),
    };
    format!(
        "{}\t{}\t{}\ttier {}\t{}\t{}\t{}\t{}",
        g.gate_id,
        g.tenant,
        g.queue,
        g.consequence_tier,
        g.action["tool"].as_str().unwrap_or("?"),
        g.action["args"],
        state,
        g.exec_id
    )
}

/// Runs a gates command.
pub async fn gates(data: &Path, cfg: &ConfigArgs, cmd: GatesCmd) -> anyhow::Result<()> {
    let env = open(data, cfg)?;
    match cmd {
        GatesCmd::List {
            tenant,
            status,
            json,
        } => {
            let book = env.approvals.book().await?;
            let mut gates: Vec<&GateView> = book
                .gates
                .values()
                .filter(|g| tenant.as_deref().is_none_or(|t| g.tenant == t))
                .filter(|g| match status.as_str() {
                    "pending" => g.is_pending(),
                    "decided" => g.decision.is_some(),
                    _ => true,
                })
                .collect();
            if !["pending", "decided", "all"].contains(&status.as_str()) {
                bail!("--status {status:?} is not one of pending, decided, all");
            }
            gates.sort_by_key(|g| g.requested_at);
            for g in gates {
                if json {
                    println!("{}", serde_json::to_string(g)?);
                } else {
                    println!("{}", gate_line(g));
                }
            }
        }
        GatesCmd::Approve {
            gate_id,
            reason,
            approver,
        } => decide(&env, &gate_id, Verdict::Approve, &reason, approver).await?,
        GatesCmd::Reject {
            gate_id,
            reason,
            approver,
        } => {
            if reason.trim().is_empty() {
                bail!("--reason: give the reason; the agent is told it");
            }
            decide(&env, &gate_id, Verdict::Reject, &reason, approver).await?
        }
        GatesCmd::Sweep => {
            let r = env.approvals.sweep().await?;
            for (queue, id) in &r.escalated {
                println!("escalated\t{queue}\t{id}");
            }
            for (queue, id) in &r.expired {
                println!("expired\t{queue}\t{id}");
            }
        }
        GatesCmd::Export {
            format,
            out,
            include_replays,
        } => {
            if format != "jsonl" {
                bail!("--format {format:?}: only jsonl is supported");
            }
            let book = env.approvals.book().await?;
            let mut w: Box<dyn Write> = match &out {
                Some(path) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(path)
                        .with_context(|| format!("creating {}", path.display()))?,
                )),
                None => Box::new(std::io::stdout().lock()),
            };
            let mut n = 0;
            let mut decided: Vec<&GateView> = book
                .gates
                .values()
                .filter(|g| g.decision.is_some() && (include_replays || !g.replay))
                .collect();
            decided.sort_by_key(|g| g.requested_at);
            for g in decided {
                let Some(d) = &g.decision else { continue };
                let replay_of = book
                    .execs
                    .get(&g.exec_id)
                    .and_then(|x| x.replay_of)
                    .map(|o| o.to_string());
                let row = json!({
                    "gate_id": g.gate_id,
                    "exec_id": g.exec_id.to_string(),
                    "tenant": g.tenant,
                    "trace_id": g.trace_id.to_string(),
                    "strategy_version": g.strategy_version,
                    "queue": g.queue,
                    "consequence_tier": g.consequence_tier,
                    "action": g.action,
                    "why_gated": g.reason,
                    "evidence_pack": g.evidence_pack,
                    "label": d.verdict.as_str(),
                    "approver": d.approver,
                    "reason": d.reason,
                    "latency_ms": d.latency_ms,
                    "escalated": g.escalated,
                    "requested_at": g.requested_at.to_rfc3339(),
                    "decided_at": d.at.to_rfc3339(),
                    "is_replay": g.replay,
                    "replay_of": replay_of,
                });
                writeln!(w, "{row}")?;
                n += 1;
            }
            w.flush()?;
            eprintln!("exported {n} decided gates");
        }
    }
    Ok(())
}

async fn decide(
    env: &Embedded,
    gate_id: &str,
    verdict: Verdict,
    reason: &str,
    approver: Option<String>,
) -> anyhow::Result<()> {
    let approver = approver.unwrap_or_else(operator);
    let (gate, d) = env
        .approvals
        .decide(gate_id, None, &approver, verdict, reason)
        .await?;
    eprintln!(
        "gate {} {} by {} after {} ms; execution {} runs on when a worker picks it up (keel worker, keel serve)",
        d.gate_id,
        d.verdict.as_str(),
        d.approver,
        d.latency_ms,
        gate.exec_id
    );
    Ok(())
}

/// Runs a strategies command.
pub async fn strategies(data: &Path, cfg: &ConfigArgs, cmd: StrategiesCmd) -> anyhow::Result<()> {
    let env = open(data, cfg)?;
    let control = env.agent.control.state().await?;
    match cmd {
        StrategiesCmd::List => {
            for s in env.strategies.iter() {
                let effective = control.max_autonomous_tier(&s.version, s.max_autonomous_tier);
                let note = match control.demotions.get(&s.version) {
                    Some(d) => format!(
                        "DEMOTED at {} ({:.0}% of {} decisions rejected)",
                        d.at,
                        d.rejection_rate * 100.0,
                        d.sample
                    ),
                    None => String::new(),
                };
                println!(
                    "{}\t{}\tmax tier {}\teffective {}\t{}",
                    s.name, s.version, s.max_autonomous_tier, effective, note
                );
            }
        }
        StrategiesCmd::Certify {
            strategy,
            reason,
            by,
        } => {
            let s = env
                .strategies
                .get(&strategy)
                .with_context(|| format!("no strategy {strategy:?}"))?;
            let was = control.demotions.contains_key(&s.version);
            env.agent
                .control
                .certify(&s.version, &by.unwrap_or_else(operator), &reason)
                .await?;
            eprintln!(
                "{} certified{}; maximum autonomous tier {}",
                s.version,
                if was { " (demotion lifted)" } else { "" },
                s.max_autonomous_tier
            );
        }
    }
    Ok(())
}

/// Runs a tokens command.
pub fn tokens(data: &Path, cmd: TokensCmd) -> anyhow::Result<()> {
    match cmd {
        TokensCmd::Create {
            tenant,
            roles,
            name,
        } => {
            if tenant.trim().is_empty() {
                bail!("--tenant: must not be empty");
            }
            let mut parsed = Vec::new();
            for r in &roles {
                parsed.push(Role::parse(r).with_context(|| {
                    format!("--role {r:?} is not one of agent, approver, operator, admin")
                })?);
            }
            let name = name.unwrap_or_else(|| format!("{}@{tenant}", roles.join("+")));
            let store = Tokens::open(data)?;
            let token = store.create(&tenant, &parsed, &name, &SystemClock.now().to_rfc3339())?;
            println!("{token}");
        }
    }
    Ok(())
}

/// `keel serve`.
pub async fn serve(
    data: &Path,
    cfg: &ConfigArgs,
    addr: &str,
    public_origin: Option<String>,
) -> anyhow::Result<()> {
    if let Some(o) = &public_origin
        && !(o.starts_with("https://") || o.starts_with("http://"))
    {
        anyhow::bail!("--public-origin {o:?}: expected http://host[:port] or https://host[:port]");
    }
    // With no configuration of its own (no tools/ and strategies/ here), serve the demo's.
    let env = if cfg.tools.exists() || cfg.strategies.exists() {
        open(data, cfg)?
    } else {
        let dir = data.join("config");
        let config = crate::demo::write_config(&dir)?;
        eprintln!(
            "keel serve: no {} or {} here; serving the demo's tools, shop and strategies from {}",
            cfg.tools.display(),
            cfg.strategies.display(),
            dir.display()
        );
        crate::demo::open(data, &config)?
    };
    let tokens = Tokens::open(data)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("--addr {addr}: cannot listen"))?;
    let local = listener.local_addr()?;
    eprintln!(
        "keel serve: http://{local}/ui (API under /v1, /openapi.json, /metrics); store {}",
        data.display()
    );
    eprintln!(
        "  a token: keel --data {} tokens create --tenant acme --role approver --role operator",
        data.display()
    );
    let mut state = keel_server::App::new(&env, tokens);
    keel_server::web::configure(&mut state, keel_server::web::WebConfig { public_origin })?;
    keel_server::serve(listener, state).await?;
    Ok(())
}
