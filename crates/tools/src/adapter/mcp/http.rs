//! The HTTP client under rmcp's Streamable HTTP transport: reqwest (or rmcp's OAuth wrapper
//! around it) plus one ordering rule.
//!
//! After the legacy handshake the transport opens the session's standalone GET stream in a
//! background task and sends the next POST without waiting for it. A server may then route a
//! POST's response, or a request of its own, to whichever stream exists when it answers: if the
//! GET is not open yet, the response is held for a stream the client opens later, in whatever
//! order the two raced (the conformance suite's `sse-retry` failed 5 runs of 9 that way). So the
//! first POST after `notifications/initialized` waits until that GET has been answered (opened,
//! or refused with 405), at most `STANDALONE_WAIT`; nothing else changes.

use reqwest::header::{HeaderName, HeaderValue};
use rmcp::model::{ClientJsonRpcMessage, ClientNotification};
use rmcp::transport::common::client_side_sse::BoxedSseResponse;
use rmcp::transport::streamable_http_client::{
    StreamableHttpClient, StreamableHttpError, StreamableHttpPostResponse,
    StreamableHttpResponseLimits,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How long a POST waits for the standalone stream to be answered before going ahead.
const STANDALONE_WAIT: Duration = Duration::from_secs(5);

/// `C` with the standalone stream opened before the session's first request.
#[derive(Clone)]
pub struct Ordered<C> {
    inner: C,
    /// True from the `initialized` notification until the standalone GET is answered.
    pending: Arc<watch::Sender<bool>>,
}

impl<C> Ordered<C> {
    /// Wraps `inner`.
    pub fn new(inner: C) -> Self {
        Self {
            inner,
            pending: Arc::new(watch::channel(false).0),
        }
    }

    async fn before_post(&self) {
        let mut rx = self.pending.subscribe();
        let _ = tokio::time::timeout(STANDALONE_WAIT, rx.wait_for(|p| !p)).await;
    }

    fn after_post<T, E: std::error::Error + Send + Sync + 'static>(
        &self,
        message: &ClientJsonRpcMessage,
        session: bool,
        result: &Result<T, StreamableHttpError<E>>,
    ) {
        let initialized = matches!(
            message,
            ClientJsonRpcMessage::Notification(n)
                if matches!(n.notification, ClientNotification::InitializedNotification(_))
        );
        // Only a session gets a standalone stream.
        if initialized && session && result.is_ok() {
            self.pending.send_replace(true);
        }
    }

    fn after_get(&self, resuming: bool) {
        if !resuming {
            self.pending.send_replace(false);
        }
    }
}

impl<C: StreamableHttpClient + Sync> StreamableHttpClient for Ordered<C> {
    type Error = C::Error;

    async fn post_message(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<StreamableHttpPostResponse, StreamableHttpError<Self::Error>> {
        self.before_post().await;
        let session = session_id.is_some();
        let out = self
            .inner
            .post_message(
                uri,
                message.clone(),
                session_id,
                auth_header,
                custom_headers,
            )
            .await;
        self.after_post(&message, session, &out);
        out
    }

    async fn post_message_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> Result<StreamableHttpPostResponse, StreamableHttpError<Self::Error>> {
        self.before_post().await;
        let session = session_id.is_some();
        let out = self
            .inner
            .post_message_with_max_sse_event_size(
                uri,
                message.clone(),
                session_id,
                auth_header,
                custom_headers,
                max_sse_event_size,
            )
            .await;
        self.after_post(&message, session, &out);
        out
    }

    async fn post_message_with_response_limits(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        limits: StreamableHttpResponseLimits,
    ) -> Result<StreamableHttpPostResponse, StreamableHttpError<Self::Error>> {
        self.before_post().await;
        let session = session_id.is_some();
        let out = self
            .inner
            .post_message_with_response_limits(
                uri,
                message.clone(),
                session_id,
                auth_header,
                custom_headers,
                limits,
            )
            .await;
        self.after_post(&message, session, &out);
        out
    }

    async fn delete_session(
        &self,
        uri: Arc<str>,
        session_id: Arc<str>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<(), StreamableHttpError<Self::Error>> {
        self.inner
            .delete_session(uri, session_id, auth_header, custom_headers)
            .await
    }

    async fn get_stream(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<BoxedSseResponse, StreamableHttpError<Self::Error>> {
        let resuming = last_event_id.is_some();
        let out = self
            .inner
            .get_stream(uri, session_id, last_event_id, auth_header, custom_headers)
            .await;
        self.after_get(resuming);
        out
    }

    async fn get_stream_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> Result<BoxedSseResponse, StreamableHttpError<Self::Error>> {
        let resuming = last_event_id.is_some();
        let out = self
            .inner
            .get_stream_with_max_sse_event_size(
                uri,
                session_id,
                last_event_id,
                auth_header,
                custom_headers,
                max_sse_event_size,
            )
            .await;
        self.after_get(resuming);
        out
    }
}
