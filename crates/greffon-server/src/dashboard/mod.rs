//! The dashboard: a page shell served at `/` and at each page's deep link,
//! its script and style embedded in the binary, and the exchange of the
//! login link's token for a session cookie.
//!
//! The shell holds no data: the script reads everything from `/v1` with
//! the session cookie (see `auth::guard`), so the page and the API apply
//! one set of rules. Without a session the shell is a login form.

use crate::auth::Guard;
use crate::session::{clear_cookie, equal_in_constant_time, set_cookie};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::collections::HashMap;
use std::sync::Arc;

type DashState = State<Arc<Guard>>;

/// The dashboard's login link for the server at `base` (`http://…`, no
/// trailing slash): opening it trades `token` for a session cookie.
pub fn login_link(base: &str, token: &str) -> String {
    format!("{base}/?token={token}")
}

/// The page paths: each serves the shell, and the script renders the
/// page the path names (so a reload or a shared link lands on it).
const PAGES: [&str; 5] = ["/", "/plugins/{name}", "/tasks", "/llm", "/logs"];

pub(crate) fn routes<S: Clone + Send + Sync + 'static>(state: Arc<Guard>) -> Router<S> {
    let mut router = Router::new();
    for page in PAGES {
        router = router.route(page, get(shell));
    }
    router
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/assets/{file}", get(asset))
        .with_state(state)
}

/// No script but ours, no inline script or style, nothing from elsewhere,
/// never inside a frame.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The headers of every dashboard answer.
fn hardened(mut resp: Response, cache: &'static str) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // The login link's token must not leave in a Referer; `no-referrer`
    // would also make Chromium send `Origin: null` on the login form.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    resp
}

/// A redirect to `location` (a path of this server), optionally setting
/// a cookie.
fn see_other(location: &str, cookie: Option<String>) -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    if let Some(v) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    hardened(resp, "no-store")
}

/// A path of this server to go back to: never another origin
/// (`//evil.example`, `/\evil.example`), `/` when in doubt.
fn local_path(path: &str) -> &str {
    let ok = path.starts_with('/') && !path.starts_with("//") && !path.contains('\\');
    if ok { path } else { "/" }
}

/// Opens a session when `token` is the server's, answering the redirect
/// that lands on `next` with the cookie set (or back on the login form).
fn exchange(dash: &Guard, token: &str, next: &str) -> Response {
    let next = local_path(next);
    if !equal_in_constant_time(token.trim().as_bytes(), dash.token.as_bytes()) {
        tracing::warn!(target: "audit", event = "dashboard_login_refused", "dashboard: a wrong token was presented");
        return see_other(&format!("{next}?login=failed"), None);
    }
    match dash.sessions.open() {
        Ok((id, _)) => {
            tracing::info!(target: "audit", event = "dashboard_login", "dashboard: a browser logged in");
            see_other(next, Some(set_cookie(&id)))
        }
        Err(e) => {
            tracing::error!(target: "server", "dashboard: cannot open a session: {e}");
            hardened(
                (StatusCode::INTERNAL_SERVER_ERROR, "cannot open a session").into_response(),
                "no-store",
            )
        }
    }
}

async fn shell(
    State(dash): DashState,
    Query(query): Query<HashMap<String, String>>,
    req: Request,
) -> Response {
    let path = req.uri().path().to_string();
    if let Some(token) = query.get("token") {
        // The token leaves the address bar (and the history) at once.
        return exchange(&dash, token, &path);
    }
    let csrf = dash.sessions.csrf_of(req.headers());
    let failed = query.get("login").is_some_and(|v| v == "failed");
    let html = match csrf {
        Some(csrf) => page(&csrf),
        None => login_page(&path, failed),
    };
    hardened(
        ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response(),
        "no-store",
    )
}

/// A cross-site form must not log a browser in or out: a request that
/// says where it comes from must come from this server's own origin.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(|o| o.eq_ignore_ascii_case(host))
}

fn cross_site() -> Response {
    hardened(
        (StatusCode::FORBIDDEN, "cross-site request refused").into_response(),
        "no-store",
    )
}

/// The login form's post: `token=…&next=/path`.
async fn login(State(dash): DashState, headers: HeaderMap, body: Bytes) -> Response {
    if !same_origin(&headers) {
        return cross_site();
    }
    let fields: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let token = fields.get("token").map_or("", String::as_str);
    let next = fields.get("next").map_or("/", String::as_str);
    exchange(&dash, token, next)
}

async fn logout(State(dash): DashState, headers: HeaderMap) -> Response {
    if !same_origin(&headers) || dash.sessions.may_change(&headers) != Some(true) {
        return cross_site();
    }
    dash.sessions.close(&headers);
    see_other("/", Some(clear_cookie()))
}

async fn asset(axum::extract::Path(file): axum::extract::Path<String>) -> Response {
    let (kind, body): (&str, &'static str) = match file.as_str() {
        "app.js" => (
            "text/javascript; charset=utf-8",
            include_str!("assets/app.js"),
        ),
        "app.css" => ("text/css; charset=utf-8", include_str!("assets/app.css")),
        "icon.svg" => ("image/svg+xml", include_str!("assets/icon.svg")),
        _ => {
            return hardened(
                (StatusCode::NOT_FOUND, "no such asset").into_response(),
                "no-store",
            );
        }
    };
    hardened(
        ([(header::CONTENT_TYPE, kind)], body).into_response(),
        "no-cache",
    )
}

/// Escapes text for an HTML attribute or element.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The shell of a logged-in browser: the script renders the page.
fn page(csrf: &str) -> String {
    include_str!("assets/page.html").replace("{{csrf}}", &escape(csrf))
}

/// The shell without a session: a login form and no data.
fn login_page(path: &str, failed: bool) -> String {
    let notice = if failed {
        r#"<p role="alert" class="error">That token is not this server's. Run <code>greffon dashboard</code> for a fresh link.</p>"#
    } else {
        ""
    };
    include_str!("assets/login.html")
        .replace("{{notice}}", notice)
        .replace("{{next}}", &escape(local_path(path)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed() {
        assert_eq!(local_path("/plugins/echo"), "/plugins/echo");
        assert_eq!(local_path("//evil.example/x"), "/");
        assert_eq!(local_path("/\\evil.example"), "/");
        assert_eq!(local_path("https://evil.example"), "/");
    }

    #[test]
    fn text_is_escaped_for_html() {
        assert_eq!(
            escape(r#"<a href="x">'&'"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;"
        );
    }

    #[test]
    fn the_origin_must_be_this_server() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8765"));
        assert!(
            same_origin(&h),
            "no Origin: a same-origin form of old browsers"
        );
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8765"),
        );
        assert!(same_origin(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert!(!same_origin(&h));
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(!same_origin(&h));
    }
}
