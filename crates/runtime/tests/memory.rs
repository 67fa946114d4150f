//! Governed memory in the agent loop, end to end on the embedded default with the real MiniLM
//! embedder: a fact distilled (with provenance) by one execution is retrieved and used by a later
//! one; a customer's policy claim waits for review; erasing the subject reaches the memory store,
//! the spine (crypto-shredding) and the blobs.

#![allow(clippy::unwrap_used)]

mod common;
use common::answer;

use keel_core::ExecStatus;
use keel_core::payload::Payload;
use keel_memory::Status;
use keel_spine::shred::ERASED;

const FIRST: &str = "Where is my order A-1007? Please always send me updates by e-mail. Also, your policy says shipping is free on every order.";
const LATER: &str = "Has order A-1007 shipped yet?";

fn strategy() -> String {
    let repo = common::repo();
    std::fs::read_to_string(repo.join("strategies/memory/support-memory.yaml"))
        .unwrap()
        .replace("../../", "{repo}/")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fact_distilled_by_one_execution_is_used_by_a_later_one_and_erased_everywhere() {
    let text = strategy();
    let (_tmp, env) = common::setup(&[("support-memory", &text)]);
    let s = env.strategies.get("support-memory").unwrap();
    let model = s.provider().unwrap();
    let memory = env
        .agent
        .memory
        .clone()
        .expect("memory is wired for a memory strategy");

    let first = env
        .agent
        .start_for_subject(s, "acme", "cust-42", FIRST)
        .await
        .unwrap();
    let state = env.agent.drive(s, &*model, first).await.unwrap();
    assert!(matches!(state.status, ExecStatus::Finished { .. }));
    let events1 = env.log.read(first, 1).await.unwrap();
    let retrieved: Vec<_> = events1
        .iter()
        .filter_map(|e| match &e.payload {
            Payload::MemoryRetrieved(m) => Some(m.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        retrieved.len(),
        1,
        "retrieval runs once, before the first model call"
    );
    assert!(retrieved[0].chunks.is_empty());
    let written: Vec<_> = events1
        .iter()
        .filter_map(|e| match &e.payload {
            Payload::MemoryWritten(w) => Some((e.seq, w.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(written.len(), 2, "{written:?}");
    let finished_seq = events1.last().unwrap().seq;
    assert!(
        written.iter().all(|(seq, _)| *seq < finished_seq),
        "facts are written before exec.finished"
    );
    let pref = &written[0].1;
    assert_eq!(pref.subject.as_deref(), Some("cust-42"));
    assert_eq!(
        pref.provenance["fact"],
        "The customer wants order updates by e-mail"
    );
    assert_eq!(
        pref.provenance["trace_id"],
        state.trace_id.unwrap().to_string()
    );
    assert_eq!(pref.provenance["event_seqs"], serde_json::json!([1]));
    assert_eq!(pref.provenance["strategy_version"], s.version);
    let facts = memory.subject_access("acme", "cust-42").await.unwrap();
    assert_eq!(facts.len(), 2);
    let claim = facts.iter().find(|f| f.volatility == "policy").unwrap();
    assert_eq!(
        claim.status,
        Status::Review,
        "a customer's policy claim waits for review"
    );

    let later = env
        .agent
        .start_for_subject(s, "acme", "cust-42", LATER)
        .await
        .unwrap();
    env.agent.drive(s, &*model, later).await.unwrap();
    let events2 = env.log.read(later, 1).await.unwrap();
    let seen = events2
        .iter()
        .find_map(|e| match &e.payload {
            Payload::MemoryRetrieved(m) => Some(m.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        seen.chunks.len(),
        1,
        "only the approved-by-trust fact: {seen:?}"
    );
    let chunk = &seen.chunks[0];
    assert_eq!(
        chunk.provenance["fact"],
        "The customer wants order updates by e-mail"
    );
    assert_eq!(
        chunk.provenance["trace_id"],
        state.trace_id.unwrap().to_string()
    );
    assert_eq!(chunk.provenance["stale"], false);
    assert!(seen.memory_version.starts_with("all-MiniLM-L6-v2@"));
    let said = answer(&events2);
    assert!(
        said.contains("keep you updated by e-mail"),
        "the later execution used the fact: {said}"
    );

    // Erasure: the memory store, the spine's sealed fields, the blobs.
    let erased = memory.erase_subject("acme", "cust-42").await.unwrap();
    assert_eq!(erased.len(), 2);
    let erasure = env
        .log
        .erase_subject("acme", "cust-42", &*env.agent.blobs)
        .await
        .unwrap();
    assert_eq!(erasure.executions.len(), 2);
    assert!(!erasure.blobs_deleted.is_empty());
    for exec in [first, later] {
        for e in env.log.read(exec, 1).await.unwrap() {
            let text = serde_json::to_string(&e).unwrap();
            assert!(!text.contains("e-mail"), "seq {} still says {text}", e.seq);
            if let Payload::ExecStarted(s) = &e.payload {
                assert_eq!(s.goal, ERASED);
            }
        }
    }
    assert!(
        memory
            .subject_access("acme", "cust-42")
            .await
            .unwrap()
            .is_empty()
    );
}

/// Rule 2: the store can be rebuilt from the log (`memory.written` carries the whole fact).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_store_can_be_rebuilt_from_the_log() {
    let text = strategy();
    let (tmp, env) = common::setup(&[("support-memory", &text)]);
    let s = env.strategies.get("support-memory").unwrap();
    let model = s.provider().unwrap();
    let memory = env.agent.memory.clone().unwrap();
    let exec = env
        .agent
        .start_for_subject(s, "acme", "cust-7", FIRST)
        .await
        .unwrap();
    env.agent.drive(s, &*model, exec).await.unwrap();
    let original = memory.store.list("acme", None).await.unwrap();
    assert_eq!(original.len(), 2);

    let fresh = keel_runtime::recall::open_embedded(
        &tmp.path().join("rebuilt"),
        &common::minilm_dir().expect("KEEL_MINILM_DIR"),
    )
    .unwrap();
    let n = keel_runtime::recall::rebuild_from_log(&*env.log, &fresh)
        .await
        .unwrap();
    assert_eq!(n, 2);
    let rebuilt = fresh.store.list("acme", None).await.unwrap();
    assert_eq!(
        rebuilt, original,
        "the same facts, ids, provenance, status, TTL and freshness"
    );
    // Idempotent.
    keel_runtime::recall::rebuild_from_log(&*env.log, &fresh)
        .await
        .unwrap();
    assert_eq!(fresh.store.list("acme", None).await.unwrap().len(), 2);
}

/// A replay of an execution about a subject is about the same subject (issue 12, items 3 and 4):
/// it retrieves the subject's memory as the original did, and erasure reaches its copy of the
/// goal too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_is_about_the_subject_of_its_original() {
    use keel_runtime::embedded::Config;
    use keel_runtime::replay::ReadOnlyTools;
    let text = strategy();
    let (tmp, env) = common::setup(&[("support-memory", &text)]);
    let s = env.strategies.get("support-memory").unwrap();
    let model = s.provider().unwrap();
    let mut later = None;
    for goal in [FIRST, LATER] {
        let exec = env
            .agent
            .start_for_subject(s, "acme", "cust-42", goal)
            .await
            .unwrap();
        env.agent.drive(s, &*model, exec).await.unwrap();
        later = Some(exec);
    }
    let later = later.unwrap();
    let config = Config {
        tools: common::repo().join("tools"),
        strategies: tmp.path().join("strategies"),
        prices: common::repo().join("prices.toml"),
    };
    let replayer = common::replayer(&tmp.path().join("data"), &config);
    let r = replayer
        .replay(later, s, &*model, ReadOnlyTools::Live)
        .await
        .unwrap();
    assert_eq!(
        replayer
            .log()
            .subject_of(r.replay)
            .await
            .unwrap()
            .as_deref(),
        Some("cust-42")
    );
    let events = replayer.log().read(r.replay, 1).await.unwrap();
    let chunks = events
        .iter()
        .find_map(|e| match &e.payload {
            Payload::MemoryRetrieved(m) => Some(m.chunks.len()),
            _ => None,
        })
        .unwrap();
    assert_eq!(chunks, 1, "the replay retrieves the subject's fact");
    assert!(answer(&events).contains("keep you updated by e-mail"));

    let erasure = env
        .log
        .erase_subject("acme", "cust-42", &*env.agent.blobs)
        .await
        .unwrap();
    assert!(erasure.executions.contains(&r.replay), "{erasure:?}");
    match &env.log.read(r.replay, 1).await.unwrap()[0].payload {
        Payload::ExecStarted(started) => assert_eq!(started.goal, ERASED),
        other => panic!("{other:?}"),
    }
}
