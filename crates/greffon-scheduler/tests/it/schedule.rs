//! The scheduling loop on tokio's paused clock, against the real SQLite
//! store (through `frozen`, so a query takes no virtual time): DST days, catch-up after downtime (coalesce, misfire grace),
//! max_instances, run_now, wake-up on change, lost runs.
//!
//! The plugin side is a recording [`Runner`]: these tests are about *when*
//! runs happen, and a real worker cannot run on a paused clock (its call
//! timeouts would fire while the runtime waits on the process). The real
//! host runs tasks in `crates/greffon/tests/it/tasks.rs`.

use crate::frozen::Frozen;
use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use greffon_scheduler::{
    CheckError, CheckFuture, Claim, Clock, Coalesce, NewTask, Outcome, RunFuture, RunKind,
    RunStatus, Runner, Scheduler, Settings, SqliteTaskStore, TaskError, TaskKey, TaskPatch,
    TaskStore, TokioClock, Trigger,
};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc};

/// One call the runner received: the plugin, its arguments, and when (the
/// scheduler's clock).
#[derive(Debug)]
struct Call {
    args: Value,
    at: DateTime<Utc>,
}

/// Records calls; a call waits for a permit of `gate` when one is set.
struct Recorder {
    clock: Arc<dyn Clock>,
    calls: mpsc::UnboundedSender<Call>,
    gate: Option<Arc<Semaphore>>,
}

impl Runner for Recorder {
    fn check(&self, plugin: &str, args: &Value) -> CheckFuture {
        let checked = if plugin != "echo" {
            Err(CheckError {
                field: "plugin",
                message: format!("unknown plugin '{plugin}'"),
            })
        } else if args.get("bad").is_some() {
            Err(CheckError {
                field: "args",
                message: "plugin 'echo': invalid arguments: argument 'bad' is not allowed".into(),
            })
        } else {
            Ok(())
        };
        Box::pin(std::future::ready(checked))
    }

    fn run(&self, _plugin: &str, args: Value, _timeout: Option<Duration>) -> RunFuture {
        let call = Call {
            args: args.clone(),
            at: self.clock.now(),
        };
        let tx = self.calls.clone();
        let gate = self.gate.clone();
        Box::pin(async move {
            let _ = tx.send(call);
            if let Some(gate) = gate {
                let _permit = gate.acquire().await;
            }
            Outcome::Ok(json!({"echo": args}))
        })
    }

    fn plugins(&self) -> Vec<String> {
        vec!["echo".into()]
    }
}

struct Rig {
    scheduler: Scheduler<Frozen>,
    calls: mpsc::UnboundedReceiver<Call>,
}

/// A scheduler on the database in `dir`, its clock reading `start`.
async fn rig_at(dir: &Path, start: DateTime<Utc>, gate: Option<Arc<Semaphore>>) -> Rig {
    let store = Frozen(SqliteTaskStore::new(&dir.join("greffon.db")));
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::starting_at(start));
    let (tx, rx) = mpsc::unbounded_channel();
    let runner = Recorder {
        clock: clock.clone(),
        calls: tx,
        gate,
    };
    let settings = Settings {
        default_tz: "UTC".into(),
        ..Settings::default()
    };
    Rig {
        scheduler: Scheduler::new(store, Arc::new(runner), clock, settings),
        calls: rx,
    }
}

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("rfc3339")
        .with_timezone(&Utc)
}

/// Every `s` seconds from one period after saving.
fn every(s: u64) -> Trigger {
    Trigger::Interval {
        every_s: s,
        start: None,
        end: None,
    }
}

fn task(name: &str, trigger: Trigger) -> NewTask {
    serde_json::from_value(json!({
        "name": name,
        "plugin": "echo",
        "args": {"task": name},
        "trigger": trigger,
    }))
    .expect("task")
}

/// Waits (on the paused clock, without a timer of its own) until the loop
/// has claimed everything due up to `t` and gone back to sleep.
async fn settled(s: &Scheduler<Frozen>, t: DateTime<Utc>) {
    s.checked_up_to()
        .wait_for(|c| c.is_some_and(|c| c >= t))
        .await
        .expect("the loop runs");
}

fn spawn_loop(s: &Scheduler<Frozen>) -> tokio::task::JoinHandle<()> {
    let s = s.clone();
    tokio::spawn(async move { s.run_loop().await })
}

