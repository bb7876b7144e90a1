//! `greffon.toml`: every key optional, every default documented here and
//! in the README.

use crate::allowlist::Pattern;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The workers' interpreter and the plugins' environments: `python =
    /// "PATH"` or a `[python]` table.
    pub python: PythonConfig,
    /// Where the JSON-line logs and crash dumps go, relative to the home.
    pub logs_dir: PathBuf,
    /// Call timeout when neither `[plugins.NAME]` nor the plugin's meta sets
    /// one.
    pub default_timeout_s: f64,
    /// Largest accepted arguments object, as JSON bytes.
    pub max_args_bytes: usize,
    /// Largest accepted result, as JSON bytes.
    pub max_result_bytes: usize,
    /// stdout+stderr kept per call for logs and crash dumps.
    pub capture_limit_bytes: usize,
    /// How long `stop()` may take at disable and shutdown.
    pub stop_timeout_s: f64,
    /// Grace after a call's timeout before its stuck worker is killed.
    pub kill_grace_s: f64,
    /// Worker crashes within `crash_window_s` that mark a plugin `failed`.
    pub max_crashes: u32,
    pub crash_window_s: f64,
    /// Worker processes per enabled plugin, each serving one call at a
    /// time (`[plugins.NAME] workers` overrides it).
    pub workers: usize,
    /// Calls that may wait for a busy plugin's worker; past it a call is
    /// answered "busy" at once (`[plugins.NAME] queue` overrides it).
    pub queue: usize,
    /// Workers all plugins together may run: a pool that would pass it
    /// starts fewer (never fewer than one).
    pub max_workers: usize,
    /// Fork workers from a template process that has imported the SDK
    /// (fast start, shared memory); false starts each with exec.
    pub worker_template: bool,
    /// Wave 1's per-worker thread limit, replaced by `workers` and
    /// `queue`: accepted so that older files still load, then ignored
    /// with a warning.
    pub max_concurrent_calls: Option<usize>,
    /// Write argument values into audit records (off: they may hold
    /// secrets).
    pub audit_args: bool,
    /// `enforce`: plugins run only inside the kernel sandbox, and refuse
    /// to start when the kernel lacks what it needs. `off`: an explicit
    /// opt-out, warned about at every start and in the audit log.
    pub sandbox: SandboxMode,
    /// Hosts any plugin may reach (entries as in `meta.allowlist_domains`).
    /// Unset: each plugin gets what it declares, shown at enable. Set: a
    /// ceiling that narrows what plugins declare.
    pub allowlist_domains: Option<Vec<String>>,
    /// Largest HTTP response body the broker hands to a plugin.
    pub http_max_response_bytes: usize,
    /// Longest an HTTP request may take when the plugin gives no timeout.
    pub http_timeout_s: f64,
    /// `greffon serve`.
    pub server: ServerConfig,
    /// Scheduled tasks.
    pub scheduler: SchedulerConfig,
    /// The local LLM.
    pub llm: LlmConfig,
    /// Where plugin secrets are kept.
    pub secrets: SecretsConfig,
    /// Per-plugin settings, keyed by plugin name.
    pub plugins: BTreeMap<String, PluginConfig>,
}

/// `[python]`, or `python = "PATH"` for its `path` alone.
#[derive(Debug, Clone, Default)]
pub struct PythonConfig {
    /// Interpreter for workers. Default: `$GREFFON_PYTHON`, else `python3`
    /// on `PATH`, resolved once to a real executable.
    pub path: Option<PathBuf>,
    /// The `uv` that builds plugins' environments; unset: `uv` on `PATH`.
    pub uv: Option<PathBuf>,
    /// Let uv build a package from its source distribution when no wheel
    /// fits. Off: a build runs the package's setup code on the host,
    /// outside any sandbox.
    pub allow_build: bool,
}

/// The `[python]` table as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct PythonTable {
    path: Option<PathBuf>,
    uv: Option<PathBuf>,
    allow_build: bool,
}

impl From<PythonTable> for PythonConfig {
    fn from(t: PythonTable) -> PythonConfig {
        PythonConfig {
            path: t.path,
            uv: t.uv,
            allow_build: t.allow_build,
        }
    }
}

/// Both spellings by hand rather than `untagged`, so that a mistake in
/// the table keeps serde's message naming the key.
struct PythonVisitor;

