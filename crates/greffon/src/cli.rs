//! The command-line grammar.

use clap::{ArgAction, Parser, Subcommand};
use std::path::PathBuf;

/// Run plain Python plugins in isolated, validated worker processes.
#[derive(Debug, Parser)]
#[command(name = "greffon", version, about, propagate_version = true)]
pub struct Cli {
    /// The greffon home (default: $GREFFON_HOME, else the current directory
    /// when it holds greffon.toml or plugins/, else ~/.local/share/greffon).
    #[arg(long, global = true, value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// More detail on stderr (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = ArgAction::Count)]
    pub verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Talk to the greffon server at URL (plugin list, info, enable,
    /// disable, reload, run); by default the CLI uses the server named in
    /// <home>/app/server.json when one runs, and works embedded otherwise.
    /// The token comes from $GREFFON_TOKEN, else <home>/app/token.
    #[arg(long, global = true, value_name = "URL")]
    pub remote: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Discover, inspect, enable and run plugins.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// Serve the HTTP API (default 127.0.0.1:8765, `[server] bind`) until
    /// SIGINT or SIGTERM; the token is in <home>/app/token.
    Serve {
        /// Address to listen on, overriding `[server] bind`.
        #[arg(long, value_name = "ADDR")]
        bind: Option<String>,
    },
    /// Check the interpreter and the kernel sandbox (exit 1 when plugins
    /// cannot run as configured).
    Doctor {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// List plugins: name, state, permissions, description (and why a
    /// plugin failed).
    List {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Show a plugin's meta, normalized JSON Schema, state and last crash
    /// dump.
    Info {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Run a plugin once and print its result as JSON (exit 0: result;
    /// 1: {"error"}; 2: usage error).
    Run {
        name: String,
        /// The arguments as one JSON object.
        #[arg(long, value_name = "OBJECT")]
        json: Option<String>,
        /// Arguments as KEY=VALUE (VALUE read as JSON unless the schema
        /// says string).
        #[arg(value_name = "KEY=VALUE")]
        pairs: Vec<String>,
    },
    /// Grant a plugin its declared permissions, start it, and remember it
    /// as enabled.
    Enable {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Swap a running plugin for the version on disk, rolling back on
    /// failure (needs a running server: without one, every command already
    /// loads plugins as they are on disk).
    Reload { name: String },
    /// Stop a plugin and remember it as disabled.
    Disable {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Load a plugin in a fresh worker and report every problem found.
    Check {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Create plugins/NAME/ from plugins/_template/.
    Scaffold { name: String },
}
