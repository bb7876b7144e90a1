//! Tasks in a SQLite file (the home's `greffon.db`): one host.

use super::rows::{run_from, task_from};
use super::{
    Claim, Claimed, Fire, LOST, Planner, RUN_COLUMNS, TASK_COLUMNS, TaskStore, from_ms, ms,
    name_conflict, next_attempt, task_json,
};
use crate::TaskError;
use crate::model::{Run, RunKind, RunStatus, Task, TaskKey};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::query::QueryScalar;
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Connection, SqlSafeStr, Sqlite, Transaction};
use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard};

/// Versions from 100 leave the host's own migrations (1..) their range in
/// the shared `_sqlx_migrations` table.
fn migrator() -> Migrator {
    let migration = |version, name, sql: &'static str| {
        Migration::new(
            version,
            Cow::Borrowed(name),
            MigrationType::Simple,
            sql.into_sql_str(),
            false,
        )
    };
    let mut m = Migrator::with_migrations(vec![
        migration(
            100,
            "tasks",
            include_str!("../../migrations/0100_tasks.sql"),
        ),
        migration(
            101,
            "retries and leases",
            include_str!("../../migrations/0101_retries_leases.sql"),
        ),
    ]);
    m.set_ignore_missing(true);
    m
}

/// Tasks in a SQLite file (the home's `greffon.db`).
///
/// One connection, taken in turn: SQLite has one writer anyway and the
/// statements are short. It is opened at
/// the first operation, so a command that never touches tasks (a plugin
/// run that could use `greffon.tasks` but does not) does not pay for it.
#[derive(Debug, Clone)]
pub struct SqliteTaskStore {
    options: Arc<SqliteConnectOptions>,
    conn: Arc<Mutex<Option<SqliteConnection>>>,
}

/// Queries built only from the column lists below and literals.
fn columns(sql: String) -> AssertSqlSafe<String> {
    AssertSqlSafe(sql)
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
            options: Arc::new(options),
            conn: Arc::new(Mutex::new(None)),
        }
    }

    /// The connection, taken in turn. The first operation connects and
    /// applies the migrations.
    async fn conn(&self) -> Result<MappedMutexGuard<'_, SqliteConnection>, TaskError> {
        let mut slot = self.conn.lock().await;
        if slot.is_none() {
            let mut c = SqliteConnection::connect_with(&self.options).await?;
            // `run` is `run_direct(None, conn, false)` behind an `Acquire`
            // bound whose future rustc cannot prove `Send` for every
            // lifetime ("not general enough"); sqlx exposes `run_direct`
            // for exactly that.
            migrator()
                .run_direct(None, &mut c, false)
                .await
                .map_err(|e| TaskError::Store(e.into()))?;
            *slot = Some(c);
        }
        Ok(MutexGuard::map(slot, |c| {
            c.as_mut().expect("connected just above")
        }))
    }

    /// Ends the running runs `running` selects as lost with `message`,
    /// retried when the task allows; answers how many.
    async fn lose(
        &self,
        running: QueryScalar<'static, Sqlite, i64, SqliteArguments>,
        message: String,
        at: DateTime<Utc>,
    ) -> Result<u64, TaskError> {
        let mut conn = self.conn().await?;
        let c = &mut *conn;
        let mut tx = immediate(c).await?;
        let ids: Vec<i64> = running.fetch_all(&mut *tx).await?;
        end_runs(&mut tx, &ids, RunStatus::Lost, None, Some(&message), at).await?;
        tx.commit().await?;
        Ok(ids.len() as u64)
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
    claim: &Claim,
) -> Result<Option<Run>, TaskError> {
    let running = fire.status == RunStatus::Running;
    let row = sqlx::query(columns(format!(
        "INSERT INTO task_runs (task_id, kind, scheduled_for, started_at, finished_at, status, owner, error, lease_until)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING {RUN_COLUMNS}"
    )))
    .bind(task_id)
    .bind(kind.as_str())
    .bind(ms(fire.scheduled_for))
    .bind(running.then(|| ms(claim.now)))
    .bind((!running).then(|| ms(claim.now)))
    .bind(fire.status.as_str())
    .bind(&claim.owner)
    .bind(fire.error.as_deref())
    .bind(running.then(|| ms(claim.lease_until)))
    .fetch_optional(&mut **tx)
    .await?;
    row.as_ref().map(run_from).transpose()
}

