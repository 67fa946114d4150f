//! proptest strategies: arbitrary events of every type (for encoding round-trips) and arbitrary
//! legal executions (for fold properties and storage tests).

use crate::builder::{ExecBuilder, exec_id};
use chrono::DateTime;
use keel_core::cost::{Cost, Tokens};
use keel_core::payload::*;
use keel_core::{CURRENT_SCHEMA_VERSION, Event, EventId, EventType, ExecId, TenantId, TraceId};
use proptest::prelude::*;
use serde_json::Value;
use uuid::Uuid;

/// Any JSON value, floats finite (JSON has no NaN).
pub fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e12f64..1e12).prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn arb_cost() -> impl Strategy<Value = Cost> {
    prop_oneof![Just(Cost::Unknown), any::<u64>().prop_map(Cost::Known)]
}

fn arb_tokens() -> impl Strategy<Value = Tokens> {
    (any::<u64>(), any::<u64>()).prop_map(|(input, output)| Tokens { input, output })
}

fn text() -> impl Strategy<Value = String> {
    ".{0,16}"
}

fn arb_outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        Just(Outcome::Success),
        Just(Outcome::Failure),
        Just(Outcome::BudgetExhausted),
        Just(Outcome::MaxSteps),
        Just(Outcome::Killed),
        Just(Outcome::Error),
    ]
}

fn arb_status() -> impl Strategy<Value = ToolStatus> {
    prop_oneof![
        Just(ToolStatus::Ok),
        Just(ToolStatus::Error),
        Just(ToolStatus::Rejected),
        Just(ToolStatus::InvalidOutput),
        Just(ToolStatus::Refused),
    ]
}

fn arb_transition() -> impl Strategy<Value = Transition> {
    (text(), proptest::option::of(text())).prop_map(|(reason, by)| Transition { reason, by })
}

fn arb_trace_id() -> impl Strategy<Value = TraceId> {
    any::<[u8; 16]>().prop_map(|mut b| {
        b[15] |= 1;
        TraceId(b)
    })
}

