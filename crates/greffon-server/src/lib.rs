//! `greffon serve`: the long-running form of greffon, an HTTP API over one
//! [`greffon_host::Host`].
//!
//! - `app`: what every route shares, the state (`App`) and the
//!   mapping of greffon's errors to statuses; route modules depend on it,
//!   never on each other;
//! - `plugins`: `/v1/health`, `/v1/plugins/...` and `/metrics`;
//! - `openapi`: the description of every route ([`openapi`]), generated
//!   from the handlers;
//! - `contract`: the OpenAPI's bodies and parameters made as strict as
//!   what the handlers accept;
//! - `auth`: the bearer token ([`resolve_token`]) and the `Host` header
//!   check that defeats DNS rebinding;
//! - `metrics`: Prometheus text at `/metrics`;
//! - `tasks`: the `/v1/tasks` routes over the scheduler;
//! - `llm`: `/v1/llm/infer`, JSON or server-sent events;
//! - `secrets`: `/v1/secrets`, write-only plugin secrets;
//! - `observe`: `/v1/events` (server-sent events of the host's and the
//!   scheduler's changes), a plugin's crash dumps, `/v1/logs`;
//! - `dashboard`: the browser dashboard at `/` and its login; `session`:
//!   its cookie sessions and CSRF tokens, which `auth` accepts on `/v1`;
//! - `mcp`: `/mcp`, the Model Context Protocol over Streamable HTTP
//!   ([`greffon_mcp::http_service`]) behind the same token, its calls
//!   counted in the metrics;
//! - [`Endpoint`]: `app/server.json`, how the CLI finds a running server;
//! - [`watch_plugins`]: the file watcher that applies changes under
//!   `plugins/` (also used by an embedded `greffon mcp`).
//!
//! `serve`: [`serve`] binds, writes the endpoint file, assembles every
//! module's routes, serves until its shutdown future resolves, lets calls
//! in flight finish within a grace period, stops every plugin, and removes
//! the endpoint file.

#![forbid(unsafe_code)]

mod app;
mod auth;
mod contract;
mod dashboard;
mod endpoint;
mod llm;
mod mcp;
mod metrics;
mod observe;
mod openapi;
mod plugins;
mod secrets;
mod serve;
mod session;
mod tasks;
mod watch;

pub use auth::resolve_token;
pub use dashboard::login_link;
pub use endpoint::Endpoint;
pub use openapi::openapi;
pub use serve::{ServeOptions, serve};
pub use watch::spawn as watch_plugins;

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Token(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}
