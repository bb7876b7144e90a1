//! The host: a home opened, its registry of plugins, and what the registry
//! answers (entries, crash dumps, secrets). Discovery, the lifecycle of a
//! plugin and the call path live beside it (`discovery`, `lifecycle`,
//! `calls`).

use crate::discovery::EnvUse;
use crate::dump::{self, Dump, DumpEntry, Phase};
use crate::envs::Envs;
use crate::error::HostError;
use crate::jail::{Access, Jailer};
use crate::python::Interpreter;
use crate::registry::{Failure, Plugin, Registry};
use crate::secrets::SecretStore;
use crate::services::Services;
use crate::store::Store;
use greffon_core::{Config, Finding, Home, SandboxMode};
use greffon_protocol::api::{CheckReport, PluginInfo, SecretEntry, SecretState, State};
use greffon_protocol::{Output, Service, WireError};
use greffon_sandbox::Support;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// What the kernel offers, lowered by `GREFFON_LANDLOCK_ABI_CAP` (which can
/// only lower it) to check greffon's refusal on an older kernel.
pub fn sandbox_support() -> Support {
    let cap = std::env::var("GREFFON_LANDLOCK_ABI_CAP")
        .ok()
        .and_then(|v| v.parse().ok());
    greffon_sandbox::probe().capped(cap)
}

/// The interpreter workers would run on (path and version), for `doctor`.
pub fn python_facts(configured: Option<&Path>) -> Result<(PathBuf, String), String> {
    crate::python::resolve(configured).map(|i| (i.exe, i.version))
}

/// A greffon host over one home.
#[derive(Debug, Clone)]
pub struct Host {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub home: Home,
    pub config: Config,
    /// The resolved interpreter (never a shim).
    pub python: Interpreter,
    /// Builds each worker's sandbox.
    pub jailer: Jailer,
    /// Builds and finds plugins' Python environments.
    pub envs: Envs,
    pub sdk_dir: PathBuf,
    pub store: Store,
    pub services: Arc<Services>,
    pub plugins: Registry,
    /// A generation bumped whenever a plugin may have entered or left the
    /// enabled set or changed its meta: what MCP sessions watch to re-list
    /// their tools.
    pub changes: Arc<watch::Sender<u64>>,
    /// A generation bumped whenever a crash dump is written or a worker
    /// ends unexpectedly: what a live view of the plugins watches besides
    /// `changes` (MCP clients are not told: their tools did not change).
    pub incidents: Arc<watch::Sender<u64>>,
    /// True while the registry holds only the plugin a command named
    /// ([`Host::open_for`]); the rest of `plugins/` is discovered at the
    /// first miss. Held while that happens, so it happens once.
    pub partial: tokio::sync::Mutex<bool>,
}

impl Host {
    /// Opens the home at `root` with an explicit configuration.
    pub async fn open_with(root: &Path, config: Config) -> Result<Host, HostError> {
        let host = Host::open_empty(root, config).await?;
        host.discover().await?;
        host.refresh_secret_names().await;
        Ok(host)
    }

    /// Opens the home for a command that names one plugin: when
    /// `plugins/NAME/` declares NAME, only that folder is imported now;
    /// any other plugin is discovered when first asked for. Otherwise
    /// (another folder, or a name that is not a folder's) as
    /// [`Host::open_with`]. Two folders declaring one name are then
    /// caught when the others are discovered, not before.
    pub async fn open_for(root: &Path, config: Config, name: &str) -> Result<Host, HostError> {
        let host = Host::open_empty(root, config).await?;
        if !host.discover_only(name).await? {
            host.discover().await?;
        }
        host.refresh_secret_names().await;
        Ok(host)
    }

