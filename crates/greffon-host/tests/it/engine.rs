//! The host engine with real workers, for what the CLI cannot show:
//! a pool of workers and its queue, a worker dying under a call,
//! crash accounting, stuck calls, and process clean-up.

use crate::common;

use common::alive;

use greffon_core::Config;
use greffon_host::Host;
use greffon_protocol::api::State;
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

/// A plugin for the pool tests: `nap` sleeps `s` seconds and says when, in
/// which process (CLOCK_MONOTONIC is one clock for every process); `hold`
/// reports progress, then sleeps until killed.
const POOL: &str = "import os, time, greffon
class P:
    meta = {'name': 'pool', 'timeout': 30, 'inputs': {'schema': {'op': 'string', 's': {'type': 'number', 'default': 0}}}}
    def run(self, op, s):
        if op == 'nap':
            start = time.monotonic()
            time.sleep(s)
            return {'pid': os.getpid(), 'start': start, 'end': time.monotonic()}
        if op == 'hold':
            greffon.progress(0)
            time.sleep(60)
        return op
plugin = P()
";

/// Starts a `hold` call; returns once it runs in a worker.
async fn hold(
    host: &Host,
) -> tokio::task::JoinHandle<Result<serde_json::Value, greffon_host::CallError>> {
    let (tx, mut started) = tokio::sync::mpsc::unbounded_channel();
    let options = greffon_host::CallOptions {
        progress: Some(tx),
        ..greffon_host::CallOptions::default()
    };
    let host = host.clone();
    let call =
        tokio::spawn(async move { host.call_with("pool", json!({"op": "hold"}), options).await });
    started.recv().await.expect("the hold started");
    call
}

