//! `/v1/tasks`: scheduled plugin calls. A task is named in the path by
//! its id or its name.

use crate::app::{App, AppState, error};
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use greffon_protocol::ErrorKind;
use greffon_scheduler::{NewTask, TaskError, TaskKey, TaskPatch};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::sync::Arc;

pub(crate) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/v1/tasks", get(list).post(create))
        .route(
            "/v1/tasks/{task}",
            get(get_task).patch(update).delete(delete),
        )
        .route("/v1/tasks/{task}/run", axum::routing::post(run_now))
        .route("/v1/tasks/{task}/runs", get(runs))
        .route("/v1/tasks/{task}/next", get(next))
}

fn task_error(e: &TaskError) -> Response {
    let (status, kind, message) = match e {
        TaskError::Invalid { .. } => (
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorKind::Validation,
            e.to_string(),
        ),
        TaskError::NotFound(_) => (StatusCode::NOT_FOUND, ErrorKind::NotFound, e.to_string()),
        TaskError::Conflict(_) => (StatusCode::CONFLICT, ErrorKind::Conflict, e.to_string()),
        // The database restarting or out of reach: worth trying again.
        _ if e.is_unavailable() => (
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::HostService,
            e.to_string(),
        ),
        TaskError::Corrupt(_) | TaskError::Store(_) | TaskError::Unavailable(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::Internal,
            e.to_string(),
        ),
    };
    error(status, kind, message)
}

fn answer<T: serde::Serialize>(status: StatusCode, r: Result<T, TaskError>) -> Response {
    match r {
        Ok(v) => (status, axum::Json(v)).into_response(),
        Err(e) => task_error(&e),
    }
}

/// The body as `T`; a refusal names the field (serde's message). The
/// integer fields accept an integral float (`2.0`); the plugin's `args`
/// are left exactly as sent.
fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, String> {
    let text = if bytes.is_empty() { &b"{}"[..] } else { bytes };
    let mut v: Value = serde_json::from_slice(text).map_err(|e| format!("invalid task: {e}"))?;
    if let Some(map) = v.as_object_mut() {
        greffon_protocol::integral_floats(map, &["max_instances", "retries"]);
        if let Some(trigger) = map.get_mut("trigger").and_then(Value::as_object_mut) {
            greffon_protocol::integral_floats(trigger, &["every_s"]);
        }
    }
    serde_json::from_value(v).map_err(|e| format!("invalid task: {e}"))
}

fn invalid(message: String) -> Response {
    error(
        StatusCode::UNPROCESSABLE_ENTITY,
        ErrorKind::Validation,
        message,
    )
}

#[utoipa::path(get, path = "/v1/tasks", responses((status = 200, description = "Every task with its next fire time", body = [Object])), security(("bearer" = [])))]
pub(crate) async fn list(State(app): AppState) -> Response {
    answer(StatusCode::OK, app.tasks.list().await)
}

#[utoipa::path(post, path = "/v1/tasks", request_body(content = Object, description = "name, plugin, args, trigger ({kind: cron, expr, tz} | {kind: interval, every_s, start, end} | {kind: date, at}), and options"), responses(
    (status = 201, description = "Saved; next_run_at computed", body = Object),
    (status = 409, description = "The name is taken", body = Object),
    (status = 422, description = "Invalid: names the field (plugin, args, trigger.expr, trigger.tz, ...)", body = Object)), security(("bearer" = [])))]
pub(crate) async fn create(State(app): AppState, bytes: Bytes) -> Response {
    match body::<NewTask>(&bytes) {
        Ok(new) => answer(StatusCode::CREATED, app.tasks.create(new).await),
        Err(e) => invalid(e),
    }
}

#[utoipa::path(get, path = "/v1/tasks/{task}", params(("task" = String, Path, description = "id or name")), responses((status = 200, body = Object), (status = 404, body = Object)), security(("bearer" = [])))]
pub(crate) async fn get_task(State(app): AppState, UrlPath(task): UrlPath<String>) -> Response {
    answer(StatusCode::OK, app.tasks.get(&TaskKey::parse(&task)).await)
}

