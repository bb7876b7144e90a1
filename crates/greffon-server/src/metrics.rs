//! `/metrics`: Prometheus text.

use greffon_protocol::api::{PluginInfo, State};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the call-latency histogram, in seconds.
const BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2.5, 10.0,
];

/// The `outcome` label of a call: `ok` (a returned `{"error"}` included)
/// or the error's kind; the same for `/v1` and `/mcp`.
pub(crate) fn outcome_label<T>(outcome: &Result<T, greffon_host::CallError>) -> &'static str {
    match outcome {
        Ok(_) => "ok",
        Err(e) => e.kind.as_str(),
    }
}

#[derive(Debug, Default)]
pub(crate) struct Metrics {
    /// plugin → outcome → calls.
    calls: Mutex<BTreeMap<String, BTreeMap<&'static str, u64>>>,
    buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
    reloads: AtomicU64,
    rollbacks: AtomicU64,
}

impl Metrics {
    pub(crate) fn call(&self, plugin: &str, outcome: &'static str, took: Duration) {
        {
            let mut calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
            // No allocation once the plugin has been seen.
            let by_outcome = match calls.get_mut(plugin) {
                Some(m) => m,
                None => calls.entry(plugin.to_string()).or_default(),
            };
            *by_outcome.entry(outcome).or_default() += 1;
        }
        let s = took.as_secs_f64();
        for (i, le) in BUCKETS.iter().enumerate() {
            if s <= *le {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    pub(crate) fn reload(&self, swapped: bool) {
        let counter = if swapped {
            &self.reloads
        } else {
            &self.rollbacks
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn render(&self, plugins: &[PluginInfo]) -> String {
        let mut out = String::new();
        self.render_own(&mut out);
        render_plugins(&mut out, plugins);
        out
    }

    /// The families this server counts itself: calls, their latency,
    /// reloads.
    fn render_own(&self, out: &mut String) {
        let calls: Vec<String> = self
            .calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .flat_map(|(plugin, by_outcome)| {
                by_outcome.iter().map(move |(outcome, n)| {
                    format!("greffon_calls_total{{plugin=\"{plugin}\",outcome=\"{outcome}\"}} {n}")
                })
            })
            .collect();
        family(
            out,
            "greffon_calls_total",
            "counter",
            "Plugin calls through the API, by outcome.",
            calls,
        );
        let count = self.latency_count.load(Ordering::Relaxed);
        let sum = self.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let histogram = BUCKETS
            .iter()
            .zip(&self.buckets)
            .map(|(le, n)| {
                format!(
                    "greffon_call_duration_seconds_bucket{{le=\"{le}\"}} {}",
                    n.load(Ordering::Relaxed)
                )
            })
            .chain([
                format!("greffon_call_duration_seconds_bucket{{le=\"+Inf\"}} {count}"),
                format!("greffon_call_duration_seconds_sum {sum}"),
                format!("greffon_call_duration_seconds_count {count}"),
            ]);
        family(
            out,
            "greffon_call_duration_seconds",
            "histogram",
            "Latency of plugin calls through the API.",
            histogram,
        );
        let reloads = self.reloads.load(Ordering::Relaxed);
        family(
            out,
            "greffon_reloads_total",
            "counter",
            "Hot reloads that swapped in a new version.",
            [format!("greffon_reloads_total {reloads}")],
        );
        let rollbacks = self.rollbacks.load(Ordering::Relaxed);
        family(
            out,
            "greffon_reload_rollbacks_total",
            "counter",
            "Hot reloads that failed and kept the running version.",
            [format!("greffon_reload_rollbacks_total {rollbacks}")],
        );
    }
}

/// The families read from the host's entries: crashes, workers, queues,
/// the enabled count.
fn render_plugins(out: &mut String, plugins: &[PluginInfo]) {
    let crashes = plugins.iter().map(|p| {
        format!(
            "greffon_worker_crashes_total{{plugin=\"{}\"}} {}",
            p.name, p.worker_crashes
        )
    });
    family(
        out,
        "greffon_worker_crashes_total",
        "counter",
        "Unexpected worker exits (each is followed by a restart).",
        crashes,
    );
    let workers = plugins
        .iter()
        .filter(|p| p.state == State::Enabled)
        .flat_map(|p| {
            [("busy", p.workers.busy), ("idle", p.workers.idle)].map(|(state, n)| {
                format!(
                    "greffon_workers{{plugin=\"{}\",state=\"{state}\"}} {n}",
                    p.name
                )
            })
        });
    family(
        out,
        "greffon_workers",
        "gauge",
        "Live worker processes of each enabled plugin, serving a call (busy) or not (idle).",
        workers,
    );
    let queued = plugins
        .iter()
        .filter(|p| p.state == State::Enabled)
        .map(|p| {
            format!(
                "greffon_queued_calls{{plugin=\"{}\"}} {}",
                p.name, p.workers.queued
            )
        });
    family(
        out,
        "greffon_queued_calls",
        "gauge",
        "Calls waiting for a worker of each enabled plugin.",
        queued,
    );
    let enabled = plugins.iter().filter(|p| p.state == State::Enabled).count();
    family(
        out,
        "greffon_enabled_plugins",
        "gauge",
        "Plugins enabled now.",
        [format!("greffon_enabled_plugins {enabled}")],
    );
}

/// One metric family: its `# HELP` and `# TYPE` lines, then its samples.
fn family(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    samples: impl IntoIterator<Item = String>,
) {
    // Writing into a String cannot fail.
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for sample in samples {
        let _ = writeln!(out, "{sample}");
    }
}
