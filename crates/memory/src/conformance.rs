//! The `MemoryStore` conformance suite: every backend's tests run every check here, through
//! [`crate::memory_conformance_tests!`], against a fresh store and the real all-MiniLM-L6-v2
//! embedder (from `$KEEL_MINILM_DIR`; a missing model fails the test, never skips it). Each check
//! names the rule of issue 6 it defends.

// Test assertions compiled into the library so every backend can run them.
#![allow(clippy::unwrap_used)]

use crate::embed::{Embedder, MiniLm};
use crate::error::MemoryError;
use crate::fact::{NewFact, Provenance, Query, Status, Trust};
use crate::memory::Memory;
use crate::policy::MemoryPolicy;
use crate::store::MemoryStore;
use chrono::{DateTime, Duration, TimeZone, Utc};
use std::sync::{Arc, OnceLock};

/// Expands to one `#[tokio::test]` per check, each on a store made by `$make` (an async
/// expression returning `(Arc<dyn MemoryStore>, guard)`; the guard lives as long as the test).
#[macro_export]
macro_rules! memory_conformance_tests {
    ($make:expr) => {
        $crate::memory_conformance_tests!(@each $make;
            distilled_write_is_retrieved_with_provenance,
            no_query_path_crosses_tenants,
            expired_facts_are_not_retrieved_and_the_sweep_logs_them,
            a_tenant_sweep_leaves_other_tenants_expired_facts,
            stale_facts_are_flagged_with_their_age,
            low_trust_facts_wait_for_review,
            pii_is_redacted_or_rejected_at_write,
            another_embedding_model_is_refused,
            semantic_tier_is_versioned_and_retrieval_pins_a_version,
            subject_access_and_erasure_reach_every_index,
            episodic_facts_are_retrieved_only_for_their_subject,
            migration_builds_side_by_side_and_switches_atomically,
        );
    };
    (@each $make:expr; $($check:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $check() {
            let (store, _guard) = $make.await;
            $crate::conformance::$check(store).await;
        }
    )*};
}

/// The real MiniLM embedder, loaded once per process.
pub fn minilm() -> MiniLm {
    static M: OnceLock<MiniLm> = OnceLock::new();
    M.get_or_init(|| {
        // The test process is its own edge: scripts/test-services prints the directory.
        let dir = std::env::var_os("KEEL_MINILM_DIR")
            .expect("KEEL_MINILM_DIR: all-MiniLM-L6-v2 must be available: run scripts/test");
        MiniLm::load(std::path::Path::new(&dir)).expect("all-MiniLM-L6-v2 loads")
    })
    .clone()
}

/// MiniLM truncating at 128 tokens: a different, real embedding version.
pub fn minilm_128() -> MiniLm {
    static M: OnceLock<MiniLm> = OnceLock::new();
    M.get_or_init(|| {
        let dir = std::env::var_os("KEEL_MINILM_DIR").expect("KEEL_MINILM_DIR");
        MiniLm::load_with_max_tokens(std::path::Path::new(&dir), 128).unwrap()
    })
    .clone()
}

/// The model a fresh conformance store must be pinned to.
pub fn pinned_model() -> crate::fact::EmbeddingModel {
    minilm().model().clone()
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 9, 0, 0).unwrap()
}

fn memory(store: Arc<dyn MemoryStore>) -> Memory {
    Memory::new(store, Arc::new(minilm()), MemoryPolicy::default()).unwrap()
}

/// A query by an execution about `subject`.
fn query_for(tenant: &str, subject: &str, text: &str) -> Query {
    Query {
        subject: Some(subject.into()),
        ..query(tenant, text)
    }
}

