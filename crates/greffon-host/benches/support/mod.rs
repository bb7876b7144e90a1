//! Helpers shared by greffon's benchmarks (the server's includes this file
//! by path).

#![allow(dead_code)]

/// Pins the whole run to CPU `GREFFON_BENCH_CPU` when it is set: this
/// thread, and so every thread and worker it starts later. Returns the CPU.
pub fn pin_from_env() -> Option<usize> {
    let cpu = std::env::var("GREFFON_BENCH_CPU")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())?;
    // SAFETY: a zeroed cpu_set_t with one bit set, for this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
    Some(cpu)
}

/// The `p`th percentile (0–100) of `v`.
pub fn percentile(mut v: Vec<f64>, p: usize) -> f64 {
    v.sort_by(f64::total_cmp);
    v[(v.len() * p / 100).min(v.len() - 1)]
}

/// A knob from the environment, or its default.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The floor of the MCP and HTTP benches: `Host::call` of the `trivial`
/// plugin (arguments `{"n": i}`) in a host opened on `root`, 1 in flight,
/// after 200 warm-up calls; the latencies in µs.
pub async fn embedded_latencies(root: &std::path::Path, calls: usize) -> Vec<f64> {
    let host = greffon_host::Host::open_with(root, greffon_core::Config::default())
        .await
        .expect("host");
    host.enable("trivial").await.expect("enable");
    for i in 0..200 {
        host.call("trivial", serde_json::json!({"n": i}))
            .await
            .expect("warm");
    }
    let mut v = Vec::with_capacity(calls);
    for i in 0..calls {
        let t = std::time::Instant::now();
        host.call("trivial", serde_json::json!({"n": i}))
            .await
            .expect("call");
        v.push(t.elapsed().as_secs_f64() * 1e6);
    }
    host.shutdown().await;
    v
}

/// The floor's Python: answers JSON lines on fd 3, echoing the arguments.
const FLOOR_WORKER: &str = r#"
import json, socket
sock = socket.socket(fileno=3)
r = sock.makefile("rb")
while True:
    line = r.readline()
    if not line:
        break
    msg = json.loads(line)
    sock.sendall((json.dumps({"id": msg["id"], "result": msg["params"]["args"]}) + "\n").encode())
"#;

/// Starts the floor: a bare Python process (no sandbox, no SDK) answering
/// JSON lines on a socketpair; the process and the host's end.
pub fn start_floor(
    python: &std::path::Path,
) -> (std::process::Child, std::os::unix::net::UnixStream) {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().expect("socketpair");
    let fd = theirs.as_raw_fd();
    let mut cmd = std::process::Command::new(python);
    cmd.args(["-I", "-B", "-c", FLOOR_WORKER])
        .stdin(std::process::Stdio::null());
    // SAFETY: dup2/fcntl only, between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0);
            } else {
                libc::dup2(fd, 3);
            }
            Ok(())
        });
    }
    let child = cmd.spawn().expect("python starts");
    drop(theirs);
    (child, ours)
}
