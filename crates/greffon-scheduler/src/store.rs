//! Where tasks and runs live: the [`TaskStore`] trait and its SQLite
//! implementation in `greffon.db`.
//!
//! The trait is shaped for a PostgreSQL implementation to follow without
//! changing callers: claiming due work is one call that runs in one
//! transaction (`BEGIN IMMEDIATE` here, `FOR UPDATE SKIP LOCKED` there), and
//! the scheduling decisions are a pure function passed in, so both stores
//! apply the same rules.

use crate::TaskError;
use crate::model::{Coalesce, Options, Run, RunKind, RunStatus, Task, TaskKey, Trigger};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteRow, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Connection, Row, SqlSafeStr, Sqlite, Transaction};
use std::borrow::Cow;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

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

/// Persistent tasks and run history. Every write is its own transaction;
/// `claim_due` and `start_manual` decide and write in one.
pub trait TaskStore: Send + Sync + 'static {
    /// Saves a new task (its `id` is ignored); a taken name is a conflict.
    fn insert(&self, task: &Task) -> impl Future<Output = Result<Task, TaskError>> + Send;
    fn get(&self, key: &TaskKey) -> impl Future<Output = Result<Option<Task>, TaskError>> + Send;
    fn list(&self) -> impl Future<Output = Result<Vec<Task>, TaskError>> + Send;
    /// Overwrites the task with `task.id`.
    fn replace(&self, task: &Task) -> impl Future<Output = Result<Task, TaskError>> + Send;
    /// Deletes the task and its runs; false when there was none.
    fn delete(&self, id: i64) -> impl Future<Output = Result<bool, TaskError>> + Send;
    /// The earliest `next_run_at` of an enabled task.
    fn next_due(&self) -> impl Future<Output = Result<Option<DateTime<Utc>>, TaskError>> + Send;
    /// In one transaction: the enabled tasks due at `now` (at most
    /// `limit`), `plan` applied to each, its runs inserted (owned by
    /// `owner`), `next_run_at` advanced. Answers the runs to dispatch.
    fn claim_due(
        &self,
        now: DateTime<Utc>,
        owner: &str,
        limit: u32,
        plan: Planner,
    ) -> impl Future<Output = Result<Vec<Claimed>, TaskError>> + Send;
    /// In one transaction: a manual run of `task_id` unless `max_instances`
    /// runs are running (a conflict, unless `force`).
    fn start_manual(
        &self,
        task_id: i64,
        owner: &str,
        now: DateTime<Utc>,
        force: bool,
    ) -> impl Future<Output = Result<Run, TaskError>> + Send;
    fn finish(
        &self,
        run_id: i64,
        status: RunStatus,
        result: Option<&Value>,
        error: Option<&str>,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), TaskError>> + Send;
    fn run(&self, run_id: i64) -> impl Future<Output = Result<Option<Run>, TaskError>> + Send;
    /// The task's most recent runs, newest first.
    fn runs(
        &self,
        task_id: i64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<Run>, TaskError>> + Send;
    /// The owners of runs still marked `running`.
    fn running_owners(&self) -> impl Future<Output = Result<Vec<String>, TaskError>> + Send;
    /// Marks `owner`'s running runs as errors with `message`; answers how many.
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
}

/// Versions from 100 leave the host's own migrations (1..) their range in
/// the shared `_sqlx_migrations` table.
fn migrator() -> Migrator {
    let mut m = Migrator::with_migrations(vec![Migration::new(
        100,
        Cow::Borrowed("tasks"),
        MigrationType::Simple,
        include_str!("../migrations/0100_tasks.sql").into_sql_str(),
        false,
    )]);
    m.set_ignore_missing(true);
    m
}

type Op<'c, T> = Pin<Box<dyn Future<Output = Result<T, TaskError>> + Send + 'c>>;

/// Tasks in a SQLite file (the home's `greffon.db`).
///
/// One connection, taken in turn: SQLite has one writer anyway, the
/// statements are short, and a pool would add acquire timers, which fire
/// early when tests run the loop on tokio's paused clock. It is opened at
/// the first operation, so a command that never touches tasks (a plugin
/// run that could use `greffon.tasks` but does not) does not pay for it.
#[derive(Debug, Clone)]
pub struct SqliteTaskStore {
    options: SqliteConnectOptions,
    conn: Arc<Mutex<Option<SqliteConnection>>>,
}

