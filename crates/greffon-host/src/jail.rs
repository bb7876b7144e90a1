//! What a worker may do, turned into its sandbox: the permissions and
//! paths a plugin was granted, its limits, and its private temp folder.

use crate::python::Interpreter;
use crate::registry::Granted;
use greffon_core::{Allowlist, Config, Home, Permission, PluginMeta, SandboxMode};
use greffon_protocol::api::AccessInfo;
use greffon_sandbox::paths::{self, Protected, Use};
use greffon_sandbox::{Grant, Limits, Profile, Sandbox, Support};
use greffon_worker::Jail;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Folders every worker reads besides the interpreter's own: shared
/// libraries, time zones, locales.
const SYSTEM_READ: &[&str] = &[
    "/usr/lib",
    "/usr/lib64",
    "/lib",
    "/lib64",
    "/usr/share/zoneinfo",
    "/usr/share/locale",
    "/etc/ld.so.cache",
    "/etc/localtime",
];

/// ELF loaders: the kernel opens the interpreter's loader with exec rights.
const LOADERS: &[&str] = &[
    "/lib64/ld-linux-x86-64.so.2",
    "/lib/ld-linux-aarch64.so.1",
    "/lib/ld-musl-x86_64.so.1",
];

/// What one worker is granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Access {
    /// Registry name: names the default data folder.
    pub name: Option<String>,
    pub permissions: Vec<Permission>,
    pub read: Vec<String>,
    pub write: Vec<String>,
    pub limits: Limits,
    /// The effective allowlist, when `net` is granted.
    pub net: Option<Allowlist>,
    /// Secret names it declares and was granted: what `greffon.secret()`
    /// may read.
    pub secrets: Vec<String>,
}

impl Access {
    /// Discovery and `check`: nothing at all, since importing `plugin.py`
    /// runs its module-level code before any permission is granted.
    pub(crate) fn none() -> Access {
        Access {
            name: None,
            permissions: Vec::new(),
            read: Vec::new(),
            write: Vec::new(),
            limits: Limits::default(),
            net: None,
            secrets: Vec::new(),
        }
    }

    /// What `meta` declares, within `granted`, with the limits of the
    /// config (which wins) or the meta.
    pub(crate) fn for_plugin(meta: &PluginMeta, granted: &Granted, config: &Config) -> Access {
        let permissions: Vec<Permission> = meta
            .permissions
            .iter()
            .copied()
            .filter(|p| granted.permissions.contains(p))
            .collect();
        let secrets = meta
            .secrets
            .iter()
            .filter(|s| granted.secrets.contains(s))
            .cloned()
            .collect();
        let has = |p| permissions.contains(&p);
        let pc = config.plugins.get(&meta.name);
        let d = Limits::default();
        let limits = Limits {
            memory_mb: pc
                .and_then(|c| c.memory_mb)
                .or(meta.limits.memory_mb)
                .unwrap_or(d.memory_mb),
            cpu_s: pc
                .and_then(|c| c.cpu_s)
                .or(meta.limits.cpu_s)
                .unwrap_or(d.cpu_s),
            max_open_files: pc
                .and_then(|c| c.max_open_files)
                .or(meta.limits.max_open_files)
                .unwrap_or(d.max_open_files),
            max_file_mb: pc.and_then(|c| c.max_file_mb).unwrap_or(d.max_file_mb),
        };
        Access {
            name: Some(meta.name.clone()),
            read: if has(Permission::FsRead) {
                meta.paths_read.clone()
            } else {
                Vec::new()
            },
            write: if has(Permission::FsWrite) {
                meta.paths_write.clone()
            } else {
                Vec::new()
            },
            net: has(Permission::Net).then(|| {
                let own = config.plugin_allowlist(&meta.name);
                Allowlist::effective(
                    config.global_allowlist().as_deref(),
                    own.as_deref().or(meta.allowlist.as_deref()),
                )
            }),
            permissions,
            limits,
            secrets,
        }
    }

    fn has(&self, p: Permission) -> bool {
        self.permissions.contains(&p)
    }
}