/// A distilled fact with provenance.
pub fn fact(
    tenant: &str,
    subject: Option<&str>,
    text: &str,
    volatility: &str,
    trust: Trust,
) -> NewFact {
    NewFact {
        text: text.into(),
        volatility: volatility.into(),
        provenance: Provenance {
            tenant: tenant.into(),
            subject: subject.map(str::to_owned),
            trace_id: Some("0123456789abcdef0123456789abcdef".into()),
            exec_id: Some("exec-1".into()),
            event_seqs: vec![1, 7],
            strategy_version: Some("support-short@1".into()),
            written_at: t0(),
            source: "distilled".into(),
            trust,
        },
    }
}

fn query(tenant: &str, text: &str) -> Query {
    Query {
        tenant: tenant.into(),
        subject: None,
        text: text.into(),
        k: 5,
        min_score: 0.0,
        semantic_version: None,
    }
}

/// Rule 2: a distilled write is stored with its provenance and found by a paraphrase.
pub async fn distilled_write_is_retrieved_with_provenance(store: Arc<dyn MemoryStore>) {
    let m = memory(store);
    let f = m
        .write(
            fact(
                "acme",
                Some("cust-7"),
                "The customer prefers CSV exports for invoices",
                "preference",
                Trust::Agent,
            ),
            t0(),
        )
        .await
        .unwrap();
    m.write_tenant_wide(
        fact(
            "acme",
            None,
            "Orders above 500 EUR ship with a signature",
            "policy",
            Trust::ToolRecord,
        ),
        t0(),
    )
    .await
    .unwrap();
    let r = m
        .retrieve(
            &query_for(
                "acme",
                "cust-7",
                "which file format does the client want for invoices?",
            ),
            t0(),
        )
        .await
        .unwrap();
    assert_eq!(
        r.hits[0].fact.id, f.id,
        "the paraphrase finds the fact first: {:?}",
        r.hits
    );
    assert!(r.hits[0].score > 0.4, "score {}", r.hits[0].score);
    assert!(r.hits[0].score > r.hits[1].score);
    let p = &r.hits[0].fact.provenance;
    assert_eq!(
        p.trace_id.as_deref(),
        Some("0123456789abcdef0123456789abcdef")
    );
    assert_eq!(p.event_seqs, vec![1, 7]);
    assert_eq!(p.strategy_version.as_deref(), Some("support-short@1"));
    assert!(
        r.memory_version.contains("all-MiniLM-L6-v2@"),
        "{}",
        r.memory_version
    );
    assert!(
        r.memory_version.ends_with("#semantic-v0"),
        "{}",
        r.memory_version
    );
}

/// Rule 4: tenant isolation on every path (search, get, list, review, promote, erase).
pub async fn no_query_path_crosses_tenants(store: Arc<dyn MemoryStore>) {
    let m = memory(store.clone());
    let a = m
        .write(
            fact(
                "tenant-a",
                Some("alice"),
                "Tenant A negotiated a 30 day payment term",
                "account",
                Trust::ToolRecord,
            ),
            t0(),
        )
        .await
        .unwrap();
    let review = m
        .write(
            fact(
                "tenant-a",
                Some("alice"),
                "Alice says refunds need no receipt",
                "policy",
                Trust::UserClaim,
            ),
            t0(),
        )
        .await
        .unwrap();
    let r = m
        .retrieve(
            &query_for("tenant-b", "alice", "payment term negotiated"),
            t0(),
        )
        .await
        .unwrap();
    assert!(r.hits.is_empty(), "tenant-b saw {:?}", r.hits);
    assert!(
        m.retrieve(&query_for("", "alice", "payment term"), t0())
            .await
            .unwrap()
            .hits
            .is_empty()
    );
    assert!(store.get("tenant-b", &a.id).await.unwrap().is_none());
    assert!(store.list("tenant-b", None).await.unwrap().is_empty());
    assert!(
        m.subject_access("tenant-b", "alice")
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        m.review("tenant-b", &review.id, true).await,
        Err(MemoryError::NotFound { .. })
    ));
    assert!(matches!(
        m.promote("tenant-b", &a.id, "mallory", &[], t0()).await,
        Err(MemoryError::NotFound { .. })
    ));
    assert!(
        m.erase_subject("tenant-b", "alice")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.list("tenant-a", None).await.unwrap().len(), 2);
    assert_eq!(
        store
            .get("tenant-a", &review.id)
            .await
            .unwrap()
            .unwrap()
            .status,
        Status::Review
    );
    let hits = m
        .retrieve(
            &query_for("tenant-a", "alice", "payment term negotiated"),
            t0(),
        )
        .await
        .unwrap()
        .hits;
    assert_eq!(hits[0].fact.id, a.id);
}

