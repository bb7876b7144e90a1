//! Tasks in a PostgreSQL database shared by several hosts.
//!
//! Coordination is the database's: a host claims due tasks with `FOR
//! UPDATE SKIP LOCKED` (two hosts never decide the same task's fires at
//! once, and neither waits for the other), the unique index on (task, fire,
//! attempt) refuses a second run of a fire whatever races, each running
//! run carries a lease its host renews, and writers `NOTIFY` the others so
//! a task created on one host fires on time from any.

use super::rows::{run_from, task_from};
use super::{
    Claim, Claimed, LOST, Planner, RUN_COLUMNS, TASK_COLUMNS, TaskStore, from_ms, ms,
    name_conflict, next_attempt, task_json,
};
use crate::TaskError;
use crate::model::{Run, RunKind, RunStatus, Task, TaskKey};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{
    PgArguments, PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions,
};
use sqlx::query::QueryScalar;
use sqlx::{AssertSqlSafe, Postgres, Row, SqlSafeStr, Transaction};
use std::borrow::Cow;
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::Notify;

/// The channel writers notify and hosts listen on.
const CHANNEL: &str = "greffon_tasks";

/// Connections per host: the loop's claims, the runs' outcomes, the
/// lease keeper, and the API's reads at once.
const MAX_CONNECTIONS: u32 = 8;

/// How long an operation waits for a connection (or to connect) before it
/// fails: the loop then pauses and tries again, rather than hang.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

fn migrator() -> Migrator {
    Migrator::with_migrations(vec![Migration::new(
        100,
        Cow::Borrowed("tasks"),
        MigrationType::Simple,
        include_str!("../../migrations/postgres/0100_tasks.sql").into_sql_str(),
        false,
    )])
}

/// Queries built only from the column lists and literals.
fn columns(sql: String) -> AssertSqlSafe<String> {
    AssertSqlSafe(sql)
}

/// Tasks in PostgreSQL, through a connection pool.
#[derive(Debug, Clone)]
pub struct PgTaskStore {
    pool: PgPool,
    /// `host:port/database`, for messages (never the password).
    location: Arc<str>,
    /// Signalled by the listener when another process notifies; started
    /// by the first [`TaskStore::changed`].
    changes: Arc<OnceLock<Arc<Notify>>>,
}

/// What `greffon doctor` reads of a shared store.
#[derive(Debug, Clone)]
pub struct PgReport {
    pub location: String,
    /// Migrations applied / known.
    pub migrated: (usize, usize),
    /// This host's clock minus the database's, in milliseconds.
    pub skew_ms: i64,
    /// Hosts seen in the last five minutes and their clock minus the
    /// database's at their last heartbeat.
    pub hosts: Vec<(String, i64)>,
}

impl PgTaskStore {
    /// Parses `url`, connects, and applies the migrations. A wrong URL or
    /// an unreachable server is an error naming the host and port; the
    /// password is remembered for redaction and never shown.
    pub async fn connect(url: &str) -> Result<PgTaskStore, TaskError> {
        let store = Self::reach(url, true).await?;
        migrator().run(&store.pool).await.map_err(|e| {
            TaskError::Unavailable(format!(
                "migrating the task database at {}: {e}",
                store.location
            ))
        })?;
        Ok(store)
    }

    /// What `greffon doctor` reports of the database at `url`, without
    /// changing it (migrations are `serve`'s to apply).
    pub async fn inspect(url: &str) -> Result<PgReport, TaskError> {
        let store = Self::reach(url, true).await?;
        let report = store.report().await;
        store.pool.close().await;
        report
    }

    /// A store that connects at its first operation, for commands that
    /// may not touch tasks at all (a plugin run, `greffon mcp`): the
    /// database being down then fails only the task operations. The
    /// migrations are `serve`'s (or [`PgTaskStore::connect`]'s).
    pub async fn lazy(url: &str) -> Result<PgTaskStore, TaskError> {
        Self::reach(url, false).await
    }

