//! The host: opens a home, discovers its plugins, and runs calls through
//! validation, the plugin's worker and back.

use crate::discovery::{LoadError, Loaded};
use crate::dump::{self, Dump, DumpEntry, Phase};
use crate::error::{CallError, HostError, dump_note};
use crate::jail::Access;
use crate::python::Interpreter;
use crate::registry::{Failure, Granted, Plugin, PluginInfo, SecretState, State, Status};
use crate::secrets::{SecretEntry, SecretStore};
use crate::services::{Service, Services};
use crate::store::Store;
use crate::supervision::OnCrash;
use futures_util::future::join_all;
use greffon_core::{Config, Home, Permission, PluginMeta, SandboxMode, SchemaSource};
use greffon_protocol::method::{self, Progress, RunParams};
use greffon_protocol::{ErrorKind, Output, ResponseBody, WireError};
use greffon_sandbox::Support;
use greffon_sandbox::paths::Protected;
use greffon_worker::{Checkout, Handoff, Hooks, Lease, Pool, Reply, Ticket, Worker};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_util::sync::CancellationToken;

/// How one call may be steered from outside: what MCP needs beyond a
/// plain [`Host::call`].
#[derive(Debug, Default)]
pub struct CallOptions {
    /// Replaces the plugin's own timeout (a scheduled task's `timeout_s`).
    pub timeout: Option<Duration>,
    /// Cancelled when the caller gives up: the worker is asked to
    /// interrupt the call, and replaced if it is still busy after
    /// `kill_grace_s`.
    pub cancel: Option<CancellationToken>,
    /// Receives what the plugin reports with `greffon.progress()`.
    pub progress: Option<mpsc::UnboundedSender<Progress>>,
    /// Waits for a worker even when the plugin's queue is full, instead of
    /// being answered "busy": a scheduled run, which is never dropped for
    /// load (its timeout still bounds the wait). The queue limit is there
    /// to shed what clients send.
    pub patient: bool,
}

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

/// A worker whose plugin was loaded and started.
struct Started {
    worker: Arc<Worker>,
    meta: Arc<PluginMeta>,
    file_hash: String,
}

/// Discovery workers running at once.
const DISCOVERY_PARALLELISM: usize = 4;

/// A greffon host over one home.
#[derive(Debug, Clone)]
pub struct Host {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub home: Home,
    pub config: Config,
    /// The resolved interpreter (never a shim).
    pub python: Interpreter,
    /// What the kernel offers the sandbox.
    pub support: Support,
    /// The bootstrap's no-exec seccomp filter (hex).
    pub noexec: String,
    /// Paths no plugin may be granted.
    pub protected: Protected,
    pub sdk_dir: PathBuf,
    pub store: Store,
    pub services: Arc<Services>,
    pub plugins: RwLock<BTreeMap<String, Arc<Plugin>>>,
    /// A generation bumped whenever a plugin may have entered or left the
    /// enabled set or changed its meta: what MCP sessions watch to re-list
    /// their tools.
    pub changes: Arc<watch::Sender<u64>>,
    /// A generation bumped whenever a crash dump is written or a worker
    /// ends unexpectedly: what a live view of the plugins watches besides
    /// `changes` (MCP clients are not told: their tools did not change).
    pub incidents: Arc<watch::Sender<u64>>,
}

/// What `check` found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckReport {
    pub name: String,
    pub folder: String,
    pub problems: Vec<String>,
    pub dump: Option<PathBuf>,
    /// The normalized schema, when the meta is valid.
    pub schema: Option<Value>,
    pub permissions: Vec<Permission>,
}