#[tokio::test(start_paused = true)]
async fn a_daily_0230_task_runs_once_each_day_across_dst() {
    // (zone, DST day, when the task runs that day): 02:30 does not exist
    // on a spring-forward day, so it runs right after the gap; it exists
    // twice on a fall-back day, and runs once.
    for (zone, day, on_the_day) in [
        ("Europe/Paris", "2026-03-29", "03:00"),
        ("Europe/Paris", "2026-10-25", "02:30"),
        ("America/New_York", "2026-03-08", "03:00"),
        ("America/New_York", "2026-11-01", "02:30"),
    ] {
        let tz: Tz = zone.parse().expect("zone");
        let date = NaiveDate::parse_from_str(day, "%Y-%m-%d").expect("date");
        let before = date.pred_opt().expect("day before");
        let start = tz
            .from_local_datetime(&before.and_hms_opt(0, 0, 0).expect("midnight"))
            .single()
            .expect("midnight")
            .with_timezone(&Utc);
        let dir = tempfile::tempdir().expect("tempdir");
        let mut r = rig_at(dir.path(), start, None).await;
        r.scheduler
            .create(task(
                "nightly",
                Trigger::Cron {
                    expr: "30 2 * * *".into(),
                    tz: Some(zone.into()),
                },
            ))
            .await
            .expect("created");
        let looping = spawn_loop(&r.scheduler);
        let mut days = Vec::new();
        for _ in 0..4 {
            let call = r.calls.recv().await.expect("a run");
            days.push(call.at.with_timezone(&tz));
        }
        looping.abort();
        let dates: Vec<String> = days
            .iter()
            .map(|d| d.format("%Y-%m-%d").to_string())
            .collect();
        let expected: Vec<String> = (0..4)
            .map(|i| {
                (before + chrono::Days::new(i))
                    .format("%Y-%m-%d")
                    .to_string()
            })
            .collect();
        assert_eq!(dates, expected, "{zone} {day}: one run per day, none twice");
        for (d, t) in expected.iter().zip(&days) {
            let hm = t.format("%H:%M").to_string();
            let want = if d == day { on_the_day } else { "02:30" };
            assert_eq!(hm, want, "{zone} {d}");
        }
        let runs = r
            .scheduler
            .runs(&TaskKey::Name("nightly".into()), 10)
            .await
            .expect("runs");
        assert_eq!(runs.len(), 4, "{zone} {day}: {runs:?}");
    }
}

/// A task every minute, created at `t0`; the scheduler is then "down"
/// for ten minutes and comes back with `coalesce` and `misfire_grace_s`.
async fn after_downtime(
    coalesce: Coalesce,
    grace: Option<f64>,
) -> (Vec<Call>, Vec<greffon_scheduler::Run>) {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let r = rig_at(dir.path(), utc("2026-06-01T12:00:00Z"), None).await;
        let mut new = task("minutely", every(60));
        new.coalesce = Some(coalesce);
        new.misfire_grace_s = grace;
        r.scheduler.create(new).await.expect("created");
    }
    // Back at 12:10:30: the fires at 12:01 .. 12:10 were missed.
    let mut r = rig_at(dir.path(), utc("2026-06-01T12:10:30Z"), None).await;
    let looping = spawn_loop(&r.scheduler);
    // The catch-up fires at once; then the regular one at 12:11.
    let mut calls = Vec::new();
    loop {
        let call = r.calls.recv().await.expect("a run");
        let regular = call.at >= utc("2026-06-01T12:11:00Z");
        calls.push(call);
        if regular {
            break;
        }
    }
    looping.abort();
    let mut runs = r
        .scheduler
        .runs(&TaskKey::Name("minutely".into()), 100)
        .await
        .expect("runs");
    runs.reverse();
    (calls, runs)
}

