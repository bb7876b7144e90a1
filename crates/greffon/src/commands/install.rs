//! Installing greffon like any other tool: shell completions and man pages
//! generated from the command grammar, a systemd user unit that runs
//! `greffon serve`, and the `python -m app.cli` shim of the original
//! assistant in each home.

use crate::cli::{Cli, ServiceCommand};
use anyhow::{Context, bail};
use clap::CommandFactory;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The unit's file name under `~/.config/systemd/user/`.
const UNIT: &str = "greffon.service";

/// Writes the completion script for `shell` to stdout.
pub fn completions(shell: clap_complete::Shell) {
    clap_complete::generate(
        shell,
        &mut Cli::command(),
        "greffon",
        &mut std::io::stdout(),
    );
}

/// Writes greffon(1) to stdout, or with `dir`, greffon.1 and one page per
/// subcommand (greffon-plugin.1, greffon-plugin-run.1, ...) into it.
pub fn man(dir: Option<&Path>) -> anyhow::Result<()> {
    match dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            clap_mangen::generate_to(Cli::command(), dir)
                .with_context(|| format!("cannot write the man pages into {}", dir.display()))
        }
        None => clap_mangen::Man::new(Cli::command())
            .render(&mut std::io::stdout())
            .context("cannot write the man page"),
    }
}

/// `greffon service install|uninstall`: the user unit that keeps `greffon
/// serve` running on `root` while the user is logged in (or always, with
/// `loginctl enable-linger`).
pub fn service(root: &Path, command: ServiceCommand) -> anyhow::Result<()> {
    let unit = unit_path()?;
    match command {
        ServiceCommand::Install { no_enable } => {
            let exe = std::env::current_exe().context("cannot find greffon's own executable")?;
            let text = unit_text(&exe, root)?;
            if let Some(dir) = unit.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
            }
            std::fs::write(&unit, text)
                .with_context(|| format!("cannot write {}", unit.display()))?;
            println!("wrote {}", unit.display());
            if no_enable {
                println!("start it with: systemctl --user enable --now {UNIT}");
                return Ok(());
            }
            systemctl(&["daemon-reload"])?;
            systemctl(&["enable", "--now", UNIT])?;
            println!("enabled and started; logs: journalctl --user -u {UNIT}");
        }
        ServiceCommand::Uninstall => {
            if !unit.exists() {
                bail!("no unit at {}: nothing to uninstall", unit.display());
            }
            // A unit that was written but never enabled is not an error.
            if let Err(e) = systemctl(&["disable", "--now", UNIT]) {
                eprintln!("warning: {e:#}");
            }
            std::fs::remove_file(&unit)
                .with_context(|| format!("cannot remove {}", unit.display()))?;
            systemctl(&["daemon-reload"])?;
            println!("removed {}", unit.display());
        }
    }
    Ok(())
}

/// `$XDG_CONFIG_HOME/systemd/user/greffon.service`, the folder systemd
/// reads a user's own units from.
fn unit_path() -> anyhow::Result<PathBuf> {
    let config = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            Some(home) => PathBuf::from(home).join(".config"),
            None => bail!("neither XDG_CONFIG_HOME nor HOME is set: no place for a user unit"),
        },
    };
    Ok(config.join("systemd/user").join(UNIT))
}

fn unit_text(exe: &Path, root: &Path) -> anyhow::Result<String> {
    let root = std::path::absolute(root)
        .with_context(|| format!("cannot resolve the home {}", root.display()))?;
    Ok(format!(
        "# Written by `greffon service install`; `greffon service uninstall` removes it.\n\
         [Unit]\n\
         Description=greffon: sandboxed Python plugins for a local assistant\n\
         After=network-online.target\n\
         \n\
         [Service]\n\
         ExecStart={} --home {} serve\n\
         # greffon stops on SIGTERM after calls in flight finish and every\n\
         # plugin's stop() runs (within [server] shutdown_grace_s).\n\
         KillMode=mixed\n\
         TimeoutStopSec=30\n\
         Restart=on-failure\n\
         RestartSec=2\n\
         \n\
         [Install]\n\
         WantedBy=default.target\n",
        quote(exe)?,
        quote(&root)?
    ))
}

/// A path as one systemd command-line word: quoted, with `\`, `"`, `%` and
/// `$` escaped (systemd would otherwise expand the last two).
fn quote(path: &Path) -> anyhow::Result<String> {
    let Some(text) = path.to_str() else {
        bail!(
            "{} is not UTF-8: a unit file cannot name it",
            path.display()
        );
    };
    let escaped = text
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('%', "%%")
        .replace('$', "$$");
    Ok(format!("\"{escaped}\""))
}

fn systemctl(args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new("systemctl")
        .arg("--user")
        .args(args)
        .status()
        .context("cannot run systemctl (is this a systemd system?)")?;
    if !status.success() {
        bail!("systemctl --user {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// The original assistant's command line was `python -m app.cli ...`, run
/// from its folder. Each home keeps it working: `app/cli.py` hands every
/// argument to this greffon binary on this home. Written only when it
/// differs, so an unchanged home sees no write.
pub fn python_shim(root: &Path, app_dir: &Path) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find greffon's own executable")?;
    let root = std::path::absolute(root)?;
    let (Some(exe), Some(root)) = (exe.to_str(), root.to_str()) else {
        // A Python string literal needs text; such a home goes without.
        return Ok(());
    };
    let text = format!(
        "\"\"\"`python -m app.cli ...` from this home: the original assistant's\n\
         command line, which runs greffon on this home (written by greffon).\"\"\"\n\
         \n\
         import os\n\
         import sys\n\
         \n\
         GREFFON = {}\n\
         HOME = {}\n\
         \n\
         os.execv(GREFFON, [GREFFON, \"--home\", HOME, *sys.argv[1:]])\n",
        serde_json::to_string(exe)?,
        serde_json::to_string(root)?
    );
    let path = app_dir.join("cli.py");
    if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
        std::fs::create_dir_all(app_dir)?;
        std::fs::write(&path, text)?;
    }
    Ok(())
}
