//! The host engine with real workers, for what the CLI cannot show:
//! concurrency inside one worker, calls in flight when a worker dies,
//! crash accounting, stuck calls, and process clean-up.

mod common;

use common::alive;

use greffon_core::Config;
use greffon_host::{Host, State};
use serde_json::json;
use std::path::Path;
use std::time::Duration;

fn write_plugin(root: &Path, folder: &str, code: &str) {
    let dir = root.join("plugins").join(folder);
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("plugin.py"), code).expect("write");
}

async fn host_with(root: &Path, config: &str) -> Host {
    let config = Config::parse(config, Path::new("greffon.toml")).expect("config");
    Host::open_with(root, config).await.expect("host opens")
}

/// `wait` blocks until `open`; `open` and `die` first wait (at most 10 s)
/// until `n` calls are blocked in `wait`, so the tests need no sleeps and
/// can tell calls that ran together from calls that ran one after another.
const GATE: &str = "import os, threading
COND = threading.Condition()
WAITING = [0]
GATE = threading.Event()
def waiters(n):
    with COND:
        return COND.wait_for(lambda: WAITING[0] >= n, timeout=10)
class P:
    meta = {'name': 'gate', 'timeout': 20, 'inputs': {'schema': {'op': 'string', 'n': {'type': 'integer', 'default': 0}}}}
    def run(self, op, n):
        if op == 'wait':
            with COND:
                WAITING[0] += 1
                COND.notify_all()
            return 'released' if GATE.wait(15) else 'not released'
        if op == 'open':
            ready = waiters(n)
            GATE.set()
            return 'opened' if ready else 'a waiter never started'
        if op == 'die':
            if waiters(n):
                os._exit(1)
            return 'a waiter never started'
        return op