/// Rule 5: an expired fact is never retrieved, and the sweep removes it and says so.
pub async fn expired_facts_are_not_retrieved_and_the_sweep_logs_them(store: Arc<dyn MemoryStore>) {
    let m = memory(store.clone());
    let policy = m
        .write_tenant_wide(
            fact(
                "acme",
                None,
                "Returns are accepted within 14 days",
                "policy",
                Trust::ToolRecord,
            ),
            t0(),
        )
        .await
        .unwrap();
    let pref = m
        .write_tenant_wide(
            fact(
                "acme",
                None,
                "The customer prefers e-mail over phone calls",
                "preference",
                Trust::Agent,
            ),
            t0(),
        )
        .await
        .unwrap();
    let later = t0() + Duration::days(8); // policy TTL is 7 days, preference 180
    let r = m
        .retrieve(&query("acme", "how long are returns accepted"), later)
        .await
        .unwrap();
    assert!(
        r.hits.iter().all(|h| h.fact.id != policy.id),
        "expired fact returned"
    );
    assert!(r.hits.iter().any(|h| h.fact.id == pref.id));
    assert!(m.sweep(t0() + Duration::days(1)).await.unwrap().is_empty());
    let swept = m.sweep(later).await.unwrap();
    assert_eq!(swept.len(), 1);
    assert_eq!(swept[0].id, policy.id);
    assert_eq!(swept[0].volatility, "policy");
    assert_eq!(swept[0].expired_at, t0() + Duration::days(7));
    assert!(store.get("acme", &policy.id).await.unwrap().is_none());
    assert!(
        m.sweep(later).await.unwrap().is_empty(),
        "a second sweep finds nothing"
    );
}

/// Rules 4 and 5: a sweep scoped to one tenant removes only that tenant's expired facts (in
/// review or active) and says so; another tenant's expired facts stay until its own sweep.
pub async fn a_tenant_sweep_leaves_other_tenants_expired_facts(store: Arc<dyn MemoryStore>) {
    let m = memory(store.clone());
    let write = |tenant: &'static str, text: &'static str, volatility: &'static str, trust| {
        let m = m.clone();
        async move {
            m.write(fact(tenant, None, text, volatility, trust), t0())
                .await
                .unwrap()
        }
    };
    // Policy facts live 7 days, preferences 180.
    let initech_policy = write(
        "initech",
        "Carrier policy: delivery takes 5 days",
        "policy",
        Trust::Operator,
    )
    .await;
    let initech_pref = write(
        "initech",
        "The customer prefers deliveries in the morning",
        "preference",
        Trust::Agent,
    )
    .await;
    let acme_claim = write(
        "acme",
        "Shipping is free on every order",
        "policy",
        Trust::UserClaim,
    )
    .await;
    assert_eq!(acme_claim.status, Status::Review);
    let acme_policy = write(
        "acme",
        "Returns are accepted within 14 days",
        "policy",
        Trust::ToolRecord,
    )
    .await;
    let later = t0() + Duration::days(30);

    let swept = m.sweep_tenant("initech", later).await.unwrap();
    assert_eq!(swept.len(), 1, "{swept:?}");
    assert_eq!(swept[0].id, initech_policy.id);
    assert_eq!(swept[0].tenant, "initech");
    assert_eq!(swept[0].volatility, "policy");
    assert_eq!(swept[0].expired_at, t0() + Duration::days(7));
    assert!(
        store
            .get("initech", &initech_policy.id)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .get("initech", &initech_pref.id)
            .await
            .unwrap()
            .is_some(),
        "an unexpired fact of the swept tenant stays"
    );
    for f in [&acme_claim, &acme_policy] {
        assert_eq!(
            store.get("acme", &f.id).await.unwrap().as_ref(),
            Some(f),
            "another tenant's expired fact stays, unchanged"
        );
    }
    assert!(
        m.sweep_tenant("initech", later).await.unwrap().is_empty(),
        "a second tenant sweep finds nothing"
    );
    assert!(
        m.sweep_tenant("nobody", later).await.unwrap().is_empty(),
        "a tenant with no facts sweeps nothing"
    );
    assert!(
        m.sweep_tenant("", later).await.is_err(),
        "a tenant is named"
    );

    // The other tenant's own sweep takes its expired facts, and leaves nothing for a global one.
    let mut swept: Vec<String> = m
        .sweep_tenant("acme", later)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    swept.sort();
    let mut want = vec![acme_claim.id.clone(), acme_policy.id.clone()];
    want.sort();
    assert_eq!(swept, want);
    assert!(store.list("acme", None).await.unwrap().is_empty());
    assert!(m.sweep(later).await.unwrap().is_empty());
    assert_eq!(store.list("initech", None).await.unwrap().len(), 1);
}

