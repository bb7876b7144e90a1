//! Rows to tasks and runs, for both databases: the columns have the same
//! names and decode to the same Rust types in each (instants as integer
//! milliseconds, JSON as text).

use super::from_ms;
use crate::TaskError;
use crate::model::{Coalesce, Options, Run, RunKind, RunStatus, Task, Trigger};
use sqlx::{ColumnIndex, Decode, Row, Type};

fn int<'r, R>(row: &'r R, col: &str) -> Result<u32, TaskError>
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
{
    let v: i64 = row.try_get(col)?;
    u32::try_from(v).map_err(|_| TaskError::Corrupt(format!("{col} = {v}")))
}

pub(crate) fn task_from<'r, R>(row: &'r R) -> Result<Task, TaskError>
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    f64: Decode<'r, R::Database> + Type<R::Database>,
    bool: Decode<'r, R::Database> + Type<R::Database>,
    String: Decode<'r, R::Database> + Type<R::Database>,
{
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
            max_instances: int(row, "max_instances")?,
            jitter_s: row.try_get("jitter_s")?,
            timeout_s: row.try_get("timeout_s")?,
            retries: int(row, "retries")?,
            retry_backoff_s: row.try_get("retry_backoff_s")?,
        },
        next_run_at: from_ms(row.try_get("next_run_at")?),
        last_run_at: from_ms(row.try_get("last_run_at")?),
        created_at: from_ms(row.try_get("created_at")?).unwrap_or_default(),
        updated_at: from_ms(row.try_get("updated_at")?).unwrap_or_default(),
    })
}

pub(crate) fn run_from<'r, R>(row: &'r R) -> Result<Run, TaskError>
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    String: Decode<'r, R::Database> + Type<R::Database>,
{
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
        attempt: int(row, "attempt")?,
        retry_at: from_ms(row.try_get("retry_at")?),
        result: result.and_then(|r| serde_json::from_str(&r).ok()),
        error: row.try_get("error")?,
    })
}
