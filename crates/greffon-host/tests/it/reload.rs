//! Hot reload with rollback under load: clients call a plugin
//! without pause while it is reloaded again and again, once into a broken
//! version and once into one that asks for more permissions. No call may
//! fail, and every answer must come from one whole version (its `start()`
//! ran before it served).

use crate::common;

use common::alive;

use greffon_core::Config;
use greffon_host::{Host, HostError};
use greffon_protocol::api::State;
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

fn version(v: u32) -> String {
    format!(
        "import time\nVERSION = {v}\nclass P:\n    meta = {{'name': 'live', 'timeout': 10}}\n    def start(self):\n        self.started = VERSION\n    def run(self):\n        time.sleep(0.002)\n        return {{'version': VERSION, 'started': self.started}}\nplugin = P()\n"
    )
}

fn write(root: &Path, code: &str) {
    let dir = root.join("plugins/live");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("plugin.py"), code).expect("write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_load_fail_no_call_and_roll_back_bad_versions() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    write(root, &version(1));
    // A pool of two: a reload swaps both workers at once.
    let config =
        Config::parse("[plugins.live]\nworkers = 2\n", Path::new("greffon.toml")).expect("config");
    let host = Host::open_with(root, config).await.expect("host opens");
    host.enable("live").await.expect("enable");

    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (host, stop, answered) = (host.clone(), stop.clone(), answered.clone());
        clients.push(tokio::spawn(async move {
            let mut failures: Vec<String> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match host.call("live", json!({})).await {
                    Ok(v) if v["version"] == v["started"] && v["version"].is_u64() => {
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(v) => failures.push(format!("mixed answer {v}")),
                    Err(e) => failures.push(e.message),
                }
            }
            failures
        }));
    }

    let mut pids = Vec::new();
    for i in 0..20u32 {
        let v = 2 + i % 2;
        write(root, &version(v));
        host.reload("live").await.expect("reload");
        // From the moment reload returns, calls reach the new version.
        let now: Value = host.call("live", json!({})).await.expect("call");
        assert_eq!(now["version"], json!(v), "after reload {i}");
        let pool = host.worker_pids("live");
        assert_eq!(pool.len(), 2, "after reload {i}: {pool:?}");
        pids.extend(pool);
    }

    // A broken version: the running one keeps serving, with a dump.
    let before = host.call("live", json!({})).await.expect("call")["version"].clone();
    write(root, "class P:\n    meta = {'name': 'live'\n");
    let e = host.reload("live").await.expect_err("rolled back");
    let text = e.to_string();
    assert!(
        text.contains("reload failed, the running version keeps serving"),
        "{text}"
    );
    let HostError::Reload {
        dump: Some(dump), ..
    } = &e
    else {
        panic!("no dump: {e:?}");
    };
    let dump_text = std::fs::read_to_string(dump).expect("dump");
    assert!(dump_text.contains("phase: reload"), "{dump_text}");
    assert!(dump_text.contains("SyntaxError"), "{dump_text}");
    assert_eq!(
        host.call("live", json!({})).await.expect("call")["version"],
        before
    );

    // A version that asks for more than was granted is not swapped in.
    write(
        root,
        &version(9).replace("'timeout': 10", "'timeout': 10, 'permissions': ['net']"),
    );
    let e = host.reload("live").await.expect_err("refused").to_string();
    assert!(e.contains("greffon plugin enable live"), "{e}");
    assert_eq!(
        host.call("live", json!({})).await.expect("call")["version"],
        before
    );
    assert_eq!(host.plugin("live").expect("live").state, State::Enabled);

    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for c in clients {
        failures.extend(c.await.expect("client"));
    }
    assert!(
        failures.is_empty(),
        "{} failed calls: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(
        answered.load(Ordering::Relaxed) > 100,
        "the clients kept calling"
    );

    // Every replaced worker was stopped.
    let current = host.worker_pids("live");
    for pid in pids.into_iter().filter(|p| !current.contains(p)) {
        assert!(!alive(i64::from(pid)), "replaced worker {pid} still runs");
    }
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloading_a_plugin_that_is_not_enabled_says_how_to_enable_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    write(tmp.path(), &version(1));
    let host = Host::open_with(tmp.path(), Config::default())
        .await
        .expect("host opens");
    let e = host
        .reload("live")
        .await
        .expect_err("not enabled")
        .to_string();
    assert!(
        e.contains("not enabled") && e.contains("greffon plugin enable live"),
        "{e}"
    );
    host.shutdown().await;
}
