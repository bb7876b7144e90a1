//! `cargo bench -p greffon-server --bench http`: the HTTP API end to end
//! against the embedded call it wraps, measured in the same run.
//!
//! - embedded: `Host::call` on a trivial plugin, 1 in flight;
//! - HTTP: `POST /v1/plugins/trivial/run` through `greffon serve` (running
//!   as in the CLI: a current-thread runtime on its own thread), from a
//!   Rust load generator with keep-alive connections, 1 and 16 clients,
//!   the plugin's pool at `workers = GREFFON_BENCH_WORKERS` (default 2);
//! - the anchor: `GET /v1/health` from the same 16 clients (no plugin);
//! - enable → first answered call over HTTP (`enable`, then `run`);
//! - reload: `POST /v1/plugins/trivial/reload` (new pool loaded and
//!   started, swapped in, old one drained and stopped).
//!
//! `GREFFON_BENCH_CALLS` sets the calls per row (default 5000);
//! `GREFFON_BENCH_CPU=N` pins the whole run (client, server, worker) to
//! CPU N; `GREFFON_BENCH_SERVER_THREADS=N` runs the server on a multi-thread
//! runtime with N workers instead.

#[path = "../../greffon-host/benches/support/mod.rs"]
mod support;

use greffon_core::Config;
use greffon_host::Host;
use std::time::{Duration, Instant};
use support::percentile;

const TRIVIAL: &str = "class P:\n    meta = {'name': 'trivial', 'inputs': {'schema': {'n': 'integer'}}}\n    def run(self, n):\n        return n\nplugin = P()\n";

