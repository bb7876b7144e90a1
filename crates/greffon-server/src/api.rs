//! The routes, their OpenAPI description, and the mapping of greffon's
//! errors to HTTP statuses (`{"error": "...", "kind": "..."}`).

use crate::ServerError;
use crate::auth::{Cors, Guard, cors, guard};
use crate::endpoint::Endpoint;
use crate::metrics::{Metrics, outcome_label};
use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use greffon_host::{CallError, Host, HostError};
use greffon_protocol::ErrorKind;
use greffon_scheduler::{AnyTaskStore, Scheduler};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use utoipa::OpenApi;

/// How `serve` runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub bind: SocketAddr,
    pub token: String,
    /// `Host` names accepted besides loopback ones.
    pub allowed_hosts: Vec<String>,
    /// How long calls in flight may take to finish at shutdown.
    pub grace: Duration,
    /// Largest request body (the arguments of a run).
    pub max_body_bytes: usize,
    /// Where to write the endpoint (`app/server.json`).
    pub endpoint_file: PathBuf,
    /// Watch this `plugins/` folder and apply its changes.
    pub watch: Option<PathBuf>,
    /// Browser origins allowed to call the API (CORS).
    pub cors_origins: Vec<String>,
    /// The task scheduler behind `/v1/tasks`.
    pub tasks: Scheduler<AnyTaskStore>,
    /// Whether its loop fires tasks (`[scheduler] enabled`).
    pub fire_tasks: bool,
    /// The local LLM behind `/v1/llm/infer`.
    pub llm: greffon_llm::LlmService,
    /// Print the dashboard's login link on stdout once listening: whole
    /// at a terminal; elsewhere (a service's journal) without the token,
    /// which `greffon dashboard` then gives.
    pub print_login_link: bool,
}

pub(crate) struct App {
    pub host: Host,
    pub tasks: Scheduler<AnyTaskStore>,
    pub llm: greffon_llm::LlmService,
    pub metrics: Metrics,
    max_body_bytes: usize,
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

fn info(host: &Host, name: &str) -> Response {
    match host.plugin(name) {
        Ok(p) => axum::Json(p).into_response(),
        Err(e) => host_error(&e),
    }
}

#[utoipa::path(get, path = "/v1/health", responses((status = 200, description = "The server is up (no token needed)", body = Object)))]
async fn health(State(app): AppState) -> Response {
    axum::Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "plugins": app.host.plugins().len(),
    }))
    .into_response()
}

#[utoipa::path(get, path = "/v1/plugins", responses((status = 200, description = "Every plugin: name, state, permissions, reach, failure", body = [Object])), security(("bearer" = [])))]
async fn list(State(app): AppState) -> Response {
    axum::Json(app.host.plugins()).into_response()
}

#[utoipa::path(get, path = "/v1/plugins/{name}", params(("name" = String, Path)), responses((status = 200, body = Object), (status = 404, description = "Unknown plugin", body = Object)), security(("bearer" = [])))]
async fn plugin(State(app): AppState, UrlPath(name): UrlPath<String>) -> Response {
    info(&app.host, &name)
}

#[utoipa::path(post, path = "/v1/plugins/{name}/enable", params(("name" = String, Path)), responses((status = 200, description = "Granted and started", body = Object), (status = 404, body = Object), (status = 502, description = "It failed to load or start", body = Object)), security(("bearer" = [])))]
async fn enable(State(app): AppState, UrlPath(name): UrlPath<String>) -> Response {
    match app.host.enable(&name).await {
        Ok(p) => axum::Json(p).into_response(),
        Err(e) => host_error(&e),
    }
}

#[utoipa::path(post, path = "/v1/plugins/{name}/disable", params(("name" = String, Path)), responses((status = 200, body = Object), (status = 404, body = Object)), security(("bearer" = [])))]
async fn disable(State(app): AppState, UrlPath(name): UrlPath<String>) -> Response {
    match app.host.disable(&name).await {
        Ok(p) => axum::Json(p).into_response(),
        Err(e) => host_error(&e),
    }
}

