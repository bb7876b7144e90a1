//! `greffon.http` through the real binary against a real local server: the
//! allowlist bypass attempts (userinfo, fragments, IP spellings, names
//! that resolve to an allowed address, ports), redirects, header
//! hygiene, size and time caps, and the audit trail.

use crate::common;

use common::TestHome;
use common::upstream::{Response, Upstream};
use serde_json::{Value, json};
use std::time::Duration;

/// A plugin that fetches what it is told and reports the outcome.
fn fetch_plugin(name: &str, allowlist: &[String]) -> String {
    let allow = match allowlist {
        [] => String::new(),
        list => format!(", 'allowlist_domains': {list:?}"),
    };
    format!(
        r#"from greffon import http

class Plugin:
    meta = {{'name': '{name}', 'permissions': ['net']{allow},
            'inputs': {{'schema': {{'type': 'object', 'properties': {{'url': {{'type': 'string'}}}}, 'required': ['url']}}}}}}

    def run(self, url, method='GET', headers=None, timeout=None, json=None):
        try:
            r = http.request(method, url, headers=headers, timeout=timeout, json=json)
            return {{'status': r.status_code, 'url': r.url, 'body': r.text, 'type': r.headers.get('content-type')}}
        except PermissionError as e:
            return {{'refused': str(e)}}
        except http.Timeout as e:
            return {{'timeout': str(e)}}
        except http.TooLarge as e:
            return {{'too_large': str(e)}}
        except http.RequestError as e:
            return {{'failed': str(e)}}

plugin = Plugin()
"#
    )
}

fn upstream() -> Upstream {
    Upstream::start(|req| {
        let path = req.target.split('?').next().unwrap_or("");
        match path {
            "/echo" => Response::json(&json!({
                "method": req.method,
                "target": req.target,
                "headers": req.headers,
                "body": String::from_utf8_lossy(&req.body),
            })),
            "/to" => {
                let to = req.target.split_once("?to=").map_or("", |(_, t)| t);
                Response::redirect(to)
            }
            "/loop" => Response::redirect("/loop"),
            "/big" => Response::new(200, "application/octet-stream", vec![b'x'; 2 << 20]),
            "/slow" => Response {
                delay: Duration::from_secs(3),
                ..Response::new(200, "text/plain", "late")
            },
            _ => Response::new(404, "text/plain", "no such page"),
        }
    })
}

fn fetch(home: &TestHome, plugin: &str, args: Value) -> Value {
    let (code, v) = home.run(plugin, &args.to_string());
    assert_eq!(code, 0, "{v}");
    v
}

fn refused(home: &TestHome, plugin: &str, url: &str, why: &str) {
    let v = fetch(home, plugin, json!({"url": url}));
    let msg = v["refused"]
        .as_str()
        .unwrap_or_else(|| panic!("{url} was not refused: {v}"));
    assert!(msg.contains(why), "{url}: expected {why:?} in {msg:?}");
}

