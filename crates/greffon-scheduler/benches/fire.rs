//! Fire lateness, claim throughput and the loop's CPU with many tasks
//! (issues #5 and #17), on either task store.
//!
//! 10,000 interval tasks whose first fires are spread evenly over one
//! minute, each running a trivial plugin in a real sandboxed worker
//! through the real host, on the SQLite store (one host) or on a
//! throwaway PostgreSQL shared by GREFFON_BENCH_HOSTS hosts (each a real
//! `Host` with its own home, workers and scheduler, in this process).
//! Reports:
//! - idle CPU of the process while the 10,000 tasks are all in the future
//!   (every loop sleeping until the first; with PostgreSQL, the lease
//!   keepers and the listeners too);
//! - lateness of each fire: scheduled time → claimed (the run row's
//!   `started_at`) and → arrived in the plugin (its `time.time()`);
//! - CPU of the process during the minute of fires;
//! - claims per second: 10,000 one-shots all due at once, claimed by the
//!   hosts' loops with a runner that returns at once (the store's share).
//!
//! Knobs: GREFFON_BENCH_STORE (sqlite | postgres), GREFFON_BENCH_HOSTS (1;
//! postgres only), GREFFON_BENCH_TASKS (10000), GREFFON_BENCH_SPREAD_S
//! (60), GREFFON_BENCH_IDLE_S (10), GREFFON_BENCH_CPU (pin to one CPU).

#[path = "../../greffon-host/benches/support/mod.rs"]
mod support;

#[path = "../tests/support/pg.rs"]
mod pg;

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use greffon_core::Config;
use greffon_host::Host;
use greffon_scheduler::{
    AnyTaskStore, CheckFuture, NewTask, Options, Outcome, RunFuture, Runner, Scheduler, Settings,
    SystemClock, Task, TaskKey, TaskStore, Trigger,
};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const PLUGIN: &str = "import time\nclass P:\n    meta = {'name': 'noop', 'timeout': 10}\n    def run(self):\n        return {'t': time.time()}\nplugin = P()\n";

