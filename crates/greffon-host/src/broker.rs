//! The HTTP broker behind `greffon.http`: the host makes every request a
//! plugin asks for, within the plugin's allowlist.
//!
//! A worker has no socket of its own (seccomp refuses `socket()`), so this
//! is its only way out. Each request is checked here, in trusted code:
//! the WHATWG-parsed URL against the allowlist (scheme, host labels, port),
//! the DNS answers against public address ranges (unless the operator
//! named the host exactly), every redirect hop again, and the size and time
//! of the answer. The connection goes to the vetted address: there is no
//! second lookup to rebind. Every request and every refusal is audited.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use greffon_core::{Allowlist, is_public};
use greffon_protocol::{ErrorKind, WireError};
use serde::Deserialize;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Redirects followed for one request.
const MAX_REDIRECTS: usize = 5;

/// Headers a plugin may not set: the host decides where the request goes
/// (`Host` would reach another virtual host on an allowed address) and
/// how the connection behaves.
const FORBIDDEN_HEADERS: &[&str] = &[
    "host",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

/// Broker settings from the config.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HttpSettings {
    pub max_response_bytes: usize,
    pub timeout: Duration,
}

/// A worker's network grant: its effective allowlist and, once it has made
/// a request, its client (connection pool, never shared between plugins).
#[derive(Debug)]
pub(crate) struct NetAccess {
    pub allowlist: Allowlist,
    client: OnceLock<Result<reqwest::Client, String>>,
}

impl NetAccess {
    pub(crate) fn new(allowlist: Allowlist) -> NetAccess {
        NetAccess {
            allowlist,
            client: OnceLock::new(),
        }
    }

    fn client(&self) -> Result<&reqwest::Client, String> {
        self.client
            .get_or_init(|| build_client(&self.allowlist))
            .as_ref()
            .map_err(Clone::clone)
    }
}

/// A policy refusal, recognised in reqwest's error chain.
#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// Resolves in the host and refuses non-public answers for hosts the
/// allowlist does not name exactly.
struct Vetting {
    allowlist: Allowlist,
}

impl reqwest::dns::Resolve for Vetting {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        // `name.` and `name` are one host (the allowlist already matched
        // them as such); the hosts file only knows the latter.
        let host = name.as_str().trim_end_matches('.').to_string();
        let explicit = self.allowlist.names_exactly(&host);
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            vet(&host, explicit, &addrs)
                .map_err(|r| Box::new(r) as Box<dyn std::error::Error + Send + Sync>)?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Refuses an answer holding any non-public address, unless the operator
/// named the host exactly. Every address is checked, not just the first:
/// the connection may go to any of them.
fn vet(host: &str, explicit: bool, addrs: &[SocketAddr]) -> Result<(), Refused> {
    if explicit {
        return Ok(());
    }
    match addrs.iter().find(|a| !is_public(a.ip())) {
        Some(bad) => Err(Refused(format!(
            "'{host}' resolves to the non-public address {}; list '{host}' exactly in allowlist_domains to allow it",
            bad.ip()
        ))),
        None => Ok(()),
    }
}

fn build_client(allowlist: &Allowlist) -> Result<reqwest::Client, String> {
    crate::install_tls_provider();
    let policy_list = allowlist.clone();
    let redirects = reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() > MAX_REDIRECTS {
            return attempt.error(Refused(format!("more than {MAX_REDIRECTS} redirects")));
        }
        let downgrade = attempt.url().scheme() == "http"
            && attempt
                .previous()
                .last()
                .is_some_and(|u| u.scheme() == "https");
        if downgrade {
            let to = attempt.url().to_string();
            return attempt.error(Refused(format!(
                "a redirect from https to http ({to}) is refused"
            )));
        }
        match policy_list.check(attempt.url()) {
            Ok(_) => attempt.follow(),
            Err(deny) => {
                let to = attempt.url().to_string();
                attempt.error(Refused(format!("redirect to {to} refused: {deny}")))
            }
        }
    });
    reqwest::Client::builder()
        .no_proxy()
        .redirect(redirects)
        .dns_resolver(Arc::new(Vetting {
            allowlist: allowlist.clone(),
        }))
        .user_agent(concat!("greffon/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// What `greffon.http` sends.
#[derive(Debug, Deserialize)]
struct Request {
    method: String,
    url: String,
    #[serde(default)]
    headers: Vec<(String, String)>,
    /// Base64 of the body.
    #[serde(default)]
    body: Option<String>,
    /// Seconds; the SDK already capped it by the call's remaining time.
    #[serde(default)]
    timeout: Option<f64>,
}

/// One audit record per request or refusal.
struct Audit<'a> {
    plugin: &'a str,
    method: &'a str,
    host: String,
    address: Option<SocketAddr>,
    status: Option<u16>,
    bytes: usize,
}

impl Audit<'_> {
    fn record(&self, decision: &str, reason: Option<&str>) {
        tracing::info!(
            target: "audit",
            event = "http_request",
            plugin = %self.plugin,
            method = %self.method,
            host = %self.host,
            address = self.address.map(|a| a.to_string()),
            status = self.status,
            bytes = self.bytes,
            decision,
            reason,
        );
    }
}

