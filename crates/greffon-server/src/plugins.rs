//! `/v1/health`, `/v1/plugins/...` (the registry, lifecycle and calls)
//! and `/metrics`.

use crate::app::{App, AppState, error, host_error, status_of};
use crate::metrics::outcome_label;
use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use greffon_host::{CallError, Host, HostError};
use greffon_protocol::ErrorKind;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Instant;

pub(crate) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/plugins", get(list))
        .route("/v1/plugins/{name}", get(plugin))
        .route("/v1/plugins/{name}/enable", post(enable))
        .route("/v1/plugins/{name}/disable", post(disable))
        .route("/v1/plugins/{name}/reload", post(reload))
        .route("/v1/plugins/{name}/run", post(run))
        .route("/metrics", get(metrics))
}

fn info(host: &Host, name: &str) -> Response {
    match host.plugin(name) {
        Ok(p) => axum::Json(p).into_response(),
        Err(e) => host_error(&e),
    }
}

#[utoipa::path(get, path = "/v1/health", responses((status = 200, description = "The server is up (no token needed)", body = Object)))]
pub(crate) async fn health(State(app): AppState) -> Response {
    axum::Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "plugins": app.host.plugins().len(),
    }))
    .into_response()
}

#[utoipa::path(get, path = "/v1/plugins", responses((status = 200, description = "Every plugin: name, state, permissions, reach, failure", body = [Object])), security(("bearer" = [])))]
pub(crate) async fn list(State(app): AppState) -> Response {
    axum::Json(app.host.plugins()).into_response()
}

#[utoipa::path(get, path = "/v1/plugins/{name}", params(("name" = String, Path)), responses((status = 200, body = Object), (status = 404, description = "Unknown plugin", body = Object)), security(("bearer" = [])))]
pub(crate) async fn plugin(State(app): AppState, UrlPath(name): UrlPath<String>) -> Response {
    info(&app.host, &name)
}

#[utoipa::path(post, path = "/v1/plugins/{name}/enable", params(("name" = String, Path)), responses((status = 200, description = "Granted and started", body = Object), (status = 404, body = Object), (status = 502, description = "It failed to load or start", body = Object)), security(("bearer" = [])))]
pub(crate) async fn enable(State(app): AppState, UrlPath(name): UrlPath<String>) -> Response {
    match app.host.enable(&name).await {
        Ok(p) => axum::Json(p).into_response(),
        Err(e) => host_error(&e),
    }
}

#[utoipa::path(post, path = "/v1/plugins/{name}/disable", params(("name" = String, Path)), responses((status = 200, body = Object), (status = 404, body = Object)), security(("bearer" = [])))]
pub(crate) async fn disable(State(app): AppState, UrlPath(name): UrlPath<String>) -> Response {
    match app.host.disable(&name).await {
        Ok(p) => axum::Json(p).into_response(),
        Err(e) => host_error(&e),
    }
}

#[utoipa::path(post, path = "/v1/plugins/{name}/reload", params(("name" = String, Path)), responses((status = 200, description = "The new version serves", body = Object), (status = 404, body = Object), (status = 409, description = "Not enabled", body = Object), (status = 502, description = "Rolled back: the running version keeps serving", body = Object)), security(("bearer" = [])))]
pub(crate) async fn reload(State(app): AppState, UrlPath(name): UrlPath<String>) -> Response {
    match app.host.reload(&name).await {
        Ok(p) => {
            app.metrics.reload(true);
            axum::Json(p).into_response()
        }
        Err(e) => {
            if matches!(e, HostError::Reload { .. }) {
                app.metrics.reload(false);
            }
            host_error(&e)
        }
    }
}

#[utoipa::path(post, path = "/v1/plugins/{name}/run", params(("name" = String, Path)), request_body(content = Object, description = "The arguments object"), responses(
    (status = 200, description = "The plugin's result, including a returned {\"error\"}", body = Object),
    (status = 404, description = "Unknown plugin", body = Object),
    (status = 409, description = "Not enabled", body = Object),
    (status = 413, description = "Arguments or result too large", body = Object),
    (status = 422, description = "Invalid arguments: names the field and the rule", body = Object),
    (status = 502, description = "The plugin raised, crashed or failed", body = Object),
    (status = 503, description = "Busy: every worker of the plugin serves a call and its queue is full (Retry-After: 1)", body = Object),
    (status = 504, description = "Timeout", body = Object)), security(("bearer" = [])))]
pub(crate) async fn run(
    State(app): AppState,
    UrlPath(name): UrlPath<String>,
    body: Body,
) -> Response {
    let started = Instant::now();
    let bytes = match to_bytes(body, app.max_body_bytes).await {
        Ok(b) => b,
        Err(_) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorKind::TooLarge,
                format!(
                    "plugin '{name}': the arguments exceed {} bytes (max_args_bytes)",
                    app.max_body_bytes
                ),
            );
        }
    };
    let args: Value = if bytes.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(e) => {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    ErrorKind::Validation,
                    format!("plugin '{name}': the body is not JSON: {e}"),
                );
            }
        }
    };
    let outcome = app.host.call(&name, args).await;
    app.metrics
        .call(&name, outcome_label(&outcome), started.elapsed());
    match outcome {
        Ok(v) => axum::Json(v).into_response(),
        Err(CallError {
            kind: ErrorKind::Busy,
            message,
            ..
        }) => {
            let mut response = error(StatusCode::SERVICE_UNAVAILABLE, ErrorKind::Busy, message);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            response
        }
        Err(CallError { kind, message, .. }) => error(status_of(kind), kind, message),
    }
}

#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text (no token needed)", content_type = "text/plain")))]
pub(crate) async fn metrics(State(app): AppState) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(&app.host.plugins()),
    )
        .into_response()
}
