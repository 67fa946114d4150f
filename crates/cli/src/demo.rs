//! `keel demo`: the whole story on the embedded default, offline, in seconds. A support agent
//! with the demo shop's four tools (one per consequence tier) answers a handful of customer
//! requests under two strategies (an A/B); every tier-3 refund stops at an approval gate that the
//! demo's automatic approver decides (printed as such); one execution is crashed (its worker
//! process is killed with SIGKILL mid-run) and resumed from the log, and the end prints the
//! executions and the cost per success of each strategy, and how to open the web UI on the store.
//!
//! Everything it needs is compiled in and written under `DIR/config`, so it runs from any
//! directory; the store it fills is `DIR` itself (`--data`, default `.keel`), so `keel trace`,
//! `keel events` and `keel serve` with the same `--data` read it. It starts from an empty store
//! every time, so it clears `DIR` first, but only a directory that is empty or that an earlier
//! demo made (it leaves a marker file): never a store of real work.

mod experiment;
mod stale_memory;

use crate::agents::{dollars, outcome_word};
use anyhow::Context;
use keel_core::payload::{Outcome, Verdict};
use keel_core::{Cost, ExecId, ExecStatus, ExecutionState};
use keel_runtime::embedded::{Backends, Config, Embedded};
use keel_runtime::replay::Replayer;
use keel_tools::Registry;
use keel_tools::contract::AdapterSpec;
use keel_tools::shop::{BUILTIN_NAMES, Shop};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ASSETS: &[(&str, &str)] = &[
    (
        "tools/lookup_order.yaml",
        include_str!("../../../tools/lookup_order.yaml"),
    ),
    (
        "tools/draft_reply.yaml",
        include_str!("../../../tools/draft_reply.yaml"),
    ),
    (
        "tools/discard_draft.yaml",
        include_str!("../../../tools/discard_draft.yaml"),
    ),
    (
        "tools/notify_team.yaml",
        include_str!("../../../tools/notify_team.yaml"),
    ),
    (
        "tools/issue_customer_refund.yaml",
        include_str!("../../../tools/issue_customer_refund.yaml"),
    ),
    (
        "strategies/support-short.yaml",
        include_str!("../../../strategies/support-short.yaml"),
    ),
    (
        "strategies/support-long.yaml",
        include_str!("../../../strategies/support-long.yaml"),
    ),
    (
        "prompts/support-v1.md",
        include_str!("../../../prompts/support-v1.md"),
    ),
    (
        "prompts/support-v2.md",
        include_str!("../../../prompts/support-v2.md"),
    ),
    (
        "models/support.yaml",
        include_str!("../../../models/support.yaml"),
    ),
    ("prices.toml", include_str!("../../../prices.toml")),
];

const REQUESTS: &[(&str, &str)] = &[
    ("acme", "Where is my order 1007?"),
    ("acme", "Has order 1012 shipped yet?"),
    ("globex", "This is terrible, order 1021 arrived broken"),
    ("globex", "Please refund order 1003, it arrived damaged"),
    ("acme", "Please refund order 1040, it never arrived"),
    (
        "initech",
        "The courier was rude when delivering order 1030, I want to complain",
    ),
    ("initech", "Can you help me with something?"),
];

const STRATEGIES: &[&str] = &["support-short", "support-long"];

struct Row {
    strategy: String,
    version: String,
    goal: String,
    exec: ExecId,
    state: ExecutionState,
}

/// The demo's wiring: opens the embedded runtime under `data` with `config`, and, when the
/// contracts call the demo shop's builtins (the demo's and the repository's `tools/` do), the shop
/// (`data/shop.db`, the outside world the demo's agent acts on) with its builtins. A runtime whose
/// contracts do not name the shop gets no shop: the shop is the demo's, not every runtime's.
///
/// Blobs and memory are the backends `keel.toml` names (`crate::config`), built here.
pub fn open(data: &Path, config: &Config) -> anyhow::Result<Embedded> {
    let backends = crate::config::current().backends_blocking(data, &config.strategies)?;
    open_wired(data, config, backends)
}

/// Like [`open`], on `backends` the caller built (a worker's, driving through its leases).
pub fn open_wired(data: &Path, config: &Config, backends: Backends) -> anyhow::Result<Embedded> {
    Ok(match shop_for(data, config)? {
        Some(shop) => Embedded::open_wired(data, config, backends, |b| *b = shop.builtins())?,
        None => Embedded::open_wired(data, config, backends, |_| {})?,
    })
}

/// The replayer of the store under `data`, wired like [`open`].
pub fn replayer(data: &Path, config: &Config) -> anyhow::Result<Replayer> {
    let backends = crate::config::current().backends_blocking(data, &config.strategies)?;
    Ok(match shop_for(data, config)? {
        Some(shop) => Replayer::open_wired(data, config, backends, |b| *b = shop.builtins())?,
        None => Replayer::open_wired(data, config, backends, |_| {})?,
    })
}

