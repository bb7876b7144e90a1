//! Where tasks and runs live: the [`TaskStore`] trait and its two
//! implementations, a SQLite file for one host ([`SqliteTaskStore`]) and a
//! PostgreSQL database shared by several ([`PgTaskStore`]), chosen at run
//! time through [`AnyTaskStore`].
//!
//! Both apply the same rules: claiming due work decides and writes in one
//! transaction (`BEGIN IMMEDIATE` in SQLite, `FOR UPDATE SKIP LOCKED` in
//! PostgreSQL), the scheduling decisions are a pure function passed in
//! ([`Planner`]), the retry rule is [`crate::Options::retry_at`], and a
//! uniqueness constraint on (task, fire time, attempt) makes a second run
//! of one fire impossible whatever races. A run holds a lease that its host
//! renews while it lasts; a run whose lease ran out is `lost`.

mod any;
mod postgres;
mod rows;
mod sqlite;

pub use any::AnyTaskStore;
pub use postgres::{PgReport, PgTaskStore};
pub use sqlite::SqliteTaskStore;

use crate::TaskError;
use crate::model::{Run, RunKind, RunStatus, Task, TaskKey};
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::future::Future;

/// One fire time of a due task, decided by the scheduler.
#[derive(Debug, Clone, PartialEq)]
pub struct Fire {
    pub scheduled_for: DateTime<Utc>,
    /// `Running` (dispatch it) or `Missed` (record it, with `error` saying why).
    pub status: RunStatus,
    pub error: Option<String>,
}

/// What to do with one due task: the runs to record and the next fire time.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub fires: Vec<Fire>,
    pub next_run_at: Option<DateTime<Utc>>,
}

/// The scheduling rules, given a due task and how many of its runs are
/// running.
pub type Planner = Box<dyn Fn(&Task, u32) -> Plan + Send + Sync>;

/// A run just claimed for dispatch, with its task as it was then.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub run: Run,
    pub task: Task,
}

/// One claiming round.
#[derive(Debug, Clone)]
pub struct Claim {
    pub now: DateTime<Utc>,
    /// The claiming process (`host:pid:start-ms`), written on its runs.
    pub owner: String,
    /// Tasks (and retries) claimed at most.
    pub limit: u32,
    /// Until when the claimed runs are the owner's; renewed while they run.
    pub lease_until: DateTime<Utc>,
    /// Only tasks of these plugins: a host claims what it can run. `None`:
    /// every task (one host, which records a disabled plugin's fire as an
    /// error rather than leave it due).
    pub plugins: Option<Vec<String>>,
}

/// The message of a run whose host stopped while it ran.
pub const LOST: &str = "lost: its greffon stopped or lost its lease during the run (crash, kill, power loss); the outcome is unknown";