#[test]
fn the_allowlist_cannot_be_bypassed() {
    let up = upstream();
    let port = up.addr.port();
    let home = TestHome::new();
    home.config("http_max_response_bytes = 1048576\n");
    home.plugin(
        "byip",
        &fetch_plugin("byip", &[format!("127.0.0.1:{port}")]),
    );
    home.plugin(
        "byname",
        &fetch_plugin("byname", &[format!("localhost:{port}")]),
    );
    home.plugin("nolist", &fetch_plugin("nolist", &[]));
    for p in ["byip", "byname", "nolist"] {
        home.enable(p);
    }

    let ok = fetch(&home, "byip", json!({"url": up.url("/echo?q=1")}));
    assert_eq!(ok["status"], json!(200), "{ok}");
    assert_eq!(ok["type"], json!("application/json"));
    let seen: Value = serde_json::from_str(ok["body"].as_str().expect("body")).expect("json");
    assert_eq!(seen["target"], json!("/echo?q=1"));
    // An IP literal in another notation is the same, listed, address.
    let v = fetch(
        &home,
        "byip",
        json!({"url": format!("http://2130706433:{port}/echo")}),
    );
    assert_eq!(v["status"], json!(200), "{v}");
    // An exact name may resolve to loopback; case and a trailing dot do
    // not make it another host.
    for url in [
        format!("http://localhost:{port}/echo"),
        format!("http://LOCALHOST.:{port}/echo"),
    ] {
        let v = fetch(&home, "byname", json!({"url": url}));
        assert_eq!(v["status"], json!(200), "{url}: {v}");
    }

    let before = up.hits();
    for (plugin, url, why) in [
        (
            "byip",
            format!("http://127.0.0.1:{port}@evil.com/"),
            "user name or password".to_string(),
        ),
        (
            "byip",
            format!("http://evil.com#@127.0.0.1:{port}/"),
            "'evil.com'".into(),
        ),
        (
            "byip",
            format!("http://127.0.0.1.nip.io:{port}/"),
            "'127.0.0.1.nip.io' is not in".into(),
        ),
        (
            "byip",
            format!("http://localhost:{port}/"),
            "'localhost' is not in".into(),
        ),
        (
            "byip",
            format!("http://[::ffff:127.0.0.1]:{port}/"),
            "not in the plugin's allowlist".into(),
        ),
        (
            "byip",
            format!("http://0x7f.0.0.2:{port}/"),
            "'127.0.0.2' is not in".into(),
        ),
        ("byip", "http://127.0.0.1:22/".into(), "port 22".into()),
        ("byip", "http://127.0.0.1/".into(), "port 80".into()),
        ("byip", "file:///etc/passwd".into(), "scheme 'file'".into()),
        (
            "byip",
            format!("gopher://127.0.0.1:{port}/"),
            "scheme 'gopher'".into(),
        ),
        (
            "byname",
            format!("http://127.0.0.1:{port}/"),
            "'127.0.0.1' is not in".into(),
        ),
        (
            "byname",
            format!("http://localhost.evil.com:{port}/"),
            "not in the plugin's allowlist".into(),
        ),
        (
            "byname",
            format!("http://evillocalhost:{port}/"),
            "not in the plugin's allowlist".into(),
        ),
        (
            "byname",
            format!("http://xn--lcalhost-9za:{port}/"),
            "not in the plugin's allowlist".into(),
        ),
        ("nolist", up.url("/echo"), "the allowlist is empty".into()),
    ] {
        refused(&home, plugin, &url, &why);
    }
    let v = fetch(
        &home,
        "byip",
        json!({"url": up.url("/echo"), "method": "CONNECT"}),
    );
    assert!(
        v["refused"]
            .as_str()
            .unwrap_or("")
            .contains("method CONNECT"),
        "{v}"
    );
    assert_eq!(up.hits(), before, "a refused request reached the server");

    // Redirects are checked hop by hop.
    for (to, why) in [
        (
            "http://169.254.169.254/latest/meta-data/".to_string(),
            "redirect to http://169.254.169.254/latest/meta-data/ refused",
        ),
        (
            format!("http://localhost:{port}/echo"),
            "'localhost' is not in",
        ),
    ] {
        refused(&home, "byip", &up.url(&format!("/to?to={to}")), why);
    }
    refused(&home, "byip", &up.url("/loop"), "more than 5 redirects");
    // A redirect to another scheme is not followed: the plugin gets the 302.
    let v = fetch(
        &home,
        "byip",
        json!({"url": up.url("/to?to=file:///etc/passwd")}),
    );
    assert_eq!(v["status"], json!(302), "{v}");
    let v = fetch(&home, "byip", json!({"url": up.url("/to?to=/echo")}));
    assert_eq!(v["status"], json!(200), "{v}");
    assert_eq!(
        v["url"],
        json!(up.url("/echo")),
        "the final URL is reported"
    );

    // The plugin cannot choose the Host or talk to a proxy.
    let v = fetch(
        &home,
        "byip",
        json!({"url": up.url("/echo"), "method": "POST", "json": {"a": 1},
               "headers": {"Host": "evil.com", "Proxy-Authorization": "Basic x", "X-Mine": "yes"}}),
    );
    let seen: Value = serde_json::from_str(v["body"].as_str().expect("body")).expect("json");
    assert_eq!(
        seen["headers"]["host"],
        json!(format!("127.0.0.1:{port}")),
        "{seen}"
    );
    assert!(
        seen["headers"].get("proxy-authorization").is_none(),
        "{seen}"
    );
    assert_eq!(seen["headers"]["x-mine"], json!("yes"));
    assert_eq!(seen["method"], json!("POST"));
    assert_eq!(seen["body"], json!("{\"a\":1}"));

    // Size and time caps.
    let v = fetch(&home, "byip", json!({"url": up.url("/big")}));
    assert!(
        v["too_large"]
            .as_str()
            .unwrap_or("")
            .contains("exceeds 1048576 bytes"),
        "{v}"
    );
    let v = fetch(
        &home,
        "byip",
        json!({"url": up.url("/slow"), "timeout": 0.3}),
    );
    assert!(
        v["timeout"]
            .as_str()
            .unwrap_or("")
            .contains("timed out after 0.3 s"),
        "{v}"
    );

    // Every request and every refusal is in the audit log.
    let audit = home.log("audit");
    let records: Vec<Value> = audit
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["event"] == "http_request")
        .collect();
    assert!(
        records.iter().any(|r| r["decision"] == "allowed"
            && r["plugin"] == "byip"
            && r["address"] == json!(format!("127.0.0.1:{port}"))
            && r["status"] == json!(200)
            && r["bytes"].as_u64().unwrap_or(0) > 0),
        "{audit}"
    );
    assert!(
        records
            .iter()
            .any(|r| r["decision"] == "refused" && r["host"] == "evil.com"),
        "{audit}"
    );
    assert!(
        records.iter().any(|r| r["decision"] == "too_large"),
        "{audit}"
    );
    assert!(
        records.iter().any(|r| r["decision"] == "timeout"),
        "{audit}"
    );
}

