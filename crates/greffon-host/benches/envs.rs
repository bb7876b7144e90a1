//! `cargo bench -p greffon-host --bench envs`: plugins' Python
//! environments, built with the real uv from a wheel made here (no
//! network: `UV_FIND_LINKS` + `UV_NO_INDEX`).
//!
//! - first build: enable → first call of a plugin needing one package, in
//!   a new home, with uv's cache empty, then with it warm;
//! - cached: enable → first call of that plugin once its environment is
//!   built, beside the same plugin declaring nothing, in alternating
//!   rounds (p50 of `GREFFON_BENCH_ROUNDS`, default 15); the target is the
//!   difference, ≤ 60 ms;
//! - disk: an environment's bytes, and those that are its own (uv
//!   hard-links files from its cache when both are on one file system).
//!
//! Needs uv on PATH (`scripts/build-deps`) and `GREFFON_PYTHON`.

mod support;

use greffon_core::Config;
use greffon_host::Host;
use serde_json::json;
use std::path::Path;
use std::time::Instant;
use support::{env_usize, percentile};

const CODE: &str = "class P:\n    meta = {'name': 'NAME', 'inputs': {'schema': {'n': 'integer'}}}\n    def run(self, n):\n        return n\nplugin = P()\n";

/// Writes `plugins/<name>/plugin.py`, importing `tiny` at module level
/// when `needs` is set (then declared in `requirements.txt`).
fn plugin(root: &Path, name: &str, needs: bool) {
    let dir = root.join("plugins").join(name);
    std::fs::create_dir_all(&dir).expect("plugin dir");
    let code = CODE.replace("NAME", name);
    let code = if needs {
        std::fs::write(dir.join("requirements.txt"), "tiny==1.0\n").expect("requirements");
        format!("import tiny\n{code}")
    } else {
        code
    };
    std::fs::write(dir.join("plugin.py"), code).expect("plugin.py");
}

/// Enable → first answered call, in ms.
async fn enable_to_first_call(host: &Host, name: &str) -> f64 {
    let t = Instant::now();
    host.enable(name).await.expect("enable");
    host.call(name, json!({"n": 1})).await.expect("call");
    t.elapsed().as_secs_f64() * 1e3
}

/// A new home holding both plugins, enabling the one with requirements:
/// the first build's enable → first call, in ms.
async fn first_build(root: &Path) -> f64 {
    plugin(root, "plain", false);
    plugin(root, "needs", true);
    let host = Host::open_with(root, Config::default())
        .await
        .expect("host");
    let ms = enable_to_first_call(&host, "needs").await;
    host.shutdown().await;
    ms
}

fn main() {
    let rounds = env_usize("GREFFON_BENCH_ROUNDS", 15);
    let work = tempfile::tempdir().expect("tempdir");
    let wheels = work.path().join("wheels");
    std::fs::create_dir(&wheels).expect("wheels");
    let python = std::env::var("GREFFON_PYTHON").unwrap_or_else(|_| "python3".into());
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../greffon/tests/fixtures/make_wheel.py");
    let made = std::process::Command::new(&python)
        .arg(&script)
        .arg(&wheels)
        .args(["tiny", "1.0"])
        .status()
        .expect("python runs");
    assert!(made.success(), "make_wheel.py");
    // SAFETY: no other thread runs yet.
    unsafe {
        std::env::set_var("UV_FIND_LINKS", &wheels);
        std::env::set_var("UV_NO_INDEX", "1");
        std::env::set_var("UV_CACHE_DIR", work.path().join("uv-cache"));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");

    let cold_cache = rt.block_on(first_build(&work.path().join("home-1")));
    let warm_cache = rt.block_on(first_build(&work.path().join("home-2")));

    let root = work.path().join("home-2");
    let host = rt
        .block_on(Host::open_with(&root, Config::default()))
        .expect("host");
    let (mut plain, mut needs) = (Vec::new(), Vec::new());
    rt.block_on(async {
        // Warm both templates (the base interpreter's and the
        // environment's) before measuring.
        host.enable("plain").await.expect("enable");
        for _ in 0..rounds {
            host.disable("plain").await.expect("disable");
            plain.push(enable_to_first_call(&host, "plain").await);
            host.disable("needs").await.expect("disable");
            needs.push(enable_to_first_call(&host, "needs").await);
        }
        host.shutdown().await;
    });
    let envs = greffon_host::environments(&root, &Config::default()).expect("envs");
    let env = envs.first().expect("one environment");

    let (plain, needs) = (percentile(plain, 50), percentile(needs, 50));
    println!();
    println!("{:<64} {:>10}", "enable → first call", "ms");
    println!(
        "{:<64} {:>10.1}",
        "first build, one wheel, uv cache empty", cold_cache
    );
    println!(
        "{:<64} {:>10.1}",
        "first build, one wheel, uv cache warm (a new home)", warm_cache
    );
    println!(
        "{:<64} {:>10.1}",
        "environment built: p50 (plugin with requirements)", needs
    );
    println!(
        "{:<64} {:>10.1}",
        "same plugin declaring nothing: p50 (the anchor)", plain
    );
    println!(
        "{:<64} {:>10.1}",
        "difference (target ≤ 60 ms)",
        needs - plain
    );
    println!();
    println!(
        "environment {}: {} KiB of files, {} KiB its own (the rest hard-linked with uv's cache)",
        env.key,
        env.size_bytes >> 10,
        env.own_bytes >> 10
    );
}
