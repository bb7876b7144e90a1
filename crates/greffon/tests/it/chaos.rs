//! Faults under load (issue #18): 16 HTTP clients and 8 MCP sessions keep
//! calls in flight against `greffon serve` while a chaos loop kills
//! workers (-9), reloads a plugin, and a hostile plugin breaks its
//! channel; clients also send oversized bodies and fill a plugin's queue.
//! Every request must be answered with a status its route documents, no
//! worker process or temp folder may be left over, and afterwards every
//! plugin answers. The server's RSS is sampled every 250 ms and its slope
//! printed.
//!
//! `GREFFON_CHAOS_SECS` sets the length (default 10 s, what CI runs;
//! issue #18's figure is 60).

use crate::common;

use common::TestHome;
use common::server::{Api, call, start, try_exchange};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ECHO: &str = "class Plugin:\n    meta = {'name': 'echo', 'description': 'echo', 'inputs': {'schema': {'n': 'integer'}}}\n\n    def run(self, n):\n        return {'n': n}\n\n\nplugin = Plugin()\n";

const SLOW: &str = "import time\n\n\nclass Plugin:\n    meta = {'name': 'slow', 'description': 'slow', 'inputs': {'schema': {}}}\n\n    def run(self):\n        time.sleep(0.05)\n        return 'done'\n\n\nplugin = Plugin()\n";

/// Breaks its own channel to the host on request: a header announcing
/// 2 GiB, a frame that is not JSON, a result past the limit.
const HOSTILE: &str = "import os\n\n\nclass Plugin:\n    meta = {'name': 'hostile', 'description': 'hostile', 'inputs': {'schema': {'how': 'string'}}}\n\n    def run(self, how):\n        if how == 'huge_frame':\n            os.write(3, b'\\x7f\\xff\\xff\\xff' + b'x' * 64)\n        elif how == 'garbage':\n            os.write(3, b'\\x00\\x00\\x00\\x05hello')\n        elif how == 'big_result':\n            return 'x' * (3 << 20)\n        return 'survived'\n\n\nplugin = Plugin()\n";

/// What one request got: a status, or how it went unanswered.
type Outcome = Result<u16, String>;

/// One request with the server's token: its status, or why none came
/// (an unanswered request fails the test).
fn send(
    api: &Api,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (Outcome, String) {
    let bearer = format!("Bearer {}", api.token);
    let mut all = vec![
        ("Authorization", bearer.as_str()),
        ("Content-Type", "application/json"),
    ];
    all.extend_from_slice(headers);
    match try_exchange(api, method, path, &all, body) {
        Ok((status, body)) => (Ok(status), body),
        Err(e) => (Err(e), String::new()),
    }
}

/// Outcomes per operation: status → count (0 for an unanswered request).
#[derive(Default)]
struct Tally(Mutex<BTreeMap<&'static str, BTreeMap<u16, u64>>>);

impl Tally {
    fn add(&self, op: &'static str, outcome: &Outcome, problems: &Mutex<Vec<String>>) {
        let status = match outcome {
            Ok(s) => *s,
            Err(e) => {
                problems
                    .lock()
                    .expect("lock")
                    .push(format!("{op}: unanswered: {e}"));
                0
            }
        };
        *self
            .0
            .lock()
            .expect("lock")
            .entry(op)
            .or_default()
            .entry(status)
            .or_default() += 1;
    }
}

/// The statuses each operation may answer (those its route documents).
fn allowed(op: &str) -> &'static [u16] {
    match op {
        "echo" => &[200, 502, 503, 504],
        "slow" => &[200, 502, 503, 504],
        "huge_frame" | "garbage" | "big_result" => &[200, 413, 502, 503, 504],
        "oversized" => &[413],
        "list" => &[200],
        "mcp" => &[200],
        "reload" => &[200, 502],
        _ => &[],
    }
}

/// Processes under `pid` (the template and the workers).
fn descendants(pid: u32) -> Vec<u32> {
    let mut parents = Vec::new();
    for e in std::fs::read_dir("/proc").expect("proc").flatten() {
        let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat"))
            && let Some(ppid) = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u32>().ok())
        {
            parents.push((p, ppid));
        }
    }
    let mut found = Vec::new();
    let mut frontier = vec![pid];
    while !frontier.is_empty() {
        let next: Vec<u32> = parents
            .iter()
            .filter(|(_, parent)| frontier.contains(parent))
            .map(|(p, _)| *p)
            .collect();
        found.extend(&next);
        frontier = next;
    }
    found
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// An MCP session over `/mcp`: initialized, then tool calls.
struct Mcp {
    session: String,
}

impl Mcp {
    fn open(api: &Api) -> Mcp {
        let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"chaos","version":"1"}}}"#;
        let session = common::server::mcp_session(api, init);
        let mcp = Mcp { session };
        let (status, _) = mcp.post(
            api,
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        );
        assert_eq!(status, Ok(202));
        mcp
    }

    fn post(&self, api: &Api, body: &str) -> (Outcome, String) {
        send(
            api,
            "POST",
            "/mcp",
            &[
                ("Accept", "application/json, text/event-stream"),
                ("Mcp-Session-Id", &self.session),
                ("Mcp-Protocol-Version", "2025-06-18"),
            ],
            body.as_bytes(),
        )
    }
}

