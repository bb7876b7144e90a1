//! Loading `plugin.py` in a worker and judging what it declares: used by
//! discovery (worker stopped right after), `check`, and enable (worker
//! kept).

use crate::broker::NetAccess;
use crate::dump::Phase;
use crate::envs::Env;
use crate::error::HostError;
use crate::hooks::{self, Ended};
use crate::host::{Host, Inner, exception_text};
use crate::jail::Access;
use crate::registry::{Failure, Plugin, Status, failed_status, settled_status};
use crate::services::Caller;
use crate::supervision::{OnCrash, Supervised};
use greffon_core::PluginMeta;
use greffon_protocol::api::State;
use greffon_protocol::method::{self, LoadParams, LoadResult};
use greffon_protocol::{ErrorKind, Output, WireError};
use greffon_worker::{SpawnSpec, Worker};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Why a plugin could not be loaded: every problem found, and the dump.
#[derive(Debug, Clone)]
pub(crate) struct LoadError {
    pub problems: Vec<String>,
    pub dump: Option<PathBuf>,
    /// `meta["name"]` when the worker reported a usable one.
    pub name: Option<String>,
    /// The worker's sandbox could not be built (the plugin never ran).
    pub sandbox: bool,
    /// The worker died while starting or loading (not the plugin's import
    /// failing): replacing a worker tries again rather than failing it.
    pub died: bool,
}

impl LoadError {
    pub(crate) fn one(problem: String, dump: Option<PathBuf>) -> LoadError {
        LoadError {
            problems: vec![problem],
            dump,
            name: None,
            sandbox: false,
            died: false,
        }
    }

    pub(crate) fn reason(&self) -> String {
        self.problems.join("; ")
    }
}

/// A loaded plugin: its worker (still running) and its judged meta.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub worker: Arc<Worker>,
    pub meta: PluginMeta,
    pub file_hash: String,
}

/// Cuts a traceback to its last lines for one-line messages.
fn last_line(text: &str) -> &str {
    text.trim_end().lines().last().unwrap_or("")
}

/// Which interpreter a load may use for a plugin that declares
/// requirements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EnvUse {
    /// Discovery and `check`: its environment if built, else the base
    /// interpreter (environments are built at enable, not when listing).
    IfBuilt,
    /// A worker started for the pool or a call: its built environment,
    /// or fail.
    Built,
    /// [`Inner::build_environment`]: built when missing.
    Build,
}

impl Inner {
    pub(crate) fn spawn_spec(&self, label: &str, dir: &Path, env: Option<&Env>) -> SpawnSpec {
        SpawnSpec {
            python: env.map_or_else(|| self.python.exe.clone(), Env::python),
            sdk_dir: self.sdk_dir.clone(),
            plugin: label.to_string(),
            plugin_dir: dir.to_path_buf(),
            // Results are bounded by max_result_bytes; frames also carry
            // the captured output and the envelope.
            max_frame: self.config.max_result_bytes
                + 2 * self.config.capture_limit_bytes
                + (64 << 10),
            template: self.config.worker_template,
            // An environment's packages are the plugin's choice.
            site_in_sandbox: env.is_some(),
        }
    }

    /// Spawns a worker for the plugin in `dir`, sandboxed to `access`, and
    /// imports it there; an import that raises is dumped under `phase`
    /// (import, or reload).
    pub(crate) async fn load(
        &self,
        folder: &str,
        dir: &Path,
        access: &Access,
        (phase, env_use): (Phase, EnvUse),
        on_crash: Option<OnCrash>,
    ) -> Result<Loaded, LoadError> {
        let script = dir.join("plugin.py");
        let file_hash = crate::dump::file_hash(&script);
        let label = access.name.as_deref().unwrap_or(folder);
        let (env, unbuilt) = self.environment(label, dir, &file_hash, env_use).await?;
        let worker = self
            .spawn_worker(folder, dir, access, env.as_ref(), &file_hash, on_crash)
            .await?;
        let result = self
            .import(&worker, folder, &script, &file_hash, phase)
            .await
            .map_err(|mut e| {
                if unbuilt {
                    e.problems.push(format!(
                        "its environment (the requirements it declares) is not built yet: `greffon plugin enable {label}` builds it"
                    ));
                }
                e
            });
        let judged = result.and_then(|r| judge(&r));
        match judged {
            Ok(meta) => Ok(Loaded {
                worker,
                meta,
                file_hash,
            }),
            Err(e) => {
                worker.shutdown(Duration::from_secs(1)).await;
                Err(e)
            }
        }
    }

