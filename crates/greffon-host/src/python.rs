//! Finding the interpreter that runs workers.

use std::path::{Path, PathBuf};
use std::process::Command;

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

/// Resolves the interpreter once. A script (a pyenv shim costs ~70 ms per
/// start) is asked for its real `sys.executable`; a binary or a venv's
/// symlink is kept as is, so a venv keeps its site-packages.
pub(crate) fn resolve(configured: Option<&Path>) -> Result<PathBuf, String> {
    let (name, source) = candidate(configured);
    let path = search_path(&name).filter(|p| p.is_file()).ok_or_else(|| {
        format!(
            "Python interpreter '{}' ({source}) not found",
            name.display()
        )
    })?;
    let head = std::fs::read(&path)
        .map(|b| b.get(..2) == Some(b"#!"))
        .map_err(|e| format!("cannot read Python interpreter '{}': {e}", path.display()))?;
    if !head {
        return Ok(path);
    }
    let out = Command::new(&path)
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .map_err(|e| format!("cannot run Python interpreter '{}': {e}", path.display()))?;
    let exe = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || exe.is_empty() {
        return Err(format!(
            "Python interpreter '{}' ({source}) did not report its executable: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(PathBuf::from(exe))
}
