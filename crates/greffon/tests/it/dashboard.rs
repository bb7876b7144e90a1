//! The browser dashboard: its login (token → cookie), CSRF and CSP rules
//! and the routes it reads (events, crash dumps, logs) over plain HTTP;
//! `greffon dashboard`; and the pages themselves in real Chromium, driven
//! by Playwright (`dashboard_browser.py`).

use crate::common;

use common::TestHome;
use common::server::{Api, Server, call, full, start};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const ECHO: &str = "class P:\n    meta = {'name': 'echo', 'description': 'Echoes its arguments', 'inputs': {'schema': {'city': {'type': 'string', 'required': True}, 'n': {'type': 'integer', 'default': 1, 'minimum': 1, 'maximum': 5}, 'loud': {'type': 'boolean', 'default': False}}}}\n    def run(self, city, n, loud):\n        text = (city.upper() if loud else city) * n\n        return {'text': text}\nplugin = P()\n";
const CRASHY: &str = "import os, sys\nclass P:\n    meta = {'name': 'crashy', 'description': 'Exits when asked', 'inputs': {'schema': {'crash': {'type': 'boolean', 'default': False}}}}\n    def run(self, crash):\n        if crash:\n            os._exit(3)\n        return {'ok': True}\nplugin = P()\n";
const LATER: &str = "class P:\n    meta = {'name': 'later', 'description': 'Enabled from the page'}\n    def run(self):\n        return {'later': True}\nplugin = P()\n";
const SPARE: &str = "class P:\n    meta = {'name': 'spare', 'description': 'Disabled from the CLI', 'permissions': ['net'], 'allowlist_domains': ['example.com']}\n    def run(self):\n        return {}\nplugin = P()\n";
const BROKEN: &str = "class P:\n    meta = {'name': 'broken'\n";

/// A home with the dashboard's fixtures: three enabled plugins, one
/// disabled, one that cannot load.
fn dashboard_home(extra_config: &str) -> TestHome {
    let home = TestHome::new();
    home.config(&format!("[server]\nwatch = false\n{extra_config}"));
    for (folder, code) in [("echo", ECHO), ("crashy", CRASHY), ("spare", SPARE)] {
        home.plugin(folder, code);
        home.enable(folder);
    }
    home.plugin("later", LATER);
    home.plugin("broken", BROKEN);
    home
}

fn get(s: &Api, path: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    full(s, "GET", path, None, headers, "")
}

/// The value of header `name` in a lower-cased head.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
}

/// Logs in with the token; answers the `Cookie` header value and the
/// page's CSRF token.
fn log_in(s: &Api) -> (String, String) {
    let (st, head, _) = get(s, &format!("/?token={}", s.token), &[]);
    assert_eq!(st, 303, "{head}");
    let set = header(&head, "set-cookie").expect("a session cookie");
    let cookie = set.split(';').next().expect("name=value").to_string();
    let (st, _, page) = get(s, "/", &[("Cookie", &cookie)]);
    assert_eq!(st, 200);
    let csrf = page
        .split("name=\"greffon-csrf\" content=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the page carries its CSRF token")
        .to_string();
    (cookie, csrf)
}