impl<'de> serde::de::Visitor<'de> for PythonVisitor {
    type Value = PythonTable;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an interpreter path, or a [python] table (path, uv, allow_build)")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<PythonTable, E> {
        Ok(PythonTable {
            path: Some(PathBuf::from(v)),
            ..PythonTable::default()
        })
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<PythonTable, A::Error> {
        PythonTable::deserialize(serde::de::value::MapAccessDeserializer::new(map))
    }
}

impl<'de> Deserialize<'de> for PythonConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<PythonConfig, D::Error> {
        d.deserialize_any(PythonVisitor).map(PythonConfig::from)
    }
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address `greffon serve` listens on.
    pub bind: String,
    /// The API's bearer token; unset, one is generated into `app/token`.
    /// Required for a bind that is not loopback.
    pub token: Option<String>,
    /// `Host` header values accepted besides loopback names (DNS
    /// rebinding defence).
    pub allowed_hosts: Vec<String>,
    /// How long calls in flight may take to finish at shutdown.
    pub shutdown_grace_s: f64,
    /// Browser origins allowed to call the API (CORS); none by default.
    pub cors_origins: Vec<String>,
    /// Watch `plugins/` and apply changes (reload, discover, remove).
    pub watch: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: "127.0.0.1:8765".into(),
            token: None,
            allowed_hosts: Vec::new(),
            shutdown_grace_s: 10.0,
            cors_origins: Vec::new(),
            watch: true,
        }
    }
}

/// `[scheduler]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerConfig {
    /// Whether `greffon serve` fires tasks (CRUD works either way).
    pub enabled: bool,
    /// Zone given to cron tasks saved without one; unset: the host's.
    pub default_tz: Option<String>,
    /// Finished runs kept per task.
    pub keep_runs: u32,
    /// Finished runs older than this many days are deleted.
    pub keep_days: u32,
    /// `postgres://…`: keep tasks in PostgreSQL, shared by every host that
    /// names it; unset: the home's SQLite file. `GREFFON_DATABASE_URL`
    /// wins, so the password can stay out of the file.
    pub database_url: Option<String>,
    /// Seconds a run claimed by a host stays its own without renewal
    /// (renewed every third of it); past that, another host marks it lost.
    pub lease_s: f64,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            enabled: true,
            default_tz: None,
            keep_runs: 100,
            keep_days: 30,
            database_url: None,
            lease_s: 30.0,
        }
    }
}

impl SchedulerConfig {
    /// The task database's URL: `GREFFON_DATABASE_URL`, else
    /// `database_url`; `None` for the SQLite file.
    pub fn database_url(&self) -> Option<String> {
        std::env::var("GREFFON_DATABASE_URL")
            .ok()
            .filter(|u| !u.is_empty())
            .or_else(|| self.database_url.clone())
    }
}

/// `[llm]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LlmConfig {
    /// `llama` (embedded llama.cpp) or `openai` (an OpenAI-compatible
    /// server: Ollama, llama-server, vLLM).
    pub backend: LlmBackend,
    /// The GGUF file, relative to the home's `models/` (or absolute).
    pub model: PathBuf,
    /// Threads for llama.cpp; unset: the available cores.
    pub threads: Option<u32>,
    /// Context length in tokens (prompt + answer).
    pub context: u32,
    /// Tokens decoded at once while reading a prompt.
    pub batch: u32,
    /// Requests waiting for the model; one more is refused at once (0:
    /// refused whenever the model is busy).
    pub queue: usize,
    /// Longest a request may take, queue included.
    pub timeout_s: f64,
    /// Write prompts and answers into `llm.log` (off: they may be private).
    pub log_prompts: bool,
    /// Pull the default model at its first use when its file is missing.
    pub auto_pull: bool,
    /// `openai`: the server's base URL, e.g. `http://127.0.0.1:11434/v1`.
    pub base_url: String,
    /// `openai`: the model name the server knows.
    pub api_model: String,
    /// `openai`: the bearer key, if the server wants one (never logged).
    pub api_key: Option<String>,
}

impl Default for LlmConfig {
    fn default() -> Self {
        LlmConfig {
            backend: LlmBackend::Llama,
            model: PathBuf::from("SmolLM2-135M-Instruct.Q4_1.gguf"),
            threads: None,
            context: 2048,
            batch: 512,
            queue: 8,
            timeout_s: 300.0,
            log_prompts: false,
            auto_pull: true,
            base_url: "http://127.0.0.1:11434/v1".into(),
            api_model: "smollm2:135m".into(),
            api_key: None,
        }
    }
}

