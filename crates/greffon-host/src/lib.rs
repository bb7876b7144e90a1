//! The greffon host engine: everything between "call plugin X with these
//! arguments" and a Python worker process.
//!
//! # Layout
//!
//! [`Host`] (`host`) is the face: it opens a home, puts the parts below
//! together, answers what the registry holds, and hands each request to
//! the part it belongs to. Each part owns its state; the arrows are the
//! only way one reaches another:
//!
//! ```text
//! Host ─▶ Calls ─▶ Lifecycle ─▶ Discovery ─▶ Launcher
//!           │          │            │           │
//!           └──────────┴────────────┴─▶ Registry, Store, Signals, Dumps
//! ```
//!
//! - `calls` (`Calls`): the call path — validation, a worker of the pool
//!   (or its queue, or "busy"), the deadline and cancellation, the answer
//!   ([`CallOptions`]).
//! - `lifecycle` (`Lifecycle`): enable, disable, reload with rollback, the
//!   file watcher's changes, start-up and shutdown of each plugin's pool,
//!   and starting one worker (a sandbox matching the meta, `start()`).
//! - `discovery` (`Discovery`): the folders of `plugins/` judged into
//!   entries, the duplicate-name rule, `check`, and the rest of `plugins/`
//!   discovered when a host opened for one plugin is asked for another.
//! - `launcher` (`Launcher`): a worker spawned for one folder, sandboxed,
//!   in its environment, with `plugin.py` imported and its meta judged; it
//!   owns the interpreter, the jailer, the environments and the services.
//! - `registry` (`Registry`): the entries, their state and their pool of
//!   workers (`greffon-worker`), each entry made in one place; what the
//!   API shows of one is `greffon_protocol::api::PluginInfo`.
//! - `reply`: a worker's reply to one request folded once into `Ended`.
//! - `signals`: the `changes` and `incidents` generations live views
//!   watch; `dump`: crash dumps (`Dumps`); `store`: the persisted enabled
//!   set (SQLite).
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
//! - `python`: finding the interpreter; [`logging`]: the four log
//!   categories; [`scaffold`]: new plugins.

mod broker;
mod calls;
mod discovery;
mod dump;
mod envs;
mod error;
mod host;
mod jail;
mod launcher;
mod lifecycle;
pub mod logging;
mod python;
mod redact;
mod registry;
mod reply;
mod scaffold;
mod secrets;
mod services;
mod signals;
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
