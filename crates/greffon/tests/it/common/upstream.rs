//! A real HTTP/1.1 server on 127.0.0.1:0 for tests that need an upstream:
//! one thread per connection, one request per connection, answers built by
//! the test's handler.

use std::collections::HashMap;
use std::io::BufReader;
use std::io::{BufRead, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// What the server received.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    /// Lower-case names.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Request {
    /// The query string, decoded.
    pub fn query(&self) -> HashMap<String, String> {
        let q = self.target.split_once('?').map_or("", |(_, q)| q);
        url::form_urlencoded::parse(q.as_bytes())
            .into_owned()
            .collect()
    }
}

/// A home with the bundled `plugin` enabled and pointed at `upstream`:
/// each of `url_keys` in `[plugins.NAME.config]` is the server's base URL,
/// plus the `extra` config lines. `allow`: the plugin's allowlist is set
/// to the server's loopback address explicitly; otherwise it keeps the
/// plugin's own.
pub fn pointed_at(
    plugin: &str,
    upstream: &Upstream,
    url_keys: &[&str],
    allow: bool,
    extra: &str,
) -> super::TestHome {
    let home = super::TestHome::new();
    home.bundled(plugin);
    let base = upstream.url("");
    let allowlist = if allow {
        format!("allowlist_domains = [\"{}\"]\n", upstream.addr)
    } else {
        String::new()
    };
    let urls: String = url_keys
        .iter()
        .map(|k| format!("{k} = \"{base}\"\n"))
        .collect();
    home.config(&format!(
        "[plugins.{plugin}]\n{allowlist}[plugins.{plugin}.config]\n{urls}{extra}"
    ));
    home.enable(plugin);
    home
}

/// What the handler answers.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Wait this long before answering (a slow upstream).
    pub delay: Duration,
}

impl Response {
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            headers: vec![("Content-Type".into(), content_type.into())],
            body: body.into(),
            delay: Duration::ZERO,
        }
    }

    pub fn json(value: &serde_json::Value) -> Response {
        Response::new(200, "application/json", value.to_string())
    }

    pub fn redirect(location: &str) -> Response {
        let mut r = Response::new(302, "text/plain", "moved");
        r.headers.push(("Location".into(), location.into()));
        r
    }
}

pub struct Upstream {
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
}

impl Upstream {
    pub fn start(handler: impl Fn(&Request) -> Response + Send + Sync + 'static) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let hits = Arc::new(AtomicUsize::new(0));
        let handler = Arc::new(handler);
        let counter = hits.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let handler = handler.clone();
                let counter = counter.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(match stream.try_clone() {
                        Ok(s) => s,
                        Err(_) => return,
                    });
                    let Some(req) = read_request(&mut reader) else {
                        return;
                    };
                    counter.fetch_add(1, Ordering::SeqCst);
                    let resp = handler(&req);
                    std::thread::sleep(resp.delay);
                    let mut out = stream;
                    let _ = write!(
                        out,
                        "HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                        resp.status,
                        resp.body.len()
                    );
                    for (k, v) in &resp.headers {
                        let _ = write!(out, "{k}: {v}\r\n");
                    }
                    let _ = out.write_all(b"\r\n");
                    let _ = out.write_all(&resp.body);
                });
            }
        });
        Upstream { addr, hits }
    }

    /// Requests received so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

fn read_request(reader: &mut impl BufRead) -> Option<Request> {
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        target,
        headers,
        body,
    })
}
