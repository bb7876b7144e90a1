//! One set of behaviour tests for both task stores, so that the SQLite and
//! PostgreSQL stores cannot drift: one run per fire (the uniqueness
//! constraint holds even when a fire is claimed twice), leases and lost
//! runs, the retry policy, a host claiming only its plugins, retention.
//! Each test runs against the SQLite file and a throwaway PostgreSQL.

#[path = "../support/pg.rs"]
mod pg;

use chrono::{DateTime, Duration, Utc};
use greffon_scheduler::{
    Claim, Fire, Options, PgTaskStore, Plan, Planner, RunKind, RunStatus, SqliteTaskStore, Task,
    TaskStore, Trigger,
};
use serde_json::json;

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("rfc3339")
        .with_timezone(&Utc)
}

fn t0() -> DateTime<Utc> {
    utc("2026-06-01T12:00:00Z")
}

/// A one-shot task of `plugin` due at `t0`.
fn task(name: &str, plugin: &str, options: Options) -> Task {
    Task {
        id: 0,
        name: name.into(),
        plugin: plugin.into(),
        args: json!({}),
        trigger: Trigger::Date { at: t0() },
        options,
        next_run_at: Some(t0()),
        last_run_at: None,
        created_at: t0(),
        updated_at: t0(),
    }
}

fn claim(owner: &str, now: DateTime<Utc>, plugins: Option<&[&str]>) -> Claim {
    Claim {
        now,
        owner: owner.into(),
        limit: 100,
        lease_until: now + Duration::seconds(30),
        plugins: plugins.map(|p| p.iter().map(|s| s.to_string()).collect()),
    }
}

/// Runs each due task's `next_run_at` once, with nothing left after.
fn once() -> Planner {
    Box::new(|task: &Task, _running| Plan {
        fires: vec![Fire {
            scheduled_for: task.next_run_at.expect("due"),
            status: RunStatus::Running,
            error: None,
        }],
        next_run_at: None,
    })
}

/// Runs each due task's `next_run_at`, then makes it due a second later:
/// a task that fires every second.
fn every_second() -> Planner {
    Box::new(|task: &Task, _running| {
        let due = task.next_run_at.expect("due");
        Plan {
            fires: vec![Fire {
                scheduled_for: due,
                status: RunStatus::Running,
                error: None,
            }],
            next_run_at: Some(due + Duration::seconds(1)),
        }
    })
}

/// The run of the one task due at `t0`, claimed by `owner`.
async fn claim_one<S: TaskStore>(store: &S, owner: &str) -> greffon_scheduler::Run {
    let mut claimed = store
        .claim_due(&claim(owner, t0(), None), once())
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1, "{claimed:?}");
    claimed.remove(0).run
}

/// Runs `test` on a fresh SQLite store and on a fresh PostgreSQL one.
macro_rules! both_stores {
    ($($test:ident),* $(,)?) => {$(
        mod $test {
            #[tokio::test]
            async fn sqlite() {
                let dir = tempfile::tempdir().expect("tempdir");
                super::$test(super::SqliteTaskStore::new(&dir.path().join("greffon.db"))).await;
            }

            #[tokio::test]
            async fn postgres() {
                let Some(pg) = super::pg::TempPostgres::start() else {
                    return;
                };
                let store = super::PgTaskStore::connect(&pg.url()).await.expect("connects");
                super::$test(store).await;
            }
        }
    )*};
}

both_stores!(
    a_fire_claimed_twice_runs_once,
    a_failed_run_is_retried_with_a_growing_wait_until_the_retries_are_spent,
    a_run_whose_lease_ends_is_lost_and_retried,
    manual_runs_are_not_retried_and_abandoned_runs_are_lost,
    a_refused_manual_run_leaves_the_task_claimable_at_once,
    a_host_claims_only_the_tasks_of_its_plugins,
    pruning_keeps_running_and_pending_runs,
    the_planner_sees_how_many_runs_are_running,
);

