//! greffon's worker layer: everything between "send this request to the
//! plugin's Python" and the process that runs it.
//!
//! # Layout
//!
//! - [`Worker`] (`worker`): one worker process seen from the host —
//!   requests multiplexed by id over its framed channels ([`Reply`]),
//!   cancellation and progress ([`Hooks`]), its exit ([`Exit`]), kill and
//!   shutdown.
//! - `spawn`: starting one ([`SpawnSpec`], [`Jail`], [`SpawnError`]):
//!   forked from the interpreter's `template` process, which has imported
//!   the SDK, the worker then applying its own sandbox; or, with the
//!   sandbox off or no template, started with exec, the sandbox applied
//!   between fork and exec. `spawner`: the one thread that forks every
//!   exec'd worker and the templates (the parent-death signal is per
//!   thread).
//! - `reader`: the task that reads a worker's frames, serves its host
//!   calls through its [`Supervisor`], and settles its end ([`Crash`]);
//!   `frame`: reading one frame; `output`: its raw stdout/stderr and log
//!   records.
//! - [`Pool`] (`pool`): a plugin's workers, one call each, and the bounded
//!   queue of calls waiting for one ([`Lease`]; its figures are
//!   `greffon_protocol::api::PoolStats`).
//! - [`sdk`]: the Python SDK and worker, embedded and written out once.

mod frame;
mod output;
mod pool;
mod reader;
pub mod sdk;
mod spawn;
mod spawner;
mod supervisor;
mod template;
mod worker;

pub use pool::{Checkout, Handoff, Lease, Pool, Ticket};
pub use spawn::{Jail, SpawnError, SpawnSpec};
pub use supervisor::{Answer, Crash, Supervisor};
pub use worker::{Abandoned, Exit, Hooks, Reply, Worker};
