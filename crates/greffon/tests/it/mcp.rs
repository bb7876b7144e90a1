//! greffon as an MCP server, driven by the official Python client
//! (`mcp_client.py`, mcp 2.3.0) over stdio (embedded, and through a running
//! server) and Streamable HTTP, in both protocol generations; plus the
//! token and Origin checks of `/mcp`.

use crate::common;

use common::server::{Server, exchange, start};
use common::{TestHome, stdio_exchange};
use std::path::Path;
use std::process::Command;

const ECHO: &str = "class P:\n    meta = {'name': 'echo', 'description': 'Echoes its arguments', 'inputs': {'schema': {'n': {'type': 'integer', 'default': 1, 'maximum': 5}}}}\n    def run(self, **kw):\n        return {'args': kw}\nplugin = P()\n";
const LATER: &str = "class P:\n    meta = {'name': 'later', 'description': 'Enabled during the test'}\n    def run(self, **kw):\n        return {'args': kw}\nplugin = P()\n";
const RET: &str = "class P:\n    meta = {'name': 'ret'}\n    def run(self):\n        return {'error': 'mine'}\nplugin = P()\n";
const FLAKY: &str = "import os\nclass P:\n    meta = {'name': 'flaky', 'inputs': {'schema': {'crash': {'type': 'boolean', 'default': False}}}}\n    def run(self, crash):\n        if crash:\n            os._exit(3)\n        return {'ok': True}\nplugin = P()\n";
/// Counts its sleeping calls, so the test sees one end when cancelled.
const SLOW: &str = "import threading, time, greffon\nclass P:\n    meta = {'name': 'slow', 'timeout': 60, 'inputs': {'schema': {'action': {'type': 'string', 'enum': ['sleep', 'status']}, 's': {'type': 'number', 'default': 0}}}}\n    def __init__(self):\n        self.lock = threading.Lock()\n        self.running = 0\n    def run(self, action, s):\n        if action == 'status':\n            return {'running': self.running}\n        with self.lock:\n            self.running += 1\n        try:\n            greffon.progress(0, message='started')\n            time.sleep(s)\n            return {'slept': s}\n        finally:\n            with self.lock:\n                self.running -= 1\nplugin = P()\n";
const PROG: &str = "import greffon\nclass P:\n    meta = {'name': 'prog'}\n    def run(self):\n        for i in range(1, 4):\n            greffon.progress(i, 3, f'step {i}')\n        return {'done': 3}\nplugin = P()\n";
const FETCH: &str = "class P:\n    meta = {'name': 'fetch', 'permissions': ['net'], 'allowlist_domains': ['example.com']}\n    def run(self):\n        return {}\nplugin = P()\n";
const WRITER: &str = "class P:\n    meta = {'name': 'writer', 'permissions': ['fs_write']}\n    def run(self):\n        return {}\nplugin = P()\n";
const OFF: &str =
    "class P:\n    meta = {'name': 'off'}\n    def run(self):\n        return {}\nplugin = P()\n";

/// The interpreter of the test venv, which has the official MCP client.
fn python() -> String {
    common::venv_python("mcp, httpx2", "the MCP tests")
}

fn calls_home() -> TestHome {
    let home = TestHome::new();
    home.config("[server]\nwatch = false\n");
    for (folder, code) in [
        ("echo", ECHO),
        ("ret", RET),
        ("flaky", FLAKY),
        ("slow", SLOW),
        ("prog", PROG),
        ("fetch", FETCH),
        ("writer", WRITER),
    ] {
        home.plugin(folder, code);
        home.enable(folder);
    }
    home.plugin("off", OFF);
    home
}

fn changes_home(watch: bool) -> TestHome {
    let home = TestHome::new();
    home.config(&format!("[server]\nwatch = {watch}\n"));
    home.plugin("echo", ECHO);
    home.enable("echo");
    home.plugin("later", LATER);
    home
}

