//! Human and JSON output.
//!
//! Everything goes through [`out!`]: a closed stdout (`greffon ... | head`)
//! drops the rest of the output instead of panicking.

use greffon_core::Permission;
use greffon_protocol::api::{AccessInfo, CheckReport, PluginInfo, SecretEntry, SecretState};
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

/// `plugin list`: one aligned line per plugin.
pub fn list(plugins: &[PluginInfo]) {
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
    if !p.secrets.is_empty() {
        out!("secrets:     {}", secret_states(&p.secrets));
    }
    out!("timeout:     {} s", p.timeout_s);
    let w = &p.workers;
    out!(
        "workers:     {} of {}: {} busy, {} idle; {} queued (queue {})",
        w.busy + w.idle,
        w.size,
        w.busy,
        w.idle,
        w.queued,
        w.queue_limit
    );
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

/// `NAME (set), OTHER (not set)`: never a value.
fn secret_states(secrets: &[SecretState]) -> String {
    secrets
        .iter()
        .map(|s| format!("{} ({})", s.name, if s.set { "set" } else { "not set" }))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What `plugin enable` says: the grant, the reach, the secrets to set.
pub fn enabled(p: &PluginInfo) {
    let granted = permissions(p.granted.as_deref().unwrap_or_default());
    out!("enabled {}; permissions granted: {granted}", p.name);
    for line in access_lines(&p.access) {
        out!("  {line}");
    }
    if !p.secrets.is_empty() {
        out!("  secrets: {}", secret_states(&p.secrets));
        for s in p.secrets.iter().filter(|s| !s.set) {
            out!(
                "  set {} with: greffon secret set {} {}",
                s.name,
                p.name,
                s.name
            );
        }
    }
}

/// `secret list`: one line per secret, never a value.
pub fn secrets(entries: &[SecretEntry]) {
    if entries.is_empty() {
        out!("no plugin declares a secret");
        return;
    }
    for e in entries {
        let state = match (e.set, e.declared) {
            (true, true) => "set",
            (false, _) => "not set",
            (true, false) => "set, not declared (remove with `greffon secret rm`)",
        };
        out!("{:<20} {:<28} {state}", e.plugin, e.name);
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
    for f in &r.findings {
        out!("  - {}", f.problem);
        if let Some(fix) = &f.fix {
            out!("    fix: {fix}");
        }
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
/// `greffon model list`.
pub fn models(entries: &[greffon_llm::models::Entry], dir: &std::path::Path) {
    out!("models in {}:", dir.display());
    for e in entries {
        let mark = if e.configured { "*" } else { " " };
        let state = e.problem.as_deref().unwrap_or("ok");
        out!("{mark} {:<40} {:>10} bytes  {state}", e.file, e.size);
    }
    out!("(* = [llm] model)");
}

/// `greffon env list` (or what `env prune` removed).
pub fn envs(envs: &[greffon_host::EnvInfo], pruned: bool) {
    if envs.is_empty() {
        out!(
            "{}",
            if pruned {
                "nothing to prune"
            } else {
                "no environments"
            }
        );
        return;
    }
    for e in envs {
        let users = if e.used_by.is_empty() {
            "unused".to_string()
        } else {
            format!("used by {}", e.used_by.join(", "))
        };
        let verb = if pruned { "removed " } else { "" };
        out!(
            "{verb}{}  {:.1} MiB ({:.1} MiB its own)  {users}",
            e.key,
            e.size_bytes as f64 / (1 << 20) as f64,
            e.own_bytes as f64 / (1 << 20) as f64
        );
        out!("    {}", e.requirements.join(", "));
    }
}

/// A progress bar on stderr, drawn only on a terminal.
pub struct Progress {
    label: String,
    tty: bool,
    last: u64,
}

impl Progress {
    pub fn new(label: &str) -> Progress {
        use std::io::IsTerminal as _;
        Progress {
            label: label.to_string(),
            tty: std::io::stderr().is_terminal(),
            last: u64::MAX,
        }
    }

    pub fn update(&mut self, done: u64, total: u64) {
        let pct = (done * 100).checked_div(total).unwrap_or(100);
        if pct == self.last {
            return;
        }
        self.last = pct;
        let filled = (pct / 4) as usize;
        let line = format!(
            "{} [{}{}] {pct:>3}% ({} / {} MiB)",
            self.label,
            "#".repeat(filled),
            " ".repeat(25 - filled),
            done >> 20,
            total >> 20
        );
        if self.tty {
            eprint!("\r{line}");
        } else if pct.is_multiple_of(25) {
            eprintln!("{line}");
        }
    }

    pub fn finish(&self) {
        if self.tty && self.last != u64::MAX {
            eprintln!();
        }
    }
}

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
    out!(
        "uv:          {} ({})",
        text(&report["uv"]["path"]),
        text(&report["uv"]["version"])
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
    out!(
        "llm:         {} {}",
        text(&report["llm"]["backend"]),
        text(&report["llm"]["model"])
    );
    out!("secrets:     {}", text(&report["secrets"]["location"]));
    let tasks = &report["tasks"];
    match tasks["location"].as_str() {
        Some(at) if tasks["store"] == "postgres" => out!(
            "tasks:       PostgreSQL {at} (clock {} ms from the database's, {} host(s) seen)",
            text(&tasks["clock_skew_ms"]),
            tasks["hosts"].as_array().map_or(0, Vec::len)
        ),
        _ => out!(
            "tasks:       {} {}",
            text(&tasks["store"]),
            text(&tasks["location"])
        ),
    }
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

/// A trigger in one line: `cron "30 2 * * *" Europe/Paris`.
fn trigger_text(t: &Value) -> String {
    match t["kind"].as_str() {
        Some("cron") => format!(
            "cron \"{}\" {}",
            t["expr"].as_str().unwrap_or(""),
            t["tz"].as_str().unwrap_or("")
        ),
        Some("interval") => format!("every {} s", t["every_s"]),
        Some("date") => format!("at {}", t["at"].as_str().unwrap_or("")),
        _ => t.to_string(),
    }
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("-")
}

fn task_line(t: &Value) -> String {
    format!(
        "{:>4}  {:<20} {:<14} {:<40} {}{}",
        t["id"].to_string(),
        text(&t["name"]),
        text(&t["plugin"]),
        trigger_text(&t["trigger"]),
        text(&t["next_run_at"]),
        if t["enabled"] == false {
            "  (disabled)"
        } else {
            ""
        }
    )
}

fn run_line(r: &Value) -> String {
    let detail = match (&r["error"], &r["result"]) {
        (Value::String(e), _) => e.clone(),
        (_, Value::Null) => String::new(),
        (_, v) => v.to_string(),
    };
    let detail = match (&r["retry_at"], r["attempt"].as_u64()) {
        (Value::String(at), Some(n)) => format!("attempt {n} at {at}"),
        (_, Some(n)) if n > 1 => format!("attempt {n}: {detail}"),
        _ => detail,
    };
    format!(
        "{:>5}  {:<9} {:<10} {:<30} {}",
        r["id"].to_string(),
        text(&r["kind"]),
        text(&r["status"]),
        text(&r["scheduled_for"]),
        detail
    )
}

/// The human form of a `task` command's answer.
pub fn task_answer(cmd: &crate::cli::TaskCommand, v: &Value) {
    use crate::cli::TaskCommand as C;
    match cmd {
        C::List { .. } => match v.as_array() {
            Some(tasks) if !tasks.is_empty() => {
                out!(
                    "{:>4}  {:<20} {:<14} {:<40} next run",
                    "id",
                    "name",
                    "plugin",
                    "trigger"
                );
                for t in tasks {
                    out!("{}", task_line(t));
                }
            }
            _ => out!("no tasks"),
        },
        C::Get { .. } => {
            out!("{}", task_line(v));
            out!("  args: {}", v["args"]);
            out!(
                "  coalesce={} misfire_grace_s={} max_instances={} jitter_s={} timeout_s={} retries={} retry_backoff_s={}",
                text(&v["coalesce"]),
                v["misfire_grace_s"],
                v["max_instances"],
                v["jitter_s"],
                v["timeout_s"],
                v["retries"],
                v["retry_backoff_s"]
            );
            out!("  last run: {}", text(&v["last_run_at"]));
        }
        C::Create { .. } | C::Update { .. } => {
            let verb = if matches!(cmd, C::Create { .. }) {
                "created"
            } else {
                "updated"
            };
            out!(
                "{verb} task {} '{}'; next run: {}",
                v["id"],
                text(&v["name"]),
                text(&v["next_run_at"])
            );
        }
        C::Delete { .. } => out!("deleted task {} '{}'", v["id"], text(&v["name"])),
        C::Run { .. } => out!("{}", run_line(v)),
        C::Runs { .. } => match v.as_array() {
            Some(runs) if !runs.is_empty() => {
                out!(
                    "{:>5}  {:<9} {:<10} {:<30} result or error",
                    "run",
                    "kind",
                    "status",
                    "scheduled for"
                );
                for r in runs {
                    out!("{}", run_line(r));
                }
            }
            _ => out!("no runs"),
        },
        C::Next { .. } => {
            for t in v.as_array().into_iter().flatten() {
                out!("{}", text(t));
            }
        }
    }
}
