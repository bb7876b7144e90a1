//! The registry: one entry per plugin found under `plugins/`, with its
//! state and its pool of workers; every entry is made here
//! ([`Registry::entry`]).

use crate::error::HostError;
use greffon_core::{Config, Permission, PluginMeta};
use greffon_protocol::api::{FailureInfo, State};
use greffon_worker::{Exit, Pool};
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Why a plugin is `failed`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Failure {
    pub reason: String,
    /// The crash dump that tells more, when one was written.
    pub dump: Option<PathBuf>,
    /// The worker died (killed, or crashed outside the plugin's code)
    /// rather than the plugin failing: replacing a worker counts this as a
    /// crash, under `max_crashes`, instead of failing the plugin at once.
    pub worker_died: bool,
}

impl Failure {
    /// The plugin failed (its import, meta, `start()`, a refusal).
    pub(crate) fn new(reason: String, dump: Option<PathBuf>) -> Failure {
        Failure {
            reason,
            dump,
            worker_died: false,
        }
    }

    /// Its worker died, which replacing the worker may cure.
    pub(crate) fn died(reason: String, dump: Option<PathBuf>) -> Failure {
        Failure {
            worker_died: true,
            ..Failure::new(reason, dump)
        }
    }

    /// What the API shows of it.
    pub(crate) fn info(&self) -> FailureInfo {
        FailureInfo {
            reason: self.reason.clone(),
            dump: self.dump.clone(),
        }
    }
}

/// What the operator granted at enable, persisted with the enabled set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Granted {
    pub permissions: Vec<Permission>,
    /// Names of the secrets the plugin may read.
    pub secrets: Vec<String>,
}

impl Granted {
    /// Everything `meta` declares: what enable grants.
    pub(crate) fn declared(meta: &PluginMeta) -> Granted {
        Granted {
            permissions: meta.permissions.clone(),
            secrets: meta.secrets.clone(),
        }
    }
}

/// The mutable part of an entry, behind one lock so that state, meta and
/// crash history always change together.
#[derive(Debug)]
pub(crate) struct Status {
    pub meta: Option<Arc<PluginMeta>>,
    pub file_hash: String,
    pub state: State,
    pub failure: Option<Failure>,
    /// Persisted grant; `Some` exactly when the operator enabled it.
    pub granted: Option<Granted>,
    /// Recent unexpected worker exits, oldest first.
    pub crashes: VecDeque<Instant>,
    /// Unexpected worker exits since greffon started (for metrics).
    pub crash_total: u64,
    /// Another folder declares the same name: enabling cannot fix that,
    /// only renaming and rediscovering can.
    pub duplicate: bool,
}

#[derive(Debug)]
pub(crate) struct Plugin {
    pub key: String,
    pub folder: String,
    pub dir: PathBuf,
    pub status: Mutex<Status>,
    /// Its workers. Replaced whole by enable and reload; a call takes the
    /// current one and leases a worker from it.
    pool: Mutex<Arc<Pool>>,
    /// One change at a time: enable, disable, reload, or a re-read by the
    /// file watcher (which replaces the entry).
    pub changing: tokio::sync::Mutex<()>,
}

impl Plugin {
    pub(crate) fn new(
        key: String,
        folder: String,
        dir: PathBuf,
        status: Status,
        pool: Arc<Pool>,
    ) -> Plugin {
        Plugin {
            key,
            folder,
            dir,
            status: Mutex::new(status),
            pool: Mutex::new(pool),
            changing: tokio::sync::Mutex::new(()),
        }
    }

