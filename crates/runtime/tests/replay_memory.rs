//! The seed's stale-memory story, end to end with the real MiniLM embedder: an execution answers
//! from a semantic fact that a later catalogue version corrected; replayed against the fixed
//! memory version, the same request produces the right answer, and the replay writes no memory.

#![allow(clippy::unwrap_used)]

mod common;
use common::answer;

use chrono::Duration;
use keel_core::payload::{Outcome, Payload};
use keel_core::{Event, ExecutionState};
use keel_memory::{NewFact, Provenance, Trust};
use keel_runtime::embedded::Config;
use keel_runtime::replay::ReadOnlyTools;
use keel_spine::clock::{Clock, SystemClock};

const SCRIPT: &str = r#"
model: scripted-carrier
input_tokens_per_char: 0.25
output_tokens: 30
rules:
  - name: answer-from-memory
    when: { goal: '(?i)when will order (?:A-)?(?P<n>\d{4}) arrive', memory: '(?i)delivery takes (?P<days>\d+) days' }
    then: { text: "Order A-{n} arrives within {days} days." }
  - name: fallback
    then: { text: "I do not know." }
"#;

const STRATEGY: &str = "
name: support-carrier
prompt: { file: {repo}/prompts/support-v1.md, version: v1 }
model: { provider: scripted, name: scripted-small, script: {script}, max_tokens: 512 }
tools: [lookup_order]
max_steps: 4
budget: { max_cost_usd: 0.05, max_tokens: 60000 }
memory: { enabled: true, k: 3, min_score: 0.0, semantic_version: 1 }
success:
  - { answer_matches: '(?i)within 2 days' }
";

fn retrieved(events: &[Event]) -> (Vec<String>, String) {
    events
        .iter()
        .find_map(|e| match &e.payload {
            Payload::MemoryRetrieved(m) => Some((
                m.chunks.iter().map(|c| c.id.clone()).collect(),
                m.memory_version.clone(),
            )),
            _ => None,
        })
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_from_stale_memory_is_fixed_by_replaying_against_the_corrected_version() {
    let scratch = tempfile::tempdir().unwrap();
    let script = scratch.path().join("carrier.yaml");
    std::fs::write(&script, SCRIPT).unwrap();
    let strategy = STRATEGY.replace("{script}", &script.display().to_string());
    let (tmp, env) = common::setup(&[("support-carrier", &strategy)]);
    let memory = env.agent.memory.clone().expect("memory is wired");

    // The carrier policy as the semantic catalogue knew it (version 1), and its correction
    // (version 2, superseding it). The episodic drafts they were promoted from expire.
    let now = SystemClock.now();
    let fact = |text: &str| NewFact {
        text: text.into(),
        volatility: "policy".into(),
        provenance: Provenance {
            tenant: "acme".into(),
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
        .await
        .unwrap();
    let (stale, v1) = memory
        .promote("acme", &old.id, "ops", &[], now)
        .await
        .unwrap();
    let new = memory
        .write(fact("Carrier policy: delivery takes 2 days."), now)
        .await
        .unwrap();
    let (fixed, v2) = memory
        .promote("acme", &new.id, "ops", std::slice::from_ref(&stale.id), now)
        .await
        .unwrap();
    assert_eq!((v1, v2), (1, 2));
    memory.sweep(now + Duration::days(30)).await.unwrap();

    // The execution pinned to version 1 answers from the stale fact: wrong date, no tool used.
    let (original, state, events) =
        common::run(&env, "support-carrier", "When will order A-1003 arrive?").await;
    assert_eq!(common::outcome(&state), Some(Outcome::Failure));
    assert_eq!(answer(&events), "Order A-1003 arrives within 5 days.");
    let (chunks, version) = retrieved(&events);
    assert_eq!(chunks, std::slice::from_ref(&stale.id));
    assert!(version.ends_with("#semantic-v1"), "{version}");
    assert!(
        common::tool_statuses(&events).is_empty(),
        "tools were never consulted"
    );

    // Replayed against the fixed memory version: the right answer.
    let config = Config {
        tools: common::repo().join("tools"),
        strategies: tmp.path().join("strategies"),
        prices: common::repo().join("prices.toml"),
    };
    let replayer = common::replayer(&tmp.path().join("data"), &config);
    let mut s = env.strategies.get("support-carrier").unwrap().clone();
    s.memory.semantic_version = Some(v2);
    s.version = format!("{}+memory-v{v2}", s.version);
    let model = s.provider().unwrap();
    let r = replayer
        .replay(original, &s, &*model, ReadOnlyTools::Live)
        .await
        .unwrap();
    let after = replayer.log().read(r.replay, 1).await.unwrap();
    assert_eq!(common::outcome(&r.state), Some(Outcome::Success));
    assert_eq!(answer(&after), "Order A-1003 arrives within 2 days.");
    let (chunks, version) = retrieved(&after);
    assert_eq!(chunks, std::slice::from_ref(&fixed.id));
    assert!(version.ends_with("#semantic-v2"), "{version}");
    assert!(
        !after
            .iter()
            .any(|e| matches!(e.payload, Payload::MemoryWritten(_)))
    );
    assert_eq!(ExecutionState::fold(&after).unwrap(), r.state);
}