impl Host {
    /// Opens the home at `root` with an explicit configuration.
    pub async fn open_with(root: &Path, config: Config) -> Result<Host, HostError> {
        std::fs::create_dir_all(root).map_err(|source| HostError::Io {
            context: format!("cannot create the home {}", root.display()),
            source,
        })?;
        let home = Home::new(root, &config);
        let python = crate::python::resolve_cached(
            config.python.as_deref(),
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
        let noexec = greffon_sandbox::noexec_program_hex().map_err(|e| HostError::Io {
            context: "cannot build the no-exec filter".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let protected =
            crate::jail::protected(&home, &Home::config_file(home.root()), &python.read_roots);
        crate::jail::sweep_stale_scratch(&home.tmp_root());
        let sdk_root = home.sdk_root();
        let sdk_dir =
            greffon_worker::sdk::materialize(&sdk_root).map_err(|source| HostError::Sdk {
                path: sdk_root,
                source,
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
        let inner = Arc::new(Inner {
            home,
            config,
            python,
            support,
            noexec,
            protected,
            sdk_dir,
            store,
            services: Arc::new(Services {
                sys_root: PathBuf::from("/"),
                http,
                secrets: SecretStore::open(&home_root, &home_secrets, secrets_kind),
                extra: Default::default(),
            }),
            plugins: RwLock::new(BTreeMap::new()),
            changes: Arc::new(watch::Sender::new(0)),
            incidents: Arc::new(watch::Sender::new(0)),
        });
        let host = Host { inner };
        host.discover().await?;
        host.refresh_secret_names().await;
        Ok(host)
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
        self.inner.support
    }

    /// Scans `plugins/*/plugin.py` (folders starting with `_` skipped),
    /// loads each in its own worker, and rebuilds the registry.
    async fn discover(&self) -> Result<(), HostError> {
        let inner = &self.inner;
        let dir = inner.home.plugins_dir();
        let mut folders: Vec<(String, PathBuf)> = match std::fs::read_dir(&dir) {
            Ok(rd) => rd
                .filter_map(Result::ok)
                .filter_map(|e| {
                    let name = e.file_name().into_string().ok()?;
                    let path = e.path();
                    (!name.starts_with('_')
                        && !name.starts_with('.')
                        && path.join("plugin.py").is_file())
                    .then_some((name, path))
                })
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => {
                return Err(HostError::Io {
                    context: format!("cannot list {}", dir.display()),
                    source,
                });
            }
        };
        folders.sort();
        let limit = Arc::new(Semaphore::new(DISCOVERY_PARALLELISM));
        let mut tasks = tokio::task::JoinSet::new();
        for (i, (folder, path)) in folders.iter().cloned().enumerate() {
            let inner = self.inner.clone();
            let limit = limit.clone();
            tasks.spawn(async move {
                let _permit = limit.acquire_owned().await;
                let outcome = inner
                    .load(&folder, &path, &Access::none(), Phase::Import, None)
                    .await;
                let outcome = match outcome {
                    Ok(loaded) => {
                        loaded.worker.shutdown(Duration::from_secs(1)).await;
                        Ok((loaded.meta, loaded.file_hash))
                    }
                    Err(e) => Err(e),
                };
                (i, outcome)
            });
        }
        let mut outcomes: Vec<Option<Result<(PluginMeta, String), LoadError>>> =
            (0..folders.len()).map(|_| None).collect();
        while let Some(joined) = tasks.join_next().await {
            if let Ok((i, outcome)) = joined {
                outcomes[i] = Some(outcome);
            }
        }

        // Two folders declaring one name: both fail, each naming both.
        let mut by_name: HashMap<String, Vec<String>> = HashMap::new();
        for ((folder, _), outcome) in folders.iter().zip(&outcomes) {
            if let Some(Ok((meta, _))) = outcome {
                by_name
                    .entry(meta.name.clone())
                    .or_default()
                    .push(folder.clone());
            }
        }
        let granted = inner
            .store
            .enabled()
            .await
            .map_err(|source| inner.db_error(source))?;
        let mut registry = BTreeMap::new();
        for ((folder, path), outcome) in folders.into_iter().zip(outcomes) {
            let outcome = outcome
                .unwrap_or_else(|| Err(LoadError::one("discovery task failed".into(), None)));
            let (key, status) = match outcome {
                Ok((meta, hash)) => {
                    let dups = &by_name[&meta.name];
                    if dups.len() > 1 {
                        let listed: Vec<String> =
                            dups.iter().map(|f| format!("plugins/{f}")).collect();
                        let reason = format!(
                            "plugin name '{}' is declared by both {}; rename one",
                            meta.name,
                            listed.join(" and ")
                        );
                        // The meta stays, so `check` and `scaffold` still
                        // see which name the folder declares.
                        let mut status = settled_status(meta, hash, None);
                        status.state = State::Failed;
                        status.failure = Some(Failure { reason, dump: None });
                        status.duplicate = true;
                        (folder.clone(), status)
                    } else {
                        let name = meta.name.clone();
                        let grant = granted.get(&name).cloned();
                        (name, settled_status(meta, hash, grant))
                    }
                }
                Err(e) => {
                    let key = e
                        .name
                        .clone()
                        .filter(|n| !registry.contains_key(n))
                        .unwrap_or_else(|| folder.clone());
                    let hash = crate::dump::file_hash(&path.join("plugin.py"));
                    (key, failed_status(e.reason(), e.dump, hash))
                }
            };
            tracing::info!(
                target: "audit",
                event = "discovered",
                plugin = %key,
                folder = %folder,
                state = status.state.as_str(),
                reason = status.failure.as_ref().map(|f| f.reason.as_str()),
            );
            let pool = inner.new_pool(&key);
            let plugin = Arc::new(Plugin::new(key.clone(), folder, path, status, pool));
            registry.insert(key, plugin);
        }
        *inner.plugins.write().unwrap_or_else(|p| p.into_inner()) = registry;
        Ok(())
    }

    fn lookup(&self, name: &str) -> Result<Arc<Plugin>, HostError> {
        let plugins = self.inner.plugins.read().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = plugins.get(name) {
            return Ok(p.clone());
        }
        let known: Vec<&str> = plugins.keys().map(String::as_str).collect();
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
        let plugins = self.inner.all_plugins();
        plugins
            .iter()
            .map(|p| self.info_of(p, &dumps, &set))
            .collect()
    }

    /// The names that reach an enabled plugin (its key, and the name its
    /// meta declares when another): what a task on this host can call.
    pub fn enabled_plugins(&self) -> Vec<String> {
        let mut names = Vec::new();
        for p in self.inner.all_plugins() {
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
            failure: s.failure.clone(),
            running: workers.busy + workers.idle > 0,
            workers,
            last_dump: dump::latest(&self.inner.home.dumps_dir(), dumps, &[&p.key, &p.folder]),
            access: meta.map_or_else(Default::default, |m| self.inner.access_info(m)),
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
        let declares = self.inner.all_plugins().iter().any(|p| {
            p.status()
                .meta
                .as_ref()
                .is_some_and(|m| !m.secrets.is_empty())
        });
        if declares && let Err(e) = self.inner.services.secrets.names().await {
            tracing::warn!(target: "server", "cannot list the stored secrets: {e}");
        }
    }

    /// Grants the plugin its declared permissions, starts it (`start()`)
    /// and remembers it as enabled. A failed plugin is loaded again first,
    /// so enabling is also how an operator retries after a fix.
    pub async fn enable(&self, name: &str) -> Result<PluginInfo, HostError> {
        let plugin = self.lookup(name)?;
        let _one_change = plugin.changing.lock().await;
        let _announce = Announce(&self.inner.changes);
        {
            let s = plugin.status();
            if s.duplicate {
                let reason = s
                    .failure
                    .as_ref()
                    .map(|f| f.reason.clone())
                    .unwrap_or_default();
                return Err(HostError::Failed {
                    name: plugin.key.clone(),
                    reason,
                    dump: None,
                });
            }
        }
        // Running workers may predate a change on disk: start afresh. Calls
        // arriving meanwhile wait in the new pool's queue.
        let pool = self.inner.new_pool(&plugin.key);
        let old = plugin.replace_pool(pool.clone());
        self.inner.stop_pool(&plugin, &old).await;
        let started = self.inner.fill_pool(&plugin, &pool, true, false).await;
        match started {
            Ok(()) => {
                let granted = {
                    let mut s = plugin.status();
                    let grant = s.meta.as_deref().map(Granted::declared).unwrap_or_default();
                    s.state = State::Enabled;
                    s.failure = None;
                    s.crashes.clear();
                    s.granted = Some(grant.clone());
                    grant
                };
                self.inner
                    .store
                    .set_enabled(&plugin.key, &granted)
                    .await
                    .map_err(|source| self.inner.db_error(source))?;
                let names: Vec<&str> = granted.permissions.iter().map(|p| p.as_str()).collect();
                let reach = plugin
                    .status()
                    .meta
                    .as_deref()
                    .map(|m| self.inner.access_info(m))
                    .unwrap_or_default();
                tracing::info!(
                    target: "audit",
                    event = "enable",
                    plugin = %plugin.key,
                    permissions = ?names,
                    secrets = ?granted.secrets,
                    network = ?reach.network,
                    reads = ?reach.read,
                    writes = ?reach.write,
                );
                self.plugin(&plugin.key)
            }
            Err(failure) => {
                tracing::info!(target: "audit", event = "enable_failed", plugin = %plugin.key, reason = %failure.reason);
                Err(HostError::Failed {
                    name: plugin.key.clone(),
                    reason: failure.reason,
                    dump: failure.dump,
                })
            }
        }
    }

    /// Brings one folder of `plugins/` in line with the disk, for a file
    /// watcher: a new folder is discovered (as `disabled`); a changed
    /// enabled plugin is hot-reloaded (with rollback); a changed plugin
    /// that is not enabled is read again; a deleted folder's plugin is
    /// stopped and removed. Returns what was done, for the logs.
    pub async fn sync_folder(&self, folder: &str) -> Result<String, HostError> {
        let inner = &self.inner;
        let _announce = Announce(&inner.changes);
        let dir = inner.home.plugins_dir().join(folder);
        let present =
            !folder.starts_with('_') && !folder.starts_with('.') && dir.join("plugin.py").is_file();
        let existing = {
            let plugins = inner.plugins.read().unwrap_or_else(|p| p.into_inner());
            plugins.values().find(|p| p.folder == folder).cloned()
        };
        match (existing, present) {
            (None, false) => Ok(format!("plugins/{folder}: nothing to do")),
            (Some(plugin), false) => {
                let _one_change = plugin.changing.lock().await;
                plugin.status().state = State::Disabled;
                inner.stop_pool(&plugin, &plugin.pool()).await;
                inner
                    .plugins
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&plugin.key);
                inner
                    .store
                    .set_disabled(&plugin.key)
                    .await
                    .map_err(|source| inner.db_error(source))?;
                tracing::info!(target: "audit", event = "removed", plugin = %plugin.key, folder = %folder);
                Ok(format!(
                    "{}: folder deleted; stopped and removed",
                    plugin.key
                ))
            }
            (Some(plugin), true) if plugin.status().state == State::Enabled => self
                .reload(&plugin.key)
                .await
                .map(|_| format!("{}: reloaded", plugin.key)),
            (existing, true) => {
                // Held while the entry is read again and replaced, so an
                // enable cannot start a worker on the entry being dropped.
                let change = match &existing {
                    Some(p) => Some(p.changing.lock().await),
                    None => None,
                };
                if existing
                    .as_ref()
                    .is_some_and(|p| p.status().state == State::Enabled)
                {
                    // Enabled meanwhile: the change is a reload after all.
                    drop(change);
                    let key = existing.map(|p| p.key.clone()).unwrap_or_default();
                    return self.reload(&key).await.map(|_| format!("{key}: reloaded"));
                }
                let loaded = inner
                    .load(folder, &dir, &Access::none(), Phase::Import, None)
                    .await;
                let (key, status) = match loaded {
                    Ok(l) => {
                        l.worker.shutdown(Duration::from_secs(1)).await;
                        let key = l.meta.name.clone();
                        let taken = inner
                            .plugins
                            .read()
                            .unwrap_or_else(|p| p.into_inner())
                            .get(&key)
                            .is_some_and(|p| p.folder != folder);
                        // A failed plugin that was enabled keeps its grant:
                        // fixing the file brings it back.
                        let granted = existing
                            .as_ref()
                            .filter(|e| e.key == key)
                            .and_then(|e| e.status().granted.clone());
                        let mut status = settled_status(l.meta, l.file_hash, granted);
                        if taken {
                            status.state = State::Failed;
                            status.failure = Some(Failure {
                                reason: format!(
                                    "plugin name '{key}' is already declared by another folder; rename one"
                                ),
                                dump: None,
                            });
                            status.duplicate = true;
                            (folder.to_string(), status)
                        } else {
                            (key, status)
                        }
                    }
                    Err(e) => {
                        let hash = crate::dump::file_hash(&dir.join("plugin.py"));
                        let key = e.name.clone().unwrap_or_else(|| folder.to_string());
                        (key, failed_status(e.reason(), e.dump, hash))
                    }
                };
                let state = status.state;
                let pool = inner.new_pool(&key);
                let mut plugins = inner.plugins.write().unwrap_or_else(|p| p.into_inner());
                if let Some(old) = &existing {
                    plugins.remove(&old.key);
                }
                plugins.insert(
                    key.clone(),
                    Arc::new(Plugin::new(
                        key.clone(),
                        folder.to_string(),
                        dir,
                        status,
                        pool,
                    )),
                );
                tracing::info!(target: "audit", event = "discovered", plugin = %key, folder = %folder, state = state.as_str());
                Ok(format!("{key}: read again, now {}", state.as_str()))
            }
        }
    }

    /// Starts the worker of every enabled plugin now (running `start()`),
    /// rather than at its first call: what a long-running server does at
    /// start. A plugin that fails to start becomes `failed`, as at enable.
    pub async fn start_enabled(&self) {
        let enabled: Vec<Arc<Plugin>> = {
            let plugins = self.inner.plugins.read().unwrap_or_else(|p| p.into_inner());
            plugins
                .values()
                .filter(|p| p.status().state == State::Enabled)
                .cloned()
                .collect()
        };
        for plugin in enabled {
            let pool = plugin.pool();
            if let Err(f) = self.inner.fill_pool(&plugin, &pool, false, false).await {
                tracing::warn!(target: "server", plugin = %plugin.key, "could not start: {}", f.reason);
            }
        }
    }

    /// Hot reload (SPEC §8): loads and starts `plugin.py` as it is now in a
    /// new worker beside the running one; only if that succeeds do new
    /// calls go to it, while calls in flight finish on the old worker,
    /// which is then stopped. On any failure the running version keeps
    /// serving, a crash dump is written (phase `reload`) and the error is
    /// returned; the plugin stays enabled. A new version that declares
    /// permissions that were not granted is not swapped in.
    pub async fn reload(&self, name: &str) -> Result<PluginInfo, HostError> {
        let plugin = self.lookup(name)?;
        let _one_change = plugin.changing.lock().await;
        if plugin.status().state != State::Enabled {
            return Err(HostError::NotEnabled(format!(
                "plugin '{}' is not enabled, so there is nothing to reload; `greffon plugin enable {}` loads it as it is on disk",
                plugin.key, plugin.key
            )));
        }
        let inner = &self.inner;
        let pool = inner.new_pool(&plugin.key);
        match inner.fill_pool(&plugin, &pool, false, true).await {
            Ok(()) => {}
            Err(f) => {
                let dump = f.dump.clone().or_else(|| {
                    let hash = crate::dump::file_hash(&plugin.dir.join("plugin.py"));
                    inner.write_dump(
                        &plugin.key,
                        &hash,
                        Phase::Reload,
                        None,
                        &WireError::new(ErrorKind::PluginFailed, f.reason.clone()),
                        None,
                    )
                });
                tracing::info!(target: "audit", event = "reload", plugin = %plugin.key, outcome = "rolled_back", reason = %f.reason);
                return Err(HostError::Reload {
                    name: plugin.key.clone(),
                    reason: f.reason,
                    dump,
                });
            }
        };
        let old_timeout_s = {
            let s = plugin.status();
            inner
                .config
                .timeout_for(&plugin.key, s.meta.as_ref().and_then(|m| m.timeout_s))
        };
        // `fill_pool` recorded the new meta; new calls now reach the new
        // workers, while the old ones finish what they have (bounded by
        // the calls' timeout) and are then stopped.
        let old = plugin.replace_pool(pool);
        tracing::info!(target: "audit", event = "reload", plugin = %plugin.key, outcome = "swapped");
        announce(&inner.changes);
        old.retire();
        let limit = Duration::from_secs_f64(old_timeout_s + inner.config.kill_grace_s);
        let (workers, drained) = old.drain(limit).await;
        if !drained {
            tracing::warn!(target: "server", plugin = %plugin.key, "a replaced worker still had a call running after its timeout; stopping it");
        }
        join_all(workers.iter().map(|w| inner.stop_worker(&plugin, w))).await;
        self.plugin(&plugin.key)
    }

    /// Stops the plugin (`stop()`) and remembers it as disabled.
    pub async fn disable(&self, name: &str) -> Result<PluginInfo, HostError> {
        let plugin = self.lookup(name)?;
        let _one_change = plugin.changing.lock().await;
        let _announce = Announce(&self.inner.changes);
        // Refused from now on: a call waiting in the queue is answered
        // "disabled" rather than starting a worker.
        {
            let mut s = plugin.status();
            if s.state == State::Enabled {
                s.state = State::Disabled;
            }
        }
        let pool = self.inner.new_pool(&plugin.key);
        let old = plugin.replace_pool(pool);
        self.inner.stop_pool(&plugin, &old).await;
        {
            let mut s = plugin.status();
            s.granted = None;
            // Disabling fixes neither a broken file nor a shared name.
            if s.meta.is_some() && !s.duplicate {
                s.state = State::Disabled;
                s.failure = None;
            }
        }
        self.inner
            .store
            .set_disabled(&plugin.key)
            .await
            .map_err(|source| self.inner.db_error(source))?;
        tracing::info!(target: "audit", event = "disable", plugin = %plugin.key);
        self.plugin(&plugin.key)
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
            dump: None,
            schema: None,
            permissions: Vec::new(),
        };
        match self
            .inner
            .load(&folder, &dir, &Access::none(), Phase::Import, None)
            .await
        {
            Ok(loaded) => {
                loaded.worker.shutdown(Duration::from_secs(1)).await;
                report.name = loaded.meta.name.clone();
                report.schema = Some(loaded.meta.schema.schema().clone());
                report.permissions = loaded.meta.permissions.clone();
                let others: Vec<String> = self
                    .inner
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
                    .extend(self.inner.path_problems(&loaded.meta));
            }
            Err(e) => {
                if let Some(n) = e.name.clone() {
                    report.name = n;
                }
                report.problems = e.problems;
                report.dump = e.dump;
            }
        }
        Ok(report)
    }

    /// Creates `plugins/NAME/` from the template (see [`crate::scaffold`]),
    /// refusing a name some plugin already declares, whatever its folder.
    pub fn scaffold(&self, name: &str) -> Result<PathBuf, HostError> {
        if let Some(existing) = self.inner.declaring(name).first() {
            return Err(HostError::Scaffold {
                name: name.to_string(),
                reason: format!("plugins/{} already declares that name", existing.folder),
            });
        }
        crate::scaffold::scaffold(&self.inner.home, name)
    }

    /// Runs the plugin with `args`: the plugin's result (a returned
    /// `{"error"}` included) or a [`CallError`].
    pub async fn call(&self, name: &str, args: Value) -> Result<Value, CallError> {
        self.call_with(name, args, CallOptions::default()).await
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
        self.call_with(name, args, options).await
    }

    /// [`Host::call`] steered by `options`: timeout, cancellation, progress.
    pub async fn call_with(
        &self,
        name: &str,
        args: Value,
        options: CallOptions,
    ) -> Result<Value, CallError> {
        let started = Instant::now();
        let audit_args = self.inner.config.audit_args.then(|| args.to_string());
        let outcome = self.call_inner(name, args, options).await;
        let label = match &outcome {
            Ok(v) if greffon_protocol::returned_error(v).is_some() => "plugin_error",
            Ok(_) => "ok",
            Err(e) => e.kind.as_str(),
        };
        tracing::info!(
            target: "audit",
            event = "call",
            plugin = name,
            duration_us = started.elapsed().as_micros() as u64,
            outcome = label,
            args = audit_args,
        );
        outcome
    }

    /// Whether `args` would be accepted by the plugin's schema, without
    /// running it (the plugin may be disabled): what a scheduled task is
    /// checked against when it is saved. Answers the arguments with the
    /// defaults filled in.
    pub fn check_args(&self, name: &str, args: Value) -> Result<Value, CallError> {
        let plugin = self
            .lookup(name)
            .map_err(|e| CallError::new(ErrorKind::UnknownPlugin, e.to_string()))?;
        let meta = plugin.status().meta.clone().ok_or_else(|| {
            CallError::new(
                ErrorKind::NotEnabled,
                format!("plugin '{name}' has no valid meta; see `greffon plugin check {name}`"),
            )
        })?;
        self.validate(name, &meta, args)
    }

    fn validate(&self, name: &str, meta: &PluginMeta, args: Value) -> Result<Value, CallError> {
        let size = json_size(&args);
        if size > self.inner.config.max_args_bytes {
            return Err(CallError::new(
                ErrorKind::TooLarge,
                format!(
                    "plugin '{name}': arguments are {size} bytes, over the limit of {} bytes (max_args_bytes)",
                    self.inner.config.max_args_bytes
                ),
            ));
        }
        meta.schema.check(args).map_err(|violations| {
            let text: Vec<String> = violations.iter().map(ToString::to_string).collect();
            CallError::new(
                ErrorKind::Validation,
                format!("plugin '{name}': invalid arguments: {}", text.join("; ")),
            )
        })
    }

    async fn call_inner(
        &self,
        name: &str,
        args: Value,
        options: CallOptions,
    ) -> Result<Value, CallError> {
        let CallOptions {
            timeout,
            cancel,
            progress,
            patient,
        } = options;
        let inner = &self.inner;
        let plugin = self
            .lookup(name)
            .map_err(|e| CallError::new(ErrorKind::UnknownPlugin, e.to_string()))?;
        let meta = {
            let s = plugin.status();
            match (s.state, &s.meta) {
                (State::Enabled, Some(meta)) => meta.clone(),
                (State::Failed, _) => return Err(failed_error(&plugin.key, &s)),
                _ => return Err(not_enabled(name)),
            }
        };
        let args = self.validate(name, &meta, args)?;
        let timeout = timeout.unwrap_or_else(|| {
            Duration::from_secs_f64(inner.config.timeout_for(&plugin.key, meta.timeout_s))
        });
        let deadline = Instant::now() + timeout;
        let cancelled = || {
            CallError::new(
                ErrorKind::Cancelled,
                format!("plugin '{name}': the call was cancelled by its caller"),
            )
        };
        let hooks = Hooks { cancel, progress };
        let pydantic = meta.schema.source() == SchemaSource::Pydantic;
        let args = Arc::new(args);
        let params = RunParams {
            args: &args,
            pydantic,
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        };
        // A worker that died between calls is only noticed when the
        // request cannot be written; the call then goes to a new worker.
        let mut attempts = 0;
        let (worker, reply) = loop {
            attempts += 1;
            let lease = inner
                .lease(&plugin, deadline, timeout, patient, &hooks)
                .await?;
            let worker = lease.worker().clone();
            let remaining = deadline.saturating_duration_since(Instant::now());
            let keep = Some(args.clone());
            match worker
                .request_hooked(method::RUN, &params, keep, remaining, &hooks, Some(lease))
                .await
            {
                Ok(Reply::NotDelivered) if attempts < 2 => continue,
                reply => break (worker, reply),
            }
        };
        match reply {
            Ok(Reply::Response { body, output }) => {
                log_output(&plugin.key, output.as_ref());
                match body {
                    ResponseBody::Ok(v) => Ok(v),
                    ResponseBody::Err(e) => {
                        Err(inner.run_error(&plugin, e, &args, output.unwrap_or_default()))
                    }
                }
            }
            Ok(Reply::NotDelivered) => Err(CallError::new(
                ErrorKind::WorkerCrashed,
                format!(
                    "plugin '{name}': its worker ended before the call could be delivered, twice"
                ),
            )),
            Ok(Reply::Gone(exit)) => Err(CallError {
                kind: ErrorKind::WorkerCrashed,
                message: format!(
                    "plugin '{name}': its worker ended during the call ({}){}",
                    exit.description,
                    dump_note(exit.dump.as_deref())
                ),
                dump: exit.dump.clone(),
            }),
            Err(abandoned) => {
                let grace = Duration::from_secs_f64(inner.config.kill_grace_s);
                let (id, limit) = (abandoned.id, timeout.as_secs_f64());
                let why = if abandoned.cancelled {
                    "it was cancelled".to_string()
                } else {
                    format!("its {limit} s timeout")
                };
                // A cancelled call is interrupted in the worker where
                // Python allows; a call still running after the grace
                // means a stuck worker, which is killed. Until the call
                // ends either way, its worker stays out of the pool.
                tokio::spawn(async move {
                    if !worker.settled(id, grace).await {
                        worker.kill(&format!(
                            "a call was still running {} s after {why}",
                            grace.as_secs_f64()
                        ));
                    }
                });
                if abandoned.cancelled {
                    return Err(cancelled());
                }
                Err(CallError::new(
                    ErrorKind::Timeout,
                    format!("plugin '{name}' did not answer within {limit} s (timeout)"),
                ))
            }
        }
    }

    /// Stops every running worker (`stop()`, bounded by `stop_timeout_s`).
    pub async fn shutdown(&self) {
        let plugins = self.inner.all_plugins();
        let mut tasks = tokio::task::JoinSet::new();
        for plugin in plugins {
            let inner = self.inner.clone();
            tasks.spawn(async move {
                inner.stop_pool(&plugin, &plugin.pool()).await;
            });
        }
        while tasks.join_next().await.is_some() {}
        self.inner.store.close().await;
    }

    /// The pid of one of the plugin's running workers, if any (for tests
    /// and benchmarks that inspect the process).
    pub async fn worker_pid(&self, name: &str) -> Option<i32> {
        self.lookup(name).ok()?.pool().any_pid()
    }

    /// The pids of every running worker of the plugin.
    pub fn worker_pids(&self, name: &str) -> Vec<i32> {
        self.lookup(name)
            .map(|p| p.pool().pids())
            .unwrap_or_default()
    }
}

/// Refuses a call to a plugin that is not enabled (any more).
fn callable(plugin: &Plugin) -> Result<(), CallError> {
    let s = plugin.status();
    match s.state {
        State::Enabled => Ok(()),
        State::Failed => Err(failed_error(&plugin.key, &s)),
        State::Disabled => Err(not_enabled(&plugin.key)),
    }
}

fn not_enabled(name: &str) -> CallError {
    CallError::new(
        ErrorKind::NotEnabled,
        format!("plugin '{name}' is disabled; enable it with `greffon plugin enable {name}`"),
    )
}

/// The answer when every worker is busy and the queue is full.
fn busy_error(name: &str, pool: &Pool) -> CallError {
    let stats = pool.stats();
    CallError::new(
        ErrorKind::Busy,
        format!(
            "plugin '{name}' is busy: its {} worker(s) are serving calls and {} more wait (queue = {}); try again later, or raise [plugins.{name}] workers or queue",
            stats.size, stats.queued, stats.queue_limit
        ),
    )
}

/// The answer to a call on a failed plugin: why, and where the dump is.
fn failed_error(name: &str, status: &Status) -> CallError {
    let failure = status.failure.as_ref();
    let reason = failure.map_or("unknown", |f| f.reason.as_str());
    let dump = failure.and_then(|f| f.dump.clone());
    let at = dump_note(dump.as_deref());
    CallError {
        kind: ErrorKind::PluginFailed,
        message: format!("plugin '{name}' is failed: {reason}{at}"),
        dump,
    }
}

/// Bytes of `value` as JSON, counted without building the text.
fn json_size(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    match serde_json::to_writer(&mut count, value) {
        Ok(()) => count.0,
        Err(_) => usize::MAX,
    }
}

/// Why a plugin may not run with what it was granted: the permissions and
/// secret names it declares beyond the grant, and the reason shown to the
/// operator.
fn ungranted(meta: &PluginMeta, granted: &Granted) -> Option<(Vec<String>, String)> {
    let permissions: Vec<String> = meta
        .permissions
        .iter()
        .filter(|p| !granted.permissions.contains(p))
        .map(|p| p.as_str().to_string())
        .collect();
    let secrets: Vec<String> = meta
        .secrets
        .iter()
        .filter(|s| !granted.secrets.contains(s))
        .cloned()
        .collect();
    let mut parts = Vec::new();
    if !permissions.is_empty() {
        parts.push(format!(
            "permissions that were not granted ({})",
            permissions.join(", ")
        ));
    }
    if !secrets.is_empty() {
        parts.push(format!(
            "secrets that were not granted ({})",
            secrets.join(", ")
        ));
    }
    if parts.is_empty() {
        return None;
    }
    let reason = format!(
        "it now declares {}; run `greffon plugin enable {}` to grant them",
        parts.join(" and "),
        meta.name
    );
    Some(([permissions, secrets].concat(), reason))
}

fn settled_status(meta: PluginMeta, file_hash: String, granted: Option<Granted>) -> Status {
    let (state, failure) = match &granted {
        None => (State::Disabled, None),
        Some(g) => match ungranted(&meta, g) {
            None => (State::Enabled, None),
            Some((_, reason)) => (State::Failed, Some(Failure { reason, dump: None })),
        },
    };
    Status {
        meta: Some(Arc::new(meta)),
        file_hash,
        state,
        failure,
        granted,
        crashes: VecDeque::new(),
        crash_total: 0,
        duplicate: false,
    }
}

fn failed_status(reason: String, dump: Option<PathBuf>, file_hash: String) -> Status {
    Status {
        meta: None,
        file_hash,
        state: State::Failed,
        failure: Some(Failure { reason, dump }),
        granted: None,
        crashes: VecDeque::new(),
        crash_total: 0,
        duplicate: false,
    }
}

fn log_output(plugin: &str, output: Option<&Output>) {
    if let Some(o) = output.filter(|o| !o.is_empty()) {
        tracing::info!(
            target: "plugin",
            plugin,
            stdout = %o.stdout,
            stderr = %o.stderr,
            dropped = o.dropped,
            "call output"
        );
    }
}

impl Inner {
    /// A snapshot of the registry's entries.
    pub(crate) fn all_plugins(&self) -> Vec<Arc<Plugin>> {
        let plugins = self.plugins.read().unwrap_or_else(|p| p.into_inner());
        plugins.values().cloned().collect()
    }

    /// The entries that answer to `name`: its registry key, or the name
    /// their meta declares (duplicates are keyed by folder).
    fn declaring(&self, name: &str) -> Vec<Arc<Plugin>> {
        self.all_plugins()
            .into_iter()
            .filter(|p| p.key == name || p.status().meta.as_ref().is_some_and(|m| m.name == name))
            .collect()
    }

    /// The secret names set, by plugin, as last read.
    fn secret_names(&self) -> BTreeMap<String, Vec<String>> {
        self.services.secrets.known_names()
    }

    fn db_error(&self, source: sqlx::Error) -> HostError {
        HostError::Database {
            path: self.home.db_file(),
            source,
        }
    }

    /// A worker of the plugin's pool for one call: an idle one, one it
    /// starts (on first need, or replacing a crashed one, with backoff), or
    /// one freed by another call while this one waits in the queue.
    async fn lease(
        &self,
        plugin: &Arc<Plugin>,
        deadline: Instant,
        timeout: Duration,
        patient: bool,
        hooks: &Hooks,
    ) -> Result<Lease, CallError> {
        loop {
            let pool = plugin.pool();
            let handoff = match pool.checkout(patient) {
                Checkout::Ready(lease) => return Ok(lease),
                Checkout::Start(ticket) => Handoff::Start(ticket),
                Checkout::Busy => return Err(busy_error(&plugin.key, &pool)),
                // Enable, reload or disable replaced the pool meanwhile.
                Checkout::Retired => Handoff::Retired,
                Checkout::Wait(turn) => tokio::select! {
                    handoff = turn => handoff.unwrap_or(Handoff::Retired),
                    () = tokio::time::sleep_until(deadline.into()) => {
                        return Err(CallError::new(
                            ErrorKind::Timeout,
                            format!(
                                "plugin '{}' did not answer within {} s (timeout): its {} worker(s) stayed busy while the call waited in the queue",
                                plugin.key,
                                timeout.as_secs_f64(),
                                pool.size()
                            ),
                        ));
                    }
                    () = hooks.cancelled() => {
                        return Err(CallError::new(
                            ErrorKind::Cancelled,
                            format!("plugin '{}': the call was cancelled by its caller", plugin.key),
                        ));
                    }
                },
            };
            match handoff {
                Handoff::Worker(lease) => return Ok(lease),
                Handoff::Start(ticket) => return self.restart(plugin, deadline, ticket).await,
                Handoff::Retired => {
                    // The plugin's state says whether a new pool serves.
                    callable(plugin)?;
                    tokio::task::yield_now().await;
                }
            }
        }
    }

    /// Starts a worker in the room `ticket` holds, after the backoff its
    /// recent crashes call for.
    async fn restart(
        &self,
        plugin: &Arc<Plugin>,
        deadline: Instant,
        ticket: Ticket,
    ) -> Result<Lease, CallError> {
        callable(plugin)?;
        let window = Duration::from_secs_f64(self.config.crash_window_s);
        let backoff = plugin.restart_backoff(window);
        if !backoff.is_zero() {
            if Instant::now() + backoff >= deadline {
                return Err(CallError::new(
                    ErrorKind::WorkerCrashed,
                    format!(
                        "plugin '{}': its worker crashed and restarts in {} ms, after this call's deadline",
                        plugin.key,
                        backoff.as_millis()
                    ),
                ));
            }
            tokio::time::sleep(backoff).await;
        }
        match self.activate(plugin, false).await {
            Ok(w) => Ok(ticket.fill(w)),
            Err(f) => Err(CallError {
                kind: ErrorKind::PluginFailed,
                message: format!(
                    "plugin '{}' could not start: {}{}",
                    plugin.key,
                    f.reason,
                    dump_note(f.dump.as_deref())
                ),
                dump: f.dump,
            }),
        }
    }

    /// A pool of the configured size for `key`, within `max_workers` given
    /// the pools of the other enabled plugins.
    fn new_pool(&self, key: &str) -> Arc<Pool> {
        let wanted = self.config.workers_for(key).max(1);
        let others: usize = self
            .all_plugins()
            .iter()
            .filter(|p| p.key != key && p.status().state == State::Enabled)
            .map(|p| p.pool().size())
            .sum();
        let room = self.config.max_workers.saturating_sub(others).max(1);
        if wanted > room {
            tracing::warn!(target: "server", plugin = key, "{wanted} workers configured but max_workers = {} leaves room for {room}", self.config.max_workers);
        }
        Pool::new(wanted.min(room), self.config.queue_for(key))
    }

    /// Starts every worker `pool` has room for, at once, each loading the
    /// plugin and running `start()`; the room is held meanwhile, so calls
    /// wait in its queue. On success the plugin's meta is the one loaded;
    /// on failure the started workers are stopped and, unless `reloading`
    /// (where the running version keeps serving), the plugin is `failed`.
    async fn fill_pool(
        &self,
        plugin: &Arc<Plugin>,
        pool: &Arc<Pool>,
        granting: bool,
        reloading: bool,
    ) -> Result<(), Failure> {
        let tickets: Vec<Ticket> = (0..pool.size())
            .map_while(|_| match pool.checkout(false) {
                Checkout::Start(ticket) => Some(ticket),
                _ => None,
            })
            .collect();
        let starts = tickets.into_iter().map(|ticket| async move {
            (ticket, self.start_worker(plugin, granting, reloading).await)
        });
        let mut leases = Vec::new();
        let mut failure = None;
        let mut loaded = None;
        for (ticket, started) in join_all(starts).await {
            match started {
                Ok(s) => {
                    loaded.get_or_insert((s.meta, s.file_hash));
                    leases.push(ticket.fill(s.worker));
                }
                Err(f) => {
                    failure.get_or_insert(f);
                }
            }
        }
        match failure {
            None => {
                // No room left (calls already started the workers) is
                // not a failure: the pool is full.
                if let Some((meta, file_hash)) = loaded {
                    let mut s = plugin.status();
                    s.meta = Some(meta);
                    s.file_hash = file_hash;
                }
                Ok(())
            }
            Some(failure) => {
                if !reloading {
                    let mut s = plugin.status();
                    s.state = State::Failed;
                    s.failure = Some(failure.clone());
                }
                pool.retire();
                let workers: Vec<Arc<Worker>> = leases.iter().map(|l| l.worker().clone()).collect();
                join_all(workers.iter().map(|w| self.stop_worker(plugin, w))).await;
                drop(leases);
                Err(failure)
            }
        }
    }

    /// Takes `pool` out of service and stops every worker in it (`stop()`
    /// on each, at once), whether or not it is serving a call.
    async fn stop_pool(&self, plugin: &Plugin, pool: &Pool) {
        let workers = pool.take_all();
        join_all(workers.iter().map(|w| self.stop_worker(plugin, w))).await;
    }

    /// Loads the plugin in a new worker and runs `start()`. On failure the
    /// plugin becomes `failed` with the reason and dump. `granting` is set
    /// by enable: the declared permissions are about to be granted, so a
    /// change of permissions on disk is accepted.
    async fn activate(
        self: &Inner,
        plugin: &Arc<Plugin>,
        granting: bool,
    ) -> Result<Arc<Worker>, Failure> {
        match self.start_worker(plugin, granting, false).await {
            Ok(started) => {
                let mut s = plugin.status();
                s.meta = Some(started.meta);
                s.file_hash = started.file_hash;
                Ok(started.worker)
            }
            Err(failure) => {
                let mut s = plugin.status();
                s.state = State::Failed;
                s.failure = Some(failure.clone());
                Err(failure)
            }
        }
    }

    /// Loads the plugin as it is on disk in a new worker and runs
    /// `start()`, leaving the registry entry as it is: the caller installs
    /// the worker, or reports the failure. `reloading` dumps failures
    /// under the `reload` phase.
    async fn start_worker(
        self: &Inner,
        plugin: &Arc<Plugin>,
        granting: bool,
        reloading: bool,
    ) -> Result<Started, Failure> {
        let (import_phase, start_phase) = if reloading {
            (Phase::Reload, Phase::Reload)
        } else {
            (Phase::Import, Phase::Start)
        };
        let weak = Arc::downgrade(plugin);
        let (max, window) = (
            self.config.max_crashes,
            Duration::from_secs_f64(self.config.crash_window_s),
        );
        let on_crash = || -> OnCrash {
            let weak = weak.clone();
            let changes = self.changes.clone();
            let incidents = self.incidents.clone();
            Box::new(move |exit| {
                announce(&incidents);
                if let Some(p) = weak.upgrade()
                    && p.record_crash(exit, max, window)
                {
                    announce(&changes);
                }
            })
        };
        // Enable grants what the file declares; a restart keeps to what
        // was granted.
        let granted = plugin.status().granted.clone();
        let grant_for = |meta: &PluginMeta| -> Granted {
            match (&granted, granting) {
                (Some(g), false) => g.clone(),
                _ => Granted::declared(meta),
            }
        };
        // The worker's sandbox comes from the meta seen at discovery; if the
        // file now declares other paths, limits or permissions, it is
        // loaded once more in a sandbox that matches.
        let known = plugin.status().meta.clone();
        let mut access = known.as_ref().map_or_else(Access::none, |m| {
            Access::for_plugin(m, &grant_for(m), &self.config)
        });
        let mut attempts = 0;
        let (worker, meta, file_hash) = loop {
            attempts += 1;
            let Loaded {
                worker,
                meta,
                file_hash,
            } = match self
                .load(
                    &plugin.folder,
                    &plugin.dir,
                    &access,
                    import_phase,
                    Some(on_crash()),
                )
                .await
            {
                Ok(l) => l,
                // The sandbox of the meta seen at discovery cannot be built
                // (a path it declared): read the file as it is now, in a
                // worker with no permission, before giving up.
                Err(e) if e.sandbox && access != Access::none() && attempts == 1 => {
                    access = Access::none();
                    continue;
                }
                Err(e) => {
                    return Err(Failure {
                        reason: e.reason(),
                        dump: e.dump,
                    });
                }
            };
            let problem = if meta.name != plugin.key {
                Some(format!(
                    "plugin.py now declares the name '{}' instead of '{}'; restart greffon to rediscover it",
                    meta.name, plugin.key
                ))
            } else if granting {
                None
            } else {
                let granted = granted.clone().unwrap_or_default();
                ungranted(&meta, &granted).map(|(extra, reason)| {
                    tracing::info!(target: "audit", event = "permission_escalation_refused", plugin = %plugin.key, requested = ?extra);
                    reason
                })
            };
            if let Some(reason) = problem {
                worker.shutdown(Duration::from_secs(1)).await;
                return Err(Failure { reason, dump: None });
            }
            let wanted = Access::for_plugin(&meta, &grant_for(&meta), &self.config);
            if wanted == access {
                break (worker, meta, file_hash);
            }
            worker.shutdown(Duration::from_secs(1)).await;
            if attempts >= 3 {
                return Err(Failure {
                    reason: "plugin.py kept changing while it was loaded; try again".into(),
                    dump: None,
                });
            }
            access = wanted;
        };
        let meta = Arc::new(meta);
        let timeout = Duration::from_secs_f64(self.config.timeout_for(&plugin.key, meta.timeout_s));
        let outcome = worker
            .request(method::START, &Value::Null, None, timeout)
            .await;
        let failure = match outcome {
            Ok(Reply::Response {
                body: ResponseBody::Ok(_),
                output,
            }) => {
                log_output(&plugin.key, output.as_ref());
                return Ok(Started {
                    worker,
                    meta,
                    file_hash,
                });
            }
            Ok(Reply::Response {
                body: ResponseBody::Err(e),
                output,
            }) => {
                let dump = self.write_dump(&plugin.key, &file_hash, start_phase, None, &e, output);
                Failure {
                    reason: format!("start() raised {}", exception_text(&e)),
                    dump,
                }
            }
            Ok(Reply::Gone(exit)) => Failure {
                reason: format!("its worker ended during start() ({})", exit.description),
                dump: exit.dump.clone(),
            },
            Ok(Reply::NotDelivered) => Failure {
                reason: "its worker ended before start() could be called".into(),
                dump: worker.wait_exit().await.dump.clone(),
            },
            Err(_) => {
                let reason = format!("start() did not finish within {} s", timeout.as_secs_f64());
                let exit = worker.kill_and_wait(&reason).await;
                Failure {
                    reason,
                    dump: exit.dump.clone(),
                }
            }
        };
        worker.shutdown(Duration::from_secs(1)).await;
        Err(failure)
    }

    /// Calls `stop()` (bounded), then ends the worker.
    async fn stop_worker(&self, plugin: &Plugin, worker: &Worker) {
        if worker.is_alive() {
            let timeout = Duration::from_secs_f64(self.config.stop_timeout_s);
            match worker
                .request(method::STOP, &Value::Null, None, timeout)
                .await
            {
                Ok(Reply::Response {
                    body: ResponseBody::Err(e),
                    output,
                }) => {
                    let hash = plugin.status().file_hash.clone();
                    let dump = self.write_dump(&plugin.key, &hash, Phase::Stop, None, &e, output);
                    tracing::warn!(target: "server", plugin = %plugin.key, dump = ?dump, "stop() raised {}", exception_text(&e));
                }
                Ok(Reply::Response { output, .. }) => log_output(&plugin.key, output.as_ref()),
                Ok(Reply::Gone(_) | Reply::NotDelivered) => {}
                Err(_) => {
                    tracing::warn!(target: "server", plugin = %plugin.key, "stop() did not finish within {} s; killing the worker", timeout.as_secs_f64());
                }
            }
        }
        worker.shutdown(Duration::from_secs(1)).await;
    }

    /// Turns a worker's error answer to `run` into the call's error,
    /// writing a dump for unexpected exceptions.
    fn run_error(&self, plugin: &Plugin, e: WireError, args: &Value, output: Output) -> CallError {
        let name = &plugin.key;
        match e.kind {
            ErrorKind::Exception => {
                let hash = plugin.status().file_hash.clone();
                let dump = self.write_dump(name, &hash, Phase::Run, Some(args), &e, Some(output));
                CallError {
                    kind: ErrorKind::Exception,
                    message: format!(
                        "plugin '{name}' raised {}{}",
                        exception_text(&e),
                        dump_note(dump.as_deref())
                    ),
                    dump,
                }
            }
            ErrorKind::Validation => CallError::new(
                e.kind,
                format!(
                    "plugin '{name}': invalid arguments: {}",
                    crate::redact::redact(&e.message)
                ),
            ),
            kind => CallError::new(
                kind,
                format!("plugin '{name}': {}", crate::redact::redact(&e.message)),
            ),
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
fn announce(changes: &watch::Sender<u64>) {
    changes.send_modify(|generation| *generation = generation.wrapping_add(1));
}

/// Announces a change when the operation that holds it ends, whichever
/// way it ends (a failed enable marks the plugin failed: also a change).
struct Announce<'a>(&'a watch::Sender<u64>);

impl Drop for Announce<'_> {
    fn drop(&mut self) {
        announce(self.0);
    }
}
