//! Given/when/then tests of every policy of the loop, without I/O: given these events (folded),
//! when this result comes back, then these events are recorded, committed so, and this is next.

use super::*;
use keel_core::control::{KillInfo, KillKey};
use keel_core::payload::{Budget, ExecStarted};
use keel_core::{ExecId, TenantId, TraceId};
use keel_models::{FinishReason, Message, Usage};
use std::collections::BTreeMap;
use std::time::Duration;

const TENANT: &str = "acme";

fn strategy(extra: &str) -> Strategy {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("prompt.md"), "Help.").unwrap();
    let text = format!(
        "name: s
prompt: {{ file: prompt.md, version: v1 }}
model: {{ provider: scripted, name: m, script: none.yaml }}
tools: [lookup, refund, notify]
max_steps: 3
success: [ {{ answer_matches: '^done' }}, {{ tool: refund }} ]
{extra}"
    );
    Strategy::parse(&text, "s.yaml", dir.path()).unwrap()
}

fn prices() -> PriceTable {
    PriceTable::parse("[models.m]\ninput = 1.0\noutput = 1.0\n", "prices.toml").unwrap()
}

/// lookup: tier 0; notify: tier 2; refund: tier 3 (always gated).
struct Shop;

impl Contracts for Shop {
    fn facts(&self, tool: &str, args: &Value) -> Option<ToolFacts> {
        let tier = match tool {
            "lookup" => 0,
            "notify" => 2,
            "refund" => 3,
            _ => return None,
        };
        Some(ToolFacts {
            tier,
            args_valid: args.is_object(),
        })
    }

    fn idempotency_key(&self, tool: &str, args: &Value, _: &str, _: &str) -> Option<String> {
        (tool == "refund").then(|| format!("refund:{}", args["order"]))
    }
}

/// An execution's log, folded as it grows.
struct Given {
    events: Vec<Event>,
    state: ExecutionState,
    control: ControlState,
}

impl Given {
    fn started(budget: Budget) -> Self {
        let mut g = Self {
            events: Vec::new(),
            state: ExecutionState::default(),
            control: ControlState::default(),
        };
        g.then(Payload::ExecStarted(ExecStarted {
            goal: "help".into(),
            strategy_version: "s/v1".into(),
            budget,
            experiment_arm: None,
            replay_of: None,
            experiment: None,
        }));
        g
    }

    fn new() -> Self {
        Self::started(Budget::default())
    }

    fn then(&mut self, payload: Payload) -> &mut Self {
        let e = Event {
            event_id: keel_spine::clock::new_event_id(),
            exec_id: ExecId(uuid::Uuid::nil()),
            tenant: TenantId(TENANT.into()),
            seq: self.state.last_seq + 1,
            ts: chrono::DateTime::from_timestamp(0, 0).unwrap(),
            trace_id: TraceId([1; 16]),
            step_n: self.state.totals.steps,
            schema_version: keel_core::CURRENT_SCHEMA_VERSION,
            payload,
        };
        self.state.apply_mut(&e).unwrap();
        self.events.push(e);
        self
    }

    /// Records a decision's events, as the executor does.
    fn record(&mut self, d: &Decision) {
        for p in &d.record {
            self.then(p.clone());
        }
    }

    fn view(&self) -> View<'_> {
        View {
            state: &self.state,
            events: &self.events,
            control: &self.control,
        }
    }

    fn kill(&mut self, scope: &str, name: &str) {
        self.control.kills.insert(
            KillKey {
                scope: scope.into(),
                name: name.into(),
                tenant: None,
            },
            KillInfo {
                reason: "incident".into(),
                by: "ops".into(),
                at: "now".into(),
            },
        );
    }

    /// A completed step that called `lookup`.
    fn step(&mut self) -> &mut Self {
        self.then(called("model-1"))
            .then(responded("model-1", None))
            .then(Payload::StepCompleted(StepCompleted::default()))
    }
}