    /// A worker for the plugin in `dir`, sandboxed to `access` and
    /// supervised by the host: its host calls answered with what `access`
    /// grants, its crash dumped and counted.
    async fn spawn_worker(
        &self,
        folder: &str,
        dir: &Path,
        access: &Access,
        env: Option<&Env>,
        file_hash: &str,
        on_crash: Option<OnCrash>,
    ) -> Result<Arc<Worker>, LoadError> {
        let label = access.name.as_deref().unwrap_or(folder);
        let jail = self
            .jailer
            .jail(label, dir, access, env.map(|e| e.dir.as_path()))
            .map_err(|e| LoadError {
                sandbox: true,
                ..LoadError::one(format!("cannot sandbox its worker: {e}"), None)
            })?;
        let supervisor = Arc::new(Supervised {
            caller: Arc::new(Caller {
                plugin: label.to_string(),
                python_version: self.python.version.clone(),
                net: access.net.clone().map(NetAccess::new),
                secrets: access.secrets.clone(),
            }),
            services: self.services.clone(),
            dumps_dir: self.home.dumps_dir(),
            file_hash: file_hash.to_string(),
            on_crash,
        });
        let spec = self.spawn_spec(folder, dir, env);
        Worker::spawn(spec, jail, supervisor).await.map_err(|e| {
            let mut problem = format!("cannot start its worker: {}", e.message);
            if !e.stderr.trim().is_empty() {
                problem.push_str(&format!(" ({})", last_line(&e.stderr)));
            }
            // Nothing of the plugin ran: a worker (or the template it is
            // forked from) that died before its hello.
            LoadError {
                died: true,
                ..LoadError::one(problem, None)
            }
        })
    }

    /// The environment the plugin in `dir` runs in (`None`: the base
    /// interpreter), and whether it declares one that is not built and
    /// runs on the base interpreter for now (`EnvUse::IfBuilt`). A build
    /// that fails is dumped.
    async fn environment(
        &self,
        label: &str,
        dir: &Path,
        file_hash: &str,
        env_use: EnvUse,
    ) -> Result<(Option<Env>, bool), LoadError> {
        let reqs = crate::envs::declared(dir).map_err(|e| LoadError::one(e, None))?;
        let Some(reqs) = reqs else {
            return Ok((None, false));
        };
        match (self.envs.existing(&reqs), env_use) {
            (Some(env), _) => Ok((Some(env), false)),
            (None, EnvUse::IfBuilt) => Ok((None, true)),
            (None, EnvUse::Built) => Err(LoadError::one(
                format!(
                    "its environment ({}) is missing; `greffon plugin enable {label}` builds it again",
                    reqs.source
                ),
                None,
            )),
            (None, EnvUse::Build) => self
                .envs
                .ensure(&reqs, label)
                .await
                .map(|e| (Some(e), false))
                .map_err(|e| {
                    let error = WireError::new(ErrorKind::PluginFailed, e.message.clone());
                    let output = Output {
                        stderr: e.log,
                        ..Output::default()
                    };
                    let dump = self.write_dump(
                        label,
                        file_hash,
                        Phase::Environment,
                        None,
                        &error,
                        Some(output),
                    );
                    LoadError::one(
                        format!("its environment could not be built: {}", e.message),
                        dump,
                    )
                }),
        }
    }

    /// Builds the environment `plugin` declares when it is missing
    /// (enable, reload, start-up).
    pub(crate) async fn build_environment(&self, plugin: &Plugin) -> Result<(), Failure> {
        let hash = crate::dump::file_hash(&plugin.dir.join("plugin.py"));
        self.environment(&plugin.key, &plugin.dir, &hash, EnvUse::Build)
            .await
            .map(|_| ())
            .map_err(|e| Failure::new(e.reason(), e.dump))
    }

