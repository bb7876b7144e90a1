//! A plugin's lifecycle: enable (grant and start its pool), disable, hot
//! reload with rollback, the file watcher's changes, start-up and
//! shutdown, and starting one worker (load, sandbox matching the meta,
//! `start()`).

use crate::discovery::{Discovery, is_plugin_folder};
use crate::dump::{Phase, exception_text};
use crate::error::HostError;
use crate::jail::Access;
use crate::launcher::{EnvUse, Launcher, Loaded, Source};
use crate::registry::{Failure, Granted, Plugin, Registry, ungranted};
use crate::reply::{self, Ended, log_output};
use crate::signals::Signals;
use crate::store::Store;
use crate::supervision::OnCrash;
use futures_util::future::join_all;
use greffon_core::{Config, PluginMeta};
use greffon_protocol::api::State;
use greffon_protocol::method;
use greffon_protocol::{ErrorKind, WireError};
use greffon_worker::{Checkout, Pool, Ticket, Worker};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug)]
pub(crate) struct Lifecycle {
    config: Arc<Config>,
    registry: Arc<Registry>,
    launcher: Arc<Launcher>,
    /// Reads a changed folder again for the file watcher.
    discovery: Arc<Discovery>,
    /// Where the enabled set and grants are remembered.
    store: Store,
    signals: Arc<Signals>,
}

/// A worker whose plugin was loaded and started.
struct Started {
    worker: Arc<Worker>,
    meta: Arc<PluginMeta>,
    file_hash: String,
}

impl Lifecycle {
    pub(crate) fn new(
        config: Arc<Config>,
        registry: Arc<Registry>,
        launcher: Arc<Launcher>,
        discovery: Arc<Discovery>,
        store: Store,
        signals: Arc<Signals>,
    ) -> Lifecycle {
        Lifecycle {
            config,
            registry,
            launcher,
            discovery,
            store,
            signals,
        }
    }

