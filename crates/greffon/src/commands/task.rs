//! `greffon task ...`: through a running server (the API), or embedded on
//! the home's database when none runs. Both give the same JSON.

use super::{interrupted, scheduler_settings, task_store};
use crate::EXIT_INTERRUPTED;
use crate::backend::{Backend, Local, TaskOp};
use crate::cli;
use crate::cli::{TaskCommand, TaskSpec};
use crate::print;
use crate::remote;
use greffon_core::{Config, Home};
use greffon_host::Host;
use serde_json::{Map, Value, json};
use std::process::ExitCode;

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

/// One task command, the same through a server or on a local host.
async fn execute(backend: &impl Backend, cmd: TaskCommand) -> anyhow::Result<ExitCode> {
    let (op, json_out) = match &cmd {
        TaskCommand::List { json } => (TaskOp::List, *json),
        TaskCommand::Get { task, json } => (TaskOp::Get(task), *json),
        TaskCommand::Create { spec, json } => match body(spec, true) {
            Ok(b) => (TaskOp::Create(b), *json),
            Err(usage) => return usage_error(&usage),
        },
        TaskCommand::Update { task, spec, json } => match body(spec, false) {
            Ok(b) => (TaskOp::Update(task, b), *json),
            Err(usage) => return usage_error(&usage),
        },
        TaskCommand::Delete { task, json } => (TaskOp::Delete(task), *json),
        TaskCommand::Run { task, force, json } => (
            TaskOp::Run {
                task,
                force: *force,
            },
            *json,
        ),
        TaskCommand::Runs { task, limit, json } => (
            TaskOp::Runs {
                task,
                limit: *limit,
            },
            *json,
        ),
        TaskCommand::Next { task, n, json } => (TaskOp::Next { task, n: *n }, *json),
    };
    let v = match backend.task(op).await? {
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
        return execute(&remote, command).await;
    }
    let settings = scheduler_settings(&config)?;
    let store = task_store(root, &config, true).await?;
    let host = Host::open_with(root, config).await?;
    let scheduler = greffon_scheduler::attach(&host, store, settings);
    let local = Local {
        host: &host,
        tasks: Some(&scheduler),
    };
    let code = tokio::select! {
        code = execute(&local, command) => code,
        signal = interrupted() => {
            eprintln!("greffon: {signal}; stopping plugins");
            Ok(ExitCode::from(EXIT_INTERRUPTED))
        }
    };
    host.shutdown().await;
    code
}
