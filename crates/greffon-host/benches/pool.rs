//! `cargo bench -p greffon-host --bench pool`: a plugin's pool under
//! concurrent load, beside the floor measured in the same run.
//!
//! - floor: bare JSON-lines round trips to Python processes over
//!   socketpairs, pipelined (a batch of requests written, then their
//!   answers read), one blocking driver thread per process — as many
//!   processes as the pool has workers;
//! - full path: `Host::call` of a trivial plugin with `workers = N` from
//!   64 tasks in flight on a multi-thread runtime with one thread per CPU
//!   (what `greffon serve` runs on); calls/s, p50 and p99;
//! - enable → first answered call, for `workers = 1` and `N` with the
//!   template warm, and cold (a fresh home, its template not started);
//! - memory of 4 idle workers and their template: RSS and PSS
//!   (`/proc/PID/smaps_rollup`), summed.
//!
//! `GREFFON_BENCH_CALLS` (default 200000), `GREFFON_BENCH_WORKERS`
//! (default 2), `GREFFON_BENCH_IN_FLIGHT` (default 64);
//! `GREFFON_BENCH_RUNTIME=current` drives the load from a current-thread
//! runtime (the CLI's) instead; `GREFFON_BENCH_TEMPLATE=off` starts the
//! workers with exec (`worker_template = false`).

mod support;

use greffon_core::Config;
use greffon_host::Host;
use serde_json::json;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use support::{env_usize, percentile};

const TRIVIAL: &str = "class P:\n    meta = {'name': 'trivial', 'inputs': {'schema': {'n': 'integer'}}}\n    def run(self, n):\n        return n\nplugin = P()\n";

/// Pipelined round trips to one bare Python process: batches of `window`
/// requests, then their answers. Answers the count done.
fn floor_process(python: &Path, calls: usize, window: usize) -> usize {
    let (mut child, ours) = support::start_floor(python);
    let mut reader = BufReader::new(ours.try_clone().expect("clone"));
    let mut writer = ours;
    let mut line = String::new();
    let mut done = 0;
    let mut batch = Vec::new();
    while done < calls {
        batch.clear();
        let n = window.min(calls - done);
        for i in 0..n {
            let req = json!({"id": done + i, "method": "run", "params": {"args": {"n": done + i}}});
            serde_json::to_writer(&mut batch, &req).expect("json");
            batch.push(b'\n');
        }
        writer.write_all(&batch).expect("write");
        for _ in 0..n {
            line.clear();
            reader.read_line(&mut line).expect("read");
            let v: serde_json::Value = serde_json::from_str(&line).expect("json");
            debug_assert!(v["result"]["n"].is_u64());
        }
        done += n;
    }
    let _ = writer.shutdown(std::net::Shutdown::Both);
    let _ = child.wait();
    done
}

/// The floor: `processes` bare Python processes, each driven by its own
/// thread with `window` requests in flight. Calls/s.
fn floor(python: &Path, processes: usize, calls: usize, window: usize) -> f64 {
    let start = Instant::now();
    let threads: Vec<_> = (0..processes)
        .map(|_| {
            let python = python.to_path_buf();
            std::thread::spawn(move || floor_process(&python, calls / processes, window))
        })
        .collect();
    let done: usize = threads.into_iter().map(|t| t.join().expect("floor")).sum();
    done as f64 / start.elapsed().as_secs_f64()
}

struct Load {
    per_s: f64,
    p50_us: f64,
    p99_us: f64,
}

/// `calls` calls of the trivial plugin from `in_flight` tasks.
async fn load(host: &Host, calls: usize, in_flight: usize) -> Load {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..in_flight {
        let (host, next) = (host.clone(), next.clone());
        tasks.spawn(async move {
            let mut samples = Vec::with_capacity(calls / in_flight + 1);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= calls {
                    return samples;
                }
                let t = Instant::now();
                host.call("trivial", json!({"n": i})).await.expect("call");
                samples.push(t.elapsed().as_secs_f64() * 1e6);
            }
        });
    }
    let mut samples = Vec::with_capacity(calls);
    while let Some(part) = tasks.join_next().await {
        samples.extend(part.expect("task"));
    }
    let elapsed = start.elapsed();
    Load {
        per_s: samples.len() as f64 / elapsed.as_secs_f64(),
        p50_us: percentile(samples.clone(), 50),
        p99_us: percentile(samples, 99),
    }
}

/// Enable → first answered call, p50 of `rounds`, in ms.
async fn enable_to_first_call(host: &Host, rounds: usize) -> f64 {
    let mut samples = Vec::new();
    for _ in 0..rounds {
        host.disable("trivial").await.expect("disable");
        let t = Instant::now();
        host.enable("trivial").await.expect("enable");
        host.call("trivial", json!({"n": 1})).await.expect("call");
        samples.push(t.elapsed().as_secs_f64() * 1e3);
    }
    percentile(samples, 50)
}

