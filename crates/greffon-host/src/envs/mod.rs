//! Plugins' Python environments: one virtual environment per distinct set
//! of requirements and interpreter, built with uv under `<home>/envs/`,
//! shared by every plugin that declares the same set, and only read by
//! workers.

mod build;
mod declared;

pub(crate) use declared::{Requirements, declared};

use crate::error::HostError;
use crate::python::Interpreter;
use greffon_core::{Config, Home};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The record written into a built environment: what it was built from.
const RECORD: &str = "greffon-env.json";

/// A built environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Env {
    pub key: String,
    pub dir: PathBuf,
}

impl Env {
    /// The interpreter workers of this environment run: the venv's own
    /// link, so that `sys.prefix` is the environment.
    pub(crate) fn python(&self) -> PathBuf {
        self.dir.join("bin").join("python")
    }
}

/// An environment on disk, for `greffon env list`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EnvInfo {
    pub key: String,
    pub path: PathBuf,
    /// What it was built from.
    pub requirements: Vec<String>,
    /// Bytes of its files.
    pub size_bytes: u64,
    /// Bytes of files no other link points at: what removing it frees
    /// (uv hard-links files from its cache when it can).
    pub own_bytes: u64,
    /// Plugin folders whose declared requirements name it now.
    pub used_by: Vec<String>,
}