    /// The home opened, its registry still empty.
    async fn open_empty(root: &Path, config: Config) -> Result<Host, HostError> {
        std::fs::create_dir_all(root).map_err(|source| HostError::Io {
            context: format!("cannot create the home {}", root.display()),
            source,
        })?;
        let home = Home::new(root, &config);
        let python = crate::python::resolve_cached(
            config.python.path.as_deref(),
            &home.app_dir().join("python.json"),
        )
        .map_err(HostError::Python)?;
        let support = sandbox_support();
        match config.sandbox {
            SandboxMode::Off => {
                tracing::warn!(target: "server", "sandbox = \"off\": plugins run WITHOUT kernel isolation; their permissions are not enforced");
                tracing::warn!(target: "audit", event = "sandbox_off", "plugins run without kernel isolation (sandbox = \"off\")");
            }
            SandboxMode::Enforce => {
                let missing = support.missing();
                if !missing.is_empty() {
                    tracing::error!(target: "server", "the kernel cannot enforce the sandbox, so no plugin will start: {}; run `greffon doctor`", missing.join("; "));
                }
            }
        }
        if config.max_concurrent_calls.is_some() {
            tracing::warn!(target: "server", "max_concurrent_calls is no longer used: each worker serves one call at a time; set workers (and queue) instead");
        }
        crate::jail::sweep_stale_scratch(&home.tmp_root());
        let sdk_root = home.sdk_root();
        let sdk_dir =
            greffon_worker::sdk::materialize(&sdk_root).map_err(|source| HostError::Sdk {
                path: sdk_root,
                source,
            })?;
        let jailer =
            Jailer::new(&home, &config, &python, &sdk_dir, support).map_err(|e| HostError::Io {
                context: "cannot build the no-exec filter".into(),
                source: std::io::Error::other(e),
            })?;
        let db = home.db_file();
        let store = Store::open(&db)
            .await
            .map_err(|source| HostError::Database {
                path: db.clone(),
                source,
            })?;
        let http = crate::broker::HttpSettings {
            max_response_bytes: config.http_max_response_bytes,
            timeout: Duration::from_secs_f64(config.http_timeout_s),
        };
        let (home_root, home_secrets) = (home.root().to_path_buf(), home.secrets_file());
        let secrets_kind = config.secrets.store;
        let envs = Envs::new(&home, &config, &python);
        let inner = Arc::new(Inner {
            home,
            config,
            python,
            jailer,
            envs,
            sdk_dir,
            store,
            services: Arc::new(Services {
                sys_root: PathBuf::from("/"),
                http,
                secrets: SecretStore::open(&home_root, &home_secrets, secrets_kind),
                extra: Default::default(),
            }),
            plugins: Registry::default(),
            changes: Arc::new(watch::Sender::new(0)),
            incidents: Arc::new(watch::Sender::new(0)),
            partial: tokio::sync::Mutex::new(false),
        });
        Ok(Host { inner })
    }

    pub fn home(&self) -> &Home {
        &self.inner.home
    }

    /// A receiver that changes whenever the set of enabled plugins (or the
    /// meta of one) may have changed: enable, disable, reload, a folder
    /// synced by the watcher, a plugin marked failed. Consumers re-read
    /// [`Host::plugins`] when it fires; a spurious wake-up is harmless.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    /// A receiver that changes whenever a crash dump is written or a worker
    /// ends unexpectedly (see [`Host::dumps`]).
    pub fn incidents(&self) -> watch::Receiver<u64> {
        self.inner.incidents.subscribe()
    }

    /// The crash dumps of plugin `name` (under its name or its folder),
    /// newest first, at most `limit`.
    pub fn dumps(&self, name: &str, limit: usize) -> Result<Vec<DumpEntry>, HostError> {
        let plugin = self.lookup(name)?;
        let dir = self.inner.home.dumps_dir();
        let listing = dump::listing(&dir);
        Ok(dump::of(
            &dir,
            &listing,
            &[&plugin.key, &plugin.folder],
            limit,
        ))
    }