    async fn reach(url: &str, eager: bool) -> Result<PgTaskStore, TaskError> {
        // Remembered first, so that no message below can show it.
        if let Some(password) = password_of(url) {
            greffon_host::remember("database password", &password);
        }
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(TaskError::Unavailable(
                "[scheduler] database_url is not a PostgreSQL URL: it must start with postgres:// \
                 (postgres://user:password@host:port/database)"
                    .into(),
            ));
        }
        let options = PgConnectOptions::from_str(url).map_err(|e| {
            TaskError::Unavailable(format!(
                "[scheduler] database_url is not a PostgreSQL URL: {}",
                greffon_host::redact(&e.to_string())
            ))
        })?;
        let location: Arc<str> = format!(
            "{}:{}/{}",
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or(options.get_username())
        )
        .into();
        let unreachable = |e: sqlx::Error| {
            TaskError::Unavailable(format!(
                "cannot reach the task database at {location}: {}",
                greffon_host::redact(&e.to_string())
            ))
        };
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT);
        let pool = if eager {
            pool.connect_with(options).await.map_err(unreachable)?
        } else {
            pool.connect_lazy_with(options)
        };
        Ok(PgTaskStore {
            pool,
            location,
            changes: Arc::new(OnceLock::new()),
        })
    }

    /// `host:port/database`.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Migrated, and the hosts' clocks against the database's.
    async fn report(&self) -> Result<PgReport, TaskError> {
        let known = migrator().iter().count();
        let migrated: bool =
            sqlx::query_scalar("SELECT to_regclass('scheduler_hosts') IS NOT NULL")
                .fetch_one(&self.pool)
                .await?;
        let applied: i64 = if migrated {
            sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
                .fetch_one(&self.pool)
                .await?
        } else {
            0
        };
        let sent = Utc::now();
        let db: i64 =
            sqlx::query_scalar("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint")
                .fetch_one(&self.pool)
                .await?;
        let received = Utc::now();
        // The database read its clock somewhere in the round trip: its middle.
        let here = ms(sent) + (ms(received) - ms(sent)) / 2;
        let hosts = if migrated {
            sqlx::query_as::<_, (String, i64)>(
                "SELECT owner, host_clock - db_clock FROM scheduler_hosts
                 WHERE db_clock > (extract(epoch FROM clock_timestamp()) * 1000)::bigint - 300000
                 ORDER BY owner",
            )
            .fetch_all(&self.pool)
            .await?
        } else {
            Vec::new()
        };
        Ok(PgReport {
            location: self.location.to_string(),
            migrated: (usize::try_from(applied).unwrap_or(0), known),
            skew_ms: here - db,
            hosts,
        })
    }

    /// Listens on [`CHANNEL`] for as long as the pool is open. A lost
    /// connection may have dropped notifications, so its return wakes the
    /// loop too.
    fn listen(&self) -> Arc<Notify> {
        self.changes
            .get_or_init(|| {
                let notify = Arc::new(Notify::new());
                let (pool, wake) = (self.pool.clone(), notify.clone());
                tokio::spawn(async move {
                    while !pool.is_closed() {
                        let mut listener = match PgListener::connect_with(&pool).await {
                            Ok(l) => l,
                            Err(_) => {
                                tokio::time::sleep(Duration::from_secs(1)).await;
                                continue;
                            }
                        };
                        if listener.listen(CHANNEL).await.is_err() {
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            continue;
                        }
                        wake.notify_one();
                        while let Ok(Some(_)) = listener.try_recv().await {
                            wake.notify_one();
                        }
                    }
                });
                notify
            })
            .clone()
    }
}

/// The password of a `postgres://user:password@host/db` URL, decoded.
fn password_of(url: &str) -> Option<String> {
    let url = url::Url::parse(url).ok()?;
    let password = percent_encoding::percent_decode_str(url.password()?).decode_utf8_lossy();
    (!password.is_empty()).then(|| password.into_owned())
}

fn int(v: u32) -> i64 {
    i64::from(v)
}

