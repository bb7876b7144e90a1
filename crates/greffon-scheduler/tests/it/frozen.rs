//! The SQLite store for the tests that run the loop on tokio's paused
//! clock.
//!
//! The paused clock jumps to the next timer whenever the runtime has
//! nothing to do, and waiting for SQLite's own thread to answer looks like
//! nothing to do: a query would seem to take minutes of virtual time, and
//! fires would be judged late. Here each operation runs inside
//! `spawn_blocking` (a blocking task in flight holds the paused clock
//! still), driven by the runtime's handle, so a query takes no virtual
//! time. The store itself stays a plain async store: this is the tests'
//! own adapter, not a mode of the store.

use chrono::{DateTime, Utc};
use greffon_scheduler::{
    Claim, Claimed, Planner, Run, RunStatus, SqliteTaskStore, Task, TaskError, TaskKey, TaskStore,
};
use serde_json::Value;
use std::future::Future;

/// [`SqliteTaskStore`] whose every operation takes no virtual time.
#[derive(Debug, Clone)]
pub struct Frozen(pub SqliteTaskStore);

/// `op` run to its end with the paused clock held still.
async fn still<T: Send + 'static>(op: impl Future<Output = T> + Send + 'static) -> T {
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || handle.block_on(op))
        .await
        .expect("a store operation panicked")
}

impl TaskStore for Frozen {
    fn insert(&self, task: &Task) -> impl Future<Output = Result<Task, TaskError>> + Send {
        let (s, task) = (self.0.clone(), task.clone());
        still(async move { s.insert(&task).await })
    }

    fn get(&self, key: &TaskKey) -> impl Future<Output = Result<Option<Task>, TaskError>> + Send {
        let (s, key) = (self.0.clone(), key.clone());
        still(async move { s.get(&key).await })
    }

    fn list(&self) -> impl Future<Output = Result<Vec<Task>, TaskError>> + Send {
        let s = self.0.clone();
        still(async move { s.list().await })
    }

    fn replace(&self, task: &Task) -> impl Future<Output = Result<Task, TaskError>> + Send {
        let (s, task) = (self.0.clone(), task.clone());
        still(async move { s.replace(&task).await })
    }

    fn delete(&self, id: i64) -> impl Future<Output = Result<bool, TaskError>> + Send {
        let s = self.0.clone();
        still(async move { s.delete(id).await })
    }

    fn next_due(
        &self,
        plugins: Option<&[String]>,
    ) -> impl Future<Output = Result<Option<DateTime<Utc>>, TaskError>> + Send {
        let (s, plugins) = (self.0.clone(), plugins.map(<[String]>::to_vec));
        still(async move { s.next_due(plugins.as_deref()).await })
    }

    fn claim_due(
        &self,
        claim: &Claim,
        plan: Planner,
    ) -> impl Future<Output = Result<Vec<Claimed>, TaskError>> + Send {
        let (s, claim) = (self.0.clone(), claim.clone());
        still(async move { s.claim_due(&claim, plan).await })
    }

    fn start_manual(
        &self,
        task_id: i64,
        claim: &Claim,
        force: bool,
    ) -> impl Future<Output = Result<Run, TaskError>> + Send {
        let (s, claim) = (self.0.clone(), claim.clone());
        still(async move { s.start_manual(task_id, &claim, force).await })
    }

    fn finish(
        &self,
        run_id: i64,
        status: RunStatus,
        result: Option<&Value>,
        error: Option<&str>,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<Run>, TaskError>> + Send {
        let s = self.0.clone();
        let (result, error) = (result.cloned(), error.map(str::to_string));
        still(async move {
            s.finish(run_id, status, result.as_ref(), error.as_deref(), at)
                .await
        })
    }

    fn run(&self, run_id: i64) -> impl Future<Output = Result<Option<Run>, TaskError>> + Send {
        let s = self.0.clone();
        still(async move { s.run(run_id).await })
    }

    fn runs(
        &self,
        task_id: i64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<Run>, TaskError>> + Send {
        let s = self.0.clone();
        still(async move { s.runs(task_id, limit).await })
    }

    fn renew(
        &self,
        owner: &str,
        lease_until: DateTime<Utc>,
    ) -> impl Future<Output = Result<u64, TaskError>> + Send {
        let (s, owner) = (self.0.clone(), owner.to_string());
        still(async move { s.renew(&owner, lease_until).await })
    }

    fn expire(&self, now: DateTime<Utc>) -> impl Future<Output = Result<u64, TaskError>> + Send {
        let s = self.0.clone();
        still(async move { s.expire(now).await })
    }

    fn running_owners(&self) -> impl Future<Output = Result<Vec<String>, TaskError>> + Send {
        let s = self.0.clone();
        still(async move { s.running_owners().await })
    }

    fn abandon(
        &self,
        owner: &str,
        at: DateTime<Utc>,
        message: &str,
    ) -> impl Future<Output = Result<u64, TaskError>> + Send {
        let (s, owner, message) = (self.0.clone(), owner.to_string(), message.to_string());
        still(async move { s.abandon(&owner, at, &message).await })
    }

    fn prune(
        &self,
        keep_per_task: u32,
        before: DateTime<Utc>,
    ) -> impl Future<Output = Result<u64, TaskError>> + Send {
        let s = self.0.clone();
        still(async move { s.prune(keep_per_task, before).await })
    }

    fn changed(&self) -> impl Future<Output = ()> + Send {
        self.0.changed()
    }

    fn shared(&self) -> bool {
        self.0.shared()
    }

    fn heartbeat(
        &self,
        owner: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), TaskError>> + Send {
        let (s, owner) = (self.0.clone(), owner.to_string());
        still(async move { s.heartbeat(&owner, now).await })
    }
}
