//! Scheduled plugin calls: tasks (a plugin, its arguments, a trigger,
//! options) kept in `greffon.db`, fired by one loop, with a run history.
//!
//! # Layout
//!
//! - `model`: [`Task`], [`Trigger`], [`Run`], and what creates or changes
//!   a task ([`NewTask`], [`TaskPatch`]).
//! - `trigger`: cron (croner, IANA zones), interval and date fire times.
//! - `store`: the [`TaskStore`] trait and [`SqliteTaskStore`].
//! - `scheduler`: [`Scheduler`]: validation, CRUD, `run_now`, the loop
//!   (claim due runs and advance them in one transaction, dispatch, write
//!   back), crash recovery, history retention; the [`Runner`] it dispatches
//!   to and the [`Clock`] it reads.
//! - `runner`: [`Runner`] for the real [`greffon_host::Host`].
//! - `service`: the `tasks.*` host service behind the SDK's `greffon.tasks`.

mod model;
mod runner;
mod scheduler;
mod service;
mod store;
mod trigger;

pub use model::{
    Coalesce, NewTask, Options, Run, RunKind, RunStatus, Task, TaskKey, TaskPatch, Trigger,
};
pub use runner::{HostRunner, attach};
pub use scheduler::{
    CheckError, Clock, Outcome, RunFuture, Runner, Scheduler, Settings, SystemClock, TokioClock,
};
pub use service::TasksService;
pub use store::{Claimed, Fire, Plan, Planner, SqliteTaskStore, TaskStore};
pub use trigger::{check_zone, host_zone};

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
}

impl TaskError {
    pub(crate) fn invalid(field: &str, message: impl Into<String>) -> TaskError {
        TaskError::Invalid {
            field: field.to_string(),
            message: message.into(),
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