fn scheduled(runs: &[greffon_scheduler::Run]) -> Vec<(String, RunStatus)> {
    runs.iter()
        .map(|r| {
            (
                r.scheduled_for
                    .expect("scheduled")
                    .format("%H:%M")
                    .to_string(),
                r.status,
            )
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn missed_fires_are_coalesced_to_the_latest_by_default() {
    let (calls, runs) = after_downtime(Coalesce::Latest, None).await;
    assert_eq!(calls.len(), 2, "one catch-up, then the regular fire");
    let s = scheduled(&runs);
    assert_eq!(s[0], ("12:10".to_string(), RunStatus::Ok));
    assert_eq!(s[1].0, "12:11");
    assert_eq!(s.len(), 2, "{s:?}");
}

#[tokio::test(start_paused = true)]
async fn coalesce_earliest_and_all() {
    let (_, runs) = after_downtime(Coalesce::Earliest, None).await;
    let s = scheduled(&runs);
    assert_eq!(s[0].0, "12:01");
    assert_eq!(s.len(), 2, "{s:?}");

    let (calls, runs) = after_downtime(Coalesce::All, None).await;
    let s = scheduled(&runs);
    let times: Vec<&str> = s.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        times,
        [
            "12:01", "12:02", "12:03", "12:04", "12:05", "12:06", "12:07", "12:08", "12:09",
            "12:10", "12:11"
        ]
    );
    // max_instances = 1 lets only one of the ten catch-ups start at once.
    assert_eq!(
        s.iter().filter(|(_, st)| *st == RunStatus::Missed).count(),
        9
    );
    assert_eq!(calls.len(), 2);
    assert!(
        runs.iter()
            .filter(|r| r.status == RunStatus::Missed)
            .all(|r| r
                .error
                .as_deref()
                .is_some_and(|e| e.contains("max_instances = 1"))),
        "{runs:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_fire_later_than_the_grace_is_recorded_as_missed() {
    // 30 s late at 12:10:30, over a 10 s grace.
    let (calls, runs) = after_downtime(Coalesce::Latest, Some(10.0)).await;
    let s = scheduled(&runs);
    assert_eq!(s[0], ("12:10".to_string(), RunStatus::Missed));
    assert!(
        runs[0]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("misfire_grace_s = 10")),
        "{runs:?}"
    );
    assert_eq!(calls.len(), 1, "only the regular 12:11 fire ran");
    assert_eq!(s[1], ("12:11".to_string(), RunStatus::Ok));
}

#[tokio::test(start_paused = true)]
async fn max_instances_records_overlapping_fires_as_missed_and_run_now_needs_force() {
    let gate = Arc::new(Semaphore::new(0));
    let dir = tempfile::tempdir().expect("tempdir");
    let mut r = rig_at(dir.path(), utc("2026-06-01T12:00:00Z"), Some(gate.clone())).await;
    r.scheduler
        .create(task("slow", every(10)))
        .await
        .expect("created");
    let looping = spawn_loop(&r.scheduler);
    let first = r.calls.recv().await.expect("first run");
    assert_eq!(first.at, utc("2026-06-01T12:00:10Z"));
    // The run hangs; the fires at :20 and :30 find it running.
    settled(&r.scheduler, utc("2026-06-01T12:00:30Z")).await;
    let key = TaskKey::Name("slow".into());
    let runs = r.scheduler.runs(&key, 10).await.expect("runs");
    let statuses: Vec<RunStatus> = runs.iter().rev().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [RunStatus::Running, RunStatus::Missed, RunStatus::Missed]
    );

    let refused = r.scheduler.run_now(&key, false).await.expect_err("409");
    assert!(
        matches!(refused, TaskError::Conflict(ref m) if m.contains("max_instances = 1")),
        "{refused}"
    );
    let next_before = r.scheduler.get(&key).await.expect("task").next_run_at;
    gate.add_permits(100);
    let forced = r.scheduler.run_now(&key, true).await.expect("forced");
    assert_eq!(forced.kind, RunKind::Manual);
    assert_eq!(forced.status, RunStatus::Ok);
    assert_eq!(forced.result, Some(json!({"echo": {"task": "slow"}})));
    let next_after = r.scheduler.get(&key).await.expect("task").next_run_at;
    assert_eq!(
        next_before, next_after,
        "run_now does not move the schedule"
    );
    looping.abort();
}

#[tokio::test(start_paused = true)]
async fn a_change_wakes_the_sleeping_loop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut r = rig_at(dir.path(), utc("2026-06-01T12:00:00Z"), None).await;
    let looping = spawn_loop(&r.scheduler);
    // Let the loop find nothing and go to sleep for its longest nap.
    settled(&r.scheduler, utc("2026-06-01T12:00:00Z")).await;
    let at = utc("2026-06-01T12:00:03Z");
    r.scheduler
        .create(task("soon", Trigger::Date { at }))
        .await
        .expect("created");
    let call = r.calls.recv().await.expect("run");
    let late = (call.at - at).to_std().expect("not early");
    assert!(
        late < Duration::from_millis(50),
        "fired {late:?} late: the loop was not woken"
    );
    assert_eq!(call.args, json!({"task": "soon"}));
    // A one-shot has nothing left to fire.
    let t = r
        .scheduler
        .get(&TaskKey::Name("soon".into()))
        .await
        .expect("task");
    assert_eq!(t.next_run_at, None);
    assert_eq!(t.last_run_at, Some(at));
    looping.abort();
}

