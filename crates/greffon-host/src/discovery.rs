//! Discovery: the folders of `plugins/` loaded (each in a worker with no
//! permission, stopped right after) and judged into registry entries, the
//! rule for two folders declaring one name, a folder read again for the
//! file watcher, `check`, and the lazy discovery of a host opened for one
//! plugin ([`Discovery::find`]).

use crate::dump::Phase;
use crate::error::HostError;
use crate::jail::Access;
use crate::launcher::{EnvUse, Launcher, LoadError, Source};
use crate::registry::{Failure, Plugin, Registry, Status, failed_status, settled_status};
use crate::store::Store;
use greffon_core::{Finding, PluginMeta};
use greffon_protocol::api::{CheckReport, State};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, Semaphore};

#[derive(Debug)]
pub(crate) struct Discovery {
    registry: Arc<Registry>,
    launcher: Arc<Launcher>,
    /// The enabled set and grants, which a discovered entry takes up.
    store: Store,
    /// True while the registry holds only the plugin a command named
    /// ([`Discovery::discover_only`]); the rest of `plugins/` is
    /// discovered at the first miss. Held while that happens, so it
    /// happens once.
    partial: Mutex<bool>,
}

/// Discovery workers running at once.
const DISCOVERY_PARALLELISM: usize = 4;

/// What loading one folder gave: its meta and `plugin.py` hash, or why not.
type Outcome = Result<(PluginMeta, String), LoadError>;

impl Discovery {
    pub(crate) fn new(registry: Arc<Registry>, launcher: Arc<Launcher>, store: Store) -> Discovery {
        Discovery {
            registry,
            launcher,
            store,
            partial: Mutex::new(false),
        }
    }

    /// Scans `plugins/*/plugin.py` (folders starting with `_` skipped),
    /// loads each in its own worker, and rebuilds the registry.
    pub(crate) async fn discover(&self) -> Result<(), HostError> {
        let folders = plugin_folders(self.registry.plugins_dir())?;
        let outcomes = self.load_all(&folders).await;
        let entries = self.entries_of(folders, outcomes, &[]).await?;
        self.registry.set_all(entries);
        Ok(())
    }

    /// Discovers `plugins/NAME/` alone when that folder declares NAME, for
    /// a command that names one plugin (`plugin run NAME` need not import
    /// every other plugin); the other folders are discovered the first
    /// time a plugin outside it is asked for ([`Discovery::find`]).
    /// Otherwise (no such folder, or one declaring another name) the full
    /// discovery, which reuses what that folder's load found.
    pub(crate) async fn discover_only(&self, name: &str) -> Result<(), HostError> {
        let mut partial = self.partial.lock().await;
        let mut folders = plugin_folders(self.registry.plugins_dir())?;
        let Some(at) = folders.iter().position(|(folder, _)| folder == name) else {
            drop(partial);
            return self.discover().await;
        };
        let (folder, dir) = &folders[at];
        let outcome = read(&self.launcher, Source::folder(folder, dir)).await;
        if keyed_by(&outcome, folder) == name {
            let entries = self
                .entries_of(vec![folders.swap_remove(at)], vec![outcome], &[])
                .await?;
            self.registry.set_all(entries);
            *partial = true;
            return Ok(());
        }
        let mine = folders.remove(at);
        let mut outcomes = self.load_all(&folders).await;
        folders.insert(at, mine);
        outcomes.insert(at, outcome);
        let entries = self.entries_of(folders, outcomes, &[]).await?;
        self.registry.set_all(entries);
        Ok(())
    }

    /// The plugin `name`, discovering the rest of `plugins/` first when
    /// this host was opened for another one ([`Discovery::discover_only`]).
    pub(crate) async fn find(&self, name: &str) -> Result<Arc<Plugin>, HostError> {
        let missing = match self.registry.lookup(name) {
            Ok(plugin) => return Ok(plugin),
            Err(e) => e,
        };
        let mut partial = self.partial.lock().await;
        if !*partial {
            // Another call may have just finished discovering it.
            return self.registry.lookup(name).map_err(|_| missing);
        }
        let taken = self.registry.taken();
        let folders: Vec<_> = plugin_folders(self.registry.plugins_dir())?
            .into_iter()
            .filter(|(folder, _)| !taken.iter().any(|(_, f)| f == folder))
            .collect();
        let outcomes = self.load_all(&folders).await;
        for plugin in self
            .entries_of(folders, outcomes, &taken)
            .await?
            .into_values()
        {
            self.registry.replace(None, plugin);
        }
        *partial = false;
        self.registry.lookup(name)
    }