fn called(id: &str) -> Payload {
    Payload::ModelCalled(ModelCalled {
        call_id: id.into(),
        model: "m".into(),
        prompt_version: None,
        request_ref: None,
    })
}

fn responded(id: &str, error: Option<&str>) -> Payload {
    Payload::ModelResponded(ModelResponded {
        call_id: id.into(),
        model: "m".into(),
        tokens: Tokens {
            input: 10,
            output: 10,
        },
        cost: Cost::Known(20),
        latency_ms: 1,
        response_ref: None,
        error: error.map(str::to_owned),
    })
}

fn reply(text: Option<&str>, calls: &[(&str, Value)]) -> ChatResponse {
    ChatResponse {
        model: "m".into(),
        text: text.map(str::to_owned),
        tool_calls: calls
            .iter()
            .enumerate()
            .map(|(i, (name, args))| ToolCall {
                id: format!("c{i}"),
                name: (*name).into(),
                arguments: args.clone(),
            })
            .collect(),
        usage: Usage {
            input: 100,
            output: 5,
            cached_input: 0,
        },
        finish: FinishReason::Stop,
        latency: Duration::from_millis(3),
        raw: String::new(),
    }
}

fn request(text: &str) -> ChatRequest {
    ChatRequest {
        model: "m".into(),
        messages: vec![Message::User {
            content: text.into(),
        }],
        tools: Vec::new(),
        max_tokens: 10,
    }
}

/// Runs `f` with a decider over `strategy` whose ids count up from `id-1`.
fn with_decider<R>(strategy: &Strategy, f: impl FnOnce(&mut Decider<'_>) -> R) -> R {
    let prices = prices();
    let mut n = 0;
    let mut ids = move || {
        n += 1;
        format!("id-{n}")
    };
    let mut d = Decider::new(strategy, &prices, &Shop, &mut ids);
    f(&mut d)
}

fn types(record: &[Payload]) -> Vec<&'static str> {
    record.iter().map(|p| p.event_type().as_str()).collect()
}

fn finish_of(d: &Decision) -> (Outcome, String) {
    match &d.next {
        Next::Finish { outcome, detail } => (*outcome, detail.clone().unwrap_or_default()),
        other => panic!("expected a finish, got {other:?}"),
    }
}

#[test]
fn a_new_step_asks_the_model_then_records_the_call_held_until_the_step_commits() {
    let s = strategy("");
    let g = Given::new();
    with_decider(&s, |d| {
        let wake = d.decide(g.view(), Input::Wake);
        assert_eq!(wake.next, Next::AskModel);
        assert!(wake.record.is_empty());
        let ask = d.decide(g.view(), Input::Request(&request("help")));
        assert_eq!(types(&ask.record), ["model.called"]);
        assert_eq!(ask.commit, Commit::Hold);
        assert_eq!(
            ask.next,
            Next::CallModel {
                call_id: "model-id-1".into()
            }
        );
    });
}

