//! The scheduler: checks and saves tasks, fires them, records their runs.
//!
//! The loop sleeps until the earliest `next_run_at` (at most
//! [`MAX_NAP`], so a wall-clock jump or a write by another process is seen)
//! or until a change wakes it; then, in one store transaction, claims every
//! due task, decides its runs ([`plan`]) and advances `next_run_at`; then
//! dispatches the runs and writes back their outcomes. A fire is therefore
//! a committed row before anything runs: a crash between the two leaves a
//! `running` row, which the next start (or, when several hosts share the
//! store, another host once the run's lease has ended) marks as lost,
//! never a second run. Beside the loop, a keeper renews the leases of this
//! process's runs and expires the leases nobody renewed.

use crate::model::{NewTask, Options, Run, RunStatus, Task, TaskKey, TaskPatch, Trigger};
use crate::store::{Claim, Claimed, Fire, LOST, Plan, TaskStore};
use crate::trigger::Schedule;
use crate::{Coalesce, MAX_CATCH_UP, TaskError};
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::Notify;

/// Longest sleep of the loop.
pub const MAX_NAP: Duration = Duration::from_secs(60);

/// Tasks claimed per transaction; more due tasks take more rounds.
const CLAIM_BATCH: u32 = 512;

/// Fire times walked for one due task before jumping to now.
const MAX_WALK: usize = 100_000;

/// How often old runs are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// How long a run's outcome is retried while the store is unreachable
/// before it is given up (the run is then lost when its lease ends).
const FINISH_PATIENCE: Duration = Duration::from_secs(300);

/// Most retries a task may ask for.
const MAX_RETRIES: u32 = 100;

/// The time the scheduler reads.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Wall-clock time that moves with tokio's clock, so tests on a paused
/// runtime (`tokio::time::pause`, `advance`) move the scheduler's "now"
/// with its sleeps.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    origin_utc: DateTime<Utc>,
    origin: tokio::time::Instant,
}

impl TokioClock {
    /// A clock reading `at` now.
    pub fn starting_at(at: DateTime<Utc>) -> TokioClock {
        TokioClock {
            origin_utc: at,
            origin: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = chrono::Duration::from_std(self.origin.elapsed()).unwrap_or_default();
        self.origin_utc + elapsed
    }
}

/// What a run of a plugin came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The plugin's result; a returned `{"error"}` makes the run an error.
    Ok(Value),
    /// The call failed (validation, crash, disabled plugin...).
    Failed(String),
    TimedOut(String),
}

pub type RunFuture = Pin<Box<dyn Future<Output = Outcome> + Send>>;

pub type CheckFuture = Pin<Box<dyn Future<Output = Result<(), CheckError>> + Send>>;

/// Why a task's plugin or arguments were refused.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckError {
    /// `plugin` or `args`.
    pub field: &'static str,
    pub message: String,
}

/// What runs a task: the plugin host.
pub trait Runner: Send + Sync + 'static {
    /// Whether `plugin` exists and `args` satisfy its schema (a host may
    /// have to discover the plugin first).
    fn check(&self, plugin: &str, args: &Value) -> CheckFuture;
    /// Calls the plugin through the normal call path.
    fn run(&self, plugin: &str, args: Value, timeout: Option<Duration>) -> RunFuture;
    /// The plugins this host can run now: a host sharing its store with
    /// others claims only their tasks.
    fn plugins(&self) -> Vec<String>;
}

/// Settings from `[scheduler]`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Zone given to cron tasks saved without one.
    pub default_tz: String,
    /// Finished runs kept per task.
    pub keep_runs: u32,
    /// Finished runs older than this many days are deleted.
    pub keep_days: u32,
    /// How long a claimed run is its host's without a renewal; renewed
    /// every third of it while the run lasts.
    pub lease: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            default_tz: crate::host_zone(),
            keep_runs: 100,
            keep_days: 30,
            lease: Duration::from_secs(30),
        }
    }
}

/// Tasks, their runs, and the loop that fires them.
pub struct Scheduler<S: TaskStore> {
    shared: Arc<Shared<S>>,
}

impl<S: TaskStore> Clone for Scheduler<S> {
    fn clone(&self) -> Self {
        Scheduler {
            shared: self.shared.clone(),
        }
    }
}

impl<S: TaskStore> std::fmt::Debug for Scheduler<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("owner", &self.shared.owner)
            .finish_non_exhaustive()
    }
}