fn main() {
    support::pin_from_env();
    let calls: usize = std::env::var("GREFFON_BENCH_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().to_path_buf();
    std::fs::create_dir_all(root.join("plugins/trivial")).expect("mkdir");
    std::fs::write(root.join("plugins/trivial/plugin.py"), TRIVIAL).expect("write");
    let workers = support::env_usize("GREFFON_BENCH_WORKERS", 2);
    let config_text = format!("[plugins.trivial]\nworkers = {workers}\n");
    let config = Config::parse(&config_text, std::path::Path::new("greffon.toml")).expect("config");
    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");

    // Embedded baseline, on the same kind of runtime.
    let embedded: Vec<f64> = client_rt.block_on(support::embedded_latencies(&root, calls));

    // The server, as `greffon serve` runs it.
    let server_root = root.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<String>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let multi = std::env::var("GREFFON_BENCH_SERVER_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok());
    let server = std::thread::spawn(move || {
        let mut builder = match multi {
            Some(n) => {
                let mut b = tokio::runtime::Builder::new_multi_thread();
                b.worker_threads(n);
                b
            }
            None => tokio::runtime::Builder::new_current_thread(),
        };
        let rt = builder.enable_all().build().expect("runtime");
        rt.block_on(async move {
            let host = Host::open_with(&server_root, config).await.expect("host");
            host.start_enabled().await;
            let endpoint_file = server_root.join("app/server.json");
            let opts = greffon_server::ServeOptions {
                bind: "127.0.0.1:0".parse().expect("addr"),
                token: "bench-token-0123456789".into(),
                allowed_hosts: Vec::new(),
                grace: Duration::from_secs(5),
                max_body_bytes: 1 << 20,
                endpoint_file: endpoint_file.clone(),
                watch: None,
                cors_origins: Vec::new(),
                tasks: greffon_scheduler::attach(
                    &host,
                    greffon_scheduler::AnyTaskStore::Sqlite(
                        greffon_scheduler::SqliteTaskStore::new(&host.home().db_file()),
                    ),
                    Default::default(),
                ),
                fire_tasks: false,
                llm: greffon_llm::LlmService::new(
                    std::sync::Arc::new(
                        greffon_llm::OpenAiLlm::new(&Default::default()).expect("llm"),
                    ),
                    false,
                    Duration::from_secs(1),
                ),
                print_login_link: false,
            };
            let announce = async move {
                loop {
                    // Not `read_live`: this process is not `greffon serve`.
                    let e = std::fs::read(&endpoint_file)
                        .ok()
                        .and_then(|t| serde_json::from_slice::<greffon_server::Endpoint>(&t).ok());
                    if let Some(e) = e {
                        let _ = ready_tx.send(e.url);
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            };
            tokio::spawn(announce);
            greffon_server::serve(host, opts, async {
                let _ = stop_rx.await;
            })
            .await
            .expect("serve");
        });
    });
    let url = ready_rx.recv().expect("server up");

    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let run_url = format!("{url}/v1/plugins/trivial/run");
    let auth = "Bearer bench-token-0123456789";
    let one = |client: reqwest::Client, n: usize| {
        let run_url = run_url.clone();
        async move {
            let mut v = Vec::with_capacity(n);
            for i in 0..n {
                let t = Instant::now();
                let r = client
                    .post(&run_url)
                    .header("Authorization", auth)
                    .body(format!("{{\"n\": {i}}}"))
                    .send()
                    .await
                    .expect("post");
                assert_eq!(r.status(), 200);
                let _ = r.bytes().await.expect("body");
                v.push(t.elapsed().as_secs_f64() * 1e6);
            }
            v
        }
    };
    let (single, single_wall) = client_rt.block_on(async {
        one(client.clone(), 200).await;
        let t = Instant::now();
        let v = one(client.clone(), calls).await;
        (v, t.elapsed())
    });
    let (many, many_wall) = client_rt.block_on(async {
        let t = Instant::now();
        let tasks: Vec<_> = (0..16)
            .map(|_| tokio::spawn(one(client.clone(), calls / 16)))
            .collect();
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.expect("client"));
        }
        (all, t.elapsed())
    });
    let (health, health_wall) = client_rt.block_on(async {
        let t = Instant::now();
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let (client, url) = (client.clone(), format!("{url}/v1/health"));
                tokio::spawn(async move {
                    let mut v = Vec::new();
                    for _ in 0..calls / 16 {
                        let t = Instant::now();
                        let r = client.get(&url).send().await.expect("get");
                        assert_eq!(r.status(), 200);
                        let _ = r.bytes().await.expect("body");
                        v.push(t.elapsed().as_secs_f64() * 1e6);
                    }
                    v
                })
            })
            .collect();
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.expect("client"));
        }
        (all, t.elapsed())
    });
    let post = |path: &str| {
        client
            .post(format!("{url}/v1/plugins/trivial/{path}"))
            .header("Authorization", auth)
    };
    let first_calls: Vec<f64> = client_rt.block_on(async {
        let mut v = Vec::new();
        for _ in 0..15 {
            let r = post("disable").send().await.expect("disable");
            assert_eq!(r.status(), 200);
            let t = Instant::now();
            let r = post("enable").send().await.expect("enable");
            assert_eq!(r.status(), 200);
            let r = post("run").body("{\"n\": 1}").send().await.expect("run");
            assert_eq!(r.status(), 200);
            v.push(t.elapsed().as_secs_f64() * 1e3);
        }
        v
    });
    let reloads: Vec<f64> = client_rt.block_on(async {
        let mut v = Vec::new();
        for _ in 0..10 {
            let t = Instant::now();
            let r = client
                .post(format!("{url}/v1/plugins/trivial/reload"))
                .header("Authorization", auth)
                .send()
                .await
                .expect("reload");
            assert_eq!(r.status(), 200);
            v.push(t.elapsed().as_secs_f64() * 1e3);
        }
        v
    });
    let _ = stop_tx.send(());
    server.join().expect("server thread");

    let e50 = percentile(embedded.clone(), 50);
    let h50 = percentile(single.clone(), 50);
    println!(
        "greffon HTTP API benchmark ({calls} calls per row; server on a current-thread runtime as `greffon serve`)"
    );
    println!();
    println!(
        "{:<34} {:>9} {:>9} {:>10}",
        "path", "p50 µs", "p99 µs", "calls/s"
    );
    println!(
        "{:<34} {:>9.1} {:>9.1} {:>10}",
        "embedded Host::call, 1 in flight",
        e50,
        percentile(embedded, 99),
        ""
    );
    println!(
        "{:<34} {:>9.1} {:>9.1} {:>10.0}",
        "HTTP, 1 client",
        h50,
        percentile(single.clone(), 99),
        single.len() as f64 / single_wall.as_secs_f64()
    );
    println!(
        "{:<34} {:>9.1} {:>9.1} {:>10.0}",
        format!("HTTP, 16 clients, workers = {workers}"),
        percentile(many.clone(), 50),
        percentile(many.clone(), 99),
        many.len() as f64 / many_wall.as_secs_f64()
    );
    println!(
        "{:<34} {:>9.1} {:>9.1} {:>10.0}",
        "GET /v1/health, 16 clients",
        percentile(health.clone(), 50),
        percentile(health.clone(), 99),
        health.len() as f64 / health_wall.as_secs_f64()
    );
    println!();
    println!(
        "HTTP layer p50 overhead over the embedded call: {:.1} µs (target <= 100 µs)",
        h50 - e50
    );
    println!(
        "enable -> first answered call over HTTP, workers = {workers}: median {:.1} ms (target <= 15 ms with the template warm)",
        percentile(first_calls, 50)
    );
    println!(
        "reload (load + start new, swap, drain + stop old): p50 {:.1} ms, max {:.1} ms (target <= 150 ms)",
        percentile(reloads.clone(), 50),
        percentile(reloads, 100)
    );
}
