//! `cargo bench -p greffon-host --bench calls`: the figures of the
//! walking skeleton, each beside the floor measured in the same run.
//!
//! - floor: a bare JSON-lines round trip to a Python process over a
//!   socketpair (blocking Rust driver, 1 in flight);
//! - the floor driven by tokio instead of blocking I/O: what any async
//!   driver pays before greffon adds anything;
//! - full path: `Host::call` on a trivial plugin — validation, framing,
//!   the worker, the result — 1 in flight, on the current-thread runtime
//!   the CLI uses;
//! - enable → first answered call;
//! - RSS of an idle worker, plain and with a Pydantic schema.
//!
//! The floor and the full path are timed in alternating batches, so that
//! drift in the machine's speed (a shared 2-vCPU VM) hits both alike, and
//! in three layouts: unpinned, both on one CPU, one CPU each.
//!
//! `GREFFON_BENCH_CALLS` sets the number of timed calls (default 20000);
//! `GREFFON_BENCH_SANDBOX=off` runs the workers without the sandbox.

mod support;

use greffon_core::Config;
use greffon_host::Host;
use serde_json::json;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const TRIVIAL: &str = "class P:\n    meta = {'name': 'trivial', 'inputs': {'schema': {'n': 'integer'}}}\n    def run(self, n):\n        return n\nplugin = P()\n";
const PYDANTIC: &str = "from pydantic import BaseModel\nclass A(BaseModel):\n    n: int\nclass P:\n    meta = {'name': 'pyd', 'inputs': {'schema': A}}\n    def run(self, n):\n        return n\nplugin = P()\n";

struct Stats {
    p50: Duration,
    p99: Duration,
    per_s: f64,
}