/// A [`Scheduler`] that does not keep it alive.
pub(crate) struct WeakScheduler<S: TaskStore>(std::sync::Weak<Shared<S>>);

impl<S: TaskStore> WeakScheduler<S> {
    pub(crate) fn upgrade(&self) -> Option<Scheduler<S>> {
        self.0.upgrade().map(|shared| Scheduler { shared })
    }
}

impl<S: TaskStore> std::fmt::Debug for WeakScheduler<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WeakScheduler")
    }
}

struct Shared<S> {
    store: S,
    runner: Arc<dyn Runner>,
    clock: Arc<dyn Clock>,
    settings: Settings,
    /// Names this process in `task_runs.owner`: `host:pid:start-ms`.
    owner: String,
    wake: Notify,
    stopping: AtomicBool,
    in_flight: AtomicUsize,
    /// Signalled when `in_flight` drops to zero.
    idle: Notify,
    /// The time up to which the loop has claimed everything due, set
    /// each time it goes to sleep.
    checked: tokio::sync::watch::Sender<Option<DateTime<Utc>>>,
    /// Bumped when this scheduler changes a task or a run starts or ends.
    activity: tokio::sync::watch::Sender<u64>,
}

impl<S> Shared<S> {
    fn moved(&self) {
        self.activity.send_modify(|g| *g = g.wrapping_add(1));
    }
}

impl<S: TaskStore> Scheduler<S> {
    pub fn new(
        store: S,
        runner: Arc<dyn Runner>,
        clock: Arc<dyn Clock>,
        settings: Settings,
    ) -> Scheduler<S> {
        let owner = format!(
            "{}:{}:{}",
            hostname(),
            std::process::id(),
            distinct_start(clock.now().timestamp_millis())
        );
        Scheduler {
            shared: Arc::new(Shared {
                store,
                runner,
                clock,
                settings,
                owner,
                wake: Notify::new(),
                stopping: AtomicBool::new(false),
                in_flight: AtomicUsize::new(0),
                idle: Notify::new(),
                checked: tokio::sync::watch::Sender::new(None),
                activity: tokio::sync::watch::Sender::new(0),
            }),
        }
    }

    pub fn store(&self) -> &S {
        &self.shared.store
    }

    /// Follows the time up to which the loop has claimed everything due
    /// (updated when it goes to sleep): "the fires until T are recorded".
    pub fn checked_up_to(&self) -> tokio::sync::watch::Receiver<Option<DateTime<Utc>>> {
        self.shared.checked.subscribe()
    }

    /// A receiver that changes whenever this scheduler creates, changes
    /// or deletes a task, or a run of it starts or ends: what a live view
    /// of the tasks re-reads on (another host sharing the store is not
    /// seen here).
    pub fn activity(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.activity.subscribe()
    }

    pub(crate) fn downgrade(&self) -> WeakScheduler<S> {
        WeakScheduler(Arc::downgrade(&self.shared))
    }

    /// Checks and saves a task; its first fire time is computed now.
    pub async fn create(&self, new: NewTask) -> Result<Task, TaskError> {
        let now = now_ms(&*self.shared.clock);
        let options = Options {
            enabled: new.enabled.unwrap_or(true),
            coalesce: new.coalesce.unwrap_or_default(),
            misfire_grace_s: new.misfire_grace_s,
            max_instances: new.max_instances.unwrap_or(1),
            jitter_s: new.jitter_s.unwrap_or(0.0),
            timeout_s: new.timeout_s,
            retries: new.retries.unwrap_or(0),
            retry_backoff_s: new
                .retry_backoff_s
                .unwrap_or(crate::model::DEFAULT_RETRY_BACKOFF_S),
        };
        let mut task = Task {
            id: 0,
            name: new.name,
            plugin: new.plugin,
            args: new.args,
            trigger: new.trigger,
            options,
            next_run_at: None,
            last_run_at: None,
            created_at: now,
            updated_at: now,
        };
        let schedule = self.prepare(&mut task, now)?;
        self.check_plugin(&task).await?;
        task.next_run_at = schedule.first(now);
        let saved = self.shared.store.insert(&task).await?;
        tracing::info!(target: "audit", event = "task_created", task = saved.id, name = %saved.name, plugin = %saved.plugin);
        self.shared.moved();
        self.shared.wake.notify_one();
        Ok(saved)
    }