/// Rule 5: retrieval returns each fact's age and flags one past its freshness window.
pub async fn stale_facts_are_flagged_with_their_age(store: Arc<dyn MemoryStore>) {
    let m = memory(store);
    m.write_tenant_wide(
        fact(
            "acme",
            None,
            "Express shipping costs 9 EUR",
            "policy",
            Trust::ToolRecord,
        ),
        t0(),
    )
    .await
    .unwrap();
    let q = query("acme", "price of express shipping");
    let fresh = m.retrieve(&q, t0() + Duration::hours(3)).await.unwrap();
    assert_eq!(fresh.hits[0].age_secs, 3 * 3600);
    assert!(!fresh.hits[0].stale);
    let stale = m.retrieve(&q, t0() + Duration::days(2)).await.unwrap();
    assert_eq!(stale.hits[0].age_secs, 2 * 86_400);
    assert!(
        stale.hits[0].stale,
        "a 2-day-old policy fact (fresh for 1 day) is flagged"
    );
}

/// Rule 4: facts from low-trust sources are not retrievable until a reviewer approves them.
pub async fn low_trust_facts_wait_for_review(store: Arc<dyn MemoryStore>) {
    let m = memory(store.clone());
    let claim = m
        .write(
            fact(
                "acme",
                Some("bob"),
                "All customers are entitled to a full refund without a receipt",
                "policy",
                Trust::UserClaim,
            ),
            t0(),
        )
        .await
        .unwrap();
    let bad = m
        .write(
            fact(
                "acme",
                Some("bob"),
                "Gift cards never expire and can be refunded in cash",
                "policy",
                Trust::UserClaim,
            ),
            t0(),
        )
        .await
        .unwrap();
    assert_eq!(claim.status, Status::Review);
    let q = query_for("acme", "bob", "refund without a receipt");
    assert!(
        m.retrieve(&q, t0()).await.unwrap().hits.is_empty(),
        "unreviewed claim retrieved"
    );
    let approved = m.review("acme", &claim.id, true).await.unwrap();
    assert_eq!(approved.status, Status::Active);
    let hits = m.retrieve(&q, t0()).await.unwrap().hits;
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].fact.id, claim.id);
    assert_eq!(
        m.review("acme", &bad.id, false).await.unwrap().status,
        Status::Rejected
    );
    let q2 = query_for("acme", "bob", "gift card refunds in cash");
    assert!(
        m.retrieve(&q2, t0())
            .await
            .unwrap()
            .hits
            .iter()
            .all(|h| h.fact.id != bad.id)
    );
    assert!(
        m.review("acme", &bad.id, true).await.is_err(),
        "a rejected fact cannot be re-approved"
    );
    // The threshold is configurable: trusting user claims stores them active.
    let policy = MemoryPolicy {
        review_below: Trust::UserClaim,
        ..MemoryPolicy::default()
    };
    let lax = Memory::new(store, Arc::new(minilm()), policy).unwrap();
    let f = lax
        .write(
            fact(
                "acme",
                None,
                "The shop opens at 8 on Saturdays",
                "policy",
                Trust::UserClaim,
            ),
            t0(),
        )
        .await
        .unwrap();
    assert_eq!(f.status, Status::Active);
}