plugin = P()
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_worker_serves_concurrent_calls_in_threads() {
    let tmp = tempfile::tempdir().expect("tempdir");
    write_plugin(tmp.path(), "gate", GATE);
    let host = host_with(tmp.path(), "").await;
    host.enable("gate").await.expect("enabled");
    let pid = host.worker_pid("gate").await;
    // Run one after the other, either order fails: `wait` first answers
    // "not released", `open` first answers "a waiter never started".
    let (waited, opened) = tokio::join!(
        host.call("gate", json!({"op": "wait"})),
        host.call("gate", json!({"op": "open", "n": 1}))
    );
    assert_eq!(opened.expect("open"), json!("opened"));
    assert_eq!(waited.expect("wait"), json!("released"));
    assert_eq!(
        host.worker_pid("gate").await,
        pid,
        "both calls ran in one worker"
    );
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_in_flight_is_answered_when_the_worker_dies() {
    let tmp = tempfile::tempdir().expect("tempdir");
    write_plugin(tmp.path(), "gate", GATE);
    let host = host_with(tmp.path(), "").await;
    host.enable("gate").await.expect("enabled");
    let waiters = futures_join(&host, 3).await;
    for w in waiters {
        let e = w.expect_err("the worker died under it");
        assert!(
            e.message
                .contains("its worker ended during the call (the worker exited with code 1)"),
            "{}",
            e.message
        );
        assert!(e.dump.is_some());
    }
    // Restarted on the next call.
    assert_eq!(
        host.call("gate", json!({"op": "hi"}))
            .await
            .expect("restarted"),
        json!("hi")
    );
    host.shutdown().await;
}

/// Starts `n` waiting calls and a `die` call that ends the worker once all
/// `n` are blocked in it.
async fn futures_join(
    host: &Host,
    n: usize,
) -> Vec<Result<serde_json::Value, greffon_host::CallError>> {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        let h = host.clone();
        set.spawn(async move { h.call("gate", json!({"op": "wait"})).await });
    }
    let h = host.clone();
    set.spawn(async move { h.call("gate", json!({"op": "die", "n": n})).await });
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        out.push(r.expect("task"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_crashes_in_a_short_window_fail_the_plugin() {
    let tmp = tempfile::tempdir().expect("tempdir");
    write_plugin(tmp.path(), "gate", GATE);
    let host = host_with(tmp.path(), "max_crashes = 3\ncrash_window_s = 60\n").await;
    host.enable("gate").await.expect("enabled");
    for _ in 0..3 {
        let e = host
            .call("gate", json!({"op": "die"}))
            .await
            .expect_err("crash");
        assert_eq!(
            e.kind,
            greffon_protocol::ErrorKind::WorkerCrashed,
            "{}",
            e.message
        );
    }
    let info = host.plugin("gate").expect("entry");
    assert_eq!(info.state, State::Failed);
    let reason = info.failure.expect("failure").reason;
    assert!(reason.contains("crashed 3 times within 60 s"), "{reason}");
    let e = host
        .call("gate", json!({"op": "hi"}))
        .await
        .expect_err("failed");
    assert!(
        e.message.contains("is failed") && e.message.contains("greffon plugin enable gate"),
        "{}",
        e.message
    );
    // Enabling again is how an operator retries.
    host.enable("gate").await.expect("re-enabled");
    assert_eq!(
        host.call("gate", json!({"op": "hi"})).await.expect("works"),
        json!("hi")
    );
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_call_is_killed_after_its_grace_and_the_plugin_recovers() {
    let tmp = tempfile::tempdir().expect("tempdir");
    write_plugin(
        tmp.path(),
        "stuck",
        "import time\nclass P:\n    meta = {'name': 'stuck', 'inputs': {'schema': {'s': 'number'}}}\n    def run(self, s):\n        time.sleep(s)\n        return s\nplugin = P()\n",
    );
    let host = host_with(
        tmp.path(),
        "kill_grace_s = 0.3\n[plugins.stuck]\ntimeout_s = 0.3\n",
    )
    .await;
    host.enable("stuck").await.expect("enabled");
    let pid = host.worker_pid("stuck").await.expect("running");
    let e = host
        .call("stuck", json!({"s": 60}))
        .await
        .expect_err("timeout");
    assert_eq!(e.kind, greffon_protocol::ErrorKind::Timeout);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while alive(i64::from(pid)) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!alive(i64::from(pid)), "the stuck worker was killed");
    assert_eq!(
        host.call("stuck", json!({"s": 0}))
            .await
            .expect("recovered"),
        json!(0)
    );
    assert_ne!(host.worker_pid("stuck").await, Some(pid));
    host.shutdown().await;
}

/// Starts a 60 s call of `nap` cancelled by `token`; returns once the
/// plugin sleeps (it reported progress), with the call's handle.
async fn start_nap(
    host: &Host,
    token: greffon_host::CancellationToken,
) -> tokio::task::JoinHandle<Result<serde_json::Value, greffon_host::CallError>> {
    let (tx, mut started) = tokio::sync::mpsc::unbounded_channel();
    let options = greffon_host::CallOptions {
        cancel: Some(token),
        progress: Some(tx),
        ..greffon_host::CallOptions::default()
    };
    let host = host.clone();
    let call = tokio::spawn(async move { host.call_with("nap", json!({"s": 60}), options).await });
    started.recv().await.expect("the nap started");
    call
}

/// A cancelled call the worker cannot interrupt (it runs on a handler
/// thread, beside one on the main thread) gets its worker killed after the
/// grace; the one on the main thread is interrupted at once. The plugin
/// reports progress once it sleeps, so the test cancels a running call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_call_that_does_not_stop_costs_its_worker_after_the_grace() {
    use greffon_host::CancellationToken;
    let tmp = tempfile::tempdir().expect("tempdir");
    write_plugin(
        tmp.path(),
        "nap",
        "import time, greffon\nclass P:\n    meta = {'name': 'nap', 'timeout': 60, 'inputs': {'schema': {'s': 'number'}}}\n    def run(self, s):\n        greffon.progress(0)\n        time.sleep(s)\n        return s\nplugin = P()\n",
    );
    let host = host_with(tmp.path(), "kill_grace_s = 0.5\n").await;
    host.enable("nap").await.expect("enabled");
    let pid = host.worker_pid("nap").await.expect("running");
    let nap = |token| start_nap(&host, token);
    // Alone, the call runs on the main thread: interrupted, worker kept.
    let token = CancellationToken::new();
    let call = nap(token.clone()).await;
    token.cancel();
    let e = call.await.expect("joined").expect_err("cancelled");
    assert_eq!(e.kind, greffon_protocol::ErrorKind::Cancelled);
    assert_eq!(
        host.call("nap", json!({"s": 0})).await.expect("next"),
        json!(0)
    );
    assert_eq!(
        host.worker_pid("nap").await,
        Some(pid),
        "the worker was kept"
    );

    // Beside a call on the main thread, it runs on a handler thread.
    let first = nap(CancellationToken::new()).await;
    let token = CancellationToken::new();
    let second = nap(token.clone()).await;
    token.cancel();
    let e = second.await.expect("joined").expect_err("cancelled");
    assert_eq!(e.kind, greffon_protocol::ErrorKind::Cancelled);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while alive(i64::from(pid)) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !alive(i64::from(pid)),
        "the worker was killed after the grace"
    );
    let ended = first
        .await
        .expect("joined")
        .expect_err("the other call ends with it");
    assert!(
        ended.message.contains("after it was cancelled"),
        "{}",
        ended.message
    );
    assert_eq!(
        host.call("nap", json!({"s": 0})).await.expect("recovered"),
        json!(0)
    );
    host.shutdown().await;
}

/// A call cancelled while it waits for a free slot (`max_concurrent_calls`)
/// ends there, without reaching the worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_cancelled_while_queued_never_reaches_the_worker() {
    use greffon_host::CancellationToken;
    let tmp = tempfile::tempdir().expect("tempdir");
    write_plugin(
        tmp.path(),
        "nap",
        "import time, greffon\nclass P:\n    meta = {'name': 'nap', 'timeout': 60, 'inputs': {'schema': {'s': 'number'}}}\n    def run(self, s):\n        greffon.progress(0)\n        time.sleep(s)\n        return s\nplugin = P()\n",
    );
    let host = host_with(tmp.path(), "max_concurrent_calls = 1\nkill_grace_s = 0.5\n").await;
    host.enable("nap").await.expect("enabled");
    let pid = host.worker_pid("nap").await;
    let holder = CancellationToken::new();
    let first = start_nap(&host, holder.clone()).await;
    let token = CancellationToken::new();
    let (tx, mut reports) = tokio::sync::mpsc::unbounded_channel();
    let queued = greffon_host::CallOptions {
        cancel: Some(token.clone()),
        progress: Some(tx),
        ..greffon_host::CallOptions::default()
    };
    let waiting = host.clone();
    let second =
        tokio::spawn(async move { waiting.call_with("nap", json!({"s": 60}), queued).await });
    token.cancel();
    let e = second.await.expect("joined").expect_err("cancelled");
    assert_eq!(e.kind, greffon_protocol::ErrorKind::Cancelled);
    assert!(reports.try_recv().is_err(), "the queued call never ran");
    // The first call is still the one running, in the same worker.
    assert_eq!(host.worker_pid("nap").await, pid);
    holder.cancel();
    let e = first.await.expect("joined").expect_err("cancelled");
    assert_eq!(e.kind, greffon_protocol::ErrorKind::Cancelled);
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_every_worker_process() {
    let tmp = tempfile::tempdir().expect("tempdir");
    write_plugin(tmp.path(), "gate", GATE);
    write_plugin(tmp.path(), "other", &GATE.replace("'gate'", "'other'"));
    let host = host_with(tmp.path(), "").await;
    host.enable("gate").await.expect("enabled");
    host.enable("other").await.expect("enabled");
    let pids = [
        host.worker_pid("gate").await.expect("pid"),
        host.worker_pid("other").await.expect("pid"),
    ];
    assert!(pids.iter().all(|p| alive(i64::from(*p))));
    host.shutdown().await;
    for pid in pids {
        assert!(
            !alive(i64::from(pid)),
            "worker {pid} still running after shutdown"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_between_calls_is_replaced_on_the_next_call() {
    let tmp = tempfile::tempdir().expect("tempdir");
    write_plugin(tmp.path(), "gate", GATE);
    let host = host_with(tmp.path(), "max_crashes = 10\n").await;
    host.enable("gate").await.expect("enabled");
    for _ in 0..3 {
        let pid = host.worker_pid("gate").await.expect("running");
        // SAFETY: plain syscall on a worker this test owns.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
        // Until the host reaps it, a dying worker may still hold its end
        // of the channel (threads exit one by one), and a call written in
        // that window reaches it.
        while Path::new(&format!("/proc/{pid}")).exists() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            host.call("gate", json!({"op": "hi"}))
                .await
                .expect("replaced"),
            json!("hi")
        );
    }
    host.shutdown().await;
}