#[test]
fn every_request_is_answered_while_workers_die_and_plugins_reload() {
    let secs: u64 = std::env::var("GREFFON_CHAOS_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let home = TestHome::new();
    home.config(
        // Deliberate kills must not trip the crash limit that marks a
        // plugin failed (its own tests cover it): every call should reach
        // a worker.
        "max_crashes = 1000000\nmax_args_bytes = 65536\nmax_result_bytes = 1048576\n[server]\nwatch = false\n[plugins.echo]\nworkers = 2\nqueue = 32\n[plugins.slow]\nqueue = 1\n[plugins.hostile]\ntimeout_s = 5\n",
    );
    home.plugin("echo", ECHO);
    home.plugin("slow", SLOW);
    home.plugin("hostile", HOSTILE);
    for p in ["echo", "slow", "hostile"] {
        home.enable(p);
    }
    let server = start(&home);
    let api = Arc::new(server.api.clone());
    let pid = server.child.id();

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let problems = Arc::new(Mutex::new(Vec::new()));
    let mut threads = Vec::new();

    // 16 HTTP clients.
    for k in 0..16u64 {
        let (api, stop, tally, problems) =
            (api.clone(), stop.clone(), tally.clone(), problems.clone());
        threads.push(std::thread::spawn(move || {
            let mut n = k;
            while !stop.load(Ordering::Relaxed) {
                n += 16;
                let (op, path, body): (&'static str, &str, Vec<u8>) = match n % 16 {
                    0..=7 => (
                        "echo",
                        "/v1/plugins/echo/run",
                        format!("{{\"n\": {n}}}").into_bytes(),
                    ),
                    8..=10 => ("slow", "/v1/plugins/slow/run", b"{}".to_vec()),
                    11 => (
                        "huge_frame",
                        "/v1/plugins/hostile/run",
                        br#"{"how": "huge_frame"}"#.to_vec(),
                    ),
                    12 => (
                        "garbage",
                        "/v1/plugins/hostile/run",
                        br#"{"how": "garbage"}"#.to_vec(),
                    ),
                    13 => (
                        "big_result",
                        "/v1/plugins/hostile/run",
                        br#"{"how": "big_result"}"#.to_vec(),
                    ),
                    14 => ("oversized", "/v1/plugins/echo/run", {
                        let mut b = b"{\"n\": 1, \"pad\": \"".to_vec();
                        b.extend(std::iter::repeat_n(b'x', 256 << 10));
                        b.extend(b"\"}");
                        b
                    }),
                    _ => ("list", "/v1/plugins", Vec::new()),
                };
                let method = if op == "list" { "GET" } else { "POST" };
                let (outcome, answer) = send(&api, method, path, &[], &body);
                if op == "echo" && outcome == Ok(200) {
                    let v: Value = serde_json::from_str(&answer).unwrap_or(Value::Null);
                    if v != json!({"n": n}) {
                        problems
                            .lock()
                            .expect("lock")
                            .push(format!("echo {n} answered {answer}"));
                    }
                }
                tally.add(op, &outcome, &problems);
            }
        }));
    }
    // 8 MCP sessions, one call in flight each.
    for k in 0..8u64 {
        let (api, stop, tally, problems) =
            (api.clone(), stop.clone(), tally.clone(), problems.clone());
        threads.push(std::thread::spawn(move || {
            let mcp = Mcp::open(&api);
            let mut id = 10 + k;
            while !stop.load(Ordering::Relaxed) {
                id += 8;
                let body = format!(
                    r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"echo","arguments":{{"n":{id}}}}}}}"#
                );
                let (outcome, answer) = mcp.post(&api, &body);
                // A tool error (the worker died under the call) is an
                // answer too; a JSON-RPC error or no answer is not.
                if outcome == Ok(200) && !answer.contains(&format!("\"id\":{id}")) {
                    problems.lock().expect("lock").push(format!("mcp {id} answered {answer}"));
                }
                tally.add("mcp", &outcome, &problems);
            }
        }));
    }
    // The chaos loop: kill a worker, reload a plugin, in turn.
    let chaos = {
        let (api, stop, tally, problems) =
            (api.clone(), stop.clone(), tally.clone(), problems.clone());
        std::thread::spawn(move || {
            let mut kills = 0u64;
            let mut turn = 0u64;
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                turn += 1;
                if turn.is_multiple_of(4) {
                    let (outcome, _) = send(&api, "POST", "/v1/plugins/echo/reload", &[], b"");
                    tally.add("reload", &outcome, &problems);
                    continue;
                }
                let workers = descendants(pid);
                if let Some(victim) = workers.get(turn as usize % workers.len().max(1)) {
                    // SAFETY: a signal to a process of this test's server.
                    unsafe { libc::kill(*victim as i32, libc::SIGKILL) };
                    kills += 1;
                }
            }
            kills
        })
    };

    let started = Instant::now();
    let mut rss = Vec::new();
    while started.elapsed() < Duration::from_secs(secs) {
        rss.push((started.elapsed().as_secs_f64(), rss_kib(pid)));
        std::thread::sleep(Duration::from_millis(250));
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("client");
    }
    let kills = chaos.join().expect("chaos");

    // The tally, and the slope of the server's RSS (least squares).
    let counts = tally.0.lock().expect("lock");
    let total: u64 = counts.values().flat_map(|m| m.values()).sum();
    eprintln!("chaos: {secs} s, {total} requests, {kills} kills; outcomes by operation:");
    for (op, statuses) in counts.iter() {
        eprintln!("  {op:<10} {statuses:?}");
    }
    let n = rss.len() as f64;
    let (mx, my) = (
        rss.iter().map(|(x, _)| x).sum::<f64>() / n,
        rss.iter().map(|(_, y)| *y as f64).sum::<f64>() / n,
    );
    let slope = rss
        .iter()
        .map(|(x, y)| (x - mx) * (*y as f64 - my))
        .sum::<f64>()
        / rss.iter().map(|(x, _)| (x - mx).powi(2)).sum::<f64>();
    eprintln!(
        "  server RSS {} → {} KiB, slope {slope:.1} KiB/s",
        rss.first().map_or(0, |r| r.1),
        rss.last().map_or(0, |r| r.1)
    );

    let problems = problems.lock().expect("lock");
    assert!(
        problems.is_empty(),
        "{} problems, first: {:?}",
        problems.len(),
        &problems[..problems.len().min(5)]
    );
    for (op, statuses) in counts.iter() {
        for status in statuses.keys() {
            assert!(
                allowed(op).contains(status),
                "{op} answered {status}: {statuses:?}"
            );
        }
    }
    assert!(counts["echo"].get(&200).copied().unwrap_or(0) > 0);
    assert!(
        counts["slow"].contains_key(&503),
        "the slow plugin's queue was never full: {:?}",
        counts["slow"]
    );
    assert!(kills > 0);

    // Afterwards: every plugin answers...
    let answered = common::wait_for(Duration::from_secs(20), || {
        let ok = [
            ("echo", r#"{"n": 7}"#),
            ("slow", "{}"),
            ("hostile", r#"{"how": "none"}"#),
        ]
        .iter()
        .all(|(p, args)| call(&api, "POST", &format!("/v1/plugins/{p}/run"), args).0 == 200);
        ok.then_some(())
    });
    assert!(answered.is_some(), "a plugin no longer answers");
    // ...and nothing is left over: at most the pools' workers (2 + 1 + 1;
    // a killed one is replaced when a call needs it) and the template,
    // and exactly one temp folder per live worker.
    let count = || {
        let procs = descendants(pid).len();
        let tmp = std::fs::read_dir(home.path().join("app/tmp"))
            .map(|d| d.count())
            .unwrap_or(0);
        (procs, tmp)
    };
    let settled = common::wait_for(Duration::from_secs(20), || {
        let (procs, tmp) = count();
        (procs <= 5 && tmp + 1 == procs).then_some(())
    });
    assert!(
        settled.is_some(),
        "leaked: (processes, temp folders) = {:?}",
        count()
    );
}
