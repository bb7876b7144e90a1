//! Building one environment with uv: a venv in a staging folder, the
//! requirements installed into it, then renamed into place, so that a
//! half-built environment is never used.

use super::{BuildError, RECORD, Requirements};
use crate::logging::ENV_TARGET;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::{AsyncBufReadExt, BufReader};

/// uv's own settings a user's mirror or offline cache relies on, passed
/// through; uv sees nothing else of greffon's environment but `PATH` and
/// `HOME` (its default cache) and the proxy and certificate variables.
const PASSED: &[&str] = &[
    "PATH",
    "HOME",
    "XDG_CACHE_HOME",
    "UV_INDEX_URL",
    "UV_EXTRA_INDEX_URL",
    "UV_DEFAULT_INDEX",
    "UV_INDEX",
    "UV_FIND_LINKS",
    "UV_OFFLINE",
    "UV_CACHE_DIR",
    "UV_LINK_MODE",
    "UV_NATIVE_TLS",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
];

/// `UV_NO_INDEX` set to a true value: `uv pip install` has `--no-index`
/// but reads no variable for it (uv 0.13), so greffon passes the flag,
/// and an offline mirror of wheels (`UV_FIND_LINKS`) is all uv consults.
fn no_index() -> bool {
    std::env::var("UV_NO_INDEX").is_ok_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        )
    })
}

/// Tells concurrent staging folders apart.
static STAGING: AtomicU64 = AtomicU64::new(0);

/// What to build and where.
pub(super) struct Plan<'a> {
    pub uv: &'a Path,
    /// The base interpreter the venv is made from.
    pub python: &'a Path,
    pub reqs: &'a Requirements,
    pub dest: &'a Path,
    pub allow_build: bool,
    /// Who asked, for the logs.
    pub plugin: &'a str,
}

/// Builds the environment at `plan.dest`. Another process building the
/// same key at the same time is harmless: the first rename wins and the
/// other build is dropped.
pub(super) async fn build(plan: &Plan<'_>) -> Result<(), BuildError> {
    let parent = plan.dest.parent().unwrap_or(plan.dest);
    std::fs::create_dir_all(parent).map_err(|e| io_error(parent, e))?;
    let staging = parent.join(format!(
        ".build-{}-{}-{}",
        std::process::id(),
        STAGING.fetch_add(1, Ordering::Relaxed),
        plan.dest
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("env"),
    ));
    let outcome = build_in(plan, &staging).await;
    if outcome.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
        return outcome;
    }
    match std::fs::rename(&staging, plan.dest) {
        Ok(()) => Ok(()),
        // Built meanwhile by another process: use theirs.
        Err(_) if plan.dest.join(RECORD).is_file() => {
            let _ = std::fs::remove_dir_all(&staging);
            Ok(())
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            Err(io_error(plan.dest, e))
        }
    }
}

async fn build_in(plan: &Plan<'_>, staging: &Path) -> Result<(), BuildError> {
    let started = std::time::Instant::now();
    tracing::info!(
        target: ENV_TARGET,
        plugin = plan.plugin,
        requirements = ?plan.reqs.lines,
        "installing {} for plugin '{}' into a new environment (uv)",
        plan.reqs.lines.join(", "),
        plan.plugin
    );
    let mut log = String::new();
    let mut venv = vec!["venv", "--quiet", "--python"];
    let python = plan.python.to_string_lossy();
    venv.push(&python);
    let staging_text = staging.to_string_lossy();
    venv.push(&staging_text);
    run_uv(plan, &venv, &mut log).await?;

    let list = staging.join("greffon-requirements.txt");
    std::fs::write(&list, plan.reqs.lines.join("\n") + "\n").map_err(|e| io_error(&list, e))?;
    let env_python = staging.join("bin").join("python");
    let env_python = env_python.to_string_lossy();
    let list_text = list.to_string_lossy();
    let mut install = vec!["pip", "install", "--python", &env_python, "-r", &list_text];
    if !plan.allow_build {
        install.push("--no-build");
    }
    if no_index() {
        install.push("--no-index");
    }
    run_uv(plan, &install, &mut log).await?;
    compile_bytecode(plan.python, staging, &mut log).await?;

    let record = serde_json::json!({
        "requirements": plan.reqs.lines,
        "declared_in": plan.reqs.source,
        "python": plan.python,
        "built_for": plan.plugin,
        "built_at": chrono::Utc::now().to_rfc3339(),
    });
    let path = staging.join(RECORD);
    std::fs::write(
        &path,
        serde_json::to_vec_pretty(&record).unwrap_or_default(),
    )
    .map_err(|e| io_error(&path, e))?;
    tracing::info!(
        target: ENV_TARGET,
        plugin = plan.plugin,
        ms = started.elapsed().as_millis() as u64,
        "environment built"
    );
    Ok(())
}

