//! The call path: a plugin's name and arguments in, its result or a
//! [`CallError`] out — the state check, validation against its schema, a
//! worker from its pool (or its queue, or "busy"), the deadline and
//! cancellation, and the worker's answer turned into the caller's.

use crate::discovery::Discovery;
use crate::dump::{Dumps, Phase, exception_text};
use crate::error::{CallError, dump_note};
use crate::lifecycle::Lifecycle;
use crate::registry::{Plugin, Status};
use crate::reply::{Ended, log_output};
use greffon_core::{Config, PluginMeta, SchemaSource};
use greffon_protocol::api::State;
use greffon_protocol::method::{self, Progress, RunParams};
use greffon_protocol::{ErrorKind, Output, WireError};
use greffon_worker::{Abandoned, Checkout, Handoff, Hooks, Lease, Pool, Ticket, Worker};
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How one call may be steered from outside: what MCP needs beyond a
/// plain [`crate::Host::call`].
#[derive(Debug, Default)]
pub struct CallOptions {
    /// Replaces the plugin's own timeout (a scheduled task's `timeout_s`).
    pub timeout: Option<Duration>,
    /// Cancelled when the caller gives up: the worker is asked to
    /// interrupt the call, and replaced if it is still busy after
    /// `kill_grace_s`.
    pub cancel: Option<CancellationToken>,
    /// Receives what the plugin reports with `greffon.progress()`.
    pub progress: Option<mpsc::UnboundedSender<Progress>>,
    /// Waits for a worker even when the plugin's queue is full, instead of
    /// being answered "busy": a scheduled run, which is never dropped for
    /// load (its timeout still bounds the wait). The queue limit is there
    /// to shed what clients send.
    pub patient: bool,
}

/// The call path, and what it needs: the plugin found (or discovered),
/// a worker started when the pool has room, a dump written.
#[derive(Debug)]
pub(crate) struct Calls {
    config: Arc<Config>,
    discovery: Arc<Discovery>,
    /// Starts a worker for a call when the pool has room.
    lifecycle: Arc<Lifecycle>,
    dumps: Dumps,
}

impl Calls {
    pub(crate) fn new(
        config: Arc<Config>,
        discovery: Arc<Discovery>,
        lifecycle: Arc<Lifecycle>,
        dumps: Dumps,
    ) -> Calls {
        Calls {
            config,
            discovery,
            lifecycle,
            dumps,
        }
    }

    /// See [`crate::Host::call_with`]: one call, recorded in the audit log.
    pub(crate) async fn call(
        &self,
        name: &str,
        args: Value,
        options: CallOptions,
    ) -> Result<Value, CallError> {
        let started = Instant::now();
        let audit_args = self.config.audit_args.then(|| args.to_string());
        let outcome = self.call_inner(name, args, options).await;
        let label = match &outcome {
            Ok(v) if greffon_protocol::returned_error(v).is_some() => "plugin_error",
            Ok(_) => "ok",
            Err(e) => e.kind.as_str(),
        };
        tracing::info!(
            target: "audit",
            event = "call",
            plugin = name,
            duration_us = started.elapsed().as_micros() as u64,
            outcome = label,
            args = audit_args,
        );
        outcome
    }

    /// See [`crate::Host::check_args`].
    pub(crate) async fn check_args(&self, name: &str, args: Value) -> Result<Value, CallError> {
        let plugin = self
            .discovery
            .find(name)
            .await
            .map_err(|e| CallError::new(ErrorKind::UnknownPlugin, e.to_string()))?;
        let meta = plugin.status().meta.clone().ok_or_else(|| {
            CallError::new(
                ErrorKind::NotEnabled,
                format!("plugin '{name}' has no valid meta; see `greffon plugin check {name}`"),
            )
        })?;
        self.validate(name, &meta, args)
    }

    fn validate(&self, name: &str, meta: &PluginMeta, args: Value) -> Result<Value, CallError> {
        let size = json_size(&args);
        if size > self.config.max_args_bytes {
            return Err(CallError::new(
                ErrorKind::TooLarge,
                format!(
                    "plugin '{name}': arguments are {size} bytes, over the limit of {} bytes (max_args_bytes)",
                    self.config.max_args_bytes
                ),
            ));
        }
        meta.schema.check(args).map_err(|violations| {
            let text: Vec<String> = violations.iter().map(ToString::to_string).collect();
            CallError::new(
                ErrorKind::Validation,
                format!("plugin '{name}': invalid arguments: {}", text.join("; ")),
            )
        })
    }

