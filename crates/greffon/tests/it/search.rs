//! The bundled `search` plugin, sandboxed, against a local server that
//! answers like DuckDuckGo (the HTML page with `result__a` /
//! `result__snippet` and `uddg=` links, an ad block, the no-result page,
//! the anti-bot challenge, the Instant Answer JSON): the parsed result,
//! the fallback, the timeout, every error path, and the broker's refusal
//! when the allowlist is left at its default.

use crate::common;

use common::TestHome;
use common::upstream::{Request, Response, Upstream, pointed_at};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const RESULTS: &str = include_str!("../fixtures/duckduckgo/results.html");
const NO_RESULTS: &str = include_str!("../fixtures/duckduckgo/no-results.html");
const CHALLENGE: &str = include_str!("../fixtures/duckduckgo/challenge.html");
const INSTANT: &str = include_str!("../fixtures/duckduckgo/instant-answer.json");
const NO_INSTANT: &str = include_str!("../fixtures/duckduckgo/instant-answer-empty.json");

/// A fake DuckDuckGo: `/html/` and the Instant Answer API at `/`, both
/// answering by query. Every request is kept.
fn duckduckgo() -> (Upstream, Arc<Mutex<Vec<Request>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let upstream = Upstream::start(move |req| {
        log.lock().expect("lock").push(req.clone());
        let q = req.query();
        let path = req.target.split('?').next().unwrap_or("");
        let html = |status, body: &str| Response::new(status, "text/html; charset=UTF-8", body);
        // The real API answers JSON with this content type.
        let ia = |body: &str| Response::new(200, "application/x-javascript", body);
        match (path, q.get("q").map(String::as_str).unwrap_or("")) {
            ("/html/", "rust programming language") => html(200, RESULTS),
            ("/html/", "captcha") => html(202, CHALLENGE),
            ("/html/", "unavailable") => html(503, "<html><body>Service Unavailable</body></html>"),
            ("/html/", "new layout") => html(200, "<html><body><main>Results</main></body></html>"),
            ("/html/", "slow") => Response {
                delay: Duration::from_secs(3),
                ..html(200, RESULTS)
            },
            ("/html/", _) => html(200, NO_RESULTS),
            ("/", "rust") => ia(INSTANT),
            ("/", "unavailable") => Response::new(503, "text/plain", "busy"),
            ("/", "slow") => Response {
                delay: Duration::from_secs(3),
                ..ia(INSTANT)
            },
            ("/", _) => ia(NO_INSTANT),
            _ => Response::new(404, "text/plain", "not found"),
        }
    });
    (upstream, seen)
}

/// The bundled plugin, pointed at `upstream` (see `pointed_at`).
fn home_for(upstream: &Upstream, allow: bool, extra: &str) -> TestHome {
    pointed_at("search", upstream, &["html_url", "api_url"], allow, extra)
}

fn search(home: &TestHome, args: Value) -> Value {
    let (code, v) = home.run("search", &args.to_string());
    assert_eq!(code, 0, "{v}");
    v
}

#[test]
fn the_first_organic_result_skips_the_ad_and_decodes_the_link() {
    let (upstream, seen) = duckduckgo();
    let home = home_for(&upstream, true, "");
    let v = search(
        &home,
        json!({"query": "rust   programming language", "region": "fr-fr", "safe": "strict"}),
    );
    assert_eq!(
        v,
        json!({
            "query": "rust programming language",
            "title": "Rust Programming Language",
            "url": "https://www.rust-lang.org/en-US/?ref=ddg&lang=en",
            "snippet": "A language empowering everyone to build reliable and efficient software. \
                        Rust is fast & memory-efficient: no runtime or garbage collector.",
            "source": "web",
        })
    );
    let seen = seen.lock().expect("lock");
    assert_eq!(seen.len(), 1, "no fallback request");
    assert!(seen[0].target.starts_with("/html/?"), "{}", seen[0].target);
    let q = seen[0].query();
    assert_eq!(q["q"], "rust programming language");
    assert_eq!(q["kl"], "fr-fr");
    assert_eq!(q["kp"], "1", "strict safe search");
    assert!(seen[0].headers["user-agent"].contains("greffon"));
}

#[test]
fn an_empty_page_falls_back_to_the_instant_answer() {
    let (upstream, seen) = duckduckgo();
    let home = home_for(&upstream, true, "");
    let v = search(&home, json!({"query": "rust"}));
    assert_eq!(v["source"], "instant_answer");
    assert_eq!(v["title"], "Rust (programming language)");
    assert_eq!(
        v["url"],
        "https://en.wikipedia.org/wiki/Rust_(programming_language)"
    );
    assert!(
        v["snippet"]
            .as_str()
            .is_some_and(|s| s.starts_with("Rust is a general-purpose")),
        "{v}"
    );
    let seen = seen.lock().expect("lock");
    assert_eq!(seen.len(), 2);
    let ia = seen[1].query();
    assert_eq!(ia["q"], "rust");
    assert_eq!(ia["format"], "json");
    assert_eq!(seen[0].query()["kp"], "-1", "moderate by default");
}

#[test]
fn every_failure_is_a_clear_error() {
    let (upstream, _) = duckduckgo();
    let home = home_for(&upstream, true, "timeout_s = 0.5\n");
    let cases = [
        ("qzxjvwkq", "no result for 'qzxjvwkq'"),
        (
            "captcha",
            "DuckDuckGo answered with an anti-bot challenge (captcha) instead of results; try again later",
        ),
        ("unavailable", "DuckDuckGo (web results) answered HTTP 503"),
        (
            "new layout",
            "DuckDuckGo's page held no result greffon could read (its layout may have changed)",
        ),
        (
            "slow",
            "DuckDuckGo (web results) did not answer within 0.5 s; try again later",
        ),
    ];
    for (q, expected) in cases {
        let got = home.run_error("search", &json!({ "query": q }).to_string());
        assert_eq!(got, expected, "{q}");
    }
}

#[test]
fn bad_queries_are_refused_before_any_request() {
    let (upstream, _) = duckduckgo();
    let home = home_for(&upstream, true, "");
    let empty = home.run_error("search", r#"{"query": ""}"#);
    assert!(empty.contains("query"), "{empty}");
    let long = home.run_error("search", &json!({ "query": "x".repeat(501) }).to_string());
    assert!(long.contains("query"), "{long}");
    let blank = home.run_error("search", r#"{"query": "   "}"#);
    assert_eq!(blank, "query must not be blank");
    let region = home.run_error("search", r#"{"query": "a", "region": "France"}"#);
    assert!(region.contains("region"), "{region}");
    assert_eq!(upstream.hits(), 0);
}

#[test]
fn the_default_allowlist_refuses_the_local_server() {
    let (upstream, _) = duckduckgo();
    let home = home_for(&upstream, false, "");
    let refused = home.run_error("search", r#"{"query": "rust"}"#);
    assert!(
        refused.starts_with("DuckDuckGo (web results) may not be reached:"),
        "{refused}"
    );
    assert!(refused.contains("allowlist"), "{refused}");
    assert_eq!(upstream.hits(), 0, "no request reached the server");
}