/// `[secrets]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecretsConfig {
    pub store: SecretStoreKind,
}

/// `[secrets] store`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SecretStoreKind {
    /// The OS keyring when a Secret Service answers on the session bus
    /// (and `app/secrets.json` holds nothing yet), else the file.
    #[default]
    Auto,
    /// The Secret Service only: an error when none answers.
    Keyring,
    /// `app/secrets.json` (mode 0600) only.
    File,
}

/// `[llm] backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LlmBackend {
    Llama,
    Openai,
}

/// `sandbox = "enforce" | "off"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxMode {
    #[default]
    Enforce,
    Off,
}

/// `[plugins.NAME]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginConfig {
    /// Overrides `meta["timeout"]` and `default_timeout_s`.
    pub timeout_s: Option<f64>,
    /// Override `meta["limits"]` and the defaults (2048 MiB, 3600 CPU
    /// seconds, 256 open files).
    pub memory_mb: Option<u64>,
    pub cpu_s: Option<u64>,
    pub max_open_files: Option<u64>,
    /// Largest file the plugin may write (default 1024 MiB).
    pub max_file_mb: Option<u64>,
    /// Replaces the plugin's own `allowlist_domains` (still within the
    /// global list): the operator points a plugin at a mirror or a local
    /// upstream without editing its code.
    pub allowlist_domains: Option<Vec<String>>,
    /// Overrides the top-level `workers`.
    pub workers: Option<usize>,
    /// Overrides the top-level `queue`.
    pub queue: Option<usize>,
    /// Free table handed to the plugin as `greffon.config()`.
    pub config: BTreeMap<String, toml::Value>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            python: PythonConfig::default(),
            logs_dir: PathBuf::from("app/logs"),
            default_timeout_s: 30.0,
            max_args_bytes: 1 << 20,
            max_result_bytes: 16 << 20,
            capture_limit_bytes: 64 << 10,
            stop_timeout_s: 5.0,
            kill_grace_s: 5.0,
            max_crashes: 3,
            crash_window_s: 60.0,
            workers: 1,
            queue: 64,
            max_workers: 32,
            worker_template: true,
            max_concurrent_calls: None,
            audit_args: false,
            sandbox: SandboxMode::Enforce,
            allowlist_domains: None,
            http_max_response_bytes: 10 << 20,
            http_timeout_s: 30.0,
            server: ServerConfig::default(),
            scheduler: SchedulerConfig::default(),
            llm: LlmConfig::default(),
            secrets: SecretsConfig::default(),
            plugins: BTreeMap::new(),
        }
    }
}

