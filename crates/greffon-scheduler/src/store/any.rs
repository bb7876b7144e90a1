//! The store `[scheduler]` chose: the home's SQLite file, or a PostgreSQL
//! database when `database_url` is set.

use super::{Claim, Claimed, PgTaskStore, Planner, SqliteTaskStore, TaskStore};
use crate::TaskError;
use crate::model::{Run, RunStatus, Task, TaskKey};
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::path::Path;

/// One of the two stores, decided at start-up.
#[derive(Debug, Clone)]
pub enum AnyTaskStore {
    Sqlite(SqliteTaskStore),
    Postgres(PgTaskStore),
}

impl AnyTaskStore {
    /// The store `[scheduler]` names: PostgreSQL when a database URL is
    /// given (greffon-core's `SchedulerConfig::database_url`), else the
    /// SQLite file `db_file`. `eager`: PostgreSQL is reached and migrated
    /// now, so that a wrong URL stops the start; otherwise at the first
    /// task operation (a command that may never touch tasks).
    pub async fn open(
        database_url: Option<&str>,
        db_file: &Path,
        eager: bool,
    ) -> Result<AnyTaskStore, TaskError> {
        Ok(match database_url {
            Some(url) if eager => AnyTaskStore::Postgres(PgTaskStore::connect(url).await?),
            Some(url) => AnyTaskStore::Postgres(PgTaskStore::lazy(url).await?),
            None => AnyTaskStore::Sqlite(SqliteTaskStore::new(db_file)),
        })
    }
}

/// Calls the same method on whichever store this is.
macro_rules! each {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            AnyTaskStore::Sqlite($s) => $call,
            AnyTaskStore::Postgres($s) => $call,
        }
    };
}

impl TaskStore for AnyTaskStore {
    async fn insert(&self, task: &Task) -> Result<Task, TaskError> {
        each!(self, s => s.insert(task).await)
    }

    async fn get(&self, key: &TaskKey) -> Result<Option<Task>, TaskError> {
        each!(self, s => s.get(key).await)
    }

    async fn list(&self) -> Result<Vec<Task>, TaskError> {
        each!(self, s => s.list().await)
    }

    async fn replace(&self, task: &Task) -> Result<Task, TaskError> {
        each!(self, s => s.replace(task).await)
    }

    async fn delete(&self, id: i64) -> Result<bool, TaskError> {
        each!(self, s => s.delete(id).await)
    }

    async fn next_due(
        &self,
        plugins: Option<&[String]>,
    ) -> Result<Option<DateTime<Utc>>, TaskError> {
        each!(self, s => s.next_due(plugins).await)
    }

    async fn claim_due(&self, claim: &Claim, plan: Planner) -> Result<Vec<Claimed>, TaskError> {
        each!(self, s => s.claim_due(claim, plan).await)
    }

    async fn start_manual(
        &self,
        task_id: i64,
        claim: &Claim,
        force: bool,
    ) -> Result<Run, TaskError> {
        each!(self, s => s.start_manual(task_id, claim, force).await)
    }

    async fn finish(
        &self,
        run_id: i64,
        status: RunStatus,
        result: Option<&Value>,
        error: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<Option<Run>, TaskError> {
        each!(self, s => s.finish(run_id, status, result, error, at).await)
    }

    async fn run(&self, run_id: i64) -> Result<Option<Run>, TaskError> {
        each!(self, s => s.run(run_id).await)
    }

    async fn runs(&self, task_id: i64, limit: u32) -> Result<Vec<Run>, TaskError> {
        each!(self, s => s.runs(task_id, limit).await)
    }

    async fn renew(&self, owner: &str, lease_until: DateTime<Utc>) -> Result<u64, TaskError> {
        each!(self, s => s.renew(owner, lease_until).await)
    }

    async fn expire(&self, now: DateTime<Utc>) -> Result<u64, TaskError> {
        each!(self, s => s.expire(now).await)
    }

    async fn running_owners(&self) -> Result<Vec<String>, TaskError> {
        each!(self, s => s.running_owners().await)
    }

    async fn abandon(
        &self,
        owner: &str,
        at: DateTime<Utc>,
        message: &str,
    ) -> Result<u64, TaskError> {
        each!(self, s => s.abandon(owner, at, message).await)
    }

    async fn prune(&self, keep_per_task: u32, before: DateTime<Utc>) -> Result<u64, TaskError> {
        each!(self, s => s.prune(keep_per_task, before).await)
    }

    async fn changed(&self) {
        each!(self, s => s.changed().await)
    }

    fn shared(&self) -> bool {
        each!(self, s => s.shared())
    }

    async fn heartbeat(&self, owner: &str, now: DateTime<Utc>) -> Result<(), TaskError> {
        each!(self, s => s.heartbeat(owner, now).await)
    }
}