    pub(crate) fn pool(&self) -> Arc<Pool> {
        self.pool.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Installs `pool` for new calls, answering the one it replaces.
    pub(crate) fn replace_pool(&self, pool: Arc<Pool>) -> Arc<Pool> {
        std::mem::replace(
            &mut *self.pool.lock().unwrap_or_else(|p| p.into_inner()),
            pool,
        )
    }

    pub(crate) fn status(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records an unexpected worker exit; `max` crashes within `window`
    /// mark the plugin failed (then answers true).
    pub(crate) fn record_crash(&self, exit: &Exit, max: u32, window: Duration) -> bool {
        self.record_crash_at(exit, max, window, Instant::now())
    }

    fn record_crash_at(&self, exit: &Exit, max: u32, window: Duration, now: Instant) -> bool {
        let mut s = self.status();
        s.crashes.push_back(now);
        s.crash_total += 1;
        while s
            .crashes
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            s.crashes.pop_front();
        }
        if s.crashes.len() >= max as usize && s.state == State::Enabled {
            s.state = State::Failed;
            s.failure = Some(Failure::died(
                format!(
                    "its worker crashed {} times within {} s (last: {}); fix it, then run `greffon plugin enable {}`",
                    s.crashes.len(),
                    window.as_secs_f64(),
                    exit.description,
                    self.key
                ),
                exit.dump.clone(),
            ));
            tracing::error!(target: "server", plugin = %self.key, "plugin marked failed after repeated crashes");
            return true;
        }
        false
    }

    /// How long to wait before restarting a worker that crashed: 100 ms
    /// doubled per recent crash, at most 5 s.
    pub(crate) fn restart_backoff(&self, window: Duration) -> Duration {
        self.restart_backoff_at(window, Instant::now())
    }

    fn restart_backoff_at(&self, window: Duration, now: Instant) -> Duration {
        let s = self.status();
        let recent = s
            .crashes
            .iter()
            .filter(|t| now.duration_since(**t) <= window)
            .count();
        let Some(last) = s.crashes.back() else {
            return Duration::ZERO;
        };
        if recent == 0 {
            return Duration::ZERO;
        }
        let delay = Duration::from_millis(100 << (recent - 1).min(6)).min(Duration::from_secs(5));
        delay.saturating_sub(now.duration_since(*last))
    }
}

/// Why a plugin may not run with what it was granted: the permissions and
/// secret names it declares beyond the grant, and the reason shown to the
/// operator.
pub(crate) fn ungranted(meta: &PluginMeta, granted: &Granted) -> Option<(Vec<String>, String)> {
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

/// The entry of a plugin whose meta is valid: enabled when it was granted
/// everything it now declares, failed when it declares more, else disabled.
pub(crate) fn settled_status(
    meta: PluginMeta,
    file_hash: String,
    granted: Option<Granted>,
) -> Status {
    let (state, failure) = match &granted {
        None => (State::Disabled, None),
        Some(g) => match ungranted(&meta, g) {
            None => (State::Enabled, None),
            Some((_, reason)) => (State::Failed, Some(Failure::new(reason, None))),
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

/// The entry of a plugin that could not be loaded.
pub(crate) fn failed_status(reason: String, dump: Option<PathBuf>, file_hash: String) -> Status {
    Status {
        meta: None,
        file_hash,
        state: State::Failed,
        failure: Some(Failure::new(reason, dump)),
        granted: None,
        crashes: VecDeque::new(),
        crash_total: 0,
        duplicate: false,
    }
}

/// Every entry, by registry key. The lock is held only to read or swap
/// entries, never across an await.
#[derive(Debug)]
pub(crate) struct Registry {
    entries: RwLock<BTreeMap<String, Arc<Plugin>>>,
    /// Sizes each entry's pool (`workers`, `queue`, `max_workers`).
    config: Arc<Config>,
    /// Named when a plugin is unknown.
    plugins_dir: PathBuf,
}

impl Registry {
    pub(crate) fn new(config: Arc<Config>, plugins_dir: PathBuf) -> Registry {
        Registry {
            entries: RwLock::default(),
            config,
            plugins_dir,
        }
    }

    pub(crate) fn plugins_dir(&self) -> &Path {
        &self.plugins_dir
    }

    /// The entry of what was found in `plugins/FOLDER`, with a new pool,
    /// recorded in the audit log: every entry is made here. It is not
    /// installed: discovery and the watcher decide where it goes.
    pub(crate) fn entry(
        &self,
        key: String,
        folder: String,
        dir: PathBuf,
        status: Status,
    ) -> Arc<Plugin> {
        tracing::info!(
            target: "audit",
            event = "discovered",
            plugin = %key,
            folder = %folder,
            state = status.state.as_str(),
            reason = status.failure.as_ref().map(|f| f.reason.as_str()),
        );
        let pool = self.new_pool(&key);
        Arc::new(Plugin::new(key, folder, dir, status, pool))
    }

    /// A pool of the configured size for `key`, within `max_workers` given
    /// the pools of the other enabled plugins.
    pub(crate) fn new_pool(&self, key: &str) -> Arc<Pool> {
        let wanted = self.config.workers_for(key).max(1);
        let others: usize = self
            .all()
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

    /// The entry `name` names, or an error listing the known ones.
    pub(crate) fn lookup(&self, name: &str) -> Result<Arc<Plugin>, HostError> {
        if let Some(p) = self.get(name) {
            return Ok(p);
        }
        let known = self.keys();
        Err(HostError::UnknownPlugin(if known.is_empty() {
            format!(
                "unknown plugin '{name}': no plugin found under {}",
                self.plugins_dir.display()
            )
        } else {
            format!("unknown plugin '{name}' (known: {})", known.join(", "))
        }))
    }

    /// The names that reach an enabled plugin (its key, and the name its
    /// meta declares when another).
    pub(crate) fn enabled_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        for p in self.all() {
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

    /// The (name, folder) of every entry.
    pub(crate) fn taken(&self) -> Vec<(String, String)> {
        self.read()
            .values()
            .map(|p| (p.key.clone(), p.folder.clone()))
            .collect()
    }

    /// Every entry whose state is `enabled`.
    pub(crate) fn enabled(&self) -> Vec<Arc<Plugin>> {
        self.all()
            .into_iter()
            .filter(|p| p.status().state == State::Enabled)
            .collect()
    }

    /// Whether any plugin declares a secret.
    pub(crate) fn any_declares_secrets(&self) -> bool {
        self.all().iter().any(|p| {
            p.status()
                .meta
                .as_ref()
                .is_some_and(|m| !m.secrets.is_empty())
        })
    }
    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Plugin>>> {
        self.entries.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Arc<Plugin>>> {
        self.entries.write().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn get(&self, key: &str) -> Option<Arc<Plugin>> {
        self.read().get(key).cloned()
    }

    pub(crate) fn keys(&self) -> Vec<String> {
        self.read().keys().cloned().collect()
    }

    /// A snapshot of every entry.
    pub(crate) fn all(&self) -> Vec<Arc<Plugin>> {
        self.read().values().cloned().collect()
    }

    /// The entry of a `plugins/` folder.
    pub(crate) fn in_folder(&self, folder: &str) -> Option<Arc<Plugin>> {
        self.read().values().find(|p| p.folder == folder).cloned()
    }

    /// The entries that answer to `name`: its registry key, or the name
    /// their meta declares (duplicates are keyed by folder).
    pub(crate) fn declaring(&self, name: &str) -> Vec<Arc<Plugin>> {
        self.all()
            .into_iter()
            .filter(|p| p.key == name || p.status().meta.as_ref().is_some_and(|m| m.name == name))
            .collect()
    }

    /// Replaces every entry (discovery).
    pub(crate) fn set_all(&self, entries: BTreeMap<String, Arc<Plugin>>) {
        *self.write() = entries;
    }

    /// Puts `plugin` under its key, in place of `old` (a folder read again
    /// may now declare another name).
    pub(crate) fn replace(&self, old: Option<&str>, plugin: Arc<Plugin>) {
        let mut entries = self.write();
        if let Some(old) = old {
            entries.remove(old);
        }
        entries.insert(plugin.key.clone(), plugin);
    }

    pub(crate) fn remove(&self, key: &str) {
        self.write().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin() -> Plugin {
        let status = Status {
            meta: None,
            file_hash: String::new(),
            state: State::Enabled,
            failure: None,
            granted: Some(Granted::default()),
            crashes: VecDeque::new(),
            crash_total: 0,
            duplicate: false,
        };
        Plugin::new(
            "p".into(),
            "p".into(),
            PathBuf::from("/nonexistent"),
            status,
            Pool::new(1, 1),
        )
    }

    fn exit() -> Exit {
        Exit {
            description: "the worker exited with code 1".into(),
            dump: Some(PathBuf::from("/dumps/p-1.log")),
        }
    }

    #[test]
    fn backoff_doubles_with_recent_crashes() {
        let p = plugin();
        let window = Duration::from_secs(60);
        assert_eq!(p.restart_backoff(window), Duration::ZERO);
        p.record_crash(&exit(), 10, window);
        let first = p.restart_backoff(window);
        assert!(
            first > Duration::ZERO && first <= Duration::from_millis(100),
            "{first:?}"
        );
        p.record_crash(&exit(), 10, window);
        let second = p.restart_backoff(window);
        assert!(
            second > Duration::from_millis(100) && second <= Duration::from_millis(200),
            "{second:?}"
        );
        assert_eq!(p.status().state, State::Enabled);
    }

    #[test]
    fn crashes_outside_the_window_do_not_count() {
        let p = plugin();
        let window = Duration::from_secs(60);
        let start = Instant::now();
        p.record_crash_at(&exit(), 2, window, start);
        let later = start + Duration::from_secs(61);
        p.record_crash_at(&exit(), 2, window, later);
        assert_eq!(p.status().state, State::Enabled, "the first crash aged out");
        assert_eq!(
            p.restart_backoff_at(window, later + Duration::from_secs(61)),
            Duration::ZERO
        );
        let backoff = p.restart_backoff_at(window, later + Duration::from_millis(40));
        assert_eq!(
            backoff,
            Duration::from_millis(60),
            "100 ms after one recent crash, 40 ms of it spent"
        );
    }

    #[test]
    fn max_crashes_in_the_window_fail_the_plugin_with_the_last_dump() {
        let p = plugin();
        let window = Duration::from_secs(60);
        p.record_crash(&exit(), 2, window);
        p.record_crash(&exit(), 2, window);
        let s = p.status();
        assert_eq!(s.state, State::Failed);
        let failure = s.failure.as_ref().expect("failure");
        assert!(
            failure.reason.contains("crashed 2 times within 60 s"),
            "{}",
            failure.reason
        );
        assert_eq!(failure.dump, Some(PathBuf::from("/dumps/p-1.log")));
    }
}