#[tokio::test(start_paused = true)]
async fn updates_reschedule_and_disabled_tasks_do_not_fire() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut r = rig_at(dir.path(), utc("2026-06-01T12:00:00Z"), None).await;
    let key = TaskKey::Name("t".into());
    r.scheduler
        .create(task("t", every(60)))
        .await
        .expect("created");
    let disabled = r
        .scheduler
        .update(
            &key,
            TaskPatch {
                enabled: Some(false),
                ..Default::default()
            },
        )
        .await
        .expect("updated");
    assert!(!disabled.options.enabled);
    let looping = spawn_loop(&r.scheduler);
    settled(&r.scheduler, utc("2026-06-01T12:10:00Z")).await;
    assert!(r.calls.try_recv().is_err(), "a disabled task fired");
    // Enabled again: counts from now (12:10), no backlog.
    let patch: TaskPatch =
        serde_json::from_value(json!({"enabled": true, "args": {"task": "t", "n": 2}}))
            .expect("patch");
    let t = r.scheduler.update(&key, patch).await.expect("updated");
    assert_eq!(t.next_run_at, Some(utc("2026-06-01T12:11:00Z")));
    let call = r.calls.recv().await.expect("runs again");
    assert_eq!(call.at, utc("2026-06-01T12:11:00Z"));
    assert_eq!(call.args["n"], 2);
    let next = r.scheduler.next(&key, 3).await.expect("next");
    assert_eq!(
        next,
        [
            utc("2026-06-01T12:12:00Z"),
            utc("2026-06-01T12:13:00Z"),
            utc("2026-06-01T12:14:00Z")
        ]
    );
    looping.abort();
}

#[tokio::test(start_paused = true)]
async fn bad_tasks_are_refused_naming_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = rig_at(dir.path(), utc("2026-06-01T12:00:00Z"), None).await;
    let cron = |expr: &str, tz: &str| Trigger::Cron {
        expr: expr.into(),
        tz: Some(tz.into()),
    };
    let mut unknown = task("a", cron("0 9 * * *", "UTC"));
    unknown.plugin = "nope".into();
    let mut bad_args = task("b", cron("0 9 * * *", "UTC"));
    bad_args.args = json!({"bad": 1});
    let mut zero = task("c", cron("0 9 * * *", "UTC"));
    zero.max_instances = Some(0);
    let mut negative = task("d", cron("0 9 * * *", "UTC"));
    negative.misfire_grace_s = Some(-1.0);
    let mut many_retries = task("i", cron("0 9 * * *", "UTC"));
    many_retries.retries = Some(101);
    let mut negative_backoff = task("j", cron("0 9 * * *", "UTC"));
    negative_backoff.retry_backoff_s = Some(-1.0);
    let cases = [
        (unknown, "plugin"),
        (bad_args, "args"),
        (task("e", cron("0 25 * * *", "UTC")), "trigger.expr"),
        (task("f", cron("0 9 * * *", "Europe/Pariss")), "trigger.tz"),
        (task("7", cron("0 9 * * *", "UTC")), "name"),
        (zero, "max_instances"),
        (negative, "misfire_grace_s"),
        (many_retries, "retries"),
        (negative_backoff, "retry_backoff_s"),
        (task("g", every(0)), "trigger.every_s"),
    ];
    for (new, field) in cases {
        let name = new.name.clone();
        let e = r.scheduler.create(new).await.expect_err("refused");
        assert_eq!(e.field(), Some(field), "{name}: {e}");
    }
    assert!(r.scheduler.list().await.expect("list").is_empty());
    // A cron task without a zone gets the default one, stored.
    let t = r
        .scheduler
        .create(task(
            "h",
            Trigger::Cron {
                expr: "@daily".into(),
                tz: None,
            },
        ))
        .await
        .expect("created");
    assert_eq!(t.trigger, cron("@daily", "UTC"));
    let dup = r
        .scheduler
        .create(task("h", cron("@daily", "UTC")))
        .await
        .expect_err("taken");
    assert!(matches!(dup, TaskError::Conflict(_)), "{dup}");
}