/// `plugins` as a JSON array for `json_each`, or NULL for every plugin.
fn plugin_filter(plugins: Option<&[String]>) -> Option<String> {
    plugins.map(|p| Value::from(p.to_vec()).to_string())
}

/// Ends the running runs `ids` (already chosen in `tx`) with `status` and
/// `error`, then inserts the retry each one's task allows. Answers the
/// retries.
async fn end_runs(
    tx: &mut Transaction<'_, Sqlite>,
    ids: &[i64],
    status: RunStatus,
    result: Option<&Value>,
    error: Option<&str>,
    at: DateTime<Utc>,
) -> Result<Vec<Run>, TaskError> {
    let mut retries = Vec::new();
    for id in ids {
        let ended = sqlx::query_as::<_, (i64, String, Option<i64>, i64)>(
            "UPDATE task_runs SET status = ?, result = ?, error = ?, finished_at = ?, lease_until = NULL
             WHERE id = ? AND status = 'running' RETURNING task_id, kind, scheduled_for, attempt",
        )
        .bind(status.as_str())
        .bind(result.map(Value::to_string))
        .bind(error)
        .bind(ms(at))
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
        let Some((task_id, kind, scheduled_for, attempt)) = ended else {
            continue;
        };
        if !status.retried() {
            continue;
        }
        let task = sqlx::query(columns(format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?"
        )))
        .bind(task_id)
        .fetch_optional(&mut **tx)
        .await?;
        let Some(task) = task.as_ref().map(task_from).transpose()? else {
            continue;
        };
        let attempt = u32::try_from(attempt).unwrap_or(u32::MAX);
        if let Some((next, retry_at)) = next_attempt(&task.options, &kind, attempt, status, at) {
            let row = sqlx::query(columns(format!(
                "INSERT INTO task_runs (task_id, kind, scheduled_for, status, attempt, retry_at)
                 VALUES (?, 'scheduled', ?, 'pending', ?, ?)
                 ON CONFLICT DO NOTHING RETURNING {RUN_COLUMNS}"
            )))
            .bind(task_id)
            .bind(scheduled_for)
            .bind(next)
            .bind(ms(retry_at))
            .fetch_optional(&mut **tx)
            .await?;
            if let Some(row) = row {
                retries.push(run_from(&row)?);
            }
        }
    }
    Ok(retries)
}

/// Takes the pending retries due at `claim.now` (running, owned, leased).
async fn claim_retries(
    tx: &mut Transaction<'_, Sqlite>,
    claim: &Claim,
) -> Result<Vec<Claimed>, TaskError> {
    let rows = sqlx::query(columns(format!(
        "UPDATE task_runs SET status = 'running', owner = ?, started_at = ?, lease_until = ?
         WHERE id IN (SELECT r.id FROM task_runs r JOIN tasks t ON t.id = r.task_id
                      WHERE r.status = 'pending' AND r.retry_at <= ? AND t.enabled = 1
                      AND (? IS NULL OR t.plugin IN (SELECT value FROM json_each(?)))
                      ORDER BY r.retry_at LIMIT ?)
         RETURNING {RUN_COLUMNS}"
    )))
    .bind(&claim.owner)
    .bind(ms(claim.now))
    .bind(ms(claim.lease_until))
    .bind(ms(claim.now))
    .bind(plugin_filter(claim.plugins.as_deref()))
    .bind(plugin_filter(claim.plugins.as_deref()))
    .bind(claim.limit)
    .fetch_all(&mut **tx)
    .await?;
    let mut claimed = Vec::with_capacity(rows.len());
    for row in &rows {
        let run = run_from(row)?;
        let task = sqlx::query(columns(format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?"
        )))
        .bind(run.task_id)
        .fetch_one(&mut **tx)
        .await?;
        claimed.push(Claimed {
            run,
            task: task_from(&task)?,
        });
    }
    Ok(claimed)
}

/// Binds a task's columns from `name` to `next_run_at`, in the order the
/// insert and the update both list them.
fn bind_task<'q>(
    query: sqlx::query::Query<'q, Sqlite, SqliteArguments>,
    task: &'q Task,
    args: String,
    trigger: String,
) -> sqlx::query::Query<'q, Sqlite, SqliteArguments> {
    let o = &task.options;
    query
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
        .bind(o.retries)
        .bind(o.retry_backoff_s)
        .bind(task.next_run_at.map(ms))
}