fn refused(audit: &Audit<'_>, message: String) -> WireError {
    audit.record("refused", Some(&message));
    WireError::new(ErrorKind::PermissionDenied, message)
}

fn find_refusal(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<Refused>() {
            return Some(r.0.clone());
        }
        cur = err.source();
    }
    None
}

/// Performs one request for `plugin` (None when it lacks `net`).
pub(crate) async fn request(
    plugin: &str,
    net: Option<&NetAccess>,
    settings: HttpSettings,
    params: Value,
) -> Result<Value, WireError> {
    let req: Request = serde_json::from_value(params).map_err(|e| {
        WireError::new(
            ErrorKind::HostService,
            format!("http.request: malformed request: {e}"),
        )
    })?;
    let method_name = req.method.to_ascii_uppercase();
    let mut audit = Audit {
        plugin,
        method: &method_name,
        host: String::new(),
        address: None,
        status: None,
        bytes: 0,
    };
    let (net, url, method) = admit(plugin, net, &req, &mut audit)?;
    let builder = prepare(net, method, url, &req)?;
    let timeout = req
        .timeout
        .filter(|t| t.is_finite() && *t > 0.0)
        .map_or(settings.timeout, |t| {
            Duration::from_secs_f64(t).min(settings.timeout)
        });
    let exchange = async {
        let mut resp = builder.send().await?;
        audit.address = resp.remote_addr();
        audit.status = Some(resp.status().as_u16());
        let status = resp.status().as_u16();
        let final_url = resp.url().to_string();
        let headers: Vec<(String, String)> = resp
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await? {
            if body.len() + chunk.len() > settings.max_response_bytes {
                return Ok(Err(body.len() + chunk.len()));
            }
            body.extend_from_slice(&chunk);
        }
        Ok::<_, reqwest::Error>(Ok((status, final_url, headers, body)))
    };
    let outcome = tokio::time::timeout(timeout, exchange).await;
    settle(&mut audit, settings, timeout, outcome)
}

/// What the plugin may send: refused without `net`, outside the
/// allowlist, or with a method that is never allowed (each refusal
/// audited).
fn admit<'n>(
    plugin: &str,
    net: Option<&'n NetAccess>,
    req: &Request,
    audit: &mut Audit<'_>,
) -> Result<(&'n NetAccess, url::Url, reqwest::Method), WireError> {
    let Some(net) = net else {
        return Err(refused(
            audit,
            format!(
                "plugin '{plugin}' has no 'net' permission; add 'net' to meta['permissions'] and run `greffon plugin enable {plugin}`"
            ),
        ));
    };
    let (url, allowed) = match net.allowlist.check_str(&req.url) {
        Ok(ok) => ok,
        Err(deny) => {
            audit.host = url::Url::parse(&req.url)
                .ok()
                .and_then(|u| u.host_str().map(str::to_string))
                .unwrap_or_default();
            let hint = if net.allowlist.is_empty() {
                " (the allowlist is empty: declare meta['allowlist_domains'])"
            } else {
                ""
            };
            return Err(refused(audit, format!("{deny}{hint}")));
        }
    };
    audit.host = allowed.host.clone();
    if matches!(audit.method, "CONNECT" | "TRACE") {
        return Err(refused(
            audit,
            format!("method {} is not allowed", audit.method),
        ));
    }
    let method = reqwest::Method::from_bytes(audit.method.as_bytes()).map_err(|_| {
        WireError::new(
            ErrorKind::HostService,
            format!("http.request: invalid method '{}'", req.method),
        )
    })?;
    Ok((net, url, method))
}

