//! What every route shares: the server's state ([`App`]) and the mapping
//! of greffon's errors to HTTP statuses (`{"error": "...", "kind": "..."}`).
//! Route modules depend on this one, never on each other.

use crate::metrics::Metrics;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use greffon_host::{Host, HostError};
use greffon_protocol::ErrorKind;
use greffon_scheduler::{AnyTaskStore, Scheduler};
use serde_json::json;
use std::sync::Arc;

pub(crate) struct App {
    pub host: Host,
    pub tasks: Scheduler<AnyTaskStore>,
    pub llm: greffon_llm::LlmService,
    pub metrics: Metrics,
    /// Largest request body (the arguments of a run).
    pub max_body_bytes: usize,
    /// Cancelled at shutdown: ends the streams that would otherwise hold
    /// their connections open (events, MCP sessions).
    pub closing: greffon_host::CancellationToken,
}

pub(crate) type AppState = State<Arc<App>>;

pub(crate) fn error(status: StatusCode, kind: ErrorKind, message: impl Into<String>) -> Response {
    (
        status,
        axum::Json(json!({"error": message.into(), "kind": kind.as_str()})),
    )
        .into_response()
}

pub(crate) fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::Validation => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorKind::UnknownPlugin | ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::NotEnabled => StatusCode::CONFLICT,
        ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::Busy => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::WorkerCrashed
        | ErrorKind::Exception
        | ErrorKind::PluginFailed
        | ErrorKind::NotSerializable
        | ErrorKind::Protocol => StatusCode::BAD_GATEWAY,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

pub(crate) fn host_error(e: &HostError) -> Response {
    error(status_of(e.kind()), e.kind(), e.to_string())
}