#[test]
fn the_login_link_opens_a_session_and_nothing_shows_without_one() {
    let home = dashboard_home("");
    let server = start(&home);
    let s = &server.api;

    // No session: a login form, no data, and the API refuses.
    let (st, head, page) = get(s, "/", &[]);
    assert_eq!(st, 200);
    assert!(page.contains("name=\"token\""), "{page}");
    assert!(
        !page.contains("greffon-csrf") && !page.contains("echo"),
        "{page}"
    );
    let csp = header(&head, "content-security-policy").expect("a CSP");
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(header(&head, "referrer-policy"), Some("same-origin"));
    assert_eq!(get(s, "/v1/plugins", &[]).0, 401);
    assert_eq!(
        get(s, "/v1/plugins", &[("Cookie", "greffon_session=forged")]).0,
        401
    );

    // A wrong token: back to the form, told so, no cookie.
    let (st, head, _) = get(s, "/tasks?token=not-the-token", &[]);
    assert_eq!(st, 303);
    assert_eq!(header(&head, "location"), Some("/tasks?login=failed"));
    assert!(header(&head, "set-cookie").is_none(), "{head}");
    let (_, _, page) = get(s, "/tasks?login=failed", &[]);
    assert!(page.contains("role=\"alert\""), "{page}");

    // The link: a cookie the page's scripts cannot read, sent to this
    // site only, and the token gone from the address.
    let (st, head, _) = get(s, &format!("/plugins/echo?token={}", s.token), &[]);
    assert_eq!(st, 303);
    assert_eq!(header(&head, "location"), Some("/plugins/echo"));
    let set = header(&head, "set-cookie").expect("cookie");
    for flag in ["httponly", "samesite=strict", "path=/"] {
        assert!(set.split("; ").any(|f| f == flag), "{flag} missing: {set}");
    }
    let (cookie, csrf) = log_in(s);
    let (st, _, body) = get(s, "/v1/plugins", &[("Cookie", &cookie)]);
    assert_eq!(st, 200);
    assert!(body.contains("\"echo\""), "{body}");

    // A state change needs the page's CSRF token besides the cookie.
    let enable =
        |headers: &[(&str, &str)]| full(s, "POST", "/v1/plugins/later/enable", None, headers, "");
    let (st, _, body) = enable(&[("Cookie", &cookie)]);
    assert_eq!(st, 403, "{body}");
    assert!(body.contains("\"csrf\""), "{body}");
    assert_eq!(
        enable(&[("Cookie", &cookie), ("X-CSRF-Token", "0000")]).0,
        403
    );
    assert_eq!(
        call(s, "GET", "/v1/plugins/later", "").1["state"],
        "disabled"
    );
    let (st, _, body) = enable(&[("Cookie", &cookie), ("X-CSRF-Token", &csrf)]);
    assert_eq!(st, 200, "{body}");
    // The bearer API is unchanged: no CSRF token needed.
    assert_eq!(call(s, "POST", "/v1/plugins/later/disable", "").0, 200);

    // The login form: same origin only.
    let form = format!("token={}&next=%2Flogs", s.token);
    let foreign = [
        ("Origin", "http://evil.example"),
        ("Content-Type", "application/x-www-form-urlencoded"),
    ];
    assert_eq!(full(s, "POST", "/login", None, &foreign, &form).0, 403);
    let own_origin = format!("http://{}", s.address);
    let own = [
        ("Origin", own_origin.as_str()),
        ("Content-Type", "application/x-www-form-urlencoded"),
    ];
    let (st, head, _) = full(s, "POST", "/login", None, &own, &form);
    assert_eq!((st, header(&head, "location")), (303, Some("/logs")));
    assert!(header(&head, "set-cookie").is_some_and(|c| c.contains("httponly")));
    let offsite = format!("token={}&next=%2F%2Fevil.example", s.token);
    let (_, head, _) = full(s, "POST", "/login", None, &own, &offsite);
    assert_eq!(
        header(&head, "location"),
        Some("/"),
        "never to another site"
    );

    // Logging out ends the session, and needs the CSRF token too.
    assert_eq!(
        full(s, "POST", "/logout", None, &[("Cookie", &cookie)], "").0,
        403
    );
    let (st, head, _) = full(
        s,
        "POST",
        "/logout",
        None,
        &[("Cookie", &cookie), ("X-CSRF-Token", &csrf)],
        "",
    );
    assert_eq!(st, 303);
    assert!(
        header(&head, "set-cookie").is_some_and(|c| c.contains("max-age=0")),
        "{head}"
    );
    assert_eq!(get(s, "/v1/plugins", &[("Cookie", &cookie)]).0, 401);

    // The Host check covers the pages: a rebinding page gets nothing.
    let (st, _, _) = full(s, "GET", "/", Some("evil.example"), &[], "");
    assert_eq!(st, 403);
}

