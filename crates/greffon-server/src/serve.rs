//! [`serve`]: binds, writes the endpoint file, assembles the routes of
//! every module behind the guard, runs the scheduler's loop, and shuts
//! down gracefully.

use crate::ServerError;
use crate::app::{App, error};
use crate::auth::{Cors, Guard, cors, guard};
use crate::endpoint::Endpoint;
use crate::metrics::Metrics;
use axum::Router;
use axum::http::StatusCode;
use greffon_host::Host;
use greffon_protocol::ErrorKind;
use greffon_scheduler::{AnyTaskStore, Scheduler};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

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

fn router(
    app: Arc<App>,
    guard_state: Arc<Guard>,
    cors_state: Arc<Cors>,
    mcp: greffon_mcp::HttpOptions,
) -> Router {
    let mcp = greffon_mcp::http_service(crate::mcp::Metered(app.clone()), mcp);
    Router::new()
        .nest_service("/mcp", mcp)
        .merge(crate::plugins::routes())
        .merge(crate::tasks::routes())
        .merge(crate::llm::routes())
        .merge(crate::secrets::routes())
        .merge(crate::observe::routes())
        .merge(crate::dashboard::routes(guard_state.clone()))
        .merge(crate::openapi::routes())
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
    let bind_error = |source| ServerError::Bind {
        addr: opts.bind,
        source,
    };
    let listener = tokio::net::TcpListener::bind(opts.bind)
        .await
        .map_err(bind_error)?;
    let local = listener.local_addr().map_err(bind_error)?;
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
    let routes = routes_for(&host, &opts, local.port(), &closing);
    // Written once everything above is in place: clients (and tests) take
    // the endpoint file as "serving", so a plugin folder added right after
    // it appears is already watched.
    let endpoint = write_endpoint(&opts.endpoint_file, local)?;
    tracing::info!(target: "server", address = %local, "greffon serving");
    if opts.print_login_link {
        print_login_link(&endpoint, &opts.token);
    }
    let stop = Arc::new(tokio::sync::Notify::new());
    let stopped = stop.clone();
    // Small answers go out at once, not after a delayed ACK.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
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
    Endpoint::remove_if_ours(&opts.endpoint_file, endpoint.pid);
    outcome.map_err(|source| ServerError::Io {
        context: "the server failed".into(),
        source,
    })
}

/// Writes the endpoint file that tells clients (the CLI, `greffon mcp`)
/// where this server listens.
fn write_endpoint(file: &std::path::Path, local: SocketAddr) -> Result<Endpoint, ServerError> {
    let endpoint = Endpoint {
        address: local.to_string(),
        url: format!("http://{local}"),
        pid: std::process::id(),
    };
    endpoint.write(file).map_err(|source| ServerError::Io {
        context: format!("cannot write {}", file.display()),
        source,
    })?;
    Ok(endpoint)
}

/// Every route, with the state each layer needs, for a server on `port`;
/// `closing` ends MCP sessions and event streams at shutdown.
fn routes_for(
    host: &Host,
    opts: &ServeOptions,
    port: u16,
    closing: &greffon_host::CancellationToken,
) -> Router {
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
    let cors_state = Arc::new(Cors {
        origins: opts.cors_origins.clone(),
    });
    // `/mcp` refuses a foreign `Origin` (DNS rebinding): this server's own
    // pages and the configured CORS origins are the only ones.
    let mut origins = opts.cors_origins.clone();
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
    router(app, guard_state, cors_state, mcp)
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
