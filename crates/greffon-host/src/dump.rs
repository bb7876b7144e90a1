//! Crash dumps: one file per incident (load, start, call, reload), never
//! overwritten, with secrets redacted.

use crate::signals::Signals;
use greffon_protocol::{Output, WireError};
use serde_json::Value;
use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The lifecycle phase an incident happened in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Import,
    Start,
    Run,
    Stop,
    /// Loading or starting the new version during a hot reload.
    Reload,
    /// Building the plugin's Python environment (uv).
    Environment,
    WorkerExit,
}

impl Phase {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Phase::Import => "import",
            Phase::Start => "start",
            Phase::Run => "run",
            Phase::Stop => "stop",
            Phase::Reload => "reload",
            Phase::Environment => "environment",
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
    // What the plugin printed or raised may hold a secret it was handed.
    let text = crate::redact::redact(&text);
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

/// Writes `dump`, logging rather than failing when it cannot: a dump that
/// cannot be written must not change the answer to the call.
pub(crate) fn write_logged(dir: &Path, dump: &Dump<'_>) -> Option<PathBuf> {
    match write(dir, dump) {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::error!(target: "server", plugin = dump.plugin, "cannot write crash dump: {e}");
            None
        }
    }
}

/// The dump files present, read once for any number of [`latest`] calls.
pub(crate) fn listing(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.ends_with(".log"))
                .collect()
        })
        .unwrap_or_default()
}

/// One crash dump of a plugin, as a list shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DumpEntry {
    /// The file name under the dumps folder: what names it to read it.
    pub file: String,
    /// When it was written (RFC 3339), from its first line.
    pub time: String,
    pub phase: String,
    /// The first line of its error.
    pub error: String,
}

/// The timestamp part of `file` when it is a dump of one of `names`.
fn stamp_of<'a>(file: &'a str, names: &[&str]) -> Option<&'a str> {
    names.iter().find_map(|name| {
        let stamp = file.strip_prefix(name)?.strip_prefix('-')?;
        stamp
            .starts_with(|c: char| c.is_ascii_digit())
            .then_some(stamp)
    })
}

/// Whether `file` names a dump of one of `names`: a plain file name (no
/// folder part, so it cannot reach outside the dumps folder) written
/// under one of them.
pub(crate) fn names_dump_of(file: &str, names: &[&str]) -> bool {
    !file.contains('/') && file.ends_with(".log") && stamp_of(file, names).is_some()
}

/// The dumps of `names`, newest first, at most `limit`, each summarized
/// from its header (a file that cannot be read is listed without one).
pub(crate) fn of(dir: &Path, listing: &[String], names: &[&str], limit: usize) -> Vec<DumpEntry> {
    let mut mine: Vec<(&str, &String)> = listing
        .iter()
        .filter_map(|file| stamp_of(file, names).map(|stamp| (stamp, file)))
        .collect();
    mine.sort_by(|a, b| b.0.cmp(a.0));
    mine.into_iter()
        .take(limit)
        .map(|(_, file)| {
            let text = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
            let field = |key: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(key))
                    .unwrap_or_default()
                    .to_string()
            };
            DumpEntry {
                file: file.clone(),
                time: field("time: "),
                phase: field("phase: "),
                error: field("error: "),
            }
        })
        .collect()
}

/// The newest dump written under any of `names` (a plugin's registry name
/// and its folder), by timestamp.
pub(crate) fn latest(dir: &Path, listing: &[String], names: &[&str]) -> Option<PathBuf> {
    listing
        .iter()
        .filter_map(|file| stamp_of(file, names).map(|stamp| (stamp, file)))
        .max_by_key(|(stamp, _)| *stamp)
        .map(|(_, file)| dir.join(file))
}

/// The SHA-256 of a plugin's `plugin.py`, written into its dumps.
pub(crate) fn file_hash(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    match std::fs::read(path) {
        Ok(bytes) => format!("{:x}", Sha256::digest(&bytes)),
        Err(_) => "(unreadable)".into(),
    }
}

