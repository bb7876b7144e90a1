//! What a watcher of the host reads: its events as server-sent events,
//! a plugin's crash dumps, and the last log records by category.

use crate::api::{App, AppState, error, host_error};
use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use greffon_host::logging::{CATEGORIES, LogFilter, tail};
use greffon_protocol::ErrorKind;
use serde::Deserialize;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

pub(crate) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/v1/events", get(events))
        .route("/v1/plugins/{name}/dumps", get(dumps))
        .route("/v1/plugins/{name}/dumps/{file}", get(dump))
        .route("/v1/logs", get(logs))
}

/// Events closer together than this go out as one: a reload moves the
/// registry several times in a few milliseconds.
const SETTLE: Duration = Duration::from_millis(50);

#[utoipa::path(get, path = "/v1/events", responses((status = 200, description = "Server-sent events, one per change: `plugins` (a plugin was enabled, disabled, reloaded, changed on disk, or crashed; a crash dump was written) and `tasks` (a task was created, changed or deleted, or one of its runs started or ended on this server); the data is a generation counter. Re-read what changed on each.", content_type = "text/event-stream")), security(("bearer" = [])))]
pub(crate) async fn events(State(app): AppState) -> Response {
    let mut changes = app.host.changes();
    let mut incidents = app.host.incidents();
    let mut tasks = app.tasks.activity();
    let closing = app.closing.clone();
    let mut generation = 0u64;
    let stream = async_stream(move |tx| async move {
        loop {
            let topic = tokio::select! {
                () = closing.cancelled() => return,
                r = changes.changed() => r.map(|()| "plugins"),
                r = incidents.changed() => r.map(|()| "plugins"),
                r = tasks.changed() => r.map(|()| "tasks"),
            };
            let Ok(topic) = topic else { return };
            tokio::time::sleep(SETTLE).await;
            changes.mark_unchanged();
            incidents.mark_unchanged();
            let also_tasks = tasks.has_changed().unwrap_or(false);
            tasks.mark_unchanged();
            for topic in [Some(topic), also_tasks.then_some("tasks")]
                .into_iter()
                .flatten()
            {
                generation += 1;
                let event = Event::default().event(topic).data(generation.to_string());
                if tx.send(event).await.is_err() {
                    return;
                }
            }
        }
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// A stream fed by `body` through a small channel: the stream ends when
/// `body` returns, and `body` learns the client left when a send fails.
fn async_stream<F, Fut>(
    body: F,
) -> impl futures_util::Stream<Item = Result<Event, Infallible>> + Send + 'static
where
    F: FnOnce(tokio::sync::mpsc::Sender<Event>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(body(tx));
    futures_util::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) },
    )
}

/// How many dumps a plugin's list shows.
const DUMPS_LISTED: usize = 20;

#[utoipa::path(get, path = "/v1/plugins/{name}/dumps", params(("name" = String, Path)), responses((status = 200, description = "Its crash dumps, newest first (at most 20): file, time, phase, error", body = [Object]), (status = 404, description = "Unknown plugin", body = Object)), security(("bearer" = [])))]
pub(crate) async fn dumps(State(app): AppState, UrlPath(name): UrlPath<String>) -> Response {
    match app.host.dumps(&name, DUMPS_LISTED) {
        Ok(list) => axum::Json(list).into_response(),
        Err(e) => host_error(&e),
    }
}

#[utoipa::path(get, path = "/v1/plugins/{name}/dumps/{file}", params(("name" = String, Path), ("file" = String, Path, description = "A file name its list gives")), responses((status = 200, description = "The dump's text", content_type = "text/plain"), (status = 404, description = "Unknown plugin, or not one of its dumps", body = Object)), security(("bearer" = [])))]
pub(crate) async fn dump(
    State(app): AppState,
    UrlPath((name, file)): UrlPath<(String, String)>,
) -> Response {
    match app.host.dump_text(&name, &file) {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response(),
        Err(e) => host_error(&e),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LogQuery {
    category: String,
    plugin: Option<String>,
    q: Option<String>,
    limit: Option<usize>,
}

/// The most records one answer holds.
const MAX_RECORDS: usize = 500;

#[utoipa::path(get, path = "/v1/logs", params(
    ("category" = String, Query, description = "server, plugin, llm or audit"),
    ("plugin" = Option<String>, Query, description = "only this plugin's records"),
    ("q" = Option<String>, Query, description = "only records containing this text (any case)"),
    ("limit" = Option<usize>, Query, description = "default 100, at most 500")),
    responses((status = 200, description = "The last records, newest first, as logged (JSON objects)", body = [Object]), (status = 422, description = "Unknown category", body = Object)), security(("bearer" = [])))]
pub(crate) async fn logs(
    State(app): AppState,
    query: Result<Query<LogQuery>, QueryRejection>,
) -> Response {
    let query = match query {
        Ok(Query(q)) => q,
        Err(e) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorKind::Validation,
                format!("logs: {}", e.body_text()),
            );
        }
    };
    if !CATEGORIES.contains(&query.category.as_str()) {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorKind::Validation,
            format!(
                "logs: unknown category '{}' (one of {})",
                query.category,
                CATEGORIES.join(", ")
            ),
        );
    }
    let filter = LogFilter {
        plugin: query.plugin.filter(|p| !p.is_empty()),
        text: query.q.filter(|q| !q.is_empty()),
    };
    let limit = query.limit.unwrap_or(100).min(MAX_RECORDS);
    let dir = app.host.home().logs_dir().to_path_buf();
    let category = query.category;
    let read = tokio::task::spawn_blocking(move || tail(&dir, &category, &filter, limit)).await;
    match read {
        Ok(Ok(records)) => axum::Json(records).into_response(),
        Ok(Err(e)) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::Internal,
            format!("logs: cannot read the log: {e}"),
        ),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::Internal,
            format!("logs: {e}"),
        ),
    }
}
