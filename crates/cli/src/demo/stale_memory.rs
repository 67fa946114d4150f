//! The demo's last step, the seed's stale-memory story: an answer given from a semantic fact
//! that a later catalogue version corrected, then the same execution replayed against the new
//! version, with the diff.

use anyhow::Context;
use keel_observe::diff;
use keel_runtime::replay::ReadOnlyTools;
use keel_runtime::strategy::Strategy;
use keel_spine::clock::Clock;
use std::path::Path;

/// The scripted model of the stale-memory demo step: it answers delivery questions from memory
/// alone (the seed's "tools were never consulted").
const CARRIER_SCRIPT: &str = r#"model: scripted-carrier
input_tokens_per_char: 0.25
output_tokens: 30
rules:
  - name: answer-from-memory
    when: { goal: '(?i)when will order (?:A-)?(?P<n>\d{4}) arrive', memory: '(?i)delivery takes (?P<days>\d+) days' }
    then: { text: "Order A-{n} arrives within {days} days." }
  - name: fallback
    then: { text: "I do not know." }
"#;

const CARRIER_STRATEGY: &str = "name: support-carrier
prompt: { file: prompts/support-v1.md, version: v1 }
model: { provider: scripted, name: scripted-small, script: carrier.yaml, max_tokens: 512 }
tools: [lookup_order]
max_steps: 4
budget: { max_cost_usd: 0.05, max_tokens: 60000 }
memory: { enabled: true, k: 3, min_score: 0.0, semantic_version: 1 }
success:
  - { answer_matches: '(?i)within 2 days' }
";

/// The demo's last step, the seed's stale-memory story: an answer given from a semantic fact
/// that catalogue version 2 corrected, then the same execution replayed against version 2, with
/// the diff. Uses tenant `initech`; the expiry sweep it runs as of 30 days later (so the drafts
/// the facts were promoted from are gone) is scoped to `initech`, leaving the other demo steps'
/// memory alone.
pub async fn demo_stale_memory(
    env: &keel_runtime::embedded::Embedded,
    config_dir: &Path,
    store: &Path,
) -> anyhow::Result<()> {
    use keel_memory::{NewFact, Provenance, Trust};
    let memory = env.agent.memory.as_ref().context("memory is not wired")?;
    std::fs::write(config_dir.join("carrier.yaml"), CARRIER_SCRIPT)?;
    let mut s = Strategy::parse(CARRIER_STRATEGY, "support-carrier (demo)", config_dir)?;
    let now = keel_spine::clock::SystemClock.now();
    let fact = |text: &str| NewFact {
        text: text.into(),
        volatility: "policy".into(),
        provenance: Provenance {
            tenant: "initech".into(),
            subject: None,
            trace_id: None,
            exec_id: None,
            event_seqs: vec![],
            strategy_version: None,
            written_at: now,
            source: "carrier policy page".into(),
            trust: Trust::Operator,
        },
    };
    let old = memory
        .write(fact("Carrier policy: delivery takes 5 days."), now)
        .await?;
    let (stale, v1) = memory.promote("initech", &old.id, "ops", &[], now).await?;
    let new = memory
        .write(fact("Carrier policy: delivery takes 2 days."), now)
        .await?;
    let (_, v2) = memory
        .promote(
            "initech",
            &new.id,
            "ops",
            std::slice::from_ref(&stale.id),
            now,
        )
        .await?;
    memory
        .sweep_tenant("initech", now + chrono::Duration::days(30))
        .await?;
    let model = s.provider()?;
    let goal = "When will order A-1003 arrive?";
    let exec = env.agent.start(&s, "initech", goal).await?;
    let state = env.agent.drive(&s, &*model, exec).await?;
    println!();
    println!(
        "STALE MEMORY (tenant initech): semantic catalogue v{v1} says 5 days; v{v2} corrected it to 2 days"
    );
    println!(
        "1. {exec} {goal:?} pinned to memory v{v1} → {}",
        crate::agents::outcome_word(&state)
    );
    let config = keel_runtime::embedded::Config {
        tools: config_dir.join("tools"),
        strategies: config_dir.join("strategies"),
        prices: config_dir.join("prices.toml"),
    };
    s.memory.semantic_version = Some(v2);
    s.version = format!("{}+memory-v{v2}", s.version);
    let replayer = crate::demo::replayer(store, &config)?;
    let r = replayer
        .replay(exec, &s, &*model, ReadOnlyTools::Live)
        .await?;
    println!(
        "2. keel replay {exec} --memory-version {v2} → replay {} → {}",
        r.replay,
        crate::agents::outcome_word(&r.state)
    );
    let before = env.log.read(exec, 1).await?;
    let after = replayer.log().read(r.replay, 1).await?;
    for line in diff::diff(&before, &after).render().lines() {
        println!("   {line}");
    }
    Ok(())
}