/// Commits `tx` when `result` is a success, and rolls it back at once
/// otherwise (a refusal, a failed statement). A transaction merely dropped
/// is rolled back only when sqlx's pool next flushes its connection, in a
/// background task, and it holds its locks until then: a claim (`SKIP
/// LOCKED`) in that moment would pass a due task by.
async fn settle<T>(
    tx: Transaction<'_, Postgres>,
    result: Result<T, TaskError>,
) -> Result<T, TaskError> {
    match result {
        Ok(value) => {
            tx.commit().await?;
            Ok(value)
        }
        Err(e) => {
            // The refusal is the answer; a rollback that fails leaves the
            // connection to the pool's own clean-up.
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

/// Tells the other hosts that something is due sooner than they think.
async fn notify(conn: &mut PgConnection) -> Result<(), TaskError> {
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(CHANNEL)
        .execute(conn)
        .await?;
    Ok(())
}

async fn tasks_by_id(
    conn: &mut PgConnection,
    ids: &[i64],
) -> Result<HashMap<i64, Task>, TaskError> {
    let rows = sqlx::query(columns(format!(
        "SELECT {TASK_COLUMNS} FROM tasks WHERE id = ANY($1)"
    )))
    .bind(ids)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| task_from(r).map(|t| (t.id, t)))
        .collect()
}

/// Ends the running runs `ids` with `status`, then inserts the retry each
/// one's task allows. Answers the retries. A status that is never retried
/// is the one `UPDATE`, atomic without a transaction around it.
async fn end_runs(
    conn: &mut PgConnection,
    ids: &[i64],
    status: RunStatus,
    result: Option<&Value>,
    error: Option<&str>,
    at: DateTime<Utc>,
) -> Result<Vec<Run>, TaskError> {
    let ended = sqlx::query_as::<_, (i64, String, Option<i64>, i64)>(
        "UPDATE task_runs SET status = $1, result = $2, error = $3, finished_at = $4, lease_until = NULL
         WHERE id = ANY($5) AND status = 'running' RETURNING task_id, kind, scheduled_for, attempt",
    )
    .bind(status.as_str())
    .bind(result.map(Value::to_string))
    .bind(error)
    .bind(ms(at))
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?;
    if !status.retried() {
        return Ok(Vec::new());
    }
    let task_ids: Vec<i64> = ended.iter().map(|e| e.0).collect();
    let tasks = tasks_by_id(conn, &task_ids).await?;
    let mut retries = Vec::new();
    for (task_id, kind, scheduled_for, attempt) in ended {
        let Some(task) = tasks.get(&task_id) else {
            continue;
        };
        let attempt = u32::try_from(attempt).unwrap_or(u32::MAX);
        if let Some((next, retry_at)) = next_attempt(&task.options, &kind, attempt, status, at) {
            let row = sqlx::query(columns(format!(
                "INSERT INTO task_runs (task_id, kind, scheduled_for, status, attempt, retry_at)
                 VALUES ($1, 'scheduled', $2, 'pending', $3, $4)
                 ON CONFLICT DO NOTHING RETURNING {RUN_COLUMNS}"
            )))
            .bind(task_id)
            .bind(scheduled_for)
            .bind(int(next))
            .bind(ms(retry_at))
            .fetch_optional(&mut *conn)
            .await?;
            if let Some(row) = row {
                retries.push(run_from(&row)?);
            }
        }
    }
    if !retries.is_empty() {
        notify(conn).await?;
    }
    Ok(retries)
}

/// Takes the pending retries due at `claim.now` (running, owned, leased).
async fn claim_retries(
    tx: &mut Transaction<'_, Postgres>,
    claim: &Claim,
) -> Result<Vec<Claimed>, TaskError> {
    let rows = sqlx::query(columns(format!(
        "UPDATE task_runs SET status = 'running', owner = $4, started_at = $1, lease_until = $5
         WHERE id IN (SELECT r.id FROM task_runs r JOIN tasks t ON t.id = r.task_id
                      WHERE r.status = 'pending' AND r.retry_at <= $1 AND t.enabled
                      AND ($2::text[] IS NULL OR t.plugin = ANY($2))
                      ORDER BY r.retry_at LIMIT $3 FOR UPDATE OF r SKIP LOCKED)
         RETURNING {RUN_COLUMNS}"
    )))
    .bind(ms(claim.now))
    .bind(claim.plugins.as_deref())
    .bind(int(claim.limit))
    .bind(&claim.owner)
    .bind(ms(claim.lease_until))
    .fetch_all(&mut **tx)
    .await?;
    let runs: Vec<Run> = rows.iter().map(run_from).collect::<Result<_, _>>()?;
    let task_ids: Vec<i64> = runs.iter().map(|r| r.task_id).collect();
    let tasks = tasks_by_id(tx, &task_ids).await?;
    Ok(runs
        .into_iter()
        .filter_map(|run| {
            let task = tasks.get(&run.task_id)?.clone();
            Some(Claimed { run, task })
        })
        .collect())
}

/// The runs a claiming round inserts, as columns for `UNNEST`.
#[derive(Default)]
struct NewRuns {
    task_id: Vec<i64>,
    scheduled_for: Vec<i64>,
    started_at: Vec<Option<i64>>,
    finished_at: Vec<Option<i64>>,
    status: Vec<&'static str>,
    error: Vec<Option<String>>,
    lease_until: Vec<Option<i64>>,
}

impl PgTaskStore {
    /// Ends the running runs `running` selects (locking them, skipping
    /// any another host is ending) as lost with `message`, retried when
    /// the task allows; answers how many.
    async fn lose(
        &self,
        running: QueryScalar<'_, Postgres, i64, PgArguments>,
        message: &str,
        at: DateTime<Utc>,
    ) -> Result<u64, TaskError> {
        let mut tx = self.pool.begin().await?;
        let ended = async {
            let ids: Vec<i64> = running.fetch_all(&mut *tx).await?;
            if !ids.is_empty() {
                end_runs(&mut tx, &ids, RunStatus::Lost, None, Some(message), at).await?;
            }
            Ok::<_, TaskError>(ids.len() as u64)
        }
        .await;
        settle(tx, ended).await
    }

    /// The fires of the due tasks, decided by `plan`, as one insert and one
    /// update.
    async fn claim_fires(
        tx: &mut Transaction<'_, Postgres>,
        claim: &Claim,
        plan: &Planner,
    ) -> Result<Vec<Claimed>, TaskError> {
        // Each task with how many of its runs are running, in one query.
        let due = sqlx::query(columns(format!(
            "SELECT {TASK_COLUMNS}, (SELECT COUNT(*) FROM task_runs r
                                     WHERE r.task_id = tasks.id AND r.status = 'running') AS running
             FROM tasks WHERE enabled AND next_run_at IS NOT NULL
             AND next_run_at <= $1 AND ($2::text[] IS NULL OR plugin = ANY($2))
             ORDER BY next_run_at LIMIT $3 FOR UPDATE OF tasks SKIP LOCKED"
        )))
        .bind(ms(claim.now))
        .bind(claim.plugins.as_deref())
        .bind(int(claim.limit))
        .fetch_all(&mut **tx)
        .await?;
        if due.is_empty() {
            return Ok(Vec::new());
        }
        let tasks: Vec<Task> = due.iter().map(task_from).collect::<Result<_, _>>()?;
        let ids: Vec<i64> = tasks.iter().map(|t| t.id).collect();
        let mut runs = NewRuns::default();
        let (mut next, mut last) = (Vec::new(), Vec::new());
        for (task, row) in tasks.iter().zip(&due) {
            let running: i64 = row.try_get("running")?;
            let decided = plan(task, u32::try_from(running).unwrap_or(u32::MAX));
            for fire in &decided.fires {
                let started = fire.status == RunStatus::Running;
                runs.task_id.push(task.id);
                runs.scheduled_for.push(ms(fire.scheduled_for));
                runs.started_at.push(started.then(|| ms(claim.now)));
                runs.finished_at.push((!started).then(|| ms(claim.now)));
                runs.status.push(fire.status.as_str());
                runs.error.push(fire.error.clone());
                runs.lease_until
                    .push(started.then(|| ms(claim.lease_until)));
            }
            next.push(decided.next_run_at.map(ms));
            last.push(decided.fires.last().map(|f| ms(f.scheduled_for)));
        }
        let inserted = sqlx::query(columns(format!(
            "INSERT INTO task_runs (task_id, kind, scheduled_for, started_at, finished_at, status, owner,
                                    error, lease_until)
             SELECT u.task_id, 'scheduled', u.scheduled_for, u.started_at, u.finished_at, u.status, $8,
                    u.error, u.lease_until
             FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::text[], $6::text[],
                         $7::bigint[])
                  AS u(task_id, scheduled_for, started_at, finished_at, status, error, lease_until)
             ON CONFLICT DO NOTHING RETURNING {RUN_COLUMNS}"
        )))
        .bind(&runs.task_id)
        .bind(&runs.scheduled_for)
        .bind(&runs.started_at)
        .bind(&runs.finished_at)
        .bind(&runs.status)
        .bind(&runs.error)
        .bind(&runs.lease_until)
        .bind(&claim.owner)
        .fetch_all(&mut **tx)
        .await?;
        sqlx::query(
            "UPDATE tasks t SET next_run_at = u.next_run_at, last_run_at = COALESCE(u.last_run_at, t.last_run_at)
             FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[]) AS u(id, next_run_at, last_run_at)
             WHERE t.id = u.id",
        )
        .bind(&ids)
        .bind(&next)
        .bind(&last)
        .execute(&mut **tx)
        .await?;
        let by_id: HashMap<i64, &Task> = tasks.iter().map(|t| (t.id, t)).collect();
        let mut claimed = Vec::new();
        for row in &inserted {
            let run = run_from(row)?;
            if run.status == RunStatus::Running
                && let Some(task) = by_id.get(&run.task_id)
            {
                claimed.push(Claimed {
                    run,
                    task: (*task).clone(),
                });
            }
        }
        claimed.sort_by_key(|c| c.run.id);
        Ok(claimed)
    }
}

