//! The host: a home opened, and the face of the engine. It puts together
//! the parts that own the state (the registry, the launcher, discovery,
//! the lifecycle, the call path, the signals), answers what the registry
//! holds (entries, crash dumps, secrets), and hands every other request to
//! the part it belongs to.

use crate::calls::{CallOptions, Calls};
use crate::discovery::Discovery;
use crate::dump::{self, DumpEntry, Dumps};
use crate::error::{CallError, HostError};
use crate::launcher::Launcher;
use crate::lifecycle::Lifecycle;
use crate::registry::{Failure, Plugin, Registry};
use crate::secrets::{SecretStore, secret_list};
use crate::signals::Signals;
use crate::store::Store;
use greffon_core::{Config, Home, SandboxMode};
use greffon_protocol::Service;
use greffon_protocol::api::{CheckReport, PluginInfo, SecretEntry, SecretState};
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

/// Says at opening what the configuration gives up: no sandbox (in the
/// audit log too), a kernel that cannot enforce it, a retired key.
fn warn_about(config: &Config, support: &Support) {
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
}

/// A greffon host over one home. Cloning it is cheap: every clone is the
/// same host.
#[derive(Debug, Clone)]
pub struct Host {
    home: Arc<Home>,
    config: Arc<Config>,
    registry: Arc<Registry>,
    launcher: Arc<Launcher>,
    discovery: Arc<Discovery>,
    lifecycle: Arc<Lifecycle>,
    calls: Arc<Calls>,
    signals: Arc<Signals>,
}

impl Host {
    /// Opens the home at `root` with an explicit configuration.
    pub async fn open_with(root: &Path, config: Config) -> Result<Host, HostError> {
        let host = Host::open_empty(root, config).await?;
        host.discovery.discover().await?;
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
        host.discovery.discover_only(name).await?;
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
        warn_about(&config, &support);
        let store = Store::open(&home.db_file()).await?;
        let config = Arc::new(config);
        let signals = Arc::new(Signals::new());
        let dumps = Dumps::new(home.dumps_dir(), signals.clone());
        let registry = Arc::new(Registry::new(config.clone(), home.plugins_dir()));
        let launcher = Launcher::open(&home, config.clone(), python, support, dumps.clone())?;
        let launcher = Arc::new(launcher);
        let discovery = Arc::new(Discovery::new(
            registry.clone(),
            launcher.clone(),
            store.clone(),
        ));
        let lifecycle = Arc::new(Lifecycle::new(
            config.clone(),
            registry.clone(),
            launcher.clone(),
            discovery.clone(),
            store,
            signals.clone(),
        ));
        let calls = Arc::new(Calls::new(
            config.clone(),
            discovery.clone(),
            lifecycle.clone(),
            dumps,
        ));
        Ok(Host {
            home: Arc::new(home),
            config,
            registry,
            launcher,
            discovery,
            lifecycle,
            calls,
            signals,
        })
    }

    pub fn home(&self) -> &Home {
        &self.home
    }