/// What the host must never grant, from the home's layout.
fn protected(home: &greffon_core::Home, config_file: &Path, python_roots: &[PathBuf]) -> Protected {
    let mut exact = vec![
        (PathBuf::from("/"), "the root folder"),
        (home.root().to_path_buf(), "the greffon home"),
    ];
    if let Some(user_home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        exact.push((PathBuf::from(user_home), "your home folder"));
    }
    let mut no_write: Vec<(PathBuf, &'static str)> = vec![
        (home.plugins_dir(), "the plugins' code"),
        (home.envs_dir(), "the plugins' environments"),
    ];
    no_write.extend(
        python_roots
            .iter()
            .map(|r| (r.clone(), "the Python runtime")),
    );
    let db = home.db_file();
    let with_suffix = |s: &str| {
        let mut p = db.clone().into_os_string();
        p.push(s);
        PathBuf::from(p)
    };
    let no_access = vec![
        (
            home.app_dir(),
            "greffon's own state (SDK, token, temp folders)",
        ),
        (home.logs_dir().to_path_buf(), "greffon's logs"),
        // Inside app/ today; named on its own so that it stays protected
        // wherever the store moves.
        (home.secrets_file(), "greffon's secret store"),
        (db.clone(), "greffon's database"),
        (with_suffix("-wal"), "greffon's database"),
        (with_suffix("-shm"), "greffon's database"),
        (config_file.to_path_buf(), "greffon's configuration"),
    ];
    Protected {
        exact,
        no_write,
        no_access,
    }
}

/// Tells spawns apart in temp folder names.
static SPAWNS: AtomicU64 = AtomicU64::new(0);

/// What every worker's sandbox is built from: this module's own state.
#[derive(Debug)]
pub(crate) struct Jailer {
    home: Home,
    config: Config,
    /// The interpreter's files (read, and its binary executed).
    python: Interpreter,
    sdk_dir: PathBuf,
    /// What the kernel offers.
    support: Support,
    /// The bootstrap's no-exec seccomp filter (hex).
    noexec: String,
    /// Paths no plugin may be granted.
    protected: Protected,
}

impl Jailer {
    /// The jailer of a home; fails only when the no-exec filter cannot be
    /// compiled.
    pub(crate) fn new(
        home: &Home,
        config: &Config,
        python: &Interpreter,
        sdk_dir: &Path,
        support: Support,
    ) -> Result<Jailer, String> {
        let noexec = greffon_sandbox::noexec_program_hex().map_err(|e| e.to_string())?;
        Ok(Jailer {
            protected: protected(home, &Home::config_file(home.root()), &python.read_roots),
            home: home.clone(),
            config: config.clone(),
            python: python.clone(),
            sdk_dir: sdk_dir.to_path_buf(),
            support,
            noexec,
        })
    }

    pub(crate) fn support(&self) -> Support {
        self.support
    }