async fn a_fire_claimed_twice_runs_once<S: TaskStore>(store: S) {
    let t = store
        .insert(&task("t", "echo", Options::default()))
        .await
        .expect("insert");
    let first = store
        .claim_due(&claim("a", t0(), None), once())
        .await
        .expect("claim");
    assert_eq!(first.len(), 1);
    let run = &first[0].run;
    assert_eq!(
        (run.status, run.attempt, run.scheduled_for),
        (RunStatus::Running, 1, Some(t0()))
    );
    // Claimed and advanced: another host finds nothing due.
    assert!(
        store
            .claim_due(&claim("b", t0(), None), once())
            .await
            .expect("claim")
            .is_empty()
    );
    assert_eq!(store.next_due(None).await.expect("next"), None);
    // Even if the task came back due at the same fire (a race, a clock
    // set back), the fire is not run a second time.
    let mut again = store
        .get(&greffon_scheduler::TaskKey::Id(t.id))
        .await
        .expect("get")
        .expect("task");
    again.next_run_at = Some(t0());
    store.replace(&again).await.expect("replace");
    let second = store
        .claim_due(&claim("b", t0() + Duration::seconds(1), None), once())
        .await
        .expect("claim");
    assert!(second.is_empty(), "fire run twice: {second:?}");
    assert_eq!(store.runs(t.id, 10).await.expect("runs").len(), 1);
}

async fn a_failed_run_is_retried_with_a_growing_wait_until_the_retries_are_spent<S: TaskStore>(
    store: S,
) {
    let options = Options {
        retries: 2,
        retry_backoff_s: 10.0,
        ..Options::default()
    };
    let t = store
        .insert(&task("r", "echo", options))
        .await
        .expect("insert");
    let run = claim_one(&store, "a").await;
    let failed_at = t0() + Duration::seconds(2);
    let retry = store
        .finish(run.id, RunStatus::Error, None, Some("boom"), failed_at)
        .await
        .expect("finish")
        .expect("a retry");
    let first_wait = failed_at + Duration::seconds(10);
    assert_eq!(
        (
            retry.status,
            retry.attempt,
            retry.retry_at,
            retry.scheduled_for
        ),
        (RunStatus::Pending, 2, Some(first_wait), Some(t0()))
    );
    assert_eq!(store.next_due(None).await.expect("next"), Some(first_wait));
    let early = claim("b", first_wait - Duration::milliseconds(1), None);
    assert!(
        store
            .claim_due(&early, once())
            .await
            .expect("claim")
            .is_empty()
    );
    let taken = store
        .claim_due(&claim("b", first_wait, None), once())
        .await
        .expect("claim");
    assert_eq!(taken.len(), 1);
    assert_eq!(
        (taken[0].run.id, taken[0].run.status, taken[0].task.id),
        (retry.id, RunStatus::Running, t.id)
    );
    // The second failure waits twice as long.
    let second = store
        .finish(
            retry.id,
            RunStatus::TimedOut,
            None,
            Some("slow"),
            first_wait,
        )
        .await
        .expect("finish")
        .expect("a retry");
    assert_eq!(
        (second.attempt, second.retry_at),
        (3, Some(first_wait + Duration::seconds(20)))
    );
    store
        .claim_due(
            &claim("a", first_wait + Duration::seconds(20), None),
            once(),
        )
        .await
        .expect("claim");
    let spent = store
        .finish(second.id, RunStatus::Error, None, Some("boom"), first_wait)
        .await
        .expect("finish");
    assert!(spent.is_none(), "retried beyond retries = 2: {spent:?}");
    let history: Vec<(u32, RunStatus)> = store
        .runs(t.id, 10)
        .await
        .expect("runs")
        .iter()
        .map(|r| (r.attempt, r.status))
        .collect();
    assert_eq!(
        history,
        [
            (3, RunStatus::Error),
            (2, RunStatus::TimedOut),
            (1, RunStatus::Error)
        ]
    );
    assert_eq!(store.next_due(None).await.expect("next"), None);
}

