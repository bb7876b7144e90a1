//! `cargo bench -p greffon-host --bench sandbox`: what the kernel sandbox
//! and the HTTP broker cost, each beside its baseline measured in the same
//! run.
//!
//! - enable → first answered call, with `sandbox = "enforce"` and with
//!   `sandbox = "off"` (interleaved, so machine drift hits both alike); the
//!   difference is what the sandbox adds to a worker's start (building the
//!   ruleset and filters, applying them, the bootstrap's no-exec seal);
//! - a full call on an enabled plugin, sandboxed and not;
//! - one HTTP GET to a local keep-alive server: made by a plugin through
//!   `greffon.http` (timed inside the plugin), and made directly with
//!   reqwest from Rust (the floor).
//!
//! `GREFFON_BENCH_ROUNDS` sets the enable rounds (default 30),
//! `GREFFON_BENCH_REQUESTS` the HTTP requests per side (default 3000);
//! `GREFFON_BENCH_CPU=N` pins the whole run (host, server, workers) to CPU
//! N, which takes the scheduler's placement out of the figures.

mod support;

use greffon_core::Config;
use greffon_host::Host;
use serde_json::json;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::time::Instant;

const TRIVIAL: &str = "class P:\n    meta = {'name': 'trivial', 'inputs': {'schema': {'n': 'integer'}}}\n    def run(self, n):\n        return n\nplugin = P()\n";

/// Times `n` GETs inside one call (or `n` requests the allowlist refuses,
/// which cost the round trip to the host and no network), returning each
/// duration in µs.
fn fetcher(port: u16) -> String {
    format!(
        r#"import time
from greffon import http

class P:
    meta = {{'name': 'fetch', 'permissions': ['net'], 'timeout': 300,
            'allowlist_domains': ['127.0.0.1:{port}'],
            'inputs': {{'schema': {{'n': 'integer', 'refused': {{'type': 'boolean', 'default': False}},
                                   'path': {{'type': 'string', 'default': '/x'}}}}}}}}

    def run(self, n, refused, path):
        out = []
        for _ in range(n):
            t = time.perf_counter()
            if refused:
                try:
                    http.get('http://refused.example/')
                except PermissionError:
                    pass
            else:
                assert http.get('http://127.0.0.1:{port}' + path).status_code == 200
            out.append((time.perf_counter() - t) * 1e6)
        return out

plugin = P()
"#
    )
}

fn write_plugin(root: &Path, folder: &str, code: &str) {
    let dir = root.join("plugins").join(folder);
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("plugin.py"), code).expect("write");
}

fn median(v: Vec<f64>) -> f64 {
    support::percentile(v, 50)
}

fn p99(v: Vec<f64>) -> f64 {
    support::percentile(v, 99)
}