#[test]
fn tool_calls_run_in_order_and_the_step_is_one_commit_at_its_end() {
    let s = strategy("durability: every_step");
    let mut g = Given::new();
    with_decider(&s, |d| {
        d.decide(g.view(), Input::Wake);
        let ask = d.decide(g.view(), Input::Request(&request("help")));
        g.record(&ask);
        let r = reply(
            Some("look it up"),
            &[("lookup", json!({"o": 1})), ("lookup", json!({"o": 2}))],
        );
        let first = d.decide(g.view(), Input::Reply(Ok((&r, Some("sha256:x")))));
        assert_eq!(types(&first.record), ["model.responded", "plan.proposed"]);
        assert_eq!(first.commit, Commit::Hold);
        assert!(
            matches!(&first.next, Next::CallTool { call, after_gate: false } if call.arguments == json!({"o": 1}))
        );
        g.record(&first);
        let second = d.decide(
            g.view(),
            Input::Tool {
                call_id: "t1",
                escalate: None,
            },
        );
        assert!(second.record.is_empty());
        assert!(
            matches!(&second.next, Next::CallTool { call, .. } if call.arguments == json!({"o": 2}))
        );
        let end = d.decide(
            g.view(),
            Input::Tool {
                call_id: "t2",
                escalate: None,
            },
        );
        assert_eq!(types(&end.record), ["step.completed"]);
        assert_eq!(
            end.commit,
            Commit::Durable,
            "every_step: durable at the step's end"
        );
        assert_eq!(end.next, Next::Wake);
    });
    // Under before_effects the step's commit does not wait for the disk.
    let s = strategy("durability: before_effects");
    let mut g = Given::new();
    with_decider(&s, |d| {
        d.decide(g.view(), Input::Wake);
        g.record(&d.decide(g.view(), Input::Request(&request("help"))));
        let r = reply(None, &[("lookup", json!({}))]);
        g.record(&d.decide(g.view(), Input::Reply(Ok((&r, None)))));
        let end = d.decide(
            g.view(),
            Input::Tool {
                call_id: "t1",
                escalate: None,
            },
        );
        assert_eq!(end.commit, Commit::Buffered);
    });
}

#[test]
fn an_answer_finishes_with_its_outcome_evaluated_against_the_criteria() {
    let s = strategy("");
    for (text, want) in [
        ("done: shipped", Outcome::Success),
        ("no idea", Outcome::Failure),
    ] {
        let mut g = Given::new();
        with_decider(&s, |d| {
            d.decide(g.view(), Input::Wake);
            g.record(&d.decide(g.view(), Input::Request(&request("help"))));
            let r = reply(Some(text), &[]);
            let answered = d.decide(g.view(), Input::Reply(Ok((&r, None))));
            assert_eq!(
                types(&answered.record),
                ["model.responded", "step.completed"]
            );
            assert_eq!(finish_of(&answered), (want, text.to_owned()));
        });
    }
}

#[test]
fn limits_end_the_execution_with_their_own_outcomes() {
    // Given max_steps (3) completed steps, when a step would start, then max_steps.
    let s = strategy("");
    let mut g = Given::new();
    g.step().step().step();
    with_decider(&s, |d| {
        let (outcome, why) = finish_of(&d.decide(g.view(), Input::Wake));
        assert_eq!(outcome, Outcome::MaxSteps);
        assert!(why.contains("max_steps 3"), "{why}");
    });
    // Given a token budget already used, then budget_exhausted.
    let mut g = Given::started(Budget {
        max_tokens: Some(20),
        ..Budget::default()
    });
    g.step();
    with_decider(&s, |d| {
        let (outcome, why) = finish_of(&d.decide(g.view(), Input::Wake));
        assert_eq!(outcome, Outcome::BudgetExhausted);
        assert!(why.contains("20 token budget"), "{why}");
    });
    // Given a cost budget already spent, then budget_exhausted.
    let mut g = Given::started(Budget {
        max_cost_micros: Some(20),
        ..Budget::default()
    });
    g.step();
    with_decider(&s, |d| {
        let (outcome, why) = finish_of(&d.decide(g.view(), Input::Wake));
        assert_eq!(outcome, Outcome::BudgetExhausted);
        assert!(why.contains("µUSD budget"), "{why}");
    });
}

#[test]
fn a_model_call_that_could_cross_the_cost_budget_is_never_made() {
    let s = strategy("");
    let g = Given::started(Budget {
        max_cost_micros: Some(50),
        ..Budget::default()
    });
    with_decider(&s, |d| {
        assert_eq!(d.decide(g.view(), Input::Wake).next, Next::AskModel);
        let big = request(&"x".repeat(10_000));
        let refused = d.decide(g.view(), Input::Request(&big));
        assert!(
            refused.record.is_empty(),
            "no model.called for a call not made"
        );
        assert_eq!(finish_of(&refused).0, Outcome::BudgetExhausted);
    });
}