/// The shop under `data`, if a contract of `config.tools` calls one of its builtins. Contracts
/// that do not load are left for the runtime to report, with their file and line.
fn shop_for(data: &Path, config: &Config) -> anyhow::Result<Option<Shop>> {
    let Ok(registry) = Registry::load_dir(&config.tools, None) else {
        return Ok(None);
    };
    let uses_shop = registry.iter().any(|c| {
        matches!(&c.adapter, AdapterSpec::Builtin { function } if BUILTIN_NAMES.contains(&function.as_str()))
    });
    if !uses_shop {
        return Ok(None);
    }
    std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
    Ok(Some(Shop::open(data.join("shop.db"))?))
}

/// Writes the demo's configuration (tools, shop strategies, prompts, model script, prices) under
/// `dir`, compiled in so it works from any directory; `keel serve` uses it when it has none.
pub fn write_config(dir: &Path) -> anyhow::Result<Config> {
    for (file, text) in ASSETS {
        let path = dir.join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    crate::memory::write_demo_assets(dir)?;
    Ok(Config {
        tools: dir.join("tools"),
        strategies: dir.join("strategies"),
        prices: dir.join("prices.toml"),
    })
}

/// The file that marks a directory as the demo's (so the next demo may clear it).
const MARKER: &str = "keel-demo";

/// Makes `data` an empty directory for the demo: creates it, or clears it if an earlier demo
/// made it; refuses a directory with anything else in it.
fn prepare(data: &Path) -> anyhow::Result<()> {
    if data.join(MARKER).is_file() {
        std::fs::remove_dir_all(data).with_context(|| format!("clearing {}", data.display()))?;
    } else if data.exists() {
        let mut entries =
            std::fs::read_dir(data).with_context(|| format!("reading {}", data.display()))?;
        if entries.next().is_some() {
            anyhow::bail!(
                "{} is not empty and no earlier demo made it (is it a store of real work?); the \
                 demo starts from an empty store: give it another directory, e.g. \
                 `keel --data .keel-demo demo`",
                data.display()
            );
        }
    }
    std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
    std::fs::write(
        data.join(MARKER),
        "made by `keel demo`; the next `keel demo` with this --data clears this directory\n",
    )
    .with_context(|| format!("writing {}", data.join(MARKER).display()))?;
    Ok(())
}

/// Runs the demo in `data`: the store is `data` itself, the configuration `data/config`.
pub async fn run(data: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    prepare(data)?;
    let config = write_config(&data.join("config"))?;
    let store = data.to_path_buf();
    let env = open(&store, &config)?;
    let shop = Shop::open(store.join("shop.db"))?;
    eprintln!("keel demo — store {}", store.display());
    eprintln!(
        "a support agent, 4 shop tools (tiers 0–3), {} requests × {} strategies",
        REQUESTS.len(),
        STRATEGIES.len()
    );

    let mut rows = Vec::new();
    let total = REQUESTS.len() * STRATEGIES.len();
    for (i, (tenant, goal)) in REQUESTS.iter().enumerate() {
        for (j, name) in STRATEGIES.iter().enumerate() {
            let s = env
                .strategies
                .get(name)
                .with_context(|| format!("strategy {name}"))?;
            let model = s.provider()?;
            let exec = env.agent.start(s, tenant, goal).await?;
            let mut state = env.agent.drive(s, &*model, exec).await?;
            if let ExecStatus::SuspendedAtGate { gate_id } = &state.status {
                auto_approve(&env, gate_id, name).await?;
                state = env.agent.drive(s, &*model, exec).await?;
            }
            eprintln!(
                "[{:>2}/{total}] {name:<13} {:<58} → {} ({} steps, {})",
                i * STRATEGIES.len() + j + 1,
                goal,
                outcome_word(&state),
                state.totals.steps,
                dollars(state.totals.cost)
            );
            rows.push(Row {
                strategy: name.to_string(),
                version: s.version.clone(),
                goal: goal.to_string(),
                exec,
                state,
            });
        }
    }

    // A crash: a worker process runs one execution, paced, and is killed with SIGKILL mid-run.
    let s = env
        .strategies
        .get("support-long")
        .context("strategy support-long")?;
    let goal = "This is awful, order 1044 arrived broken";
    let exec = env.agent.start(s, "acme", goal).await?;
    let exe = std::env::current_exe().context("locating the keel binary")?;
    let mut child = Command::new(exe)
        .arg("--data")
        .arg(&store)
        .args(["worker", "--once", "--pace-ms", "150", "--tools"])
        .arg(&config.tools)
        .arg("--strategies")
        .arg(&config.strategies)
        .arg("--prices")
        .arg(&config.prices)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting a worker process")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = 0;
    while Instant::now() < deadline {
        seen = env.log.read(exec, 1).await?.len();
        if seen >= 6 || child.try_wait()?.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.kill().context("killing the worker")?; // SIGKILL
    child.wait()?;
    let at_kill = env.log.read(exec, 1).await?.len();
    let model = s.provider()?;
    let state = env.agent.drive(s, &*model, exec).await?;
    eprintln!(
        "[crash] support-long  worker killed (SIGKILL) after {at_kill} events (saw {seen}); resumed from the log → {} ({} steps)",
        outcome_word(&state),
        state.totals.steps
    );
    rows.push(Row {
        strategy: "support-long".into(),
        version: s.version.clone(),
        goal: format!("{goal} [crashed+resumed]"),
        exec,
        state,
    });

    print_tables(&rows);
    crate::memory::demo_story(&env).await?;
    stale_memory::demo_stale_memory(&env, &data.join("config"), &store).await?;
    experiment::demo_experiment(&env, &store).await?;
    println!();
    println!(
        "shop side effects: {} refunds, {} notifications, {} drafts (every refund passed a gate)",
        shop.count("refunds")?,
        shop.count("notifications")?,
        shop.count("drafts")?
    );
    println!(
        "inspect: keel --data {} trace {}",
        store.display(),
        rows[0].exec
    );
    println!(
        "see the gates, decisions and timelines in the web UI:\n  keel --data {} tokens create --tenant globex --role approver --role operator\n  keel --data {} serve --addr 127.0.0.1:8080   # then open http://127.0.0.1:8080/ui and paste the token",
        store.display(),
        store.display()
    );
    eprintln!("done in {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Refunds up to this many cents are approved by the demo's automatic approver.
const AUTO_APPROVE_CENTS: i64 = 10_000;

/// The demo's automatic approver (a stand-in for a person at the approval queue, printed as such):
/// approves refunds up to $100 and rejects larger ones, with a reason the agent is told.
async fn auto_approve(env: &Embedded, gate_id: &str, strategy: &str) -> anyhow::Result<()> {
    let gate = {
        let book = env.approvals.book().await?;
        book.gates
            .get(gate_id)
            .cloned()
            .with_context(|| format!("gate {gate_id} is not in the queue"))?
    };
    let args = &gate.action["args"];
    let cents = args["amount_cents"].as_i64().unwrap_or(i64::MAX);
    let (verdict, reason) = if cents <= AUTO_APPROVE_CENTS {
        (
            Verdict::Approve,
            format!("{cents} cents is within the $100 auto-approval limit"),
        )
    } else {
        (
            Verdict::Reject,
            format!("{cents} cents is over the $100 auto-approval limit; a person must review it"),
        )
    };
    env.approvals
        .decide(gate_id, None, "demo-auto-approver", verdict, &reason)
        .await?;
    eprintln!(
        "        [gate] {strategy}: tier-{} {} {} → demo auto-approver (automatic, not a person): {} — {reason}",
        gate.consequence_tier,
        gate.action["tool"].as_str().unwrap_or("?"),
        args["order_id"].as_str().unwrap_or("?"),
        verdict.as_str()
    );
    Ok(())
}

fn print_tables(rows: &[Row]) {
    println!();
    println!("EXECUTIONS");
    println!(
        "{:<13} {:<60} {:<17} {:>5} {:>7} {:>11}  exec_id",
        "strategy", "request", "outcome", "steps", "tokens", "cost"
    );
    for r in rows {
        let goal: String = r.goal.chars().take(60).collect();
        let t = r.state.totals.tokens;
        println!(
            "{:<13} {:<60} {:<17} {:>5} {:>7} {:>11}  {}",
            r.strategy,
            goal,
            outcome_word(&r.state),
            r.state.totals.steps,
            t.input + t.output,
            dollars(r.state.totals.cost),
            r.exec
        );
    }
    println!();
    println!("COST PER SUCCESS (by strategy_version)");
    println!(
        "{:<44} {:>4} {:>9} {:>8} {:>12} {:>14}",
        "strategy_version", "runs", "successes", "rate", "total cost", "cost/success"
    );
    let mut by: BTreeMap<&str, (u32, u32, Cost)> = BTreeMap::new();
    for r in rows {
        let e = by.entry(&r.version).or_insert((0, 0, Cost::ZERO));
        e.0 += 1;
        if r.state.status
            == (ExecStatus::Finished {
                outcome: Outcome::Success,
            })
        {
            e.1 += 1;
        }
        e.2 = e.2 + r.state.totals.cost;
    }
    for (version, (runs, ok, cost)) in by {
        let per = match cost {
            Cost::Known(m) if ok > 0 => dollars(Cost::Known(m / u64::from(ok))),
            Cost::Known(_) => "n/a".into(),
            Cost::Unknown => "unknown".into(),
        };
        println!(
            "{version:<44} {runs:>4} {ok:>9} {:>7.0}% {:>12} {per:>14}",
            100.0 * f64::from(ok) / f64::from(runs),
            dollars(cost)
        );
    }
}
