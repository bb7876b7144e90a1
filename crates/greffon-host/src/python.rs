//! Finding the interpreter that runs workers, and what of the file system
//! it needs to start.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The resolved interpreter.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
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

/// Identifies an interpreter without running it: its path, and the
/// identity of the file behind it and of a venv's `pyvenv.cfg`. A change
/// to any of them (a new Python, a recreated venv) changes the key.
fn fingerprint(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let real = std::fs::canonicalize(path).ok()?;
    let m = std::fs::metadata(&real).ok()?;
    let link = std::fs::symlink_metadata(path).ok()?;
    let cfg = path
        .parent()
        .and_then(Path::parent)
        .and_then(|venv| std::fs::metadata(venv.join("pyvenv.cfg")).ok())
        .map_or(0, |c| c.mtime_nsec() ^ c.mtime());
    Some(format!(
        "{}|{}|{}|{}|{}|{}|{cfg}",
        path.display(),
        real.display(),
        m.ino(),
        m.len(),
        m.mtime() * 1_000_000_000 + m.mtime_nsec(),
        link.mtime() * 1_000_000_000 + link.mtime_nsec(),
    ))
}

/// What `cache` holds.
#[derive(serde::Serialize, serde::Deserialize)]
struct Cached {
    key: String,
    interpreter: Interpreter,
}

/// Resolves the interpreter, asking it for its facts (~20 ms) only when
/// `cache` does not hold them for this very file already.
pub(crate) fn resolve_cached(
    configured: Option<&Path>,
    cache: &Path,
) -> Result<Interpreter, String> {
    let (name, _) = candidate(configured);
    let key = search_path(&name).and_then(|p| fingerprint(&p));
    if let Some(key) = &key
        && let Some(hit) = std::fs::read(cache)
            .ok()
            .and_then(|t| serde_json::from_slice::<Cached>(&t).ok())
            .filter(|c| &c.key == key && c.interpreter.real.is_file())
    {
        return Ok(hit.interpreter);
    }
    let interpreter = resolve(configured)?;
    if let Some(key) = key {
        let cached = Cached {
            key,
            interpreter: interpreter.clone(),
        };
        // A cache that cannot be written only costs the next start time.
        if let Some(dir) = cache.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Ok(text) = serde_json::to_vec(&cached) {
            let tmp = cache.with_extension(format!("tmp.{}", std::process::id()));
            if std::fs::write(&tmp, text).is_ok() {
                let _ = std::fs::rename(&tmp, cache);
            }
        }
    }
    Ok(interpreter)
}

/// Resolves the interpreter by asking it. A script (a pyenv shim costs
/// ~70 ms per start) is replaced by the `sys.executable` it reports.
pub(crate) fn resolve(configured: Option<&Path>) -> Result<Interpreter, String> {
    let (name, source) = candidate(configured);
    let path = search_path(&name).filter(|p| p.is_file()).ok_or_else(|| {
        format!(
            "Python interpreter '{}' ({source}) not found",
            name.display()
        )
    })?;
    let is_script = {
        use std::io::Read;
        let mut head = [0u8; 2];
        std::fs::File::open(&path)
            .and_then(|mut f| f.read(&mut head))
            .map(|n| n == 2 && &head == b"#!")
            .map_err(|e| format!("cannot read Python interpreter '{}': {e}", path.display()))?
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake interpreter: a script that counts its runs and reports the
    /// real Python's facts with its own path as the executable.
    fn fake(dir: &Path, counter: &Path) -> PathBuf {
        let real = std::env::var("GREFFON_PYTHON").unwrap_or_else(|_| "python3".into());
        let script = dir.join("python");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho run >> {}\nexec {real} \"$@\"\n",
                counter.display()
            ),
        )
        .expect("write");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        script
    }

    fn runs(counter: &Path) -> usize {
        std::fs::read_to_string(counter).map_or(0, |t| t.lines().count())
    }

    #[test]
    fn facts_are_asked_once_per_interpreter_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let counter = dir.path().join("runs");
        let script = fake(dir.path(), &counter);
        let cache = dir.path().join("python.json");
        let a = resolve_cached(Some(&script), &cache).expect("resolves");
        assert_eq!(runs(&counter), 1);
        let b = resolve_cached(Some(&script), &cache).expect("cached");
        assert_eq!(runs(&counter), 1, "the second start reads the cache");
        assert_eq!(a.read_roots, b.read_roots);
        assert_eq!(a.exe, b.exe);
        // Another interpreter file (here: rewritten) is asked again.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&script)
            .expect("open");
        std::io::Write::write_all(&mut f, b"# changed\n").expect("append");
        drop(f);
        resolve_cached(Some(&script), &cache).expect("resolves");
        assert_eq!(runs(&counter), 2);
    }
}