/// Runs one scenario of the driver; fails with what it printed.
fn drive(home: &Path, scenario: &str, transport: &str, mode: &str, extra: &[&str]) {
    let driver = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp_client.py");
    let out = Command::new(python())
        .arg(driver)
        .args([scenario, "--transport", transport, "--mode", mode])
        .args(["--greffon", env!("CARGO_BIN_EXE_greffon")])
        .arg("--home")
        .arg(home)
        .args(extra)
        .env_remove("RUST_LOG")
        .output()
        .expect("the driver runs");
    assert!(
        out.status.success(),
        "{scenario} over {transport} ({mode}) failed\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn http_args(server: &Server) -> Vec<String> {
    vec![
        "--url".into(),
        format!("http://{}/mcp", server.api.address),
        "--token".into(),
        server.api.token.clone(),
    ]
}

fn drive_http(server: &Server, home: &Path, scenario: &str, mode: &str) {
    let args = http_args(server);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    drive(home, scenario, "http", mode, &args);
}

#[test]
fn calls_over_stdio_embedded() {
    let home = calls_home();
    drive(home.path(), "calls", "stdio", "legacy", &[]);
    drive(home.path(), "calls", "stdio", "auto", &[]);
}

#[test]
fn calls_over_stdio_through_a_running_server() {
    let home = calls_home();
    let server = start(&home);
    let before = metric_calls(&server, "echo");
    drive(home.path(), "calls", "stdio", "legacy", &[]);
    drive(home.path(), "calls", "stdio", "auto", &[]);
    // The calls went through the server's workers, not an embedded host.
    assert_eq!(metric_calls(&server, "echo") - before, 6.0);
}

#[test]
fn calls_over_http() {
    let home = calls_home();
    let server = start(&home);
    drive_http(&server, home.path(), "calls", "legacy");
    drive_http(&server, home.path(), "calls", "auto");
}

#[test]
fn list_changes_over_http() {
    let home = changes_home(false);
    let server = start(&home);
    drive_http(&server, home.path(), "changes", "legacy");
    drive_http(&server, home.path(), "changes", "auto");
}

#[test]
fn list_changes_over_stdio_through_a_running_server() {
    let home = changes_home(false);
    let _server = start(&home);
    drive(home.path(), "changes", "stdio", "legacy", &[]);
    drive(home.path(), "changes", "stdio", "auto", &[]);
}

#[test]
fn list_changes_from_the_file_watcher_over_stdio_embedded() {
    let home = changes_home(true);
    drive(
        home.path(),
        "changes",
        "stdio",
        "legacy",
        &["--trigger", "file"],
    );
    // The file now says 7; this run moves it to 7 again (a no-op edit is
    // still a reload), so put 5 back first.
    let plugin = home.path().join("plugins/echo/plugin.py");
    std::fs::write(&plugin, ECHO).expect("restore echo");
    drive(
        home.path(),
        "changes",
        "stdio",
        "auto",
        &["--trigger", "file"],
    );
}

/// `greffon_calls_total{plugin=NAME}` summed over outcomes.
fn metric_calls(server: &Server, plugin: &str) -> f64 {
    let (_, body) = http(server, "GET", "/metrics", &[], "");
    let needle = format!("plugin=\"{plugin}\"");
    body.lines()
        .filter(|l| l.starts_with("greffon_calls_total") && l.contains(&needle))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A raw HTTP/1.1 exchange with `server`: (status, body).
fn http(
    server: &Server,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    exchange(&server.api, method, path, None, headers, body)
}

const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;

#[test]
fn mcp_over_http_needs_the_token_and_a_local_origin() {
    let home = calls_home();
    let server = start(&home);
    let accept = ("Accept", "application/json, text/event-stream");
    let json = ("Content-Type", "application/json");
    let bearer = format!("Bearer {}", server.api.token);
    let auth = ("Authorization", bearer.as_str());

    let (st, body) = http(&server, "POST", "/mcp", &[accept, json], INITIALIZE);
    assert_eq!(st, 401, "{body}");
    assert!(body.contains("missing bearer token"), "{body}");
    let (st, _) = http(
        &server,
        "POST",
        "/mcp",
        &[
            accept,
            json,
            ("Authorization", "Bearer wrong-token-wrong-token"),
        ],
        INITIALIZE,
    );
    assert_eq!(st, 401);

    // DNS rebinding: a page that rebinds its own name sends it as Host...
    let (st, body) = exchange(
        &server.api,
        "POST",
        "/mcp",
        Some("evil.example:80"),
        &[accept, json, auth],
        INITIALIZE,
    );
    assert_eq!(st, 403, "{body}");
    assert!(body.contains("forbidden_host"), "{body}");
    // ... and a page elsewhere that reaches 127.0.0.1 sends its origin.
    let foreign = ("Origin", "http://evil.example");
    let (st, body) = http(
        &server,
        "POST",
        "/mcp",
        &[accept, json, auth, foreign],
        INITIALIZE,
    );
    assert_eq!(st, 403, "{body}");
    let own = format!("http://{}", server.api.address);
    let (st, body) = http(
        &server,
        "POST",
        "/mcp",
        &[accept, json, auth, ("Origin", own.as_str())],
        INITIALIZE,
    );
    assert_eq!(st, 200, "{body}");
    assert!(body.contains("\"greffon\""), "{body}");
    // Without an Origin (not a browser): served.
    let (st, body) = http(&server, "POST", "/mcp", &[accept, json, auth], INITIALIZE);
    assert_eq!(st, 200, "{body}");
}

const CALL_ECHO: &str = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"n":2}}}"#;
const INITIALIZED: &str = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;