    /// Has the worker import `plugin.py`: what it found there, or why not
    /// (an import that raises is dumped under `phase`).
    async fn import(
        &self,
        worker: &Worker,
        folder: &str,
        script: &Path,
        file_hash: &str,
        phase: Phase,
    ) -> Result<LoadResult, LoadError> {
        let params = LoadParams {
            path: script.to_string_lossy().into_owned(),
            folder: folder.to_string(),
            config: self.config.plugin_config(&self.config_name_for(folder)),
            capture_limit: self.config.capture_limit_bytes,
            max_result_bytes: self.config.max_result_bytes,
        };
        let import_timeout = Duration::from_secs_f64(self.config.default_timeout_s);
        match hooks::request(worker, method::LOAD, &params, import_timeout).await {
            Ended::Returned(v, _) => serde_json::from_value::<LoadResult>(v).map_err(|e| {
                LoadError::one(
                    format!("the worker answered a malformed load result: {e}"),
                    None,
                )
            }),
            Ended::Raised(e, output) => {
                let dump = (e.kind == ErrorKind::Exception)
                    .then(|| self.write_dump(folder, file_hash, phase, None, &e, output))
                    .flatten();
                Err(LoadError::one(
                    format!("importing plugin.py raised {}", exception_text(&e)),
                    dump,
                ))
            }
            Ended::Died { delivered, exit } => {
                let when = if delivered {
                    "while importing plugin.py"
                } else {
                    "before plugin.py was imported"
                };
                Err(LoadError {
                    died: true,
                    ..LoadError::one(format!("{} {when}", exit.description), exit.dump.clone())
                })
            }
            Ended::TimedOut => {
                let reason = format!(
                    "importing plugin.py did not finish within {} s",
                    import_timeout.as_secs_f64()
                );
                let exit = worker.kill_and_wait(&reason).await;
                Err(LoadError::one(reason, exit.dump.clone()))
            }
        }
    }

    /// Which `[plugins.NAME]` table applies to a folder: the registry name
    /// once known, else the folder name.
    fn config_name_for(&self, folder: &str) -> String {
        self.plugins
            .in_folder(folder)
            .map_or_else(|| folder.to_string(), |p| p.key.clone())
    }
}

/// Applies the contract's rules to what the worker reported.
fn judge(r: &LoadResult) -> Result<PluginMeta, LoadError> {
    if !r.has_plugin {
        return Err(LoadError::one(
            "plugin.py does not define `plugin` (expected `plugin = Plugin()` at module level)"
                .into(),
            None,
        ));
    }
    let meta = PluginMeta::parse(r.meta.as_ref(), r.meta_type.as_deref());
    let name = r
        .meta
        .as_ref()
        .and_then(|m| m.get("name"))
        .and_then(|n| n.as_str())
        .filter(|n| greffon_core::is_valid_name(n))
        .map(str::to_string);
    let mut problems = match &meta {
        Ok(_) => Vec::new(),
        Err(e) => e.problems.clone(),
    };
    if !r.has_run {
        problems.push("plugin has no run() method".into());
    }
    match meta {
        Ok(m) if problems.is_empty() => Ok(m),
        _ => Err(LoadError {
            problems,
            dump: None,
            name,
            sandbox: false,
            died: false,
        }),
    }
}

/// Discovery workers running at once.
const DISCOVERY_PARALLELISM: usize = 4;

/// What loading one folder gave: its meta and `plugin.py` hash, or why not.
type Outcome = Result<(PluginMeta, String), LoadError>;

impl Host {
    /// Scans `plugins/*/plugin.py` (folders starting with `_` skipped),
    /// loads each in its own worker, and rebuilds the registry.
    pub(crate) async fn discover(&self) -> Result<(), HostError> {
        let folders = plugin_folders(&self.inner.home.plugins_dir())?;
        let entries = self.entries_of(folders, &[]).await?;
        self.inner.plugins.set_all(entries);
        Ok(())
    }

    /// Discovers `plugins/NAME/` alone, for a command that names one
    /// plugin (`plugin run NAME` need not import every other plugin):
    /// true when that folder declares NAME. The other folders are
    /// discovered the first time a plugin outside it is asked for
    /// ([`Host::find`]).
    pub(crate) async fn discover_only(&self, name: &str) -> Result<bool, HostError> {
        let inner = &self.inner;
        let mut partial = inner.partial.lock().await;
        let Some(folder) = plugin_folders(&inner.home.plugins_dir())?
            .into_iter()
            .find(|(folder, _)| folder == name)
        else {
            return Ok(false);
        };
        let entries = self.entries_of(vec![folder], &[]).await?;
        if !entries.contains_key(name) {
            return Ok(false);
        }
        inner.plugins.set_all(entries);
        *partial = true;
        Ok(true)
    }