/// Persistent tasks and run history. Every write is its own transaction;
/// `claim_due`, `start_manual`, `finish`, `expire` and `abandon` decide
/// and write in one.
pub trait TaskStore: Send + Sync + 'static {
    /// Saves a new task (its `id` is ignored); a taken name is a conflict.
    fn insert(&self, task: &Task) -> impl Future<Output = Result<Task, TaskError>> + Send;
    fn get(&self, key: &TaskKey) -> impl Future<Output = Result<Option<Task>, TaskError>> + Send;
    fn list(&self) -> impl Future<Output = Result<Vec<Task>, TaskError>> + Send;
    /// Overwrites the task with `task.id`.
    fn replace(&self, task: &Task) -> impl Future<Output = Result<Task, TaskError>> + Send;
    /// Deletes the task and its runs; false when there was none.
    fn delete(&self, id: i64) -> impl Future<Output = Result<bool, TaskError>> + Send;
    /// The earliest time something of `plugins` is due: an enabled task's
    /// `next_run_at` or a pending retry's `retry_at`.
    fn next_due(
        &self,
        plugins: Option<&[String]>,
    ) -> impl Future<Output = Result<Option<DateTime<Utc>>, TaskError>> + Send;
    /// In one transaction: the enabled tasks due at `claim.now` (at most
    /// `claim.limit`), `plan` applied to each, its runs inserted (owned and
    /// leased), `next_run_at` advanced; and the pending retries due, now
    /// running. Answers the runs to dispatch.
    fn claim_due(
        &self,
        claim: &Claim,
        plan: Planner,
    ) -> impl Future<Output = Result<Vec<Claimed>, TaskError>> + Send;
    /// In one transaction: a manual run of `task_id` unless `max_instances`
    /// runs are running (a conflict, unless `force`).
    fn start_manual(
        &self,
        task_id: i64,
        claim: &Claim,
        force: bool,
    ) -> impl Future<Output = Result<Run, TaskError>> + Send;
    /// Records a running run's outcome and, when it failed and the task
    /// allows, its next attempt (`pending`). Answers that retry. A run no
    /// longer `running` (lost meanwhile) is left as it is.
    fn finish(
        &self,
        run_id: i64,
        status: RunStatus,
        result: Option<&Value>,
        error: Option<&str>,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<Run>, TaskError>> + Send;
    fn run(&self, run_id: i64) -> impl Future<Output = Result<Option<Run>, TaskError>> + Send;
    /// The task's most recent runs, newest first.
    fn runs(
        &self,
        task_id: i64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<Run>, TaskError>> + Send;
    /// Extends the leases of `owner`'s running runs; answers how many.
    fn renew(
        &self,
        owner: &str,
        lease_until: DateTime<Utc>,
    ) -> impl Future<Output = Result<u64, TaskError>> + Send;
    /// Marks the running runs whose lease ended before `now` as lost
    /// (retried when the task allows); answers how many.
    fn expire(&self, now: DateTime<Utc>) -> impl Future<Output = Result<u64, TaskError>> + Send;
    /// The owners of runs still marked `running`.
    fn running_owners(&self) -> impl Future<Output = Result<Vec<String>, TaskError>> + Send;
    /// Marks `owner`'s running runs as lost with `message` (retried when
    /// the task allows); answers how many.
    fn abandon(
        &self,
        owner: &str,
        at: DateTime<Utc>,
        message: &str,
    ) -> impl Future<Output = Result<u64, TaskError>> + Send;
    /// Deletes finished runs beyond the newest `keep_per_task` of each task
    /// or finished before `before`.
    fn prune(
        &self,
        keep_per_task: u32,
        before: DateTime<Utc>,
    ) -> impl Future<Output = Result<u64, TaskError>> + Send;
    /// Resolves when another process changed the tasks (a new or edited
    /// task, a retry to take). Never, for a store only this process uses.
    fn changed(&self) -> impl Future<Output = ()> + Send;
    /// Whether several hosts share this store (each then claims only the
    /// tasks of the plugins it has enabled).
    fn shared(&self) -> bool;
    /// Records that `owner` is alive, with its clock, for `greffon doctor`
    /// to compare the hosts' clocks. Nothing, for a store of one host.
    fn heartbeat(
        &self,
        owner: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), TaskError>> + Send;
}

/// Milliseconds since the epoch: how both stores keep instants, so "what
/// is due" is an integer comparison and a time read back equals the one
/// written.
pub(crate) fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(crate) fn from_ms(v: Option<i64>) -> Option<DateTime<Utc>> {
    v.and_then(DateTime::from_timestamp_millis)
}

/// Task columns, in the order both stores select them.
pub(crate) const TASK_COLUMNS: &str = "id, name, plugin, args, trigger, enabled, coalesce, misfire_grace_s, \
     max_instances, jitter_s, timeout_s, retries, retry_backoff_s, next_run_at, last_run_at, created_at, updated_at";

pub(crate) const RUN_COLUMNS: &str = "id, task_id, kind, scheduled_for, started_at, finished_at, status, attempt, retry_at, result, error";

/// A taken name is the caller's conflict, not a store failure.
pub(crate) fn name_conflict(e: sqlx::Error, name: &str) -> TaskError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            TaskError::Conflict(format!("a task named '{name}' already exists"))
        }
        _ => e.into(),
    }
}

/// The JSON columns of a task being written: its arguments and trigger.
pub(crate) fn task_json(task: &Task) -> Result<(String, String), TaskError> {
    let args =
        serde_json::to_string(&task.args).map_err(|e| TaskError::invalid("args", e.to_string()))?;
    let trigger = serde_json::to_string(&task.trigger)
        .map_err(|e| TaskError::invalid("trigger", e.to_string()))?;
    Ok((args, trigger))
}

/// The run's next attempt when `status` is a failure the task retries:
/// `(attempt, retry_at)`. Only scheduled runs are retried; a manual run's
/// caller sees its outcome and decides.
pub(crate) fn next_attempt(
    task: &crate::Options,
    kind: &str,
    attempt: u32,
    status: RunStatus,
    at: DateTime<Utc>,
) -> Option<(u32, DateTime<Utc>)> {
    if kind != RunKind::Scheduled.as_str() || !status.retried() {
        return None;
    }
    task.retry_at(attempt, at).map(|t| (attempt + 1, t))
}