#[test]
fn mcp_embedded_runs_its_own_host_even_when_a_server_runs() {
    let home = calls_home();
    let server = start(&home);
    let before = metric_calls(&server, "echo");
    let answers = stdio_exchange(
        &home,
        &["mcp", "--embedded"],
        &[],
        &[INITIALIZE, INITIALIZED, CALL_ECHO],
    );
    assert_eq!(
        answers[1]["result"]["structuredContent"],
        serde_json::json!({"args": {"n": 2}}),
        "{}",
        answers[1]
    );
    assert_eq!(
        metric_calls(&server, "echo"),
        before,
        "the server saw no call"
    );
    // Without the flag the same exchange goes through the server.
    let answers = stdio_exchange(&home, &["mcp"], &[], &[INITIALIZE, INITIALIZED, CALL_ECHO]);
    assert_eq!(answers[1]["result"]["structuredContent"]["args"]["n"], 2);
    assert_eq!(metric_calls(&server, "echo"), before + 1.0);
}

#[test]
fn an_unreachable_server_is_an_error_naming_it_and_the_session_survives() {
    let home = calls_home();
    // Nothing listens on port 9 of loopback (discard, never served here).
    let answers = stdio_exchange(
        &home,
        &["--remote", "http://127.0.0.1:9", "mcp"],
        &[("GREFFON_TOKEN", "a-token-for-a-server-that-is-not-there")],
        &[
            INITIALIZE,
            INITIALIZED,
            r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#,
            r#"{"jsonrpc":"2.0","id":3,"method":"ping"}"#,
        ],
    );
    assert_eq!(answers[0]["result"]["serverInfo"]["name"], "greffon");
    let error = answers[1]["error"]["message"].as_str().unwrap_or_default();
    assert!(error.contains("http://127.0.0.1:9/mcp"), "{}", answers[1]);
    assert_eq!(
        answers[2]["result"],
        serde_json::json!({}),
        "{}",
        answers[2]
    );
}

/// Malformed JSON-RPC on `/mcp` (issue #18): wrong types, huge ids, batch
/// abuse, unknown methods, broken JSON, a huge body. Each gets an answer
/// (an HTTP 4xx or a JSON-RPC error), never a 5xx or a dead server, and
/// the session still calls tools afterwards.
#[test]
fn mcp_answers_malformed_json_rpc_and_stays_up() {
    let home = calls_home();
    let server = start(&home);
    let bearer = format!("Bearer {}", server.api.token);
    let base = [
        ("Accept", "application/json, text/event-stream"),
        ("Content-Type", "application/json"),
        ("Authorization", bearer.as_str()),
    ];
    let session = common::server::mcp_session(&server.api, INITIALIZE);
    let mut headers = base.to_vec();
    headers.push(("Mcp-Session-Id", session.as_str()));
    headers.push(("Mcp-Protocol-Version", "2025-06-18"));
    let (st, _) = http(&server, "POST", "/mcp", &headers, INITIALIZED);
    assert_eq!(st, 202);

    let many = format!("[{}]", vec![CALL_ECHO; 2000].join(","));
    let huge = format!(
        r#"{{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{{"name":"echo","arguments":{{"pad":"{}"}}}}}}"#,
        "x".repeat(20 << 20)
    );
    let cases: Vec<(&str, String)> = vec![
        ("not JSON", "{\"jsonrpc\":".into()),
        ("empty body", String::new()),
        ("a number", "42".into()),
        ("empty batch", "[]".into()),
        ("a batch of 2000", many),
        ("id is an object", r#"{"jsonrpc":"2.0","id":{"a":1},"method":"tools/list"}"#.into()),
        ("id past u64", r#"{"jsonrpc":"2.0","id":18446744073709551616999,"method":"tools/list"}"#.into()),
        ("id a huge float", r#"{"jsonrpc":"2.0","id":1e308,"method":"tools/list"}"#.into()),
        ("id a long string", format!(r#"{{"jsonrpc":"2.0","id":"{}","method":"tools/list"}}"#, "i".repeat(100_000))),
        ("method a number", r#"{"jsonrpc":"2.0","id":4,"method":7}"#.into()),
        ("unknown method", r#"{"jsonrpc":"2.0","id":5,"method":"greffon/shutdown"}"#.into()),
        ("wrong version", r#"{"jsonrpc":"1.0","id":6,"method":"tools/list"}"#.into()),
        ("arguments a string", r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":"n=2"}}"#.into()),
        ("params an array", r#"{"jsonrpc":"2.0","id":8,"method":"tools/call","params":[1,2]}"#.into()),
        ("unknown tool", r#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"nope","arguments":{}}}"#.into()),
        ("a result nobody asked for", r#"{"jsonrpc":"2.0","id":99,"result":{}}"#.into()),
        ("20 MiB of arguments", huge),
    ];
    for (what, body) in &cases {
        let (st, answer) =
            common::server::try_exchange(&server.api, "POST", "/mcp", &headers, body.as_bytes())
                .unwrap_or_else(|e| panic!("{what}: no answer: {e}"));
        assert!(
            (200..500).contains(&st),
            "{what}: {st} {}",
            answer.chars().take(300).collect::<String>()
        );
        let (st, answer) = http(&server, "POST", "/mcp", &headers, CALL_ECHO);
        assert!(
            st == 200 && answer.contains("structuredContent"),
            "after {what}: {st} {}",
            answer.chars().take(300).collect::<String>()
        );
    }
}
