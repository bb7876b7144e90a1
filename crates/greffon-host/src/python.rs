//! Finding the interpreter that runs workers, and what of the file system
//! it needs to start.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The resolved interpreter.
#[derive(Debug, Clone)]
pub(crate) struct Interpreter {
    /// What workers run (never a shim; a venv's own link, so the venv
    /// keeps its site-packages).
    pub exe: PathBuf,
    /// The binary behind `exe`, which the sandbox lets the worker execute.
    pub real: PathBuf,
    /// `sys.version`, first word.
    pub version: String,
    /// Prefixes and `sys.path` folders: read-only in the sandbox.
    pub read_roots: Vec<PathBuf>,
}

/// Where the interpreter came from, for messages.
fn candidate(configured: Option<&Path>) -> (PathBuf, &'static str) {
    if let Some(p) = configured {
        return (p.to_path_buf(), "config key `python`");
    }
    if let Some(p) = std::env::var_os("GREFFON_PYTHON").filter(|p| !p.is_empty()) {
        return (PathBuf::from(p), "GREFFON_PYTHON");
    }
    (PathBuf::from("python3"), "python3 on PATH")
}

fn search_path(name: &Path) -> Option<PathBuf> {
    if name.components().count() > 1 || name.is_absolute() {
        return Some(name.to_path_buf());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// Asks the interpreter (once per host, with `-I` as workers run) for its
/// executable, version, prefixes and import path.
const FACTS: &str = "import sys, json; print(json.dumps([sys.executable, sys.version.split()[0], \
    [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix] + sys.path]))";

/// Resolves the interpreter once. A script (a pyenv shim costs ~70 ms per
/// start) is replaced by the `sys.executable` it reports.
pub(crate) fn resolve(configured: Option<&Path>) -> Result<Interpreter, String> {
    let (name, source) = candidate(configured);
    let path = search_path(&name).filter(|p| p.is_file()).ok_or_else(|| {
        format!(
            "Python interpreter '{}' ({source}) not found",
            name.display()
        )
    })?;
    let is_script = std::fs::read(&path)
        .map(|b| b.get(..2) == Some(b"#!"))
        .map_err(|e| format!("cannot read Python interpreter '{}': {e}", path.display()))?;
    let out = Command::new(&path)
        .args(["-I", "-c", FACTS])
        .output()
        .map_err(|e| format!("cannot run Python interpreter '{}': {e}", path.display()))?;
    let facts: Option<(String, String, Vec<String>)> = out
        .status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten();
    let Some((exe, version, roots)) = facts else {
        return Err(format!(
            "Python interpreter '{}' ({source}) did not report its executable: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    };
    let exe = if is_script { PathBuf::from(exe) } else { path };
    let real = std::fs::canonicalize(&exe)
        .map_err(|e| format!("cannot resolve Python interpreter '{}': {e}", exe.display()))?;
    let read_roots = roots
        .into_iter()
        .filter(|r| !r.is_empty())
        .map(PathBuf::from)
        .filter(|p| p.is_absolute() && p.exists())
        .collect();
    Ok(Interpreter {
        exe,
        real,
        version,
        read_roots,
    })
}