fn stats(mut samples: Vec<Duration>, total: Duration) -> Stats {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    Stats {
        p50: at(0.50),
        p99: at(0.99),
        per_s: samples.len() as f64 / total.as_secs_f64(),
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A Python process answering JSON lines on fd 3, driven by blocking I/O.
struct Floor {
    child: std::process::Child,
    reader: BufReader<std::os::unix::net::UnixStream>,
    writer: std::os::unix::net::UnixStream,
    line: String,
}

impl Floor {
    fn start(python: &Path) -> Floor {
        let (child, ours) = support::start_floor(python);
        Floor {
            child,
            reader: BufReader::new(ours.try_clone().expect("clone")),
            writer: ours,
            line: String::new(),
        }
    }

    fn round_trip(&mut self, id: usize) {
        let req = json!({"id": id, "method": "run", "params": {"args": {"n": id}}});
        let mut bytes = serde_json::to_vec(&req).expect("json");
        bytes.push(b'\n');
        self.writer.write_all(&bytes).expect("write");
        self.line.clear();
        self.reader.read_line(&mut self.line).expect("read");
        let v: serde_json::Value = serde_json::from_str(&self.line).expect("json");
        assert_eq!(v["result"]["n"], id);
    }

    fn stop(mut self) {
        // The reader holds a clone of the socket: shut it down so the
        // worker sees end of file.
        let _ = self.writer.shutdown(std::net::Shutdown::Both);
        let _ = self.child.wait();
    }
}

/// The floor's round trip driven by a tokio current-thread runtime instead
/// of blocking I/O: what any async driver pays, for reading the full path.
fn async_floor(rt: &tokio::runtime::Runtime, python: &Path, layout: Layout, calls: usize) -> Stats {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let floor = Floor::start(python);
    pin_process(floor.child.id() as i32, layout.python_cpu());
    let Floor { child, writer, .. } = floor;
    writer.set_nonblocking(true).expect("nonblocking");
    let stream = rt
        .block_on(async { tokio::net::UnixStream::from_std(writer) })
        .expect("tokio stream");
    let samples = rt.block_on(async move {
        let (r, mut w) = stream.into_split();
        let mut r = tokio::io::BufReader::new(r);
        let mut line = String::new();
        let mut samples = Vec::with_capacity(calls);
        let start = Instant::now();
        for i in 0..calls + calls / 10 {
            let t = Instant::now();
            let req = json!({"id": i, "method": "run", "params": {"args": {"n": i}}});
            let mut bytes = serde_json::to_vec(&req).expect("json");
            bytes.push(b'\n');
            w.write_all(&bytes).await.expect("write");
            line.clear();
            r.read_line(&mut line).await.expect("read");
            if i >= calls / 10 {
                samples.push(t.elapsed());
            }
        }
        (samples, start.elapsed())
    });
    let mut child = child;
    let _ = child.kill();
    let _ = child.wait();
    stats(samples.0, samples.1)
}

/// Times `calls` floor round trips and `calls` full-path calls on `rt`, in
/// alternating batches.
fn compare(
    rt: &tokio::runtime::Runtime,
    host: &Host,
    floor: &mut Floor,
    calls: usize,
) -> (Stats, Stats) {
    const ROUNDS: usize = 20;
    let batch = (calls / ROUNDS).max(1);
    for i in 0..batch {
        floor.round_trip(i);
        rt.block_on(host.call("trivial", json!({"n": i})))
            .expect("call");
    }
    let (mut floor_samples, mut full_samples) = (Vec::new(), Vec::new());
    let (mut floor_total, mut full_total) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..ROUNDS {
        let start = Instant::now();
        for i in 0..batch {
            let t = Instant::now();
            floor.round_trip(i);
            floor_samples.push(t.elapsed());
        }
        floor_total += start.elapsed();
        let start = Instant::now();
        rt.block_on(async {
            for i in 0..batch {
                let t = Instant::now();
                let v = host.call("trivial", json!({"n": i})).await.expect("call");
                full_samples.push(t.elapsed());
                debug_assert_eq!(v, json!(i));
            }
        });
        full_total += start.elapsed();
    }
    (
        stats(floor_samples, floor_total),
        stats(full_samples, full_total),
    )
}

/// Which CPUs the driver and the Python process run on.
#[derive(Debug, Clone, Copy)]
enum Layout {
    Unpinned,
    /// Driver and Python on CPU 0.
    SameCpu,
    /// Driver on CPU 0, Python on CPU 1.
    SplitCpus,
}

impl Layout {
    fn name(self) -> &'static str {
        match self {
            Layout::Unpinned => "unpinned",
            Layout::SameCpu => "pinned to one CPU",
            Layout::SplitCpus => "pinned to two CPUs",
        }
    }

    fn driver_cpu(self) -> Option<usize> {
        match self {
            Layout::Unpinned => None,
            Layout::SameCpu | Layout::SplitCpus => Some(0),
        }
    }

    fn python_cpu(self) -> Option<usize> {
        match self {
            Layout::Unpinned => None,
            Layout::SameCpu => Some(0),
            Layout::SplitCpus => Some(1),
        }
    }
}

/// Pins the calling thread to `cpu`, or lets it run anywhere.
fn pin(cpu: Option<usize>) {
    set_affinity(0, cpu);
}

/// Pins thread `tid` (0: the caller) to `cpu`, or lets it run anywhere.
fn set_affinity(tid: i32, cpu: Option<usize>) {
    // SAFETY: cpu_set_t is plain data; sched_setaffinity reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        for c in 0..cpus {
            if cpu.is_none_or(|only| only == c) {
                libc::CPU_SET(c, &mut set);
            }
        }
        libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn write_plugin(root: &Path, folder: &str, code: &str) {
    let dir = root.join("plugins").join(folder);
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("plugin.py"), code).expect("write");
}

/// Pins every thread of process `pid` (the Python side) to `cpu`.
fn pin_process(pid: i32, cpu: Option<usize>) {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return;
    };
    for task in tasks.filter_map(Result::ok) {
        if let Some(tid) = task
            .file_name()
            .to_str()
            .and_then(|t| t.parse::<i32>().ok())
        {
            set_affinity(tid, cpu);
        }
    }
}

/// The runtime the CLI runs on.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// One layout's figures.
struct Row {
    layout: Layout,
    floor: Stats,
    async_floor: Stats,
    full: Stats,
}

/// The default configuration, or `sandbox = "off"` when
/// `GREFFON_BENCH_SANDBOX=off` (to see what the sandbox costs per call).
fn bench_config() -> Config {
    let off = std::env::var("GREFFON_BENCH_SANDBOX").is_ok_and(|v| v == "off");
    let text = if off { "sandbox = \"off\"\n" } else { "" };
    Config::parse(text, Path::new("greffon.toml")).expect("config")
}