#[test]
fn the_assets_are_embedded_hardened_and_light() {
    let home = dashboard_home("");
    let server = start(&home);
    let s = &server.api;
    let (cookie, _) = log_in(s);
    let (_, _, page) = get(s, "/", &[("Cookie", &cookie)]);
    let mut weight = page.len();
    for (asset, kind) in [
        ("/assets/app.js", "text/javascript"),
        ("/assets/app.css", "text/css"),
        ("/assets/icon.svg", "image/svg+xml"),
    ] {
        assert!(page.contains(asset), "the page links {asset}");
        let (st, head, body) = get(s, asset, &[]);
        assert_eq!(st, 200, "{asset}");
        assert!(
            header(&head, "content-type").is_some_and(|t| t.starts_with(kind)),
            "{head}"
        );
        assert_eq!(header(&head, "x-content-type-options"), Some("nosniff"));
        weight += body.len();
    }
    assert!(weight <= 300 * 1024, "the dashboard weighs {weight} bytes");
    // Nothing fetched from elsewhere, no inline script or handler.
    let (_, _, script) = get(s, "/assets/app.js", &[]);
    for text in [&page, &script] {
        assert!(
            !text.contains("https://") && !text.contains("http://"),
            "an external address"
        );
    }
    assert!(
        !page.contains("<script>") && !page.contains(" onclick="),
        "inline script"
    );
    assert!(
        !script.contains("innerHTML"),
        "data goes through the DOM API"
    );
    assert_eq!(get(s, "/assets/../token", &[]).0, 404);
    assert_eq!(get(s, "/assets/nope.js", &[]).0, 404);
}

/// Reads a streamed response until `needle` appears (or panics after 20 s).
fn read_until(stream: &mut TcpStream, seen: &mut String, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 4096];
    while !seen.contains(needle) {
        assert!(Instant::now() < deadline, "no '{needle}' in: {seen}");
        match stream.read(&mut buf) {
            Ok(0) => panic!("the stream ended before '{needle}': {seen}"),
            Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("{e}"),
        }
    }
}

fn open_events(s: &Api) -> TcpStream {
    let mut stream = TcpStream::connect(&s.address).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let head = format!(
        "GET /v1/events HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\r\n",
        s.address, s.token
    );
    stream.write_all(head.as_bytes()).expect("write");
    let mut seen = String::new();
    read_until(&mut stream, &mut seen, "text/event-stream");
    stream
}

#[test]
fn events_announce_changes_and_crashes_and_dumps_and_logs_are_readable() {
    let home = dashboard_home("");
    let server = start(&home);
    let s = &server.api;
    let mut events = open_events(s);
    let mut seen = String::new();

    // A plugin disabled (here from the CLI, through the server).
    let out = home.greffon(&["plugin", "disable", "spare"]);
    assert!(out.status.success(), "{out:?}");
    read_until(&mut events, &mut seen, "event: plugins");

    // A task created.
    seen.clear();
    let task = r#"{"name": "t1", "plugin": "echo", "args": {"city": "Oslo"}, "trigger": {"kind": "interval", "every_s": 3600}}"#;
    assert_eq!(call(s, "POST", "/v1/tasks", task).0, 201);
    read_until(&mut events, &mut seen, "event: tasks");

    // A crash: the registry did not change, but there is a new dump.
    seen.clear();
    let (st, v) = call(s, "POST", "/v1/plugins/crashy/run", r#"{"crash": true}"#);
    assert_eq!(st, 502, "{v}");
    read_until(&mut events, &mut seen, "event: plugins");
    let (st, dumps) = call(s, "GET", "/v1/plugins/crashy/dumps", "");
    assert_eq!(st, 200);
    let first = &dumps[0];
    assert!(
        first["file"]
            .as_str()
            .is_some_and(|f| f.starts_with("crashy-")),
        "{dumps}"
    );
    assert!(
        first["time"].as_str().is_some_and(|t| t.starts_with("20")),
        "{first}"
    );
    assert!(!first["phase"].as_str().unwrap_or("").is_empty(), "{first}");
    let file = first["file"].as_str().expect("file");
    let (st, _, text) = get(
        s,
        &format!("/v1/plugins/crashy/dumps/{file}"),
        &[("Authorization", &format!("Bearer {}", s.token))],
    );
    assert_eq!(st, 200);
    assert!(
        text.contains("plugin: crashy") && text.contains("exited with code 3"),
        "{text}"
    );
    // Only its own dumps, by a name its list gives.
    assert_eq!(
        call(s, "GET", &format!("/v1/plugins/echo/dumps/{file}"), "").0,
        404
    );
    assert_eq!(
        call(
            s,
            "GET",
            "/v1/plugins/crashy/dumps/..%2F..%2Fapp%2Ftoken",
            ""
        )
        .0,
        404
    );
    assert_eq!(call(s, "GET", "/v1/plugins/nope/dumps", "").0, 404);
    let (st, v) = call(
        s,
        "GET",
        "/v1/plugins/crashy/dumps/crashy-20990101T000000Z.log",
        "",
    );
    assert_eq!(st, 404, "a well-formed name that was never written: {v}");
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("no crash dump")),
        "{v}"
    );

    // The audit records of one plugin, newest first.
    let (st, records) = call(
        s,
        "GET",
        "/v1/logs?category=audit&plugin=crashy&limit=5",
        "",
    );
    assert_eq!(st, 200, "{records}");
    let records = records.as_array().expect("records");
    assert!(!records.is_empty());
    assert!(
        records.iter().all(|r| r["plugin"] == "crashy"),
        "{records:?}"
    );
    assert_eq!(
        records[0]["event"], "call",
        "the crashing call is the newest"
    );
    let (st, v) = call(s, "GET", "/v1/logs?category=secrets", "");
    assert_eq!(st, 422);
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("unknown category 'secrets'")),
        "{v}"
    );
    assert_eq!(call(s, "GET", "/v1/logs", "").0, 422);
}

