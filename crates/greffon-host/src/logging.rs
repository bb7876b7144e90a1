//! The four log categories as JSON lines under `<logs_dir>/`, and human
//! lines on stderr; both redact the secret values handed to workers.

use crate::redact::Redacting;
use std::fs::{File, OpenOptions};
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use tracing_subscriber::filter::{EnvFilter, LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, fmt};

/// The categories of the contract; each is a `tracing` target and a file.
pub const CATEGORIES: [&str; 4] = ["server", "plugin", "llm", "audit"];

/// The target of the environment builder's steps (in `server.log`), shown
/// on stderr at the default verbosity.
pub(crate) const ENV_TARGET: &str = "server::env";
const ENV_PROGRESS: &str = "server::env=info";

/// Installs the global subscriber. `verbosity`: -1 quiet (errors), 0
/// warnings, 1 info, 2 debug, 3 trace; `RUST_LOG` overrides it for stderr.
pub fn init(logs_dir: &Path, verbosity: i8) -> std::io::Result<()> {
    std::fs::create_dir_all(logs_dir)?;
    let mut layers = Vec::new();
    for category in CATEGORIES {
        let file: Arc<File> = Arc::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(logs_dir.join(format!("{category}.log")))?,
        );
        let layer = fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(Redacting(file))
            .with_filter(Targets::new().with_target(category, LevelFilter::DEBUG))
            .boxed();
        layers.push(layer);
    }
    let level = match verbosity {
        i8::MIN..=-1 => LevelFilter::ERROR,
        0 => LevelFilter::WARN,
        1 => LevelFilter::INFO,
        2 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    };
    let mut console = EnvFilter::builder()
        .with_default_directive(level.into())
        .from_env_lossy();
    if verbosity >= 0 {
        // Building a plugin's environment takes seconds: its steps show
        // unless asked to be quiet.
        console = console.add_directive(ENV_PROGRESS.parse().expect("a valid directive"));
    }
    // Colours only for a person at a terminal, not in captured output.
    let stderr = fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(Redacting(std::io::stderr))
        .with_filter(console)
        .boxed();
    layers.push(stderr);
    // A second init (tests in one process) keeps the first subscriber.
    let _ = tracing_subscriber::registry().with(layers).try_init();
    Ok(())
}

/// Which records [`tail`] keeps.
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    /// Only records whose `plugin` field is this.
    pub plugin: Option<String>,
    /// Only records whose JSON text contains this (case-insensitive).
    pub text: Option<String>,
}

/// How much of a log file's end [`tail`] reads: the last records, not
/// the history of a long-lived server.
const TAIL_BYTES: u64 = 1 << 20;

/// The last `limit` records of `category` that pass `filter`, newest
/// first, from the end of its file (a missing file has none). A line cut
/// by the read window or not JSON is skipped.
pub fn tail(
    logs_dir: &Path,
    category: &str,
    filter: &LogFilter,
    limit: usize,
) -> std::io::Result<Vec<serde_json::Value>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = match File::open(logs_dir.join(format!("{category}.log"))) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    let start = len.saturating_sub(TAIL_BYTES);
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    file.take(TAIL_BYTES).read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes);
    let needle = filter.text.as_ref().map(|t| t.to_lowercase());
    let mut lines = text.lines().rev();
    if start > 0 {
        // The window's first line is probably cut; it comes last here.
        lines.next_back();
    }
    Ok(lines
        .filter(|line| {
            needle
                .as_ref()
                .is_none_or(|n| line.to_lowercase().contains(n))
        })
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|record| {
            filter
                .plugin
                .as_ref()
                .is_none_or(|p| record["plugin"].as_str() == Some(p.as_str()))
        })
        .take(limit)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_is_newest_first_filtered_and_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lines: Vec<String> = (0..10)
            .map(|i| {
                let plugin = if i % 2 == 0 { "even" } else { "odd" };
                format!(r#"{{"event":"call","plugin":"{plugin}","n":{i}}}"#)
            })
            .chain(["not json".to_string()])
            .collect();
        std::fs::write(dir.path().join("audit.log"), lines.join("\n")).expect("log");
        let n = |records: Vec<serde_json::Value>| -> Vec<i64> {
            records.iter().filter_map(|r| r["n"].as_i64()).collect()
        };
        let all = tail(dir.path(), "audit", &LogFilter::default(), 3).expect("tail");
        assert_eq!(n(all), [9, 8, 7]);
        let odd = LogFilter {
            plugin: Some("odd".into()),
            text: None,
        };
        assert_eq!(
            n(tail(dir.path(), "audit", &odd, 100).expect("tail")),
            [9, 7, 5, 3, 1]
        );
        let text = LogFilter {
            plugin: None,
            text: Some("\"N\":4".into()),
        };
        assert_eq!(n(tail(dir.path(), "audit", &text, 100).expect("tail")), [4]);
        assert!(
            tail(dir.path(), "llm", &LogFilter::default(), 5)
                .expect("none")
                .is_empty()
        );
        // A log that cannot be read is an error, not an empty answer.
        std::fs::create_dir(dir.path().join("server.log")).expect("dir");
        assert!(tail(dir.path(), "server", &LogFilter::default(), 5).is_err());
    }
}