/// A `/proc/PID/smaps_rollup` (or `status`) figure in KiB.
fn proc_kib(pid: i32, file: &str, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn host_config(workers: usize) -> Config {
    let exec = std::env::var("GREFFON_BENCH_TEMPLATE").is_ok_and(|v| v == "off");
    let text = format!(
        "worker_template = {}\n[plugins.trivial]\nworkers = {workers}\n",
        !exec
    );
    Config::parse(&text, Path::new("greffon.toml")).expect("config")
}

fn main() {
    let calls = env_usize("GREFFON_BENCH_CALLS", 200_000);
    let workers = env_usize("GREFFON_BENCH_WORKERS", 2);
    let in_flight = env_usize("GREFFON_BENCH_IN_FLIGHT", 64);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("plugins/trivial");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("plugin.py"), TRIVIAL).expect("write");
    let current = std::env::var("GREFFON_BENCH_RUNTIME").is_ok_and(|v| v == "current");
    let rt = if current {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(cpus);
        b
    }
    .enable_all()
    .build()
    .expect("runtime");

    println!(
        "greffon pool benchmark: {calls} calls, workers = {workers}, {in_flight} in flight, {cpus} CPUs, {} runtime",
        if current {
            "current-thread"
        } else {
            "multi-thread"
        }
    );
    let single = rt
        .block_on(Host::open_with(tmp.path(), host_config(1)))
        .expect("host");
    let python = single.python().to_path_buf();
    rt.block_on(async {
        single.enable("trivial").await.expect("enable");
    });
    let enable_one = rt.block_on(enable_to_first_call(&single, 15));
    rt.block_on(single.shutdown());
    drop(single);

    let host = rt
        .block_on(Host::open_with(tmp.path(), host_config(workers)))
        .expect("host");
    rt.block_on(async {
        host.enable("trivial").await.expect("enable");
    });
    let enable_pool = rt.block_on(enable_to_first_call(&host, 15));

    // Alternating rounds, so drift in the machine's speed hits both alike.
    const ROUNDS: usize = 4;
    let (mut floors, mut fulls) = (Vec::new(), Vec::new());
    rt.block_on(load(&host, calls / 10, in_flight));
    for _ in 0..ROUNDS {
        floors.push(floor(&python, workers, calls / ROUNDS, 32));
        fulls.push(rt.block_on(load(&host, calls / ROUNDS, in_flight)));
    }
    rt.block_on(host.shutdown());
    let (cold, memory) = cold_start_and_memory(&rt, in_flight);

    println!();
    println!(
        "{:<58} {:>10} {:>9} {:>9}",
        "path", "calls/s", "p50 µs", "p99 µs"
    );
    for (i, (f, l)) in floors.iter().zip(&fulls).enumerate() {
        println!(
            "{:<58} {:>10.0}",
            format!(
                "floor, {workers} bare processes pipelined 32 deep, round {}",
                i + 1
            ),
            f
        );
        println!(
            "{:<58} {:>10.0} {:>9.1} {:>9.1}",
            format!(
                "Host::call, workers = {workers}, {in_flight} in flight, round {}",
                i + 1
            ),
            l.per_s,
            l.p50_us,
            l.p99_us
        );
    }
    let best_floor = floors.iter().cloned().fold(0.0, f64::max);
    let best = fulls.iter().map(|l| l.per_s).fold(0.0, f64::max);
    println!();
    println!(
        "best: {best:.0} calls/s, {:.2}x of the floor's best {best_floor:.0} (target >= 60000 calls/s)",
        best / best_floor
    );
    println!(
        "enable -> first call, workers = 1:   p50 {enable_one:.1} ms (target <= 10 ms with the template warm)"
    );
    println!("enable -> first call, workers = {workers}:   p50 {enable_pool:.1} ms");
    println!(
        "enable -> first call, cold (the template not yet started): {cold:.1} ms (target <= 40 ms)"
    );
    println!(
        "4 idle workers + their template: RSS {:.1} MiB, PSS {:.1} MiB summed (target: PSS <= 30 MiB); template PSS {:.1} MiB",
        memory.rss_kib as f64 / 1024.0,
        memory.pss_kib as f64 / 1024.0,
        memory.template_pss_kib as f64 / 1024.0
    );
}

struct Memory {
    rss_kib: u64,
    pss_kib: u64,
    template_pss_kib: u64,
}

/// In a fresh home (so its template is not started yet): enable → first
/// call, then the memory of a pool of 4 idle workers and their template.
fn cold_start_and_memory(rt: &tokio::runtime::Runtime, in_flight: usize) -> (f64, Memory) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("plugins/trivial");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("plugin.py"), TRIVIAL).expect("write");
    let host = rt
        .block_on(Host::open_with(tmp.path(), host_config(4)))
        .expect("host");
    let cold = rt.block_on(async {
        let t = Instant::now();
        host.enable("trivial").await.expect("enable");
        host.call("trivial", json!({"n": 1})).await.expect("call");
        t.elapsed().as_secs_f64() * 1e3
    });
    // Every worker touched by calls, then left idle.
    rt.block_on(load(&host, 2_000, in_flight));
    std::thread::sleep(Duration::from_millis(300));
    let pids = host.worker_pids("trivial");
    // Exec'd workers (GREFFON_BENCH_TEMPLATE=off) are this process's own
    // children: no template to count.
    let template = pids
        .first()
        .map(|&p| parent_of(p))
        .filter(|&parent| parent != std::process::id() as i32)
        .unwrap_or(0);
    let pss = |p: i32| match p {
        0 => 0,
        p => proc_kib(p, "smaps_rollup", "Pss:"),
    };
    let memory = Memory {
        rss_kib: pids
            .iter()
            .map(|&p| proc_kib(p, "status", "VmRSS:"))
            .sum::<u64>()
            + if template > 0 {
                proc_kib(template, "status", "VmRSS:")
            } else {
                0
            },
        pss_kib: pids.iter().map(|&p| pss(p)).sum::<u64>() + pss(template),
        template_pss_kib: pss(template),
    };
    assert_eq!(pids.len(), 4, "four workers");
    rt.block_on(host.shutdown());
    (cold, memory)
}

/// The parent of process `pid` (a forked worker's template).
fn parent_of(pid: i32) -> i32 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit(')')
                .next()?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}