    /// The plugin `name`, discovering the rest of `plugins/` first when
    /// this host was opened for another one ([`Host::open_for`]).
    pub(crate) async fn find(&self, name: &str) -> Result<Arc<Plugin>, HostError> {
        let missing = match self.lookup(name) {
            Ok(plugin) => return Ok(plugin),
            Err(e) => e,
        };
        let mut partial = self.inner.partial.lock().await;
        if !*partial {
            // Another call may have just finished discovering it.
            return self.lookup(name).map_err(|_| missing);
        }
        let taken: Vec<(String, String)> = (self.inner.plugins.all().iter())
            .map(|p| (p.key.clone(), p.folder.clone()))
            .collect();
        let folders: Vec<_> = plugin_folders(&self.inner.home.plugins_dir())?
            .into_iter()
            .filter(|(folder, _)| !taken.iter().any(|(_, f)| f == folder))
            .collect();
        for plugin in self.entries_of(folders, &taken).await?.into_values() {
            self.inner.plugins.replace(None, plugin);
        }
        *partial = false;
        self.lookup(name)
    }

    /// The registry entries of `folders`, each loaded in its own worker.
    /// `taken`: the (name, folder) of entries already in the registry,
    /// which may be running: a folder declaring one of those names is the
    /// one refused.
    async fn entries_of(
        &self,
        folders: Vec<(String, PathBuf)>,
        taken: &[(String, String)],
    ) -> Result<BTreeMap<String, Arc<Plugin>>, HostError> {
        let inner = &self.inner;
        let outcomes = self.load_all(&folders).await;
        // Two folders declaring one name: the new ones fail, each naming
        // every folder that declares it.
        let mut by_name: HashMap<String, Vec<String>> = HashMap::new();
        for (name, folder) in taken {
            by_name
                .entry(name.clone())
                .or_default()
                .push(folder.clone());
        }
        for ((folder, _), outcome) in folders.iter().zip(&outcomes) {
            if let Ok((meta, _)) = outcome {
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
            let (key, status) = match outcome {
                Ok((meta, hash)) => match &by_name[&meta.name] {
                    dups if dups.len() > 1 => (folder.clone(), duplicate_status(meta, hash, dups)),
                    _ => {
                        let name = meta.name.clone();
                        let grant = granted.get(&name).cloned();
                        (name, settled_status(meta, hash, grant))
                    }
                },
                Err(e) => {
                    let key = e
                        .name
                        .clone()
                        .filter(|n| !registry.contains_key(n) && !by_name.contains_key(n))
                        .unwrap_or_else(|| folder.clone());
                    let hash = crate::dump::file_hash(&path.join("plugin.py"));
                    (key, failed_status(e.reason(), e.dump, hash))
                }
            };
            let plugin = inner.entry(key.clone(), folder, path, status);
            registry.insert(key, plugin);
        }
        Ok(registry)
    }

    /// Loads every folder in a worker of its own with no permission, a few
    /// at once; the outcomes in the folders' order.
    async fn load_all(&self, folders: &[(String, PathBuf)]) -> Vec<Outcome> {
        let limit = Arc::new(Semaphore::new(DISCOVERY_PARALLELISM));
        let mut tasks = tokio::task::JoinSet::new();
        for (i, (folder, path)) in folders.iter().cloned().enumerate() {
            let (inner, limit) = (self.inner.clone(), limit.clone());
            tasks.spawn(async move {
                let _permit = limit.acquire_owned().await;
                let outcome = inner
                    .load(
                        &folder,
                        &path,
                        &Access::none(),
                        (Phase::Import, EnvUse::IfBuilt),
                        None,
                    )
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
        let mut outcomes: Vec<Option<Outcome>> = (0..folders.len()).map(|_| None).collect();
        while let Some(joined) = tasks.join_next().await {
            if let Ok((i, outcome)) = joined {
                outcomes[i] = Some(outcome);
            }
        }
        outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Err(LoadError::one("discovery task failed".into(), None))))
            .collect()
    }
}

/// The plugin folders under `dir`, sorted: those holding a `plugin.py`
/// and not starting with `_` or `.`.
fn plugin_folders(dir: &Path) -> Result<Vec<(String, PathBuf)>, HostError> {
    let mut folders: Vec<(String, PathBuf)> = match std::fs::read_dir(dir) {
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
    Ok(folders)
}

/// The entry of a folder whose name another folder also declares: failed,
/// naming both. The meta stays, so `check` and `scaffold` still see which
/// name the folder declares.
pub(crate) fn duplicate_status(meta: PluginMeta, hash: String, folders: &[String]) -> Status {
    let listed: Vec<String> = folders.iter().map(|f| format!("plugins/{f}")).collect();
    let reason = format!(
        "plugin name '{}' is declared by both {}; rename one",
        meta.name,
        listed.join(" and ")
    );
    let mut status = settled_status(meta, hash, None);
    status.state = State::Failed;
    status.failure = Some(Failure::new(reason, None));
    status.duplicate = true;
    status
}
