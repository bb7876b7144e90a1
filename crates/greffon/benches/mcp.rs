//! `cargo bench -p greffon --bench mcp`: greffon's MCP server against the
//! official Python MCP SDK server serving the same trivial tool, both
//! driven by one Rust MCP client (rmcp) in the same run.
//!
//! Rows, for each server: a trivial tool call 1 in flight (p50, p99,
//! calls/s) and 16 in flight (calls/s), over stdio and over Streamable
//! HTTP; and connect → first tool result (process start, handshake, first
//! call). HTTP rows are given for both protocol generations (a handshake
//! session; 2026-07-28 stateless requests). greffon's stdio server runs embedded (`greffon mcp`), its HTTP
//! one is `greffon serve`'s `/mcp`, and `greffon mcp` through that server
//! is measured for start-up. The embedded `Host::call` gives the floor the
//! MCP path's overhead is measured against.
//!
//! The Python server runs on `$GREFFON_PYTHON` (the test venv, which has
//! `mcp==2.3.0`). `GREFFON_BENCH_CALLS` sets the calls per row (default
//! 2000), `GREFFON_BENCH_STARTS` the connect → first result samples
//! (default 10). `GREFFON_BENCH_CPU=N` pins the whole run (client, servers,
//! workers) to CPU N.

#[path = "../../greffon-host/benches/support/mod.rs"]
mod support;

use rmcp::model::{CallToolRequestParams, JsonObject, ProtocolVersion};
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ClientLifecycleMode, ClientServiceExt, RoleClient};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::{env_usize, percentile};

const TRIVIAL: &str = "class P:\n    meta = {'name': 'trivial', 'description': 'Returns n', 'inputs': {'schema': {'n': 'integer'}}}\n    def run(self, n):\n        return {'n': n}\nplugin = P()\n";

const PYTHON_SERVER: &str = r#"
import sys
from mcp.server import MCPServer

mcp = MCPServer("bench")

@mcp.tool()
def trivial(n: int) -> dict:
    """Returns n"""
    return {"n": n}