    /// A receiver that changes whenever the set of enabled plugins (or the
    /// meta of one) may have changed: enable, disable, reload, a folder
    /// synced by the watcher, a plugin marked failed. Consumers re-read
    /// [`Host::plugins`] when it fires; a spurious wake-up is harmless.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.signals.changes()
    }

    /// A receiver that changes whenever a crash dump is written or a worker
    /// ends unexpectedly (see [`Host::dumps`]).
    pub fn incidents(&self) -> watch::Receiver<u64> {
        self.signals.incidents()
    }

    /// The crash dumps of plugin `name` (under its name or its folder),
    /// newest first, at most `limit`.
    pub fn dumps(&self, name: &str, limit: usize) -> Result<Vec<DumpEntry>, HostError> {
        let plugin = self.registry.lookup(name)?;
        let dir = self.home.dumps_dir();
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
        let plugin = self.registry.lookup(name)?;
        let missing = || HostError::NotFound(format!("plugin '{name}' has no crash dump '{file}'"));
        if !dump::names_dump_of(file, &[&plugin.key, &plugin.folder]) {
            return Err(missing());
        }
        match std::fs::read_to_string(self.home.dumps_dir().join(file)) {
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
        if let Ok(mut extra) = self.launcher.services().extra.write() {
            extra.insert(prefix.to_string(), service);
        }
    }

    /// The interpreter workers run on.
    pub fn python(&self) -> &Path {
        &self.launcher.python().exe
    }

    /// What the kernel offers the sandbox, as this host uses it.
    pub fn sandbox_support(&self) -> Support {
        self.launcher.jailer().support()
    }

    /// Every plugin, by name.
    pub fn plugins(&self) -> Vec<PluginInfo> {
        let dumps = dump::listing(&self.home.dumps_dir());
        let set = self.secret_names();
        let plugins = self.registry.all();
        plugins
            .iter()
            .map(|p| self.info_of(p, &dumps, &set))
            .collect()
    }

    /// The names that reach an enabled plugin (its key, and the name its
    /// meta declares when another): what a task on this host can call.
    pub fn enabled_plugins(&self) -> Vec<String> {
        self.registry.enabled_names()
    }

    /// One plugin's entry.
    pub fn plugin(&self, name: &str) -> Result<PluginInfo, HostError> {
        let plugin = self.registry.lookup(name)?;
        let dumps = dump::listing(&self.home.dumps_dir());
        Ok(self.info_of(&plugin, &dumps, &self.secret_names()))
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
                .config
                .timeout_for(&p.key, meta.and_then(|m| m.timeout_s)),
            schema_source: meta.map(|m| m.schema.source()),
            schema: meta.map(|m| m.schema.schema().clone()),
            meta: meta.map(|m| m.raw.clone()),
            failure: s.failure.as_ref().map(Failure::info),
            running: workers.busy + workers.idle > 0,
            workers,
            last_dump: dump::latest(&self.home.dumps_dir(), dumps, &[&p.key, &p.folder]),
            access: meta.map_or_else(Default::default, |m| self.launcher.jailer().access_info(m)),
            worker_crashes: s.crash_total,
        }
    }

    /// The declared and stored secrets of `plugin` (or of all), with
    /// whether each is set; values are never returned.
    pub async fn secrets(&self, plugin: Option<&str>) -> Result<Vec<SecretEntry>, HostError> {
        let stored = self.secret_store().names().await?;
        // A plugin whose folder is gone still lists what it left stored.
        if let Some(name) = plugin
            && !stored.contains_key(name)
        {
            self.registry.lookup(name)?;
        }
        Ok(secret_list(&self.registry, plugin, &stored))
    }

    /// Stores the value of a secret `plugin` declares.
    pub async fn set_secret(&self, plugin: &str, name: &str, value: &str) -> Result<(), HostError> {
        let declared = self
            .registry
            .lookup(plugin)?
            .status()
            .meta
            .as_ref()
            .map(|m| m.secrets.clone())
            .unwrap_or_default();
        (self.secret_store())
            .set_declared(plugin, name, value, &declared)
            .await
    }

    /// Removes a stored secret; [`HostError::SecretNotSet`] when none was.
    pub async fn remove_secret(&self, plugin: &str, name: &str) -> Result<(), HostError> {
        self.secret_store().remove_checked(plugin, name).await
    }

    /// Reads which secrets are set, so that `plugin info` can say so
    /// without waiting on the keyring; only when a plugin declares one
    /// (the keyring is not probed for homes that use none).
    async fn refresh_secret_names(&self) {
        if self.registry.any_declares_secrets()
            && let Err(e) = self.secret_store().names().await
        {
            tracing::warn!(target: "server", "cannot list the stored secrets: {e}");
        }
    }

    /// Loads a plugin in a fresh worker (by name or folder) and reports
    /// every problem, without changing the registry.
    pub async fn check(&self, name: &str) -> Result<CheckReport, HostError> {
        self.discovery.check(name).await
    }

    /// Creates `plugins/NAME/` from the template (see [`crate::scaffold`]),
    /// refusing a name some plugin already declares, whatever its folder.
    pub fn scaffold(&self, name: &str) -> Result<PathBuf, HostError> {
        if let Some(existing) = self.registry.declaring(name).first() {
            return Err(HostError::Scaffold {
                name: name.to_string(),
                reason: format!("plugins/{} already declares that name", existing.folder),
            });
        }
        crate::scaffold::scaffold(&self.home, name)
    }

    /// The pid of one of the plugin's running workers, if any (for tests
    /// and benchmarks that inspect the process).
    pub async fn worker_pid(&self, name: &str) -> Option<i32> {
        self.registry
            .lookup(name)
            .ok()?
            .pool()
            .pids()
            .first()
            .copied()
    }

    /// The pids of every running worker of the plugin.
    pub fn worker_pids(&self, name: &str) -> Vec<i32> {
        (self.registry.lookup(name))
            .map(|p| p.pool().pids())
            .unwrap_or_default()
    }

    fn secret_store(&self) -> &SecretStore {
        &self.launcher.services().secrets
    }

    /// The secret names set, by plugin, as last read.
    fn secret_names(&self) -> BTreeMap<String, Vec<String>> {
        self.secret_store().known_names()
    }
}

