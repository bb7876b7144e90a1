//! Human and JSON output.
//!
//! Everything goes through [`out!`]: a closed stdout (`greffon ... | head`)
//! drops the rest of the output instead of panicking.

use greffon_core::{Home, Permission};
use greffon_host::{AccessInfo, CheckReport, PluginInfo};
use serde_json::Value;

/// `println!` that ignores a closed stdout.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}
pub(crate) use out;

pub fn json(value: &Value) {
    out!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
    );
}

pub fn permissions(perms: &[Permission]) -> String {
    if perms.is_empty() {
        "none".into()
    } else {
        perms
            .iter()
            .map(|p| p.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

pub fn list(plugins: &[PluginInfo], home: &Home) {
    if plugins.is_empty() {
        out!("no plugins under {}", home.plugins_dir().display());
        return;
    }
    table(plugins);
}

/// The list as a running server sees it.
pub fn list_remote(plugins: &[PluginInfo], url: &str) {
    if plugins.is_empty() {
        out!("no plugins on the server at {url}");
        return;
    }
    table(plugins);
}

fn table(plugins: &[PluginInfo]) {
    let width = plugins
        .iter()
        .map(|p| p.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    out!(
        "{:width$}  {:8}  {:24}  DESCRIPTION",
        "NAME",
        "STATE",
        "PERMISSIONS"
    );
    for p in plugins {
        out!(
            "{:width$}  {:8}  {:24}  {}",
            p.name,
            p.state.as_str(),
            permissions(&p.permissions),
            p.description
        );
        if let Some(f) = &p.failure {
            out!("{:width$}  reason: {}", "", f.reason);
            if let Some(d) = &f.dump {
                out!("{:width$}  crash dump: {}", "", d.display());
            }
        }
    }
}

pub fn info(p: &PluginInfo) {
    out!("name:        {}", p.name);
    out!("state:       {}", p.state.as_str());
    out!("folder:      {}", p.path.display());
    out!("description: {}", p.description);
    if let Some(v) = &p.version {
        out!("version:     {v}");
    }
    out!("permissions: {}", permissions(&p.permissions));
    if let Some(g) = &p.granted {
        out!("granted:     {}", permissions(g));
    }
    out!("timeout:     {} s", p.timeout_s);
    for line in access_lines(&p.access) {
        out!("{line}");
    }
    if let Some(f) = &p.failure {
        out!("failure:     {}", f.reason);
    }
    out!(
        "last dump:   {}",
        p.last_dump
            .as_ref()
            .map(|d| d.display().to_string())
            .unwrap_or_else(|| "none".into())
    );
    if let Some(schema) = &p.schema {
        out!("schema:");
        for line in serde_json::to_string_pretty(schema)
            .unwrap_or_default()
            .lines()
        {
            out!("  {line}");
        }
    }
}

pub fn check(r: &CheckReport) {
    if r.problems.is_empty() {
        out!(
            "{} (plugins/{}): ok; permissions: {}",
            r.name,
            r.folder,
            permissions(&r.permissions)
        );
        return;
    }
    out!(
        "{} (plugins/{}): {} problem(s)",
        r.name,
        r.folder,
        r.problems.len()
    );
    for p in &r.problems {
        out!("  - {p}");
    }
    if let Some(d) = &r.dump {
        out!("  crash dump: {}", d.display());
    }
}

/// What the declared permissions reach, one aligned line each.
pub fn access_lines(a: &AccessInfo) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(hosts) = &a.network {
        let shown = if hosts.is_empty() {
            "none (no allowlist_domains: every request is refused)".to_string()
        } else {
            hosts.join(", ")
        };
        lines.push(format!("network:     {shown}"));
    }
    if !a.read.is_empty() {
        lines.push(format!("reads:       {}", a.read.join(", ")));
    }
    if !a.write.is_empty() {
        lines.push(format!("writes:      {}", a.write.join(", ")));
    }
    let limits: Vec<String> = a.limits.iter().map(|(k, v)| format!("{k}={v}")).collect();
    lines.push(format!("limits:      {}", limits.join(", ")));
    lines
}

/// `greffon doctor`'s human report.
pub fn doctor(report: &Value) {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    out!(
        "python:      {} ({})",
        text(&report["python"]["path"]),
        text(&report["python"]["version"])
    );
    out!("sandbox:     {}", text(&report["sandbox"]["mode"]));
    out!(
        "landlock:    ABI {}",
        text(&report["sandbox"]["landlock_abi"])
    );
    out!(
        "seccomp:     {}",
        if report["sandbox"]["seccomp"] == Value::Bool(true) {
            "available"
        } else {
            "missing"
        }
    );
    if let Some(list) = report["sandbox"]["protections"].as_array() {
        out!("protections:");
        for p in list {
            out!("  - {}", text(p));
        }
    }
    if let Some(list) = report["problems"].as_array() {
        for p in list {
            out!("problem:     {}", text(p));
        }
    }
    if let Some(list) = report["warnings"].as_array() {
        for p in list {
            out!("warning:     {}", text(p));
        }
    }
}
