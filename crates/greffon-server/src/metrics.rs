//! `/metrics`: Prometheus text.

use greffon_host::{PluginInfo, State};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the call-latency histogram, in seconds.
const BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2.5, 10.0,
];

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
        let _ = writeln!(
            out,
            "# HELP greffon_calls_total Plugin calls through the API, by outcome."
        );
        let _ = writeln!(out, "# TYPE greffon_calls_total counter");
        for (plugin, by_outcome) in self.calls.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            for (outcome, n) in by_outcome {
                let _ = writeln!(
                    out,
                    "greffon_calls_total{{plugin=\"{plugin}\",outcome=\"{outcome}\"}} {n}"
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP greffon_call_duration_seconds Latency of plugin calls through the API."
        );
        let _ = writeln!(out, "# TYPE greffon_call_duration_seconds histogram");
        for (i, le) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "greffon_call_duration_seconds_bucket{{le=\"{le}\"}} {}",
                self.buckets[i].load(Ordering::Relaxed)
            );
        }
        let count = self.latency_count.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "greffon_call_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "greffon_call_duration_seconds_sum {}",
            self.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "greffon_call_duration_seconds_count {count}");
        let _ = writeln!(
            out,
            "# HELP greffon_worker_crashes_total Unexpected worker exits (each is followed by a restart)."
        );
        let _ = writeln!(out, "# TYPE greffon_worker_crashes_total counter");
        for p in plugins {
            let _ = writeln!(
                out,
                "greffon_worker_crashes_total{{plugin=\"{}\"}} {}",
                p.name, p.worker_crashes
            );
        }
        let _ = writeln!(
            out,
            "# HELP greffon_reloads_total Hot reloads that swapped in a new version."
        );
        let _ = writeln!(out, "# TYPE greffon_reloads_total counter");
        let _ = writeln!(
            out,
            "greffon_reloads_total {}",
            self.reloads.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP greffon_reload_rollbacks_total Hot reloads that failed and kept the running version."
        );
        let _ = writeln!(out, "# TYPE greffon_reload_rollbacks_total counter");
        let _ = writeln!(
            out,
            "greffon_reload_rollbacks_total {}",
            self.rollbacks.load(Ordering::Relaxed)
        );
        let enabled = plugins.iter().filter(|p| p.state == State::Enabled).count();
        let _ = writeln!(out, "# HELP greffon_enabled_plugins Plugins enabled now.");
        let _ = writeln!(out, "# TYPE greffon_enabled_plugins gauge");
        let _ = writeln!(out, "greffon_enabled_plugins {enabled}");
        out
    }
}