impl TaskStore for SqliteTaskStore {
    async fn insert(&self, task: &Task) -> Result<Task, TaskError> {
        let task = task.clone();
        let mut conn = self.conn().await?;
        let c = &mut *conn;
        let (args, trigger) = task_json(&task)?;
        let sql = columns(format!(
            "INSERT INTO tasks (name, plugin, args, trigger, enabled, coalesce, misfire_grace_s,
             max_instances, jitter_s, timeout_s, retries, retry_backoff_s, next_run_at, last_run_at,
             created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING {TASK_COLUMNS}"
        ));
        let row = bind_task(sqlx::query(sql), &task, args, trigger)
            .bind(task.last_run_at.map(ms))
            .bind(ms(task.created_at))
            .bind(ms(task.updated_at))
            .fetch_one(&mut *c)
            .await
            .map_err(|e| name_conflict(e, &task.name))?;
        task_from(&row)
    }

    async fn get(&self, key: &TaskKey) -> Result<Option<Task>, TaskError> {
        let key = key.clone();
        let mut conn = self.conn().await?;
        let c = &mut *conn;
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
    }

    async fn list(&self) -> Result<Vec<Task>, TaskError> {
        let mut conn = self.conn().await?;
        let c = &mut *conn;
        sqlx::query(columns(format!(
            "SELECT {TASK_COLUMNS} FROM tasks ORDER BY id"
        )))
        .fetch_all(&mut *c)
        .await?
        .iter()
        .map(task_from)
        .collect()
    }

    async fn replace(&self, task: &Task) -> Result<Task, TaskError> {
        let task = task.clone();
        let mut conn = self.conn().await?;
        let c = &mut *conn;
        let (args, trigger) = task_json(&task)?;
        let sql = columns(format!(
            "UPDATE tasks SET name = ?, plugin = ?, args = ?, trigger = ?, enabled = ?, coalesce = ?,
             misfire_grace_s = ?, max_instances = ?, jitter_s = ?, timeout_s = ?, retries = ?,
             retry_backoff_s = ?, next_run_at = ?, updated_at = ? WHERE id = ? RETURNING {TASK_COLUMNS}"
        ));
        let row = bind_task(sqlx::query(sql), &task, args, trigger)
            .bind(ms(task.updated_at))
            .bind(task.id)
            .fetch_optional(&mut *c)
            .await
            .map_err(|e| name_conflict(e, &task.name))?;
        match row {
            Some(row) => task_from(&row),
            None => Err(TaskError::NotFound(task.id.to_string())),
        }
    }

    async fn delete(&self, id: i64) -> Result<bool, TaskError> {
        let mut conn = self.conn().await?;
        let c = &mut *conn;
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
    }

