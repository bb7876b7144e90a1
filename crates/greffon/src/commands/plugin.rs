//! `greffon plugin ...`: through a running server when there is one, else
//! on an embedded host.

use super::{attach_llm, interrupted, scheduler_settings, task_store};
use crate::backend::{Backend, Local};
use crate::cli::PluginCommand;
use crate::print;
use crate::remote;
use crate::{EXIT_ERROR, EXIT_INTERRUPTED, EXIT_USAGE};
use greffon_core::{Config, Home};
use greffon_host::Host;
use greffon_protocol::api::PluginInfo;
use serde_json::{Map, Value, json};
use std::path::Path;
use std::process::ExitCode;

/// `greffon plugin ...`: through the running server (or `--remote`), else
/// an embedded host opened for the length of the command.
pub(crate) async fn run(
    root: &Path,
    config: Config,
    home: &Home,
    remote_flag: Option<&str>,
    command: PluginCommand,
) -> anyhow::Result<ExitCode> {
    if let Some(remote) = remote::Remote::find(home, remote_flag)? {
        // The server builds a missing environment and logs uv's steps in
        // its own log: say here what it installs, since that can take a
        // while. (Embedded, the host's log lines say it on stderr.)
        if let PluginCommand::Enable { name, .. } = &command
            && let Some(reqs) = greffon_host::unbuilt_requirements(root, &config, name)
        {
            eprintln!(
                "the server installs {} for {name} into a new environment (uv)…",
                reqs.join(", ")
            );
        }
        if !matches!(
            command,
            PluginCommand::Check { .. } | PluginCommand::Scaffold { .. }
        ) {
            return execute(&remote, command).await;
        }
    }

    // `run` answers JSON even when the host cannot open.
    let is_run = matches!(command, PluginCommand::Run { .. });
    let settings = scheduler_settings(&config)?;
    let store = if is_run {
        match task_store(root, &config, false).await {
            Ok(store) => Some(store),
            Err(e) => {
                print::json(&json!({ "error": e.to_string() }));
                return Ok(ExitCode::from(EXIT_ERROR));
            }
        }
    } else {
        None
    };
    let llm_config = config.clone();
    let opened = match named(&command) {
        Some(name) => Host::open_for(root, config, name).await,
        None => Host::open_with(root, config).await,
    };
    let host = match opened {
        Ok(h) => h,
        Err(e) if is_run => {
            print::json(&json!({ "error": e.to_string() }));
            return Ok(ExitCode::from(EXIT_ERROR));
        }
        Err(e) => return Err(e.into()),
    };
    // A plugin run may use `greffon.tasks` and `greffon.LLM` (the bundled
    // `tasks` and `llm` plugins).
    let _services = match store {
        Some(store) => Some((
            greffon_scheduler::attach(&host, store, settings),
            attach_llm(&host, &llm_config)?,
        )),
        None => None,
    };
    // Ctrl-C or SIGTERM still stops what was started: every plugin's
    // stop() runs before exit.
    let code = tokio::select! {
        code = on_host(&host, command) => code,
        signal = interrupted() => {
            eprintln!("greffon: {signal}; stopping plugins");
            Ok(ExitCode::from(EXIT_INTERRUPTED))
        }
    };
    host.shutdown().await;
    code
}

/// The plugin a command acts on alone, so that the host it opens imports
/// only that one. `check` and `scaffold` need every plugin: both judge
/// whether another folder declares the same name.
fn named(command: &PluginCommand) -> Option<&str> {
    match command {
        PluginCommand::Info { name, .. }
        | PluginCommand::Enable { name, .. }
        | PluginCommand::Disable { name, .. }
        | PluginCommand::Reload { name }
        | PluginCommand::Run { name, .. } => Some(name),
        PluginCommand::List { .. }
        | PluginCommand::Check { .. }
        | PluginCommand::Scaffold { .. } => None,
    }
}