    /// Applies `patch`. A changed trigger, or a task enabled again,
    /// computes its next fire time from now; otherwise it is kept.
    pub async fn update(&self, key: &TaskKey, patch: TaskPatch) -> Result<Task, TaskError> {
        let mut task = self.get(key).await?;
        let now = now_ms(&*self.shared.clock);
        let was_enabled = task.options.enabled;
        let rescheduled = patch.trigger.is_some();
        // The plugin and arguments are checked again only when they change:
        // a task whose plugin has gone can still be disabled or renamed.
        let recheck = patch.plugin.is_some() || patch.args.is_some();
        if let Some(v) = patch.name {
            task.name = v;
        }
        if let Some(v) = patch.plugin {
            task.plugin = v;
        }
        if let Some(v) = patch.args {
            task.args = v;
        }
        if let Some(v) = patch.trigger {
            task.trigger = v;
        }
        let o = &mut task.options;
        if let Some(v) = patch.enabled {
            o.enabled = v;
        }
        if let Some(v) = patch.coalesce {
            o.coalesce = v;
        }
        if let Some(v) = patch.misfire_grace_s {
            o.misfire_grace_s = v;
        }
        if let Some(v) = patch.max_instances {
            o.max_instances = v;
        }
        if let Some(v) = patch.jitter_s {
            o.jitter_s = v;
        }
        if let Some(v) = patch.timeout_s {
            o.timeout_s = v;
        }
        if let Some(v) = patch.retries {
            o.retries = v;
        }
        if let Some(v) = patch.retry_backoff_s {
            o.retry_backoff_s = v;
        }
        let schedule = self.prepare(&mut task, now)?;
        if recheck {
            self.check_plugin(&task).await?;
        }
        if rescheduled || (task.options.enabled && !was_enabled) {
            task.next_run_at = schedule.first(now);
        }
        task.updated_at = now;
        let saved = self.shared.store.replace(&task).await?;
        tracing::info!(target: "audit", event = "task_updated", task = saved.id, name = %saved.name);
        self.shared.moved();
        self.shared.wake.notify_one();
        Ok(saved)
    }

    pub async fn delete(&self, key: &TaskKey) -> Result<Task, TaskError> {
        let task = self.get(key).await?;
        if !self.shared.store.delete(task.id).await? {
            return Err(TaskError::NotFound(key.to_string()));
        }
        tracing::info!(target: "audit", event = "task_deleted", task = task.id, name = %task.name);
        self.shared.moved();
        self.shared.wake.notify_one();
        Ok(task)
    }

    pub async fn get(&self, key: &TaskKey) -> Result<Task, TaskError> {
        self.shared
            .store
            .get(key)
            .await?
            .ok_or_else(|| TaskError::NotFound(key.to_string()))
    }

    pub async fn list(&self) -> Result<Vec<Task>, TaskError> {
        self.shared.store.list().await
    }

    /// The task's most recent runs, newest first.
    pub async fn runs(&self, key: &TaskKey, limit: u32) -> Result<Vec<Run>, TaskError> {
        let task = self.get(key).await?;
        self.shared.store.runs(task.id, limit).await
    }

    /// The next `n` fire times (none for a disabled task's past).
    pub async fn next(&self, key: &TaskKey, n: usize) -> Result<Vec<DateTime<Utc>>, TaskError> {
        let task = self.get(key).await?;
        let now = now_ms(&*self.shared.clock);
        match task.next_run_at {
            // The stored next fire comes first (it may be due already).
            Some(t) if task.options.enabled && n > 0 => {
                let mut out = vec![t];
                out.extend(crate::trigger::fire_times(&task.trigger, t, n - 1)?);
                Ok(out)
            }
            _ => crate::trigger::fire_times(&task.trigger, now, n),
        }
    }