/// Builds and finds environments for one home and interpreter.
#[derive(Debug)]
pub(crate) struct Envs {
    dir: PathBuf,
    python: Interpreter,
    uv: Option<PathBuf>,
    allow_build: bool,
    /// One build per key at a time in this process: two plugins with the
    /// same requirements enabled at once build their environment once.
    building: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Envs {
    pub(crate) fn new(home: &Home, config: &Config, python: &Interpreter) -> Envs {
        Envs {
            dir: home.envs_dir(),
            python: python.clone(),
            uv: config.python.uv.clone(),
            allow_build: config.python.allow_build,
            building: Mutex::new(HashMap::new()),
        }
    }

    /// Where the environment of `reqs` lives: a hash of the requirements
    /// (and the bytes of local files), the interpreter and whether source
    /// builds were allowed.
    pub(crate) fn key(&self, reqs: &Requirements) -> String {
        let mut h = Sha256::new();
        h.update(b"greffon-env 1\n");
        h.update(self.python.real.as_os_str().as_encoded_bytes());
        h.update(b"\n");
        h.update(self.python.version.as_bytes());
        h.update(if self.allow_build {
            "\nbuild\n"
        } else {
            "\nwheels\n"
        });
        reqs.digest(&mut h);
        let digest = h.finalize();
        digest[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The environment of `reqs` if it is built.
    pub(crate) fn existing(&self, reqs: &Requirements) -> Option<Env> {
        let key = self.key(reqs);
        let dir = self.dir.join(&key);
        dir.join(RECORD).is_file().then_some(Env { key, dir })
    }

    /// The environment of `reqs`, built first if it is not (`plugin` names
    /// who asked, in the logs). The error is uv's message, or why uv could
    /// not run.
    pub(crate) async fn ensure(
        &self,
        reqs: &Requirements,
        plugin: &str,
    ) -> Result<Env, BuildError> {
        if let Some(env) = self.existing(reqs) {
            return Ok(env);
        }
        let key = self.key(reqs);
        let lock = self
            .building
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.clone())
            .or_default()
            .clone();
        let _one_build = lock.lock().await;
        if let Some(env) = self.existing(reqs) {
            return Ok(env);
        }
        let uv = self.uv().map_err(|message| BuildError {
            message,
            log: String::new(),
        })?;
        let dir = self.dir.join(&key);
        build::build(&build::Plan {
            uv: &uv,
            python: &self.python.exe,
            reqs,
            dest: &dir,
            allow_build: self.allow_build,
            plugin,
        })
        .await?;
        Ok(Env { key, dir })
    }

    /// The uv to run: `[python] uv`, else `uv` on `PATH`.
    pub(crate) fn uv(&self) -> Result<PathBuf, String> {
        find_uv(self.uv.as_deref())
    }

    /// Every built environment, with the plugin folders of `plugins_dir`
    /// that use it.
    pub(crate) fn list(&self, plugins_dir: &Path) -> Vec<EnvInfo> {
        let users = self.users(plugins_dir);
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out: Vec<EnvInfo> = entries
            .flatten()
            .filter_map(|e| {
                let key = e.file_name().into_string().ok()?;
                let record: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(e.path().join(RECORD)).ok()?).ok()?;
                let requirements = record["requirements"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|r| r.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                let (size_bytes, own_bytes) = disk_use(&e.path());
                Some(EnvInfo {
                    used_by: users.get(&key).cloned().unwrap_or_default(),
                    key,
                    path: e.path(),
                    requirements,
                    size_bytes,
                    own_bytes,
                })
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    /// Removes the environments no plugin folder declares now, and what an
    /// interrupted build left; returns those removed.
    pub(crate) fn prune(&self, plugins_dir: &Path) -> Result<Vec<EnvInfo>, std::io::Error> {
        let unused: Vec<EnvInfo> = self
            .list(plugins_dir)
            .into_iter()
            .filter(|e| e.used_by.is_empty())
            .collect();
        for e in &unused {
            std::fs::remove_dir_all(&e.path)?;
        }
        build::sweep_stale(&self.dir);
        Ok(unused)
    }

    /// Which environment key each plugin folder's requirements name.
    fn users(&self, plugins_dir: &Path) -> HashMap<String, Vec<String>> {
        let mut users: HashMap<String, Vec<String>> = HashMap::new();
        let Ok(entries) = std::fs::read_dir(plugins_dir) else {
            return users;
        };
        let mut folders: Vec<(String, PathBuf)> = entries
            .flatten()
            .filter_map(|e| Some((e.file_name().into_string().ok()?, e.path())))
            .filter(|(_, p)| p.join("plugin.py").is_file())
            .collect();
        folders.sort();
        for (name, path) in folders {
            if let Ok(Some(reqs)) = declared(&path) {
                users.entry(self.key(&reqs)).or_default().push(name);
            }
        }
        users
    }
}

/// The environments of the home at `root` (`greffon env list`), each with
/// the plugin folders that declare it now.
pub fn environments(root: &Path, config: &Config) -> Result<Vec<EnvInfo>, HostError> {
    let (envs, home) = open(root, config)?;
    Ok(envs.list(&home.plugins_dir()))
}

/// Removes the environments no plugin folder declares now (`greffon env
/// prune`); returns those removed.
pub fn prune_environments(root: &Path, config: &Config) -> Result<Vec<EnvInfo>, HostError> {
    let (envs, home) = open(root, config)?;
    envs.prune(&home.plugins_dir())
        .map_err(|source| HostError::Io {
            context: format!(
                "cannot remove an environment under {}",
                home.envs_dir().display()
            ),
            source,
        })
}

/// The requirements `plugins/<folder>` declares whose environment is not
/// built yet: what enabling it will install (`None`: nothing to build).
pub fn unbuilt_requirements(root: &Path, config: &Config, folder: &str) -> Option<Vec<String>> {
    let (envs, home) = open(root, config).ok()?;
    let reqs = declared(&home.plugins_dir().join(folder)).ok()??;
    envs.existing(&reqs).is_none().then_some(reqs.lines)
}

/// The uv greffon would run and its version, for `doctor`.
pub fn uv_facts(config: &Config) -> Result<(PathBuf, String), String> {
    let uv = find_uv(config.python.uv.as_deref())?;
    let out = std::process::Command::new(&uv)
        .arg("--version")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", uv.display()))?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Ok((uv, version))
}

fn open(root: &Path, config: &Config) -> Result<(Envs, Home), HostError> {
    let home = Home::new(root, config);
    let python = crate::python::resolve_cached(
        config.python.path.as_deref(),
        &home.app_dir().join("python.json"),
    )
    .map_err(HostError::Python)?;
    Ok((Envs::new(&home, config, &python), home))
}

/// Why an environment could not be built.
#[derive(Debug, Clone)]
pub(crate) struct BuildError {
    /// One paragraph: uv's error (naming the package) or why uv did not run.
    pub message: String,
    /// Everything uv printed, for the crash dump.
    pub log: String,
}

/// `configured`, else `uv` on `PATH`.
pub(crate) fn find_uv(configured: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(p) = configured {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(format!("[python] uv = '{}' is not a file", p.display()))
        };
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("uv"))
                .find(|p| p.is_file())
        })
        .ok_or_else(|| {
            "uv is not installed (not on PATH, and [python] uv is unset): install it with `pip install uv` or scripts/build-deps".to_string()
        })
}

/// Bytes of the files under `dir`, and of those with a single link.
fn disk_use(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let (mut all, mut own) = (0, 0);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.path().symlink_metadata() else {
                continue;
            };
            if m.is_dir() {
                stack.push(e.path());
            } else if m.is_file() {
                all += m.len();
                if m.nlink() == 1 {
                    own += m.len();
                }
            }
        }
    }
    (all, own)
}