/// Queries built only from the column lists below and literals.
fn columns(sql: String) -> AssertSqlSafe<String> {
    AssertSqlSafe(sql)
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn from_ms(v: Option<i64>) -> Option<DateTime<Utc>> {
    v.and_then(DateTime::from_timestamp_millis)
}

const TASK_COLUMNS: &str = "id, name, plugin, args, trigger, enabled, coalesce, misfire_grace_s, \
     max_instances, jitter_s, timeout_s, next_run_at, last_run_at, created_at, updated_at";

const RUN_COLUMNS: &str =
    "id, task_id, kind, scheduled_for, started_at, finished_at, status, result, error";

fn task_from(row: &SqliteRow) -> Result<Task, TaskError> {
    let trigger: String = row.try_get("trigger")?;
    let trigger: Trigger = serde_json::from_str(&trigger)
        .map_err(|e| TaskError::Corrupt(format!("task trigger {trigger}: {e}")))?;
    let args: String = row.try_get("args")?;
    let coalesce: String = row.try_get("coalesce")?;
    Ok(Task {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        plugin: row.try_get("plugin")?,
        args: serde_json::from_str(&args)
            .map_err(|e| TaskError::Corrupt(format!("task arguments: {e}")))?,
        trigger,
        options: Options {
            enabled: row.try_get("enabled")?,
            coalesce: Coalesce::parse(&coalesce),
            misfire_grace_s: row.try_get("misfire_grace_s")?,
            max_instances: row.try_get("max_instances")?,
            jitter_s: row.try_get("jitter_s")?,
            timeout_s: row.try_get("timeout_s")?,
        },
        next_run_at: from_ms(row.try_get("next_run_at")?),
        last_run_at: from_ms(row.try_get("last_run_at")?),
        created_at: from_ms(row.try_get("created_at")?).unwrap_or_default(),
        updated_at: from_ms(row.try_get("updated_at")?).unwrap_or_default(),
    })
}

fn run_from(row: &SqliteRow) -> Result<Run, TaskError> {
    let kind: String = row.try_get("kind")?;
    let status: String = row.try_get("status")?;
    let result: Option<String> = row.try_get("result")?;
    Ok(Run {
        id: row.try_get("id")?,
        task_id: row.try_get("task_id")?,
        kind: if kind == "manual" {
            RunKind::Manual
        } else {
            RunKind::Scheduled
        },
        scheduled_for: from_ms(row.try_get("scheduled_for")?),
        started_at: from_ms(row.try_get("started_at")?),
        finished_at: from_ms(row.try_get("finished_at")?),
        status: RunStatus::parse(&status),
        result: result.and_then(|r| serde_json::from_str(&r).ok()),
        error: row.try_get("error")?,
    })
}

/// A taken name is the caller's conflict, not a store failure.
fn name_conflict(e: sqlx::Error, name: &str) -> TaskError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            TaskError::Conflict(format!("a task named '{name}' already exists"))
        }
        _ => e.into(),
    }
}

impl SqliteTaskStore {
    /// Opens (creating it if needed) the database at `path` and applies
    /// the scheduler's migrations.
    pub fn new(path: &Path) -> SqliteTaskStore {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // In WAL mode NORMAL loses at most the last commits on power
            // loss, never consistency; FULL would fsync every run's outcome.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        SqliteTaskStore {
            options,
            conn: Arc::new(Mutex::new(None)),
        }
    }

    /// Runs `op` on the connection inside `spawn_blocking`, driven by the
    /// runtime's handle. The connection's own worker thread does the I/O
    /// either way; a blocking task in flight is what keeps tokio's paused
    /// clock (tests of the loop) from jumping ahead while the database
    /// answers, so a query takes no virtual time. The first operation
    /// connects and applies the migrations.
    async fn with<T: Send + 'static>(
        &self,
        op: impl for<'c> FnOnce(&'c mut SqliteConnection) -> Op<'c, T> + Send + 'static,
    ) -> Result<T, TaskError> {
        let conn = self.conn.clone();
        let options = self.options.clone();
        let handle = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            handle.block_on(async move {
                let mut slot = conn.lock().await;
                let conn = match &mut *slot {
                    Some(c) => c,
                    None => {
                        let mut c = SqliteConnection::connect_with(&options).await?;
                        migrator()
                            .run(&mut c)
                            .await
                            .map_err(|e| TaskError::Store(e.into()))?;
                        slot.insert(c)
                    }
                };
                op(conn).await
            })
        })
        .await
        .map_err(|e| TaskError::Corrupt(format!("a store operation failed: {e}")))?
    }

    async fn running_count(
        tx: &mut Transaction<'_, Sqlite>,
        task_id: i64,
    ) -> Result<u32, TaskError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM task_runs WHERE task_id = ? AND status = 'running'",
        )
        .bind(task_id)
        .fetch_one(&mut **tx)
        .await?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }
}