/// One plugin command, the same through a server or on a local host.
async fn execute(backend: &impl Backend, command: PluginCommand) -> anyhow::Result<ExitCode> {
    let shown = match command {
        PluginCommand::List { json } => backend.plugins().await?.map(|plugins| {
            if json {
                print::json(&json!(plugins));
            } else if plugins.is_empty() {
                print::out!("no plugins {}", backend.place());
            } else {
                print::list(&plugins);
            }
        }),
        PluginCommand::Info { name, json } => {
            let p = backend.plugin(&name).await?;
            p.map(|p| entry(&p, json, print::info))
        }
        PluginCommand::Enable { name, json } => {
            let p = backend.enable(&name).await?;
            p.map(|p| entry(&p, json, print::enabled))
        }
        PluginCommand::Disable { name, json } => {
            let p = backend.disable(&name).await?;
            p.map(|p| entry(&p, json, |p| print::out!("disabled {}", p.name)))
        }
        PluginCommand::Reload { name } => backend.reload(&name).await?.map(|p| match p {
            Some(p) => print::out!("reloaded {} {}", p.name, backend.place()),
            None => eprintln!(
                "no greffon server is running: there is no running plugin to reload, and every command loads plugins as they are on disk"
            ),
        }),
        PluginCommand::Run { name, json, pairs } => {
            return run_plugin(backend, &name, json.as_deref(), &pairs).await;
        }
        PluginCommand::Check { .. } | PluginCommand::Scaffold { .. } => {
            unreachable!("check and scaffold work on the files, never through a backend")
        }
    };
    Ok(match shown {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(EXIT_ERROR)
        }
    })
}

/// A plugin's entry, as JSON (`--json`) or as `human` writes it.
fn entry(p: &PluginInfo, json: bool, human: impl FnOnce(&PluginInfo)) {
    if json {
        print::json(&json!(p));
    } else {
        human(p);
    }
}

/// `plugin run`: the answer as JSON on stdout, exit 1 on an `{"error"}`.
async fn run_plugin(
    backend: &impl Backend,
    name: &str,
    json: Option<&str>,
    pairs: &[String],
) -> anyhow::Result<ExitCode> {
    // The schema says which KEY=VALUE values stay text (`--json` needs
    // none: no request for it); a plugin that cannot be found is the
    // run's own error below.
    let schema = if pairs.is_empty() {
        None
    } else {
        backend.plugin(name).await?.ok().and_then(|p| p.schema)
    };
    let args = match build_args(schema.as_ref(), json, pairs) {
        Ok(args) => args,
        Err(usage) => {
            print::json(&json!({ "error": usage }));
            return Ok(ExitCode::from(EXIT_USAGE));
        }
    };
    let answer = backend.run(name, args).await?;
    print::json(&answer);
    Ok(if greffon_protocol::returned_error(&answer).is_some() {
        ExitCode::from(EXIT_ERROR)
    } else {
        ExitCode::SUCCESS
    })
}

/// A command on the host this process opened: `check` and `scaffold`
/// (which work on the plugin's files whether or not a server runs), or
/// any other with no server to go through.
async fn on_host(host: &Host, command: PluginCommand) -> anyhow::Result<ExitCode> {
    match command {
        PluginCommand::Check { name, json } => {
            let report = host.check(&name).await?;
            if json {
                print::json(&serde_json::to_value(&report)?);
            } else {
                print::check(&report);
            }
            Ok(if report.problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_ERROR)
            })
        }
        PluginCommand::Scaffold { name } => {
            let path = host.scaffold(&name)?;
            print::out!("created {}", path.join("plugin.py").display());
            print::out!(
                "next: edit it, then `greffon plugin check {name}` and `greffon plugin enable {name}`"
            );
            Ok(ExitCode::SUCCESS)
        }
        other => execute(&Local { host, tasks: None }, other).await,
    }
}

/// The arguments object from `--json '{...}'` or `KEY=VALUE` pairs. A
/// value is kept as text when the schema types it as a string, else read
/// as JSON (falling back to text): `days=3` is a number, `city=3` a string.
fn build_args(
    schema: Option<&Value>,
    json: Option<&str>,
    pairs: &[String],
) -> Result<Value, String> {
    if let Some(text) = json {
        if !pairs.is_empty() {
            return Err(
                "give the arguments either as --json or as KEY=VALUE pairs, not both".into(),
            );
        }
        return serde_json::from_str(text).map_err(|e| format!("--json is not valid JSON: {e}"));
    }
    let mut args = Map::new();
    for pair in pairs {
        let Some((key, raw)) = pair.split_once('=').filter(|(k, _)| !k.is_empty()) else {
            return Err(format!("argument '{pair}' is not KEY=VALUE"));
        };
        let as_text = schema.is_some_and(|s| greffon_core::is_string_property(s, key));
        let value = if as_text {
            Value::String(raw.to_string())
        } else {
            serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()))
        };
        args.insert(key.to_string(), value);
    }
    Ok(Value::Object(args))
}