/// The request as the plugin asked for it, minus the headers it may not
/// set (hop-by-hop, proxy), with its body decoded.
fn prepare(
    net: &NetAccess,
    method: reqwest::Method,
    url: url::Url,
    req: &Request,
) -> Result<reqwest::RequestBuilder, WireError> {
    let client = net
        .client()
        .map_err(|e| WireError::new(ErrorKind::Internal, e))?;
    let mut builder = client.request(method, url);
    for (name, value) in &req.headers {
        let lower = name.to_ascii_lowercase();
        if FORBIDDEN_HEADERS.contains(&lower.as_str()) || lower.starts_with("proxy-") {
            continue;
        }
        builder = builder.header(name, value);
    }
    if let Some(body) = &req.body {
        let bytes = B64.decode(body).map_err(|e| {
            WireError::new(
                ErrorKind::HostService,
                format!("http.request: body is not base64: {e}"),
            )
        })?;
        builder = builder.body(bytes);
    }
    Ok(builder)
}

/// A response read whole: status, final URL, headers, body; or the size
/// at which the body passed the limit.
type Fetched = Result<(u16, String, Vec<(String, String)>, Vec<u8>), usize>;

/// The plugin's answer from what the exchange gave, audited.
fn settle(
    audit: &mut Audit<'_>,
    settings: HttpSettings,
    timeout: Duration,
    outcome: Result<Result<Fetched, reqwest::Error>, tokio::time::error::Elapsed>,
) -> Result<Value, WireError> {
    match outcome {
        Err(_) => {
            let message = format!(
                "request to {} timed out after {:.1} s",
                audit.host,
                timeout.as_secs_f64()
            );
            audit.record("timeout", Some(&message));
            Err(WireError::new(ErrorKind::Timeout, message))
        }
        Ok(Err(e)) => {
            if let Some(reason) = find_refusal(&e) {
                return Err(refused(audit, reason));
            }
            let message = if e.is_timeout() {
                format!("request to {} timed out", audit.host)
            } else if e.is_connect() {
                format!("cannot connect to {}: {}", audit.host, source_text(&e))
            } else {
                format!("request to {} failed: {}", audit.host, source_text(&e))
            };
            audit.record("failed", Some(&message));
            Err(WireError::new(ErrorKind::HostService, message))
        }
        Ok(Ok(Err(size))) => {
            audit.bytes = size;
            let message = format!(
                "the response from {} exceeds {} bytes (http_max_response_bytes)",
                audit.host, settings.max_response_bytes
            );
            audit.record("too_large", Some(&message));
            Err(WireError::new(ErrorKind::TooLarge, message))
        }
        Ok(Ok(Ok((status, final_url, headers, body)))) => {
            audit.bytes = body.len();
            audit.record("allowed", None);
            Ok(json!({
                "status": status,
                "url": final_url,
                "headers": headers,
                "body": B64.encode(&body),
            }))
        }
    }
}

/// The innermost cause of a reqwest error, which says what happened.
fn source_text(e: &reqwest::Error) -> String {
    let mut cur: &dyn std::error::Error = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(ips: &[&str]) -> Vec<SocketAddr> {
        ips.iter()
            .map(|ip| SocketAddr::new(ip.parse().expect("ip"), 0))
            .collect()
    }

    #[test]
    fn a_name_answering_a_private_address_is_refused_unless_named_exactly() {
        // A rebinding answer: one public and one loopback address.
        let answer = addrs(&["93.184.216.34", "127.0.0.1"]);
        let e = vet("api.example.com", false, &answer).expect_err("refused");
        assert!(e.0.contains("non-public address 127.0.0.1"), "{e}");
        assert!(vet("api.example.com", true, &answer).is_ok());
        assert!(vet("api.example.com", false, &addrs(&["93.184.216.34"])).is_ok());
        for ip in ["169.254.169.254", "10.0.0.1", "::1", "::ffff:192.168.1.1"] {
            assert!(vet("x.example.com", false, &addrs(&[ip])).is_err(), "{ip}");
        }
    }
}
