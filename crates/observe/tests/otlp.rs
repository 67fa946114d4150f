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
    let events = gated_execution_with_a_retrieval();
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
    let err = otlp::export_ended(&log, &sink, &Conventions::from_switches(None, None), 1)
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

/// Arize Phoenix (PyPI `arize-phoenix`, installed by `scripts/test-observe-peers`), a real
/// third-party OTLP receiver, on 127.0.0.1 with a throwaway working directory; killed when
/// dropped.
struct Phoenix {
    child: std::process::Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Phoenix {
    async fn start() -> Phoenix {
        // reqwest leaves the TLS provider to the program (as OtlpSink::new does).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let bin = std::env::var_os("KEEL_PHOENIX")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| {
                std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                    .join(".cache/keel-observe-peers/phoenix/bin/phoenix")
            });
        assert!(
            bin.exists(),
            "Arize Phoenix is missing at {}: run scripts/test-observe-peers (scripts/test does)",
            bin.display()
        );
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let (port, grpc) = (free(), free());
        let dir = tempfile::tempdir().unwrap();
        let child = std::process::Command::new(bin)
            .arg("serve")
            .env("PHOENIX_WORKING_DIR", dir.path())
            .env("PHOENIX_HOST", "127.0.0.1")
            .env("PHOENIX_PORT", port.to_string())
            .env("PHOENIX_GRPC_PORT", grpc.to_string())
            .env("PHOENIX_TELEMETRY_ENABLED", "false")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start Phoenix");
        let phoenix = Phoenix {
            child,
            base: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        let health = format!("{}/healthz", phoenix.base);
        poll("Phoenix to start", || async {
            let r = reqwest::get(&health).await.ok()?;
            r.status().is_success().then_some(())
        })
        .await;
        phoenix
    }

    /// The spans of the default project, as Phoenix's REST API lists them.
    async fn spans(&self) -> Vec<Value> {
        let url = format!("{}/v1/projects/default/spans?limit=1000", self.base);
        let body: Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
        body["data"].as_array().cloned().unwrap_or_default()
    }
}

impl Drop for Phoenix {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (up to two minutes; a readiness wait, not a timed assertion) until `f` gives a value.
async fn poll<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut f: impl FnMut() -> F,
) -> T {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            std::time::Instant::now() < end,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn phoenix_classifies_model_calls_tools_gates_and_retrievals() {
    let phoenix = Phoenix::start().await;
    let dir = tempfile::tempdir().unwrap();
    let log = SqliteLog::open(dir.path().join("spine.db"), Default::default()).unwrap();
    let events = gated_execution_with_a_retrieval();
    log.append(events[0].exec_id, 0, &events).await.unwrap();
    let conv = Conventions {
        latest_experimental: true,
        capture_content: true,
    };
    let sink = OtlpSink::new(
        &format!("{}/v1/traces", phoenix.base),
        Vec::new(),
        otlp::DEFAULT_TIMEOUT,
    )
    .unwrap();
    otlp::export_ended(&log, &sink, &conv, 1).await.unwrap();

    // Phoenix ingests in the background: wait for all 9 spans.
    let spans = poll("Phoenix to store the spans", || async {
        let s = phoenix.spans().await;
        (s.len() >= 9).then_some(s)
    })
    .await;
    assert_eq!(spans.len(), 9, "{spans:#?}");
    let kinds = |prefix: &str| -> Vec<String> {
        spans
            .iter()
            .filter(|s| s["name"].as_str().unwrap().starts_with(prefix))
            .map(|s| s["span_kind"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(kinds("chat "), ["LLM"; 3]);
    assert_eq!(kinds("execute_tool "), ["TOOL"; 3]);
    assert_eq!(kinds("retrieval "), ["RETRIEVER"]);
    assert_eq!(kinds("invoke_agent "), ["AGENT"]);
    let gate = kinds("gate ");
    assert_eq!(gate.len(), 1);
    assert_ne!(gate[0], "TOOL", "a gate is not a tool call");

    let attr = |s: &Value, key: &str| -> Value { s["attributes"][key].clone() };
    let chats: Vec<&Value> = spans
        .iter()
        .filter(|s| s["name"].as_str().unwrap().starts_with("chat "))
        .collect();
    for c in &chats {
        // Phoenix stores the cost Keel metered where OpenInference puts it.
        assert_eq!(attr(c, "llm.cost.total"), attr(c, "keel.cost_usd"), "{c:#}");
        assert!(attr(c, "llm.cost.total").as_f64().unwrap() > 0.0);
        assert_eq!(attr(c, "llm.model_name"), "scripted", "{c:#}");
    }
    let retrieval = spans
        .iter()
        .find(|s| s["name"].as_str().unwrap().starts_with("retrieval "))
        .unwrap();
    // Phoenix read the GenAI retrieval attributes into its own: the query and the documents.
    assert_eq!(
        attr(retrieval, "input.value"),
        "carrier policy for A-1001",
        "{retrieval:#}"
    );
    assert_eq!(attr(retrieval, "retrieval.documents.0.document.id"), "c91");
    assert_eq!(
        attr(retrieval, "retrieval.documents.0.document.score"),
        0.71
    );
    // The gate reached Phoenix with Keel's attributes only.
    let gate = spans
        .iter()
        .find(|s| s["name"].as_str().unwrap().starts_with("gate "))
        .unwrap();
    assert_eq!(attr(gate, "keel.gate.tool"), "refund");
    assert!(
        gate["attributes"]
            .as_object()
            .unwrap()
            .keys()
            .all(|k| k.starts_with("keel.")),
        "{gate:#}"
    );
}

/// Execution 4 of the fixture (3 steps, an approved gate) with a memory retrieval after the plan.
fn gated_execution_with_a_retrieval() -> Vec<keel_core::Event> {
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
    events
}