    /// Runs the task now, without moving its schedule, and answers the
    /// finished run. Refused while `max_instances` runs are running,
    /// unless `force`.
    pub async fn run_now(&self, key: &TaskKey, force: bool) -> Result<Run, TaskError> {
        let task = self.get(key).await?;
        let s = &self.shared;
        let run = s
            .store
            .start_manual(task.id, &self.claim(now_ms(&*s.clock)), force)
            .await?;
        tracing::info!(target: "audit", event = "task_run_now", task = task.id, run = run.id, force);
        let run_id = run.id;
        // A process without the loop (a CLI command, `greffon mcp`) has no
        // lease keeper: the run renews its own lease while it lasts, or
        // another host sharing the store would take it for lost.
        let lease = lease_of(&s.settings);
        let period = lease.to_std().unwrap_or(MAX_NAP) / 3;
        let renewing = async {
            loop {
                tokio::time::sleep(period).await;
                let until = now_ms(&*s.clock) + lease;
                if let Err(e) = s.store.renew(&s.owner, until).await {
                    tracing::debug!(target: "server", "scheduler: lease of run {run_id} not renewed: {e}");
                }
            }
        };
        tokio::select! {
            () = execute(self.shared.clone(), Claimed { run, task }, false) => {}
            () = renewing => {}
        }
        s.store
            .run(run_id)
            .await?
            .ok_or_else(|| TaskError::NotFound(format!("run {run_id}")))
    }

    /// Marks the runs left `running` by processes that are gone (a
    /// crash, `kill -9`); answers how many.
    pub async fn recover(&self) -> Result<u64, TaskError> {
        let s = &self.shared;
        let mut marked = 0;
        for owner in s.store.running_owners().await? {
            if owner != s.owner && !owner_alive(&owner) {
                let n = s.store.abandon(&owner, now_ms(&*s.clock), LOST).await?;
                if n > 0 {
                    tracing::warn!(target: "server", "{n} run(s) of a stopped greffon ({owner}) marked as lost");
                }
                marked += n;
            }
        }
        Ok(marked)
    }

    /// One claiming round's terms at `now`: this process, its lease, and
    /// (on a shared store) the plugins it can run.
    fn claim(&self, now: DateTime<Utc>) -> Claim {
        let s = &self.shared;
        Claim {
            now,
            owner: s.owner.clone(),
            limit: CLAIM_BATCH,
            lease_until: now + lease_of(&s.settings),
            plugins: s.store.shared().then(|| s.runner.plugins()),
        }
    }

    /// Recovers orphaned runs, then fires due tasks until
    /// [`Scheduler::stop`], keeping leases alongside.
    pub async fn run_loop(&self) {
        if let Err(e) = self.recover().await {
            tracing::error!(target: "server", "scheduler: cannot check for lost runs: {e}");
        }
        tokio::join!(self.fire_loop(), self.keep_leases());
    }