async fn a_run_whose_lease_ends_is_lost_and_retried<S: TaskStore>(store: S) {
    let options = Options {
        retries: 1,
        retry_backoff_s: 0.0,
        ..Options::default()
    };
    let t = store
        .insert(&task("l", "echo", options))
        .await
        .expect("insert");
    let mut c = claim("a", t0(), None);
    c.lease_until = t0() + Duration::seconds(5);
    let run = store
        .claim_due(&c, once())
        .await
        .expect("claim")
        .remove(0)
        .run;
    // Only the owner's renewal extends the lease.
    assert_eq!(
        store
            .renew("b", t0() + Duration::seconds(60))
            .await
            .expect("renew"),
        0
    );
    assert_eq!(
        store
            .renew("a", t0() + Duration::seconds(10))
            .await
            .expect("renew"),
        1
    );
    assert_eq!(
        store
            .expire(t0() + Duration::seconds(7))
            .await
            .expect("expire"),
        0
    );
    assert_eq!(
        store
            .expire(t0() + Duration::seconds(11))
            .await
            .expect("expire"),
        1
    );
    let lost = store.run(run.id).await.expect("read").expect("run");
    assert_eq!(lost.status, RunStatus::Lost);
    assert!(
        lost.error
            .as_deref()
            .is_some_and(|e| e.starts_with("lost:")),
        "{lost:?}"
    );
    // The owner's late outcome does not overwrite what happened.
    let late = store
        .finish(
            run.id,
            RunStatus::Ok,
            Some(&json!({})),
            None,
            t0() + Duration::seconds(12),
        )
        .await
        .expect("finish");
    assert!(late.is_none());
    assert_eq!(
        store.run(run.id).await.expect("read").expect("run").status,
        RunStatus::Lost
    );
    let retries: Vec<_> = store
        .runs(t.id, 10)
        .await
        .expect("runs")
        .into_iter()
        .filter(|r| r.status == RunStatus::Pending)
        .collect();
    assert_eq!(retries.len(), 1);
    assert_eq!(retries[0].attempt, 2);
}

async fn manual_runs_are_not_retried_and_abandoned_runs_are_lost<S: TaskStore>(store: S) {
    let options = Options {
        retries: 3,
        ..Options::default()
    };
    let t = store
        .insert(&task("m", "echo", options))
        .await
        .expect("insert");
    let manual = store
        .start_manual(t.id, &claim("a", t0(), None), false)
        .await
        .expect("manual");
    assert_eq!(manual.kind, RunKind::Manual);
    let busy = store
        .start_manual(t.id, &claim("a", t0(), None), false)
        .await
        .expect_err("max_instances");
    assert!(
        matches!(busy, greffon_scheduler::TaskError::Conflict(_)),
        "{busy}"
    );
    assert!(
        store
            .finish(manual.id, RunStatus::Error, None, Some("boom"), t0())
            .await
            .expect("finish")
            .is_none(),
        "a manual run was retried"
    );
    let scheduled = claim_one(&store, "gone").await;
    assert_eq!(
        store.running_owners().await.expect("owners"),
        ["gone".to_string()]
    );
    assert_eq!(
        store
            .abandon("gone", t0(), "lost: test")
            .await
            .expect("abandon"),
        1
    );
    let run = store.run(scheduled.id).await.expect("read").expect("run");
    assert_eq!(run.status, RunStatus::Lost);
    assert_eq!(
        store.next_due(None).await.expect("next"),
        Some(t0() + Duration::seconds(10)),
        "the lost run's retry is due after the default backoff"
    );
}

/// A manual run refused (`max_instances`) ends its transaction then and
/// there: one merely dropped held the task locked until its connection
/// was used again, and a claim at that moment (`SKIP LOCKED`) passed the
/// due task by.
async fn a_refused_manual_run_leaves_the_task_claimable_at_once<S: TaskStore>(store: S) {
    let t = store
        .insert(&task("m", "echo", Options::default()))
        .await
        .expect("insert");
    for round in 0..100 {
        let now = t0() + Duration::seconds(round);
        let manual = store
            .start_manual(t.id, &claim("a", now, None), false)
            .await
            .expect("manual");
        store
            .start_manual(t.id, &claim("a", now, None), false)
            .await
            .expect_err("max_instances");
        let claimed = store
            .claim_due(&claim("b", now, None), every_second())
            .await
            .expect("claim");
        assert_eq!(claimed.len(), 1, "round {round}: {claimed:?}");
        for run in [manual.id, claimed[0].run.id] {
            store
                .finish(run, RunStatus::Ok, None, None, now)
                .await
                .expect("finish");
        }
    }
}

