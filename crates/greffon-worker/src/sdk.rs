//! The Python SDK and worker, embedded in the binary and written out to a
//! content-hashed folder, so a copied or `cargo install`ed greffon needs no
//! checkout beside it.

use sha2::{Digest, Sha256};
use std::io;
use std::path::{Path, PathBuf};

macro_rules! sdk_files {
    ($($path:literal),* $(,)?) => {
        &[$(($path, include_str!(concat!("../../../python/", $path)))),*]
    };
}

/// (path relative to the SDK root, content).
const FILES: &[(&str, &str)] = sdk_files![
    "greffon/__init__.py",
    "greffon/_runtime.py",
    "greffon/_seal.py",
    "greffon/_channel.py",
    "greffon/http.py",
    "greffon/llm.py",
    "greffon/log.py",
    "greffon/system.py",
    "greffon/tasks.py",
    "greffon/template.py",
    "greffon/testing.py",
    "greffon/worker.py",
    "app/__init__.py",
    "app/core/__init__.py",
    "app/core/llm.py",
    "app/core/logger.py",
];

/// What the worker process runs: put the SDK first on `sys.path`, seal the
/// process against `execve` unless `process` was granted (argument 2),
/// serve.
pub(crate) const BOOTSTRAP: &str = "import sys; sys.path.insert(0, sys.argv[1]); \
    import greffon._seal; sys.flags.no_site and __import__('site').main(); \
    from greffon.worker import main; main()";

fn content_hash() -> String {
    let mut h = Sha256::new();
    for (path, content) in FILES {
        h.update(path.as_bytes());
        h.update([0]);
        h.update(content.as_bytes());
        h.update([0]);
    }
    hex(&h.finalize()[..8])
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes the SDK under `root/<hash>/` unless it is already there, and
/// returns that folder. Written to a temporary sibling and renamed, so a
/// concurrent start never sees half an SDK.
pub fn materialize(root: &Path) -> io::Result<PathBuf> {
    let dir = root.join(content_hash());
    if dir.join("greffon/worker.py").is_file() {
        return Ok(dir);
    }
    std::fs::create_dir_all(root)?;
    let tmp = root.join(format!(".tmp-{}-{}", std::process::id(), content_hash()));
    let _ = std::fs::remove_dir_all(&tmp);
    for (path, content) in FILES {
        let file = tmp.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(file, content)?;
    }
    match std::fs::rename(&tmp, &dir) {
        Ok(()) => Ok(dir),
        // Another process won the race with identical content.
        Err(_) if dir.join("greffon/worker.py").is_file() => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(dir)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn materializes_once_into_a_hashed_folder() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let a = materialize(tmp.path()).expect("written");
        assert!(a.join("greffon/worker.py").is_file());
        assert!(a.join("app/core/logger.py").is_file());
        assert_eq!(
            a.file_name().and_then(|n| n.to_str()).map(str::len),
            Some(16)
        );
        let b = materialize(tmp.path()).expect("reused");
        assert_eq!(a, b);
        let entries = std::fs::read_dir(tmp.path()).expect("list").count();
        assert_eq!(entries, 1, "no temporary folder left behind");
    }
}