    async fn fire_loop(&self) {
        let s = &self.shared;
        let mut last_prune: Option<DateTime<Utc>> = None;
        let mut store_down = false;
        while !s.stopping.load(Ordering::SeqCst) {
            let now = now_ms(&*s.clock);
            let wait = match self.tick(now).await {
                Ok(next) => {
                    if std::mem::take(&mut store_down) {
                        tracing::warn!(target: "server", "scheduler: the task store answers again; firing resumes");
                    }
                    next.map_or(MAX_NAP, |t| {
                        (t - now_ms(&*s.clock))
                            .to_std()
                            .unwrap_or(Duration::ZERO)
                            .min(MAX_NAP)
                    })
                }
                Err(e) => {
                    // Logged once per outage: the loop retries every second.
                    if !std::mem::replace(&mut store_down, true) {
                        tracing::error!(target: "server", "scheduler: paused, retrying every second: {e}");
                    }
                    Duration::from_secs(1)
                }
            };
            if !store_down
                && last_prune.is_none_or(|t| (now - t).to_std().unwrap_or_default() >= PRUNE_EVERY)
            {
                last_prune = Some(now);
                self.prune(now).await;
            }
            if wait.is_zero() {
                continue;
            }
            s.checked.send_replace(Some(now));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = s.wake.notified() => {}
                _ = s.store.changed() => {}
            }
        }
    }

    /// Every third of the lease: renews this process's leases, marks the
    /// runs whose lease nobody renewed as lost (their retries then come
    /// due), and records a heartbeat. Ends once stopping and drained.
    async fn keep_leases(&self) {
        let s = &self.shared;
        let period = lease_of(&s.settings).to_std().unwrap_or(MAX_NAP) / 3;
        let mut next = tokio::time::Instant::now() + period;
        loop {
            let idle = s.idle.notified();
            if s.stopping.load(Ordering::SeqCst) && s.in_flight.load(Ordering::SeqCst) == 0 {
                return;
            }
            // A fixed beat: runs ending (which signal `idle`) do not push
            // the renewal back.
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = idle => continue,
            }
            next += period;
            // One host's store: nothing to renew while nothing runs, and
            // no other host whose leases could end (a dead earlier process
            // of this host is `recover`ed at start).
            if !s.store.shared() && s.in_flight.load(Ordering::SeqCst) == 0 {
                continue;
            }
            let now = now_ms(&*s.clock);
            let kept = async {
                s.store.renew(&s.owner, now + lease_of(&s.settings)).await?;
                let lost = s.store.expire(now).await?;
                if lost > 0 {
                    tracing::warn!(target: "server", "scheduler: {lost} run(s) whose host stopped renewing its lease marked as lost");
                    s.wake.notify_one();
                }
                s.store.heartbeat(&s.owner, now).await
            };
            if let Err(e) = kept.await {
                tracing::debug!(target: "server", "scheduler: leases not renewed: {e}");
            }
        }
    }

    /// Claims and dispatches what is due at `now`; answers the next due time.
    async fn tick(&self, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, TaskError> {
        let s = &self.shared;
        let claim = self.claim(now);
        let planner = Box::new(move |task: &Task, running: u32| plan(task, running, now));
        let claimed = s.store.claim_due(&claim, planner).await?;
        for c in claimed {
            let shared = s.clone();
            tokio::spawn(execute(shared, c, true));
        }
        s.store.next_due(claim.plugins.as_deref()).await
    }

    async fn prune(&self, now: DateTime<Utc>) {
        let s = &self.shared;
        let before = now - chrono::Duration::days(i64::from(s.settings.keep_days));
        match s.store.prune(s.settings.keep_runs, before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(target: "server", "scheduler: {n} old run(s) deleted"),
            Err(e) => {
                tracing::error!(target: "server", "scheduler: cannot prune the run history: {e}")
            }
        }
    }

    /// Stops claiming, waits up to `grace` for runs in flight, and marks
    /// the ones still running as lost.
    pub async fn stop(&self, grace: Duration) {
        let s = &self.shared;
        s.stopping.store(true, Ordering::SeqCst);
        s.wake.notify_one();
        s.idle.notify_waiters();
        let drained = async {
            while s.in_flight.load(Ordering::SeqCst) > 0 {
                let idle = s.idle.notified();
                if s.in_flight.load(Ordering::SeqCst) == 0 {
                    break;
                }
                idle.await;
            }
        };
        if tokio::time::timeout(grace, drained).await.is_err() {
            let _ = s
                .store
                .abandon(
                    &s.owner,
                    now_ms(&*s.clock),
                    "lost: greffon stopped before the run finished",
                )
                .await;
            s.idle.notify_waiters();
        }
    }

    /// Whether the task's plugin exists and takes its arguments.
    async fn check_plugin(&self, task: &Task) -> Result<(), TaskError> {
        self.shared
            .runner
            .check(&task.plugin, &task.args)
            .await
            .map_err(|e| TaskError::invalid(e.field, e.message))
    }

    /// Fills the defaults of a task being saved and checks it: name,
    /// arguments (an object), trigger, options. Answers its schedule.
    fn prepare(&self, task: &mut Task, now: DateTime<Utc>) -> Result<Schedule, TaskError> {
        let name = task.name.trim();
        if name.is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
            return Err(TaskError::invalid(
                "name",
                "must be 1 to 100 characters, without control characters",
            ));
        }
        if name.chars().all(|c| c.is_ascii_digit()) {
            return Err(TaskError::invalid(
                "name",
                "must not be only digits (digits name a task by its id)",
            ));
        }
        task.name = name.to_string();
        if !task.args.is_object() {
            return Err(TaskError::invalid("args", "must be an object"));
        }
        match &mut task.trigger {
            Trigger::Cron { tz, .. } if tz.is_none() => {
                *tz = Some(self.shared.settings.default_tz.clone());
            }
            Trigger::Interval {
                start: Some(start),
                end,
                ..
            } => {
                *start = ms(*start);
                *end = end.map(ms);
            }
            Trigger::Date { at } => *at = ms(*at),
            // Like cron's "from now on": the first fire is one period away.
            Trigger::Interval { start, every_s, .. } if start.is_none() => {
                let every = i64::try_from(*every_s).unwrap_or(i64::MAX / 1000);
                *start = Some(now + chrono::Duration::seconds(every.min(i64::MAX / 1000)));
            }
            _ => {}
        }
        let o = &task.options;
        let non_negative = |field: &str, v: f64| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(TaskError::invalid(field, "must be a number of seconds ≥ 0"))
            }
        };
        if let Some(g) = o.misfire_grace_s {
            non_negative("misfire_grace_s", g)?;
        }
        non_negative("jitter_s", o.jitter_s)?;
        if o.max_instances == 0 {
            return Err(TaskError::invalid("max_instances", "must be at least 1"));
        }
        if o.retries > MAX_RETRIES {
            return Err(TaskError::invalid(
                "retries",
                format!("must be at most {MAX_RETRIES}"),
            ));
        }
        non_negative("retry_backoff_s", o.retry_backoff_s)?;
        if let Some(t) = o.timeout_s
            && !(t.is_finite() && t > 0.0)
        {
            return Err(TaskError::invalid(
                "timeout_s",
                "must be a number of seconds > 0",
            ));
        }
        Schedule::compile(&task.trigger)
    }
}