/// CPU seconds (user + system) of this process so far.
fn cpu_s() -> f64 {
    // SAFETY: getrusage fills the zeroed struct.
    let u = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// CPU seconds of `server`'s processes (its postmaster and the backends
/// it forked), still running: the database's share of the work, which the
/// process's own figure leaves out. Zero with SQLite.
fn db_cpu_s(server: Option<&pg::TempPostgres>) -> f64 {
    let Some(postmaster) = server.and_then(pg::TempPostgres::postmaster_pid) else {
        return 0.0;
    };
    // SAFETY: sysconf has no preconditions.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    let mut ticks = 0u64;
    for p in procs.flatten() {
        let Ok(stat) = std::fs::read_to_string(p.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ... utime stime: fields 4, 14 and 15.
        let Some((pid, rest)) = stat
            .split_once(" (")
            .and_then(|(pid, r)| Some((pid, r.rsplit_once(") ")?.1)))
        else {
            continue;
        };
        let fields: Vec<&str> = rest.split(' ').collect();
        let number = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
        let ours = pid.parse::<u64>().ok() == Some(u64::from(postmaster))
            || number(1) == Some(u64::from(postmaster));
        if ours {
            ticks += number(11).unwrap_or(0) + number(12).unwrap_or(0);
        }
    }
    ticks as f64 / tick
}

/// Answers at once: what is left of a fire's cost is the store's.
struct Instant0;

impl Runner for Instant0 {
    fn check(&self, _: &str, _: &Value) -> CheckFuture {
        Box::pin(std::future::ready(Ok(())))
    }

    fn run(&self, _: &str, _: Value, _: Option<Duration>) -> RunFuture {
        Box::pin(async { Outcome::Ok(json!({})) })
    }

    fn plugins(&self) -> Vec<String> {
        vec!["bulk".into()]
    }
}

/// Each scheduler's loop, running.
fn spawn_loops(schedulers: &[Scheduler<AnyTaskStore>]) -> Vec<tokio::task::JoinHandle<()>> {
    schedulers
        .iter()
        .map(|s| {
            let s = s.clone();
            tokio::spawn(async move { s.run_loop().await })
        })
        .collect()
}

/// A store of the kind under test: the home's SQLite file, or a new pool
/// on the shared database.
async fn open(url: Option<&str>, home: &Path) -> AnyTaskStore {
    AnyTaskStore::open(url, &home.join("greffon.db"), true)
        .await
        .expect("the store opens")
}

fn main() {
    let pinned = support::pin_from_env();
    let n = support::env_usize("GREFFON_BENCH_TASKS", 10_000);
    let spread_s = support::env_usize("GREFFON_BENCH_SPREAD_S", 60) as i64;
    let idle_s = support::env_usize("GREFFON_BENCH_IDLE_S", 10) as u64;
    let postgres = std::env::var("GREFFON_BENCH_STORE").is_ok_and(|s| s == "postgres");
    let hosts = if postgres {
        support::env_usize("GREFFON_BENCH_HOSTS", 1)
    } else {
        1
    };
    let server = postgres.then(|| pg::TempPostgres::start().expect("PostgreSQL is installed"));
    let url = server.as_ref().map(pg::TempPostgres::url);
    println!(
        "store: {}, {hosts} host(s)",
        if postgres { "PostgreSQL" } else { "SQLite" }
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let dir = tempfile::tempdir().expect("tempdir");
        let settings = Settings {
            default_tz: "UTC".into(),
            ..Settings::default()
        };
        let mut homes = Vec::new();
        let mut schedulers = Vec::new();
        for h in 0..hosts {
            let root = dir.path().join(format!("host{h}"));
            std::fs::create_dir_all(root.join("plugins/noop")).expect("plugin dir");
            std::fs::write(root.join("plugins/noop/plugin.py"), PLUGIN).expect("plugin");
            let config = Config::parse("", Path::new("greffon.toml")).expect("config");
            let host = Host::open_with(&root, config).await.expect("host opens");
            host.enable("noop").await.expect("enable");
            let store = open(url.as_deref(), &root).await;
            schedulers.push(greffon_scheduler::attach(&host, store, settings.clone()));
            homes.push((root, host));
        }
        let scheduler = schedulers[0].clone();

        // The first fire of task i is at t0 + i * spread / n; t0 leaves
        // time to create them all and to measure the idle loop.
        let created = Instant::now();
        let t0: DateTime<Utc> =
            Utc::now() + ChronoDuration::seconds(idle_s as i64 + 5 + (n as i64) / 1000);
        let step_us = spread_s * 1_000_000 / n as i64;
        for i in 0..n {
            let start = t0 + ChronoDuration::microseconds(step_us * i as i64);
            let new: NewTask = serde_json::from_value(json!({
                "name": format!("t{i}"),
                "plugin": "noop",
                "trigger": Trigger::Interval { every_s: 3600, start: Some(start), end: None },
            }))
            .expect("task");
            scheduler.create(new).await.expect("created");
        }
        let creating = created.elapsed();
        println!(
            "created {n} tasks in {:.1} s ({:.0} µs each){}",
            creating.as_secs_f64(),
            creating.as_secs_f64() * 1e6 / n as f64,
            pinned.map_or(String::new(), |c| format!(", pinned to CPU {c}"))
        );

        let loops = spawn_loops(&schedulers);
        // Idle: every task in the future.
        let (c0, d0, w0) = (cpu_s(), db_cpu_s(server.as_ref()), Instant::now());
        tokio::time::sleep(Duration::from_secs(idle_s)).await;
        let idle_share = (cpu_s() - c0) / w0.elapsed().as_secs_f64();
        let db_idle = (db_cpu_s(server.as_ref()) - d0) / w0.elapsed().as_secs_f64();
        assert!(Utc::now() < t0, "the idle window overran the first fire");
        println!(
            "idle, {n} future tasks: CPU {:.3} % of one core over {idle_s} s (PostgreSQL server: {:.3} %)",
            idle_share * 100.0,
            db_idle * 100.0
        );

        // The minute of fires.
        let wait = (t0 - Utc::now()).to_std().unwrap_or_default();
        tokio::time::sleep(wait).await;
        let (c1, d1, w1) = (cpu_s(), db_cpu_s(server.as_ref()), Instant::now());
        tokio::time::sleep(Duration::from_secs(spread_s as u64 + 2)).await;
        let busy_share = (cpu_s() - c1) / w1.elapsed().as_secs_f64();
        let db_busy = (db_cpu_s(server.as_ref()) - d1) / w1.elapsed().as_secs_f64();
        for (s, looping) in schedulers.iter().zip(&loops) {
            s.stop(Duration::from_secs(10)).await;
            looping.abort();
        }

        let mut claimed = Vec::with_capacity(n);
        let mut arrived = Vec::with_capacity(n);
        let mut not_ok = 0;
        for i in 0..n {
            let runs = scheduler
                .runs(&TaskKey::Name(format!("t{i}")), 5)
                .await
                .expect("runs");
            let Some(run) = runs.last() else {
                not_ok += 1;
                continue;
            };
            let due = run.scheduled_for.expect("scheduled");
            if run.status != greffon_scheduler::RunStatus::Ok {
                not_ok += 1;
                continue;
            }
            let started = run.started_at.expect("started");
            claimed.push((started - due).num_microseconds().unwrap_or(0) as f64 / 1000.0);
            let t = run
                .result
                .as_ref()
                .and_then(|r| r["t"].as_f64())
                .expect("plugin time");
            arrived.push(t * 1000.0 - due.timestamp_millis() as f64);
        }
        let row = |label: &str, v: &[f64]| {
            println!(
                "{label:<28} p50 {:>7.2} ms   p99 {:>7.2} ms   max {:>7.2} ms",
                support::percentile(v.to_vec(), 50),
                support::percentile(v.to_vec(), 99),
                support::percentile(v.to_vec(), 100)
            );
        };
        println!("fires: {} ok, {not_ok} missing or not ok", claimed.len());
        row("lateness, due -> claimed", &claimed);
        row("lateness, due -> in plugin", &arrived);
        println!(
            "greffon process CPU during the fires: {:.1} % of one core ({:.0} fires/s; PostgreSQL server: {:.1} %)",
            busy_share * 100.0,
            n as f64 / spread_s as f64,
            db_busy * 100.0
        );
        claims_per_second(url.as_deref(), &homes, n).await;
        for (_, host) in homes {
            host.shutdown().await;
        }
    });
}

/// `n` one-shots all due now, claimed by one loop per host whose runner
/// answers at once: claims per second, until nothing is left due.
async fn claims_per_second(url: Option<&str>, homes: &[(std::path::PathBuf, Host)], n: usize) {
    let settings = Settings {
        default_tz: "UTC".into(),
        ..Settings::default()
    };
    let mut schedulers: Vec<Scheduler<AnyTaskStore>> = Vec::new();
    for (root, _) in homes {
        schedulers.push(Scheduler::new(
            open(url, root).await,
            Arc::new(Instant0),
            Arc::new(SystemClock),
            settings.clone(),
        ));
    }
    let store = schedulers[0].store().clone();
    let now = Utc::now();
    for i in 0..n {
        let past = now - ChronoDuration::seconds(1);
        store
            .insert(&Task {
                id: 0,
                name: format!("bulk{i}"),
                plugin: "bulk".into(),
                args: json!({}),
                trigger: Trigger::Date { at: past },
                options: Options::default(),
                next_run_at: Some(past),
                last_run_at: None,
                created_at: now,
                updated_at: now,
            })
            .await
            .expect("insert");
    }
    let started = Instant::now();
    let loops = spawn_loops(&schedulers);
    let bulk = ["bulk".to_string()];
    while store.next_due(Some(&bulk)).await.expect("next").is_some() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = started.elapsed();
    for (s, looping) in schedulers.iter().zip(loops) {
        s.stop(Duration::from_secs(10)).await;
        looping.abort();
    }
    println!(
        "claims: {n} due at once, all claimed in {:.2} s: {:.0} claims/s",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
}