/// Enable, disable, reload and what a file watcher asks: the lifecycle of
/// a plugin (see `lifecycle`).
impl Host {
    /// Grants the plugin its declared permissions, starts it (`start()`)
    /// and remembers it as enabled. A failed plugin is loaded again first,
    /// so enabling is also how an operator retries after a fix.
    pub async fn enable(&self, name: &str) -> Result<PluginInfo, HostError> {
        let plugin = self.discovery.find(name).await?;
        self.lifecycle.enable(&plugin).await?;
        self.plugin(&plugin.key)
    }

    /// Stops the plugin (`stop()`) and remembers it as disabled.
    pub async fn disable(&self, name: &str) -> Result<PluginInfo, HostError> {
        let plugin = self.discovery.find(name).await?;
        self.lifecycle.disable(&plugin).await?;
        self.plugin(&plugin.key)
    }

    /// Hot reload with rollback: loads and starts `plugin.py` as it is now
    /// in new workers beside the running ones; only if that succeeds do new
    /// calls go to them, while calls in flight finish on the old workers,
    /// which are then stopped. On any failure the running version keeps
    /// serving, a crash dump is written (phase `reload`) and the error is
    /// returned; the plugin stays enabled. A new version that declares
    /// permissions that were not granted is not swapped in.
    pub async fn reload(&self, name: &str) -> Result<PluginInfo, HostError> {
        let plugin = self.discovery.find(name).await?;
        self.lifecycle.reload(&plugin).await?;
        self.plugin(&plugin.key)
    }

    /// Brings one folder of `plugins/` in line with the disk, for a file
    /// watcher: a new folder is discovered (as `disabled`); a changed
    /// enabled plugin is hot-reloaded (with rollback); a changed plugin
    /// that is not enabled is read again; a deleted folder's plugin is
    /// stopped and removed. Returns what was done, for the logs.
    pub async fn sync_folder(&self, folder: &str) -> Result<String, HostError> {
        self.lifecycle.sync_folder(folder).await
    }

    /// Starts the workers of every enabled plugin now (running `start()`),
    /// rather than at its first call: what a long-running server does at
    /// start. A plugin that fails to start becomes `failed`, as at enable.
    pub async fn start_enabled(&self) {
        self.lifecycle.start_enabled().await;
    }

    /// Stops every running worker (`stop()`, bounded by `stop_timeout_s`).
    pub async fn shutdown(&self) {
        self.lifecycle.shutdown().await;
    }
}

/// Calls (see `calls`).
impl Host {
    /// Runs the plugin with `args`: the plugin's result (a returned
    /// `{"error"}` included) or a [`CallError`].
    pub async fn call(&self, name: &str, args: Value) -> Result<Value, CallError> {
        self.calls.call(name, args, CallOptions::default()).await
    }

    /// A scheduled run: [`Host::call`] with a timeout that replaces the
    /// plugin's own (the task's `timeout_s`), waiting for a worker however
    /// full the plugin's queue is ([`CallOptions::patient`]).
    pub async fn call_with_timeout(
        &self,
        name: &str,
        args: Value,
        timeout: Option<Duration>,
    ) -> Result<Value, CallError> {
        let options = CallOptions {
            timeout,
            patient: true,
            ..CallOptions::default()
        };
        self.calls.call(name, args, options).await
    }

    /// [`Host::call`] steered by `options`: timeout, cancellation, progress.
    pub async fn call_with(
        &self,
        name: &str,
        args: Value,
        options: CallOptions,
    ) -> Result<Value, CallError> {
        self.calls.call(name, args, options).await
    }

    /// Whether `args` would be accepted by the plugin's schema, without
    /// running it (the plugin may be disabled): what a scheduled task is
    /// checked against when it is saved. Answers the arguments with the
    /// defaults filled in.
    pub async fn check_args(&self, name: &str, args: Value) -> Result<Value, CallError> {
        self.calls.check_args(name, args).await
    }
}