#[test]
fn kill_switches_end_the_execution_or_refuse_the_tool() {
    let s = strategy("");
    for (scope, name) in [("tenant", TENANT), ("strategy", "s")] {
        let mut g = Given::new();
        g.kill(scope, name);
        with_decider(&s, |d| {
            let (outcome, why) = finish_of(&d.decide(g.view(), Input::Wake));
            assert_eq!(outcome, Outcome::Killed);
            assert!(why.contains("incident"), "{why}");
        });
    }
    // A switched-off tool is refused with an event; the step goes on with the next call.
    let mut g = Given::new();
    g.kill("tool", "lookup");
    with_decider(&s, |d| {
        d.decide(g.view(), Input::Wake);
        g.record(&d.decide(g.view(), Input::Request(&request("help"))));
        let r = reply(None, &[("lookup", json!({})), ("notify", json!({}))]);
        let decision = d.decide(g.view(), Input::Reply(Ok((&r, None))));
        assert_eq!(
            types(&decision.record),
            ["model.responded", "tool.called", "tool.result"]
        );
        let Payload::ToolResult(res) = &decision.record[2] else {
            panic!()
        };
        assert_eq!(res.status, ToolStatus::Refused);
        assert!(res.errors[0].contains("kill-switch: tool lookup is off"));
        assert!(matches!(&decision.next, Next::CallTool { call, .. } if call.name == "notify"));
    });
}

#[test]
fn a_tool_the_strategy_does_not_offer_is_rejected_not_run() {
    let s = strategy("");
    let mut g = Given::new();
    with_decider(&s, |d| {
        d.decide(g.view(), Input::Wake);
        g.record(&d.decide(g.view(), Input::Request(&request("help"))));
        let r = reply(None, &[("wire_money", json!({}))]);
        let decision = d.decide(g.view(), Input::Reply(Ok((&r, None))));
        assert_eq!(
            types(&decision.record),
            [
                "model.responded",
                "tool.called",
                "tool.result",
                "step.completed"
            ]
        );
        let Payload::ToolResult(res) = &decision.record[2] else {
            panic!()
        };
        assert_eq!(res.status, ToolStatus::Rejected);
        assert_eq!(decision.next, Next::Wake);
    });
}

#[test]
fn a_tier_3_call_opens_a_gate_and_refuses_the_steps_later_calls() {
    let s = strategy("");
    let mut g = Given::new();
    with_decider(&s, |d| {
        d.decide(g.view(), Input::Wake);
        g.record(&d.decide(g.view(), Input::Request(&request("help"))));
        let r = reply(
            None,
            &[("refund", json!({"order": "A-1"})), ("lookup", json!({}))],
        );
        let decision = d.decide(g.view(), Input::Reply(Ok((&r, None))));
        assert_eq!(
            types(&decision.record),
            ["model.responded", "tool.called", "tool.result"],
            "the later lookup is refused"
        );
        let Next::OpenGate {
            action,
            tier,
            reason,
            ..
        } = &decision.next
        else {
            panic!("{:?}", decision.next)
        };
        assert_eq!(*tier, 3);
        assert_eq!(action["tool"], "refund");
        assert_eq!(action["idempotency_key"], "refund:\"A-1\"");
        assert!(reason.contains("always pass a gate"), "{reason}");
    });
}