#[test]
fn greffon_dashboard_prints_and_opens_the_login_link() {
    let home = dashboard_home("");
    let out = home.greffon(&["dashboard"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("greffon serve"), "{err}");

    let server: Server = start(&home);
    let s = &server.api;
    let link = home.ok(&["dashboard"]);
    assert_eq!(
        link.trim(),
        format!("http://{}/?token={}", s.address, s.token)
    );

    // --open hands the link to $BROWSER.
    let opened = home.path().join("opened");
    let browser = home.path().join("browser.sh");
    std::fs::write(
        &browser,
        format!("#!/bin/sh\nprintf %s \"$1\" > {}\n", opened.display()),
    )
    .expect("script");
    make_executable(&browser);
    let out = home.greffon_env(
        &["dashboard", "--open"],
        &[("BROWSER", browser.to_str().expect("utf-8"))],
    );
    assert!(out.status.success(), "{out:?}");
    let got = common::wait_for(Duration::from_secs(10), || {
        std::fs::read_to_string(&opened)
            .ok()
            .filter(|t| !t.is_empty())
    })
    .expect("the browser was started");
    assert_eq!(got, link.trim());
}

fn make_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// Playwright and Chromium, or a failure saying how to get them: CI must
/// not skip.
fn browser_python() -> String {
    let python = common::venv_python("playwright, pytest", "the browser tests");
    assert!(
        Path::new(&chromium()).is_file(),
        "the browser tests need Chromium at {}: run scripts/build-deps (apt-get install chromium) or set GREFFON_CHROMIUM",
        chromium()
    );
    python
}

fn chromium() -> String {
    std::env::var("GREFFON_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

#[test]
fn the_dashboard_works_in_chromium() {
    let python = browser_python();
    let home = dashboard_home(&format!(
        "[llm]\nmodel = \"{}\"\n",
        common::test_model().display()
    ));
    let server = start(&home);
    let suite = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dashboard_browser.py");
    let out = Command::new(python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(&suite)
        .env("GREFFON_BIN", env!("CARGO_BIN_EXE_greffon"))
        .env("GREFFON_HOME", home.path())
        .env("GREFFON_URL", format!("http://{}", server.api.address))
        .env("GREFFON_CHROMIUM", chromium())
        .env_remove("RUST_LOG")
        .output()
        .expect("pytest runs");
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "the browser suite failed:\n{report}");
    assert!(
        !report.contains("skipped"),
        "no browser test may skip:\n{report}"
    );
    let passed = report
        .split_whitespace()
        .zip(report.split_whitespace().skip(1))
        .find(|(_, w)| w.starts_with("passed"))
        .and_then(|(n, _)| n.parse::<u64>().ok());
    assert!(
        passed.is_some_and(|n| n >= 12),
        "fewer browser tests ran than written:\n{report}"
    );
}
