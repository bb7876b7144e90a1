//! Several hosts, one task store: two real `greffon serve` processes on a
//! throwaway PostgreSQL. Each fire runs once across both; a host claims
//! only what its plugins can run; a host killed with -9 loses its claim to
//! the other after the lease, which retries it; the database restarted
//! mid-run pauses firing without losing or doubling a fire; a wrong URL
//! stops `serve` naming host and port; the password never reaches a log.

use crate::common;

#[path = "../../../greffon-scheduler/tests/support/pg.rs"]
mod pg;

use common::server::{Api, call, millis, runs, start, stop};
use common::{TestHome, wait_for};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

/// A plugin answering which host ran it (each home has its own copy).
fn tick(host: &str, sleep_s: f64) -> String {
    format!(
        "import time\nclass P:\n    meta = {{'name': 'tick', 'timeout': 120}}\n    def run(self):\n        time.sleep({sleep_s})\n        return {{'host': '{host}'}}\nplugin = P()\n"
    )
}

fn only_a() -> String {
    tick("a", 0.0).replace("'name': 'tick'", "'name': 'only_a'")
}

/// A home whose tasks live in `pg`, with `tick` (answering `host`)
/// enabled, and `extra` lines under `[scheduler]`.
fn host_home(pg: &pg::TempPostgres, host: &str, sleep_s: f64, extra: &str) -> TestHome {
    let home = TestHome::new();
    home.plugin("tick", &tick(host, sleep_s));
    home.config(&format!(
        "[scheduler]\ndatabase_url = \"{}\"\n{extra}\n[server]\nshutdown_grace_s = 1\n",
        pg.url()
    ));
    home.enable("tick");
    home
}

fn create(api: &Api, task: Value) -> Value {
    let (st, v) = call(api, "POST", "/v1/tasks", &task.to_string());
    assert_eq!(st, 201, "{v}");
    v
}

fn in_ms(ms: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::milliseconds(ms)).to_rfc3339()
}

/// No fire time appears twice in a task's history.
fn assert_each_fire_once(history: &[Value]) {
    let mut fires: Vec<i64> = history
        .iter()
        .map(|r| millis(&r["scheduled_for"]))
        .collect();
    let total = fires.len();
    fires.sort_unstable();
    fires.dedup();
    assert_eq!(fires.len(), total, "a fire ran twice: {history:?}");
}