#[test]
fn the_global_allowlist_narrows_what_plugins_declare() {
    let up = upstream();
    let port = up.addr.port();
    let home = TestHome::new();
    home.config("allowlist_domains = [\"*.example.com\"]\n");
    home.plugin(
        "p",
        &fetch_plugin(
            "p",
            &[format!("127.0.0.1:{port}"), "api.example.com".into()],
        ),
    );
    let out = home.ok(&["plugin", "enable", "p"]);
    assert!(out.contains("network:     api.example.com"), "{out}");
    assert_eq!(
        home.info("p")["access"]["network"],
        json!(["api.example.com"])
    );
    refused(&home, "p", &up.url("/echo"), "'127.0.0.1' is not in");
    assert_eq!(up.hits(), 0);
}

#[test]
fn requests_from_several_threads_of_one_plugin_are_each_answered() {
    let up = upstream();
    let port = up.addr.port();
    let home = TestHome::new();
    home.plugin(
        "par",
        &format!(
            r#"from concurrent.futures import ThreadPoolExecutor
from greffon import http

class Plugin:
    meta = {{'name': 'par', 'permissions': ['net'], 'allowlist_domains': ['127.0.0.1:{port}']}}

    def run(self):
        urls = ['http://127.0.0.1:{port}/echo?i=%d' % i for i in range(24)]
        with ThreadPoolExecutor(8) as pool:
            bodies = list(pool.map(lambda u: http.get(u).json()['target'], urls))
        # The main thread's own request, between the others.
        bodies.append(http.get('http://127.0.0.1:{port}/echo?i=main').json()['target'])
        return bodies

plugin = Plugin()
"#
        ),
    );
    home.enable("par");
    let (code, v) = home.run("par", "{}");
    assert_eq!(code, 0, "{v}");
    let mut expected: Vec<String> = (0..24).map(|i| format!("/echo?i={i}")).collect();
    expected.push("/echo?i=main".into());
    assert_eq!(v, json!(expected), "each thread got its own answer");
}

#[test]
fn malformed_broker_requests_are_refused_with_the_reason() {
    let home = TestHome::new();
    home.plugin(
        "raw",
        r#"from greffon import _runtime

class Plugin:
    meta = {'name': 'raw', 'permissions': ['net'], 'allowlist_domains': ['127.0.0.1:9']}

    def run(self):
        out = []
        for params in [
            {'url': 1},
            {'method': 'GE T', 'url': 'http://127.0.0.1:9/'},
            {'method': 'POST', 'url': 'http://127.0.0.1:9/', 'body': '%%%'},
        ]:
            try:
                _runtime.call('http.request', params)
                out.append('accepted')
            except _runtime.HostError as e:
                out.append(str(e))
        return out

plugin = Plugin()
"#,
    );
    home.enable("raw");
    let (code, v) = home.run("raw", "{}");
    assert_eq!(code, 0, "{v}");
    let got: Vec<&str> = v
        .as_array()
        .expect("list")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(got[0].contains("malformed request"), "{got:?}");
    assert!(got[1].contains("invalid method 'GE T'"), "{got:?}");
    assert!(got[2].contains("body is not base64"), "{got:?}");
}