#[test]
fn a_demoted_strategy_gates_what_its_tier_ran_alone_and_review_samples_tier_2() {
    // Tier 2 runs alone under max_autonomous_tier 2; sampled for review at rate 1.
    let s = strategy("max_autonomous_tier: 2\napproval: { review_rate: 1.0 }");
    let mut g = Given::new();
    with_decider(&s, |d| {
        d.decide(g.view(), Input::Wake);
        g.record(&d.decide(g.view(), Input::Request(&request("help"))));
        let r = reply(None, &[("notify", json!({}))]);
        let run = d.decide(g.view(), Input::Reply(Ok((&r, None))));
        assert!(matches!(&run.next, Next::CallTool { call, .. } if call.name == "notify"));
        g.record(&run);
        let after = d.decide(
            g.view(),
            Input::Tool {
                call_id: "t1",
                escalate: None,
            },
        );
        assert_eq!(types(&after.record), ["review.sampled", "step.completed"]);
    });
    // Demoted to tier 1: the same call waits for a person.
    let mut g = Given::new();
    g.control.demotions.insert(
        s.version.clone(),
        keel_core::control::Demotion {
            max_autonomous_tier: 1,
            rejection_rate: 0.5,
            sample: 10,
            at: "now".into(),
        },
    );
    with_decider(&s, |d| {
        d.decide(g.view(), Input::Wake);
        g.record(&d.decide(g.view(), Input::Request(&request("help"))));
        let r = reply(None, &[("notify", json!({}))]);
        let decision = d.decide(g.view(), Input::Reply(Ok((&r, None))));
        assert!(
            matches!(&decision.next, Next::OpenGate { tier: 2, reason, .. } if reason.contains("maximum autonomous tier 1"))
        );
    });
}

#[test]
fn arguments_that_break_the_schema_never_reach_a_gate() {
    let s = strategy("");
    let mut g = Given::new();
    with_decider(&s, |d| {
        d.decide(g.view(), Input::Wake);
        g.record(&d.decide(g.view(), Input::Request(&request("help"))));
        let r = reply(None, &[("refund", json!("not an object"))]);
        let decision = d.decide(g.view(), Input::Reply(Ok((&r, None))));
        assert!(
            matches!(&decision.next, Next::CallTool { call, .. } if call.name == "refund"),
            "the contract layer rejects it with an event: {:?}",
            decision.next
        );
    });
}

#[test]
fn a_tools_escalation_opens_a_gate() {
    let s = strategy("");
    let mut g = Given::new();
    with_decider(&s, |d| {
        d.decide(g.view(), Input::Wake);
        g.record(&d.decide(g.view(), Input::Request(&request("help"))));
        let r = reply(None, &[("lookup", json!({})), ("lookup", json!({"n": 2}))]);
        g.record(&d.decide(g.view(), Input::Reply(Ok((&r, None)))));
        let action = json!({"tool": "lookup", "args": {}});
        let decision = d.decide(
            g.view(),
            Input::Tool {
                call_id: "t1",
                escalate: Some((&action, 0, "timed out 3 times")),
            },
        );
        assert_eq!(types(&decision.record), ["tool.called", "tool.result"]);
        assert!(
            matches!(&decision.next, Next::OpenGate { reason, .. } if reason == "escalated by the tool's failure policy: timed out 3 times")
        );
    });
}

fn at_gate(verdict: Verdict) -> Given {
    let mut g = Given::new();
    g.then(called("model-1"))
        .then(responded("model-1", None))
        .then(Payload::GateRequested(GateRequested {
            gate_id: "g1".into(),
            action: json!({"tool": "refund", "args": {"order": "A-1"}}),
            consequence_tier: 3,
            evidence_pack: json!({}),
            reason: "tier 3".into(),
            queue: "default".into(),
            deadline_ms: None,
            expire_after_ms: None,
            during_call: None,
            elicitation: None,
        }))
        .then(Payload::GateDecided(GateDecided {
            gate_id: "g1".into(),
            approver: "ann".into(),
            verdict,
            reason: "looks wrong".into(),
            latency_ms: 5,
            input: None,
        }));
    g
}

