//! `greffon plugin ...`: through a running server when there is one, else
//! on an embedded host.

use super::{attach_llm, interrupted, scheduler_settings, task_store};
use crate::cli::PluginCommand;
use crate::print;
use crate::remote;
use crate::{EXIT_ERROR, EXIT_INTERRUPTED, EXIT_USAGE};
use anyhow::Context;
use greffon_core::{Config, Home};
use greffon_host::Host;
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
        if let Some(code) = remote_command(&remote, &command).await? {
            return Ok(code);
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
    let host = match Host::open_with(root, config).await {
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
        code = plugin_command(&host, command) => code,
        signal = interrupted() => {
            eprintln!("greffon: {signal}; stopping plugins");
            Ok(ExitCode::from(EXIT_INTERRUPTED))
        }
    };
    host.shutdown().await;
    code
}

/// A plugin command through a running server; None for the commands that
/// always work on the files (`check`, `scaffold`).
async fn remote_command(
    remote: &remote::Remote,
    command: &PluginCommand,
) -> anyhow::Result<Option<ExitCode>> {
    use reqwest::Method;
    let failed = |message: String| {
        eprintln!("error: {message}");
        Ok(Some(ExitCode::from(EXIT_ERROR)))
    };
    match command {
        PluginCommand::List { json } => {
            let (status, v) = remote.send(Method::GET, "/v1/plugins", None).await?;
            if status != 200 {
                return failed(remote::error_text(&v));
            }
            let plugins: Vec<greffon_host::PluginInfo> =
                serde_json::from_value(v).context("the server answered an unexpected list")?;
            if *json {
                print::json(&serde_json::to_value(&plugins)?);
            } else {
                print::list_remote(&plugins, remote.url());
            }
        }
        PluginCommand::Info { name, json } => {
            match remote
                .plugin(Method::GET, &format!("/v1/plugins/{name}"))
                .await?
            {
                Ok(p) if *json => print::json(&serde_json::to_value(&p)?),
                Ok(p) => print::info(&p),
                Err(e) => return failed(e),
            }
        }
        PluginCommand::Enable { name, json } | PluginCommand::Disable { name, json } => {
            let verb = if matches!(command, PluginCommand::Enable { .. }) {
                "enable"
            } else {
                "disable"
            };
            match remote
                .plugin(Method::POST, &format!("/v1/plugins/{name}/{verb}"))
                .await?
            {
                Ok(p) if *json => print::json(&serde_json::to_value(&p)?),
                Ok(p) if verb == "enable" => print::enabled(&p),
                Ok(p) => print::out!("disabled {}", p.name),
                Err(e) => return failed(e),
            }
        }
        PluginCommand::Reload { name } => {
            match remote
                .plugin(Method::POST, &format!("/v1/plugins/{name}/reload"))
                .await?
            {
                Ok(p) => print::out!("reloaded {} on {}", p.name, remote.url()),
                Err(e) => return failed(e),
            }
        }
        PluginCommand::Run { name, json, pairs } => {
            let schema = match remote
                .plugin(Method::GET, &format!("/v1/plugins/{name}"))
                .await?
            {
                Ok(p) => p.schema,
                Err(_) => None,
            };
            let args = match build_args(schema.as_ref(), json.as_deref(), pairs) {
                Ok(a) => a,
                Err(usage) => {
                    print::json(&json!({ "error": usage }));
                    return Ok(Some(ExitCode::from(EXIT_USAGE)));
                }
            };
            let (status, v) = remote
                .send(
                    Method::POST,
                    &format!("/v1/plugins/{name}/run"),
                    Some(&args),
                )
                .await?;
            let shown = if status == 200 {
                v
            } else {
                json!({ "error": remote::error_text(&v) })
            };
            print::json(&shown);
            let is_error = greffon_protocol::returned_error(&shown).is_some();
            return Ok(Some(if is_error {
                ExitCode::from(EXIT_ERROR)
            } else {
                ExitCode::SUCCESS
            }));
        }
        PluginCommand::Check { .. } | PluginCommand::Scaffold { .. } => return Ok(None),
    }
    Ok(Some(ExitCode::SUCCESS))
}

async fn plugin_command(host: &Host, command: PluginCommand) -> anyhow::Result<ExitCode> {
    match command {
        PluginCommand::List { json } => {
            let plugins = host.plugins();
            if json {
                print::json(&serde_json::to_value(&plugins)?);
            } else {
                print::list(&plugins, host.home());
            }
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Info { name, json } => {
            let info = host.plugin(&name)?;
            if json {
                print::json(&serde_json::to_value(&info)?);
            } else {
                print::info(&info);
            }
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Enable { name, json } => match host.enable(&name).await {
            Ok(info) => {
                if json {
                    print::json(&serde_json::to_value(&info)?);
                } else {
                    print::enabled(&info);
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("error: {e}");
                Ok(ExitCode::from(EXIT_ERROR))
            }
        },
        PluginCommand::Reload { name } => {
            // The host's hot reload serves a long-running process (`greffon
            // serve`, issue #4); this command has none to talk to yet.
            host.plugin(&name)?;
            eprintln!(
                "no greffon server is running for {}: there is no running plugin to reload, and every command loads plugins as they are on disk",
                host.home().root().display()
            );
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Disable { name, json } => {
            let info = host.disable(&name).await?;
            if json {
                print::json(&serde_json::to_value(&info)?);
            } else {
                print::out!("disabled {}", info.name);
            }
            Ok(ExitCode::SUCCESS)
        }
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
        PluginCommand::Run { name, json, pairs } => {
            let schema = host.plugin(&name).ok().and_then(|p| p.schema);
            let args = match build_args(schema.as_ref(), json.as_deref(), &pairs) {
                Ok(args) => args,
                Err(usage) => {
                    print::json(&json!({ "error": usage }));
                    return Ok(ExitCode::from(EXIT_USAGE));
                }
            };
            match host.call(&name, args).await {
                Ok(result) => {
                    print::json(&result);
                    let is_error = greffon_protocol::returned_error(&result).is_some();
                    Ok(if is_error {
                        ExitCode::from(EXIT_ERROR)
                    } else {
                        ExitCode::SUCCESS
                    })
                }
                Err(e) => {
                    print::json(&e.to_json());
                    Ok(ExitCode::from(EXIT_ERROR))
                }
            }
        }
        PluginCommand::Scaffold { name } => {
            let path = host.scaffold(&name)?;
            print::out!("created {}", path.join("plugin.py").display());
            print::out!(
                "next: edit it, then `greffon plugin check {name}` and `greffon plugin enable {name}`"
            );
            Ok(ExitCode::SUCCESS)
        }
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