/// A write transaction. IMMEDIATE takes the write lock at once: a deferred
/// transaction that upgrades later gets SQLITE_BUSY without waiting the
/// busy timeout.
async fn immediate(conn: &mut SqliteConnection) -> Result<Transaction<'_, Sqlite>, sqlx::Error> {
    conn.begin_with("BEGIN IMMEDIATE").await
}

async fn insert_run(
    tx: &mut Transaction<'_, Sqlite>,
    task_id: i64,
    kind: RunKind,
    fire: &Fire,
    owner: &str,
    now: DateTime<Utc>,
) -> Result<Run, TaskError> {
    let running = fire.status == RunStatus::Running;
    let row = sqlx::query(columns(format!(
        "INSERT INTO task_runs (task_id, kind, scheduled_for, started_at, finished_at, status, owner, error)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING {RUN_COLUMNS}"
    )))
    .bind(task_id)
    .bind(kind.as_str())
    .bind(ms(fire.scheduled_for))
    .bind(running.then(|| ms(now)))
    .bind((!running).then(|| ms(now)))
    .bind(fire.status.as_str())
    .bind(owner)
    .bind(fire.error.as_deref())
    .fetch_one(&mut **tx)
    .await?;
    run_from(&row)
}

fn task_binds(task: &Task) -> Result<(String, String), TaskError> {
    let args =
        serde_json::to_string(&task.args).map_err(|e| TaskError::invalid("args", e.to_string()))?;
    let trigger = serde_json::to_string(&task.trigger)
        .map_err(|e| TaskError::invalid("trigger", e.to_string()))?;
    Ok((args, trigger))
}

