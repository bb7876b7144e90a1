//! `greffon task ...`: through a running server (the API), or embedded on
//! the home's database when none runs. Both give the same JSON.

use super::{interrupted, scheduler_settings, task_store};
use crate::EXIT_INTERRUPTED;
use crate::cli;
use crate::cli::{TaskCommand, TaskSpec};
use crate::print;
use crate::remote::{self, Remote};
use greffon_core::{Config, Home};
use greffon_host::Host;
use greffon_scheduler::{AnyTaskStore, NewTask, Scheduler, TaskKey, TaskPatch};
use reqwest::Method;
use serde_json::{Map, Value, json};
use std::process::ExitCode;

/// Where the commands go.
pub enum Backend<'a> {
    Remote(&'a Remote),
    Embedded(&'a Scheduler<AnyTaskStore>),
}

/// A task's fields from the flags, as the API's JSON. On create, a
/// trigger is required.
fn body(spec: &TaskSpec, creating: bool) -> Result<Value, String> {
    let mut m = Map::new();
    let mut put = |k: &str, v: Value| {
        m.insert(k.to_string(), v);
    };
    if let Some(v) = &spec.name {
        put("name", json!(v));
    }
    if let Some(v) = &spec.plugin {
        put("plugin", json!(v));
    }
    if let Some(text) = &spec.args {
        let args: Value =
            serde_json::from_str(text).map_err(|e| format!("--args is not JSON: {e}"))?;
        put("args", args);
    }
    let trigger = match (&spec.cron, spec.every, &spec.at) {
        (Some(expr), _, _) => Some(json!({"kind": "cron", "expr": expr, "tz": spec.tz})),
        (_, Some(every), _) => Some(
            json!({"kind": "interval", "every_s": every, "start": spec.start, "end": spec.end}),
        ),
        (_, _, Some(at)) => Some(json!({"kind": "date", "at": at})),
        _ => None,
    };
    match trigger {
        Some(t) => put("trigger", t),
        None if creating => {
            return Err("give a trigger: --cron EXPR, --every SECONDS or --at TIME".into());
        }
        None => {}
    }
    if let Some(v) = spec.enabled {
        put("enabled", json!(v));
    }
    if let Some(v) = &spec.coalesce {
        put("coalesce", json!(v));
    }
    if let Some(v) = spec.misfire_grace {
        put("misfire_grace_s", json!(v));
    }
    if let Some(v) = spec.max_instances {
        put("max_instances", json!(v));
    }
    if let Some(v) = spec.jitter {
        put("jitter_s", json!(v));
    }
    if let Some(v) = spec.timeout {
        put("timeout_s", json!(v));
    }
    if let Some(v) = spec.retries {
        put("retries", json!(v));
    }
    if let Some(v) = spec.retry_backoff {
        put("retry_backoff_s", json!(v));
    }
    Ok(Value::Object(m))
}

/// `task` as a path segment.
fn seg(task: &str) -> String {
    url::form_urlencoded::byte_serialize(task.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

impl Backend<'_> {
    /// One operation: the answer's JSON, or the error's message.
    async fn call(
        &self,
        method: Method,
        path: &str,
        payload: Option<Value>,
        embedded: impl AsyncFnOnce(&Scheduler<AnyTaskStore>, Option<Value>) -> Result<Value, String>,
    ) -> anyhow::Result<Result<Value, String>> {
        match self {
            Backend::Remote(r) => {
                let (status, v) = r.send(method, path, payload.as_ref()).await?;
                Ok(if (200..300).contains(&status) {
                    Ok(v)
                } else {
                    Err(remote::error_text(&v))
                })
            }
            Backend::Embedded(s) => Ok(embedded(s, payload).await),
        }
    }
}

fn parse<T: serde::de::DeserializeOwned>(v: Option<Value>) -> Result<T, String> {
    serde_json::from_value(v.unwrap_or_else(|| json!({}))).map_err(|e| format!("invalid task: {e}"))
}

fn value(r: Result<impl serde::Serialize, greffon_scheduler::TaskError>) -> Result<Value, String> {
    r.map_err(|e| e.to_string())
        .and_then(|v| serde_json::to_value(v).map_err(|e| e.to_string()))
}

async fn execute(backend: Backend<'_>, cmd: TaskCommand) -> anyhow::Result<ExitCode> {
    let (json_out, outcome) = match &cmd {
        TaskCommand::List { json } => (
            *json,
            backend
                .call(Method::GET, "/v1/tasks", None, async |s, _| {
                    value(s.list().await)
                })
                .await?,
        ),
        TaskCommand::Get { task, json } => (
            *json,
            backend
                .call(
                    Method::GET,
                    &format!("/v1/tasks/{}", seg(task)),
                    None,
                    async |s, _| value(s.get(&TaskKey::parse(task)).await),
                )
                .await?,
        ),
        TaskCommand::Create { spec, json } => match body(spec, true) {
            Err(usage) => return usage_error(&usage),
            Ok(b) => (
                *json,
                backend
                    .call(Method::POST, "/v1/tasks", Some(b), async |s, b| {
                        value(s.create(parse::<NewTask>(b)?).await)
                    })
                    .await?,
            ),
        },
        TaskCommand::Update { task, spec, json } => match body(spec, false) {
            Err(usage) => return usage_error(&usage),
            Ok(b) => (
                *json,
                backend
                    .call(
                        Method::PATCH,
                        &format!("/v1/tasks/{}", seg(task)),
                        Some(b),
                        async |s, b| {
                            value(
                                s.update(&TaskKey::parse(task), parse::<TaskPatch>(b)?)
                                    .await,
                            )
                        },
                    )
                    .await?,
            ),
        },
        TaskCommand::Delete { task, json } => (
            *json,
            backend
                .call(
                    Method::DELETE,
                    &format!("/v1/tasks/{}", seg(task)),
                    None,
                    async |s, _| value(s.delete(&TaskKey::parse(task)).await),
                )
                .await?,
        ),
        TaskCommand::Run { task, force, json } => (
            *json,
            backend
                .call(
                    Method::POST,
                    &format!("/v1/tasks/{}/run", seg(task)),
                    Some(json!({ "force": force })),
                    async |s, _| value(s.run_now(&TaskKey::parse(task), *force).await),
                )
                .await?,
        ),
        TaskCommand::Runs { task, limit, json } => (
            *json,
            backend
                .call(
                    Method::GET,
                    &format!("/v1/tasks/{}/runs?limit={limit}", seg(task)),
                    None,
                    async |s, _| value(s.runs(&TaskKey::parse(task), *limit).await),
                )
                .await?,
        ),
        TaskCommand::Next { task, n, json } => (
            *json,
            backend
                .call(
                    Method::GET,
                    &format!("/v1/tasks/{}/next?n={n}", seg(task)),
                    None,
                    async |s, _| value(s.next(&TaskKey::parse(task), usize::from(*n)).await),
                )
                .await?,
        ),
    };
    let v = match outcome {
        Ok(v) => v,
        Err(message) => {
            if json_out {
                print::json(&json!({ "error": message }));
            } else {
                eprintln!("error: {message}");
            }
            return Ok(ExitCode::from(crate::EXIT_ERROR));
        }
    };
    if json_out {
        print::json(&v);
    } else {
        print::task_answer(&cmd, &v);
    }
    // A run that failed is the command's failure too.
    let failed_run = matches!(cmd, TaskCommand::Run { .. }) && v["status"] != "ok";
    Ok(if failed_run {
        ExitCode::from(crate::EXIT_ERROR)
    } else {
        ExitCode::SUCCESS
    })
}

fn usage_error(message: &str) -> anyhow::Result<ExitCode> {
    eprintln!("error: {message}");
    Ok(ExitCode::from(crate::EXIT_USAGE))
}

/// `greffon task ...`: through the running server, or embedded.
pub(crate) async fn run(
    root: &std::path::Path,
    config: Config,
    home: &Home,
    remote_flag: Option<&str>,
    command: cli::TaskCommand,
) -> anyhow::Result<ExitCode> {
    if let Some(remote) = remote::Remote::find(home, remote_flag)? {
        return execute(Backend::Remote(&remote), command).await;
    }
    let settings = scheduler_settings(&config)?;
    let store = task_store(root, &config, true).await?;
    let host = Host::open_with(root, config).await?;
    let scheduler = greffon_scheduler::attach(&host, store, settings);
    let code = tokio::select! {
        code = execute(Backend::Embedded(&scheduler), command) => code,
        signal = interrupted() => {
            eprintln!("greffon: {signal}; stopping plugins");
            Ok(ExitCode::from(EXIT_INTERRUPTED))
        }
    };
    host.shutdown().await;
    code
}