/// The scheduling rules for one due task at `now`, `running` of its runs
/// being in flight: which of the fire times since `next_run_at` run
/// (`coalesce`), which are recorded as missed (`misfire_grace_s`,
/// `max_instances`), and the next fire time (strictly after `now`).
pub(crate) fn plan(task: &Task, running: u32, now: DateTime<Utc>) -> Plan {
    let schedule = match Schedule::compile(&task.trigger) {
        Ok(s) => s,
        Err(e) => {
            // A trigger that no longer compiles (a zone removed from the
            // database) stops the task, visibly.
            return Plan {
                fires: vec![Fire {
                    scheduled_for: task.next_run_at.unwrap_or(now),
                    status: RunStatus::Missed,
                    error: Some(format!("the trigger is no longer valid: {e}")),
                }],
                next_run_at: None,
            };
        }
    };
    // Fire times since `next_run_at`, the latest MAX_CATCH_UP kept (and
    // the first, for `earliest`). Walking a long outage of a frequent task
    // is bounded; past the bound the walk jumps to now.
    let mut due = std::collections::VecDeque::new();
    let mut first = None;
    let mut t = task.next_run_at;
    let mut steps = 0;
    while let Some(at) = t.filter(|at| *at <= now) {
        steps += 1;
        if steps > MAX_WALK {
            t = schedule.next_after(now);
            break;
        }
        first.get_or_insert(at);
        if due.len() == MAX_CATCH_UP {
            due.pop_front();
        }
        due.push_back(at);
        t = schedule.next_after(at);
    }
    let chosen: Vec<DateTime<Utc>> = match task.options.coalesce {
        Coalesce::Latest => due.back().copied().into_iter().collect(),
        Coalesce::Earliest => first.into_iter().collect(),
        Coalesce::All => due.into(),
    };
    let mut started = 0;
    let fires = chosen
        .into_iter()
        .map(|at| {
            let late = (now - at).to_std().unwrap_or_default();
            let (status, error) = match task.options.misfire_grace_s {
                Some(grace) if late.as_secs_f64() > grace => (
                    RunStatus::Missed,
                    Some(format!(
                        "missed: {:.3} s late, over misfire_grace_s = {grace}",
                        late.as_secs_f64()
                    )),
                ),
                _ if running + started >= task.options.max_instances => (
                    RunStatus::Missed,
                    Some(format!(
                        "missed: {} run(s) still running (max_instances = {})",
                        running + started,
                        task.options.max_instances
                    )),
                ),
                _ => {
                    started += 1;
                    (RunStatus::Running, None)
                }
            };
            Fire {
                scheduled_for: at,
                status,
                error,
            }
        })
        .collect();
    Plan {
        fires,
        next_run_at: t,
    }
}

/// The clock's time to the millisecond: what the store keeps, so a fire
/// time read back equals the one computed.
fn now_ms(clock: &dyn Clock) -> DateTime<Utc> {
    ms(clock.now())
}