impl TaskStore for SqliteTaskStore {
    async fn insert(&self, task: &Task) -> Result<Task, TaskError> {
        let task = task.clone();
        self.with(move |c| {
            Box::pin(async move {
                let (args, trigger) = task_binds(&task)?;
                let o = &task.options;
                let row = sqlx::query(columns(format!(
                    "INSERT INTO tasks (name, plugin, args, trigger, enabled, coalesce, misfire_grace_s,
                     max_instances, jitter_s, timeout_s, next_run_at, last_run_at, created_at, updated_at)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING {TASK_COLUMNS}"
                )))
                .bind(&task.name)
                .bind(&task.plugin)
                .bind(args)
                .bind(trigger)
                .bind(o.enabled)
                .bind(o.coalesce.as_str())
                .bind(o.misfire_grace_s)
                .bind(o.max_instances)
                .bind(o.jitter_s)
                .bind(o.timeout_s)
                .bind(task.next_run_at.map(ms))
                .bind(task.last_run_at.map(ms))
                .bind(ms(task.created_at))
                .bind(ms(task.updated_at))
                .fetch_one(&mut *c)
                .await
                .map_err(|e| name_conflict(e, &task.name))?;
                task_from(&row)
            })
        })
        .await
    }

    async fn get(&self, key: &TaskKey) -> Result<Option<Task>, TaskError> {
        let key = key.clone();
        self.with(move |c| {
            Box::pin(async move {
                let query = match &key {
                    TaskKey::Id(id) => sqlx::query(columns(format!(
                        "SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?"
                    )))
                    .bind(*id),
                    TaskKey::Name(name) => sqlx::query(columns(format!(
                        "SELECT {TASK_COLUMNS} FROM tasks WHERE name = ?"
                    )))
                    .bind(name.clone()),
                };
                query
                    .fetch_optional(&mut *c)
                    .await?
                    .as_ref()
                    .map(task_from)
                    .transpose()
            })
        })
        .await
    }

    async fn list(&self) -> Result<Vec<Task>, TaskError> {
        self.with(move |c| {
            Box::pin(async move {
                sqlx::query(columns(format!(
                    "SELECT {TASK_COLUMNS} FROM tasks ORDER BY id"
                )))
                .fetch_all(&mut *c)
                .await?
                .iter()
                .map(task_from)
                .collect()
            })
        })
        .await
    }

    async fn replace(&self, task: &Task) -> Result<Task, TaskError> {
        let task = task.clone();
        self.with(move |c| {
            Box::pin(async move {
                let (args, trigger) = task_binds(&task)?;
                let o = &task.options;
                let row = sqlx::query(columns(format!(
                    "UPDATE tasks SET name = ?, plugin = ?, args = ?, trigger = ?, enabled = ?, coalesce = ?,
                     misfire_grace_s = ?, max_instances = ?, jitter_s = ?, timeout_s = ?, next_run_at = ?,
                     updated_at = ? WHERE id = ? RETURNING {TASK_COLUMNS}"
                )))
                .bind(&task.name)
                .bind(&task.plugin)
                .bind(args)
                .bind(trigger)
                .bind(o.enabled)
                .bind(o.coalesce.as_str())
                .bind(o.misfire_grace_s)
                .bind(o.max_instances)
                .bind(o.jitter_s)
                .bind(o.timeout_s)
                .bind(task.next_run_at.map(ms))
                .bind(ms(task.updated_at))
                .bind(task.id)
                .fetch_optional(&mut *c)
                .await
                .map_err(|e| name_conflict(e, &task.name))?;
                match row {
                    Some(row) => task_from(&row),
                    None => Err(TaskError::NotFound(task.id.to_string())),
                }
            })
        })
        .await
    }

    async fn delete(&self, id: i64) -> Result<bool, TaskError> {
        self.with(move |c| {
            Box::pin(async move {
                let mut tx = immediate(c).await?;
                sqlx::query("DELETE FROM task_runs WHERE task_id = ?")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                let n = sqlx::query("DELETE FROM tasks WHERE id = ?")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                tx.commit().await?;
                Ok(n > 0)
            })
        })
        .await
    }

    async fn next_due(&self) -> Result<Option<DateTime<Utc>>, TaskError> {
        self.with(move |c| {
            Box::pin(async move {
                let v: Option<i64> = sqlx::query_scalar(
                    "SELECT MIN(next_run_at) FROM tasks WHERE enabled = 1 AND next_run_at IS NOT NULL",
                )
                .fetch_one(&mut *c)
                .await?;
                Ok(from_ms(v))
            })
        })
        .await
    }

    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        owner: &str,
        limit: u32,
        plan: Planner,
    ) -> Result<Vec<Claimed>, TaskError> {
        let owner = owner.to_string();
        self.with(move |c| {
            Box::pin(async move {
                let mut tx = immediate(c).await?;
                let due = sqlx::query(columns(format!(
                    "SELECT {TASK_COLUMNS} FROM tasks WHERE enabled = 1 AND next_run_at IS NOT NULL
                     AND next_run_at <= ? ORDER BY next_run_at LIMIT ?"
                )))
                .bind(ms(now))
                .bind(limit)
                .fetch_all(&mut *tx)
                .await?;
                let mut claimed = Vec::new();
                for row in &due {
                    let task = task_from(row)?;
                    let running = Self::running_count(&mut tx, task.id).await?;
                    let decided = plan(&task, running);
                    let mut last = None;
                    for fire in &decided.fires {
                        let run =
                            insert_run(&mut tx, task.id, RunKind::Scheduled, fire, &owner, now).await?;
                        last = Some(fire.scheduled_for);
                        if run.status == RunStatus::Running {
                            claimed.push(Claimed {
                                run,
                                task: task.clone(),
                            });
                        }
                    }
                    sqlx::query(
                        "UPDATE tasks SET next_run_at = ?, last_run_at = COALESCE(?, last_run_at) WHERE id = ?",
                    )
                    .bind(decided.next_run_at.map(ms))
                    .bind(last.map(ms))
                    .bind(task.id)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(claimed)
            })
        })
        .await
    }

    async fn start_manual(
        &self,
        task_id: i64,
        owner: &str,
        now: DateTime<Utc>,
        force: bool,
    ) -> Result<Run, TaskError> {
        let owner = owner.to_string();
        self.with(move |c| {
            Box::pin(async move {
                let mut tx = immediate(c).await?;
                let max: Option<u32> = sqlx::query_scalar("SELECT max_instances FROM tasks WHERE id = ?")
                    .bind(task_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                let Some(max) = max else {
                    return Err(TaskError::NotFound(task_id.to_string()));
                };
                let running = Self::running_count(&mut tx, task_id).await?;
                if running >= max && !force {
                    return Err(TaskError::Conflict(format!(
                        "task {task_id} already has {running} run(s) running (max_instances = {max}); pass force to run anyway"
                    )));
                }
                let fire = Fire {
                    scheduled_for: now,
                    status: RunStatus::Running,
                    error: None,
                };
                let run = insert_run(&mut tx, task_id, RunKind::Manual, &fire, &owner, now).await?;
                tx.commit().await?;
                Ok(run)
            })
        })
        .await
    }

    async fn finish(
        &self,
        run_id: i64,
        status: RunStatus,
        result: Option<&Value>,
        error: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<(), TaskError> {
        let result = result.cloned();
        let error = error.map(str::to_string);
        self.with(move |c| {
            Box::pin(async move {
                sqlx::query(
                    "UPDATE task_runs SET status = ?, result = ?, error = ?, finished_at = ?
                     WHERE id = ? AND status = 'running'",
                )
                .bind(status.as_str())
                .bind(result.as_ref().map(Value::to_string))
                .bind(error.as_deref())
                .bind(ms(at))
                .bind(run_id)
                .execute(&mut *c)
                .await?;
                Ok(())
            })
        })
        .await
    }

    async fn run(&self, run_id: i64) -> Result<Option<Run>, TaskError> {
        self.with(move |c| {
            Box::pin(async move {
                sqlx::query(columns(format!(
                    "SELECT {RUN_COLUMNS} FROM task_runs WHERE id = ?"
                )))
                .bind(run_id)
                .fetch_optional(&mut *c)
                .await?
                .as_ref()
                .map(run_from)
                .transpose()
            })
        })
        .await
    }

    async fn runs(&self, task_id: i64, limit: u32) -> Result<Vec<Run>, TaskError> {
        self.with(move |c| {
            Box::pin(async move {
                sqlx::query(columns(format!(
                    "SELECT {RUN_COLUMNS} FROM task_runs WHERE task_id = ? ORDER BY id DESC LIMIT ?"
                )))
                .bind(task_id)
                .bind(limit)
                .fetch_all(&mut *c)
                .await?
                .iter()
                .map(run_from)
                .collect()
            })
        })
        .await
    }

    async fn running_owners(&self) -> Result<Vec<String>, TaskError> {
        self.with(move |c| {
            Box::pin(async move {
                Ok(sqlx::query_scalar(
                    "SELECT DISTINCT owner FROM task_runs WHERE status = 'running' AND owner IS NOT NULL",
                )
                .fetch_all(&mut *c)
                .await?)
            })
        })
        .await
    }

    async fn abandon(
        &self,
        owner: &str,
        at: DateTime<Utc>,
        message: &str,
    ) -> Result<u64, TaskError> {
        let owner = owner.to_string();
        let message = message.to_string();
        self.with(move |c| {
            Box::pin(async move {
                Ok(sqlx::query(
                    "UPDATE task_runs SET status = 'error', error = ?, finished_at = ?
                     WHERE owner = ? AND status = 'running'",
                )
                .bind(&message)
                .bind(ms(at))
                .bind(&owner)
                .execute(&mut *c)
                .await?
                .rows_affected())
            })
        })
        .await
    }

    async fn prune(&self, keep_per_task: u32, before: DateTime<Utc>) -> Result<u64, TaskError> {
        self.with(move |c| {
            Box::pin(async move {
                let mut tx = immediate(c).await?;
                let n = sqlx::query(
                    "DELETE FROM task_runs WHERE status != 'running' AND (finished_at < ? OR id IN (
                        SELECT id FROM (SELECT id, ROW_NUMBER() OVER (PARTITION BY task_id ORDER BY id DESC) AS n
                                        FROM task_runs) WHERE n > ?))",
                )
                .bind(ms(before))
                .bind(keep_per_task)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                tx.commit().await?;
                Ok(n)
            })
        })
        .await
    }
}
