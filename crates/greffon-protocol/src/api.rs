//! What greffon's API answers about plugins: the bodies of `/v1/plugins`,
//! `/v1/secrets` and `plugin check`. The server writes them, the remote
//! CLI and the MCP adapter read them, and a host opened in-process gives
//! the same values, so no client deserializes the host's own records.

use greffon_core::{Finding, Permission, SchemaSource};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// A plugin's state: discovered plugins are `disabled` until enabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Loaded and valid, not running.
    Disabled,
    /// Granted its permissions; its worker runs (or starts on first call).
    Enabled,
    /// Import, meta, schema or `start()` failed, or it crashed too often.
    Failed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Disabled => "disabled",
            State::Enabled => "enabled",
            State::Failed => "failed",
        }
    }
}

/// Why a plugin is `failed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailureInfo {
    pub reason: String,
    /// The crash dump that tells more, when one was written.
    pub dump: Option<PathBuf>,
}

/// A secret a plugin declares, and whether the store holds a value for
/// it (never the value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretState {
    pub name: String,
    pub set: bool,
}

/// One secret as `secret list` shows it: never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretEntry {
    pub plugin: String,
    pub name: String,
    /// The store holds a value.
    pub set: bool,
    /// The plugin (as discovered) declares it; a stored secret of a
    /// removed plugin, or one its meta dropped, is listed undeclared until
    /// `secret rm`.
    pub declared: bool,
}

/// How busy a plugin's pool of workers is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolStats {
    /// Workers the pool may run.
    pub size: usize,
    /// Live workers serving a call.
    pub busy: usize,
    /// Live workers waiting for one.
    pub idle: usize,
    /// Calls waiting for a worker.
    pub queued: usize,
    /// Most calls that may wait (`queue`).
    pub queue_limit: usize,
}

/// The reach of a plugin's declared permissions, shown at enable.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AccessInfo {
    /// Hosts `greffon.http` may reach (the effective allowlist), when it
    /// declares `net`.
    pub network: Option<Vec<String>>,
    /// Folders it may read / write (declared, or its data folder).
    pub read: Vec<String>,
    pub write: Vec<String>,
    /// `memory_mb`, `cpu_s`, `max_open_files` as they apply.
    pub limits: BTreeMap<String, u64>,
}

/// One plugin as the API and the CLI show it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PluginInfo {
    /// Registry key: `meta["name"]`, or the folder when the meta is unusable.
    pub name: String,
    pub folder: String,
    pub path: PathBuf,
    pub state: State,
    pub description: String,
    pub version: Option<String>,
    /// What the plugin declares.
    pub permissions: Vec<Permission>,
    /// What was granted at enable (None when not enabled).
    pub granted: Option<Vec<Permission>>,
    /// The secrets it declares, and which are set.
    #[serde(default)]
    pub secrets: Vec<SecretState>,
    pub timeout_s: f64,
    pub schema_source: Option<SchemaSource>,
    /// The normalized JSON Schema of the arguments.
    pub schema: Option<Value>,
    /// The meta as the plugin declared it.
    pub meta: Option<Value>,
    pub failure: Option<FailureInfo>,
    /// Whether a worker is up right now.
    pub running: bool,
    /// Its pool: workers busy and idle, calls waiting.
    #[serde(default)]
    pub workers: PoolStats,
    pub last_dump: Option<PathBuf>,
    /// What the sandbox lets it reach with what it declares.
    pub access: AccessInfo,
    /// Unexpected worker exits since greffon started.
    pub worker_crashes: u64,
}

/// What `plugin check` found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckReport {
    pub name: String,
    pub folder: String,
    pub problems: Vec<String>,
    /// The same problems in the same order, each with what to change.
    pub findings: Vec<Finding>,
    pub dump: Option<PathBuf>,
    /// The normalized schema, when the meta is valid.
    pub schema: Option<Value>,
    pub permissions: Vec<Permission>,
}