/// A configuration file that cannot be used, located precisely.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based line, when the error has a position.
    pub line: Option<usize>,
    /// Dotted key path (`plugins.weather.timeout_s`), when known.
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": key '{key}'")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads `file`; a missing file is the default configuration.
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        match std::fs::read_to_string(file) {
            Ok(text) => Config::parse(&text, file),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(e) => Err(ConfigError {
                file: file.to_path_buf(),
                line: None,
                key: None,
                message: format!("cannot read: {e}"),
            }),
        }
    }

    /// Parses TOML text; `file` only names it in errors.
    pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let located = |e: &toml::de::Error, key: Option<String>| ConfigError {
            file: file.to_path_buf(),
            line: e.span().map(|s| line_of(text, s.start)),
            key,
            message: e.message().trim().to_string(),
        };
        let de = toml::Deserializer::parse(text).map_err(|e| located(&e, None))?;
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let key = (path != ".").then_some(path);
            located(e.inner(), key)
        })?;
        config.check(text, file)?;
        Ok(config)
    }

    /// Range checks serde cannot express; the first problem is reported,
    /// at its line.
    fn check(&self, text: &str, file: &Path) -> Result<(), ConfigError> {
        let problem = (self.durations_problem())
            .or_else(|| self.counts_problem())
            .or_else(|| self.server_problem())
            .or_else(|| self.allowlist_problem())
            .or_else(|| self.llm_problem())
            .or_else(|| self.scheduler_problem());
        match problem {
            None => Ok(()),
            Some((key, message)) => Err(ConfigError {
                file: file.to_path_buf(),
                line: find_key_line(text, &key),
                key: Some(key),
                message,
            }),
        }
    }

    /// Durations in seconds, which must be positive.
    fn durations_problem(&self) -> Option<(String, String)> {
        let plugin_timeouts = (self.plugins.iter())
            .filter_map(|(name, p)| Some((format!("plugins.{name}.timeout_s"), p.timeout_s?)));
        [
            ("default_timeout_s", self.default_timeout_s),
            ("stop_timeout_s", self.stop_timeout_s),
            ("kill_grace_s", self.kill_grace_s),
            ("crash_window_s", self.crash_window_s),
            ("http_timeout_s", self.http_timeout_s),
            ("server.shutdown_grace_s", self.server.shutdown_grace_s),
        ]
        .into_iter()
        .map(|(key, v)| (key.to_string(), v))
        .chain(plugin_timeouts)
        .find(|(_, v)| !(*v > 0.0 && v.is_finite()))
        .map(|(key, v)| (key, format!("must be a positive number, got {v}")))
    }

    /// Sizes and counts, which must be at least 1.
    fn counts_problem(&self) -> Option<(String, String)> {
        let global = [
            ("max_args_bytes", self.max_args_bytes as u64),
            ("max_result_bytes", self.max_result_bytes as u64),
            ("workers", self.workers as u64),
            ("max_workers", self.max_workers as u64),
            ("max_crashes", u64::from(self.max_crashes)),
            (
                "http_max_response_bytes",
                self.http_max_response_bytes as u64,
            ),
        ]
        .map(|(key, v)| (key.to_string(), Some(v)));
        let per_plugin = self.plugins.iter().flat_map(|(name, p)| {
            [
                ("memory_mb", p.memory_mb),
                ("cpu_s", p.cpu_s),
                ("max_open_files", p.max_open_files),
                ("max_file_mb", p.max_file_mb),
                ("workers", p.workers.map(|w| w as u64)),
            ]
            .map(|(key, v)| (format!("plugins.{name}.{key}"), v))
        });
        per_plugin
            .chain(global)
            .find(|(_, v)| *v == Some(0))
            .map(|(key, _)| (key, "must be at least 1".into()))
    }

    fn server_problem(&self) -> Option<(String, String)> {
        if self.server.bind.parse::<std::net::SocketAddr>().is_err() {
            return Some((
                "server.bind".into(),
                format!(
                    "'{}' is not an address with a port (e.g. 127.0.0.1:8765)",
                    self.server.bind
                ),
            ));
        }
        if self.server.token.as_ref().is_some_and(|t| t.len() < 16) {
            return Some((
                "server.token".into(),
                "must be at least 16 characters".into(),
            ));
        }
        None
    }

    /// Every allowlist entry, global then per plugin, must parse.
    fn allowlist_problem(&self) -> Option<(String, String)> {
        let global = (self.allowlist_domains.iter().flatten())
            .map(|entry| ("allowlist_domains".to_string(), entry));
        let per_plugin = self.plugins.iter().flat_map(|(name, p)| {
            (p.allowlist_domains.iter().flatten())
                .map(move |entry| (format!("plugins.{name}.allowlist_domains"), entry))
        });
        global
            .chain(per_plugin)
            .find_map(|(key, entry)| Pattern::parse(entry).err().map(|why| (key, why)))
    }

    fn llm_problem(&self) -> Option<(String, String)> {
        let zero = [
            ("llm.context", self.llm.context),
            ("llm.batch", self.llm.batch),
            ("llm.threads", self.llm.threads.unwrap_or(1)),
        ]
        .into_iter()
        .find(|(_, v)| *v == 0);
        if let Some((key, _)) = zero {
            return Some((key.to_string(), "must be at least 1".into()));
        }
        if !(self.llm.timeout_s.is_finite() && self.llm.timeout_s > 0.0) {
            return Some((
                "llm.timeout_s".into(),
                "must be a number of seconds > 0".into(),
            ));
        }
        None
    }

    fn scheduler_problem(&self) -> Option<(String, String)> {
        if self.scheduler.keep_runs == 0 {
            return Some(("scheduler.keep_runs".into(), "must be at least 1".into()));
        }
        if !(self.scheduler.lease_s.is_finite() && self.scheduler.lease_s >= 1.0) {
            return Some((
                "scheduler.lease_s".into(),
                "must be a number of seconds ≥ 1".into(),
            ));
        }
        None
    }

    /// Worker processes for `plugin` (before the `max_workers` ceiling).
    pub fn workers_for(&self, plugin: &str) -> usize {
        self.plugins
            .get(plugin)
            .and_then(|p| p.workers)
            .unwrap_or(self.workers)
    }

    /// Calls that may wait for one of `plugin`'s workers.
    pub fn queue_for(&self, plugin: &str) -> usize {
        self.plugins
            .get(plugin)
            .and_then(|p| p.queue)
            .unwrap_or(self.queue)
    }

    /// The effective timeout for a plugin: config, then meta, then default.
    pub fn timeout_for(&self, plugin: &str, meta_timeout_s: Option<f64>) -> f64 {
        self.plugins
            .get(plugin)
            .and_then(|p| p.timeout_s)
            .or(meta_timeout_s)
            .unwrap_or(self.default_timeout_s)
    }

    /// The global allowlist, parsed (entries were checked at load).
    pub fn global_allowlist(&self) -> Option<Vec<Pattern>> {
        self.allowlist_domains
            .as_ref()
            .map(|l| l.iter().filter_map(|e| Pattern::parse(e).ok()).collect())
    }

    /// The operator's allowlist for one plugin, parsed, when set.
    pub fn plugin_allowlist(&self, plugin: &str) -> Option<Vec<Pattern>> {
        self.plugins
            .get(plugin)?
            .allowlist_domains
            .as_ref()
            .map(|l| l.iter().filter_map(|e| Pattern::parse(e).ok()).collect())
    }

    /// The plugin's `config` table as JSON, for `greffon.config()`.
    pub fn plugin_config(&self, plugin: &str) -> Value {
        self.plugins
            .get(plugin)
            .and_then(|p| serde_json::to_value(&p.config).ok())
            .unwrap_or_else(|| Value::Object(Default::default()))
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Best-effort line of a dotted key's last segment, for range errors.
fn find_key_line(text: &str, key: &str) -> Option<usize> {
    let last = key.rsplit('.').next()?;
    text.lines()
        .position(|l| {
            l.trim_start()
                .strip_prefix(last)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("greffon.toml"))
    }

    #[test]
    fn empty_file_gives_documented_defaults() {
        let c = parse("").expect("valid");
        assert_eq!(c.logs_dir, PathBuf::from("app/logs"));
        assert_eq!(c.default_timeout_s, 30.0);
        assert_eq!(c.max_args_bytes, 1 << 20);
        assert!(c.python.path.is_none() && c.python.uv.is_none() && !c.python.allow_build);
        assert!(!c.audit_args);
    }

    #[test]
    fn missing_file_is_the_default() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = Config::load(&dir.path().join("greffon.toml")).expect("default");
        assert_eq!(c.stop_timeout_s, 5.0);
    }

    #[test]
    fn plugin_tables_give_timeout_and_config() {
        let c = parse(
            "default_timeout_s = 10\n[plugins.weather]\ntimeout_s = 3\n[plugins.weather.config]\nbase_url = \"http://x\"\nretries = 2\n",
        )
        .expect("valid");
        assert_eq!(c.timeout_for("weather", Some(7.0)), 3.0);
        assert_eq!(c.timeout_for("other", Some(7.0)), 7.0);
        assert_eq!(c.timeout_for("other", None), 10.0);
        assert_eq!(
            c.plugin_config("weather"),
            serde_json::json!({"base_url": "http://x", "retries": 2})
        );
        assert_eq!(c.plugin_config("other"), serde_json::json!({}));
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let e = parse("logs_dir = \"x\"\n\n[plugins.weather]\ntimeout = 3\n").expect_err("refused");
        assert_eq!(e.line, Some(4));
        assert_eq!(e.key.as_deref(), Some("plugins.weather.timeout"));
        assert!(e.message.contains("timeout"), "{e}");
        assert!(
            e.to_string()
                .starts_with("greffon.toml:4: key 'plugins.weather.timeout'"),
            "{e}"
        );
    }

    #[test]
    fn wrong_type_names_the_key() {
        let e = parse("default_timeout_s = \"soon\"\n").expect_err("refused");
        assert_eq!(e.line, Some(1));
        assert_eq!(e.key.as_deref(), Some("default_timeout_s"));
    }

    #[test]
    fn syntax_error_has_a_line() {
        let e = parse("a = 1\nb = [\n").expect_err("refused");
        assert!(e.line.is_some(), "{e}");
    }

    #[test]
    fn sandbox_allowlist_and_limits_are_read() {
        let c = parse("").expect("valid");
        assert_eq!(c.sandbox, SandboxMode::Enforce);
        assert!(c.global_allowlist().is_none());
        let c = parse(
            "sandbox = \"off\"\nallowlist_domains = [\"*.example.com\"]\n[plugins.w]\nmemory_mb = 300\n",
        )
        .expect("valid");
        assert_eq!(c.sandbox, SandboxMode::Off);
        assert_eq!(c.global_allowlist().map(|l| l.len()), Some(1));
        assert_eq!(c.plugins["w"].memory_mb, Some(300));
        let e = parse("sandbox = \"lax\"\n").expect_err("refused");
        assert_eq!(e.key.as_deref(), Some("sandbox"));
        let e = parse("allowlist_domains = [\"ok.com\", \"*.com\"]\n").expect_err("refused");
        assert_eq!(e.key.as_deref(), Some("allowlist_domains"));
        assert!(e.message.contains("'*.com'"), "{e}");
        let e = parse("[plugins.w]\ncpu_s = 0\n").expect_err("refused");
        assert_eq!(e.key.as_deref(), Some("plugins.w.cpu_s"));
    }

    #[test]
    fn the_secret_store_is_chosen_by_name() {
        assert_eq!(
            parse("").expect("valid").secrets.store,
            SecretStoreKind::Auto
        );
        let c = parse("[secrets]\nstore = \"file\"\n").expect("valid");
        assert_eq!(c.secrets.store, SecretStoreKind::File);
        let e = parse("[secrets]\nstore = \"vault\"\n").expect_err("refused");
        assert_eq!(e.key.as_deref(), Some("secrets.store"));
        assert_eq!(e.line, Some(2));
    }

    #[test]
    fn python_is_a_path_or_a_table() {
        let c = parse("python = \"/usr/bin/python3\"\n").expect("valid");
        assert_eq!(
            c.python.path.as_deref(),
            Some(Path::new("/usr/bin/python3"))
        );
        assert!(!c.python.allow_build);
        let c = parse("[python]\npath = \"/opt/py\"\nuv = \"/opt/uv\"\nallow_build = true\n")
            .expect("valid");
        assert_eq!(c.python.path.as_deref(), Some(Path::new("/opt/py")));
        assert_eq!(c.python.uv.as_deref(), Some(Path::new("/opt/uv")));
        assert!(c.python.allow_build);
        let e = parse("[python]\nuvv = \"/opt/uv\"\n").expect_err("refused");
        assert!(e.to_string().contains("uvv"), "{e}");
    }

    #[test]
    fn a_plugin_allowlist_is_read_and_checked() {
        let c = parse("[plugins.w]\nallowlist_domains = [\"127.0.0.1:8080\"]\n").expect("valid");
        assert_eq!(c.plugin_allowlist("w").map(|l| l.len()), Some(1));
        assert!(c.plugin_allowlist("other").is_none());
        let e = parse("[plugins.w]\nallowlist_domains = [\"*.com\"]\n").expect_err("refused");
        assert_eq!(e.key.as_deref(), Some("plugins.w.allowlist_domains"));
        assert_eq!(e.line, Some(2));
    }

    #[test]
    fn out_of_range_values_are_refused_with_their_line() {
        let e = parse("python = \"/usr/bin/python3\"\nmax_args_bytes = 0\n").expect_err("refused");
        assert_eq!(e.key.as_deref(), Some("max_args_bytes"));
        assert_eq!(e.line, Some(2));
        let e = parse("[plugins.x]\ntimeout_s = -2\n").expect_err("refused");
        assert_eq!(e.key.as_deref(), Some("plugins.x.timeout_s"));
        assert_eq!(e.line, Some(2));
        // A lease under a second would be renewed faster than a claim.
        let e = parse("[scheduler]\nlease_s = 0.5\n").expect_err("refused");
        assert_eq!(e.key.as_deref(), Some("scheduler.lease_s"));
        assert_eq!(e.line, Some(2));
        assert!(parse("[scheduler]\nlease_s = 1\n").is_ok());
    }
}
