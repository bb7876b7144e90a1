//! Who may use the API: a bearer token (or a dashboard session with its
//! CSRF token) on every `/v1` route but health, and a `Host` header
//! naming this machine.

use crate::ServerError;
use crate::session::{Sessions, equal_in_constant_time, random_hex};
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use greffon_core::ServerConfig;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

/// The token: `[server] token`, else the one in `token_file`, else a new
/// random one written there (mode 0600). A bind that is not loopback
/// requires an explicit `[server] token`.
pub fn resolve_token(
    config: &ServerConfig,
    bind: SocketAddr,
    token_file: &Path,
) -> Result<String, ServerError> {
    if let Some(t) = &config.token {
        return Ok(t.clone());
    }
    if !bind.ip().is_loopback() {
        return Err(ServerError::Token(format!(
            "{bind} is reachable from other machines: set [server] token in greffon.toml to serve on it"
        )));
    }
    if let Ok(t) = std::fs::read_to_string(token_file) {
        let t = t.trim().to_string();
        if t.len() >= 16 {
            return Ok(t);
        }
    }
    let token = random_hex(32).map_err(|source| ServerError::Io {
        context: "cannot read /dev/urandom".into(),
        source,
    })?;
    if let Some(dir) = token_file.parent() {
        std::fs::create_dir_all(dir).map_err(|source| ServerError::Io {
            context: format!("cannot create {}", dir.display()),
            source,
        })?;
    }
    let _ = std::fs::remove_file(token_file);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(token_file)
        .and_then(|mut f| std::io::Write::write_all(&mut f, token.as_bytes()))
        .map_err(|source| ServerError::Io {
            context: format!("cannot write the token to {}", token_file.display()),
            source,
        })?;
    Ok(token)
}

/// What the guard checks against; also the dashboard's state (its login
/// trades the token for a session).
#[derive(Debug)]
pub(crate) struct Guard {
    pub token: String,
    /// Lower-case host names accepted besides loopback ones.
    pub allowed_hosts: Vec<String>,
    /// The dashboard's sessions, which stand for the token on `/v1`.
    pub sessions: Arc<Sessions>,
}

fn deny(status: StatusCode, kind: &str, message: &str) -> Response {
    (
        status,
        axum::Json(serde_json::json!({"error": message, "kind": kind})),
    )
        .into_response()
}

/// The host part of a `Host` header (`[::1]:8765` → `::1`).
fn host_name(value: &str) -> String {
    let v = value.trim().to_ascii_lowercase();
    if let Some(rest) = v.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("").to_string();
    }
    v.rsplit_once(':')
        .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
        .map_or(v.clone(), |(h, _)| h.to_string())
}

/// Refuses a `Host` that is neither loopback nor allowed (a page that
/// rebinds its own name to 127.0.0.1 sends its own name), then a `/v1` or
/// `/mcp` request without the bearer token. On `/v1`, a dashboard
/// session's cookie stands for the token; a request that changes state
/// must then also carry the session's CSRF token in `x-csrf-token`.
pub(crate) async fn guard(State(g): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(host_name)
        .unwrap_or_default();
    let loopback = matches!(host.as_str(), "localhost" | "127.0.0.1" | "::1");
    if !loopback && !g.allowed_hosts.contains(&host) {
        return deny(
            StatusCode::FORBIDDEN,
            "forbidden_host",
            &format!("Host '{host}' is not accepted; add it to [server] allowed_hosts"),
        );
    }
    let path = req.uri().path();
    let mcp = path == "/mcp" || path.starts_with("/mcp/");
    let api = path.starts_with("/v1/") && path != "/v1/health";
    if !api && !mcp {
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(t) if equal_in_constant_time(t.as_bytes(), g.token.as_bytes()) => {}
        Some(_) => {
            return deny(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "wrong bearer token",
            );
        }
        None => {
            if let Some(refusal) = session_refusal(&g.sessions, &req, api) {
                return refusal;
            }
        }
    }
    next.run(req).await
}

/// Why a request without a bearer token is refused, if it is: no live
/// session (or not a `/v1` route), or a state change without the
/// session's CSRF token.
fn session_refusal(sessions: &Sessions, req: &Request, api: bool) -> Option<Response> {
    let allowed = api.then(|| sessions.may_change(req.headers())).flatten();
    let Some(may_change) = allowed else {
        return Some(deny(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing bearer token (Authorization: Bearer <token from app/token>)",
        ));
    };
    let safe = matches!(req.method().as_str(), "GET" | "HEAD" | "OPTIONS");
    (!safe && !may_change).then(|| {
        deny(
            StatusCode::FORBIDDEN,
            "csrf",
            "a dashboard request that changes state needs the page's x-csrf-token header",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_headers_are_reduced_to_their_name() {
        assert_eq!(host_name("LocalHost:8765"), "localhost");
        assert_eq!(host_name("[::1]:80"), "::1");
        assert_eq!(host_name("127.0.0.1"), "127.0.0.1");
        assert_eq!(host_name("evil.example:8765"), "evil.example");
    }

    #[test]
    fn a_generated_token_is_private_and_kept() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("app/token");
        let config = ServerConfig::default();
        let bind: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let t = resolve_token(&config, bind, &file).expect("token");
        assert_eq!(t.len(), 64);
        let mode = std::fs::metadata(&file).expect("file").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(resolve_token(&config, bind, &file).expect("again"), t);
        let public: SocketAddr = "0.0.0.0:8765".parse().expect("addr");
        let e = resolve_token(&config, public, &file).expect_err("refused");
        assert!(e.to_string().contains("set [server] token"), "{e}");
    }
}

/// Browser origins allowed to call the API.
#[derive(Debug)]
pub(crate) struct Cors {
    pub origins: Vec<String>,
}

/// CORS for the configured origins only: answers their preflight (which
/// carries no token) and marks their responses; any other origin gets no
/// CORS header, so browsers keep its pages out.
pub(crate) async fn cors(State(c): State<Arc<Cors>>, req: Request, next: Next) -> Response {
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .filter(|o| c.origins.iter().any(|a| a == o))
        .map(str::to_string);
    let Some(origin) = origin else {
        return next.run(req).await;
    };
    let preflight = req.method() == axum::http::Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut resp = if preflight {
        let mut r = StatusCode::NO_CONTENT.into_response();
        let h = r.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            axum::http::HeaderValue::from_static("GET, POST"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            axum::http::HeaderValue::from_static("authorization, content-type"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            axum::http::HeaderValue::from_static("600"),
        );
        r
    } else {
        next.run(req).await
    };
    if let Ok(v) = axum::http::HeaderValue::from_str(&origin) {
        resp.headers_mut()
            .insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        resp.headers_mut()
            .insert(header::VARY, axum::http::HeaderValue::from_static("Origin"));
    }
    resp
}