/// Rule 3: the PII screen redacts or rejects per policy, records what it did, stores nothing of
/// a rejected fact.
pub async fn pii_is_redacted_or_rejected_at_write(store: Arc<dyn MemoryStore>) {
    let m = memory(store.clone());
    let f = m
        .write(fact("acme", Some("carol"), "Carol wants invoices sent to carol.jones@example.org and calls from +44 20 7946 0958", "preference", Trust::Agent), t0())
        .await
        .unwrap();
    assert_eq!(
        f.text,
        "Carol wants invoices sent to [email] and calls from [phone]"
    );
    assert_eq!(f.pii.len(), 2);
    assert!(f.pii.iter().all(|a| a.action == "redacted"));
    let stored = store.get("acme", &f.id).await.unwrap().unwrap();
    assert!(
        !serde_json::to_string(&stored)
            .unwrap()
            .contains("carol.jones@")
    );
    let e = m
        .write(
            fact(
                "acme",
                Some("carol"),
                "Carol pays with card 4111 1111 1111 1111",
                "account",
                Trust::Agent,
            ),
            t0(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&e, MemoryError::PiiRejected { kinds } if kinds == "card"),
        "{e}"
    );
    assert!(
        !e.to_string().contains("4111"),
        "the error must not echo the value"
    );
    assert_eq!(store.list("acme", Some("carol")).await.unwrap().len(), 1);
    let near = m
        .write(
            fact(
                "acme",
                None,
                "Order A-1001 shipped on 2026-11-25 with tracking 1234 5678 9012 3456",
                "account",
                Trust::ToolRecord,
            ),
            t0(),
        )
        .await
        .unwrap();
    assert!(near.pii.is_empty(), "near-miss flagged: {:?}", near.pii);
}

/// Rule 7: the store records its model; a query or write with another one is refused.
pub async fn another_embedding_model_is_refused(store: Arc<dyn MemoryStore>) {
    let m = memory(store.clone());
    m.write(
        fact(
            "acme",
            None,
            "Support is open on weekdays",
            "stable",
            Trust::ToolRecord,
        ),
        t0(),
    )
    .await
    .unwrap();
    assert_eq!(store.pinned().await.unwrap(), pinned_model());
    let other = Memory::new(
        store.clone(),
        Arc::new(minilm_128()),
        MemoryPolicy::default(),
    )
    .unwrap();
    let e = other
        .retrieve(&query("acme", "opening hours"), t0())
        .await
        .unwrap_err();
    assert!(matches!(e, MemoryError::EmbeddingMismatch { .. }), "{e}");
    let e = other
        .write(
            fact(
                "acme",
                None,
                "Support is closed on holidays",
                "stable",
                Trust::ToolRecord,
            ),
            t0(),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, MemoryError::EmbeddingMismatch { .. }), "{e}");
    let v = vec![0.0f32; 384];
    let e = store
        .search("acme", None, &v, minilm_128().model(), 5, t0(), 0)
        .await
        .unwrap_err();
    assert!(matches!(e, MemoryError::EmbeddingMismatch { .. }), "{e}");
    assert_eq!(store.list("acme", None).await.unwrap().len(), 1);
}