/// Binds a task's columns from `name` to `next_run_at`, in the order the
/// insert and the update both list them.
fn bind_task<'q>(
    query: sqlx::query::Query<'q, Postgres, PgArguments>,
    task: &'q Task,
    args: String,
    trigger: String,
) -> sqlx::query::Query<'q, Postgres, PgArguments> {
    let o = &task.options;
    query
        .bind(&task.name)
        .bind(&task.plugin)
        .bind(args)
        .bind(trigger)
        .bind(o.enabled)
        .bind(o.coalesce.as_str())
        .bind(o.misfire_grace_s)
        .bind(int(o.max_instances))
        .bind(o.jitter_s)
        .bind(o.timeout_s)
        .bind(int(o.retries))
        .bind(o.retry_backoff_s)
        .bind(task.next_run_at.map(ms))
}

impl TaskStore for PgTaskStore {
    async fn insert(&self, task: &Task) -> Result<Task, TaskError> {
        let (args, trigger) = task_json(task)?;
        let sql = columns(format!(
            "INSERT INTO tasks (name, plugin, args, trigger, enabled, coalesce, misfire_grace_s,
             max_instances, jitter_s, timeout_s, retries, retry_backoff_s, next_run_at, last_run_at,
             created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
             RETURNING {TASK_COLUMNS}"
        ));
        let mut tx = self.pool.begin().await?;
        let inserted = async {
            let row = bind_task(sqlx::query(sql), task, args, trigger)
                .bind(task.last_run_at.map(ms))
                .bind(ms(task.created_at))
                .bind(ms(task.updated_at))
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| name_conflict(e, &task.name))?;
            notify(&mut tx).await?;
            Ok::<_, TaskError>(row)
        }
        .await;
        task_from(&settle(tx, inserted).await?)
    }

    async fn get(&self, key: &TaskKey) -> Result<Option<Task>, TaskError> {
        let query = match key {
            TaskKey::Id(id) => sqlx::query(columns(format!(
                "SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1"
            )))
            .bind(*id),
            TaskKey::Name(name) => sqlx::query(columns(format!(
                "SELECT {TASK_COLUMNS} FROM tasks WHERE name = $1"
            )))
            .bind(name.clone()),
        };
        query
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(task_from)
            .transpose()
    }

    async fn list(&self) -> Result<Vec<Task>, TaskError> {
        sqlx::query(columns(format!(
            "SELECT {TASK_COLUMNS} FROM tasks ORDER BY id"
        )))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(task_from)
        .collect()
    }

    async fn replace(&self, task: &Task) -> Result<Task, TaskError> {
        let (args, trigger) = task_json(task)?;
        let sql = columns(format!(
            "UPDATE tasks SET name = $1, plugin = $2, args = $3, trigger = $4, enabled = $5, coalesce = $6,
             misfire_grace_s = $7, max_instances = $8, jitter_s = $9, timeout_s = $10, retries = $11,
             retry_backoff_s = $12, next_run_at = $13, updated_at = $14 WHERE id = $15
             RETURNING {TASK_COLUMNS}"
        ));
        let mut tx = self.pool.begin().await?;
        let replaced = async {
            let row = bind_task(sqlx::query(sql), task, args, trigger)
                .bind(ms(task.updated_at))
                .bind(task.id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(|e| name_conflict(e, &task.name))?;
            let row = row.ok_or_else(|| TaskError::NotFound(task.id.to_string()))?;
            notify(&mut tx).await?;
            Ok::<_, TaskError>(row)
        }
        .await;
        task_from(&settle(tx, replaced).await?)
    }

    async fn delete(&self, id: i64) -> Result<bool, TaskError> {
        let n = sqlx::query("DELETE FROM tasks WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    async fn next_due(
        &self,
        plugins: Option<&[String]>,
    ) -> Result<Option<DateTime<Utc>>, TaskError> {
        let v: Option<i64> = sqlx::query_scalar(
            "SELECT LEAST(
                (SELECT MIN(next_run_at) FROM tasks WHERE enabled AND next_run_at IS NOT NULL
                 AND ($1::text[] IS NULL OR plugin = ANY($1))),
                (SELECT MIN(r.retry_at) FROM task_runs r JOIN tasks t ON t.id = r.task_id
                 WHERE r.status = 'pending' AND t.enabled AND ($1::text[] IS NULL OR t.plugin = ANY($1))))",
        )
        .bind(plugins)
        .fetch_one(&self.pool)
        .await?;
        Ok(from_ms(v))
    }

    async fn claim_due(&self, claim: &Claim, plan: Planner) -> Result<Vec<Claimed>, TaskError> {
        let mut tx = self.pool.begin().await?;
        let claimed = async {
            let mut claimed = Self::claim_fires(&mut tx, claim, &plan).await?;
            claimed.extend(claim_retries(&mut tx, claim).await?);
            Ok::<_, TaskError>(claimed)
        }
        .await;
        settle(tx, claimed).await
    }

    async fn start_manual(
        &self,
        task_id: i64,
        claim: &Claim,
        force: bool,
    ) -> Result<Run, TaskError> {
        let mut tx = self.pool.begin().await?;
        let started = async {
            // Locks the task: two manual runs on two hosts count each other.
            let max: Option<i64> =
                sqlx::query_scalar("SELECT max_instances FROM tasks WHERE id = $1 FOR UPDATE")
                    .bind(task_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            let Some(max) = max else {
                return Err(TaskError::NotFound(task_id.to_string()));
            };
            let running: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM task_runs WHERE task_id = $1 AND status = 'running'",
            )
            .bind(task_id)
            .fetch_one(&mut *tx)
            .await?;
            if running >= max && !force {
                return Err(TaskError::Conflict(format!(
                    "task {task_id} already has {running} run(s) running (max_instances = {max}); pass force to run anyway"
                )));
            }
            let row = sqlx::query(columns(format!(
                "INSERT INTO task_runs (task_id, kind, scheduled_for, started_at, status, owner, lease_until)
                 VALUES ($1, $2, $3, $3, 'running', $4, $5) RETURNING {RUN_COLUMNS}"
            )))
            .bind(task_id)
            .bind(RunKind::Manual.as_str())
            .bind(ms(claim.now))
            .bind(&claim.owner)
            .bind(ms(claim.lease_until))
            .fetch_one(&mut *tx)
            .await?;
            Ok::<_, TaskError>(row)
        }
        .await;
        run_from(&settle(tx, started).await?)
    }

    async fn finish(
        &self,
        run_id: i64,
        status: RunStatus,
        result: Option<&Value>,
        error: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<Option<Run>, TaskError> {
        if !status.retried() {
            // Most runs end so: one statement, no transaction (each saved
            // round trip is the server's CPU).
            let mut conn = self.pool.acquire().await?;
            end_runs(&mut conn, &[run_id], status, result, error, at).await?;
            return Ok(None);
        }
        let mut tx = self.pool.begin().await?;
        let retries = end_runs(&mut tx, &[run_id], status, result, error, at).await;
        Ok(settle(tx, retries).await?.into_iter().next())
    }

    async fn run(&self, run_id: i64) -> Result<Option<Run>, TaskError> {
        sqlx::query(columns(format!(
            "SELECT {RUN_COLUMNS} FROM task_runs WHERE id = $1"
        )))
        .bind(run_id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(run_from)
        .transpose()
    }

    async fn runs(&self, task_id: i64, limit: u32) -> Result<Vec<Run>, TaskError> {
        sqlx::query(columns(format!(
            "SELECT {RUN_COLUMNS} FROM task_runs WHERE task_id = $1 ORDER BY id DESC LIMIT $2"
        )))
        .bind(task_id)
        .bind(int(limit))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(run_from)
        .collect()
    }

    async fn renew(&self, owner: &str, lease_until: DateTime<Utc>) -> Result<u64, TaskError> {
        Ok(sqlx::query(
            "UPDATE task_runs SET lease_until = $1 WHERE owner = $2 AND status = 'running'",
        )
        .bind(ms(lease_until))
        .bind(owner)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    async fn expire(&self, now: DateTime<Utc>) -> Result<u64, TaskError> {
        let running = sqlx::query_scalar(
            "SELECT id FROM task_runs WHERE status = 'running' AND lease_until < $1
             FOR UPDATE SKIP LOCKED",
        )
        .bind(ms(now));
        self.lose(running, LOST, now).await
    }

    async fn running_owners(&self) -> Result<Vec<String>, TaskError> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT owner FROM task_runs WHERE status = 'running' AND owner IS NOT NULL",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    async fn abandon(
        &self,
        owner: &str,
        at: DateTime<Utc>,
        message: &str,
    ) -> Result<u64, TaskError> {
        let running = sqlx::query_scalar(
            "SELECT id FROM task_runs WHERE owner = $1 AND status = 'running' FOR UPDATE SKIP LOCKED",
        )
        .bind(owner);
        self.lose(running, message, at).await
    }

    async fn prune(&self, keep_per_task: u32, before: DateTime<Utc>) -> Result<u64, TaskError> {
        // A host silent since the history's cut-off is gone (each process
        // beats under its own owner, so restarts leave rows behind).
        sqlx::query("DELETE FROM scheduler_hosts WHERE host_clock < $1")
            .bind(ms(before))
            .execute(&self.pool)
            .await?;
        Ok(sqlx::query(
            "DELETE FROM task_runs WHERE status NOT IN ('running', 'pending') AND (finished_at < $1 OR id IN (
                SELECT id FROM (SELECT id, ROW_NUMBER() OVER (PARTITION BY task_id ORDER BY id DESC) AS n
                                FROM task_runs) numbered WHERE n > $2))",
        )
        .bind(ms(before))
        .bind(int(keep_per_task))
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    async fn changed(&self) {
        self.listen().notified().await
    }

    fn shared(&self) -> bool {
        true
    }

    async fn heartbeat(&self, owner: &str, now: DateTime<Utc>) -> Result<(), TaskError> {
        sqlx::query(
            "INSERT INTO scheduler_hosts (owner, host_clock, db_clock)
             VALUES ($1, $2, (extract(epoch FROM clock_timestamp()) * 1000)::bigint)
             ON CONFLICT (owner) DO UPDATE SET host_clock = EXCLUDED.host_clock, db_clock = EXCLUDED.db_clock",
        )
        .bind(owner)
        .bind(ms(now))
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::password_of;

    #[test]
    fn the_password_of_a_url_is_found_and_decoded() {
        assert_eq!(
            password_of("postgres://greffon:s%40cret:x@db.lan:5433/tasks").as_deref(),
            Some("s@cret:x")
        );
        assert_eq!(password_of("postgres://greffon@db.lan/tasks"), None);
        assert_eq!(password_of("postgres:///tasks?host=/run/pg"), None);
    }
}
