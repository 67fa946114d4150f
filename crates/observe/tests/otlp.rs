//! OTLP export against a real receiver that decodes the protobuf with the official OpenTelemetry
//! proto definitions: one trace per execution with Keel's trace id, child spans per model call,
//! tool call, retrieval and gate, GenAI attributes and `keel.*` attributes.

#![allow(clippy::unwrap_used, clippy::needless_update)]

mod common;

use keel_core::payload::{MemoryRetrieved, Payload, RetrievedChunk};
use keel_observe::otlp::{self, Conventions, OtlpSink};
use keel_spine::{EventLog, SqliteLog};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread")]
async fn spans_arrive_decoded_with_genai_and_keel_attributes() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = common::Receiver::start(dir.path());
    let log = SqliteLog::open(dir.path().join("spine.db"), Default::default()).unwrap();
    // Execution 4 of the fixture (3 steps, a gate), with a memory retrieval added after the plan.
    let spec = &common::specs()[3];
    let mut events = common::events(spec);
    let mut retrieval = events[2].clone();
    retrieval.payload = Payload::MemoryRetrieved(MemoryRetrieved {
        query: "carrier policy for A-1001".into(),
        chunks: vec![RetrievedChunk {
            id: "c91".into(),
            score: 0.71,
            provenance: json!({}),
        }],
        memory_version: "v1".into(),
    });
    retrieval.event_id = keel_core::EventId(uuid_from(99));
    events.insert(2, retrieval);
    for (i, e) in events.iter_mut().enumerate() {
        e.seq = i as u64 + 1;
    }
    log.append(events[0].exec_id, 0, &events).await.unwrap();

    let conv = Conventions {
        latest_experimental: true,
        capture_content: true,
    };
    let sink = OtlpSink::new(&receiver.endpoint, Vec::new(), otlp::DEFAULT_TIMEOUT).unwrap();
    let (next, sent) = otlp::export_ended(&log, &sink, &conv, 1).await.unwrap();
    assert_eq!((next, sent), (events.len() as u64 + 1, 1));

    let spans = receiver.spans();
    let trace = events[0].trace_id.to_string();
    assert!(
        spans.iter().all(|s| s["trace_id"] == trace.as_str()),
        "one trace, Keel's trace id"
    );
    let by_name = |prefix: &str| -> Vec<&Value> {
        spans
            .iter()
            .filter(|s| s["name"].as_str().unwrap().starts_with(prefix))
            .collect()
    };
    let root = by_name("invoke_agent");
    assert_eq!(root.len(), 1);
    let root = root[0];
    assert_eq!(root["name"], "invoke_agent s-long");
    assert_eq!(root["parent_span_id"], "");
    assert_eq!(root["resource"]["service.name"], "keel");
    assert!(root["schema_url"].as_str().unwrap().ends_with("1.42.0"));
    let a = &root["attributes"];
    assert_eq!(a["gen_ai.operation.name"], "invoke_agent");
    assert_eq!(a["keel.tenant"], "acme");
    assert_eq!(a["keel.outcome"], "success");
    assert_eq!(a["keel.steps_n"], 3);
    assert!((a["keel.cost_usd"].as_f64().unwrap() - 0.15027).abs() < 1e-12);
    let root_id = root["span_id"].as_str().unwrap();

    let chats = by_name("chat ");
    assert_eq!(chats.len(), 3);
    for (i, c) in chats.iter().enumerate() {
        assert_eq!(c["parent_span_id"], root_id);
        assert_eq!(c["kind"], 3, "CLIENT");
        let a = &c["attributes"];
        assert_eq!(a["gen_ai.operation.name"], "chat");
        assert_eq!(a["gen_ai.request.model"], "scripted");
        assert_eq!(a["gen_ai.provider.name"], "keel");
        assert!(a.get("gen_ai.system").is_none());
        assert_eq!(a["gen_ai.usage.input_tokens"], 100 * (i + 1));
        assert_eq!(a["gen_ai.usage.output_tokens"], 10);
        assert!(c["end"].as_u64().unwrap() > c["start"].as_u64().unwrap());
        // The cost where OpenInference receivers read it, and Keel's own.
        assert_eq!(a["llm.cost.total"], a["keel.cost_usd"]);
    }
    let model_cost: f64 = chats
        .iter()
        .map(|c| c["attributes"]["llm.cost.total"].as_f64().unwrap())
        .sum();
    assert!(model_cost > 0.0);
    let tools = by_name("execute_tool ");
    assert_eq!(tools.len(), 3);
    assert_eq!(tools[0]["attributes"]["gen_ai.tool.name"], "lookup_order");
    assert_eq!(tools[0]["attributes"]["keel.tool.status"], "ok");
    assert_eq!(
        tools[0]["attributes"]["gen_ai.tool.call.arguments"],
        r#"{"order_id":"A-1001"}"#
    );
    // The retrieval as the GenAI conventions define it: `retrieval {data source}`, CLIENT.
    let memory = by_name("retrieval ");
    assert_eq!(memory.len(), 1);
    assert_eq!(memory[0]["name"], "retrieval v1");
    assert_eq!(memory[0]["kind"], 3, "CLIENT");
    let a = &memory[0]["attributes"];
    assert_eq!(a["gen_ai.operation.name"], "retrieval");
    assert_eq!(a["gen_ai.data_source.id"], "v1");
    assert_eq!(a["keel.retrieval.record_count"], 1);
    assert_eq!(
        a["gen_ai.retrieval.query.text"],
        "carrier policy for A-1001"
    );
    let docs: Value =
        serde_json::from_str(a["gen_ai.retrieval.documents"].as_str().unwrap()).unwrap();
    assert_eq!(docs, json!([{"id": "c91", "score": 0.71}]));
    // A gate is an internal span with keel.* attributes only: nothing a receiver reads as a
    // tool call (or any GenAI operation).
    let gates = by_name("gate ");
    assert_eq!(gates.len(), 1);
    assert_eq!(gates[0]["kind"], 1, "INTERNAL");
    let a = gates[0]["attributes"].as_object().unwrap();
    assert!(
        a.keys().all(|k| k.starts_with("keel.")),
        "gate attributes: {a:?}"
    );
    assert_eq!(a["keel.consequence_tier"], 3);
    assert_eq!(a["keel.gate.verdict"], "approve");
    assert!(!a["keel.gate.tool"].as_str().unwrap().is_empty());
    assert_eq!(spans.len(), 1 + 3 + 3 + 1 + 1);

    // Without the opt-in: the v1.36 provider attribute and no captured content.
    let legacy = Conventions {
        latest_experimental: false,
        capture_content: false,
    };
    let spans = otlp::spans(&log.read(events[0].exec_id, 1).await.unwrap(), &legacy);
    let chat = spans.iter().find(|s| s.name.starts_with("chat")).unwrap();
    let keys: Vec<&str> = chat.attributes.iter().map(|kv| kv.key.as_str()).collect();
    assert!(keys.contains(&"gen_ai.system") && !keys.contains(&"gen_ai.provider.name"));
    // v1.36 defines no retrieval span: none is made without the opt-in.
    assert!(
        !spans
            .iter()
            .any(|s| s.name.starts_with("retrieval") || s.name.starts_with("search_memory")),
        "no memory span without the opt-in"
    );
    assert_eq!(spans.len(), 1 + 3 + 3 + 1);
    let tool = spans
        .iter()
        .find(|s| s.name.starts_with("execute_tool"))
        .unwrap();
    assert!(
        !tool
            .attributes
            .iter()
            .any(|kv| kv.key.as_str() == "gen_ai.tool.call.arguments")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_endpoint_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = common::seed(&dir.path().join("spine.db")).await;
    // A port nothing listens on: bind, take the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}/v1/traces");
    let sink = OtlpSink::new(&endpoint, Vec::new(), otlp::DEFAULT_TIMEOUT).unwrap();
    let err = otlp::export_ended(&log, &sink, &Conventions::from_env(), 1)
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&endpoint), "{err}");
}

#[test]
fn header_lists_parse_as_the_exporter_specification_writes_them() {
    assert_eq!(
        otlp::parse_headers(" Authorization=Basic%20dXNlcjpwdw%3D%3D , x-tenant = acme,,").unwrap(),
        vec![
            ("authorization".to_owned(), "Basic dXNlcjpwdw==".to_owned()),
            ("x-tenant".to_owned(), "acme".to_owned()),
        ]
    );
    assert_eq!(otlp::parse_headers("").unwrap(), vec![]);
    for (list, entry) in [
        ("a=1,secret-without-equals", 2),
        ("=v", 1),
        ("k=", 1),
        ("k=%zz", 1),
        ("k=%4", 1),
        ("bad name=v", 1),
        ("k=line%0Abreak", 1),
    ] {
        let err = otlp::parse_headers(list).unwrap_err();
        assert_eq!(err.entry, entry, "{list}");
        // The message names the entry, never its text (values are credentials).
        assert!(!err.to_string().contains("secret") && !err.to_string().contains("zz"));
    }
}

fn uuid_from(n: u64) -> uuid::Uuid {
    uuid::Uuid::from_u64_pair(0x0190_0000_0000_7000, 0x8000_0000_0000_0000 | n)
}
