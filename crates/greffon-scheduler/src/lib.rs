//! Scheduled plugin calls: tasks (a plugin, its arguments, a trigger,
//! options) kept in `greffon.db` or a PostgreSQL database shared by
//! several hosts, fired by one loop per host, with a run history and
//! retries.
//!
//! # Layout
//!
//! - `model`: [`Task`], [`Trigger`], [`Run`], and what creates or changes
//!   a task ([`NewTask`], [`TaskPatch`]).
//! - `trigger`: cron (croner, IANA zones), interval and date fire times.
//! - `store`: the [`TaskStore`] trait and its implementations:
//!   [`SqliteTaskStore`] (one host, the home's `greffon.db`),
//!   [`PgTaskStore`] (PostgreSQL shared by several hosts: `SKIP LOCKED`
//!   claims, leases, `LISTEN/NOTIFY`), [`AnyTaskStore`] (the one chosen).
//! - `scheduler`: [`Scheduler`]: validation, CRUD, `run_now`, the loop
//!   (claim due runs and advance them in one transaction, dispatch, write
//!   back), crash recovery, history retention; the [`Runner`] it dispatches
//!   to and the [`Clock`] it reads.
//! - `runner`: [`Runner`] for the real [`greffon_host::Host`].
//! - `service`: the `tasks.*` host service behind the SDK's `greffon.tasks`.

#![forbid(unsafe_code)]

mod model;
#[cfg(test)]
mod properties;
mod runner;
mod scheduler;
mod service;
mod store;
mod trigger;

pub use model::{
    Coalesce, DEFAULT_RETRY_BACKOFF_S, NewTask, Options, RETRY_BACKOFF_CAP, Run, RunKind,
    RunStatus, Task, TaskKey, TaskPatch, Trigger,
};
pub use runner::{HostRunner, attach};
pub use scheduler::{
    CheckError, CheckFuture, Clock, Outcome, RunFuture, Runner, Scheduler, Settings, SystemClock,
    TokioClock,
};
pub use service::TasksService;
pub use store::{
    AnyTaskStore, Claim, Claimed, Fire, LOST, PgReport, PgTaskStore, Plan, Planner,
    SqliteTaskStore, TaskStore,
};
pub use trigger::{check_zone, fire_times, host_zone};

/// Most fire times one due task catches up on with `coalesce = all`.
pub const MAX_CATCH_UP: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// Bad input; `field` is the dotted path (`trigger.tz`, `args`).
    #[error("invalid task: {field}: {message}")]
    Invalid { field: String, message: String },
    #[error("no task {0}")]
    NotFound(String),
    /// A taken name, or `max_instances` reached for a manual run.
    #[error("{0}")]
    Conflict(String),
    #[error("the task store holds an unreadable row: {0}")]
    Corrupt(String),
    #[error("task store: {0}")]
    Store(#[from] sqlx::Error),
    /// The database cannot be reached or set up; names where it is.
    #[error("{0}")]
    Unavailable(String),
}

impl TaskError {
    pub(crate) fn invalid(field: &str, message: impl Into<String>) -> TaskError {
        TaskError::Invalid {
            field: field.to_string(),
            message: message.into(),
        }
    }

    /// Whether the store could not be reached (a database restarting, a
    /// network cut): worth trying again, unlike a refused write.
    pub fn is_unavailable(&self) -> bool {
        match self {
            TaskError::Unavailable(_) => true,
            TaskError::Store(e) => {
                matches!(
                    e,
                    sqlx::Error::Io(_)
                        | sqlx::Error::Tls(_)
                        | sqlx::Error::PoolTimedOut
                        | sqlx::Error::PoolClosed
                        | sqlx::Error::WorkerCrashed
                        | sqlx::Error::Protocol(_)
                ) || matches!(e, sqlx::Error::Database(d) if d.code().is_some_and(|c| c.starts_with("57P") || c.starts_with("08")))
            }
            _ => false,
        }
    }

    /// The field an `Invalid` error is about.
    pub fn field(&self) -> Option<&str> {
        match self {
            TaskError::Invalid { field, .. } => Some(field),
            _ => None,
        }
    }
}