#[utoipa::path(patch, path = "/v1/tasks/{task}", params(("task" = String, Path, description = "id or name")), request_body(content = Object, description = "The fields to change"), responses((status = 200, body = Object), (status = 404, body = Object), (status = 409, body = Object), (status = 422, body = Object)), security(("bearer" = [])))]
pub(crate) async fn update(
    State(app): AppState,
    UrlPath(task): UrlPath<String>,
    bytes: Bytes,
) -> Response {
    match body::<TaskPatch>(&bytes) {
        Ok(patch) => answer(
            StatusCode::OK,
            app.tasks.update(&TaskKey::parse(&task), patch).await,
        ),
        Err(e) => invalid(e),
    }
}

#[utoipa::path(delete, path = "/v1/tasks/{task}", params(("task" = String, Path, description = "id or name")), responses((status = 200, description = "The deleted task (its runs are deleted too)", body = Object), (status = 404, body = Object)), security(("bearer" = [])))]
pub(crate) async fn delete(State(app): AppState, UrlPath(task): UrlPath<String>) -> Response {
    answer(
        StatusCode::OK,
        app.tasks.delete(&TaskKey::parse(&task)).await,
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RunNow {
    #[serde(default)]
    force: bool,
}

#[utoipa::path(post, path = "/v1/tasks/{task}/run", params(("task" = String, Path, description = "id or name")), request_body(content = Object, description = "{\"force\": true} to run beyond max_instances"), responses(
    (status = 200, description = "The finished run (the schedule does not move)", body = Object),
    (status = 404, body = Object),
    (status = 409, description = "max_instances runs are running; pass force", body = Object)), security(("bearer" = [])))]
pub(crate) async fn run_now(
    State(app): AppState,
    UrlPath(task): UrlPath<String>,
    bytes: Bytes,
) -> Response {
    match body::<RunNow>(&bytes) {
        Ok(r) => answer(
            StatusCode::OK,
            app.tasks.run_now(&TaskKey::parse(&task), r.force).await,
        ),
        Err(e) => invalid(e),
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct Limit {
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/v1/tasks/{task}/runs", params(("task" = String, Path, description = "id or name"), ("limit" = Option<u32>, Query, description = "default 20")), responses((status = 200, description = "Runs, newest first", body = [Object]), (status = 404, body = Object)), security(("bearer" = [])))]
pub(crate) async fn runs(
    State(app): AppState,
    UrlPath(task): UrlPath<String>,
    q: Result<Query<Limit>, QueryRejection>,
) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return invalid(format!("runs: {}", e.body_text())),
    };
    let limit = q.limit.unwrap_or(20);
    answer(
        StatusCode::OK,
        app.tasks.runs(&TaskKey::parse(&task), limit).await,
    )
}

/// Most fire times `GET /v1/tasks/{task}/next` previews.
pub(crate) const MAX_NEXT: usize = 100;

#[derive(Debug, Deserialize)]
pub(crate) struct Count {
    n: Option<usize>,
}

#[utoipa::path(get, path = "/v1/tasks/{task}/next", params(("task" = String, Path, description = "id or name"), ("n" = Option<usize>, Query, description = "default 5, at most 100 (more is refused with 422)")), responses((status = 200, description = "The next fire times (UTC)", body = [String]), (status = 404, body = Object)), security(("bearer" = [])))]
pub(crate) async fn next(
    State(app): AppState,
    UrlPath(task): UrlPath<String>,
    q: Result<Query<Count>, QueryRejection>,
) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return invalid(format!("next: {}", e.body_text())),
    };
    // Refused rather than cut, as the CLI does: a client asking for 400
    // must not take 100 for all there is.
    let n = q.n.unwrap_or(5);
    if n > MAX_NEXT {
        return invalid(format!("next: n is at most {MAX_NEXT} (got {n})"));
    }
    answer(
        StatusCode::OK,
        app.tasks.next(&TaskKey::parse(&task), n).await,
    )
}