    /// See [`crate::Host::enable`].
    pub(crate) async fn enable(&self, plugin: &Arc<Plugin>) -> Result<(), HostError> {
        let _one_change = plugin.changing.lock().await;
        let _announce = self.signals.change_on_drop();
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
        let pool = self.registry.new_pool(&plugin.key);
        let old = plugin.replace_pool(pool.clone());
        self.stop_pool(plugin, &old).await;
        let started = self.fill_pool(plugin, &pool, true, false).await;
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
                self.store.set_enabled(&plugin.key, &granted).await?;
                let names: Vec<&str> = granted.permissions.iter().map(|p| p.as_str()).collect();
                let reach = plugin
                    .status()
                    .meta
                    .as_deref()
                    .map(|m| self.launcher.jailer().access_info(m))
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
                Ok(())
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

    /// See [`crate::Host::sync_folder`].
    pub(crate) async fn sync_folder(&self, folder: &str) -> Result<String, HostError> {
        let _announce = self.signals.change_on_drop();
        let present = is_plugin_folder(folder, &self.registry.plugins_dir().join(folder));
        let existing = self.registry.in_folder(folder);
        match (existing, present) {
            (None, false) => Ok(format!("plugins/{folder}: nothing to do")),
            (Some(plugin), false) => self.remove(&plugin).await,
            (Some(plugin), true) if plugin.status().state == State::Enabled => self
                .reload(&plugin)
                .await
                .map(|()| format!("{}: reloaded", plugin.key)),
            (existing, true) => {
                // Held while the entry is read again and replaced, so an
                // enable cannot start a worker on the entry being dropped.
                let change = match &existing {
                    Some(p) => Some(p.changing.lock().await),
                    None => None,
                };
                if let Some(plugin) = existing
                    .as_ref()
                    .filter(|p| p.status().state == State::Enabled)
                {
                    // Enabled meanwhile: the change is a reload after all.
                    drop(change);
                    return (self.reload(plugin).await)
                        .map(|()| format!("{}: reloaded", plugin.key));
                }
                Ok(self.discovery.read_again(folder, existing.as_deref()).await)
            }
        }
    }

    /// A deleted folder's plugin: stopped and removed from the registry.
    async fn remove(&self, plugin: &Arc<Plugin>) -> Result<String, HostError> {
        let _one_change = plugin.changing.lock().await;
        plugin.status().state = State::Disabled;
        self.stop_pool(plugin, &plugin.pool()).await;
        self.registry.remove(&plugin.key);
        self.store.set_disabled(&plugin.key).await?;
        tracing::info!(target: "audit", event = "removed", plugin = %plugin.key, folder = %plugin.folder);
        Ok(format!(
            "{}: folder deleted; stopped and removed",
            plugin.key
        ))
    }

    /// See [`crate::Host::start_enabled`].
    pub(crate) async fn start_enabled(&self) {
        for plugin in self.registry.enabled() {
            let pool = plugin.pool();
            if let Err(f) = self.fill_pool(&plugin, &pool, false, false).await {
                tracing::warn!(target: "server", plugin = %plugin.key, "could not start: {}", f.reason);
            }
        }
    }

    /// See [`crate::Host::reload`].
    pub(crate) async fn reload(&self, plugin: &Arc<Plugin>) -> Result<(), HostError> {
        let _one_change = plugin.changing.lock().await;
        if plugin.status().state != State::Enabled {
            return Err(HostError::NotEnabled(format!(
                "plugin '{}' is not enabled, so there is nothing to reload; `greffon plugin enable {}` loads it as it is on disk",
                plugin.key, plugin.key
            )));
        }
        let pool = self.registry.new_pool(&plugin.key);
        match self.fill_pool(plugin, &pool, false, true).await {
            Ok(()) => {}
            Err(f) => {
                let dump = f.dump.clone().or_else(|| {
                    let hash = crate::dump::file_hash(&plugin.dir.join("plugin.py"));
                    self.launcher.dumps().write_error(
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
            self.config
                .timeout_for(&plugin.key, s.meta.as_ref().and_then(|m| m.timeout_s))
        };
        // `fill_pool` recorded the new meta; new calls now reach the new
        // workers, while the old ones finish what they have (bounded by
        // the calls' timeout) and are then stopped.
        let old = plugin.replace_pool(pool);
        tracing::info!(target: "audit", event = "reload", plugin = %plugin.key, outcome = "swapped");
        self.signals.changed();
        old.retire();
        let limit = Duration::from_secs_f64(old_timeout_s + self.config.kill_grace_s);
        let (workers, drained) = old.drain(limit).await;
        if !drained {
            tracing::warn!(target: "server", plugin = %plugin.key, "a replaced worker still had a call running after its timeout; stopping it");
        }
        join_all(workers.iter().map(|w| self.stop_worker(plugin, w))).await;
        Ok(())
    }

    /// See [`crate::Host::disable`].
    pub(crate) async fn disable(&self, plugin: &Arc<Plugin>) -> Result<(), HostError> {
        let _one_change = plugin.changing.lock().await;
        let _announce = self.signals.change_on_drop();
        // Refused from now on: a call waiting in the queue is answered
        // "disabled" rather than starting a worker.
        {
            let mut s = plugin.status();
            if s.state == State::Enabled {
                s.state = State::Disabled;
            }
        }
        let pool = self.registry.new_pool(&plugin.key);
        let old = plugin.replace_pool(pool);
        self.stop_pool(plugin, &old).await;
        {
            let mut s = plugin.status();
            s.granted = None;
            // Disabling fixes neither a broken file nor a shared name.
            if s.meta.is_some() && !s.duplicate {
                s.state = State::Disabled;
                s.failure = None;
            }
        }
        self.store.set_disabled(&plugin.key).await?;
        tracing::info!(target: "audit", event = "disable", plugin = %plugin.key);
        Ok(())
    }

    /// See [`crate::Host::shutdown`].
    pub(crate) async fn shutdown(&self) {
        let plugins = self.registry.all();
        join_all(plugins.iter().map(|p| async move {
            self.stop_pool(p, &p.pool()).await;
        }))
        .await;
        self.store.close().await;
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
        // The plugin's environment, built once for the whole pool before
        // any worker starts (calls wait in the queue meanwhile).
        if let Err(failure) = self.launcher.build_environment(plugin).await {
            give_up(plugin, pool, &failure, reloading);
            return Err(failure);
        }
        let tickets: Vec<Ticket> = (0..pool.size())
            .map_while(|_| match pool.checkout(false) {
                Checkout::Start(ticket) => Some(ticket),
                _ => None,
            })
            .collect();
        let starts = tickets.into_iter().map(|ticket| async move {
            let started = self
                .start_worker(plugin, granting, reloading, EnvUse::Built)
                .await;
            (ticket, started)
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
                give_up(plugin, pool, &failure, reloading);
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
    pub(crate) async fn activate(
        &self,
        plugin: &Arc<Plugin>,
        granting: bool,
    ) -> Result<Arc<Worker>, Failure> {
        match self
            .start_worker(plugin, granting, false, EnvUse::Built)
            .await
        {
            Ok(started) => {
                let mut s = plugin.status();
                s.meta = Some(started.meta);
                s.file_hash = started.file_hash;
                Ok(started.worker)
            }
            // A worker killed while it started (its death already counted
            // as a crash, which fails the plugin past `max_crashes`) leaves
            // the plugin enabled: the next call starts another. A plugin
            // whose import or start() fails is failed now.
            Err(failure) if failure.worker_died => Err(failure),
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
    /// under the `reload` phase; `env_use` says whether the plugin's
    /// environment may be built now.
    async fn start_worker(
        &self,
        plugin: &Arc<Plugin>,
        granting: bool,
        reloading: bool,
        env_use: EnvUse,
    ) -> Result<Started, Failure> {
        let (import_phase, start_phase) = if reloading {
            (Phase::Reload, Phase::Reload)
        } else {
            (Phase::Import, Phase::Start)
        };
        let loaded = self
            .load_matching(plugin, granting, (import_phase, env_use))
            .await?;
        self.run_start(plugin, loaded, start_phase).await
    }

    /// What a worker of `plugin` does when it crashes: the live views are
    /// told, and the registry counts the crash (which may fail the plugin).
    fn crash_counter(&self, plugin: &Arc<Plugin>) -> OnCrash {
        let weak = Arc::downgrade(plugin);
        let (max, window) = (
            self.config.max_crashes,
            Duration::from_secs_f64(self.config.crash_window_s),
        );
        let signals = self.signals.clone();
        Box::new(move |exit| {
            signals.incident();
            if let Some(p) = weak.upgrade()
                && p.record_crash(exit, max, window)
            {
                signals.changed();
            }
        })
    }

    /// Loads `plugin.py` in a new worker whose sandbox matches what the
    /// file declares now: the sandbox comes from the meta seen at
    /// discovery, and if the file now declares other paths, limits or
    /// permissions, it is loaded once more in a sandbox that matches.
    /// Enable grants what the file declares; a restart keeps to what was
    /// granted, and refuses a file that asks for more.
    async fn load_matching(
        &self,
        plugin: &Arc<Plugin>,
        granting: bool,
        phase: (Phase, EnvUse),
    ) -> Result<Loaded, Failure> {
        let granted = plugin.status().granted.clone();
        let grant_for = |meta: &PluginMeta| -> Granted {
            match (&granted, granting) {
                (Some(g), false) => g.clone(),
                _ => Granted::declared(meta),
            }
        };
        let known = plugin.status().meta.clone();
        let mut access = known.as_ref().map_or_else(Access::none, |m| {
            Access::for_plugin(m, &grant_for(m), &self.config)
        });
        let mut attempts = 0;
        loop {
            attempts += 1;
            let crash_counter = Some(self.crash_counter(plugin));
            let loaded = match self
                .launcher
                .load(Source::of(plugin), &access, phase, crash_counter)
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
                    let failure = Failure::new(e.reason(), e.dump);
                    return Err(Failure {
                        worker_died: e.died,
                        ..failure
                    });
                }
            };
            let meta = &loaded.meta;
            let problem = if meta.name != plugin.key {
                Some(format!(
                    "plugin.py now declares the name '{}' instead of '{}'; restart greffon to rediscover it",
                    meta.name, plugin.key
                ))
            } else if granting {
                None
            } else {
                let granted = granted.clone().unwrap_or_default();
                ungranted(meta, &granted).map(|(extra, reason)| {
                    tracing::info!(target: "audit", event = "permission_escalation_refused", plugin = %plugin.key, requested = ?extra);
                    reason
                })
            };
            if let Some(reason) = problem {
                loaded.worker.shutdown(Duration::from_secs(1)).await;
                return Err(Failure::new(reason, None));
            }
            let wanted = Access::for_plugin(meta, &grant_for(meta), &self.config);
            if wanted == access {
                return Ok(loaded);
            }
            loaded.worker.shutdown(Duration::from_secs(1)).await;
            if attempts >= 3 {
                return Err(Failure::new(
                    "plugin.py kept changing while it was loaded; try again".into(),
                    None,
                ));
            }
            access = wanted;
        }
    }

    /// Runs `start()` in a loaded worker (bounded by the plugin's timeout);
    /// a worker whose `start()` fails is ended, with a dump.
    async fn run_start(
        &self,
        plugin: &Plugin,
        loaded: Loaded,
        phase: Phase,
    ) -> Result<Started, Failure> {
        let Loaded {
            worker,
            meta,
            file_hash,
        } = loaded;
        let meta = Arc::new(meta);
        let timeout = Duration::from_secs_f64(self.config.timeout_for(&plugin.key, meta.timeout_s));
        let failure = match reply::request(&worker, method::START, &Value::Null, timeout).await {
            Ended::Returned(_, output) => {
                log_output(&plugin.key, output.as_ref());
                return Ok(Started {
                    worker,
                    meta,
                    file_hash,
                });
            }
            Ended::Raised(e, output) => {
                let dump = self.launcher.dumps().write_error(
                    &plugin.key,
                    &file_hash,
                    phase,
                    None,
                    &e,
                    output,
                );
                Failure::new(format!("start() raised {}", exception_text(&e)), dump)
            }
            Ended::Died { delivered, exit } => {
                let reason = if delivered {
                    format!("its worker ended during start() ({})", exit.description)
                } else {
                    "its worker ended before start() could be called".into()
                };
                Failure::died(reason, exit.dump.clone())
            }
            Ended::Abandoned(_) => {
                let reason = format!("start() did not finish within {} s", timeout.as_secs_f64());
                let exit = worker.kill_and_wait(&reason).await;
                Failure::new(reason, exit.dump.clone())
            }
        };
        worker.shutdown(Duration::from_secs(1)).await;
        Err(failure)
    }

    /// Calls `stop()` (bounded), then ends the worker.
    async fn stop_worker(&self, plugin: &Plugin, worker: &Worker) {
        if worker.is_alive() {
            let timeout = Duration::from_secs_f64(self.config.stop_timeout_s);
            match reply::request(worker, method::STOP, &Value::Null, timeout).await {
                Ended::Raised(e, output) => {
                    let hash = plugin.status().file_hash.clone();
                    let dump = self.launcher.dumps().write_error(
                        &plugin.key,
                        &hash,
                        Phase::Stop,
                        None,
                        &e,
                        output,
                    );
                    tracing::warn!(target: "server", plugin = %plugin.key, dump = ?dump, "stop() raised {}", exception_text(&e));
                }
                Ended::Returned(_, output) => log_output(&plugin.key, output.as_ref()),
                Ended::Died { .. } => {}
                Ended::Abandoned(_) => {
                    tracing::warn!(target: "server", plugin = %plugin.key, "stop() did not finish within {} s; killing the worker", timeout.as_secs_f64());
                }
            }
        }
        worker.shutdown(Duration::from_secs(1)).await;
    }
}

/// A pool that could not be filled: retired, and unless `reloading`
/// (where the running version keeps serving), the plugin is `failed`.
fn give_up(plugin: &Plugin, pool: &Pool, failure: &Failure, reloading: bool) {
    if !reloading {
        let mut s = plugin.status();
        s.state = State::Failed;
        s.failure = Some(failure.clone());
    }
    pool.retire();
}
