//! `greffon serve` as a child process and plain HTTP/1.1 requests to it.

use super::wait_for;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Where a server listens and its token.
#[derive(Clone)]
pub struct Api {
    pub address: String,
    pub token: String,
}

pub struct Server {
    pub child: Child,
    pub api: Api,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start(home: &super::TestHome) -> Server {
    let child = Command::new(env!("CARGO_BIN_EXE_greffon"))
        .arg("--home")
        .arg(home.path())
        .args(["serve", "--bind", "127.0.0.1:0"])
        .envs(home.vars())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("greffon serve starts");
    let endpoint = home.path().join("app/server.json");
    let pid = child.id();
    let address = wait_for(Duration::from_secs(30), || {
        let v: Value = serde_json::from_slice(&std::fs::read(&endpoint).ok()?).ok()?;
        (v["pid"] == json!(pid)).then(|| v["address"].as_str().map(str::to_string))?
    })
    .expect("server.json names the server");
    let token = std::fs::read_to_string(home.path().join("app/token")).expect("token");
    Server {
        child,
        api: Api { address, token },
    }
}

/// One HTTP/1.1 request: (status, body as JSON or as a string).
pub fn request(
    s: &Api,
    method: &str,
    path: &str,
    auth: Option<&str>,
    host: Option<&str>,
    body: &str,
) -> (u16, Value) {
    let bearer = auth.map(|t| format!("Bearer {t}"));
    let mut headers = Vec::new();
    if let Some(b) = &bearer {
        headers.push(("Authorization", b.as_str()));
    }
    let (status, body) = exchange(s, method, path, host, &headers, body);
    let value = serde_json::from_str(&body).unwrap_or(Value::String(body));
    (status, value)
}

/// One HTTP/1.1 exchange with any headers (`host` replaces the server's
/// own address in `Host`): (status, body as text).
pub fn exchange(
    s: &Api,
    method: &str,
    path: &str,
    host: Option<&str>,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let (status, _, body) = full(s, method, path, host, headers, body);
    (status, body)
}

/// A request with extra headers: (status, the response's head).
pub fn raw(s: &Api, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let (status, head, _) = full(s, method, path, None, headers, "");
    (status, head)
}

/// One HTTP/1.1 exchange: (status, the head in lower case, the body).
pub fn full(
    s: &Api,
    method: &str,
    path: &str,
    host: Option<&str>,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    let mut stream = TcpStream::connect(&s.address).expect("connect");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
        host.unwrap_or(&s.address),
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).expect("write");
    stream.write_all(body.as_bytes()).expect("write body");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read");
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status");
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (status, head.to_ascii_lowercase(), body.to_string())
}

/// Opens an MCP session on `/mcp` with the `initialize` request `init`;
/// answers the session id the server assigned.
pub fn mcp_session(s: &Api, init: &str) -> String {
    let bearer = format!("Bearer {}", s.token);
    let headers = [
        ("Accept", "application/json, text/event-stream"),
        ("Content-Type", "application/json"),
        ("Authorization", bearer.as_str()),
    ];
    let (_, head, _) = full(s, "POST", "/mcp", None, &headers, init);
    head.lines()
        .find_map(|l| l.strip_prefix("mcp-session-id:"))
        .expect("a session id")
        .trim()
        .to_string()
}

/// One exchange that tolerates what a client under load meets: a server
/// that answers (413) before reading a whole body, or none at all. The
/// status and body, or why none came; reads wait at most 30 s.
pub fn try_exchange(
    s: &Api,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<(u16, String), String> {
    let attempt = || -> std::io::Result<(u16, String)> {
        let mut stream = TcpStream::connect(&s.address)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
            s.address,
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes())?;
        // The answer may come (and the connection close) before the end.
        let _ = stream.write_all(body);
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw)?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("no status in {text:?}")))?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Ok((status, body))
    };
    attempt().map_err(|e| e.to_string())
}

pub fn call(s: &Api, method: &str, path: &str, body: &str) -> (u16, Value) {
    request(s, method, path, Some(&s.token), None, body)
}

/// A task's runs through the API, oldest first.
pub fn runs(s: &Api, task: &str) -> Vec<Value> {
    let (_, v) = call(s, "GET", &format!("/v1/tasks/{task}/runs?limit=100"), "");
    let mut runs = v.as_array().cloned().unwrap_or_default();
    runs.reverse();
    runs
}

/// Stops the server with SIGTERM (the graceful path) and checks it exited
/// cleanly.
pub fn stop(mut server: Server) {
    // SAFETY: kill on our own child's pid.
    unsafe { libc::kill(server.child.id() as i32, libc::SIGTERM) };
    let status = server.child.wait().expect("wait");
    assert!(status.success(), "{status:?}");
}

/// An RFC 3339 time in milliseconds since the epoch.
pub fn millis(v: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(v.as_str().expect("time"))
        .expect("rfc3339")
        .timestamp_millis()
}