/// Rule 1: promotion (by a human) creates a new semantic catalogue version; a query pinned to an
/// older version sees the older documentation.
pub async fn semantic_tier_is_versioned_and_retrieval_pins_a_version(store: Arc<dyn MemoryStore>) {
    let m = memory(store.clone());
    let a = m
        .write(
            fact(
                "acme",
                None,
                "Damaged items are refunded without a return",
                "policy",
                Trust::ToolRecord,
            ),
            t0(),
        )
        .await
        .unwrap();
    let review = m
        .write(
            fact(
                "acme",
                None,
                "Refunds are paid in bitcoin",
                "policy",
                Trust::UserClaim,
            ),
            t0(),
        )
        .await
        .unwrap();
    assert!(
        m.promote("acme", &review.id, "ops", &[], t0())
            .await
            .is_err(),
        "unreviewed facts cannot be promoted"
    );
    let (s1, v1) = m
        .promote("acme", &a.id, "ops@acme", &[], t0())
        .await
        .unwrap();
    assert_eq!(v1, 1);
    assert_eq!(s1.promoted_from.as_deref(), Some(a.id.as_str()));
    assert!(s1.provenance.source.contains("ops@acme"));
    let b = m
        .write(
            fact(
                "acme",
                None,
                "Damaged items are refunded after a photo is sent",
                "policy",
                Trust::ToolRecord,
            ),
            t0(),
        )
        .await
        .unwrap();
    let (s2, v2) = m
        .promote(
            "acme",
            &b.id,
            "ops@acme",
            std::slice::from_ref(&s1.id),
            t0(),
        )
        .await
        .unwrap();
    assert_eq!(v2, 2);
    let ids = |v: Option<u64>| {
        let m = m.clone();
        async move {
            let mut q = query("acme", "refund for damaged items");
            q.k = 10;
            q.semantic_version = v;
            m.retrieve(&q, t0() + Duration::days(30)).await.unwrap() // episodic ones expired
        }
    };
    let r0 = ids(Some(0)).await;
    assert!(r0.hits.is_empty(), "{:?}", r0.hits);
    let r1 = ids(Some(1)).await;
    assert_eq!(
        r1.hits
            .iter()
            .map(|h| h.fact.id.as_str())
            .collect::<Vec<_>>(),
        vec![s1.id.as_str()]
    );
    assert!(r1.memory_version.ends_with("#semantic-v1"));
    let now = ids(None).await;
    assert_eq!(
        now.hits
            .iter()
            .map(|h| h.fact.id.as_str())
            .collect::<Vec<_>>(),
        vec![s2.id.as_str()]
    );
    assert!(now.memory_version.ends_with("#semantic-v2"));
    assert_eq!(store.catalogue_version("acme").await.unwrap(), 2);
    assert_eq!(store.catalogue_version("other").await.unwrap(), 0);
}