fn ms(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

/// Runs one claimed run and writes its outcome. `jitter`: whether the
/// task's jitter applies (scheduled runs, not manual ones).
async fn execute<S: TaskStore>(shared: Arc<Shared<S>>, claimed: Claimed, jitter: bool) {
    let Claimed { run, task } = claimed;
    shared.in_flight.fetch_add(1, Ordering::SeqCst);
    shared.moved();
    if jitter && task.options.jitter_s > 0.0 {
        tokio::time::sleep(jitter_for(task.id, &run, task.options.jitter_s)).await;
    }
    let timeout = task.options.timeout_s.map(Duration::from_secs_f64);
    let outcome = shared
        .runner
        .run(&task.plugin, task.args.clone(), timeout)
        .await;
    let (status, result, error) = match outcome {
        Outcome::Ok(v) => match greffon_protocol::returned_error(&v) {
            Some(e) => {
                let message = e.as_str().map_or_else(|| e.to_string(), str::to_string);
                (RunStatus::Error, Some(v), Some(message))
            }
            None => (RunStatus::Ok, Some(v), None),
        },
        Outcome::Failed(e) => (RunStatus::Error, None, Some(e)),
        Outcome::TimedOut(e) => (RunStatus::TimedOut, None, Some(e)),
    };
    let at = now_ms(&*shared.clock);
    let recorded = record(
        &shared,
        run.id,
        status,
        result.as_ref(),
        error.as_deref(),
        at,
    )
    .await;
    match recorded {
        Ok(Some(retry)) => {
            tracing::info!(target: "server", "scheduler: task {} will try run {} again (attempt {}) at {}",
                task.id, run.id, retry.attempt, retry.retry_at.map(|t| t.to_rfc3339()).unwrap_or_default());
            shared.wake.notify_one();
        }
        Ok(None) => {}
        Err(e) => {
            tracing::error!(target: "server", "scheduler: cannot record run {} of task {}: {e}", run.id, task.id);
        }
    }
    tracing::info!(
        target: "audit",
        event = "task_run",
        task = task.id,
        run = run.id,
        kind = run.kind.as_str(),
        status = status.as_str(),
    );
    shared.moved();
    if shared.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
        shared.idle.notify_waiters();
    }
}

/// Writes a run's outcome, trying again every second while the store is
/// unreachable (a database restarting), for at most [`FINISH_PATIENCE`].
async fn record<S: TaskStore>(
    shared: &Shared<S>,
    run_id: i64,
    status: RunStatus,
    result: Option<&Value>,
    error: Option<&str>,
    at: DateTime<Utc>,
) -> Result<Option<Run>, TaskError> {
    let started = tokio::time::Instant::now();
    loop {
        match shared.store.finish(run_id, status, result, error, at).await {
            Err(e) if e.is_unavailable() && started.elapsed() < FINISH_PATIENCE => {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            done => return done,
        }
    }
}

fn lease_of(settings: &Settings) -> chrono::Duration {
    chrono::Duration::from_std(settings.lease).unwrap_or(chrono::Duration::seconds(30))
}

/// A delay in [0, max) derived from the task and the fire time: spread,
/// and the same on every host for the same fire.
fn jitter_for(task_id: i64, run: &Run, max_s: f64) -> Duration {
    let at = run.scheduled_for.map_or(0, |t| t.timestamp_millis());
    // splitmix64
    let mut z = (task_id as u64) ^ (at as u64).rotate_left(32);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let unit = (z >> 11) as f64 / (1u64 << 53) as f64;
    Duration::from_secs_f64(unit * max_s)
}

/// `at`, or later when another scheduler of this process started at the
/// same millisecond: owners must differ, since a host renews and abandons
/// runs by owner (tests and benches run several in one process).
fn distinct_start(at: i64) -> i64 {
    static LAST: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(i64::MIN);
    let mut seen = LAST.load(Ordering::SeqCst);
    loop {
        let mine = at.max(seen.saturating_add(1));
        match LAST.compare_exchange(seen, mine, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => return mine,
            Err(now) => seen = now,
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// Whether the process named by an owner (`host:pid:start`) may still be
/// running its runs: on this machine, a live process whose command line
/// names greffon. Another machine's runs are left to it.
fn owner_alive(owner: &str) -> bool {
    let mut parts = owner.rsplitn(3, ':');
    let (_start, pid, host) = (parts.next(), parts.next(), parts.next());
    let (Some(pid), Some(host)) = (pid.and_then(|p| p.parse::<u32>().ok()), host) else {
        return false;
    };
    if host != hostname() {
        return true;
    }
    if pid == std::process::id() {
        // This process, an earlier scheduler in it: not running anything.
        return false;
    }
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains("greffon"))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::distinct_start;

    #[test]
    fn schedulers_started_in_the_same_millisecond_get_distinct_owners() {
        let a = distinct_start(1_000);
        let b = distinct_start(1_000);
        assert!(b > a, "{a} then {b}");
        assert!(distinct_start(i64::MAX / 2) >= i64::MAX / 2);
    }
}