/// PostgreSQL: a refused operation ends its transaction then and there,
/// leaving nothing locked (a transaction merely dropped held its locks
/// until sqlx's pool flushed the connection): a refused manual run, a
/// duplicate task name, a replaced task that does not exist. Checked
/// without a race: right after each refusal, another connection can lock
/// both tables at once (`NOWAIT` errors if anything still holds them).
#[tokio::test]
async fn refusals_leave_nothing_locked_in_postgres() {
    use sqlx::Connection;
    let Some(pg) = pg::TempPostgres::start() else {
        return;
    };
    let store = PgTaskStore::connect(&pg.url()).await.expect("connects");
    let mut probe = sqlx::PgConnection::connect(&pg.url()).await.expect("probe");
    let t = store
        .insert(&task("m", "echo", Options::default()))
        .await
        .expect("insert");
    store
        .start_manual(t.id, &claim("a", t0(), None), false)
        .await
        .expect("manual");
    store
        .start_manual(t.id, &claim("a", t0(), None), false)
        .await
        .expect_err("max_instances");
    assert_nothing_locked(&mut probe, "after a refused manual run").await;
    store
        .insert(&task("m", "echo", Options::default()))
        .await
        .expect_err("the name is taken");
    assert_nothing_locked(&mut probe, "after a duplicate name").await;
    let missing = Task {
        id: t.id + 1000,
        ..t
    };
    store.replace(&missing).await.expect_err("no such task");
    assert_nothing_locked(&mut probe, "after replacing a missing task").await;
}

async fn assert_nothing_locked(probe: &mut sqlx::PgConnection, when: &str) {
    // One round trip, so that nothing else runs between the refusal and
    // the probe.
    let locked =
        sqlx::raw_sql("BEGIN; LOCK TABLE tasks, task_runs IN EXCLUSIVE MODE NOWAIT; ROLLBACK")
            .execute(&mut *probe)
            .await;
    assert!(
        locked.is_ok(),
        "{when}: a table is still locked: {locked:?}"
    );
}

async fn a_host_claims_only_the_tasks_of_its_plugins<S: TaskStore>(store: S) {
    store
        .insert(&task("for-a", "a", Options::default()))
        .await
        .expect("insert");
    let mut later = task("for-b", "b", Options::default());
    later.next_run_at = Some(t0() - Duration::seconds(5));
    store.insert(&later).await.expect("insert");
    assert_eq!(
        store
            .next_due(Some(&["a".to_string()]))
            .await
            .expect("next"),
        Some(t0())
    );
    let claimed = store
        .claim_due(&claim("host-a", t0(), Some(&["a"])), once())
        .await
        .expect("claim");
    let plugins: Vec<&str> = claimed.iter().map(|c| c.task.plugin.as_str()).collect();
    assert_eq!(plugins, ["a"]);
    assert_eq!(
        store.next_due(None).await.expect("next"),
        Some(t0() - Duration::seconds(5)),
        "b's task is still due for a host that has b"
    );
    assert_eq!(
        store
            .next_due(Some(&["a".to_string()]))
            .await
            .expect("next"),
        None
    );
}

async fn pruning_keeps_running_and_pending_runs<S: TaskStore>(store: S) {
    let options = Options {
        retries: 1,
        ..Options::default()
    };
    let t = store
        .insert(&task("p", "echo", options))
        .await
        .expect("insert");
    let run = claim_one(&store, "a").await;
    store
        .finish(run.id, RunStatus::Error, None, Some("boom"), t0())
        .await
        .expect("finish");
    let manual = store
        .start_manual(t.id, &claim("a", t0(), None), false)
        .await
        .expect("manual");
    let deleted = store
        .prune(1, t0() + Duration::days(1))
        .await
        .expect("prune");
    assert_eq!(deleted, 1, "only the finished run goes");
    let left: Vec<RunStatus> = store
        .runs(t.id, 10)
        .await
        .expect("runs")
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(left, [RunStatus::Running, RunStatus::Pending]);
    assert_eq!(manual.status, RunStatus::Running);
}

async fn the_planner_sees_how_many_runs_are_running<S: TaskStore>(store: S) {
    let t = store
        .insert(&task("busy", "echo", Options::default()))
        .await
        .expect("insert");
    for _ in 0..2 {
        store
            .start_manual(t.id, &claim("a", t0(), None), true)
            .await
            .expect("manual");
    }
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    let planner: Planner = Box::new(move |task: &Task, running| {
        record.lock().expect("lock").push(running);
        Plan {
            fires: vec![],
            next_run_at: task.next_run_at.map(|t| t + Duration::hours(1)),
        }
    });
    store
        .claim_due(&claim("a", t0(), None), planner)
        .await
        .expect("claim");
    assert_eq!(*seen.lock().expect("lock"), [2]);
}