#[tokio::test(start_paused = true)]
async fn runs_of_a_dead_process_are_marked_lost_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = rig_at(dir.path(), utc("2026-06-01T12:00:00Z"), None).await;
    let t = r
        .scheduler
        .create(task("x", every(60)))
        .await
        .expect("created");
    let store = r.scheduler.store();
    // A run claimed by a greffon that was then killed (pid 2^22+1 is above
    // the kernel's limit, so never alive).
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    let dead = format!("{}:4194305:1", host.trim());
    let at = utc("2026-06-01T11:59:00Z");
    let claim = Claim {
        now: at,
        owner: dead,
        limit: 1,
        lease_until: at + chrono::Duration::hours(1),
        plugins: None,
    };
    let lost = store.start_manual(t.id, &claim, false).await.expect("run");
    assert_eq!(r.scheduler.recover().await.expect("recover"), 1);
    let run = store.run(lost.id).await.expect("read").expect("run");
    assert_eq!(run.status, RunStatus::Lost);
    assert!(
        run.error.as_deref().is_some_and(|e| e.starts_with("lost:")),
        "{run:?}"
    );
    // Our own running runs are not touched.
    let mine = r
        .scheduler
        .run_now(&TaskKey::Id(t.id), false)
        .await
        .expect("run");
    assert_eq!(mine.status, RunStatus::Ok);
    assert_eq!(r.scheduler.recover().await.expect("recover"), 0);
}

#[tokio::test(start_paused = true)]
async fn old_runs_are_pruned_to_the_retention() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Frozen(SqliteTaskStore::new(&dir.path().join("greffon.db")));
    let r = rig_at(dir.path(), utc("2026-06-01T12:00:00Z"), None).await;
    let t = r
        .scheduler
        .create(task("p", every(60)))
        .await
        .expect("created");
    for _ in 0..5 {
        r.scheduler
            .run_now(&TaskKey::Id(t.id), false)
            .await
            .expect("run");
    }
    let deleted = store
        .prune(3, utc("2026-01-01T00:00:00Z"))
        .await
        .expect("prune");
    assert_eq!(deleted, 2);
    assert_eq!(
        r.scheduler
            .runs(&TaskKey::Id(t.id), 10)
            .await
            .expect("runs")
            .len(),
        3
    );
    let deleted = store
        .prune(100, utc("2026-07-01T00:00:00Z"))
        .await
        .expect("prune");
    assert_eq!(deleted, 3, "older than the cut-off");
}

#[tokio::test(start_paused = true)]
async fn a_clock_between_milliseconds_fires_each_interval_once() {
    // The store keeps milliseconds; a start kept finer than that once made
    // the first fire come back as due a second time (12:01:00.000 and
    // 12:01:00.000700). `coalesce = all` shows every due time as a run.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut r = rig_at(dir.path(), utc("2026-06-01T12:00:00.000700Z"), None).await;
    let mut new = task("fine", every(60));
    new.coalesce = Some(Coalesce::All);
    new.max_instances = Some(5);
    let t = r.scheduler.create(new).await.expect("created");
    let looping = spawn_loop(&r.scheduler);
    r.calls.recv().await.expect("first");
    r.calls.recv().await.expect("second");
    looping.abort();
    let mut runs = r
        .scheduler
        .runs(&TaskKey::Id(t.id), 10)
        .await
        .expect("runs");
    runs.reverse();
    let fired: Vec<_> = runs.iter().map(|r| r.scheduled_for).collect();
    assert_eq!(
        fired,
        [
            Some(utc("2026-06-01T12:01:00Z")),
            Some(utc("2026-06-01T12:02:00Z"))
        ]
    );
}
