//! What a watcher of the host reads: its events as server-sent events,
//! a plugin's crash dumps, and the last log records by category.

use crate::app::{App, AppState, error, host_error};
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
    let watched = Watched {
        changes: app.host.changes(),
        incidents: app.host.incidents(),
        tasks: app.tasks.activity(),
        closing: app.closing.clone(),
        pending: Vec::new(),
        generation: 0,
    };
    // Pulled by the response: a client that leaves drops it, and with it
    // the receivers; nothing runs for a stream nobody reads.
    let stream = futures_util::stream::unfold(watched, |mut w| async move {
        let topic = w.next().await?;
        w.generation += 1;
        let event = Event::default().event(topic).data(w.generation.to_string());
        Some((Ok::<_, Infallible>(event), w))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// What an event stream follows, and the topics due to go out.
struct Watched {
    changes: tokio::sync::watch::Receiver<u64>,
    incidents: tokio::sync::watch::Receiver<u64>,
    tasks: tokio::sync::watch::Receiver<u64>,
    closing: greffon_host::CancellationToken,
    /// Topics that changed in the last settle window, not yet sent.
    pending: Vec<&'static str>,
    generation: u64,
}

impl Watched {
    /// The next topic to announce; `None` at shutdown.
    async fn next(&mut self) -> Option<&'static str> {
        if self.pending.is_empty() {
            // `changed()` marks what woke the stream as seen.
            let woke = tokio::select! {
                () = self.closing.cancelled() => return None,
                r = self.changes.changed() => r.ok().map(|()| "plugins")?,
                r = self.incidents.changed() => r.ok().map(|()| "plugins")?,
                r = self.tasks.changed() => r.ok().map(|()| "tasks")?,
            };
            tokio::time::sleep(SETTLE).await;
            // Whatever else moved during the window goes out once.
            let plugins = woke == "plugins"
                || self.changes.has_changed().ok()?
                || self.incidents.has_changed().ok()?;
            let tasks = woke == "tasks" || self.tasks.has_changed().ok()?;
            self.changes.mark_unchanged();
            self.incidents.mark_unchanged();
            self.tasks.mark_unchanged();
            self.pending.extend(
                [tasks.then_some("tasks"), plugins.then_some("plugins")]
                    .into_iter()
                    .flatten(),
            );
        }
        self.pending.pop()
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::watch;

    fn bump(tx: &watch::Sender<u64>) {
        tx.send_modify(|g| *g += 1);
    }

    #[tokio::test]
    async fn what_moves_in_one_window_goes_out_once_per_topic() {
        let (changes_tx, changes) = watch::channel(0);
        let (incidents_tx, incidents) = watch::channel(0);
        let (tasks_tx, tasks) = watch::channel(0);
        let closing = greffon_host::CancellationToken::new();
        let mut w = Watched {
            changes,
            incidents,
            tasks,
            closing: closing.clone(),
            pending: Vec::new(),
            generation: 0,
        };
        // A task woke the stream; a plugin moved while it settled: both
        // go out (the plugin's change was once dropped here).
        bump(&tasks_tx);
        let (first, ()) = tokio::join!(w.next(), async {
            tokio::task::yield_now().await;
            bump(&changes_tx);
            bump(&incidents_tx);
        });
        let second = w.next().await;
        let mut got = [first, second];
        got.sort();
        assert_eq!(got, [Some("plugins"), Some("tasks")]);
        // Nothing else is due: the stream waits, then ends at shutdown.
        let waiting = tokio::time::timeout(Duration::from_millis(200), w.next()).await;
        assert!(waiting.is_err(), "{waiting:?}");
        closing.cancel();
        assert_eq!(w.next().await, None);
    }
}
