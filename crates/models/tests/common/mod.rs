//! A real HTTP server on 127.0.0.1 that replays canned vendor responses in order and records
//! every request it receives, so tests can assert on both directions of the wire.

#![allow(dead_code, clippy::unwrap_used)]

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One canned reply.
#[derive(Clone)]
pub struct Canned {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
    pub delay: Duration,
}

impl Canned {
    pub fn ok(body: &str) -> Self {
        Self {
            status: 200,
            headers: vec![],
            body: body.to_owned(),
            delay: Duration::ZERO,
        }
    }
    pub fn status(status: u16, body: &str) -> Self {
        Self {
            status,
            ..Self::ok(body)
        }
    }
    pub fn header(mut self, k: &'static str, v: &str) -> Self {
        self.headers.push((k, v.to_owned()));
        self
    }
    pub fn delayed(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }
}

/// A request as the server saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub path: String,
    pub headers: HeaderMap,
    pub body: serde_json::Value,
}

#[derive(Clone, Default)]
struct Shared {
    replies: Arc<Mutex<VecDeque<Canned>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

pub struct Replay {
    pub base_url: String,
    shared: Shared,
}

impl Replay {
    pub fn requests(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }
}

async fn handle(State(s): State<Shared>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let parsed = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    s.seen.lock().unwrap().push(Seen {
        path: uri.path().to_owned(),
        headers,
        body: parsed,
    });
    let next = s.replies.lock().unwrap().pop_front();
    let Some(c) = next else {
        return Response::builder()
            .status(StatusCode::GONE)
            .body("no more canned replies".into())
            .unwrap();
    };
    tokio::time::sleep(c.delay).await;
    let mut r = Response::builder()
        .status(c.status)
        .header("content-type", "application/json");
    for (k, v) in &c.headers {
        r = r.header(*k, v);
    }
    r.body(c.body.into()).unwrap()
}

/// Starts a replay server with these replies, in order.
pub async fn start(replies: Vec<Canned>) -> Replay {
    let shared = Shared::default();
    shared.replies.lock().unwrap().extend(replies);
    let app = axum::Router::new()
        .fallback(handle)
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Replay {
        base_url: format!("http://{addr}"),
        shared,
    }
}

pub fn fixture(path: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/{path}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}
