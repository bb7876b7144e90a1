//! What a worker writes outside the protocol: its raw stdout and stderr
//! (copied into the plugin log and a bounded tail for crash dumps), and the
//! log records it sends (routed to their category's log).

use crate::worker::Shared;
use greffon_protocol::method::LogRecord;
use serde_json::Value;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Bytes of the worker's raw stdout/stderr kept for crash dumps.
pub(crate) const TAIL_BYTES: usize = 64 << 10;
/// Longest line of raw worker output written to the plugin log.
const LOG_LINE_BYTES: usize = 4 << 10;
/// Raw output one worker may write into the plugin log over its life; past
/// it only the crash-dump tail keeps the output, so a flood cannot fill
/// the disk.
const LOG_BUDGET_BYTES: usize = 4 << 20;

pub(crate) fn push_tail(tail: &Mutex<Vec<u8>>, bytes: &[u8]) {
    let mut t = tail.lock().unwrap_or_else(|p| p.into_inner());
    t.extend_from_slice(bytes);
    if t.len() > TAIL_BYTES {
        let cut = t.len() - TAIL_BYTES;
        t.drain(..cut);
    }
}

pub(crate) fn tail_text(tail: &Mutex<Vec<u8>>) -> String {
    String::from_utf8_lossy(&tail.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
}

/// Copies one of the worker's raw output pipes into the plugin log (line
/// by line, lines cut at 4 KiB) and a bounded tail for crash dumps.
pub(crate) async fn pump_output<R: AsyncRead + Unpin>(
    mut pipe: R,
    shared: Arc<Shared>,
    stream: &'static str,
) {
    let mut buf = vec![0u8; 8192];
    let mut line: Vec<u8> = Vec::new();
    let plugin = shared.spec.plugin.clone();
    let mut budget = LOG_BUDGET_BYTES;
    let mut log = |bytes: &[u8]| {
        if budget == 0 {
            return;
        }
        budget = budget.saturating_sub(bytes.len());
        let text = String::from_utf8_lossy(bytes);
        tracing::info!(target: "plugin", plugin = %plugin, stream, "{}", text.trim_end());
        if budget == 0 {
            tracing::warn!(target: "plugin", plugin = %plugin, stream, "output log budget spent; further {stream} output of this worker is not logged");
        }
    };
    loop {
        let n = match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &buf[..n];
        let tail = if stream == "stdout" {
            &shared.stdout_tail
        } else {
            &shared.stderr_tail
        };
        push_tail(tail, chunk);
        for piece in chunk.split_inclusive(|&b| b == b'\n') {
            if line.len() < LOG_LINE_BYTES {
                let room = LOG_LINE_BYTES - line.len();
                line.extend_from_slice(&piece[..piece.len().min(room)]);
            }
            if piece.ends_with(b"\n") {
                log(&line);
                line.clear();
            }
        }
    }
    if !line.is_empty() {
        log(&line);
    }
}

pub(crate) fn log_record(plugin: &str, params: Value) {
    let Ok(r) = serde_json::from_value::<LogRecord>(params) else {
        tracing::warn!(target: "server", plugin, "worker sent a malformed log record");
        return;
    };
    macro_rules! emit {
        ($target:literal) => {
            match r.level.as_str() {
                "DEBUG" => tracing::debug!(target: $target, plugin, logger = %r.logger, "{}", r.message),
                "INFO" => tracing::info!(target: $target, plugin, logger = %r.logger, "{}", r.message),
                "WARNING" => tracing::warn!(target: $target, plugin, logger = %r.logger, "{}", r.message),
                _ => tracing::error!(target: $target, plugin, logger = %r.logger, "{}", r.message),
            }
        };
    }
    // tracing targets are constants, hence one arm per category.
    match r.category.as_str() {
        "server" => emit!("server"),
        "llm" => emit!("llm"),
        "audit" => emit!("audit"),
        _ => emit!("plugin"),
    }
}
