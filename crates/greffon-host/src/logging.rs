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
    let console = EnvFilter::builder()
        .with_default_directive(level.into())
        .from_env_lossy();
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