/// Connections the server accepted: with keep-alive, one per client.
static CONNECTIONS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A keep-alive HTTP/1.1 server answering `ok` to every request.
fn server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            CONNECTIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            std::thread::spawn(move || {
                let _ = stream.set_nodelay(true);
                let mut out = match stream.try_clone() {
                    Ok(s) => s,
                    Err(_) => return,
                };
                let mut reader = BufReader::new(stream);
                let mut line = String::new();
                loop {
                    // Request line and headers, up to the blank line; `/d`
                    // answers after 1 ms, like a fast upstream.
                    let mut delayed = false;
                    loop {
                        line.clear();
                        match reader.read_line(&mut line) {
                            Ok(0) | Err(_) => return,
                            Ok(_) if line == "\r\n" => break,
                            Ok(_) if line.starts_with("GET /d ") => delayed = true,
                            Ok(_) => {}
                        }
                    }
                    if delayed {
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                    let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok";
                    if out.write_all(answer).is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

async fn open(root: &Path, sandbox: &str) -> Host {
    let config = Config::parse(
        &format!("sandbox = \"{sandbox}\"\n"),
        Path::new("greffon.toml"),
    )
    .expect("config");
    Host::open_with(root, config).await.expect("host opens")
}

async fn enable_to_first_call(host: &Host) -> f64 {
    host.disable("trivial").await.expect("disable");
    let t = Instant::now();
    host.enable("trivial").await.expect("enable");
    host.call("trivial", json!({"n": 1})).await.expect("call");
    t.elapsed().as_secs_f64() * 1e3
}

async fn call_us(host: &Host, n: usize) -> Vec<f64> {
    let mut v = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        host.call("trivial", json!({"n": i})).await.expect("call");
        v.push(t.elapsed().as_secs_f64() * 1e6);
    }
    v
}

/// `n` GETs straight from reqwest (one pooled connection, as the broker's).
async fn direct(client: &reqwest::Client, url: &str, n: usize) -> Vec<f64> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let r = client.get(url).send().await.expect("get");
        let _ = r.bytes().await.expect("body");
        v.push(t.elapsed().as_secs_f64() * 1e6);
    }
    v
}

fn main() {
    let pinned = support::pin_from_env();
    let rounds = support::env_usize("GREFFON_BENCH_ROUNDS", 30);
    let requests = support::env_usize("GREFFON_BENCH_REQUESTS", 3000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let port = server();
    let on_dir = tempfile::tempdir().expect("tempdir");
    let off_dir = tempfile::tempdir().expect("tempdir");
    for dir in [on_dir.path(), off_dir.path()] {
        write_plugin(dir, "trivial", TRIVIAL);
    }
    write_plugin(on_dir.path(), "fetch", &fetcher(port));

    rt.block_on(async {
        let on = open(on_dir.path(), "enforce").await;
        let off = open(off_dir.path(), "off").await;
        on.enable("trivial").await.expect("enable");
        off.enable("trivial").await.expect("enable");
        // Warm-up: page cache, the interpreter's files.
        for _ in 0..3 {
            enable_to_first_call(&on).await;
            enable_to_first_call(&off).await;
        }
        let (mut with, mut without) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            with.push(enable_to_first_call(&on).await);
            without.push(enable_to_first_call(&off).await);
        }
        let calls_on = call_us(&on, 5000).await;
        let calls_off = call_us(&off, 5000).await;

        on.enable("fetch").await.expect("enable fetch");
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        let url = format!("http://127.0.0.1:{port}/x");
        // Alternate halves, so drift hits both sides alike.
        let mut brokered: Vec<f64> = Vec::new();
        let mut direct_all: Vec<f64> = Vec::new();
        for _ in 0..2 {
            let got = on
                .call("fetch", json!({"n": requests / 2}))
                .await
                .expect("fetch");
            brokered.extend(got.as_array().expect("list").iter().filter_map(|v| v.as_f64()));
            direct_all.extend(direct(&client, &url, requests / 2).await);
        }
        println!("greffon sandbox and broker benchmark ({rounds} enable rounds, {requests} HTTP requests per side)");
        println!("python: {}", on.python().display());
        println!("landlock ABI: {}", on.sandbox_support().landlock_abi);
        match pinned {
            Some(cpu) => println!("everything pinned to CPU {cpu}"),
            None => println!("unpinned"),
        }
        println!();
        let (m_on, m_off) = (median(with.clone()), median(without.clone()));
        println!(
            "enable -> first call, sandboxed:   p50 {m_on:.1} ms, p99 {:.1} ms",
            p99(with)
        );
        println!(
            "enable -> first call, sandbox off: p50 {m_off:.1} ms, p99 {:.1} ms",
            p99(without)
        );
        println!(
            "sandbox adds to a worker's start:  {:.1} ms (target <= 10 ms)",
            m_on - m_off
        );
        println!(
            "call p50, sandboxed / off:         {:.1} / {:.1} µs",
            median(calls_on),
            median(calls_off)
        );
        let refused = on
            .call("fetch", json!({"n": requests / 2, "refused": true}))
            .await
            .expect("refused");
        let refused: Vec<f64> = refused
            .as_array()
            .expect("list")
            .iter()
            .filter_map(|v| v.as_f64())
            .collect();
        println!(
            "host round trip (refused request): p50 {:.1} µs",
            median(refused)
        );
        let (b, d) = (median(brokered.clone()), median(direct_all.clone()));
        println!(
            "HTTP GET through greffon.http:     p50 {b:.1} µs, p99 {:.1} µs",
            p99(brokered)
        );
        println!(
            "HTTP GET direct from reqwest:      p50 {d:.1} µs, p99 {:.1} µs",
            p99(direct_all)
        );
        println!("broker / direct:                   {:.2}x (target <= 1.3x)", b / d);
        println!(
            "connections the server accepted:   {} (keep-alive: one per client)",
            CONNECTIONS.load(std::sync::atomic::Ordering::Relaxed)
        );
        // The same against an upstream that takes 1 ms to answer.
        let slow_url = format!("http://127.0.0.1:{port}/d");
        let n = (requests / 6).max(10);
        let got = on
            .call("fetch", json!({"n": n, "path": "/d"}))
            .await
            .expect("fetch");
        let b1 = median(got.as_array().expect("list").iter().filter_map(|v| v.as_f64()).collect());
        let d1 = median(direct(&client, &slow_url, n).await);
        println!(
            "upstream answering in 1 ms:        broker p50 {b1:.1} µs, direct p50 {d1:.1} µs, {:.2}x",
            b1 / d1
        );
        on.shutdown().await;
        off.shutdown().await;
    });
}
