//! The launcher: a worker spawned for one plugin folder, sandboxed, in
//! the plugin's Python environment, with `plugin.py` imported and what it
//! declares judged. It owns what that takes (the interpreter, the jailer,
//! the environments, the SDK, the host services a worker calls, where
//! dumps go); discovery (worker stopped right after), `check` and the
//! lifecycle (worker kept) use it.

use crate::broker::{HttpSettings, NetAccess};
use crate::dump::{Dumps, Phase, exception_text};
use crate::envs::{Env, Envs};
use crate::error::HostError;
use crate::jail::{Access, Jailer};
use crate::python::Interpreter;
use crate::registry::{Failure, Plugin};
use crate::reply::{self, Ended};
use crate::secrets::SecretStore;
use crate::services::{Caller, Services};
use crate::supervision::{OnCrash, Supervised};
use greffon_core::{Config, Home, PluginMeta};
use greffon_protocol::method::{self, LoadParams, LoadResult};
use greffon_protocol::{ErrorKind, Output, WireError};
use greffon_sandbox::Support;
use greffon_worker::{SpawnSpec, Worker};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug)]
pub(crate) struct Launcher {
    config: Arc<Config>,
    /// The resolved interpreter (never a shim).
    python: Interpreter,
    /// Builds each worker's sandbox.
    jailer: Jailer,
    /// Builds and finds plugins' Python environments.
    envs: Envs,
    /// The SDK (`greffon` package) workers import.
    sdk_dir: PathBuf,
    /// What a worker's host calls reach.
    services: Arc<Services>,
    dumps: Dumps,
}

/// The folder a worker is launched for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Source<'a> {
    pub folder: &'a str,
    pub dir: &'a Path,
    /// The `[plugins.NAME]` table that applies: the registry name once
    /// known, else the folder's.
    pub config_name: &'a str,
}

impl<'a> Source<'a> {
    /// A folder not in the registry yet.
    pub(crate) fn folder(folder: &'a str, dir: &'a Path) -> Source<'a> {
        Source {
            folder,
            dir,
            config_name: folder,
        }
    }

    pub(crate) fn of(plugin: &'a Plugin) -> Source<'a> {
        Source {
            folder: &plugin.folder,
            dir: &plugin.dir,
            config_name: &plugin.key,
        }
    }
}

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
    /// [`Launcher::build_environment`]: built when missing.
    Build,
}

impl Launcher {
    /// The launcher of `home`: its SDK copy written, the scratch left by
    /// a previous run swept, the jailer built for what the kernel
    /// `support`s.
    pub(crate) fn open(
        home: &Home,
        config: Arc<Config>,
        python: Interpreter,
        support: Support,
        dumps: Dumps,
    ) -> Result<Launcher, HostError> {
        crate::jail::sweep_stale_scratch(&home.tmp_root());
        let sdk_root = home.sdk_root();
        let sdk_dir =
            greffon_worker::sdk::materialize(&sdk_root).map_err(|source| HostError::Sdk {
                path: sdk_root,
                source,
            })?;
        let jailer =
            Jailer::new(home, &config, &python, &sdk_dir, support).map_err(|e| HostError::Io {
                context: "cannot build the no-exec filter".into(),
                source: std::io::Error::other(e),
            })?;
        let services = Arc::new(Services {
            sys_root: PathBuf::from("/"),
            http: HttpSettings {
                max_response_bytes: config.http_max_response_bytes,
                timeout: Duration::from_secs_f64(config.http_timeout_s),
            },
            secrets: SecretStore::open(home.root(), &home.secrets_file(), config.secrets.store),
            extra: Default::default(),
        });
        Ok(Launcher {
            envs: Envs::new(home, &config, &python),
            config,
            python,
            jailer,
            sdk_dir,
            services,
            dumps,
        })
    }

    pub(crate) fn jailer(&self) -> &Jailer {
        &self.jailer
    }

    pub(crate) fn python(&self) -> &Interpreter {
        &self.python
    }

    pub(crate) fn services(&self) -> &Arc<Services> {
        &self.services
    }

    pub(crate) fn dumps(&self) -> &Dumps {
        &self.dumps
    }

    fn spawn_spec(&self, label: &str, dir: &Path, env: Option<&Env>) -> SpawnSpec {
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
        source: Source<'_>,
        access: &Access,
        (phase, env_use): (Phase, EnvUse),
        on_crash: Option<OnCrash>,
    ) -> Result<Loaded, LoadError> {
        let Source { folder, dir, .. } = source;
        let script = dir.join("plugin.py");
        let file_hash = crate::dump::file_hash(&script);
        let label = access.name.as_deref().unwrap_or(folder);
        let (env, unbuilt) = self.environment(label, dir, &file_hash, env_use).await?;
        let worker = self
            .spawn_worker(folder, dir, access, env.as_ref(), &file_hash, on_crash)
            .await?;
        let result = self
            .import(&worker, source, &file_hash, phase)
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
            dumps_dir: self.dumps.dir().to_path_buf(),
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
                    let dump = self.dumps.write_error(
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
        source: Source<'_>,
        file_hash: &str,
        phase: Phase,
    ) -> Result<LoadResult, LoadError> {
        let folder = source.folder;
        let params = LoadParams {
            path: source.dir.join("plugin.py").to_string_lossy().into_owned(),
            folder: folder.to_string(),
            config: self.config.plugin_config(source.config_name),
            capture_limit: self.config.capture_limit_bytes,
            max_result_bytes: self.config.max_result_bytes,
        };
        let import_timeout = Duration::from_secs_f64(self.config.default_timeout_s);
        match reply::request(worker, method::LOAD, &params, import_timeout).await {
            Ended::Returned(v, _) => serde_json::from_value::<LoadResult>(v).map_err(|e| {
                LoadError::one(
                    format!("the worker answered a malformed load result: {e}"),
                    None,
                )
            }),
            Ended::Raised(e, output) => {
                let dump = (e.kind == ErrorKind::Exception)
                    .then(|| {
                        self.dumps
                            .write_error(folder, file_hash, phase, None, &e, output)
                    })
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
            Ended::Abandoned(_) => {
                let reason = format!(
                    "importing plugin.py did not finish within {} s",
                    import_timeout.as_secs_f64()
                );
                let exit = worker.kill_and_wait(&reason).await;
                Err(LoadError::one(reason, exit.dump.clone()))
            }
        }
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
