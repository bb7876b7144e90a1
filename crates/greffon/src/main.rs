//! `greffon`: the command line. Glue only: `cli` is the grammar, `main`
//! opens the home and hands each command to its group in `commands/`
//! (`plugin`, `task`, `secret`, `serve` with `dashboard` and `mcp`,
//! `doctor`, `files` for models and environments, `install`); `backend`
//! is where a command goes (a running server or a host opened here),
//! `print` writes the answers and `remote` reaches a running server. The work is in
//! `greffon-host` and the crates it serves.

mod backend;
mod cli;
mod commands;
mod print;
mod remote;

use anyhow::Context;
use clap::Parser;
use cli::{Cli, Command};
use commands::install;
use greffon_core::{Config, Home};
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
    match cli.command {
        Command::Plugin { command } => {
            commands::plugin::run(&root, config, &home, remote_flag.as_deref(), command).await
        }
        Command::Doctor { json } => Ok(commands::doctor::run(&config, &home, json).await),
        Command::Model { command } => commands::files::model(&config, &home, command),
        Command::Env { command } => commands::files::env(&root, &config, command),
        Command::Serve { bind } => commands::serve::serve(&root, config, bind).await,
        Command::Dashboard { open } => {
            commands::serve::dashboard(&home, remote_flag.as_deref(), open)
        }
        Command::Mcp { embedded } => {
            let server = if embedded {
                None
            } else {
                remote::Server::find(&home, remote_flag.as_deref())?
            };
            commands::serve::mcp(&root, config, server).await
        }
        Command::Task { command } => {
            commands::task::run(&root, config, &home, remote_flag.as_deref(), command).await
        }
        Command::Secret { command } => {
            commands::secret::run(&root, config, &home, remote_flag.as_deref(), command).await
        }
        Command::Completions { .. } | Command::Man { .. } | Command::Service { .. } => {
            unreachable!("answered before the home is opened")
        }
    }
}
