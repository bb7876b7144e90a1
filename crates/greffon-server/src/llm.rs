//! `POST /v1/llm/infer`: the local model over HTTP, as JSON or as
//! server-sent events.

use crate::app::{App, AppState, error};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use greffon_llm::{InferOptions, InferRequest, LlmError};
use greffon_protocol::ErrorKind;
use serde::Deserialize;
use serde_json::{Value, json};
use std::convert::Infallible;
use std::sync::Arc;

pub(crate) fn routes() -> Router<Arc<App>> {
    Router::new().route("/v1/llm/infer", axum::routing::post(infer))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Body {
    prompt: String,
    #[serde(default)]
    options: Value,
    #[serde(default)]
    stream: bool,
}

fn llm_error(e: &LlmError) -> Response {
    let (status, kind) = match e {
        LlmError::InvalidOption { .. } | LlmError::PromptTooLong { .. } => {
            (StatusCode::UNPROCESSABLE_ENTITY, ErrorKind::Validation)
        }
        LlmError::Busy { .. } => (StatusCode::SERVICE_UNAVAILABLE, ErrorKind::HostService),
        LlmError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, ErrorKind::Timeout),
        LlmError::ModelMissing { .. } | LlmError::ModelCorrupt { .. } | LlmError::NotBuilt => {
            (StatusCode::SERVICE_UNAVAILABLE, ErrorKind::HostService)
        }
        LlmError::Upstream(_) => (StatusCode::BAD_GATEWAY, ErrorKind::HostService),
        LlmError::Cancelled | LlmError::Engine(_) => {
            (StatusCode::INTERNAL_SERVER_ERROR, ErrorKind::Internal)
        }
    };
    error(status, kind, e.to_string())
}

#[utoipa::path(post, path = "/v1/llm/infer", request_body(content = Object, description = "{\"prompt\", \"options\": {max_tokens, temperature, top_p, top_k, seed, repeat_penalty, stop, system}, \"stream\": false}"), responses(
    (status = 200, description = "The answer: text, finish_reason, tokens, durations; with \"stream\": true, server-sent events `token` ({\"text\"}) then `done` (the answer) or `error`", body = Object),
    (status = 422, description = "An unknown option or a bad value (named), or a prompt longer than the context", body = Object),
    (status = 503, description = "The queue is full, or the model is missing (the error names the pull command)", body = Object),
    (status = 504, description = "Timeout", body = Object)), security(("bearer" = [])))]
pub(crate) async fn infer(State(app): AppState, bytes: Bytes) -> Response {
    let body: Body = match serde_json::from_slice(&bytes) {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorKind::Validation,
                format!("llm: the body is not a request: {e}"),
            );
        }
    };
    let options = match InferOptions::from_json(body.options) {
        Ok(o) => o,
        Err(e) => return llm_error(&e),
    };
    let request = InferRequest {
        prompt: body.prompt,
        options,
    };
    if !body.stream {
        return match app.llm.infer("api", request, None, None).await {
            Ok(a) => axum::Json(a).into_response(),
            Err(e) => llm_error(&e),
        };
    }
    // Text goes out as it comes; the answer (or the error) ends the
    // stream. A client that disconnects drops the stream, and with it the
    // request, which the engine then abandons.
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let service = app.llm.clone();
    let answer = AbortOnDrop(tokio::spawn(async move {
        service.infer("api", request, Some(tx), None).await
    }));
    let state = (rx, Some(answer));
    let events = futures_util::stream::unfold(state, |(mut rx, answer)| async move {
        if let Some(text) = rx.recv().await {
            let event = Event::default()
                .event("token")
                .data(json!({ "text": text }).to_string());
            return Some((Ok::<_, Infallible>(event), (rx, answer)));
        }
        let mut answer = answer?;
        let event = match (&mut answer.0).await {
            Ok(Ok(a)) => Event::default().event("done").data(json!(a).to_string()),
            Ok(Err(e)) => Event::default()
                .event("error")
                .data(json!({ "error": e.to_string() }).to_string()),
            Err(e) => Event::default()
                .event("error")
                .data(json!({ "error": e.to_string() }).to_string()),
        };
        Some((Ok(event), (rx, None)))
    });
    Sse::new(events).into_response()
}

/// The generation task of a stream, stopped when the stream is dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
