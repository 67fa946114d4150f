//! The OpenAI-compatible `/v1/embeddings` provider against a real HTTP server on 127.0.0.1
//! started by the test. The server embeds with the real all-MiniLM-L6-v2, so the provider's
//! vectors must equal the local embedder's. Also: the key is taken from the secret source by the
//! name configured and sent as a bearer token but never appears in an error; 5xx is retried; a
//! wrong dimension is refused.

#![allow(clippy::unwrap_used)]

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use keel_memory::conformance::minilm;
use keel_memory::{Embedder, EmbeddingModel, MemoryError, OpenAiEmbedder};
use keel_models::http::RetryPolicy;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const KEY_VAR: &str = "KEEL_TEST_OPENAI_KEY";
const KEY: &str = "sk-test-0123456789abcdef";

fn secrets() -> BTreeMap<String, String> {
    BTreeMap::from([(KEY_VAR.to_owned(), KEY.to_owned())])
}

#[derive(Clone, Default)]
struct Server {
    /// Fail this many requests with 503 first.
    fail_first: Arc<AtomicUsize>,
    /// Authorization headers seen.
    auth: Arc<Mutex<Vec<String>>>,
    /// Return vectors of this many dimensions instead (0 = the model's).
    truncate: Arc<AtomicUsize>,
    /// Refuse every key (401).
    refuse: Arc<AtomicUsize>,
}

async fn embeddings(
    State(s): State<Server>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    s.auth.lock().unwrap().push(auth.clone());
    if auth != format!("Bearer {KEY}") || s.refuse.load(Ordering::SeqCst) > 0 {
        return (StatusCode::UNAUTHORIZED, "invalid api key").into_response();
    }
    if s.fail_first.load(Ordering::SeqCst) > 0 {
        s.fail_first.fetch_sub(1, Ordering::SeqCst);
        return (StatusCode::SERVICE_UNAVAILABLE, "busy").into_response();
    }
    let inputs: Vec<String> = body["input"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let mut vectors = minilm().embed(&inputs).await.unwrap();
    let t = s.truncate.load(Ordering::SeqCst);
    if t > 0 {
        vectors.iter_mut().for_each(|v| v.truncate(t));
    }
    // Out of order, as the API allows: the index says where each belongs.
    let data: Vec<Value> = vectors
        .into_iter()
        .enumerate()
        .rev()
        .map(|(i, v)| json!({"object": "embedding", "index": i, "embedding": v}))
        .collect();
    Json(json!({"object": "list", "data": data, "model": body["model"]})).into_response()
}

async fn serve(state: Server) -> String {
    let app = axum::Router::new()
        .route("/v1/embeddings", axum::routing::post(embeddings))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/v1")
}

fn model() -> EmbeddingModel {
    EmbeddingModel {
        name: "all-MiniLM-L6-v2".into(),
        version: "served".into(),
        dim: 384,
    }
}

fn quick() -> RetryPolicy {
    RetryPolicy {
        timeout: Duration::from_secs(30),
        max_attempts: 3,
        base_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeds_over_the_wire_with_the_key_its_secret_names() {
    let state = Server::default();
    state.fail_first.store(1, Ordering::SeqCst);
    let url = serve(state.clone()).await;
    let e = OpenAiEmbedder::new(&url, model(), Some(KEY_VAR), &secrets(), quick()).unwrap();
    let texts = vec![
        "The parcel never arrived".to_owned(),
        "The package was not delivered".to_owned(),
    ];
    let got = e.embed(&texts).await.unwrap();
    let want = minilm().embed(&texts).await.unwrap();
    for (g, w) in got.iter().zip(&want) {
        let diff = g
            .iter()
            .zip(w)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(diff < 1e-6, "max diff {diff}");
    }
    let auth = state.auth.lock().unwrap().clone();
    assert_eq!(auth.len(), 2, "one 503, retried once");
    assert!(auth.iter().all(|a| a == &format!("Bearer {KEY}")));

    state.truncate.store(100, Ordering::SeqCst);
    let err = e.embed(&texts).await.unwrap_err();
    assert!(
        matches!(
            err,
            MemoryError::Dimensions {
                want: 384,
                got: 100,
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_never_appears_in_errors() {
    let state = Server::default();
    state.refuse.store(1, Ordering::SeqCst);
    let url = serve(state).await;
    let e = OpenAiEmbedder::new(&url, model(), Some(KEY_VAR), &secrets(), quick()).unwrap();
    let err = e.embed(&["hello".to_owned()]).await.unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(text.contains("401"), "{text}");
    assert!(!text.contains(KEY), "the key leaked: {text}");
    let missing = OpenAiEmbedder::new(
        &url,
        model(),
        Some("KEEL_TEST_EMBED_UNSET_KEY"),
        &secrets(),
        quick(),
    );
    let msg = missing.err().unwrap().to_string();
    assert!(msg.contains("KEEL_TEST_EMBED_UNSET_KEY"), "{msg}");
}
