//! `/v1/secrets`: set, list and remove plugin secrets. Write-only: no
//! route answers a value.

use crate::app::{App, AppState, error, host_error};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use greffon_protocol::ErrorKind;
use serde::Deserialize;
use std::sync::Arc;

pub(crate) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/v1/secrets", get(list_all))
        .route("/v1/secrets/{plugin}", get(list_plugin))
        .route(
            "/v1/secrets/{plugin}/{name}",
            axum::routing::put(set).delete(remove),
        )
}

async fn listing(app: &App, plugin: Option<&str>) -> Response {
    match app.host.secrets(plugin).await {
        Ok(entries) => axum::Json(entries).into_response(),
        Err(e) => host_error(&e),
    }
}

#[utoipa::path(get, path = "/v1/secrets", responses((status = 200, description = "Every declared or stored secret: plugin, name, set, declared (never a value)", body = [Object])), security(("bearer" = [])))]
pub(crate) async fn list_all(State(app): AppState) -> Response {
    listing(&app, None).await
}

#[utoipa::path(get, path = "/v1/secrets/{plugin}", params(("plugin" = String, Path)), responses((status = 200, description = "The plugin's secrets (never a value)", body = [Object]), (status = 404, description = "Unknown plugin, and none stored for it", body = Object)), security(("bearer" = [])))]
pub(crate) async fn list_plugin(
    State(app): AppState,
    UrlPath(plugin): UrlPath<String>,
) -> Response {
    listing(&app, Some(&plugin)).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetBody {
    value: String,
}

#[utoipa::path(put, path = "/v1/secrets/{plugin}/{name}", params(("plugin" = String, Path), ("name" = String, Path)), request_body(content = Object, description = "{\"value\": \"...\"}"), responses(
    (status = 204, description = "Stored; the plugin reads it at its next greffon.secret()"),
    (status = 404, description = "Unknown plugin", body = Object),
    (status = 422, description = "A bad name or value, or a name the plugin does not declare", body = Object)), security(("bearer" = [])))]
pub(crate) async fn set(
    State(app): AppState,
    UrlPath((plugin, name)): UrlPath<(String, String)>,
    bytes: Bytes,
) -> Response {
    let body: SetBody = match serde_json::from_slice(&bytes) {
        Ok(b) => b,
        // serde's message may quote the body, which holds the value.
        Err(e) => {
            let what = if e.is_syntax() || e.is_eof() {
                "the body is not JSON"
            } else {
                "the body must be {\"value\": \"...\"} with a string value"
            };
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorKind::Validation,
                format!("secret '{name}' of plugin '{plugin}': {what}"),
            );
        }
    };
    match app.host.set_secret(&plugin, &name, &body.value).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => host_error(&e),
    }
}

#[utoipa::path(delete, path = "/v1/secrets/{plugin}/{name}", params(("plugin" = String, Path), ("name" = String, Path)), responses(
    (status = 204, description = "Removed"),
    (status = 404, description = "Not set", body = Object),
    (status = 422, description = "A bad plugin or secret name", body = Object)), security(("bearer" = [])))]
pub(crate) async fn remove(
    State(app): AppState,
    UrlPath((plugin, name)): UrlPath<(String, String)>,
) -> Response {
    match app.host.remove_secret(&plugin, &name).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => host_error(&e),
    }
}
