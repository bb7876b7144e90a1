//! `greffon serve`, `greffon dashboard` and `greffon mcp`: the long-running
//! forms.

use super::{attach_llm, interrupted, scheduler_settings, task_store};
use crate::remote;
use anyhow::Context;
use greffon_core::{Config, Home};
use greffon_host::Host;
use std::process::ExitCode;

/// `greffon serve`: the API until SIGINT or SIGTERM, then a graceful stop.
pub(crate) async fn serve(
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
pub(crate) fn dashboard(home: &Home, remote: Option<&str>, open: bool) -> anyhow::Result<ExitCode> {
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
pub(crate) async fn mcp(
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