#[utoipa::path(post, path = "/v1/plugins/{name}/reload", params(("name" = String, Path)), responses((status = 200, description = "The new version serves", body = Object), (status = 404, body = Object), (status = 409, description = "Not enabled", body = Object), (status = 502, description = "Rolled back: the running version keeps serving", body = Object)), security(("bearer" = [])))]
async fn reload(State(app): AppState, UrlPath(name): UrlPath<String>) -> Response {
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
async fn run(State(app): AppState, UrlPath(name): UrlPath<String>, body: Body) -> Response {
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

#[utoipa::path(get, path = "/v1/openapi.json", responses((status = 200, description = "This description", body = Object)), security(("bearer" = [])))]
async fn openapi_route() -> Response {
    let mut doc = serde_json::to_value(openapi()).unwrap_or_default();
    crate::contract::tighten(&mut doc);
    axum::Json(doc).into_response()
}

#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text (no token needed)", content_type = "text/plain")))]
async fn metrics(State(app): AppState) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(&app.host.plugins()),
    )
        .into_response()
}

#[derive(OpenApi)]
#[openapi(
    info(title = "greffon", description = "Run plain Python plugins, kernel-sandboxed. Every /v1 route but /v1/health needs `Authorization: Bearer <token>` (the token is in <home>/app/token). Errors are {\"error\", \"kind\"}."),
    paths(health, list, plugin, enable, disable, reload, run, openapi_route, metrics,
          crate::tasks::list, crate::tasks::create, crate::tasks::get_task, crate::tasks::update,
          crate::tasks::delete, crate::tasks::run_now, crate::tasks::runs, crate::tasks::next,
          crate::llm::infer, crate::secrets::list_all, crate::secrets::list_plugin,
          crate::secrets::set, crate::secrets::remove, crate::observe::events,
          crate::observe::dumps, crate::observe::dump, crate::observe::logs),
    modifiers(&Bearer)
)]
struct ApiDoc;

struct Bearer;

impl utoipa::Modify for Bearer {
    /// The bearer scheme, and on every route that needs it the 401 the
    /// guard answers without it (documented once here, not per route).
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::ResponseBuilder;
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        for item in api.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for op in operations.into_iter().flatten() {
                if op.security.as_ref().is_some_and(|s| !s.is_empty()) {
                    op.responses.responses.entry("401".into()).or_insert_with(|| {
                        ResponseBuilder::new()
                            .description("No bearer token (nor dashboard session), or a wrong one: `{\"error\", \"kind\": \"unauthorized\"}`")
                            .build()
                            .into()
                    });
                }
            }
        }
    }
}

/// The OpenAPI description, generated from the handlers above.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

fn router(
    app: Arc<App>,
    guard_state: Arc<Guard>,
    cors_state: Arc<Cors>,
    mcp: greffon_mcp::HttpOptions,
) -> Router {
    let mcp = greffon_mcp::http_service(crate::mcp::Metered(app.clone()), mcp);
    Router::new()
        .nest_service("/mcp", mcp)
        .route("/v1/health", get(health))
        .route("/v1/plugins", get(list))
        .route("/v1/plugins/{name}", get(plugin))
        .route("/v1/plugins/{name}/enable", post(enable))
        .route("/v1/plugins/{name}/disable", post(disable))
        .route("/v1/plugins/{name}/reload", post(reload))
        .route("/v1/plugins/{name}/run", post(run))
        .merge(crate::tasks::routes())
        .merge(crate::llm::routes())
        .merge(crate::secrets::routes())
        .merge(crate::observe::routes())
        .merge(crate::dashboard::routes(guard_state.clone()))
        .route("/v1/openapi.json", get(openapi_route))
        .route("/metrics", get(metrics))
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                ErrorKind::UnknownMethod,
                "no such route; see /v1/openapi.json",
            )
        })
        .with_state(app)
        .layer(axum::middleware::from_fn_with_state(guard_state, guard))
        // Outermost: a preflight carries no token.
        .layer(axum::middleware::from_fn_with_state(cors_state, cors))
}

