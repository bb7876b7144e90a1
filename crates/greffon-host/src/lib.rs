//! The greffon host engine: everything between "call plugin X with these
//! arguments" and a Python worker process.
//!
//! # Layout
//!
//! - [`Host`] (`host`): opens a home, discovers its plugins, answers what
//!   the registry holds; `lifecycle`: enable, disable, reload, start-up and
//!   shutdown of each plugin's pool; `calls`: the call path (validation →
//!   a worker of the pool → result or `{"error"}`, [`CallOptions`]).
//! - `registry`: the entries (`Registry`, which owns the map), their
//!   state and their pool of workers (`greffon-worker`); what the API shows
//!   of one is `greffon_protocol::api::PluginInfo`.
//! - `discovery`: loading `plugin.py` in a worker and judging its meta.
//! - `hooks`: a plugin's hooks outside a call (`load`, `start()`,
//!   `stop()`), every way one can end folded once.
//! - `envs`: plugins' Python environments (the requirements a plugin
//!   declares, checked, built with uv under `envs/`, [`EnvInfo`]).
//! - `jail`: a worker's sandbox (permissions, paths, limits, temp folder),
//!   built by the `Jailer`, which owns what it needs (kernel support,
//!   protected paths, the no-exec filter);
//!   `supervision`: the host's side of each worker (its host calls, its
//!   crash dump and crash count).
//! - `services`: host services plugins call mid-call (`system.info`,
//!   `http.request` through the `broker`).
//! - `secrets`: the secret store plugins read through `greffon.secret()`;
//!   [`redact`]: hiding every value handed out (and every other secret
//!   the process was given: [`remember`], e.g. a database password) from
//!   dumps, logs, errors.
//! - `dump`: crash dumps; `store`: the persisted enabled set (SQLite);
//!   `python`: finding the interpreter.
//! - [`logging`]: the four log categories; [`scaffold`]: new plugins.

mod broker;
mod calls;
mod discovery;
mod dump;
mod envs;
mod error;
mod hooks;
mod host;
mod jail;
mod lifecycle;
pub mod logging;
mod python;
mod redact;
mod registry;
mod scaffold;
mod secrets;
mod services;
mod store;
mod supervision;
mod sysinfo;

pub use calls::CallOptions;
pub use dump::DumpEntry;
pub use envs::{EnvInfo, environments, prune_environments, unbuilt_requirements, uv_facts};
pub use error::{CallError, HostError};
pub use greffon_protocol::method::Progress;
pub use greffon_protocol::{Service, ServiceFuture};
pub use host::{Host, python_facts, sandbox_support};
pub use redact::{redact, remember};
pub use scaffold::scaffold;
pub use secrets::{MAX_SECRET_BYTES, SecretError, store_report};
pub use tokio_util::sync::CancellationToken;

/// Makes ring the TLS crypto provider before a `reqwest` client is built:
/// reqwest is built without a default one (ring is the one linked).
/// Calling it again is harmless.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A client for a greffon server at `base` (the CLI, `greffon mcp`): no
/// proxy, and for a plain `http://` URL no TLS roots — loading the
/// system's certificates costs more than the request itself (~7 ms of a
/// 9 ms `plugin list` through a server, measured).
pub fn server_client(base: &str) -> reqwest::ClientBuilder {
    install_tls_provider();
    let builder = reqwest::Client::builder().no_proxy();
    if base.starts_with("http://") {
        builder.tls_certs_only([])
    } else {
        builder
    }
}
