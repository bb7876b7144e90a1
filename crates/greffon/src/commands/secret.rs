//! `greffon secret ...`: through a running server (its write-only
//! `/v1/secrets`), or on the home's store when none runs.

use crate::EXIT_USAGE;
use crate::backend::{Backend, Local};
use crate::cli;
use crate::cli::SecretCommand;
use crate::print;
use crate::remote;
use anyhow::Context;
use greffon_core::{Config, Home};
use greffon_host::{Host, MAX_SECRET_BYTES};
use serde_json::json;
use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;

/// Why `secret set` refuses a value given as an argument.
pub const NO_ARGUMENT_VALUE: &str = "greffon secret set reads the value from stdin or a prompt, never from the command line (shell history and /proc would keep it): run `greffon secret set PLUGIN NAME` and type it, or pipe it in";

/// One secret command, the same through a server or on a local host.
async fn execute(backend: &impl Backend, command: SecretCommand) -> anyhow::Result<ExitCode> {
    let outcome = match command {
        SecretCommand::Set { plugin, name, .. } => {
            let value = read_value(&plugin, &name)?;
            backend
                .set_secret(&plugin, &name, &value)
                .await
                .map(|r| r.map(|()| print::out!("secret {name} of {plugin} stored")))
        }
        SecretCommand::List { plugin, json } => backend.secrets(plugin.as_deref()).await.map(|r| {
            r.map(|entries| {
                if json {
                    print::json(&json!(entries));
                } else {
                    print::secrets(&entries);
                }
            })
        }),
        SecretCommand::Rm { plugin, name } => backend
            .remove_secret(&plugin, &name)
            .await
            .map(|r| r.map(|()| print::out!("secret {name} of {plugin} removed"))),
    };
    Ok(match outcome? {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(crate::EXIT_ERROR)
        }
    })
}

/// The value from a no-echo prompt on a terminal, else all of stdin with
/// one trailing newline dropped (what `echo` and here-strings add).
fn read_value(plugin: &str, name: &str) -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    let mut value = if stdin.is_terminal() {
        eprint!("value of {name} for {plugin} (not shown): ");
        let _ = std::io::stderr().flush();
        let line = {
            let _quiet = NoEcho::on_stdin();
            let mut line = String::new();
            stdin
                .read_line(&mut line)
                .context("cannot read the value")?;
            line
        };
        eprintln!();
        line
    } else {
        let mut bytes = Vec::new();
        stdin
            .lock()
            .take(MAX_SECRET_BYTES as u64 + 3)
            .read_to_end(&mut bytes)
            .context("cannot read the value from stdin")?;
        String::from_utf8(bytes).context("the value is not UTF-8 text")?
    };
    if value.ends_with('\n') {
        value.pop();
        if value.ends_with('\r') {
            value.pop();
        }
    }
    Ok(value)
}

/// Terminal echo turned off on stdin until dropped.
struct NoEcho(Option<libc::termios>);

impl NoEcho {
    fn on_stdin() -> NoEcho {
        // SAFETY: termios is plain data; tcgetattr fills it for fd 0.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        if unsafe { libc::tcgetattr(0, &mut saved) } != 0 {
            return NoEcho(None);
        }
        let mut quiet = saved;
        quiet.c_lflag &= !libc::ECHO;
        // SAFETY: sets attributes read above, with echo off.
        if unsafe { libc::tcsetattr(0, libc::TCSAFLUSH, &quiet) } != 0 {
            return NoEcho(None);
        }
        NoEcho(Some(saved))
    }
}

impl Drop for NoEcho {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            // SAFETY: restores the attributes saved in on_stdin.
            unsafe { libc::tcsetattr(0, libc::TCSAFLUSH, saved) };
        }
    }
}

/// `greffon secret ...`: through the running server, or on the home's
/// store. A value on the command line is refused before anything else.
pub(crate) async fn run(
    root: &std::path::Path,
    config: Config,
    home: &Home,
    remote_flag: Option<&str>,
    command: cli::SecretCommand,
) -> anyhow::Result<ExitCode> {
    if let cli::SecretCommand::Set { value: Some(_), .. } = &command {
        eprintln!("error: {}", NO_ARGUMENT_VALUE);
        return Ok(ExitCode::from(EXIT_USAGE));
    }
    if let Some(remote) = remote::Remote::find(home, remote_flag)? {
        return execute(&remote, command).await;
    }
    let host = Host::open_with(root, config).await?;
    let code = execute(
        &Local {
            host: &host,
            tasks: None,
        },
        command,
    )
    .await;
    host.shutdown().await;
    code
}