    /// The text of crash dump `file` of plugin `name`: only a file name
    /// written under its name or folder, so a name never reaches another
    /// file.
    pub fn dump_text(&self, name: &str, file: &str) -> Result<String, HostError> {
        let plugin = self.lookup(name)?;
        let missing = || HostError::NotFound(format!("plugin '{name}' has no crash dump '{file}'"));
        if !dump::names_dump_of(file, &[&plugin.key, &plugin.folder]) {
            return Err(missing());
        }
        match std::fs::read_to_string(self.inner.home.dumps_dir().join(file)) {
            Ok(text) => Ok(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(missing()),
            Err(source) => Err(HostError::Io {
                context: format!("cannot read the crash dump {file}"),
                source,
            }),
        }
    }

    /// Adds a host service plugins can call, for the methods named
    /// `PREFIX.*`; a second registration under one prefix replaces the first.
    pub fn register_service(&self, prefix: &str, service: Arc<dyn Service>) {
        if let Ok(mut extra) = self.inner.services.extra.write() {
            extra.insert(prefix.to_string(), service);
        }
    }

    /// The interpreter workers run on.
    pub fn python(&self) -> &Path {
        &self.inner.python.exe
    }

    /// What the kernel offers the sandbox, as this host uses it.
    pub fn sandbox_support(&self) -> Support {
        self.inner.jailer.support()
    }

    pub(crate) fn lookup(&self, name: &str) -> Result<Arc<Plugin>, HostError> {
        if let Some(p) = self.inner.plugins.get(name) {
            return Ok(p);
        }
        let known = self.inner.plugins.keys();
        Err(HostError::UnknownPlugin(if known.is_empty() {
            format!(
                "unknown plugin '{name}': no plugin found under {}",
                self.inner.home.plugins_dir().display()
            )
        } else {
            format!("unknown plugin '{name}' (known: {})", known.join(", "))
        }))
    }

    /// Every plugin, by name.
    pub fn plugins(&self) -> Vec<PluginInfo> {
        let dumps = dump::listing(&self.inner.home.dumps_dir());
        let set = self.inner.secret_names();
        let plugins = self.inner.plugins.all();
        plugins
            .iter()
            .map(|p| self.info_of(p, &dumps, &set))
            .collect()
    }

    /// The names that reach an enabled plugin (its key, and the name its
    /// meta declares when another): what a task on this host can call.
    pub fn enabled_plugins(&self) -> Vec<String> {
        let mut names = Vec::new();
        for p in self.inner.plugins.all() {
            let status = p.status();
            if status.state == State::Enabled {
                names.push(p.key.clone());
                if let Some(meta) = status.meta.as_ref().filter(|m| m.name != p.key) {
                    names.push(meta.name.clone());
                }
            }
        }
        names
    }

    /// One plugin's entry.
    pub fn plugin(&self, name: &str) -> Result<PluginInfo, HostError> {
        let plugin = self.lookup(name)?;
        let dumps = dump::listing(&self.inner.home.dumps_dir());
        Ok(self.info_of(&plugin, &dumps, &self.inner.secret_names()))
    }

    fn info_of(
        &self,
        p: &Plugin,
        dumps: &[String],
        set: &BTreeMap<String, Vec<String>>,
    ) -> PluginInfo {
        let workers = p.pool().stats();
        let s = p.status();
        let meta = s.meta.as_deref();
        PluginInfo {
            name: p.key.clone(),
            folder: p.folder.clone(),
            path: p.dir.clone(),
            state: s.state,
            description: meta.map(|m| m.description.clone()).unwrap_or_default(),
            version: meta.and_then(|m| m.version.clone()),
            permissions: meta.map(|m| m.permissions.clone()).unwrap_or_default(),
            granted: s.granted.as_ref().map(|g| g.permissions.clone()),
            secrets: meta.map_or_else(Vec::new, |m| {
                let stored = set.get(&p.key);
                m.secrets
                    .iter()
                    .map(|name| SecretState {
                        name: name.clone(),
                        set: stored.is_some_and(|s| s.contains(name)),
                    })
                    .collect()
            }),
            timeout_s: self
                .inner
                .config
                .timeout_for(&p.key, meta.and_then(|m| m.timeout_s)),
            schema_source: meta.map(|m| m.schema.source()),
            schema: meta.map(|m| m.schema.schema().clone()),
            meta: meta.map(|m| m.raw.clone()),
            failure: s.failure.as_ref().map(Failure::info),
            running: workers.busy + workers.idle > 0,
            workers,
            last_dump: dump::latest(&self.inner.home.dumps_dir(), dumps, &[&p.key, &p.folder]),
            access: meta.map_or_else(Default::default, |m| self.inner.jailer.access_info(m)),
            worker_crashes: s.crash_total,
        }
    }

    /// The declared and stored secrets of `plugin` (or of all), with
    /// whether each is set; values are never returned.
    pub async fn secrets(&self, plugin: Option<&str>) -> Result<Vec<SecretEntry>, HostError> {
        let stored = self.inner.services.secrets.names().await?;
        // A plugin whose folder is gone still lists what it left stored.
        if let Some(name) = plugin
            && !stored.contains_key(name)
        {
            self.lookup(name)?;
        }
        Ok(self.inner.secret_list(plugin, &stored))
    }

    /// Stores the value of a secret `plugin` declares.
    pub async fn set_secret(&self, plugin: &str, name: &str, value: &str) -> Result<(), HostError> {
        let declared = self
            .lookup(plugin)?
            .status()
            .meta
            .as_ref()
            .map(|m| m.secrets.clone())
            .unwrap_or_default();
        self.inner.set_secret(plugin, name, value, &declared).await
    }

    /// Removes a stored secret; [`HostError::SecretNotSet`] when none was.
    pub async fn remove_secret(&self, plugin: &str, name: &str) -> Result<(), HostError> {
        self.inner.remove_secret(plugin, name).await
    }

    /// Reads which secrets are set, so that `plugin info` can say so
    /// without waiting on the keyring; only when a plugin declares one
    /// (the keyring is not probed for homes that use none).
    async fn refresh_secret_names(&self) {
        let declares = self.inner.plugins.all().iter().any(|p| {
            p.status()
                .meta
                .as_ref()
                .is_some_and(|m| !m.secrets.is_empty())
        });
        if declares && let Err(e) = self.inner.services.secrets.names().await {
            tracing::warn!(target: "server", "cannot list the stored secrets: {e}");
        }
    }

    /// Loads a plugin in a fresh worker (by name or folder) and reports
    /// every problem, without changing the registry.
    pub async fn check(&self, name: &str) -> Result<CheckReport, HostError> {
        let (folder, dir) = match self.lookup(name) {
            Ok(p) => (p.folder.clone(), p.dir.clone()),
            Err(e) => {
                let dir = self.inner.home.plugins_dir().join(name);
                if !greffon_core::is_valid_name(name) || !dir.join("plugin.py").is_file() {
                    return Err(e);
                }
                (name.to_string(), dir)
            }
        };
        let mut report = CheckReport {
            name: name.to_string(),
            folder: folder.clone(),
            problems: Vec::new(),
            findings: Vec::new(),
            dump: None,
            schema: None,
            permissions: Vec::new(),
        };
        match self
            .inner
            .load(
                &folder,
                &dir,
                &Access::none(),
                (Phase::Import, EnvUse::IfBuilt),
                None,
            )
            .await
        {
            Ok(loaded) => {
                loaded.worker.shutdown(Duration::from_secs(1)).await;
                report.name = loaded.meta.name.clone();
                report.schema = Some(loaded.meta.schema.schema().clone());
                report.permissions = loaded.meta.permissions.clone();
                let others: Vec<String> = self
                    .inner
                    .plugins
                    .declaring(&loaded.meta.name)
                    .iter()
                    .filter(|p| p.folder != folder)
                    .map(|p| format!("plugins/{}", p.folder))
                    .collect();
                if !others.is_empty() {
                    report.problems.push(format!(
                        "plugin name '{}' is also declared by {}",
                        loaded.meta.name,
                        others.join(", ")
                    ));
                }
                report
                    .problems
                    .extend(self.inner.jailer.path_problems(&loaded.meta));
            }
            Err(e) => {
                if let Some(n) = e.name.clone() {
                    report.name = n;
                }
                report.problems = e.problems;
                report.dump = e.dump;
            }
        }
        report.findings = report.problems.iter().cloned().map(Finding::new).collect();
        Ok(report)
    }

    /// Creates `plugins/NAME/` from the template (see [`crate::scaffold`]),
    /// refusing a name some plugin already declares, whatever its folder.
    pub fn scaffold(&self, name: &str) -> Result<PathBuf, HostError> {
        if let Some(existing) = self.inner.plugins.declaring(name).first() {
            return Err(HostError::Scaffold {
                name: name.to_string(),
                reason: format!("plugins/{} already declares that name", existing.folder),
            });
        }
        crate::scaffold::scaffold(&self.inner.home, name)
    }

    /// The pid of one of the plugin's running workers, if any (for tests
    /// and benchmarks that inspect the process).
    pub async fn worker_pid(&self, name: &str) -> Option<i32> {
        self.lookup(name).ok()?.pool().pids().first().copied()
    }

    /// The pids of every running worker of the plugin.
    pub fn worker_pids(&self, name: &str) -> Vec<i32> {
        self.lookup(name)
            .map(|p| p.pool().pids())
            .unwrap_or_default()
    }
}

impl Inner {
    /// The secret names set, by plugin, as last read.
    fn secret_names(&self) -> BTreeMap<String, Vec<String>> {
        self.services.secrets.known_names()
    }