#[test]
fn a_gates_decision_runs_the_approved_action_or_records_the_refusal() {
    let s = strategy("");
    // Approved: the action runs once, after the gate; then the step completes.
    let mut g = at_gate(Verdict::Approve);
    with_decider(&s, |d| {
        let run = d.decide(g.view(), Input::Wake);
        assert!(
            matches!(&run.next, Next::CallTool { call, after_gate: true } if call.name == "refund" && call.arguments == json!({"order": "A-1"}))
        );
        g.record(&run);
        let end = d.decide(
            g.view(),
            Input::Tool {
                call_id: "t1",
                escalate: None,
            },
        );
        assert_eq!(types(&end.record), ["step.completed"]);
        assert!(
            matches!(&end.record[0], Payload::StepCompleted(c) if c.summary.as_deref() == Some("approved by ann: called refund"))
        );
    });
    // Rejected or expired: refused with the reason, which the model sees next.
    for verdict in [Verdict::Reject, Verdict::Expired] {
        let g = at_gate(verdict);
        with_decider(&s, |d| {
            let d = d.decide(g.view(), Input::Wake);
            assert_eq!(
                types(&d.record),
                ["tool.called", "tool.result", "step.completed"]
            );
            let Payload::ToolResult(r) = &d.record[1] else {
                panic!()
            };
            assert_eq!(r.status, ToolStatus::Rejected);
            assert!(r.errors[0].contains("looks wrong"));
            assert_eq!(d.next, Next::Wake);
        });
    }
    // Approved, but the tool was switched off while the gate waited: not run.
    let mut g = at_gate(Verdict::Approve);
    g.kill("tool", "refund");
    with_decider(&s, |d| {
        let d = d.decide(g.view(), Input::Wake);
        let Payload::ToolResult(r) = &d.record[1] else {
            panic!()
        };
        assert_eq!(r.status, ToolStatus::Refused);
        assert!(
            matches!(&d.record[2], Payload::StepCompleted(c) if c.summary.as_deref().unwrap().starts_with("approved by ann but not run"))
        );
    });
}

#[test]
fn malformed_replies_are_asked_again_and_end_in_error_after_three_in_a_row() {
    let s = strategy("");
    let bad = ModelFailure {
        message: "not JSON".into(),
        recoverable: true,
        usage: Default::default(),
    };
    let mut g = Given::new();
    with_decider(&s, |d| {
        for n in 1..=3 {
            assert_eq!(d.decide(g.view(), Input::Wake).next, Next::AskModel);
            g.record(&d.decide(g.view(), Input::Request(&request("help"))));
            let decision = d.decide(g.view(), Input::Reply(Err(&bad)));
            assert_eq!(
                types(&decision.record),
                ["model.responded", "step.completed"]
            );
            g.record(&decision);
            if n < 3 {
                assert_eq!(decision.next, Next::Wake);
            } else {
                let (outcome, why) = finish_of(&decision);
                assert_eq!(outcome, Outcome::Error);
                assert!(why.starts_with("3 malformed replies in a row"), "{why}");
            }
        }
    });
    // The count is read from the log: a resumed execution goes on counting, and a usable reply
    // resets it.
    let mut g = Given::new();
    g.then(called("a"))
        .then(responded("a", Some("bad")))
        .then(Payload::StepCompleted(StepCompleted::default()))
        .then(called("b"))
        .then(responded("b", Some("bad")))
        .then(Payload::StepCompleted(StepCompleted::default()));
    assert_eq!(malformed_in_a_row(&g.events), 2);
    g.step();
    assert_eq!(malformed_in_a_row(&g.events), 0);
    // A failure that is not a malformed reply ends the execution at once.
    let g = Given::new();
    with_decider(&s, |d| {
        d.decide(g.view(), Input::Wake);
        let down = ModelFailure {
            message: "401 unauthorized".into(),
            recoverable: false,
            usage: Default::default(),
        };
        let decision = d.decide(g.view(), Input::Reply(Err(&down)));
        assert_eq!(types(&decision.record), ["model.responded"]);
        assert_eq!(finish_of(&decision).0, Outcome::Error);
    });
}

