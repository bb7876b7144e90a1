//! Crash dumps (SPEC §7): one file per incident, never overwritten.

use serde_json::Value;
use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The lifecycle phase an incident happened in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Import,
    Start,
    Run,
    Stop,
    WorkerExit,
}

impl Phase {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Phase::Import => "import",
            Phase::Start => "start",
            Phase::Run => "run",
            Phase::Stop => "stop",
            Phase::WorkerExit => "worker exit",
        }
    }
}

/// Everything a dump holds.
#[derive(Debug, Clone)]
pub(crate) struct Dump<'a> {
    pub plugin: &'a str,
    /// SHA-256 of `plugin.py` when the worker was loaded.
    pub file_hash: &'a str,
    pub phase: Phase,
    /// The arguments of the call(s) concerned, if any.
    pub args: Option<&'a Value>,
    /// The error: exception type and message, or why the worker ended.
    pub error: &'a str,
    /// Python traceback, or the exit code / signal.
    pub traceback: Option<&'a str>,
    pub stdout: &'a str,
    pub stderr: &'a str,
}

/// Writes `dump` to `<dir>/<plugin>-<UTC timestamp>.log` and returns its
/// path. The timestamp sorts lexically; a clash gets a `-N` suffix.
pub(crate) fn write(dir: &Path, dump: &Dump<'_>) -> io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let now = chrono::Utc::now();
    let stamp = now.format("%Y%m%dT%H%M%S%.6fZ");
    let mut text = String::new();
    let _ = writeln!(
        text,
        "time: {}",
        now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    );
    let _ = writeln!(text, "plugin: {}", dump.plugin);
    let _ = writeln!(text, "plugin.py sha256: {}", dump.file_hash);
    let _ = writeln!(text, "phase: {}", dump.phase.as_str());
    let args = dump
        .args
        .map(|a| serde_json::to_string_pretty(a).unwrap_or_default());
    let _ = writeln!(text, "arguments: {}", args.as_deref().unwrap_or("(none)"));
    let _ = writeln!(text, "error: {}", dump.error);
    let _ = writeln!(
        text,
        "\n--- traceback ---\n{}",
        dump.traceback.unwrap_or("(none)").trim_end()
    );
    let _ = writeln!(text, "\n--- stdout ---\n{}", dump.stdout.trim_end());
    let _ = writeln!(text, "\n--- stderr ---\n{}", dump.stderr.trim_end());
    for n in 0u32.. {
        let name = match n {
            0 => format!("{}-{stamp}.log", dump.plugin),
            n => format!("{}-{stamp}-{n}.log", dump.plugin),
        };
        let path = dir.join(name);
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut f) => {
                f.write_all(text.as_bytes())?;
                return Ok(path);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    unreachable!("u32 range of suffixes exhausted")
}

/// The newest dump of `plugin`, for `plugin info`.
pub(crate) fn latest(dir: &Path, plugin: &str) -> Option<PathBuf> {
    let prefix = format!("{plugin}-");
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.ends_with(".log")
                    && n.strip_prefix(&prefix)
                        .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
            })
        })
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(phase: Phase) -> Dump<'static> {
        Dump {
            plugin: "p",
            file_hash: "abc",
            phase,
            args: None,
            error: "ValueError: boom",
            traceback: Some("Traceback ..."),
            stdout: "out",
            stderr: "err",
        }
    }

    #[test]
    fn dumps_never_overwrite_and_sort_by_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths: Vec<PathBuf> = (0..5)
            .map(|_| write(dir.path(), &sample(Phase::Run)).expect("written"))
            .collect();
        let mut unique = paths.clone();
        unique.dedup();
        assert_eq!(unique.len(), 5);
        let text = std::fs::read_to_string(&paths[0]).expect("read");
        for needle in [
            "plugin: p",
            "phase: run",
            "sha256: abc",
            "ValueError: boom",
            "Traceback",
            "out",
            "err",
        ] {
            assert!(text.contains(needle), "{needle} missing");
        }
        assert_eq!(latest(dir.path(), "p"), paths.iter().max().cloned());
        assert_eq!(latest(dir.path(), "other"), None);
    }

    #[test]
    fn latest_ignores_plugins_sharing_a_prefix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut d = sample(Phase::Import);
        d.plugin = "p-x";
        write(dir.path(), &d).expect("written");
        assert_eq!(latest(dir.path(), "p"), None);
    }
}