    pub(crate) fn db_error(&self, source: sqlx::Error) -> HostError {
        HostError::Database {
            path: self.home.db_file(),
            source,
        }
    }

    /// Writes the crash dump of an error the worker answered (its text is
    /// [`exception_text`]), with what the plugin printed.
    pub(crate) fn write_dump(
        &self,
        plugin: &str,
        file_hash: &str,
        phase: Phase,
        args: Option<&Value>,
        e: &WireError,
        output: Option<Output>,
    ) -> Option<PathBuf> {
        let output = output.unwrap_or_default();
        let d = Dump {
            plugin,
            file_hash,
            phase,
            args,
            error: &exception_text(e),
            traceback: e.traceback.as_deref(),
            stdout: &output.stdout,
            stderr: &output.stderr,
        };
        let written = dump::write_logged(&self.home.dumps_dir(), &d);
        announce(&self.incidents);
        written
    }
}

/// `Type: message` of an exception answered by the worker, with the
/// secret values it was handed redacted.
pub(crate) fn exception_text(e: &WireError) -> String {
    let text = match &e.exc_type {
        Some(t) => format!("{t}: {}", e.message),
        None => e.message.clone(),
    };
    crate::redact::redact(&text).into_owned()
}

/// Tells watchers of [`Host::changes`] (or [`Host::incidents`]) that
/// something moved.
pub(crate) fn announce(changes: &watch::Sender<u64>) {
    changes.send_modify(|generation| *generation = generation.wrapping_add(1));
}

/// Announces a change when the operation that holds it ends, whichever
/// way it ends (a failed enable marks the plugin failed: also a change).
pub(crate) struct Announce<'a>(pub(crate) &'a watch::Sender<u64>);

impl Drop for Announce<'_> {
    fn drop(&mut self) {
        announce(self.0);
    }
}