/// Rule 6: subject access lists every fact about a subject with provenance; erasure removes them
/// from the store and every index (a migration's side index included); other subjects stay.
pub async fn subject_access_and_erasure_reach_every_index(store: Arc<dyn MemoryStore>) {
    let m = memory(store.clone());
    let d1 = m
        .write(
            fact(
                "acme",
                Some("dave"),
                "Dave's parcel is delivered to his neighbour",
                "preference",
                Trust::Agent,
            ),
            t0(),
        )
        .await
        .unwrap();
    let d2 = m
        .write(
            fact(
                "acme",
                Some("dave"),
                "Dave claims he is owed a bonus refund",
                "policy",
                Trust::UserClaim,
            ),
            t0(),
        )
        .await
        .unwrap();
    let (d3, _) = m.promote("acme", &d1.id, "ops", &[], t0()).await.unwrap();
    let e1 = m
        .write(
            fact(
                "acme",
                Some("erin"),
                "Erin's parcel is delivered to the office",
                "preference",
                Trust::Agent,
            ),
            t0(),
        )
        .await
        .unwrap();
    // A half-built side index holds Dave's vectors too.
    let side = minilm_128();
    store.migration_start(side.model()).await.unwrap();
    let pending = store.migration_pending(side.model(), 100).await.unwrap();
    let texts: Vec<String> = pending.iter().map(|(_, t)| t.clone()).collect();
    let vs = side.embed(&texts).await.unwrap();
    let rows: Vec<(String, Vec<f32>)> = pending.into_iter().map(|(id, _)| id).zip(vs).collect();
    store.migration_put(side.model(), &rows).await.unwrap();

    let access = m.subject_access("acme", "dave").await.unwrap();
    let mut ids: Vec<&str> = access.iter().map(|f| f.id.as_str()).collect();
    ids.sort();
    let mut want = vec![d1.id.as_str(), d2.id.as_str(), d3.id.as_str()];
    want.sort();
    assert_eq!(ids, want);
    assert!(access.iter().all(|f| f.provenance.trace_id.is_some()));

    let erased = m.erase_subject("acme", "dave").await.unwrap();
    assert_eq!(erased.len(), 3);
    assert!(m.subject_access("acme", "dave").await.unwrap().is_empty());
    for id in &erased {
        assert!(store.get("acme", id).await.unwrap().is_none());
    }
    let hits = m
        .retrieve(
            &query_for("acme", "erin", "parcel delivered to the neighbour"),
            t0(),
        )
        .await
        .unwrap()
        .hits;
    assert!(
        hits.iter()
            .all(|h| h.fact.subject.as_deref() != Some("dave")),
        "{hits:?}"
    );
    assert_eq!(hits[0].fact.id, e1.id);
    // Finishing the migration: nothing of Dave's is pending or comes back in the new index.
    assert!(
        store
            .migration_pending(side.model(), 100)
            .await
            .unwrap()
            .is_empty()
    );
    store.migration_switch(side.model()).await.unwrap();
    let m2 = Memory::new(store, Arc::new(side), MemoryPolicy::default()).unwrap();
    let hits = m2
        .retrieve(
            &query_for("acme", "erin", "parcel delivered to the neighbour"),
            t0(),
        )
        .await
        .unwrap()
        .hits;
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].fact.id, e1.id);
}

/// Rule 2 (issue 12, item 3): an episodic fact about a subject is retrieved only for that
/// subject: never for another customer of the same tenant, never for an execution about no one.
/// A distilled fact about no one named is retrieved by none; knowledge every execution may see is
/// marked so (tenant scope, written by an operator) or promoted to the semantic tier.
pub async fn episodic_facts_are_retrieved_only_for_their_subject(store: Arc<dyn MemoryStore>) {
    let m = memory(store.clone());
    let a = m
        .write(
            fact(
                "acme",
                Some("cust-a"),
                "The customer wants order updates by e-mail",
                "preference",
                Trust::Agent,
            ),
            t0(),
        )
        .await
        .unwrap();
    assert_eq!(a.scope, crate::fact::Scope::Subject);
    let anonymous = m
        .write(
            fact(
                "acme",
                None,
                "The customer wants order updates by text message",
                "preference",
                Trust::Agent,
            ),
            t0(),
        )
        .await
        .unwrap();
    let wide = m
        .write_tenant_wide(
            fact(
                "acme",
                None,
                "Order updates are sent when an order ships",
                "stable",
                Trust::Operator,
            ),
            t0(),
        )
        .await
        .unwrap();
    assert!(
        m.write_tenant_wide(
            fact("acme", Some("cust-a"), "About A", "stable", Trust::Operator),
            t0()
        )
        .await
        .is_err(),
        "a fact about a subject cannot be tenant-wide"
    );
    let ids = |q: Query| {
        let m = m.clone();
        async move {
            let mut q = q;
            q.k = 10;
            let mut ids: Vec<String> = m
                .retrieve(&q, t0())
                .await
                .unwrap()
                .hits
                .into_iter()
                .map(|h| h.fact.id)
                .collect();
            ids.sort();
            ids
        }
    };
    let text = "Where is my order? How will I hear about it?";
    let mut want_a = vec![a.id.clone(), wide.id.clone()];
    want_a.sort();
    assert_eq!(ids(query_for("acme", "cust-a", text)).await, want_a);
    assert_eq!(
        ids(query_for("acme", "cust-b", text)).await,
        vec![wide.id.clone()],
        "customer B never sees customer A's or an unnamed customer's facts"
    );
    assert_eq!(
        ids(query("acme", text)).await,
        vec![wide.id.clone()],
        "an execution about no one sees no subject's facts"
    );
    assert!(
        !ids(query_for("acme", "cust-a", text))
            .await
            .contains(&anonymous.id),
        "a fact about someone nobody named is nobody's"
    );
    // Promoted by a person, A's fact becomes documentation every execution of the tenant reads.
    let (promoted, _) = m.promote("acme", &a.id, "ops", &[], t0()).await.unwrap();
    let b = ids(query_for("acme", "cust-b", text)).await;
    assert!(b.contains(&promoted.id), "{b:?}");
    assert!(!b.contains(&a.id), "{b:?}");
    assert!(ids(query_for("other", "cust-a", text)).await.is_empty());
}