/// Runs uv with `args`, each line it prints logged (a progress line per
/// step) and kept in `log`; fails with uv's own error lines.
async fn run_uv(plan: &Plan<'_>, args: &[&str], log: &mut String) -> Result<(), BuildError> {
    let mut cmd = tokio::process::Command::new(plan.uv);
    cmd.args(args)
        .env_clear()
        .envs(
            PASSED
                .iter()
                .filter_map(|k| Some((k, std::env::var_os(k)?))),
        )
        // Never fetch an interpreter: the environment uses greffon's.
        .env("UV_PYTHON_DOWNLOADS", "never")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        // uv reports on stderr; stdout carries nothing of use here.
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(dir) = plan.dest.parent() {
        // No project file of the caller's working folder applies.
        cmd.current_dir(dir);
    }
    let mut child = cmd.spawn().map_err(|e| BuildError {
        message: format!("cannot run uv ({}): {e}", plan.uv.display()),
        log: String::new(),
    })?;
    if let Some(stderr) = child.stderr.take() {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if !line.trim().is_empty() {
                tracing::info!(target: ENV_TARGET, plugin = plan.plugin, "uv: {}", line.trim_end());
            }
            log.push_str(&line);
            log.push('\n');
        }
    }
    let status = child.wait().await.map_err(|e| BuildError {
        message: format!("uv could not be waited for: {e}"),
        log: log.clone(),
    })?;
    if status.success() {
        return Ok(());
    }
    Err(BuildError {
        message: format!("uv {} failed: {}", args[..2].join(" "), summary(log)),
        log: log.clone(),
    })
}

/// Compiles the environment's modules now, since the environment is
/// read-only to workers, which could not cache bytecode themselves. Not
/// uv's `--compile-bytecode`: that starts the environment's interpreter
/// with `site`, which runs the packages' `.pth` files here, outside any
/// sandbox. The base interpreter with `-I -S` imports nothing of them.
async fn compile_bytecode(
    python: &Path,
    staging: &Path,
    log: &mut String,
) -> Result<(), BuildError> {
    let out = tokio::process::Command::new(python)
        .args(["-I", "-S", "-m", "compileall", "-q"])
        .arg(staging.join("lib"))
        .env_clear()
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| BuildError {
            message: format!("cannot run {} to compile bytecode: {e}", python.display()),
            log: log.clone(),
        })?;
    log.push_str(&String::from_utf8_lossy(&out.stdout));
    log.push_str(&String::from_utf8_lossy(&out.stderr));
    // A module that does not compile is reported by compileall, but only
    // fails if it is imported: the environment stays usable.
    if !out.status.success() {
        tracing::warn!(target: ENV_TARGET, "compileall: some modules did not compile (they fail when imported)");
    }
    Ok(())
}

/// uv's error in one paragraph: its lines from the first error mark on.
fn summary(log: &str) -> String {
    let lines: Vec<&str> = log
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let start = lines
        .iter()
        .position(|l| l.starts_with('×') || l.starts_with("error"))
        .unwrap_or(0);
    let text = lines[start..].join(" ");
    match text.char_indices().nth(1200) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text,
    }
}

fn io_error(path: &Path, e: std::io::Error) -> BuildError {
    BuildError {
        message: format!("cannot write {}: {e}", path.display()),
        log: String::new(),
    }
}

/// Removes staging folders whose building process is gone.
pub(super) fn sweep_stale(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(".build-")
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: signal 0 only checks that the process exists.
        if pid > 0 && unsafe { libc::kill(pid, 0) } != 0 {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_starts_at_uvs_error() {
        let log = "Using CPython 3.11\n  × No solution found when resolving dependencies:\n  ╰─▶ Because nothing-here was not found in the package registry, we can conclude\n";
        assert_eq!(
            summary(log),
            "× No solution found when resolving dependencies: ╰─▶ Because nothing-here was not found in the package registry, we can conclude"
        );
        assert_eq!(summary("just one line\n"), "just one line");
    }
}