/// A payload of the given type with arbitrary contents.
pub fn arb_payload(ty: EventType) -> BoxedStrategy<Payload> {
    use EventType as T;
    match ty {
        T::ExecStarted => (
            text(),
            text(),
            proptest::option::of(any::<u64>()),
            proptest::option::of(any::<u32>()),
            proptest::option::of(any::<u64>()),
            proptest::option::of(text()),
        )
            .prop_map(|(goal, strategy_version, c, s, t, arm)| {
                Payload::ExecStarted(ExecStarted {
                    goal,
                    strategy_version,
                    budget: Budget {
                        max_cost_micros: c,
                        max_steps: s,
                        max_tokens: t,
                    },
                    experiment_arm: arm.clone(),
                    replay_of: None,
                    experiment: arm.as_ref().map(|a| keel_core::experiment::Assignment {
                        experiment: "e".into(),
                        arm: a.clone(),
                        bucket: 42,
                        unit_key: "00ff00ff00ff00ff".into(),
                    }),
                })
            })
            .boxed(),
        T::PlanProposed => (prop::collection::vec(text(), 0..4), text(), text())
            .prop_map(|(steps, model, prompt_version)| {
                Payload::PlanProposed(PlanProposed {
                    steps,
                    model,
                    prompt_version,
                })
            })
            .boxed(),
        T::ModelCalled => (
            text(),
            text(),
            proptest::option::of(text()),
            proptest::option::of(text()),
        )
            .prop_map(|(call_id, model, prompt_version, request_ref)| {
                Payload::ModelCalled(ModelCalled {
                    call_id,
                    model,
                    prompt_version,
                    request_ref,
                })
            })
            .boxed(),
        T::ModelResponded => (
            text(),
            text(),
            arb_tokens(),
            arb_cost(),
            any::<u64>(),
            (proptest::option::of(text()), proptest::option::of(text())),
        )
            .prop_map(
                |(call_id, model, tokens, cost, latency_ms, (response_ref, error))| {
                    Payload::ModelResponded(ModelResponded {
                        call_id,
                        model,
                        tokens,
                        cost,
                        latency_ms,
                        response_ref,
                        error,
                    })
                },
            )
            .boxed(),
        T::MemoryRetrieved => (
            text(),
            prop::collection::vec((text(), -1e3f64..1e3, arb_json()), 0..3),
            text(),
        )
            .prop_map(|(query, chunks, memory_version)| {
                Payload::MemoryRetrieved(MemoryRetrieved {
                    query,
                    chunks: chunks
                        .into_iter()
                        .map(|(id, score, provenance)| RetrievedChunk {
                            id,
                            score,
                            provenance,
                        })
                        .collect(),
                    memory_version,
                })
            })
            .boxed(),
        T::MemoryWritten => (text(), proptest::option::of(text()), text(), arb_json())
            .prop_map(|(memory_id, subject, volatility, provenance)| {
                Payload::MemoryWritten(MemoryWritten {
                    memory_id,
                    subject,
                    volatility,
                    provenance,
                })
            })
            .boxed(),
        T::DistillFailed => (proptest::option::of(text()), any::<u32>(), text())
            .prop_map(|(call_id, written, reason)| {
                Payload::DistillFailed(DistillFailed {
                    call_id,
                    written,
                    reason,
                })
            })
            .boxed(),
        T::ToolCalled => (
            text(),
            text(),
            arb_json(),
            proptest::option::of(text()),
            arb_cost(),
            any::<u32>(),
        )
            .prop_map(
                |(call_id, tool, args, idempotency_key, est_cost, attempt)| {
                    Payload::ToolCalled(ToolCalled {
                        call_id,
                        tool,
                        args,
                        idempotency_key,
                        est_cost,
                        attempt,
                    })
                },
            )
            .boxed(),
        T::ToolResult => (
            (text(), text(), arb_status(), proptest::option::of(text())),
            (arb_cost(), any::<u64>(), proptest::option::of(text())),
            prop::collection::vec(text(), 0..3),
        )
            .prop_map(
                |(
                    (call_id, tool, status, output_ref),
                    (actual_cost, latency_ms, error_class),
                    errors,
                )| {
                    Payload::ToolResult(ToolResult {
                        call_id,
                        tool,
                        status,
                        output_ref,
                        actual_cost,
                        latency_ms,
                        error_class,
                        errors,
                    })
                },
            )
            .boxed(),
        T::GateRequested => (
            (text(), arb_json(), 0u8..4, arb_json()),
            (text(), text(), proptest::option::of(any::<u64>())),
            proptest::option::of(any::<u64>()),
        )
            .prop_map(
                |(
                    (gate_id, action, consequence_tier, evidence_pack),
                    (reason, queue, deadline_ms),
                    expire_after_ms,
                )| {
                    Payload::GateRequested(GateRequested {
                        gate_id,
                        action,
                        consequence_tier,
                        evidence_pack,
                        reason,
                        queue,
                        deadline_ms,
                        expire_after_ms,
                        during_call: None,
                        elicitation: None,
                    })
                },
            )
            .boxed(),
        T::GateEscalated => (text(), text(), any::<u64>(), any::<u64>())
            .prop_map(|(gate_id, queue, deadline_ms, waited_ms)| {
                Payload::GateEscalated(GateEscalated {
                    gate_id,
                    queue,
                    deadline_ms,
                    waited_ms,
                })
            })
            .boxed(),
        T::ReviewSampled => (text(), text(), 0u8..4, 0.0f64..1.0)
            .prop_map(|(call_id, tool, consequence_tier, rate)| {
                Payload::ReviewSampled(ReviewSampled {
                    call_id,
                    tool,
                    consequence_tier,
                    rate,
                })
            })
            .boxed(),
        T::KillSet => (text(), text(), proptest::option::of(text()), text(), text())
            .prop_map(|(scope, name, tenant, reason, by)| {
                Payload::KillSet(KillSet {
                    scope,
                    name,
                    tenant,
                    reason,
                    by,
                })
            })
            .boxed(),
        T::KillCleared => (text(), text(), proptest::option::of(text()), text())
            .prop_map(|(scope, name, tenant, by)| {
                Payload::KillCleared(KillCleared {
                    scope,
                    name,
                    tenant,
                    by,
                })
            })
            .boxed(),
        T::StrategyDemoted => (text(), 0u8..4, 0.0f64..1.0, any::<u32>())
            .prop_map(
                |(strategy_version, max_autonomous_tier, rejection_rate, sample)| {
                    Payload::StrategyDemoted(StrategyDemoted {
                        strategy_version,
                        max_autonomous_tier,
                        rejection_rate,
                        sample,
                    })
                },
            )
            .boxed(),
        T::StrategyCertified => (text(), text(), text())
            .prop_map(|(strategy_version, by, reason)| {
                Payload::StrategyCertified(StrategyCertified {
                    strategy_version,
                    by,
                    reason,
                })
            })
            .boxed(),
        T::SubjectErased => (
            text(),
            text(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            text(),
        )
            .prop_map(
                |(digest, tenant, executions, blobs_deleted, facts_erased, by)| {
                    Payload::SubjectErased(SubjectErased {
                        digest,
                        tenant,
                        executions,
                        blobs_deleted,
                        facts_erased,
                        by,
                    })
                },
            )
            .boxed(),
        T::ExperimentRegistered => (text(), text(), 0u32..10_000, any::<bool>())
            .prop_map(|(name, by, from, tenants)| {
                use keel_core::experiment::*;
                let t0 = DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default();
                Payload::ExperimentRegistered(ExperimentRegistered {
                    experiment: Experiment {
                        salt: format!("{name}-salt"),
                        name,
                        unit: Unit::Subject,
                        arms: vec![
                            Arm {
                                name: "control".into(),
                                strategy: "s1".into(),
                                weight: 1,
                                holdback: true,
                            },
                            Arm {
                                name: "new".into(),
                                strategy: "s2".into(),
                                weight: 3,
                                holdback: false,
                            },
                        ],
                        primary_metric: Metric::CostPerSuccess,
                        guardrails: vec![Guardrail {
                            metric: GuardMetric::P95Cost,
                            direction: Direction::AtMost,
                            bound: 0.25,
                            on_breach: OnBreach::StopArm,
                        }],
                        min_sample: 100,
                        start: t0,
                        end: t0 + chrono::Duration::days(14),
                        layer: "default".into(),
                        traffic_buckets: 10_000 - from,
                        tenants: tenants.then(|| vec!["acme".into()]),
                        tier_cap: 1,
                    },
                    layer_from: from,
                    layer_to: 10_000,
                    by,
                })
            })
            .boxed(),
        T::ExperimentStopped => (text(), proptest::option::of(text()), text(), text())
            .prop_map(|(name, arm, reason, by)| {
                Payload::ExperimentStopped(keel_core::experiment::ExperimentStopped {
                    name,
                    arm,
                    reason,
                    by,
                })
            })
            .boxed(),
        T::GuardrailBreached => (text(), text(), 0u64..1_000_000)
            .prop_map(|(name, arm, sample)| {
                use keel_core::experiment::*;
                Payload::GuardrailBreached(GuardrailBreached {
                    name,
                    arm,
                    guardrail: Guardrail {
                        metric: GuardMetric::GateRejectionRate,
                        direction: Direction::AtMost,
                        bound: 0.5,
                        on_breach: OnBreach::Demote,
                    },
                    value: 0.75,
                    sample,
                })
            })
            .boxed(),
        T::ExperimentConcluded => (text(), text(), text())
            .prop_map(|(name, decision, by)| {
                Payload::ExperimentConcluded(keel_core::experiment::ExperimentConcluded {
                    name,
                    decision,
                    by,
                })
            })
            .boxed(),
        T::RetrievalRated => (
            text(),
            any::<u128>(),
            any::<u64>(),
            0u8..=3,
            text(),
            proptest::option::of(text()),
        )
            .prop_map(|(tenant, id, seq, rating, rater, note)| {
                Payload::RetrievalRated(RetrievalRated {
                    tenant,
                    exec_id: ExecId(Uuid::from_u128(id)),
                    seq,
                    rating,
                    rater,
                    note,
                })
            })
            .boxed(),
        T::FeedbackGiven => (
            text(),
            any::<u128>(),
            MIN_FEEDBACK..=MAX_FEEDBACK,
            text(),
            proptest::option::of(text()),
        )
            .prop_map(|(tenant, id, rating, rater, comment)| {
                Payload::FeedbackGiven(FeedbackGiven {
                    tenant,
                    exec_id: ExecId(Uuid::from_u128(id)),
                    rating,
                    rater,
                    comment,
                })
            })
            .boxed(),
        T::BudgetSet => (text(), any::<u64>(), any::<u8>(), any::<bool>(), text())
            .prop_map(|(tenant, monthly_micros, alarm_percent, hard_stop, by)| {
                Payload::BudgetSet(BudgetSet {
                    tenant,
                    monthly_micros,
                    alarm_percent,
                    hard_stop,
                    by,
                })
            })
            .boxed(),
        T::BudgetAlarmed => (text(), text(), any::<u64>(), any::<u64>(), any::<u8>())
            .prop_map(
                |(tenant, month, spent_micros, monthly_micros, alarm_percent)| {
                    Payload::BudgetAlarmed(BudgetAlarmed {
                        tenant,
                        month,
                        spent_micros,
                        monthly_micros,
                        alarm_percent,
                    })
                },
            )
            .boxed(),
        T::SloAlarmed => (
            text(),
            text(),
            -1e9f64..1e9,
            text(),
            -1e9f64..1e9,
            any::<u64>(),
        )
            .prop_map(|(strategy_version, metric, value, op, bound, sample)| {
                Payload::SloAlarmed(SloAlarmed {
                    strategy_version,
                    metric,
                    value,
                    op,
                    bound,
                    sample,
                })
            })
            .boxed(),
        T::GateDecided => (
            text(),
            text(),
            prop_oneof![
                Just(Verdict::Approve),
                Just(Verdict::Reject),
                Just(Verdict::Expired)
            ],
            text(),
            any::<u64>(),
        )
            .prop_map(|(gate_id, approver, verdict, reason, latency_ms)| {
                Payload::GateDecided(GateDecided {
                    gate_id,
                    approver,
                    verdict,
                    reason,
                    latency_ms,
                    input: None,
                })
            })
            .boxed(),
        T::StepCompleted => proptest::option::of(text())
            .prop_map(|summary| Payload::StepCompleted(StepCompleted { summary }))
            .boxed(),
        T::ExecSuspended => arb_transition().prop_map(Payload::ExecSuspended).boxed(),
        T::ExecResumed => arb_transition().prop_map(Payload::ExecResumed).boxed(),
        T::ExecCancelled => arb_transition().prop_map(Payload::ExecCancelled).boxed(),
        T::ExecFinished => (
            arb_outcome(),
            any::<u32>(),
            arb_tokens(),
            arb_cost(),
            arb_trace_id(),
            proptest::option::of(text()),
        )
            .prop_map(|(outcome, steps_n, tokens, cost, trace_id, detail)| {
                Payload::ExecFinished(ExecFinished {
                    outcome,
                    steps_n,
                    tokens,
                    cost,
                    trace_id,
                    detail,
                })
            })
            .boxed(),
    }
}

/// Any representable instant, with whole-second, milli, micro and nano precision all likely,
/// including years before 0 and after 9999.
pub fn arb_timestamp() -> impl Strategy<Value = DateTime<chrono::Utc>> {
    let nanos = prop_oneof![
        Just(0u32),
        (0u32..1000).prop_map(|ms| ms * 1_000_000),
        (0u32..1_000_000).prop_map(|us| us * 1_000),
        0u32..1_000_000_000,
    ];
    let secs = prop_oneof![
        4 => 1_600_000_000i64..2_000_000_000,
        1 => -70_000_000_000i64..300_000_000_000,
    ];
    (secs, nanos).prop_map(|(s, n)| DateTime::from_timestamp(s, n).unwrap_or_default())
}

/// An event of the given type with an arbitrary envelope and payload.
pub fn arb_event_of(ty: EventType) -> impl Strategy<Value = Event> {
    (
        any::<u128>(),
        any::<u128>(),
        "[a-z0-9-]{1,12}",
        any::<u64>(),
        arb_timestamp(),
        arb_trace_id(),
        any::<u32>(),
        arb_payload(ty),
    )
        .prop_map(
            |(eid, xid, tenant, seq, ts, trace_id, step_n, payload)| Event {
                event_id: EventId(Uuid::from_u128(eid)),
                exec_id: ExecId(Uuid::from_u128(xid)),
                tenant: TenantId(tenant),
                seq,
                ts,
                trace_id,
                step_n,
                schema_version: CURRENT_SCHEMA_VERSION,
                payload,
            },
        )
}

/// An event of any type.
pub fn arb_event() -> impl Strategy<Value = Event> {
    prop::sample::select(EventType::ALL).prop_flat_map(arb_event_of)
}

/// A legal execution: a random walk over what the fold allows next, driven by `choices`.
/// It may end finished, cancelled, or still in flight (suspended, at a gate, mid tool call).
pub fn arb_legal_execution() -> impl Strategy<Value = Vec<Event>> {
    (any::<u64>(), prop::collection::vec(any::<u8>(), 0..60))
        .prop_map(|(n, choices)| legal_walk(exec_id(n), &choices))
}

/// Deterministically builds a legal execution from a list of choices.
pub fn legal_walk(exec: ExecId, choices: &[u8]) -> Vec<Event> {
    #[derive(PartialEq)]
    enum At {
        Free,
        ToolPending,
        Suspended,
    }
    let mut b = ExecBuilder::new(exec, "acme").started("goal");
    let mut at = At::Free;
    for &c in choices {
        match at {
            At::ToolPending => {
                b = b.tool_result(if c % 2 == 0 {
                    ToolStatus::Ok
                } else {
                    ToolStatus::Error
                });
                at = At::Free;
            }
            At::Suspended => {
                b.push(Payload::ExecResumed(Transition {
                    reason: "worker back".into(),
                    by: None,
                }));
                at = At::Free;
            }
            At::Free => match c % 16 {
                0..=2 => b = b.model_call(u64::from(c), 10, Cost::Known(u64::from(c) * 7)),
                3 => b = b.model_call(5, 5, Cost::Unknown),
                4..=6 => {
                    b = b.tool_called("lookup");
                    at = At::ToolPending;
                }
                7..=8 => b = b.step_completed(),
                9 => b = b.plan(),
                10 => {
                    b = b.gate(if c % 32 < 16 {
                        Verdict::Approve
                    } else {
                        Verdict::Reject
                    })
                }
                11 => {
                    b.push(Payload::ExecSuspended(Transition {
                        reason: "shutdown".into(),
                        by: Some("worker-1".into()),
                    }));
                    at = At::Suspended;
                }
                12 => {
                    b.push(Payload::MemoryRetrieved(MemoryRetrieved {
                        query: "prefs".into(),
                        chunks: vec![],
                        memory_version: "m1".into(),
                    }));
                }
                13 => b = b.finished(Outcome::Success),
                14 => {
                    b.push(Payload::ExecCancelled(Transition {
                        reason: "kill-switch".into(),
                        by: Some("ops".into()),
                    }));
                }
                _ => b = b.finished(Outcome::Error),
            },
        }
        if b.events()
            .last()
            .is_some_and(|e| e.event_type().is_terminal())
        {
            return b.build();
        }
    }
    b.build()
}
