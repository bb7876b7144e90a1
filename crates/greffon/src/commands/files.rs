//! `greffon model ...` and `greffon env ...`: the home's model files and
//! plugins' Python environments.

use crate::cli;
use crate::print;
use greffon_core::{Config, Home};
use std::process::ExitCode;

/// `greffon model pull|list`.
/// `greffon env list|prune`: reads the home's folders, starts no worker.
pub(crate) fn env(
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

pub(crate) fn model(
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