/// Waits (at most 10 s) until `n` calls wait in the plugin's queue.
async fn queued(host: &Host, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while host.plugin("pool").expect("info").workers.queued != n {
        assert!(
            std::time::Instant::now() < deadline,
            "{n} calls never queued"
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// With `workers = 2`, six sleeping calls run two at a time, each in one of
/// two processes, never three at once, never one worker serving two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_of_two_runs_calls_two_at_a_time() {
    let tmp = tempfile::tempdir().expect("tempdir");
    write_plugin(tmp.path(), "pool", POOL);
    let host = host_with(tmp.path(), "[plugins.pool]\nworkers = 2\n").await;
    let info = host.enable("pool").await.expect("enabled");
    assert_eq!((info.workers.size, info.workers.idle), (2, 2));
    assert_eq!(host.worker_pids("pool").len(), 2);
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let h = host.clone();
        set.spawn(async move { h.call("pool", json!({"op": "nap", "s": 0.2})).await });
    }
    let mut spans = Vec::new();
    while let Some(r) = set.join_next().await {
        let v = r.expect("task").expect("call");
        spans.push((
            v["pid"].as_i64().expect("pid"),
            v["start"].as_f64().expect("start"),
            v["end"].as_f64().expect("end"),
        ));
    }
    let pids: std::collections::BTreeSet<i64> = spans.iter().map(|s| s.0).collect();
    assert_eq!(pids.len(), 2, "two workers served: {spans:?}");
    // At each call's start, how many calls were running (itself included).
    let most = spans
        .iter()
        .map(|&(_, at, _)| spans.iter().filter(|&&(_, s, e)| s <= at && at < e).count())
        .max()
        .expect("calls");
    assert_eq!(most, 2, "calls overlapped two at a time: {spans:?}");
    for &(pid, s, e) in &spans {
        let same = spans
            .iter()
            .filter(|&&(p, s2, e2)| p == pid && s2 < e && s < e2)
            .count();
        assert_eq!(same, 1, "worker {pid} served two calls at once: {spans:?}");
    }
    // A crash replaces that worker only: once the host has seen it go, the
    // other keeps serving, and two calls at once need a new second one.
    let before = host.worker_pids("pool");
    // SAFETY: plain syscall on a worker this test's host started.
    unsafe {
        libc::kill(before[0], libc::SIGKILL);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while host.worker_pids("pool").contains(&before[0]) {
        assert!(
            std::time::Instant::now() < deadline,
            "the crash was never seen"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let nap = || host.call("pool", json!({"op": "nap", "s": 0.2}));
    let (a, b) = tokio::join!(nap(), nap());
    let served: std::collections::BTreeSet<i64> = [a, b]
        .into_iter()
        .map(|r| r.expect("served")["pid"].as_i64().expect("pid"))
        .collect();
    assert_eq!(served.len(), 2, "two workers served: {served:?}");
    assert!(
        served.contains(&i64::from(before[1])),
        "the other worker kept serving: {before:?} → {served:?}"
    );
    assert!(!served.contains(&i64::from(before[0])));
    host.shutdown().await;
}

/// With every worker busy and the queue full, a call is answered "busy" at
/// once, naming the plugin and the setting, while a scheduled run waits;
/// the queued calls still run when the busy worker dies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_busy() {
    let tmp = tempfile::tempdir().expect("tempdir");
    write_plugin(tmp.path(), "pool", POOL);
    let host = host_with(tmp.path(), "[plugins.pool]\nqueue = 1\n").await;
    host.enable("pool").await.expect("enabled");
    let held = hold(&host).await;
    let h = host.clone();
    let waiting = tokio::spawn(async move { h.call("pool", json!({"op": "after"})).await });
    queued(&host, 1).await;
    let info = host.plugin("pool").expect("info");
    assert_eq!(
        (info.workers.busy, info.workers.idle, info.workers.queued),
        (1, 0, 1)
    );
    let e = host
        .call("pool", json!({"op": "third"}))
        .await
        .expect_err("busy");
    assert_eq!(e.kind, greffon_protocol::ErrorKind::Busy);
    assert!(
        e.message.starts_with("plugin 'pool' is busy"),
        "{}",
        e.message
    );
    assert!(
        e.message.contains("[plugins.pool] workers or queue"),
        "{}",
        e.message
    );
    // A scheduled run is never dropped for load: it waits past the limit.
    let h = host.clone();
    let scheduled = tokio::spawn(async move {
        h.call_with_timeout("pool", json!({"op": "due"}), None)
            .await
    });
    queued(&host, 2).await;
    // The worker is killed under the held call: the queued one is served
    // by its replacement, not lost.
    let pid = host.worker_pid("pool").await.expect("pid");
    // SAFETY: plain syscall on a worker this test's host started.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    let e = held.await.expect("joined").expect_err("its worker died");
    assert_eq!(e.kind, greffon_protocol::ErrorKind::WorkerCrashed);
    assert!(e.dump.is_some());
    assert_eq!(
        waiting.await.expect("joined").expect("served"),
        json!("after")
    );
    assert_eq!(
        scheduled.await.expect("joined").expect("served"),
        json!("due")
    );
    assert_ne!(host.worker_pid("pool").await, Some(pid));
    host.shutdown().await;
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

/// A cancelled call is interrupted in its worker (a signal to the thread
/// running it), which is kept; a call that swallows the interruption keeps
/// its worker busy until the grace ends, then costs it: the worker is
/// killed and the next call gets a new one, never the busy one. The plugin
/// reports progress once it sleeps, so the test cancels a running call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_call_that_does_not_stop_costs_its_worker_after_the_grace() {
    use greffon_host::CancellationToken;
    let tmp = tempfile::tempdir().expect("tempdir");
    write_plugin(
        tmp.path(),
        "nap",
        "import signal, time, greffon\nclass P:\n    meta = {'name': 'nap', 'timeout': 60, 'inputs': {'schema': {'s': 'number'}}}\n    def run(self, s):\n        if s < 0:\n            signal.signal(signal.SIGUSR1, signal.SIG_IGN)\n            s = 60\n        greffon.progress(0)\n        time.sleep(s)\n        return s\nplugin = P()\n",
    );
    let host = host_with(tmp.path(), "kill_grace_s = 0.5\n").await;
    host.enable("nap").await.expect("enabled");
    let pid = host.worker_pid("nap").await.expect("running");
    let nap = |token| start_nap(&host, token);
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

    // A call that ignores the interruption (as C code blocking in a
    // library would).
    let (tx, mut started) = tokio::sync::mpsc::unbounded_channel();
    let token = CancellationToken::new();
    let options = greffon_host::CallOptions {
        cancel: Some(token.clone()),
        progress: Some(tx),
        ..greffon_host::CallOptions::default()
    };
    let stubborn = host.clone();
    let call =
        tokio::spawn(async move { stubborn.call_with("nap", json!({"s": -1}), options).await });
    started.recv().await.expect("the stubborn nap started");
    token.cancel();
    let e = call.await.expect("joined").expect_err("cancelled");
    assert_eq!(e.kind, greffon_protocol::ErrorKind::Cancelled);
    // The next call waits for a worker: the busy one is killed after the
    // grace and a new one answers.
    let next = host.call("nap", json!({"s": 0})).await.expect("recovered");
    assert_eq!(next, json!(0));
    assert!(!alive(i64::from(pid)), "the stuck worker was killed");
    assert_ne!(host.worker_pid("nap").await, Some(pid));
    host.shutdown().await;
}

/// A call cancelled while it waits in the queue for the plugin's one
/// worker ends there, without reaching it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_cancelled_while_queued_never_reaches_the_worker() {
    use greffon_host::CancellationToken;
    let tmp = tempfile::tempdir().expect("tempdir");
    write_plugin(
        tmp.path(),
        "nap",
        "import time, greffon\nclass P:\n    meta = {'name': 'nap', 'timeout': 60, 'inputs': {'schema': {'s': 'number'}}}\n    def run(self, s):\n        greffon.progress(0)\n        time.sleep(s)\n        return s\nplugin = P()\n",
    );
    let host = host_with(tmp.path(), "workers = 1\nkill_grace_s = 0.5\n").await;
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

/// A call waiting in the queue when the host shuts down is answered
/// (the host is stopping), not left waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_queued_at_shutdown_is_answered() {
    let tmp = tempfile::tempdir().expect("tempdir");
    write_plugin(tmp.path(), "pool", POOL);
    let host = host_with(tmp.path(), "stop_timeout_s = 1\n").await;
    host.enable("pool").await.expect("enabled");
    let held = hold(&host).await;
    let h = host.clone();
    let waiting = tokio::spawn(async move { h.call("pool", json!({"op": "after"})).await });
    queued(&host, 1).await;
    host.shutdown().await;
    let e = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("answered, not left waiting")
        .expect("joined")
        .expect_err("refused");
    assert!(
        e.message.contains("greffon is shutting down"),
        "{}",
        e.message
    );
    assert!(
        held.await.expect("joined").is_err(),
        "the held call ended with its worker"
    );
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

/// A worker that dies while it starts, replacing a crashed one, is one
/// more crash (counted under `max_crashes`), not a failed plugin: the next
/// call starts another (found by the chaos test, whose kills sometimes hit
/// a worker in its `start()`, after which the plugin stayed failed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_dying_in_its_start_is_a_crash_not_a_failed_plugin() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data/flaky");
    std::fs::create_dir_all(&data).expect("data");
    // start() counts its runs in the data folder and dies on the second.
    let code = format!(
        "import os
DATA = {data:?}
class P:
    meta = {{'name': 'flaky', 'permissions': ['fs_write'], 'paths': {{'write': [DATA]}},
            'inputs': {{'schema': {{'op': 'string'}}}}}}
    def start(self):
        path = os.path.join(DATA, 'starts')
        n = int(open(path).read()) if os.path.exists(path) else 0
        with open(path, 'w') as f:
            f.write(str(n + 1))
        if n == 1:
            os._exit(3)
    def run(self, op):
        if op == 'crash':
            os._exit(1)
        return op
plugin = P()
",
        data = data.to_str().expect("utf-8")
    );
    write_plugin(tmp.path(), "flaky", &code);
    let host = host_with(tmp.path(), "max_crashes = 10\n").await;
    host.enable("flaky").await.expect("enabled");
    let e = host
        .call("flaky", json!({"op": "crash"}))
        .await
        .expect_err("crash");
    assert_eq!(
        e.kind,
        greffon_protocol::ErrorKind::WorkerCrashed,
        "{}",
        e.message
    );
    // The replacement dies in start(): this call fails, the plugin does not.
    let e = host
        .call("flaky", json!({"op": "hi"}))
        .await
        .expect_err("the replacement died");
    assert!(e.message.contains("could not start"), "{}", e.message);
    let info = host.plugin("flaky").expect("entry");
    assert_eq!(info.state, State::Enabled, "{:?}", info.failure);
    assert_eq!(
        host.call("flaky", json!({"op": "hi"}))
            .await
            .expect("a third worker serves"),
        json!("hi")
    );
    let starts = std::fs::read_to_string(data.join("starts")).expect("counted");
    assert_eq!(starts, "3");
    host.shutdown().await;
}

/// A folder declaring the name of a plugin already in the registry is the
/// one refused, naming both folders, whether it is found by discovering
/// the rest after a host opened for one plugin, or by re-reading a folder
/// that changed; the first plugin keeps answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_declaring_a_name_already_taken_is_refused_naming_both() {
    let home = tempfile::tempdir().expect("tempdir");
    let echo = |name: &str| {
        format!(
            "class P:\n    meta = {{'name': '{name}'}}\n    def run(self):\n        return '{name}'\nplugin = P()\n"
        )
    };
    write_plugin(home.path(), "a", &echo("a"));
    write_plugin(home.path(), "b", &echo("b"));
    write_plugin(home.path(), "copy", &echo("a"));
    let config = Config::parse("", Path::new("greffon.toml")).expect("config");
    let host = Host::open_for(home.path(), config, "a")
        .await
        .expect("opens");
    host.enable("a").await.expect("a enabled");
    assert_eq!(host.plugins().len(), 1, "only plugins/a was imported");
    // Asking for b discovers the other folders.
    host.enable("b").await.expect("b enabled");
    let refused = |host: &Host, folder: &str| {
        let list = host.plugins();
        let entry = list.iter().find(|p| p.folder == folder).expect("listed");
        assert_eq!(entry.state, State::Failed, "{entry:?}");
        let reason = &entry.failure.as_ref().expect("why").reason;
        assert!(
            reason.contains("plugins/a") && reason.contains(&format!("plugins/{folder}")),
            "{reason}"
        );
    };
    refused(&host, "copy");
    assert_eq!(
        host.call("a", json!({})).await.expect("a answers"),
        json!("a")
    );

    // b's folder now declares a too: read again, it is refused the same way.
    write_plugin(home.path(), "b", &echo("a"));
    host.disable("b").await.expect("b disabled");
    host.sync_folder("b").await.expect("re-read");
    refused(&host, "b");
    assert_eq!(
        host.call("a", json!({})).await.expect("a answers"),
        json!("a")
    );
    host.shutdown().await;
}