    async fn next_due(
        &self,
        plugins: Option<&[String]>,
    ) -> Result<Option<DateTime<Utc>>, TaskError> {
        let filter = plugin_filter(plugins);
        let mut conn = self.conn().await?;
        let c = &mut *conn;
        let v: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(t) FROM (
                SELECT MIN(next_run_at) AS t FROM tasks WHERE enabled = 1 AND next_run_at IS NOT NULL
                AND (?1 IS NULL OR plugin IN (SELECT value FROM json_each(?1)))
                UNION ALL
                SELECT MIN(r.retry_at) FROM task_runs r JOIN tasks t ON t.id = r.task_id
                WHERE r.status = 'pending' AND t.enabled = 1
                AND (?1 IS NULL OR t.plugin IN (SELECT value FROM json_each(?1))))",
        )
        .bind(filter)
        .fetch_one(&mut *c)
        .await?;
        Ok(from_ms(v))
    }

    async fn claim_due(&self, claim: &Claim, plan: Planner) -> Result<Vec<Claimed>, TaskError> {
        let claim = claim.clone();
        let mut conn = self.conn().await?;
        let c = &mut *conn;
        let mut tx = immediate(c).await?;
        let due = sqlx::query(columns(format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE enabled = 1 AND next_run_at IS NOT NULL
             AND next_run_at <= ?1 AND (?2 IS NULL OR plugin IN (SELECT value FROM json_each(?2)))
             ORDER BY next_run_at LIMIT ?3"
        )))
        .bind(ms(claim.now))
        .bind(plugin_filter(claim.plugins.as_deref()))
        .bind(claim.limit)
        .fetch_all(&mut *tx)
        .await?;
        let mut claimed = Vec::new();
        for row in &due {
            let task = task_from(row)?;
            let running = Self::running_count(&mut tx, task.id).await?;
            let decided = plan(&task, running);
            let mut last = None;
            for fire in &decided.fires {
                let run = insert_run(&mut tx, task.id, RunKind::Scheduled, fire, &claim).await?;
                last = Some(fire.scheduled_for);
                // None: this fire has its run already (the
                // uniqueness constraint), so it is not run again.
                if let Some(run) = run.filter(|r| r.status == RunStatus::Running) {
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
        claimed.extend(claim_retries(&mut tx, &claim).await?);
        tx.commit().await?;
        Ok(claimed)
    }

    async fn start_manual(
        &self,
        task_id: i64,
        claim: &Claim,
        force: bool,
    ) -> Result<Run, TaskError> {
        let claim = claim.clone();
        let mut conn = self.conn().await?;
        let c = &mut *conn;
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
            scheduled_for: claim.now,
            status: RunStatus::Running,
            error: None,
        };
        let run = insert_run(&mut tx, task_id, RunKind::Manual, &fire, &claim)
            .await?
            .ok_or_else(|| TaskError::Corrupt("a manual run was not recorded".into()))?;
        tx.commit().await?;
        Ok(run)
    }

    async fn finish(
        &self,
        run_id: i64,
        status: RunStatus,
        result: Option<&Value>,
        error: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<Option<Run>, TaskError> {
        let result = result.cloned();
        let error = error.map(str::to_string);
        let mut conn = self.conn().await?;
        let c = &mut *conn;
        let mut tx = immediate(c).await?;
        let retries = end_runs(
            &mut tx,
            &[run_id],
            status,
            result.as_ref(),
            error.as_deref(),
            at,
        )
        .await?;
        tx.commit().await?;
        Ok(retries.into_iter().next())
    }

    async fn run(&self, run_id: i64) -> Result<Option<Run>, TaskError> {
        let mut conn = self.conn().await?;
        let c = &mut *conn;
        sqlx::query(columns(format!(
            "SELECT {RUN_COLUMNS} FROM task_runs WHERE id = ?"
        )))
        .bind(run_id)
        .fetch_optional(&mut *c)
        .await?
        .as_ref()
        .map(run_from)
        .transpose()
    }

    async fn runs(&self, task_id: i64, limit: u32) -> Result<Vec<Run>, TaskError> {
        let mut conn = self.conn().await?;
        let c = &mut *conn;
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
    }

    async fn running_owners(&self) -> Result<Vec<String>, TaskError> {
        let mut conn = self.conn().await?;
        let c = &mut *conn;
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT owner FROM task_runs WHERE status = 'running' AND owner IS NOT NULL",
        )
        .fetch_all(&mut *c)
        .await?)
    }

    async fn abandon(
        &self,
        owner: &str,
        at: DateTime<Utc>,
        message: &str,
    ) -> Result<u64, TaskError> {
        let running =
            sqlx::query_scalar("SELECT id FROM task_runs WHERE owner = ? AND status = 'running'")
                .bind(owner.to_string());
        self.lose(running, message.to_string(), at).await
    }

    async fn renew(&self, owner: &str, lease_until: DateTime<Utc>) -> Result<u64, TaskError> {
        let owner = owner.to_string();
        let mut conn = self.conn().await?;
        let c = &mut *conn;
        Ok(sqlx::query(
            "UPDATE task_runs SET lease_until = ? WHERE owner = ? AND status = 'running'",
        )
        .bind(ms(lease_until))
        .bind(&owner)
        .execute(&mut *c)
        .await?
        .rows_affected())
    }

    async fn expire(&self, now: DateTime<Utc>) -> Result<u64, TaskError> {
        let running = sqlx::query_scalar(
            "SELECT id FROM task_runs WHERE status = 'running' AND lease_until < ?",
        )
        .bind(ms(now));
        self.lose(running, LOST.to_string(), now).await
    }

    async fn changed(&self) {
        std::future::pending().await
    }

    fn shared(&self) -> bool {
        false
    }

    async fn heartbeat(&self, _owner: &str, _now: DateTime<Utc>) -> Result<(), TaskError> {
        Ok(())
    }

    async fn prune(&self, keep_per_task: u32, before: DateTime<Utc>) -> Result<u64, TaskError> {
        let mut conn = self.conn().await?;
        let c = &mut *conn;
        let mut tx = immediate(c).await?;
        let n = sqlx::query(
            "DELETE FROM task_runs WHERE status NOT IN ('running', 'pending') AND (finished_at < ? OR id IN (
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
    }
}
