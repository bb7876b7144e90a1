//! Loading `plugin.py` in a worker and judging what it declares: used by
//! discovery (worker stopped right after), `check`, and enable (worker
//! kept).

use crate::broker::NetAccess;
use crate::dump::Phase;
use crate::host::{Inner, exception_text};
use crate::jail::Access;
use crate::services::Caller;
use crate::supervision::{OnCrash, Supervised};
use greffon_core::PluginMeta;
use greffon_protocol::method::{self, LoadParams, LoadResult};
use greffon_protocol::{ErrorKind, ResponseBody};
use greffon_worker::{Reply, SpawnSpec, Worker};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Why a plugin could not be loaded: every problem found, and the dump.
#[derive(Debug, Clone)]
pub(crate) struct LoadError {
    pub problems: Vec<String>,
    pub dump: Option<PathBuf>,
    /// `meta["name"]` when the worker reported a usable one.
    pub name: Option<String>,
    /// The worker's sandbox could not be built (the plugin never ran).
    pub sandbox: bool,
}

impl LoadError {
    pub(crate) fn one(problem: String, dump: Option<PathBuf>) -> LoadError {
        LoadError {
            problems: vec![problem],
            dump,
            name: None,
            sandbox: false,
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

impl Inner {
    pub(crate) fn spawn_spec(&self, label: &str, dir: &Path) -> SpawnSpec {
        SpawnSpec {
            python: self.python.exe.clone(),
            sdk_dir: self.sdk_dir.clone(),
            plugin: label.to_string(),
            plugin_dir: dir.to_path_buf(),
            // Results are bounded by max_result_bytes; frames also carry
            // the captured output and the envelope.
            max_frame: self.config.max_result_bytes
                + 2 * self.config.capture_limit_bytes
                + (64 << 10),
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
        phase: Phase,
        on_crash: Option<OnCrash>,
    ) -> Result<Loaded, LoadError> {
        let script = dir.join("plugin.py");
        let file_hash = crate::dump::file_hash(&script);
        let label = access.name.as_deref().unwrap_or(folder);
        let jail = self.jail(label, dir, access).map_err(|e| LoadError {
            sandbox: true,
            ..LoadError::one(format!("cannot sandbox its worker: {e}"), None)
        })?;
        let spec = self.spawn_spec(folder, dir);
        let supervisor = Arc::new(Supervised {
            caller: Arc::new(Caller {
                plugin: label.to_string(),
                python_version: self.python.version.clone(),
                net: access.net.clone().map(NetAccess::new),
                secrets: access.secrets.clone(),
            }),
            services: self.services.clone(),
            dumps_dir: self.home.dumps_dir(),
            file_hash: file_hash.clone(),
            on_crash,
        });
        let worker = Worker::spawn(spec, jail, supervisor).await.map_err(|e| {
            let mut problem = format!("cannot start its worker: {}", e.message);
            if !e.stderr.trim().is_empty() {
                problem.push_str(&format!(" ({})", last_line(&e.stderr)));
            }
            LoadError::one(problem, None)
        })?;
        let params = LoadParams {
            path: script.to_string_lossy().into_owned(),
            folder: folder.to_string(),
            config: self.config.plugin_config(&self.config_name_for(folder)),
            capture_limit: self.config.capture_limit_bytes,
            max_result_bytes: self.config.max_result_bytes,
        };
        let import_timeout = Duration::from_secs_f64(self.config.default_timeout_s);
        let reply = worker
            .request(method::LOAD, &params, None, import_timeout)
            .await;
        let result = match reply {
            Ok(Reply::Response {
                body: ResponseBody::Ok(v),
                ..
            }) => serde_json::from_value::<LoadResult>(v).map_err(|e| {
                LoadError::one(
                    format!("the worker answered a malformed load result: {e}"),
                    None,
                )
            }),
            Ok(Reply::Response {
                body: ResponseBody::Err(e),
                output,
            }) => {
                let dump = (e.kind == ErrorKind::Exception)
                    .then(|| self.write_dump(folder, &file_hash, phase, None, &e, output))
                    .flatten();
                Err(LoadError::one(
                    format!("importing plugin.py raised {}", exception_text(&e)),
                    dump,
                ))
            }
            Ok(Reply::NotDelivered) => {
                let exit = worker.wait_exit().await;
                Err(LoadError::one(
                    format!("{} before plugin.py was imported", exit.description),
                    exit.dump.clone(),
                ))
            }
            Ok(Reply::Gone(exit)) => Err(LoadError::one(
                format!("{} while importing plugin.py", exit.description),
                exit.dump.clone(),
            )),
            Err(_) => {
                let reason = format!(
                    "importing plugin.py did not finish within {} s",
                    import_timeout.as_secs_f64()
                );
                let exit = worker.kill_and_wait(&reason).await;
                Err(LoadError::one(reason, exit.dump.clone()))
            }
        };
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

    /// Which `[plugins.NAME]` table applies to a folder: the registry name
    /// once known, else the folder name.
    fn config_name_for(&self, folder: &str) -> String {
        let plugins = self.plugins.read().unwrap_or_else(|p| p.into_inner());
        plugins
            .values()
            .find(|p| p.folder == folder)
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
        }),
    }
}
