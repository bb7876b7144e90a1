//! Browser sessions of the dashboard: the token exchanged once for a
//! cookie, and the per-session CSRF token that state-changing requests
//! carry in a header.

use axum::http::HeaderMap;
use axum::http::header;
use std::collections::HashMap;
use std::io::Read;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The cookie's name.
pub(crate) const COOKIE: &str = "greffon_session";
/// The header a page's `fetch` sends its CSRF token in: a cross-site form
/// cannot set a header, and a cross-site `fetch` that does is preflighted
/// (and refused: no CORS for foreign origins).
pub(crate) const CSRF_HEADER: &str = "x-csrf-token";
/// How long a session lasts; the login link works again after it.
const LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at most; the oldest goes first (a script opening the
/// link in a loop cannot grow the table).
const MAX_SESSIONS: usize = 64;

/// `n` random bytes from the kernel, as hex.
pub(crate) fn random_hex(n: usize) -> std::io::Result<String> {
    let mut bytes = vec![0u8; n];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Compares two secrets in time independent of where they differ.
pub(crate) fn equal_in_constant_time(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

struct Session {
    csrf: String,
    opened: Instant,
}

/// The live sessions of this server, in memory: a restart logs every
/// browser out (the login link, or `greffon dashboard`, logs in again).
#[derive(Default)]
pub(crate) struct Sessions {
    /// By cookie value.
    live: Mutex<HashMap<String, Session>>,
}

impl std::fmt::Debug for Sessions {
    /// Never the cookies: they stand for the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").finish_non_exhaustive()
    }
}

impl Sessions {
    /// Opens a session: (cookie value, CSRF token).
    pub(crate) fn open(&self) -> std::io::Result<(String, String)> {
        let (id, csrf) = (random_hex(32)?, random_hex(32)?);
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.retain(|_, s| s.opened.elapsed() < LIFETIME);
        while live.len() >= MAX_SESSIONS {
            let oldest = live
                .iter()
                .min_by_key(|(_, s)| s.opened)
                .map(|(id, _)| id.clone());
            match oldest {
                Some(id) => live.remove(&id),
                None => break,
            };
        }
        live.insert(
            id.clone(),
            Session {
                csrf: csrf.clone(),
                opened: Instant::now(),
            },
        );
        Ok((id, csrf))
    }

    /// The CSRF token of the live session the request's cookie names.
    pub(crate) fn csrf_of(&self, headers: &HeaderMap) -> Option<String> {
        let id = cookie(headers, COOKIE)?;
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.get(id)
            .filter(|s| s.opened.elapsed() < LIFETIME)
            .map(|s| s.csrf.clone())
    }

    /// What the request's cookie allows: `None` without a live session;
    /// `Some(true)` when it also carries the session's CSRF token in
    /// [`CSRF_HEADER`], so it may change state.
    pub(crate) fn may_change(&self, headers: &HeaderMap) -> Option<bool> {
        let csrf = self.csrf_of(headers)?;
        let sent = headers
            .get(CSRF_HEADER)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        Some(equal_in_constant_time(sent, csrf.as_bytes()))
    }

    /// Ends the session the request's cookie names.
    pub(crate) fn close(&self, headers: &HeaderMap) {
        if let Some(id) = cookie(headers, COOKIE) {
            let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
            live.remove(id);
        }
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The `Set-Cookie` value for session `id`: script-proof, same-site only.
pub(crate) fn set_cookie(id: &str) -> String {
    format!(
        "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        LIFETIME.as_secs()
    )
}

/// The `Set-Cookie` value that removes the session cookie.
pub(crate) fn clear_cookie() -> String {
    format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with_cookie(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(value).expect("header"),
        );
        h
    }

    #[test]
    fn a_session_is_found_by_its_cookie_and_closed() {
        let sessions = Sessions::default();
        let (id, csrf) = sessions.open().expect("opened");
        assert_eq!(id.len(), 64);
        assert_ne!(id, csrf);
        let h = with_cookie(&format!("other=1; {COOKIE}={id}"));
        assert_eq!(sessions.csrf_of(&h), Some(csrf.clone()));
        assert_eq!(
            sessions.csrf_of(&with_cookie(&format!("{COOKIE}=nope"))),
            None
        );
        assert_eq!(sessions.csrf_of(&HeaderMap::new()), None);
        assert_eq!(sessions.may_change(&h), Some(false), "no CSRF header");
        let mut with_csrf = h.clone();
        with_csrf.insert(CSRF_HEADER, HeaderValue::from_str(&csrf).expect("header"));
        assert_eq!(sessions.may_change(&with_csrf), Some(true));
        with_csrf.insert(CSRF_HEADER, HeaderValue::from_static("0000"));
        assert_eq!(sessions.may_change(&with_csrf), Some(false));
        sessions.close(&h);
        assert_eq!(sessions.csrf_of(&h), None);
        assert_eq!(sessions.may_change(&h), None);
    }

    #[test]
    fn the_table_keeps_the_newest_sessions() {
        let sessions = Sessions::default();
        let (first, _) = sessions.open().expect("opened");
        for _ in 0..MAX_SESSIONS {
            sessions.open().expect("opened");
        }
        let live = sessions.live.lock().expect("lock");
        assert_eq!(live.len(), MAX_SESSIONS);
        assert!(!live.contains_key(&first));
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(equal_in_constant_time(b"abc", b"abc"));
        assert!(!equal_in_constant_time(b"abc", b"abd"));
        assert!(!equal_in_constant_time(b"abc", b"abcd"));
    }
}
