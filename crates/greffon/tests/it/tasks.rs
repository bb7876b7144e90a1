//! Scheduled tasks through the real binary: the `tasks` plugin (CLI and
//! API), the `/v1/tasks` routes and their statuses, `greffon task`, and
//! what survives a restart and a `kill -9` during a run.

use crate::common;

use common::server::{call, millis, runs, start, stop};
use common::{TestHome, wait_for};
use serde_json::{Value, json};
use std::time::Duration;

/// Returns its arguments; `sleep` seconds first.
const WORK: &str = "import time\nclass P:\n    meta = {'name': 'work', 'timeout': 30, 'inputs': {'schema': {'n': {'type': 'integer', 'default': 0}, 'sleep': {'type': 'number', 'default': 0}}}}\n    def run(self, n=0, sleep=0):\n        time.sleep(sleep)\n        return {'n': n}\nplugin = P()\n";

fn home() -> TestHome {
    let home = TestHome::new();
    home.bundled("tasks").plugin("work", WORK);
    home.enable("tasks");
    home.enable("work");
    home
}

fn tasks_plugin(home: &TestHome, args: Value) -> Value {
    let (code, v) = home.run("tasks", &args.to_string());
    assert_eq!(code, 0, "{v}");
    v
}

#[test]
fn the_tasks_plugin_creates_changes_runs_and_deletes_through_the_cli() {
    let home = home();
    let created = tasks_plugin(
        &home,
        json!({"action": "create", "name": "nightly", "plugin": "work", "args": {"n": 7},
               "cron": "30 2 * * *", "tz": "Europe/Paris"}),
    );
    assert_eq!(created["name"], "nightly");
    assert_eq!(
        created["trigger"],
        json!({"kind": "cron", "expr": "30 2 * * *", "tz": "Europe/Paris"})
    );
    let next = created["next_run_at"].as_str().expect("next run");
    // 02:30 in Paris is 01:30 or 00:30 UTC.
    assert!(next.ends_with(":30:00Z"), "{next}");

    // The CLI gives as many fire times as asked, and refuses a count it
    // cannot give rather than cutting it.
    let out = home.greffon(&["task", "next", "nightly", "-n", "100", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let times: Vec<String> = serde_json::from_slice(&out.stdout).expect("json list");
    assert_eq!(times.len(), 100);
    let out = home.greffon(&["task", "next", "nightly", "-n", "400"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("400 is not in 1..=100"), "{err}");

    let got = tasks_plugin(&home, json!({"action": "get", "task": "nightly"}));
    assert_eq!(got["args"], json!({"n": 7}));
    let listed = tasks_plugin(&home, json!({"action": "list"}));
    assert_eq!(listed["tasks"].as_array().map(Vec::len), Some(1));

    let run = tasks_plugin(&home, json!({"action": "run_now", "task": "nightly"}));
    assert_eq!(run["status"], "ok");
    assert_eq!(run["kind"], "manual");
    assert_eq!(run["result"], json!({"n": 7}));
    let after = tasks_plugin(&home, json!({"action": "get", "task": created["id"]}));
    assert_eq!(
        after["next_run_at"], created["next_run_at"],
        "run_now keeps the schedule"
    );

    let updated = tasks_plugin(
        &home,
        json!({"action": "update", "task": "nightly", "every_s": 3600, "max_instances": 2}),
    );
    assert_eq!(updated["trigger"]["kind"], "interval");
    assert_eq!(updated["max_instances"], 2);

    // Each refusal names the field and the rule.
    let cases = [
        (
            json!({"action": "create", "name": "x", "plugin": "work", "args": {"n": "many"}, "every_s": 60}),
            "invalid task: args: plugin 'work': invalid arguments: argument 'n'",
        ),
        (
            json!({"action": "create", "name": "x", "plugin": "nope", "every_s": 60}),
            "invalid task: plugin: unknown plugin 'nope'",
        ),
        (
            json!({"action": "create", "name": "x", "plugin": "work", "cron": "0 25 * * *"}),
            "invalid task: trigger.expr: '0 25 * * *' is not a cron expression",
        ),
        (
            json!({"action": "create", "name": "x", "plugin": "work", "cron": "@daily", "tz": "Mars/Base"}),
            "invalid task: trigger.tz: 'Mars/Base' is not an IANA time zone",
        ),
        (
            json!({"action": "create", "name": "nightly", "plugin": "work", "every_s": 60}),
            "a task named 'nightly' already exists",
        ),
        (
            json!({"action": "create", "name": "x", "plugin": "work"}),
            "action 'create' needs a trigger",
        ),
        (json!({"action": "delete"}), "action 'delete' needs 'task'"),
        (json!({"action": "get", "task": "ghost"}), "no task 'ghost'"),
    ];
    for (args, expected) in cases {
        let error = home.run_error("tasks", &args.to_string());
        assert!(error.starts_with(expected), "{args}: {error}");
    }
    // The CLI's own refusals are usage errors (exit 2).
    for (args, says) in [
        (
            vec!["task", "create", "--name", "x", "--plugin", "work"],
            "give a trigger",
        ),
        (
            vec![
                "task", "create", "--name", "x", "--plugin", "work", "--every", "5", "--args",
                "{n:1}",
            ],
            "--args is not JSON",
        ),
    ] {
        let out = home.greffon(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(says),
            "{args:?}"
        );
    }
    let bad_action = home.run_error("tasks", r#"{"action": "explode"}"#);
    assert!(bad_action.contains("action"), "{bad_action}");

    let deleted = tasks_plugin(&home, json!({"action": "delete", "task": "nightly"}));
    assert_eq!(deleted["name"], "nightly");
    let listed = tasks_plugin(&home, json!({"action": "list"}));
    assert_eq!(listed["tasks"], json!([]));
    // Every host-service call is audited.
    let audit = home.log("audit");
    assert!(audit.contains("\"service\":\"tasks.create\""), "{audit}");
    assert!(audit.contains("\"event\":\"task_deleted\""));
}

#[test]
fn the_task_routes_answer_with_their_statuses() {
    let home = home();
    let server = start(&home);
    let s = &server.api;
    let (st, t) = call(
        s,
        "POST",
        "/v1/tasks",
        &json!({"name": "hourly", "plugin": "work", "args": {"n": 1},
                "trigger": {"kind": "cron", "expr": "0 * * * *", "tz": "UTC"}})
        .to_string(),
    );
    assert_eq!(st, 201, "{t}");
    let id = t["id"].as_i64().expect("id");
    let (st, _) = call(s, "GET", "/v1/tasks", "");
    assert_eq!(st, 200);
    let (st, v) = call(s, "GET", &format!("/v1/tasks/{id}"), "");
    assert_eq!((st, &v["name"]), (200, &json!("hourly")));
    let (st, v) = call(s, "GET", "/v1/tasks/hourly/next?n=3", "");
    assert_eq!(st, 200);
    let times: Vec<&str> = v
        .as_array()
        .expect("list")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(times.len(), 3);
    assert!(times.iter().all(|t| t.ends_with(":00:00Z")), "{times:?}");
    let (st, v) = call(s, "GET", "/v1/tasks/hourly/next?n=400", "");
    assert_eq!(st, 422, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap_or("")
            .contains("at most 100 (got 400)"),
        "{v}"
    );
    let (st, v) = call(s, "PATCH", "/v1/tasks/hourly", r#"{"args": {"n": 5}}"#);
    assert_eq!((st, &v["args"]), (200, &json!({"n": 5})));
    let (st, run) = call(s, "POST", "/v1/tasks/hourly/run", "");
    assert_eq!((st, &run["result"]), (200, &json!({"n": 5})));
    let (st, runs) = call(s, "GET", "/v1/tasks/hourly/runs?limit=5", "");
    assert_eq!(st, 200);
    assert_eq!(runs.as_array().map(Vec::len), Some(1));

    // The tasks plugin through the API sees the same tasks.
    let (st, v) = call(s, "POST", "/v1/plugins/tasks/run", r#"{"action": "list"}"#);
    assert_eq!(st, 200);
    assert_eq!(v["tasks"][0]["name"], "hourly");

    for (method, path, body, status, needle) in [
        ("GET", "/v1/tasks/ghost", "", 404, "no task 'ghost'"),
        (
            "POST",
            "/v1/tasks",
            r#"{"name": "hourly", "plugin": "work", "trigger": {"kind": "interval", "every_s": 5}}"#,
            409,
            "already exists",
        ),
        (
            "POST",
            "/v1/tasks",
            r#"{"name": "y", "plugin": "work", "trigger": {"kind": "weekly"}}"#,
            422,
            "weekly",
        ),
        (
            "POST",
            "/v1/tasks",
            r#"{"name": "y", "plugin": "work"}"#,
            422,
            "missing field `trigger`",
        ),
        (
            "POST",
            "/v1/tasks",
            r#"{"name": "y", "plugin": "work", "colour": 1, "trigger": {"kind": "interval", "every_s": 5}}"#,
            422,
            "unknown field `colour`",
        ),
        (
            "PATCH",
            "/v1/tasks/hourly",
            r#"{"trigger": {"kind": "cron", "expr": "@daily", "tz": "Nowhere"}}"#,
            422,
            "trigger.tz",
        ),
        ("DELETE", "/v1/tasks/ghost", "", 404, "no task"),
        (
            "POST",
            "/v1/tasks/hourly/run",
            r#"{"forced": true}"#,
            422,
            "unknown field `forced`",
        ),
    ] {
        let (st, v) = call(s, method, path, body);
        assert_eq!(st, status, "{method} {path}: {v}");
        let e = v["error"].as_str().unwrap_or_default();
        assert!(e.contains(needle), "{method} {path}: {e}");
        assert!(v["kind"].is_string());
    }
    let (st, _) = call(s, "DELETE", "/v1/tasks/hourly", "");
    assert_eq!(st, 200);
    let (st, _) = call(s, "GET", &format!("/v1/tasks/{id}/runs"), "");
    assert_eq!(st, 404, "runs go with their task");
}

#[test]
fn run_now_answers_409_while_the_task_runs_unless_forced() {
    let home = home();
    let server = start(&home);
    let s = server.api.clone();
    let (st, _) = call(
        &s,
        "POST",
        "/v1/tasks",
        &json!({"name": "slow", "plugin": "work", "args": {"sleep": 2},
                "trigger": {"kind": "interval", "every_s": 86400}})
        .to_string(),
    );
    assert_eq!(st, 201);
    let first = {
        let s = s.clone();
        std::thread::spawn(move || call(&s, "POST", "/v1/tasks/slow/run", ""))
    };
    wait_for(Duration::from_secs(10), || {
        let (_, runs) = call(&s, "GET", "/v1/tasks/slow/runs", "");
        (runs[0]["status"] == "running").then_some(())
    })
    .expect("the first run is running");
    let (st, v) = call(&s, "POST", "/v1/tasks/slow/run", "");
    assert_eq!(st, 409, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap_or_default()
            .contains("max_instances = 1")
    );
    let (st, v) = call(&s, "POST", "/v1/tasks/slow/run", r#"{"force": true}"#);
    assert_eq!((st, &v["status"]), (200, &json!("ok")), "{v}");
    let (st, v) = first.join().expect("first run");
    assert_eq!((st, &v["status"]), (200, &json!("ok")));
}

/// Runs of `task` through the API, oldest first.
#[test]
fn tasks_fire_on_schedule_and_survive_a_restart_and_a_kill_during_a_run() {
    let home = home();
    let server = start(&home);
    // Through `greffon task` while the server runs: the CLI goes through the
    // API, so the sleeping loop is woken and the task fires on time.
    let at = (chrono::Utc::now() + chrono::Duration::milliseconds(1500)).to_rfc3339();
    let created = home.ok(&[
        "task",
        "create",
        "--name",
        "soon",
        "--plugin",
        "work",
        "--args",
        r#"{"n": 1}"#,
        "--at",
        &at,
        "--json",
    ]);
    let created: Value = serde_json::from_str(&created).expect("json");
    assert_eq!(created["trigger"]["kind"], "date");
    let fired = wait_for(Duration::from_secs(20), || {
        let r = runs(&server.api, "soon");
        (r.first()?["status"] == "ok").then(|| r[0].clone())
    })
    .expect("the one-shot fired");
    let late = millis(&fired["started_at"]) - millis(&fired["scheduled_for"]);
    assert!((0..1000).contains(&late), "fired {late} ms late: {fired}");

    // A task every 2 s whose run takes 3 s; coalesce latest, max 1.
    let (st, _) = call(
        &server.api,
        "POST",
        "/v1/tasks",
        &json!({"name": "busy", "plugin": "work", "args": {"sleep": 3},
                "trigger": {"kind": "interval", "every_s": 2}})
        .to_string(),
    );
    assert_eq!(st, 201);
    wait_for(Duration::from_secs(20), || {
        runs(&server.api, "busy")
            .iter()
            .any(|r| r["status"] == "running")
            .then_some(())
    })
    .expect("a run is running");
    let before_kill = runs(&server.api, "busy");
    // kill -9 during the run: no stop(), no write-back.
    let mut server = server;
    server.child.kill().expect("kill -9");
    server.child.wait().expect("reaped");
    drop(server);

    // With no server, `greffon task get` reads the database itself.
    let task: Value =
        serde_json::from_str(&home.ok(&["task", "get", "busy", "--json"])).expect("json");
    let next = millis(&task["next_run_at"]);
    // Three fire times pass while greffon is down (this wait is the
    // downtime under test).
    wait_for(Duration::from_secs(20), || {
        (chrono::Utc::now().timestamp_millis() > next + 2 * 2000 + 100).then_some(())
    })
    .expect("time passes");
    let restarted = chrono::Utc::now().timestamp_millis();
    let server = start(&home);
    let after = wait_for(Duration::from_secs(30), || {
        let r = runs(&server.api, "busy");
        let marked = r
            .iter()
            .take(before_kill.len())
            .all(|r| r["status"] != "running");
        let caught_up = r
            .iter()
            .skip(before_kill.len())
            .any(|r| r["status"] == "ok");
        (marked && caught_up).then_some(r)
    })
    .expect("after the restart: the orphan is marked and a run finished");
    let orphan = after
        .iter()
        .take(before_kill.len())
        .find(|r| r["error"].as_str().is_some_and(|e| e.starts_with("lost:")))
        .unwrap_or_else(|| panic!("the run cut by kill -9 is recorded as lost: {after:?}"));
    assert_eq!(orphan["status"], "lost");
    // No fire ran twice: every scheduled time appears once.
    let mut times: Vec<i64> = after.iter().map(|r| millis(&r["scheduled_for"])).collect();
    let total = times.len();
    times.sort_unstable();
    times.dedup();
    assert_eq!(times.len(), total, "a fire time ran twice: {after:?}");
    // The three or more fires missed while down became one run, the latest
    // (coalesce = latest), not one per missed fire.
    let missed_window: Vec<&Value> = after
        .iter()
        .filter(|r| (next..=restarted).contains(&millis(&r["scheduled_for"])))
        .collect();
    assert_eq!(missed_window.len(), 1, "{missed_window:?}");
    assert!(
        millis(&missed_window[0]["scheduled_for"]) >= next + 2 * 2000,
        "the catch-up is the latest missed fire: {:?}",
        missed_window[0]
    );
    assert_eq!(missed_window[0]["status"], "ok");

    // Tasks and history survive a normal restart too.
    stop(server);
    let server = start(&home);
    let (_, list) = call(&server.api, "GET", "/v1/tasks", "");
    let names: Vec<&str> = list
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(names, ["soon", "busy"]);
    assert_eq!(runs(&server.api, "soon").len(), 1, "history kept");
    assert_eq!(runs(&server.api, "soon")[0]["result"], json!({"n": 1}));
    let (st, _) = call(&server.api, "DELETE", "/v1/tasks/busy", "");
    assert_eq!(st, 200);
    stop(server);
}

/// A JSON time as milliseconds since the epoch.
#[test]
fn a_run_still_going_at_shutdown_is_recorded_as_lost_and_a_disabled_scheduler_fires_nothing() {
    let home = home();
    home.config("[server]\nshutdown_grace_s = 0.5\n");
    let server = start(&home);
    let (st, _) = call(
        &server.api,
        "POST",
        "/v1/tasks",
        &json!({"name": "long", "plugin": "work", "args": {"sleep": 20},
                "trigger": {"kind": "interval", "every_s": 1}})
        .to_string(),
    );
    assert_eq!(st, 201);
    wait_for(Duration::from_secs(20), || {
        runs(&server.api, "long")
            .iter()
            .any(|r| r["status"] == "running")
            .then_some(())
    })
    .expect("a run is running");
    stop(server);
    // Read back embedded: the run did not finish within the grace.
    let listed: Value =
        serde_json::from_str(&home.ok(&["task", "runs", "long", "--json"])).expect("json");
    let run = &listed[0];
    assert_eq!(run["status"], "lost", "{listed}");
    assert_eq!(
        run["error"],
        "lost: greffon stopped before the run finished"
    );

    // [scheduler] enabled = false: the API works, nothing fires.
    home.config("[scheduler]\nenabled = false\n");
    let before = listed.as_array().map_or(0, Vec::len);
    let server = start(&home);
    let (st, _) = call(
        &server.api,
        "PATCH",
        "/v1/tasks/long",
        r#"{"trigger": {"kind": "interval", "every_s": 1}, "args": {"sleep": 0}}"#,
    );
    assert_eq!(st, 200);
    let (_, next) = call(&server.api, "GET", "/v1/tasks/long/next?n=1", "");
    let due = millis(&next[0]);
    // Past the next fire time (this wait is the scenario), nothing ran.
    wait_for(Duration::from_secs(10), || {
        (chrono::Utc::now().timestamp_millis() > due + 1500).then_some(())
    })
    .expect("time passes");
    assert_eq!(
        runs(&server.api, "long").len(),
        before,
        "a disabled scheduler fired"
    );
    stop(server);
}

#[test]
fn a_task_whose_plugin_is_gone_can_still_be_disabled() {
    let home = home();
    home.ok(&[
        "task", "create", "--name", "orphan", "--plugin", "work", "--every", "60",
    ]);
    std::fs::remove_dir_all(home.path().join("plugins/work")).expect("remove the plugin");
    // Changing only the options does not re-check the plugin...
    let t: Value = serde_json::from_str(&home.ok(&[
        "task",
        "update",
        "orphan",
        "--enabled",
        "false",
        "--json",
    ]))
    .expect("json");
    assert_eq!(t["enabled"], false);
    // ...changing its arguments does.
    let out = home.greffon(&["task", "update", "orphan", "--args", r#"{"n": 2}"#]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid task: plugin: unknown plugin 'work'"),
        "{err}"
    );
}

#[test]
fn a_failing_task_is_retried_as_its_policy_says() {
    let home = home();
    home.plugin(
        "fail",
        "class P:\n    meta = {'name': 'fail'}\n    def run(self):\n        return {'error': 'upstream down'}\nplugin = P()\n",
    );
    home.enable("fail");
    let server = start(&home);
    let at = (chrono::Utc::now() + chrono::Duration::milliseconds(500)).to_rfc3339();
    let created = home.ok(&[
        "task",
        "create",
        "--name",
        "flaky",
        "--plugin",
        "fail",
        "--at",
        &at,
        "--retries",
        "2",
        "--retry-backoff",
        "0.5",
        "--json",
    ]);
    let created: Value = serde_json::from_str(&created).expect("json");
    assert_eq!(
        (&created["retries"], &created["retry_backoff_s"]),
        (&json!(2), &json!(0.5))
    );
    let history = wait_for(Duration::from_secs(30), || {
        let r = runs(&server.api, "flaky");
        (r.len() == 3 && r.iter().all(|r| r["status"] == "error")).then_some(r)
    })
    .expect("the fire and its two retries ran");
    let attempts: Vec<&Value> = history.iter().map(|r| &r["attempt"]).collect();
    assert_eq!(attempts, [&json!(1), &json!(2), &json!(3)]);
    assert!(
        history
            .iter()
            .all(|r| r["scheduled_for"] == history[0]["scheduled_for"])
    );
    assert!(history.iter().all(|r| r["error"] == "upstream down"));
    // The waits grow: 0.5 s, then 1 s, after each failure.
    let gap = |i: usize| millis(&history[i]["started_at"]) - millis(&history[i - 1]["finished_at"]);
    assert!(gap(1) >= 500 && gap(2) >= 1000, "{history:?}");
    // Spent: nothing more comes.
    let (_, task) = call(&server.api, "GET", "/v1/tasks/flaky", "");
    assert!(task["next_run_at"].is_null(), "{task}");
    stop(server);
    assert_eq!(
        home.ok(&["task", "runs", "flaky"])
            .matches("attempt")
            .count(),
        2,
        "the human listing shows the attempts"
    );
}