    async fn call_inner(
        &self,
        name: &str,
        args: Value,
        options: CallOptions,
    ) -> Result<Value, CallError> {
        let CallOptions {
            timeout,
            cancel,
            progress,
            patient,
        } = options;
        let plugin = self
            .discovery
            .find(name)
            .await
            .map_err(|e| CallError::new(ErrorKind::UnknownPlugin, e.to_string()))?;
        let meta = {
            let s = plugin.status();
            match (s.state, &s.meta) {
                (State::Enabled, Some(meta)) => meta.clone(),
                (State::Failed, _) => return Err(failed_error(&plugin.key, &s)),
                _ => return Err(not_enabled(name)),
            }
        };
        let args = self.validate(name, &meta, args)?;
        let timeout = timeout.unwrap_or_else(|| {
            Duration::from_secs_f64(self.config.timeout_for(&plugin.key, meta.timeout_s))
        });
        let deadline = Instant::now() + timeout;
        let hooks = Hooks { cancel, progress };
        let pydantic = meta.schema.source() == SchemaSource::Pydantic;
        let args = Arc::new(args);
        let params = RunParams {
            args: &args,
            pydantic,
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        };
        // A worker that died between calls is only noticed when the
        // request cannot be written; the call then goes to a new worker.
        let mut attempts = 0;
        let (worker, ended) = loop {
            attempts += 1;
            let lease = self
                .lease(&plugin, deadline, timeout, patient, &hooks)
                .await?;
            let worker = lease.worker().clone();
            let remaining = deadline.saturating_duration_since(Instant::now());
            let keep = Some(args.clone());
            let answer = worker
                .request_hooked(method::RUN, &params, keep, remaining, &hooks, Some(lease))
                .await;
            match Ended::of(&worker, answer).await {
                Ended::Died {
                    delivered: false, ..
                } if attempts < 2 => continue,
                ended => break (worker, ended),
            }
        };
        self.answer(&plugin, name, &args, worker, ended, timeout)
    }

    /// The caller's answer from how `run` ended in `worker`.
    fn answer(
        &self,
        plugin: &Plugin,
        name: &str,
        args: &Value,
        worker: Arc<Worker>,
        ended: Ended,
        timeout: Duration,
    ) -> Result<Value, CallError> {
        match ended {
            Ended::Returned(v, output) => {
                log_output(&plugin.key, output.as_ref());
                Ok(v)
            }
            Ended::Raised(e, output) => {
                log_output(&plugin.key, output.as_ref());
                Err(self.run_error(plugin, e, args, output.unwrap_or_default()))
            }
            Ended::Died {
                delivered: false, ..
            } => Err(CallError::new(
                ErrorKind::WorkerCrashed,
                format!(
                    "plugin '{name}': its worker ended before the call could be delivered, twice"
                ),
            )),
            Ended::Died { exit, .. } => Err(CallError {
                kind: ErrorKind::WorkerCrashed,
                message: format!(
                    "plugin '{name}': its worker ended during the call ({}){}",
                    exit.description,
                    dump_note(exit.dump.as_deref())
                ),
                dump: exit.dump.clone(),
            }),
            Ended::Abandoned(abandoned) => {
                self.watch_abandoned(worker, abandoned, timeout);
                Err(if abandoned.cancelled {
                    CallError::new(
                        ErrorKind::Cancelled,
                        format!("plugin '{name}': the call was cancelled by its caller"),
                    )
                } else {
                    CallError::new(
                        ErrorKind::Timeout,
                        format!(
                            "plugin '{name}' did not answer within {} s (timeout)",
                            timeout.as_secs_f64()
                        ),
                    )
                })
            }
        }
    }

    /// A call its caller abandoned (timeout, cancellation) is interrupted
    /// in the worker where Python allows; one still running after the
    /// grace means a stuck worker, which is killed. Until the call ends
    /// either way, its worker stays out of the pool.
    fn watch_abandoned(&self, worker: Arc<Worker>, abandoned: Abandoned, timeout: Duration) {
        let grace = Duration::from_secs_f64(self.config.kill_grace_s);
        let why = if abandoned.cancelled {
            "it was cancelled".to_string()
        } else {
            format!("its {} s timeout", timeout.as_secs_f64())
        };
        tokio::spawn(async move {
            if !worker.settled(abandoned.id, grace).await {
                worker.kill(&format!(
                    "a call was still running {} s after {why}",
                    grace.as_secs_f64()
                ));
            }
        });
    }

    /// A worker of the plugin's pool for one call: an idle one, one it
    /// starts (on first need, or replacing a crashed one, with backoff), or
    /// one freed by another call while this one waits in the queue.
    async fn lease(
        &self,
        plugin: &Arc<Plugin>,
        deadline: Instant,
        timeout: Duration,
        patient: bool,
        hooks: &Hooks,
    ) -> Result<Lease, CallError> {
        loop {
            let pool = plugin.pool();
            let handoff = match pool.checkout(patient) {
                Checkout::Ready(lease) => return Ok(lease),
                Checkout::Start(ticket) => Handoff::Start(ticket),
                Checkout::Busy => return Err(busy_error(&plugin.key, &pool)),
                // Enable, reload or disable replaced the pool meanwhile.
                Checkout::Retired => Handoff::Retired,
                Checkout::Wait(turn) => tokio::select! {
                    handoff = turn => handoff.unwrap_or(Handoff::Retired),
                    () = tokio::time::sleep_until(deadline.into()) => {
                        return Err(CallError::new(
                            ErrorKind::Timeout,
                            format!(
                                "plugin '{}' did not answer within {} s (timeout): its {} worker(s) stayed busy while the call waited in the queue",
                                plugin.key,
                                timeout.as_secs_f64(),
                                pool.size()
                            ),
                        ));
                    }
                    () = hooks.cancelled() => {
                        return Err(CallError::new(
                            ErrorKind::Cancelled,
                            format!("plugin '{}': the call was cancelled by its caller", plugin.key),
                        ));
                    }
                },
            };
            match handoff {
                Handoff::Worker(lease) => return Ok(lease),
                Handoff::Start(ticket) => return self.restart(plugin, deadline, ticket).await,
                Handoff::Retired => {
                    // Enable and reload install the new pool before they
                    // retire the old; disable and a failure change the
                    // state first. A retired pool still in place means
                    // the host is shutting down.
                    callable(plugin)?;
                    if Arc::ptr_eq(&plugin.pool(), &pool) {
                        return Err(CallError::new(
                            ErrorKind::Internal,
                            format!(
                                "plugin '{}' is stopping: greffon is shutting down",
                                plugin.key
                            ),
                        ));
                    }
                }
            }
        }
    }