    /// What `meta`'s declared permissions would reach, for display.
    pub(crate) fn access_info(&self, meta: &PluginMeta) -> AccessInfo {
        let a = Access::for_plugin(meta, &Granted::declared(meta), &self.config);
        let shown = |declared: &[String], granted: bool| -> Vec<String> {
            match (granted, declared.is_empty()) {
                (false, _) => Vec::new(),
                (true, true) => vec![format!("data/{}", meta.name)],
                (true, false) => declared.to_vec(),
            }
        };
        AccessInfo {
            network: a.net.as_ref().map(Allowlist::entries),
            read: shown(&a.read, a.has(Permission::FsRead)),
            write: shown(&a.write, a.has(Permission::FsWrite)),
            limits: [
                ("memory_mb", a.limits.memory_mb),
                ("cpu_s", a.limits.cpu_s),
                ("max_open_files", a.limits.max_open_files),
                ("max_file_mb", a.limits.max_file_mb),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        }
    }

    /// What is wrong with the paths `meta` declares, without touching the
    /// file system beyond looking: `check` reports it before an enable
    /// would fail on it.
    pub(crate) fn path_problems(&self, meta: &PluginMeta) -> Vec<String> {
        let mut problems = Vec::new();
        for (declared, usage) in meta
            .paths_read
            .iter()
            .map(|d| (d, Use::Read))
            .chain(meta.paths_write.iter().map(|d| (d, Use::Write)))
        {
            let what = format!("meta.paths.{}", usage.as_str());
            let checked = paths::absolute(self.home.root(), declared)
                .and_then(|p| self.protected.check(&p, usage).map(|()| p));
            match checked {
                Err(e) => problems.push(format!("{what}: {e}")),
                Ok(p) if p.is_symlink() => problems.push(format!(
                    "{what}: '{}' is a symlink; declare the real path",
                    p.display()
                )),
                Ok(p) if !p.exists() && !p.starts_with(self.home.root()) => {
                    problems.push(format!("{what}: '{}' does not exist", p.display()))
                }
                Ok(_) => {}
            }
        }
        problems
    }

    /// Builds the sandbox of a worker for the plugin in `dir` (`label` names
    /// it in messages). Any path problem refuses the spawn with a message
    /// naming the path and why.
    pub(crate) fn jail(
        &self,
        label: &str,
        dir: &Path,
        access: &Access,
        env: Option<&Path>,
    ) -> Result<Jail, String> {
        let tmp_root = self.home.tmp_root();
        let scratch = tmp_root.join(format!(
            "{}-{label}-{}",
            std::process::id(),
            SPAWNS.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&scratch)
            .map_err(|e| format!("cannot create its temp folder {}: {e}", scratch.display()))?;
        if self.config.sandbox == SandboxMode::Off {
            return Ok(Jail {
                sandbox: Sandbox::off(access.limits),
                scratch,
                noexec: None,
            });
        }
        let fail = |e: String| {
            let _ = std::fs::remove_dir_all(&scratch);
            e
        };
        let (read, mut write) = self.grants(access).map_err(&fail)?;
        let scratch_fd = paths::open_no_symlinks(&scratch).map_err(|e| fail(e.message))?;
        write.push(Grant {
            path: scratch.clone(),
            fd: scratch_fd,
        });
        // A runtime folder that holds greffon's own state (a venv made in
        // the home's parent, say) would expose it: refuse rather than run.
        for root in &self.python.read_roots {
            self.protected.check(root, Use::Read).map_err(|e| {
                fail(format!(
                    "the Python runtime must be readable by workers, but {e}; use an interpreter installed outside the greffon home"
                ))
            })?;
        }
        let mut runtime_read = self.python.read_roots.clone();
        runtime_read.push(self.sdk_dir.clone());
        runtime_read.push(dir.to_path_buf());
        // The plugin's environment: read (and its packages' libraries
        // loaded), never written.
        runtime_read.extend(env.map(Path::to_path_buf));
        runtime_read.extend(SYSTEM_READ.iter().map(PathBuf::from));
        let mut exec = vec![self.python.real.clone()];
        exec.extend(LOADERS.iter().map(PathBuf::from));
        let profile = Profile {
            runtime_read,
            exec,
            read,
            write,
            process: access.has(Permission::Process),
            limits: access.limits,
        };
        let sandbox = Sandbox::prepare(&profile, self.support).map_err(|e| {
            fail(format!(
                "{e}; run `greffon doctor` for details (sandbox = \"off\" in greffon.toml runs plugins without isolation)"
            ))
        })?;
        Ok(Jail {
            sandbox,
            scratch,
            noexec: (!access.has(Permission::Process)).then(|| self.noexec.clone()),
        })
    }

    /// Opens the granted paths, refusing protected ones and symlinks.
    fn grants(&self, access: &Access) -> Result<(Vec<Grant>, Vec<Grant>), String> {
        let root = self.home.root();
        let default = access.name.as_ref().map(|n| self.home.data_dir(n));
        let open = |declared: &[String], usage: Use, granted: bool| {
            let mut out = Vec::new();
            if !granted {
                return Ok(out);
            }
            let paths: Vec<(PathBuf, String)> = if declared.is_empty() {
                default
                    .iter()
                    .map(|d| (d.clone(), "data folder".to_string()))
                    .collect()
            } else {
                declared
                    .iter()
                    .map(|d| {
                        paths::absolute(root, d)
                            .map(|p| (p, format!("meta.paths.{}", usage.as_str())))
                            .map_err(|e| format!("meta.paths.{}: {e}", usage.as_str()))
                    })
                    .collect::<Result<_, _>>()?
            };
            for (path, what) in paths {
                self.protected
                    .check(&path, usage)
                    .map_err(|e| format!("{what}: {e}"))?;
                // The plugin's own folders under the home are created for
                // it; elsewhere a missing path is an error.
                if path.starts_with(root) && !path.exists() {
                    std::fs::create_dir_all(&path)
                        .map_err(|e| format!("{what}: cannot create '{}': {e}", path.display()))?;
                }
                let fd = paths::open_no_symlinks(&path).map_err(|e| format!("{what}: {e}"))?;
                out.push(Grant { path, fd });
            }
            Ok::<_, String>(out)
        };
        let read = open(&access.read, Use::Read, access.has(Permission::FsRead))?;
        let write = open(&access.write, Use::Write, access.has(Permission::FsWrite))?;
        Ok((read, write))
    }
}

/// Removes temp folders left by greffon processes that are gone (a host
/// killed before its workers' exit could clean up).
pub(crate) fn sweep_stale_scratch(tmp_root: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp_root) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.split('-').next())
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: signal 0 only checks that the process exists.
        let alive = pid > 0 && unsafe { libc::kill(pid, 0) } == 0;
        if !alive {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}