fn measure(layout: Layout, python: &Path, root: &Path, calls: usize) -> Row {
    // The runtime runs on this thread, the driver; the Python processes are
    // pinned by pid once their threads exist.
    pin(layout.driver_cpu());
    let rt = runtime();
    let host = rt
        .block_on(Host::open_with(root, bench_config()))
        .expect("host opens");
    rt.block_on(async {
        host.enable("trivial").await.expect("enable");
        host.call("trivial", json!({"n": 0})).await.expect("call");
    });
    let worker = rt.block_on(host.worker_pid("trivial")).expect("running");
    pin_process(worker, layout.python_cpu());
    let mut floor = Floor::start(python);
    pin_process(floor.child.id() as i32, layout.python_cpu());
    let (floor_stats, full) = compare(&rt, &host, &mut floor, calls);
    floor.stop();
    let async_floor = async_floor(&rt, python, layout, calls);
    rt.block_on(host.shutdown());
    pin(None);
    Row {
        layout,
        floor: floor_stats,
        async_floor,
        full,
    }
}

fn main() {
    // `cargo bench` passes --bench; there is nothing to filter.
    let calls: usize = std::env::var("GREFFON_BENCH_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let tmp = tempfile::tempdir().expect("tempdir");
    write_plugin(tmp.path(), "trivial", TRIVIAL);
    let with_pydantic =
        Command::new(std::env::var_os("GREFFON_PYTHON").unwrap_or_else(|| "python3".into()))
            .args(["-c", "import pydantic"])
            .output()
            .is_ok_and(|o| o.status.success());
    if with_pydantic {
        write_plugin(tmp.path(), "pyd", PYDANTIC);
    }
    let rt = runtime();
    let host = rt
        .block_on(Host::open_with(tmp.path(), bench_config()))
        .expect("host opens");
    let python = host.python().to_path_buf();
    println!(
        "greffon call-path benchmark ({calls} timed calls per row,1 in flight, current-thread runtime as in the CLI)"
    );
    println!("python: {}", python.display());

    let (enable_p50, enable_max) = rt.block_on(async {
        let mut samples = Vec::new();
        for _ in 0..15 {
            host.disable("trivial").await.expect("disable");
            let t = Instant::now();
            host.enable("trivial").await.expect("enable");
            host.call("trivial", json!({"n": 1})).await.expect("call");
            samples.push(t.elapsed());
        }
        samples.sort();
        (samples[samples.len() / 2], samples[samples.len() - 1])
    });
    let idle_rss = rt.block_on(async {
        let pid = host.worker_pid("trivial").await.expect("running");
        tokio::time::sleep(Duration::from_millis(200)).await;
        rss_kib(pid)
    });
    let pyd_rss = with_pydantic.then(|| {
        rt.block_on(async {
            host.enable("pyd").await.expect("enable pyd");
            host.call("pyd", json!({"n": 1})).await.expect("call");
            let pid = host.worker_pid("pyd").await.expect("running");
            rss_kib(pid)
        })
    });
    rt.block_on(host.shutdown());
    drop(rt);

    // Where the scheduler puts the driver and the Python process (one CPU
    // or two) changes a round trip by up to 2x on this kind of VM, and it
    // may place the floor and the full path differently: each layout is
    // also measured pinned, the floor and the full path alike.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut layouts = vec![Layout::Unpinned, Layout::SameCpu];
    if cpus >= 2 {
        layouts.push(Layout::SplitCpus);
    }
    let rows: Vec<Row> = layouts
        .into_iter()
        .map(|l| measure(l, &python, tmp.path(), calls))
        .collect();

    let row = |label: &str, s: &Stats| {
        println!(
            "{label:<46} {:>9.1} {:>9.1} {:>10.0}",
            us(s.p50),
            us(s.p99),
            s.per_s
        );
    };
    println!();
    println!(
        "{:<46} {:>9} {:>9} {:>10}",
        "path", "p50 µs", "p99 µs", "calls/s"
    );
    for r in &rows {
        row(&format!("floor, {}", r.layout.name()), &r.floor);
        row(
            &format!("floor driven by tokio, {}", r.layout.name()),
            &r.async_floor,
        );
        row(&format!("full path, {}", r.layout.name()), &r.full);
    }
    println!();
    for r in &rows {
        println!(
            "full-path p50 / floor p50, {:<20} {:.2}x (target <= 1.5x)",
            r.layout.name(),
            r.full.p50.as_secs_f64() / r.floor.p50.as_secs_f64()
        );
    }
    println!(
        "enable -> first call:           p50 {:.1} ms, max {:.1} ms (target <= 80 ms)",
        ms(enable_p50),
        ms(enable_max)
    );
    println!(
        "idle worker RSS:                {:.1} MiB",
        idle_rss as f64 / 1024.0
    );
    match pyd_rss {
        Some(kib) => println!(
            "idle worker RSS with pydantic:  {:.1} MiB",
            kib as f64 / 1024.0
        ),
        None => println!("idle worker RSS with pydantic:  (pydantic not installed)"),
    }
}
