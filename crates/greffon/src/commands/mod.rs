//! The commands, one module per group; `main` parses and dispatches.
//! Shared here: what several groups open (the task store, the LLM
//! service) and the wait for Ctrl-C or SIGTERM.

pub(crate) mod doctor;
pub(crate) mod files;
pub(crate) mod install;
pub(crate) mod plugin;
pub(crate) mod secret;
pub(crate) mod serve;
pub(crate) mod task;

use crate::print;
use anyhow::Context;
use greffon_core::{Config, Home};
use greffon_host::Host;

/// The LLM service for `host`, registered as its `llm.*` host service.
pub(crate) fn attach_llm(host: &Host, config: &Config) -> anyhow::Result<greffon_llm::LlmService> {
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

/// `[scheduler]` as the scheduler's settings; a bad zone names the key.
pub(crate) fn scheduler_settings(config: &Config) -> anyhow::Result<greffon_scheduler::Settings> {
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
pub(crate) async fn task_store(
    root: &std::path::Path,
    config: &Config,
    eager: bool,
) -> anyhow::Result<greffon_scheduler::AnyTaskStore> {
    let home = Home::new(root, config);
    let url = config.scheduler.database_url();
    Ok(greffon_scheduler::AnyTaskStore::open(url.as_deref(), &home.db_file(), eager).await?)
}

/// Resolves on SIGINT or SIGTERM, naming it.
pub(crate) async fn interrupted() -> &'static str {
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