#[test]
fn a_distillation_never_keeps_an_answer_from_finishing() {
    let s = strategy("memory: { enabled: true, distill: true }");
    let mut g = Given::new();
    with_decider(&s, |d| {
        d.decide(g.view(), Input::Wake);
        g.record(&d.decide(g.view(), Input::Request(&request("help"))));
        let r = reply(Some("done: it shipped"), &[]);
        let answered = d.decide(g.view(), Input::Reply(Ok((&r, None))));
        assert_eq!(answered.next, Next::Distil);
        g.record(&answered);
        // Whatever the distillation recorded (here: that it failed), the answer finishes.
        g.then(Payload::DistillFailed(DistillFailed {
            call_id: None,
            written: 0,
            reason: "the distiller is down".into(),
        }));
        assert_eq!(
            finish_of(&d.decide(g.view(), Input::Distilled)),
            (Outcome::Success, "done: it shipped".to_owned())
        );
    });
    // A crash during the distillation: the call is closed as failed (unmetered), never answered.
    let mut g = Given::new();
    g.then(called("model-1"))
        .then(responded("model-1", None))
        .then(Payload::StepCompleted(StepCompleted::default()))
        .then(called("distill-1"));
    with_decider(&s, |d| {
        let closed = d.decide(g.view(), Input::Wake);
        assert_eq!(
            types(&closed.record),
            ["model.responded", "memory.distill_failed"]
        );
        let Payload::ModelResponded(r) = &closed.record[0] else {
            panic!()
        };
        assert_eq!((r.call_id.as_str(), r.cost), ("distill-1", Cost::ZERO));
        assert_eq!(closed.next, Next::Wake);
    });
}

#[test]
fn a_resumed_execution_closes_what_the_crash_left_open() {
    let s = strategy("");
    // A step cut after the model answered: closed, then a new step.
    let mut g = Given::new();
    g.then(called("model-1")).then(responded("model-1", None));
    with_decider(&s, |d| {
        let d = d.decide(g.view(), Input::Wake);
        assert_eq!(types(&d.record), ["step.completed"]);
        assert_eq!(d.next, Next::Wake);
    });
    // A tool call without a result: the ledger settles it, never a blind re-run.
    let mut g = Given::new();
    g.then(called("model-1"))
        .then(responded("model-1", None))
        .then(Payload::ToolCalled(ToolCalled {
            call_id: "t1".into(),
            tool: "refund".into(),
            args: json!({}),
            idempotency_key: Some("k".into()),
            est_cost: Cost::ZERO,
            attempt: 1,
        }));
    with_decider(&s, |d| {
        assert_eq!(d.decide(g.view(), Input::Wake).next, Next::ResolvePending);
        let resolved = d.decide(g.view(), Input::Resolved);
        assert_eq!(types(&resolved.record), ["step.completed"]);
    });
    // A model call without a reply: asked again under the same call id, not recorded twice.
    let mut g = Given::new();
    g.then(called("model-7"));
    with_decider(&s, |d| {
        assert_eq!(d.decide(g.view(), Input::Wake).next, Next::AskModel);
        let ask = d.decide(g.view(), Input::Request(&request("help")));
        assert!(ask.record.is_empty());
        assert_eq!(
            ask.next,
            Next::CallModel {
                call_id: "model-7".into()
            }
        );
    });
    // Ended or waiting at a gate: nothing to do.
    let mut g = at_gate(Verdict::Approve);
    g.events.pop();
    g.state = ExecutionState::fold(&g.events).unwrap();
    with_decider(&s, |d| {
        assert_eq!(d.decide(g.view(), Input::Wake).next, Next::Stop);
    });
}

