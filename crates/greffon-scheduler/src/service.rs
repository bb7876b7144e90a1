//! The `tasks.*` host service: what `greffon.tasks` (and so the bundled
//! `tasks` plugin) calls. It needs no permission; the host audits every
//! call, and the scheduler audits every change.

use crate::TaskError;
use crate::model::{NewTask, TaskKey, TaskPatch};
use crate::scheduler::Scheduler;
use crate::store::TaskStore;
use greffon_protocol::{ErrorKind, Service, ServiceFuture, WireError};
use serde::Deserialize;
use serde_json::{Value, json};

/// Serves `tasks.create|update|delete|get|list|run_now|runs|next`.
///
/// Holds the scheduler weakly: the scheduler holds the host, which holds
/// this service.
#[derive(Debug)]
pub struct TasksService<S: TaskStore> {
    scheduler: crate::scheduler::WeakScheduler<S>,
}

impl<S: TaskStore> TasksService<S> {
    pub fn new(scheduler: &Scheduler<S>) -> TasksService<S> {
        TasksService {
            scheduler: scheduler.downgrade(),
        }
    }
}

/// `{"task": 3}` or `{"task": "backup"}`.
fn key(params: &Value) -> Result<TaskKey, WireError> {
    match params.get("task") {
        Some(Value::Number(n)) if n.is_i64() => Ok(TaskKey::Id(n.as_i64().unwrap_or_default())),
        Some(Value::String(s)) if !s.is_empty() => Ok(TaskKey::parse(s)),
        _ => Err(WireError::new(
            ErrorKind::Validation,
            "tasks: 'task' (the task's id or name) is required",
        )),
    }
}

fn parse<T: for<'de> Deserialize<'de>>(v: Value, what: &str) -> Result<T, WireError> {
    serde_json::from_value(v)
        .map_err(|e| WireError::new(ErrorKind::Validation, format!("tasks: {what}: {e}")))
}

fn to_wire(e: TaskError) -> WireError {
    let kind = match e {
        TaskError::Invalid { .. } => ErrorKind::Validation,
        TaskError::NotFound(_) => ErrorKind::NotFound,
        TaskError::Conflict(_) => ErrorKind::Conflict,
        TaskError::Corrupt(_) | TaskError::Store(_) | TaskError::Unavailable(_) => {
            ErrorKind::HostService
        }
    };
    WireError::new(kind, e.to_string())
}

fn value<T: serde::Serialize>(v: T) -> Result<Value, WireError> {
    serde_json::to_value(v).map_err(|e| WireError::new(ErrorKind::Internal, e.to_string()))
}

async fn handle<S: TaskStore>(
    scheduler: Scheduler<S>,
    method: String,
    params: Value,
) -> Result<Value, WireError> {
    match method.as_str() {
        "tasks.create" => value(
            scheduler
                .create(parse::<NewTask>(params, "create")?)
                .await
                .map_err(to_wire)?,
        ),
        "tasks.update" => {
            let key = key(&params)?;
            let changes = params.get("changes").cloned().unwrap_or_else(|| json!({}));
            let patch = parse::<TaskPatch>(changes, "update")?;
            value(scheduler.update(&key, patch).await.map_err(to_wire)?)
        }
        "tasks.delete" => value(scheduler.delete(&key(&params)?).await.map_err(to_wire)?),
        "tasks.get" => value(scheduler.get(&key(&params)?).await.map_err(to_wire)?),
        "tasks.list" => value(scheduler.list().await.map_err(to_wire)?),
        "tasks.run_now" => {
            let force = params
                .get("force")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            value(
                scheduler
                    .run_now(&key(&params)?, force)
                    .await
                    .map_err(to_wire)?,
            )
        }
        "tasks.runs" => {
            let limit = params.get("limit").and_then(Value::as_u64).unwrap_or(20);
            let limit = u32::try_from(limit).unwrap_or(u32::MAX);
            value(
                scheduler
                    .runs(&key(&params)?, limit)
                    .await
                    .map_err(to_wire)?,
            )
        }
        "tasks.next" => {
            let n = params
                .get("n")
                .and_then(Value::as_u64)
                .unwrap_or(5)
                .min(100);
            value(
                scheduler
                    .next(&key(&params)?, n as usize)
                    .await
                    .map_err(to_wire)?,
            )
        }
        other => Err(WireError::new(
            ErrorKind::UnknownMethod,
            format!("unknown host service '{other}'"),
        )),
    }
}

impl<S: TaskStore> Service for TasksService<S> {
    fn handle(&self, _plugin: &str, method: &str, params: Value) -> ServiceFuture {
        let scheduler = self.scheduler.upgrade();
        let method = method.to_string();
        Box::pin(async move {
            match scheduler {
                Some(s) => handle(s, method, params).await,
                None => Err(WireError::new(
                    ErrorKind::HostService,
                    "tasks: the scheduler has stopped",
                )),
            }
        })
    }
}