/// The dumps folder of a home, and who is told when a dump is written.
#[derive(Debug, Clone)]
pub(crate) struct Dumps {
    dir: PathBuf,
    signals: Arc<Signals>,
}

impl Dumps {
    pub(crate) fn new(dir: PathBuf, signals: Arc<Signals>) -> Dumps {
        Dumps { dir, signals }
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes the crash dump of an error the worker answered (its text is
    /// [`exception_text`]), with what the plugin printed.
    pub(crate) fn write_error(
        &self,
        plugin: &str,
        file_hash: &str,
        phase: Phase,
        args: Option<&Value>,
        e: &WireError,
        output: Option<Output>,
    ) -> Option<PathBuf> {
        let output = output.unwrap_or_default();
        let d = Dump {
            plugin,
            file_hash,
            phase,
            args,
            error: &exception_text(e),
            traceback: e.traceback.as_deref(),
            stdout: &output.stdout,
            stderr: &output.stderr,
        };
        let written = write_logged(&self.dir, &d);
        self.signals.incident();
        written
    }
}

/// `Type: message` of an exception answered by the worker, with the
/// secret values it was handed redacted.
pub(crate) fn exception_text(e: &WireError) -> String {
    let text = match &e.exc_type {
        Some(t) => format!("{t}: {}", e.message),
        None => e.message.clone(),
    };
    crate::redact::redact(&text).into_owned()
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
        let files = listing(dir.path());
        assert_eq!(
            latest(dir.path(), &files, &["p"]),
            paths.iter().max().cloned()
        );
        assert_eq!(latest(dir.path(), &files, &["other"]), None);
    }

    #[test]
    fn latest_is_the_newest_across_the_name_and_the_folder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut d = sample(Phase::Import);
        d.plugin = "folder";
        write(dir.path(), &d).expect("written");
        d.plugin = "name";
        let newest = write(dir.path(), &d).expect("written");
        let files = listing(dir.path());
        assert_eq!(
            latest(dir.path(), &files, &["folder", "name"]),
            Some(newest.clone())
        );
        assert_eq!(
            latest(dir.path(), &files, &["name", "folder"]),
            Some(newest)
        );
    }

    #[test]
    fn a_plugin_lists_its_own_dumps_newest_first_summarized() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut d = sample(Phase::Run);
        let older = write(dir.path(), &d).expect("written");
        d.phase = Phase::WorkerExit;
        let newer = write(dir.path(), &d).expect("written");
        d.plugin = "p-x";
        let other = write(dir.path(), &d).expect("written");
        let files = listing(dir.path());
        let name = |p: &Path| {
            p.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("")
                .to_string()
        };
        let listed = of(dir.path(), &files, &["p"], 10);
        let names: Vec<&str> = listed.iter().map(|e| e.file.as_str()).collect();
        assert_eq!(names, [name(&newer), name(&older)]);
        assert_eq!(listed[0].phase, "worker exit");
        assert_eq!(listed[0].error, "ValueError: boom");
        assert!(listed[0].time.starts_with("20"), "{:?}", listed[0]);
        assert_eq!(of(dir.path(), &files, &["p"], 1).len(), 1);
        assert!(names_dump_of(&name(&older), &["p"]));
        // Another plugin's dump, or a path out of the folder, is not its own.
        assert!(!names_dump_of(&name(&other), &["p"]));
        assert!(!names_dump_of("../p-1.log", &["p"]));
        assert!(!names_dump_of("p-1/../../app/token.log", &["p"]));
        assert!(!names_dump_of("p-1.txt", &["p"]));
    }

    #[test]
    fn latest_ignores_plugins_sharing_a_prefix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut d = sample(Phase::Import);
        d.plugin = "p-x";
        write(dir.path(), &d).expect("written");
        assert_eq!(latest(dir.path(), &listing(dir.path()), &["p"]), None);
    }
}