if sys.argv[1] == "http":
    mcp.run(transport="streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
else:
    mcp.run()
"#;

/// A client session, and the server process it launched (killed with it).
struct Session {
    service: RunningService<RoleClient, ()>,
    _child: Option<tokio::process::Child>,
}

impl Session {
    fn peer(&self) -> &rmcp::Peer<RoleClient> {
        self.service.peer()
    }

    async fn close(self) {
        let _ = self.service.cancel().await;
    }
}

fn args(n: usize) -> JsonObject {
    let Value::Object(o) = json!({ "n": n }) else {
        unreachable!("an object literal")
    };
    o
}

async fn call(peer: &rmcp::Peer<RoleClient>, n: usize) {
    let params = CallToolRequestParams::new("trivial").with_arguments(args(n));
    let result = peer.call_tool(params).await.expect("call");
    assert_ne!(result.is_error, Some(true), "the trivial tool failed");
}

/// (p50 µs, p99 µs, calls/s) with 1 in flight, then calls/s with 16.
async fn measure(session: &Session, calls: usize) -> (f64, f64, f64, f64) {
    for i in 0..200 {
        call(session.peer(), i).await;
    }
    let mut v = Vec::with_capacity(calls);
    let start = Instant::now();
    for i in 0..calls {
        let t = Instant::now();
        call(session.peer(), i).await;
        v.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let seq = calls as f64 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..16 {
        let peer = session.peer().clone();
        let share = calls / 16;
        tasks.spawn(async move {
            for i in 0..share {
                call(&peer, w * share + i).await;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let par = (calls / 16 * 16) as f64 / start.elapsed().as_secs_f64();
    (percentile(v.clone(), 50), percentile(v, 99), seq, par)
}

async fn stdio(program: &Path, args: &[&str]) -> Session {
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("server starts");
    let io = (
        child.stdout.take().expect("stdout"),
        child.stdin.take().expect("stdin"),
    );
    let service =
        ().serve_with_lifecycle(io, ClientLifecycleMode::Initialize)
            .await
            .expect("handshake");
    Session {
        service,
        _child: Some(child),
    }
}

/// A Streamable HTTP session: the handshake era (`modern` false) or
/// 2026-07-28's stateless requests.
async fn http(url: &str, token: Option<&str>, modern: bool) -> Session {
    let mut config = StreamableHttpClientTransportConfig::with_uri(url);
    if let Some(t) = token {
        config = config.auth_header(t);
    }
    let transport = StreamableHttpClientTransport::from_config(config);
    let lifecycle = if modern {
        ClientLifecycleMode::Discover {
            preferred_versions: vec![ProtocolVersion::V_2026_07_28],
        }
    } else {
        ClientLifecycleMode::Initialize
    };
    let service = ().serve_with_lifecycle(transport, lifecycle).await.expect("handshake");
    Session {
        service,
        _child: None,
    }
}

/// Spawn (or connect), handshake, first tool result, close: ms each.
async fn connects(starts: usize, mut open: impl AsyncFnMut() -> Session) -> (f64, f64) {
    let mut v = Vec::with_capacity(starts);
    for i in 0..starts {
        let t = Instant::now();
        let session = open().await;
        call(session.peer(), i).await;
        v.push(t.elapsed().as_secs_f64() * 1e3);
        session.close().await;
    }
    let max = v.iter().copied().fold(0.0, f64::max);
    (percentile(v, 50), max)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_listening(address: &str) {
    let start = Instant::now();
    while std::net::TcpStream::connect(address).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{address} never listened"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn greffon(home: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_greffon"));
    cmd.arg("--home").arg(home).arg("--quiet");
    cmd
}

fn row(name: &str, r: (f64, f64, f64, f64)) {
    println!(
        "{name:<34} p50 {:>8.1} µs  p99 {:>8.1} µs  {:>7.0} calls/s  16 in flight {:>7.0} calls/s",
        r.0, r.1, r.2, r.3
    );
}

fn main() {
    let pinned = support::pin_from_env();
    greffon_host::install_tls_provider();
    let calls = env_usize("GREFFON_BENCH_CALLS", 2000);
    let starts = env_usize("GREFFON_BENCH_STARTS", 10);
    let python =
        PathBuf::from(std::env::var("GREFFON_PYTHON").unwrap_or_else(|_| "python3".into()));
    let tmp = tempfile::tempdir().expect("tempdir");
    let home = tmp.path().join("home");
    std::fs::create_dir_all(home.join("plugins/trivial")).expect("mkdir");
    std::fs::write(home.join("plugins/trivial/plugin.py"), TRIVIAL).expect("plugin");
    std::fs::write(home.join("greffon.toml"), "[server]\nwatch = false\n").expect("config");
    let script = tmp.path().join("server.py");
    std::fs::write(&script, PYTHON_SERVER).expect("script");
    let status = greffon(&home)
        .args(["plugin", "enable", "trivial"])
        .stdout(Stdio::null())
        .status()
        .expect("enable");
    assert!(status.success(), "enable failed");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let home_arg = home.to_str().expect("utf-8 path");
    let greffon_bin = Path::new(env!("CARGO_BIN_EXE_greffon"));
    let script_arg = script.to_str().expect("utf-8 path");

    println!(
        "MCP trivial tool, {calls} calls per row, {starts} starts (one Rust rmcp client){}",
        pinned.map_or(String::new(), |c| format!(", everything pinned to CPU {c}"))
    );
    let floor = percentile(rt.block_on(support::embedded_latencies(&home, calls)), 50);
    println!("{:<34} p50 {floor:>8.1} µs", "floor: embedded Host::call");

    rt.block_on(async {
        let s = stdio(greffon_bin, &["--home", home_arg, "--quiet", "mcp"]).await;
        let r = measure(&s, calls).await;
        row("greffon stdio (embedded)", r);
        println!(
            "{:<34} {:>+8.1} µs over the floor",
            "  MCP stdio overhead (p50)",
            r.0 - floor
        );
        s.close().await;
        let s = stdio(&python, &[script_arg, "stdio"]).await;
        row("python SDK stdio", measure(&s, calls).await);
        s.close().await;
    });

    let server = Killed(
        greffon(&home)
            .args(["serve", "--bind", "127.0.0.1:0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("serve"),
    );
    let endpoint = home.join("app/server.json");
    let start = Instant::now();
    let address = loop {
        if let Some(a) = std::fs::read(&endpoint)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .filter(|v| v["pid"] == json!(server.0.id()))
            .and_then(|v| v["address"].as_str().map(str::to_string))
        {
            break a;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "serve never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let token = std::fs::read_to_string(home.join("app/token")).expect("token");
    let port = free_port();
    let python_http = Killed(
        Command::new(&python)
            .args([script_arg, "http", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python http server"),
    );
    wait_listening(&format!("127.0.0.1:{port}"));
    let greffon_url = format!("http://{address}/mcp");
    let python_url = format!("http://127.0.0.1:{port}/mcp");

    rt.block_on(async {
        for (modern, era) in [(false, "handshake"), (true, "2026-07-28")] {
            let s = http(&greffon_url, Some(token.trim()), modern).await;
            row(
                &format!("greffon HTTP /mcp ({era})"),
                measure(&s, calls).await,
            );
            s.close().await;
            let s = http(&python_url, None, modern).await;
            row(
                &format!("python SDK HTTP ({era})"),
                measure(&s, calls).await,
            );
            s.close().await;
        }

        println!("connect → first tool result (p50 / max)");
        let through = connects(starts, async || {
            stdio(greffon_bin, &["--home", home_arg, "--quiet", "mcp"]).await
        })
        .await;
        println!(
            "{:<34} {:>8.1} / {:>8.1} ms",
            "greffon mcp through serve", through.0, through.1
        );
        let embedded = connects(starts, async || {
            stdio(
                greffon_bin,
                &["--home", home_arg, "--quiet", "mcp", "--embedded"],
            )
            .await
        })
        .await;
        println!(
            "{:<34} {:>8.1} / {:>8.1} ms",
            "greffon mcp --embedded", embedded.0, embedded.1
        );
        let py = connects(starts, async || {
            stdio(&python, &[script_arg, "stdio"]).await
        })
        .await;
        println!(
            "{:<34} {:>8.1} / {:>8.1} ms",
            "python SDK stdio", py.0, py.1
        );
    });
    drop(python_http);
    drop(server);
}
