//! A plugin printing hundreds of MiB must not grow the host's memory.
//! Alone in its test binary: peak RSS is per process, and other tests would
//! pollute it.

use greffon_core::Config;
use greffon_host::Host;
use serde_json::json;

fn max_rss_kib() -> i64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given.
    unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init().ru_maxrss
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_floods_do_not_grow_host_memory() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("plugins/flood");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(
        dir.join("plugin.py"),
        "import sys, threading\nCHUNK = 'y' * (1 << 20) + '\\n'\ndef spew():\n    for _ in range(64):\n        sys.stdout.write(CHUNK)\n    sys.stdout.flush()\nclass P:\n    meta = {'name': 'flood'}\n    def run(self):\n        for _ in range(64):\n            print(CHUNK)\n        t = threading.Thread(target=spew)\n        t.start(); t.join()\n        return 'done'\nplugin = P()\n",
    )
    .expect("write");
    let host = Host::open_with(tmp.path(), Config::default())
        .await
        .expect("host opens");
    host.enable("flood").await.expect("enabled");
    let before = max_rss_kib();
    for _ in 0..2 {
        assert_eq!(
            host.call("flood", json!({})).await.expect("call"),
            json!("done")
        );
    }
    let grown_mib = (max_rss_kib() - before) / 1024;
    assert!(
        grown_mib < 48,
        "256 MiB printed; host peak RSS grew by {grown_mib} MiB"
    );
    host.shutdown().await;
}