#[test]
fn review_draws_are_keyed_by_the_calls_position_so_a_resume_samples_the_same_calls() {
    let s = strategy("max_autonomous_tier: 2\napproval: { review_rate: 0.5 }");
    let sampled = |g: &Given| {
        with_decider(&s, |d| {
            d.decide(g.view(), Input::Wake);
            let mut g2 = Given {
                events: g.events.clone(),
                state: g.state.clone(),
                control: ControlState::default(),
            };
            g2.record(&d.decide(g2.view(), Input::Request(&request("help"))));
            let r = reply(None, &[("notify", json!({}))]);
            g2.record(&d.decide(g2.view(), Input::Reply(Ok((&r, None)))));
            let after = d.decide(
                g2.view(),
                Input::Tool {
                    call_id: "t1",
                    escalate: None,
                },
            );
            types(&after.record).contains(&"review.sampled")
        })
    };
    let mut seen = BTreeMap::new();
    let mut g = Given::new();
    for _ in 0..40 {
        g.step();
        let a = sampled(&g);
        assert_eq!(a, sampled(&g), "the same position draws the same");
        *seen.entry(a).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 2, "some sampled, some not: {seen:?}");
}

/// A tier-3 call in flight whose MCP server asked for input: the gate is opened during it.
fn at_gate_during_call() -> Given {
    let mut g = Given::new();
    g.then(called("model-1"))
        .then(responded("model-1", None))
        .then(Payload::ToolCalled(ToolCalled {
            call_id: "t1".into(),
            tool: "refund".into(),
            args: json!({"order": "A-1"}),
            idempotency_key: Some("refund:\"A-1\"".into()),
            est_cost: Cost::ZERO,
            attempt: 1,
        }))
        .then(Payload::GateRequested(GateRequested {
            gate_id: "g1".into(),
            action: json!({"tool": "refund", "during_call": "t1"}),
            consequence_tier: 3,
            evidence_pack: json!({}),
            reason: "the server asks".into(),
            queue: "default".into(),
            deadline_ms: None,
            expire_after_ms: None,
            during_call: Some("t1".into()),
            elicitation: Some(Elicitation {
                message: "How much?".into(),
                requested_schema: json!({"type": "object"}),
            }),
        }));
    g
}

#[test]
fn a_gate_during_a_call_never_reruns_or_regates_the_tool() {
    let s = strategy("");
    // While it waits, another driver stops: the call's owner is the one waiting.
    let mut g = at_gate_during_call();
    with_decider(&s, |d| {
        let wake = d.decide(g.view(), Input::Wake);
        assert_eq!(wake.next, Next::Stop);
        assert!(wake.record.is_empty());
    });
    // Decided, but the call's owner is gone (a driver wakes here only after a crash): the
    // call's outcome is settled through the ledger, never run again nor gated again as such.
    g.then(Payload::GateDecided(GateDecided {
        gate_id: "g1".into(),
        approver: "ann".into(),
        verdict: Verdict::Approve,
        reason: String::new(),
        latency_ms: 5,
        input: Some(json!({"approved_amount": 40})),
    }));
    assert!(g.state.pending_tool_call.is_some());
    with_decider(&s, |d| {
        let wake = d.decide(g.view(), Input::Wake);
        assert_eq!(wake.next, Next::ResolvePending);
        assert!(wake.record.is_empty());
    });
}

#[test]
fn a_call_settled_as_interrupted_that_cannot_be_repeated_safely_goes_to_a_person() {
    let s = strategy("");
    let g = at_gate_during_call();
    let action = json!({"tool": "refund", "args": {"order": "A-1"}, "idempotency_key": "k"});
    with_decider(&s, |d| {
        let next = d.decide(
            g.view(),
            Input::ResolvedToGate(&action, 3, "its outcome is unknown"),
        );
        assert!(
            matches!(&next.next, Next::OpenGate { action: a, tier: 3, reason, .. }
                if *a == action && reason.contains("outcome is unknown")),
            "{next:?}"
        );
    });
}