/// Rule 7: a migration builds the new index beside the old one; until the switch the old model
/// serves and the new one is refused; after it, the reverse.
pub async fn migration_builds_side_by_side_and_switches_atomically(store: Arc<dyn MemoryStore>) {
    let m = memory(store.clone());
    for (i, text) in [
        "The warehouse ships on weekdays only",
        "Premium customers get free returns",
        "Invoices are issued on the first of the month",
    ]
    .iter()
    .enumerate()
    {
        let tenant = if i == 2 { "other" } else { "acme" };
        m.write_tenant_wide(fact(tenant, None, text, "stable", Trust::ToolRecord), t0())
            .await
            .unwrap();
    }
    let new = minilm_128();
    let m_new = Memory::new(
        store.clone(),
        Arc::new(new.clone()),
        MemoryPolicy::default(),
    )
    .unwrap();
    // Half way: one fact re-embedded, then "crash" (stop); the old index still serves.
    store.migration_start(new.model()).await.unwrap();
    let first = store.migration_pending(new.model(), 1).await.unwrap();
    let v = new.embed(&[first[0].1.clone()]).await.unwrap();
    store
        .migration_put(new.model(), &[(first[0].0.clone(), v[0].clone())])
        .await
        .unwrap();
    assert!(
        store.migration_switch(new.model()).await.is_err(),
        "switch with facts missing"
    );
    assert_eq!(store.pinned().await.unwrap(), pinned_model());
    let q = query("acme", "free returns for premium customers");
    assert_eq!(m.retrieve(&q, t0()).await.unwrap().hits.len(), 2);
    assert!(matches!(
        m_new.retrieve(&q, t0()).await,
        Err(MemoryError::EmbeddingMismatch { .. })
    ));
    // Rerun to completion: continues where it stopped.
    let done = m.migrate(&new, 1).await.unwrap();
    assert_eq!(done, 2);
    assert_eq!(store.pinned().await.unwrap(), *new.model());
    assert!(matches!(
        m.retrieve(&q, t0()).await,
        Err(MemoryError::EmbeddingMismatch { .. })
    ));
    let hits = m_new.retrieve(&q, t0()).await.unwrap().hits;
    assert_eq!(hits.len(), 2);
    assert_eq!(hits[0].fact.text, "Premium customers get free returns");
    assert_eq!(
        m_new
            .retrieve(&query("other", "invoices"), t0())
            .await
            .unwrap()
            .hits
            .len(),
        1
    );
}