    /// Starts a worker in the room `ticket` holds, after the backoff its
    /// recent crashes call for.
    async fn restart(
        &self,
        plugin: &Arc<Plugin>,
        deadline: Instant,
        ticket: Ticket,
    ) -> Result<Lease, CallError> {
        callable(plugin)?;
        let window = Duration::from_secs_f64(self.config.crash_window_s);
        let backoff = plugin.restart_backoff(window);
        if !backoff.is_zero() {
            if Instant::now() + backoff >= deadline {
                return Err(CallError::new(
                    ErrorKind::WorkerCrashed,
                    format!(
                        "plugin '{}': its worker crashed and restarts in {} ms, after this call's deadline",
                        plugin.key,
                        backoff.as_millis()
                    ),
                ));
            }
            tokio::time::sleep(backoff).await;
        }
        match self.lifecycle.activate(plugin, false).await {
            Ok(w) => Ok(ticket.fill(w)),
            Err(f) => Err(CallError {
                kind: ErrorKind::PluginFailed,
                message: format!(
                    "plugin '{}' could not start: {}{}",
                    plugin.key,
                    f.reason,
                    dump_note(f.dump.as_deref())
                ),
                dump: f.dump,
            }),
        }
    }

    /// Turns a worker's error answer to `run` into the call's error,
    /// writing a dump for unexpected exceptions.
    fn run_error(&self, plugin: &Plugin, e: WireError, args: &Value, output: Output) -> CallError {
        let name = &plugin.key;
        match e.kind {
            ErrorKind::Exception => {
                let hash = plugin.status().file_hash.clone();
                let dump =
                    (self.dumps).write_error(name, &hash, Phase::Run, Some(args), &e, Some(output));
                CallError {
                    kind: ErrorKind::Exception,
                    message: format!(
                        "plugin '{name}' raised {}{}",
                        exception_text(&e),
                        dump_note(dump.as_deref())
                    ),
                    dump,
                }
            }
            ErrorKind::Validation => CallError::new(
                e.kind,
                format!(
                    "plugin '{name}': invalid arguments: {}",
                    crate::redact::redact(&e.message)
                ),
            ),
            kind => CallError::new(
                kind,
                format!("plugin '{name}': {}", crate::redact::redact(&e.message)),
            ),
        }
    }
}

/// Refuses a call to a plugin that is not enabled (any more).
fn callable(plugin: &Plugin) -> Result<(), CallError> {
    let s = plugin.status();
    match s.state {
        State::Enabled => Ok(()),
        State::Failed => Err(failed_error(&plugin.key, &s)),
        State::Disabled => Err(not_enabled(&plugin.key)),
    }
}

fn not_enabled(name: &str) -> CallError {
    CallError::new(
        ErrorKind::NotEnabled,
        format!("plugin '{name}' is disabled; enable it with `greffon plugin enable {name}`"),
    )
}

/// The answer when every worker is busy and the queue is full.
fn busy_error(name: &str, pool: &Pool) -> CallError {
    let stats = pool.stats();
    CallError::new(
        ErrorKind::Busy,
        format!(
            "plugin '{name}' is busy: its {} worker(s) are serving calls and {} more wait (queue = {}); try again later, or raise [plugins.{name}] workers or queue",
            stats.size, stats.queued, stats.queue_limit
        ),
    )
}

/// The answer to a call on a failed plugin: why, and where the dump is.
pub(crate) fn failed_error(name: &str, status: &Status) -> CallError {
    let failure = status.failure.as_ref();
    let reason = failure.map_or("unknown", |f| f.reason.as_str());
    let dump = failure.and_then(|f| f.dump.clone());
    let at = dump_note(dump.as_deref());
    CallError {
        kind: ErrorKind::PluginFailed,
        message: format!("plugin '{name}' is failed: {reason}{at}"),
        dump,
    }
}

/// Bytes of `value` as JSON, counted without building the text.
fn json_size(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    match serde_json::to_writer(&mut count, value) {
        Ok(()) => count.0,
        Err(_) => usize::MAX,
    }
}