    /// The registry entries of `folders`, from what loading each found
    /// (`outcomes`, in the same order). `taken`: the (name, folder) of
    /// entries already in the registry, which may be running: a folder
    /// declaring one of those names is the one refused.
    async fn entries_of(
        &self,
        folders: Vec<(String, PathBuf)>,
        outcomes: Vec<Outcome>,
        taken: &[(String, String)],
    ) -> Result<BTreeMap<String, Arc<Plugin>>, HostError> {
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
        let granted = self.store.enabled().await?;
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
            let plugin = self.registry.entry(key.clone(), folder, path, status);
            registry.insert(key, plugin);
        }
        Ok(registry)
    }

    /// A new or changed folder whose plugin is not enabled, for the file
    /// watcher: read again (in a worker with no permission) and its entry
    /// (`existing`, if any) replaced. Returns what was done.
    pub(crate) async fn read_again(&self, folder: &str, existing: Option<&Plugin>) -> String {
        let dir = self.registry.plugins_dir().join(folder);
        let source = match existing {
            Some(plugin) => Source::of(plugin),
            None => Source::folder(folder, &dir),
        };
        let (key, status) = match read(&self.launcher, source).await {
            Ok((meta, hash)) => {
                let key = meta.name.clone();
                match self.registry.get(&key).filter(|p| p.folder != folder) {
                    Some(other) => {
                        let folders = [other.folder.clone(), folder.to_string()];
                        (folder.to_string(), duplicate_status(meta, hash, &folders))
                    }
                    None => {
                        // A failed plugin that was enabled keeps its grant:
                        // fixing the file brings it back.
                        let granted = existing
                            .filter(|e| e.key == key)
                            .and_then(|e| e.status().granted.clone());
                        (key, settled_status(meta, hash, granted))
                    }
                }
            }
            Err(e) => {
                let hash = crate::dump::file_hash(&dir.join("plugin.py"));
                let key = e.name.clone().unwrap_or_else(|| folder.to_string());
                (key, failed_status(e.reason(), e.dump, hash))
            }
        };
        let state = status.state;
        let entry = self
            .registry
            .entry(key.clone(), folder.to_string(), dir, status);
        self.registry
            .replace(existing.map(|e| e.key.as_str()), entry);
        format!("{key}: read again, now {}", state.as_str())
    }

    /// Loads a plugin in a fresh worker (by name or folder) and reports
    /// every problem, without changing the registry.
    pub(crate) async fn check(&self, name: &str) -> Result<CheckReport, HostError> {
        let plugin;
        let dir = self.registry.plugins_dir().join(name);
        let source = match self.registry.lookup(name) {
            Ok(p) => {
                plugin = p;
                Source::of(&plugin)
            }
            Err(_) if greffon_core::is_valid_name(name) && dir.join("plugin.py").is_file() => {
                Source::folder(name, &dir)
            }
            Err(e) => return Err(e),
        };
        let mut report = CheckReport {
            name: name.to_string(),
            folder: source.folder.to_string(),
            problems: Vec::new(),
            findings: Vec::new(),
            dump: None,
            schema: None,
            permissions: Vec::new(),
        };
        match read(&self.launcher, source).await {
            Ok((meta, _)) => {
                let others: Vec<String> = (self.registry.declaring(&meta.name).iter())
                    .filter(|p| p.folder != source.folder)
                    .map(|p| format!("plugins/{}", p.folder))
                    .collect();
                if !others.is_empty() {
                    report.problems.push(format!(
                        "plugin name '{}' is also declared by {}",
                        meta.name,
                        others.join(", ")
                    ));
                }
                report
                    .problems
                    .extend(self.launcher.jailer().path_problems(&meta));
                report.name = meta.name;
                report.schema = Some(meta.schema.schema().clone());
                report.permissions = meta.permissions;
            }
            Err(e) => {
                if let Some(n) = e.name {
                    report.name = n;
                }
                report.problems = e.problems;
                report.dump = e.dump;
            }
        }
        report.findings = report.problems.iter().cloned().map(Finding::new).collect();
        Ok(report)
    }

    /// Loads every folder in a worker of its own with no permission, a few
    /// at once; the outcomes in the folders' order.
    async fn load_all(&self, folders: &[(String, PathBuf)]) -> Vec<Outcome> {
        let limit = Arc::new(Semaphore::new(DISCOVERY_PARALLELISM));
        let mut tasks = tokio::task::JoinSet::new();
        for (i, (folder, path)) in folders.iter().cloned().enumerate() {
            let (launcher, limit) = (self.launcher.clone(), limit.clone());
            tasks.spawn(async move {
                let _permit = limit.acquire_owned().await;
                (i, read(&launcher, Source::folder(&folder, &path)).await)
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

/// Loads the plugin of `source` in a worker with no permission, stopped
/// right after: what it declares, or why it cannot be loaded.
async fn read(launcher: &Launcher, source: Source<'_>) -> Outcome {
    let loaded = launcher
        .load(
            source,
            &Access::none(),
            (Phase::Import, EnvUse::IfBuilt),
            None,
        )
        .await?;
    loaded.worker.shutdown(Duration::from_secs(1)).await;
    Ok((loaded.meta, loaded.file_hash))
}

/// The registry key of a folder's entry when it is loaded alone: the name
/// it declares, else (it could not be loaded) the name its meta gave or
/// the folder's.
fn keyed_by<'a>(outcome: &'a Outcome, folder: &'a str) -> &'a str {
    match outcome {
        Ok((meta, _)) => &meta.name,
        Err(e) => e.name.as_deref().unwrap_or(folder),
    }
}

/// Whether `plugins/FOLDER` holds a plugin: a `plugin.py`, in a folder not
/// starting with `_` or `.`.
pub(crate) fn is_plugin_folder(folder: &str, dir: &Path) -> bool {
    !folder.starts_with('_') && !folder.starts_with('.') && dir.join("plugin.py").is_file()
}

/// The plugin folders under `dir`, sorted (see [`is_plugin_folder`]).
fn plugin_folders(dir: &Path) -> Result<Vec<(String, PathBuf)>, HostError> {
    let mut folders: Vec<(String, PathBuf)> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let path = e.path();
                is_plugin_folder(&name, &path).then_some((name, path))
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