/// Serves `host` until `shutdown` resolves, then lets calls in flight
/// finish (at most `grace`), stops every plugin and removes the endpoint
/// file. The endpoint file is written once the socket listens.
pub async fn serve(
    host: Host,
    opts: ServeOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let listener = tokio::net::TcpListener::bind(opts.bind)
        .await
        .map_err(|source| ServerError::Bind {
            addr: opts.bind,
            source,
        })?;
    let local = listener.local_addr().map_err(|source| ServerError::Bind {
        addr: opts.bind,
        source,
    })?;
    let pid = std::process::id();
    let endpoint = Endpoint {
        address: local.to_string(),
        url: format!("http://{local}"),
        pid,
    };
    endpoint
        .write(&opts.endpoint_file)
        .map_err(|source| ServerError::Io {
            context: format!("cannot write {}", opts.endpoint_file.display()),
            source,
        })?;
    tracing::info!(target: "server", address = %local, "greffon serving");
    // Dropping the watcher at the end stops it.
    let _watcher = match &opts.watch {
        Some(plugins) => Some(
            crate::watch::spawn(host.clone(), plugins.clone()).map_err(|e| ServerError::Io {
                context: format!("cannot watch {}", plugins.display()),
                source: std::io::Error::other(e),
            })?,
        ),
        None => None,
    };
    let closing = greffon_host::CancellationToken::new();
    let app = Arc::new(App {
        host: host.clone(),
        tasks: opts.tasks.clone(),
        llm: opts.llm.clone(),
        metrics: Metrics::default(),
        max_body_bytes: opts.max_body_bytes,
        closing: closing.clone(),
    });
    let guard_state = Arc::new(Guard {
        token: opts.token.clone(),
        allowed_hosts: opts
            .allowed_hosts
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect(),
        sessions: Default::default(),
    });
    if opts.print_login_link {
        print_login_link(&endpoint, &opts.token);
    }
    let stop = Arc::new(tokio::sync::Notify::new());
    let stopped = stop.clone();
    let cors_state = Arc::new(Cors {
        origins: opts.cors_origins.clone(),
    });
    // Small answers go out at once, not after a delayed ACK.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    // `/mcp` refuses a foreign `Origin` (DNS rebinding): this server's own
    // pages and the configured CORS origins are the only ones.
    let mut origins = opts.cors_origins.clone();
    let port = local.port();
    origins.extend([
        format!("http://127.0.0.1:{port}"),
        format!("http://localhost:{port}"),
        format!("http://[::1]:{port}"),
    ]);
    let mcp = greffon_mcp::HttpOptions {
        allowed_hosts: opts.allowed_hosts.clone(),
        allowed_origins: origins,
        shutdown: closing.clone(),
    };
    let routes = router(app, guard_state, cors_state, mcp);
    let server = axum::serve(listener, routes)
        .with_graceful_shutdown(async move { stopped.notified().await });
    let server = std::future::IntoFuture::into_future(server);
    tokio::pin!(server);
    let scheduler = opts.tasks.clone();
    let firing = opts.fire_tasks.then(|| {
        let s = scheduler.clone();
        tokio::spawn(async move { s.run_loop().await })
    });
    let outcome = tokio::select! {
        r = &mut server => r,
        () = shutdown => {
            tracing::info!(target: "server", "shutting down: no new connections; calls in flight may finish");
            stop.notify_one();
            // MCP sessions and event streams hold connections open; they
            // end now.
            closing.cancel();
            match tokio::time::timeout(opts.grace, &mut server).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::warn!(target: "server", "calls still running after {} s; stopping anyway", opts.grace.as_secs_f64());
                    Ok(())
                }
            }
        }
    };
    // Task runs in flight get the same grace as calls; the ones still
    // running after it are recorded as lost, not left `running`.
    scheduler.stop(opts.grace).await;
    if let Some(task) = firing {
        task.abort();
    }
    host.shutdown().await;
    Endpoint::remove_if_ours(&opts.endpoint_file, pid);
    outcome.map_err(|source| ServerError::Io {
        context: "the server failed".into(),
        source,
    })
}

/// The dashboard's address on stdout: with the token at a terminal (the
/// person who started the server opens it), without it elsewhere.
fn print_login_link(endpoint: &Endpoint, token: &str) {
    use std::io::IsTerminal;
    if std::io::stdout().is_terminal() {
        println!(
            "dashboard: {}",
            crate::dashboard::login_link(&endpoint.url, token)
        );
    } else {
        println!(
            "dashboard: {}/ (run `greffon dashboard` for the login link)",
            endpoint.url
        );
    }
}
