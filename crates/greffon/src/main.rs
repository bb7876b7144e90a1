//! `greffon`: the command line. Glue only: parsing, wiring the host, and
//! printing; the work is in `greffon-host`.

mod cli;
mod install;
mod print;
mod remote;
mod secret;
mod task;

use anyhow::Context;
use clap::Parser;
use cli::{Cli, Command, PluginCommand};
use greffon_core::{Config, Home, SandboxMode};
use greffon_host::Host;
use serde_json::{Map, Value, json};
use std::process::ExitCode;

/// Exit codes of `plugin run` (and every command): 0 success, 1 an
/// `{"error"}` or a failed operation, 2 a usage error.
const EXIT_ERROR: u8 = 1;
const EXIT_USAGE: u8 = 2;
/// The shell's convention for a command ended by SIGINT.
const EXIT_INTERRUPTED: u8 = 130;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One thread: the CLI runs one command at a time, and measured on this
    // kind of machine a current-thread runtime answers a worker's frame
    // sooner than a multi-thread one (no hop between threads).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let root = Home::resolve(cli.home.as_deref());
    // What needs no home, or only its path, touches none.
    match cli.command {
        Command::Completions { shell } => {
            install::completions(shell);
            return Ok(ExitCode::SUCCESS);
        }
        Command::Man { dir } => {
            install::man(dir.as_deref())?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Service { command } => {
            install::service(&root, command)?;
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    let verbosity = if cli.quiet { -1 } else { cli.verbose as i8 };
    let config = Config::load(&Home::config_file(&root))?;
    let home = Home::new(&root, &config);
    greffon_host::logging::init(home.logs_dir(), verbosity)
        .with_context(|| format!("cannot open the logs under {}", home.logs_dir().display()))?;
    if let Err(e) = install::python_shim(&root, &home.app_dir()) {
        tracing::debug!("no app/cli.py in {}: {e:#}", root.display());
    }
    let remote_flag = cli.remote.clone();
    let command = match cli.command {
        Command::Plugin { command } => command,
        Command::Doctor { json } => return Ok(doctor(&config, &home, json).await),
        Command::Model { command } => return model_command(&config, &home, command),
        Command::Env { command } => return env_command(&root, &config, command),
        Command::Serve { bind } => return serve(&root, config, bind).await,
        Command::Dashboard { open } => return dashboard(&home, remote_flag.as_deref(), open),
        Command::Mcp { embedded } => {
            let server = if embedded {
                None
            } else {
                remote::Server::find(&home, remote_flag.as_deref())?
            };
            return mcp(&root, config, server).await;
        }
        Command::Task { command } => {
            return task_command(&root, config, &home, remote_flag.as_deref(), command).await;
        }
        Command::Secret { command } => {
            return secret_command(&root, config, &home, remote_flag.as_deref(), command).await;
        }
        Command::Completions { .. } | Command::Man { .. } | Command::Service { .. } => {
            unreachable!("answered before the home is opened")
        }
    };

    if let Some(remote) = remote::Remote::find(&home, remote_flag.as_deref())? {
        // The server builds a missing environment and logs uv's steps in
        // its own log: say here what it installs, since that can take a
        // while. (Embedded, the host's log lines say it on stderr.)
        if let PluginCommand::Enable { name, .. } = &command
            && let Some(reqs) = greffon_host::unbuilt_requirements(&root, &config, name)
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
        match task_store(&root, &config, false).await {
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
    let host = match Host::open_with(&root, config).await {
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

/// `greffon doctor`: what plugins need, and whether this machine has it.
/// Needs no home: it checks the interpreter, the kernel, the model and
/// where secrets would be kept.
async fn doctor(config: &Config, home: &Home, json_out: bool) -> ExitCode {
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let python = match greffon_host::python_facts(config.python.path.as_deref()) {
        Ok((path, version)) => json!({"path": path, "version": version}),
        Err(e) => {
            problems.push(e);
            json!({"path": null, "version": null})
        }
    };
    // Only plugins that declare requirements need uv: a warning.
    let uv = match greffon_host::uv_facts(config) {
        Ok((path, version)) => json!({"path": path, "version": version}),
        Err(e) => {
            warnings.push(format!(
                "{e}; plugins that declare requirements cannot be enabled"
            ));
            json!({"path": null, "version": null})
        }
    };
    let support = greffon_host::sandbox_support();
    let missing = support.missing();
    let enforce = config.sandbox == SandboxMode::Enforce;
    let mut protections: Vec<&str> = if enforce && missing.is_empty() {
        vec![
            "Landlock file system rules (read: runtime and plugin folder; write: own temp folder and granted paths)",
            "Landlock scopes (no signals or abstract UNIX sockets outside the worker)",
            "seccomp: no socket(), io_uring, ptrace, namespaces, mounts, bpf, chmod/chown/xattr, module or clock changes",
            "seccomp: no fork/exec/memfd unless `process` is granted",
            "no-new-privs, no capabilities, own session, cleared environment, stdin /dev/null",
            "rlimits (memory, CPU, open files, file size, no core dumps), parent-death signal",
        ]
    } else {
        Vec::new()
    };
    if support.refuse_passed_fds {
        protections.push("the channel to greffon refuses passed descriptors (SO_PASSRIGHTS)");
    } else {
        warnings.push("the kernel cannot refuse descriptors a worker sends to greffon (SO_PASSRIGHTS, Linux 6.16): such a worker only stalls its own calls until their timeout".to_string());
    }
    if enforce {
        problems.extend(
            missing
                .iter()
                .map(|m| format!("{m}; plugins will not start (sandbox = \"enforce\")")),
        );
    } else {
        warnings.push("sandbox = \"off\": plugins run WITHOUT kernel isolation; their permissions are not enforced".to_string());
        warnings.extend(missing);
    }
    let llm = llm_report(config, home);
    if let Some(problem) = llm["problem"].as_str() {
        // Only the `llm` plugin and /v1/llm need the model.
        warnings.push(format!("llm: {problem}"));
    }
    let (location, keyring) = greffon_host::store_report(home, config.secrets.store).await;
    if config.secrets.store == greffon_core::SecretStoreKind::Keyring && !keyring {
        problems.push("[secrets] store = \"keyring\" but no Secret Service answers on the session bus; plugins cannot read their secrets".into());
    }
    let tasks = tasks_report(config, home, &mut problems, &mut warnings).await;
    let report = json!({
        "python": python,
        "uv": uv,
        "llm": llm,
        "tasks": tasks,
        "secrets": {
            "store": config.secrets.store,
            "keyring_available": keyring,
            "location": location,
        },
        "sandbox": {
            "mode": if enforce { "enforce" } else { "off" },
            "landlock_abi": support.landlock_abi,
            "landlock_abi_required": greffon_sandbox::LANDLOCK_ABI_REQUIRED,
            "seccomp": support.seccomp,
            "refuse_passed_fds": support.refuse_passed_fds,
            "protections": protections,
        },
        "problems": problems,
        "warnings": warnings,
        "ok": problems.is_empty(),
    });
    if !enforce {
        tracing::warn!(target: "audit", event = "sandbox_off", "doctor: plugins run without kernel isolation (sandbox = \"off\")");
    }
    if json_out {
        print::json(&report);
    } else {
        print::doctor(&report);
    }
    if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_ERROR)
    }
}

/// The task store: the SQLite file, or the PostgreSQL database reached,
/// migrated, and every host's clock within the lease's margin.
async fn tasks_report(
    config: &Config,
    home: &Home,
    problems: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Value {
    let Some(url) = config.scheduler.database_url() else {
        return json!({"store": "sqlite", "location": home.db_file()});
    };
    let report = match greffon_scheduler::PgTaskStore::inspect(&url).await {
        Ok(r) => r,
        Err(e) => {
            problems.push(format!("tasks: {e}"));
            return json!({"store": "postgres", "reachable": false});
        }
    };
    let (applied, known) = report.migrated;
    if applied < known {
        warnings.push(format!(
            "tasks: the database at {} has {applied} of {known} migrations; `greffon serve` applies them at start",
            report.location
        ));
    }
    // A renewal every third of the lease leaves two thirds of slack; two
    // hosts' clocks apart by more than a third eat into it.
    let margin_ms = (config.scheduler.lease_s * 1000.0 / 3.0) as i64;
    let mut skews: Vec<(String, i64)> = report.hosts.clone();
    skews.push(("this host".into(), report.skew_ms));
    let (min, max) = skews.iter().fold((i64::MAX, i64::MIN), |(lo, hi), (_, s)| {
        (lo.min(*s), hi.max(*s))
    });
    if max - min > margin_ms {
        problems.push(format!(
            "tasks: the hosts' clocks are {} ms apart (more than lease_s / 3 = {margin_ms} ms): a live host's runs could be taken for lost; synchronise the clocks (NTP) or raise [scheduler] lease_s",
            max - min
        ));
    }
    json!({
        "store": "postgres",
        "location": report.location,
        "reachable": true,
        "migrations": {"applied": applied, "known": known},
        "clock_skew_ms": report.skew_ms,
        "hosts": skews.iter().map(|(owner, skew)| json!({"owner": owner, "clock_skew_ms": skew})).collect::<Vec<_>>(),
    })
}

/// `[llm]` and whether its model is there and readable.
fn llm_report(config: &Config, home: &Home) -> Value {
    match config.llm.backend {
        greffon_core::LlmBackend::Openai => json!({
            "backend": "openai",
            "base_url": config.llm.base_url,
            "model": config.llm.api_model,
            "problem": null,
        }),
        greffon_core::LlmBackend::Llama => {
            let path = greffon_llm::model_path(home, &config.llm);
            let problem = if cfg!(feature = "llama") {
                greffon_llm::models::check(&path)
                    .err()
                    .map(|e| e.to_string())
            } else {
                Some(greffon_llm::LlmError::NotBuilt.to_string())
            };
            json!({"backend": "llama", "model": path, "problem": problem})
        }
    }
}

/// `greffon model pull|list`.
/// `greffon env list|prune`: reads the home's folders, starts no worker.
fn env_command(
    root: &std::path::Path,
    config: &Config,
    command: cli::EnvCommand,
) -> anyhow::Result<ExitCode> {
    let (envs, json, pruned) = match command {
        cli::EnvCommand::List { json } => (greffon_host::environments(root, config)?, json, false),
        cli::EnvCommand::Prune { json } => {
            (greffon_host::prune_environments(root, config)?, json, true)
        }
    };
    if json {
        print::json(&serde_json::to_value(&envs)?);
    } else {
        print::envs(&envs, pruned);
    }
    Ok(ExitCode::SUCCESS)
}

fn model_command(
    config: &Config,
    home: &Home,
    command: cli::ModelCommand,
) -> anyhow::Result<ExitCode> {
    let dir = home.models_dir();
    let configured = greffon_llm::model_path(home, &config.llm);
    match command {
        cli::ModelCommand::List { json } => {
            let entries = greffon_llm::models::list(&dir, &configured);
            if json {
                print::json(&serde_json::to_value(&entries)?);
            } else {
                print::models(&entries, &dir);
            }
            Ok(ExitCode::SUCCESS)
        }
        cli::ModelCommand::Pull { name } => {
            let (python, _) = greffon_host::python_facts(config.python.path.as_deref())
                .map_err(|e| anyhow::anyhow!(e))?;
            let mut bar = print::Progress::new(&format!("{name} -> {}", dir.display()));
            let pulled = greffon_llm::models::pull(&name, &dir, &python, |done, total| {
                bar.update(done, total)
            });
            bar.finish();
            let pulled = pulled?;
            if pulled.downloaded {
                print::out!(
                    "pulled {} ({} bytes, sha256 {})",
                    pulled.path.display(),
                    pulled.size,
                    pulled.sha256
                );
            } else {
                print::out!(
                    "{} is already there (sha256 {})",
                    pulled.path.display(),
                    pulled.sha256
                );
            }
            if pulled.path != configured {
                print::out!(
                    "note: [llm] model names {}, not this file",
                    configured.display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The LLM service for `host`, registered as its `llm.*` host service.
fn attach_llm(host: &Host, config: &Config) -> anyhow::Result<greffon_llm::LlmService> {
    let auto_pull = config.llm.auto_pull.then(|| {
        let bar = std::sync::Mutex::new(print::Progress::new("first use: pulling the model"));
        greffon_llm::models::AutoPull {
            python: host.python().to_path_buf(),
            progress: std::sync::Arc::new(move |done, total| {
                if let Ok(mut bar) = bar.lock() {
                    bar.update(done, total);
                    if done >= total {
                        bar.finish();
                    }
                }
            }),
        }
    });
    let llm = greffon_llm::open(host.home(), &config.llm, auto_pull)?;
    let service = greffon_llm::LlmService::new(
        llm,
        config.llm.log_prompts,
        std::time::Duration::from_secs_f64(config.llm.timeout_s),
    );
    host.register_service("llm", std::sync::Arc::new(service.clone()));
    Ok(service)
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

/// `[scheduler]` as the scheduler's settings; a bad zone names the key.
fn scheduler_settings(config: &Config) -> anyhow::Result<greffon_scheduler::Settings> {
    let c = &config.scheduler;
    let default_tz = match &c.default_tz {
        Some(tz) => {
            greffon_scheduler::check_zone(tz)
                .with_context(|| "greffon.toml: key 'scheduler.default_tz'")?;
            tz.clone()
        }
        None => greffon_scheduler::host_zone(),
    };
    Ok(greffon_scheduler::Settings {
        default_tz,
        keep_runs: c.keep_runs,
        keep_days: c.keep_days,
        lease: std::time::Duration::from_secs_f64(c.lease_s),
    })
}

/// The task store `[scheduler]` names. `eager`: a PostgreSQL database is
/// reached and migrated now, so a wrong URL stops the command before
/// anything starts (`serve`, `task`); otherwise at the first task
/// operation (a plugin run or `mcp` that may never touch tasks).
async fn task_store(
    root: &std::path::Path,
    config: &Config,
    eager: bool,
) -> anyhow::Result<greffon_scheduler::AnyTaskStore> {
    let home = Home::new(root, config);
    let url = config.scheduler.database_url();
    Ok(greffon_scheduler::AnyTaskStore::open(url.as_deref(), &home.db_file(), eager).await?)
}

/// `greffon task ...`: through the running server, or embedded.
async fn task_command(
    root: &std::path::Path,
    config: Config,
    home: &Home,
    remote_flag: Option<&str>,
    command: cli::TaskCommand,
) -> anyhow::Result<ExitCode> {
    if let Some(remote) = remote::Remote::find(home, remote_flag)? {
        return task::command(task::Backend::Remote(&remote), command).await;
    }
    let settings = scheduler_settings(&config)?;
    let store = task_store(root, &config, true).await?;
    let host = Host::open_with(root, config).await?;
    let scheduler = greffon_scheduler::attach(&host, store, settings);
    let code = tokio::select! {
        code = task::command(task::Backend::Embedded(&scheduler), command) => code,
        signal = interrupted() => {
            eprintln!("greffon: {signal}; stopping plugins");
            Ok(ExitCode::from(EXIT_INTERRUPTED))
        }
    };
    host.shutdown().await;
    code
}

/// `greffon secret ...`: through the running server, or on the home's
/// store. A value on the command line is refused before anything else.
async fn secret_command(
    root: &std::path::Path,
    config: Config,
    home: &Home,
    remote_flag: Option<&str>,
    command: cli::SecretCommand,
) -> anyhow::Result<ExitCode> {
    if let cli::SecretCommand::Set { value: Some(_), .. } = &command {
        eprintln!("error: {}", secret::NO_ARGUMENT_VALUE);
        return Ok(ExitCode::from(EXIT_USAGE));
    }
    if let Some(remote) = remote::Remote::find(home, remote_flag)? {
        return secret::command(secret::Backend::Remote(&remote), command).await;
    }
    let host = Host::open_with(root, config).await?;
    let code = secret::command(secret::Backend::Embedded(&host), command).await;
    host.shutdown().await;
    code
}

/// `greffon serve`: the API until SIGINT or SIGTERM, then a graceful stop.
async fn serve(
    root: &std::path::Path,
    config: Config,
    bind: Option<String>,
) -> anyhow::Result<ExitCode> {
    let bind: std::net::SocketAddr = bind
        .as_deref()
        .unwrap_or(&config.server.bind)
        .parse()
        .context("--bind must be an address with a port, e.g. 127.0.0.1:8765")?;
    let server_config = config.server.clone();
    let max_body_bytes = config.max_args_bytes;
    let settings = scheduler_settings(&config)?;
    let fire_tasks = config.scheduler.enabled;
    let llm_config = config.clone();
    let store = task_store(root, &config, true).await?;
    let host = Host::open_with(root, config).await?;
    let tasks = greffon_scheduler::attach(&host, store, settings);
    let llm = attach_llm(&host, &llm_config)?;
    let app = host.home().app_dir();
    let token = greffon_server::resolve_token(&server_config, bind, &app.join("token"))?;
    host.start_enabled().await;
    let opts = greffon_server::ServeOptions {
        bind,
        token,
        allowed_hosts: server_config.allowed_hosts,
        cors_origins: server_config.cors_origins,
        grace: std::time::Duration::from_secs_f64(server_config.shutdown_grace_s),
        max_body_bytes,
        endpoint_file: app.join("server.json"),
        watch: server_config.watch.then(|| host.home().plugins_dir()),
        tasks,
        fire_tasks,
        llm,
        print_login_link: true,
    };
    greffon_server::serve(host, opts, async {
        let signal = interrupted().await;
        tracing::info!(target: "server", "{signal}");
    })
    .await?;
    Ok(ExitCode::SUCCESS)
}

/// `greffon dashboard`: the running server's login link, on stdout (the
/// person asked for it), and with `--open` in a browser.
fn dashboard(home: &Home, remote: Option<&str>, open: bool) -> anyhow::Result<ExitCode> {
    let Some(server) = remote::Server::find(home, remote)? else {
        anyhow::bail!(
            "no greffon server runs for {}: start one with `greffon serve`",
            home.root().display()
        );
    };
    let link = greffon_server::login_link(&server.base, &server.token);
    println!("{link}");
    if open {
        let browser = std::env::var("BROWSER")
            .ok()
            .filter(|b| !b.is_empty())
            .unwrap_or_else(|| "xdg-open".into());
        std::process::Command::new(&browser)
            .arg(&link)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {browser} to open the link (set $BROWSER)"))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `greffon mcp`: MCP over stdio, through the running server when there is
/// one (same workers, scheduler and live state), else with the host in
/// this process. Only protocol frames go to stdout; logs go to the log
/// files and stderr.
async fn mcp(
    root: &std::path::Path,
    config: Config,
    server: Option<remote::Server>,
) -> anyhow::Result<ExitCode> {
    if let Some(server) = server {
        let url = format!("{}/mcp", server.base);
        let backend = greffon_mcp::Remote::connect(&url, &server.token);
        tracing::info!(target: "server", url = %url, "MCP on stdio through the running server");
        tokio::select! {
            served = greffon_mcp::serve_stdio(backend) => served?,
            signal = interrupted() => tracing::info!(target: "server", "{signal}"),
        }
        return Ok(ExitCode::SUCCESS);
    }
    let settings = scheduler_settings(&config)?;
    let llm_config = config.clone();
    let watch = config.server.watch;
    let store = task_store(root, &config, false).await?;
    let host = Host::open_with(root, config).await?;
    // The bundled `tasks` and `llm` plugins need their services; tasks are
    // stored, not fired: firing is `greffon serve`'s job.
    let _services = (
        greffon_scheduler::attach(&host, store, settings),
        attach_llm(&host, &llm_config)?,
    );
    // The workers start while the client's handshake goes on; a call that
    // comes first waits for its plugin's worker rather than starting two.
    let starting = host.clone();
    tokio::spawn(async move { starting.start_enabled().await });
    // Edits under plugins/ reach the assistant as they do under `serve`.
    let _watcher = if watch {
        let plugins = host.home().plugins_dir();
        Some(
            greffon_server::watch_plugins(host.clone(), plugins.clone())
                .with_context(|| format!("cannot watch {}", plugins.display()))?,
        )
    } else {
        None
    };
    tracing::info!(target: "server", "MCP on stdio with an embedded host");
    let served = tokio::select! {
        served = greffon_mcp::serve_stdio(host.clone()) => served,
        signal = interrupted() => {
            tracing::info!(target: "server", "{signal}");
            Ok(())
        }
    };
    host.shutdown().await;
    served?;
    Ok(ExitCode::SUCCESS)
}

/// Resolves on SIGINT or SIGTERM, naming it.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => tokio::select! {
            _ = tokio::signal::ctrl_c() => "interrupted",
            _ = term.recv() => "terminated",
        },
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            "interrupted"
        }
    }
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