/// Every log file of a home, concatenated.
fn all_logs(home: &TestHome) -> String {
    ["server", "plugin", "llm", "audit"]
        .iter()
        .map(|c| home.log(c))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn two_hosts_run_each_fire_once_and_only_what_they_can() {
    let Some(pg) = pg::TempPostgres::start() else {
        return;
    };
    let a_home = host_home(&pg, "a", 0.0, "");
    a_home.plugin("only_a", &only_a());
    a_home.enable("only_a");
    let b_home = host_home(&pg, "b", 0.0, "");
    let a = start(&a_home);
    let b = start(&b_home);

    // A task created on one host is seen by the other.
    let every = create(
        &b.api,
        json!({"name": "every", "plugin": "tick", "trigger": {"kind": "interval", "every_s": 1}}),
    );
    let (st, seen) = call(&a.api, "GET", "/v1/tasks/every", "");
    assert_eq!((st, &seen["id"]), (200, &every["id"]));

    // 200 one-shots due in the same second, created on both hosts.
    let at = in_ms(4000);
    for i in 0..200 {
        let api = if i % 2 == 0 { &a.api } else { &b.api };
        create(
            api,
            json!({"name": format!("once-{i}"), "plugin": "tick",
                   "trigger": {"kind": "date", "at": at}}),
        );
    }
    let mut by_host: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..200 {
        let name = format!("once-{i}");
        let history = wait_for(Duration::from_secs(60), || {
            let r = runs(&b.api, &name);
            (!r.is_empty() && r.iter().all(|r| r["status"] != "running")).then_some(r)
        })
        .unwrap_or_else(|| panic!("{name} fired and finished"));
        assert_eq!(
            history.len(),
            1,
            "{name} ran {} times: {history:?}",
            history.len()
        );
        assert_eq!(history[0]["status"], "ok", "{history:?}");
        let host = history[0]["result"]["host"].as_str().expect("host");
        *by_host.entry(host.to_string()).or_default() += 1;
    }
    assert_eq!(
        by_host.values().sum::<usize>(),
        200,
        "each one-shot ran exactly once"
    );
    eprintln!("one-shots run by host: {by_host:?}");

    // Tasks of a plugin only host a has, due while a is down: b keeps
    // firing its own tasks but leaves these due; a runs them when back.
    let due = in_ms(2000);
    for i in 0..5 {
        create(
            &a.api,
            json!({"name": format!("a-{i}"), "plugin": "only_a",
                   "trigger": {"kind": "date", "at": due}}),
        );
    }
    stop(a);
    let b_ran = runs(&b.api, "every").len();
    // Past the fire time, with b's loop awake every second (this wait is
    // the scenario).
    wait_for(Duration::from_secs(20), || {
        (runs(&b.api, "every").len() >= b_ran + 3).then_some(())
    })
    .expect("b keeps firing its tasks alone");
    assert!(chrono::Utc::now() > chrono::DateTime::parse_from_rfc3339(&due).expect("time"));
    for i in 0..5 {
        let r = runs(&b.api, &format!("a-{i}"));
        assert!(r.is_empty(), "b claimed a task of a plugin it lacks: {r:?}");
    }
    let a = start(&a_home);
    for i in 0..5 {
        let history = wait_for(Duration::from_secs(30), || {
            let r = runs(&a.api, &format!("a-{i}"));
            (r.first()?["status"] == "ok").then_some(r)
        })
        .expect("a ran its task once back");
        assert_eq!(history.len(), 1);
        assert_eq!(history[0]["result"]["host"], "a");
    }

    // The every-second task: each fire once, whichever host took it.
    let history = runs(&b.api, "every");
    assert_each_fire_once(&history);
    assert!(history.iter().all(|r| r["attempt"] == 1), "{history:?}");
    drop((a, b));
}

#[test]
fn a_task_created_on_one_host_fires_on_time_from_another() {
    let Some(pg) = pg::TempPostgres::start() else {
        return;
    };
    let a_home = host_home(&pg, "a", 0.0, "");
    let b_home = host_home(&pg, "b", 0.0, "");
    let a = start(&a_home);
    let b = start(&b_home);
    // Let a's loop find nothing and go to sleep for its longest nap (60 s).
    let (st, _) = call(&a.api, "GET", "/v1/tasks", "");
    assert_eq!(st, 200);
    std::thread::sleep(Duration::from_millis(500));
    // Created on b, which then cannot run it: only a NOTIFY wakes a in time.
    let created = create(
        &b.api,
        json!({"name": "soon", "plugin": "tick", "trigger": {"kind": "date", "at": in_ms(2000)}}),
    );
    let (st, _) = call(&b.api, "POST", "/v1/plugins/tick/disable", "");
    assert_eq!(st, 200);
    let run = wait_for(Duration::from_secs(20), || {
        let r = runs(&a.api, "soon");
        (r.first()?["status"] == "ok").then(|| r[0].clone())
    })
    .expect("a ran it");
    assert_eq!(run["result"]["host"], "a");
    assert_eq!(run["scheduled_for"], created["next_run_at"]);
    let late = millis(&run["started_at"]) - millis(&run["scheduled_for"]);
    assert!(
        (0..500).contains(&late),
        "fired {late} ms late: a was not woken"
    );
    drop((a, b));
}

#[test]
fn a_killed_host_loses_its_claim_after_the_lease_and_the_other_retries_it() {
    let Some(pg) = pg::TempPostgres::start() else {
        return;
    };
    let lease = "lease_s = 2";
    // Host a's `tick` takes a minute; b's answers at once.
    let a_home = host_home(&pg, "a", 60.0, lease);
    let b_home = host_home(&pg, "b", 0.0, lease);
    let mut a = start(&a_home);
    let b = start(&b_home);
    // Only a can run `tick` when it fires.
    let (st, _) = call(&b.api, "POST", "/v1/plugins/tick/disable", "");
    assert_eq!(st, 200);
    create(
        &a.api,
        json!({"name": "job", "plugin": "tick", "retries": 1, "retry_backoff_s": 0,
               "trigger": {"kind": "date", "at": in_ms(500)}}),
    );
    let claimed = wait_for(Duration::from_secs(20), || {
        let r = runs(&b.api, "job");
        (r.first()?["status"] == "running").then(|| r[0].clone())
    })
    .expect("host a claimed the fire");
    assert_eq!(claimed["attempt"], 1);
    let (st, _) = call(&b.api, "POST", "/v1/plugins/tick/enable", "");
    assert_eq!(st, 200);
    // kill -9: no stop, no write-back, no lease renewal.
    a.child.kill().expect("kill -9");
    a.child.wait().expect("reaped");
    let killed_at = chrono::Utc::now().timestamp_millis();

    let history = wait_for(Duration::from_secs(30), || {
        let r = runs(&b.api, "job");
        (r.len() == 2 && r[1]["status"] == "ok").then_some(r)
    })
    .expect("host b marked the run lost and retried it");
    assert_eq!(history[0]["status"], "lost", "{history:?}");
    assert!(
        history[0]["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("lost:")),
        "{history:?}"
    );
    assert_eq!(
        (&history[1]["attempt"], &history[1]["result"]["host"]),
        (&json!(2), &json!("b"))
    );
    assert_eq!(history[1]["scheduled_for"], history[0]["scheduled_for"]);
    // Not before the lease ran out.
    let lost_at = millis(&history[0]["finished_at"]);
    let lease_end = millis(&claimed["started_at"]) + 2000;
    assert!(
        lost_at >= lease_end,
        "lost at {lost_at}, lease until {lease_end}"
    );
    assert!(
        lost_at - killed_at < 10_000,
        "lost {} ms after the kill",
        lost_at - killed_at
    );
    drop(b);
}

#[test]
fn a_database_restart_mid_run_pauses_firing_without_losing_or_doubling_a_fire() {
    let Some(pg) = pg::TempPostgres::start() else {
        return;
    };
    let home = host_home(&pg, "a", 1.5, "");
    let server = start(&home);
    create(
        &server.api,
        json!({"name": "steady", "plugin": "tick", "trigger": {"kind": "interval", "every_s": 1}}),
    );
    let in_flight = wait_for(Duration::from_secs(20), || {
        runs(&server.api, "steady")
            .iter()
            .find(|r| r["status"] == "running")
            .map(|r| r["id"].clone())
    })
    .expect("a run is running");
    // Down while that run sleeps, then back (the outage is the scenario).
    pg.stop_server();
    let (st, _) = call(&server.api, "GET", "/v1/health", "");
    assert_eq!(st, 200, "the server stays up without its database");
    let (st, body) = call(&server.api, "GET", "/v1/tasks", "");
    assert_eq!(st, 503, "{body}");
    std::thread::sleep(Duration::from_secs(3));
    pg.start_server();
    let restarted = chrono::Utc::now().timestamp_millis();

    let history = wait_for(Duration::from_secs(60), || {
        let r = runs(&server.api, "steady");
        let held = r.iter().find(|r| r["id"] == in_flight)?;
        (held["status"] != "running"
            && r.iter()
                .any(|r| r["status"] == "ok" && millis(&r["scheduled_for"]) > restarted))
        .then_some(r)
    })
    .expect("firing resumed after the restart");
    // The run that ended during the outage kept its outcome until the
    // database was back, rather than losing it.
    let held = history
        .iter()
        .find(|r| r["id"] == in_flight)
        .expect("the run");
    assert_eq!(held["status"], "ok", "{held}");
    assert!(millis(&held["finished_at"]) < restarted, "{held}");
    assert!(
        history
            .iter()
            .all(|r| r["status"] == "ok" || r["status"] == "running" || r["status"] == "missed"),
        "no run lost or failed: {history:?}"
    );
    assert_each_fire_once(&history);
    let logs = all_logs(&home);
    assert!(logs.contains("scheduler: paused"), "{logs}");
    assert!(logs.contains("firing resumes"), "{logs}");
    assert!(
        !logs.contains(pg::PASSWORD),
        "the database password was logged"
    );
    drop(server);
}

#[test]
fn an_unreachable_database_stops_serve_naming_host_and_port() {
    let Some(pg) = pg::TempPostgres::start() else {
        return;
    };
    let home = TestHome::new();
    // A port nothing listens on, and a real server with a wrong password.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let wrong_password = pg.url().replace(pg::PASSWORD, "not-the-password-93");
    for (url, says) in [
        (
            format!(
                "postgres://greffon:{}@127.0.0.1:{closed}/tasks",
                pg::PASSWORD
            ),
            format!("127.0.0.1:{closed}"),
        ),
        (wrong_password.clone(), format!("127.0.0.1:{}", pg.port)),
    ] {
        let out = home.greffon_env(
            &["serve", "--bind", "127.0.0.1:0"],
            &[("GREFFON_DATABASE_URL", &url)],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(stderr.contains(&says), "names {says}: {stderr}");
        assert!(!stderr.contains(pg::PASSWORD), "{stderr}");
        assert!(!stderr.contains("not-the-password-93"), "{stderr}");
        assert!(
            !home.path().join("app/server.json").exists(),
            "nothing was started"
        );
        assert!(!all_logs(&home).contains(pg::PASSWORD));
    }
    // Not a PostgreSQL URL at all.
    let out = home.greffon_env(
        &["serve", "--bind", "127.0.0.1:0"],
        &[(
            "GREFFON_DATABASE_URL",
            "mysql://greffon:hunter2-pw@db.lan/tasks",
        )],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("is not a PostgreSQL URL"), "{stderr}");
    assert!(!stderr.contains("hunter2-pw"), "{stderr}");
    // A plugin run answers it as JSON, as any run error.
    home.plugin("tick", &tick("a", 0.0));
    home.enable("tick");
    let out = home.greffon_env(
        &["plugin", "run", "tick", "--json", "{}"],
        &[(
            "GREFFON_DATABASE_URL",
            "mysql://greffon:hunter2-pw@db.lan/tasks",
        )],
    );
    assert!(!out.status.success());
    let answer: Value = serde_json::from_slice(&out.stdout).expect("a JSON answer");
    let error = answer["error"].as_str().expect("an error");
    assert!(
        error.contains("is not a PostgreSQL URL") && !error.contains("hunter2-pw"),
        "{error}"
    );
    // A plugin run that does not touch tasks does not need the database.
    let unreachable = format!("postgres://greffon@127.0.0.1:{closed}/tasks");
    let out = home.greffon_env(
        &["plugin", "run", "tick", "--json", "{}"],
        &[("GREFFON_DATABASE_URL", &unreachable)],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(answer, json!({"host": "a"}));
}

/// Runs SQL on the throwaway server with the distribution's `psql`.
fn psql(pg: &pg::TempPostgres, sql: &str) {
    let out = std::process::Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &pg.port.to_string(),
            "-U",
            "greffon",
            "-d",
            "postgres",
        ])
        .args(["-v", "ON_ERROR_STOP=1", "-c", sql])
        .env("PGPASSWORD", pg::PASSWORD)
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn doctor_checks_the_task_database_and_the_hosts_clocks() {
    let Some(pg) = pg::TempPostgres::start() else {
        return;
    };
    let home = host_home(&pg, "a", 0.0, "lease_s = 3");
    let doctor = |home: &TestHome| {
        let out = home.greffon(&["doctor", "--json"]);
        let report: Value = serde_json::from_slice(&out.stdout).expect("json");
        (out.status.success(), report)
    };
    // Not migrated yet: reachable, and told so.
    let (_, report) = doctor(&home);
    assert_eq!(report["tasks"]["reachable"], true, "{report}");
    assert_eq!(report["tasks"]["migrations"]["applied"], 0, "{report}");
    // A running host migrates and beats; its clock is this machine's.
    let server = start(&home);
    let report = wait_for(Duration::from_secs(20), || {
        let (_, r) = doctor(&home);
        (r["tasks"]["hosts"].as_array()?.len() >= 2).then_some(r)
    })
    .expect("the server's heartbeat is seen");
    let tasks = &report["tasks"];
    assert_eq!(tasks["store"], "postgres");
    assert_eq!(tasks["migrations"]["applied"], tasks["migrations"]["known"]);
    assert!(
        tasks["clock_skew_ms"].as_i64().expect("skew").abs() < 1000,
        "{report}"
    );
    assert!(!report.to_string().contains(pg::PASSWORD));
    // A host whose clock is a minute ahead: a problem, non-zero exit.
    psql(
        &pg,
        "INSERT INTO scheduler_hosts VALUES ('faraway:1:1', \
         (extract(epoch FROM clock_timestamp()) * 1000)::bigint + 60000, \
         (extract(epoch FROM clock_timestamp()) * 1000)::bigint)",
    );
    let (ok, report) = doctor(&home);
    assert!(!ok, "{report}");
    let problems = report["problems"].to_string();
    assert!(
        problems.contains("clocks are") && problems.contains("lease_s"),
        "{problems}"
    );
    drop(server);
    // Unreachable: a problem naming where.
    pg.stop_server();
    let (ok, report) = doctor(&home);
    assert!(!ok);
    let problems = report["problems"].to_string();
    assert!(
        problems.contains(&format!("127.0.0.1:{}", pg.port)),
        "{problems}"
    );
    assert!(!problems.contains(pg::PASSWORD));
}

#[test]
fn a_manual_run_from_a_host_without_a_server_keeps_its_lease() {
    let Some(pg) = pg::TempPostgres::start() else {
        return;
    };
    // Host a serves (and expires leases); host b only runs a command.
    let a_home = host_home(&pg, "a", 0.0, "lease_s = 1");
    let b_home = host_home(&pg, "b", 3.0, "lease_s = 1");
    let a = start(&a_home);
    create(
        &a.api,
        json!({"name": "manual", "plugin": "tick",
               "trigger": {"kind": "date", "at": in_ms(3_600_000)}}),
    );
    // Three leases long, from a process with no scheduler loop.
    let out = b_home.greffon(&["task", "run", "manual", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        (&run["status"], &run["result"]["host"]),
        (&json!("ok"), &json!("b")),
        "{run}"
    );
    drop(a);
}
