//! One Python worker process, seen from the host: requests multiplexed by
//! id over its framed channels, its exit, and the ways to end it.
//!
//! A [`Worker`] multiplexes requests by id: each caller registers a slot,
//! writes its frame and awaits its own answer, while one reader task
//! (`reader`) delivers answers, serves the worker's host-service requests,
//! and, when the channel closes, answers every call still in flight and
//! has the crash reported.
//!
//! Two socketpairs, so that the common call costs no thread hand-off in
//! the worker:
//! - fd 3, the main channel: everything the worker sends, and requests the
//!   host sends while no other main-channel request is in flight. The
//!   worker's main thread reads it and serves each request itself.
//! - fd 4, the side channel (host → worker only): requests that overlap one
//!   already in flight (a `stop()` or a cancellation while a call runs),
//!   and the answers to host-service calls made by threads other than the
//!   main one (the main thread, busy with a main-channel request, reads its
//!   own answers on fd 3: no hand-off).

use crate::pool::Lease;
use crate::spawn::SpawnSpec;
use greffon_protocol::method::{self, Progress};
use greffon_protocol::{Message, Output, ResponseBody, encode_frame, encode_request};
use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Why a worker is gone, shared with every call it was serving.
#[derive(Debug, Clone)]
pub struct Exit {
    /// "exited with code 1", "killed by signal 9 (SIGKILL)", ...
    pub description: String,
    /// The dump written for an unexpected exit.
    pub dump: Option<PathBuf>,
}

/// The answer to one request.
#[derive(Debug)]
pub enum Reply {
    Response {
        body: ResponseBody,
        output: Option<Output>,
    },
    Gone(Arc<Exit>),
    /// The worker was already gone: the request never reached it, so it
    /// may safely be sent to a new worker.
    NotDelivered,
}

/// A request the caller stopped waiting for: its deadline passed, or it
/// was cancelled (the worker was then asked to interrupt it).
#[derive(Debug, Clone, Copy)]
pub struct Abandoned {
    pub id: u64,
    pub cancelled: bool,
}

/// How the caller of a `run` follows it beyond its answer (the default:
/// not at all).
#[derive(Debug, Default)]
pub struct Hooks {
    pub cancel: Option<CancellationToken>,
    pub progress: Option<mpsc::UnboundedSender<Progress>>,
}

impl Hooks {
    /// Resolves when the caller cancels; never for a call that cannot be
    /// cancelled (no token is made for those: this is the call path).
    pub async fn cancelled(&self) {
        match &self.cancel {
            Some(token) => token.cancelled().await,
            None => std::future::pending().await,
        }
    }
}

pub(crate) struct Pending {
    /// Taken when the caller gives up (timeout): the slot stays until the
    /// worker answers, so a watchdog can tell the call is still running.
    pub(crate) tx: Option<oneshot::Sender<Reply>>,
    /// Sent on the main channel: its answer frees the main thread.
    pub(crate) on_main: bool,
    pub(crate) method: &'static str,
    /// A `run`'s arguments, kept for the crash dump.
    pub(crate) args: Option<Arc<Value>>,
    /// Where the plugin's `greffon.progress()` reports go.
    pub(crate) progress: Option<mpsc::UnboundedSender<Progress>>,
    /// The pool's hold on this worker for the call: released (the worker
    /// handed to the next call) by the reader the moment the answer
    /// arrives or the worker dies — not when the caller gets round to it,
    /// and not before for a call its caller abandoned.
    pub(crate) lease: Option<Lease>,
}

#[derive(Default)]
pub(crate) struct PendingMap {
    pub(crate) map: HashMap<u64, Pending>,
    /// Set once the worker is gone; no new request may register.
    pub(crate) closed: bool,
}

pub(crate) struct Shared {
    pub(crate) spec: SpawnSpec,
    pub(crate) pid: i32,
    pub(crate) writer: tokio::sync::Mutex<OwnedWriteHalf>,
    pub(crate) side: tokio::sync::Mutex<OwnedWriteHalf>,
    /// A request sent on the main channel is unanswered: the worker's main
    /// thread is busy with it, so further requests take the side channel.
    pub(crate) main_busy: AtomicBool,

    pub(crate) pending: Mutex<PendingMap>,
    pub(crate) next_id: AtomicU64,
    /// The host asked the worker to go; its exit is not a crash.
    pub(crate) closing: AtomicBool,
    /// A write to the channel failed: the worker is dead even if the
    /// reader has not noticed yet.
    pub(crate) broken: AtomicBool,
    /// Set when the host killed the worker itself, to say why in the dump.
    pub(crate) kill_reason: Mutex<Option<String>>,
    /// The process has been reaped: its pid may be reused, never signal it.
    pub(crate) reaped: AtomicBool,
    pub(crate) exit: OnceLock<Arc<Exit>>,
    pub(crate) exited: Notify,
    /// Signalled when a `run` is answered or the worker is gone: a call
    /// abandoned at its timeout waits on it for the worker to be free.
    pub(crate) run_done: Notify,
    pub(crate) stdout_tail: Mutex<Vec<u8>>,
    pub(crate) stderr_tail: Mutex<Vec<u8>>,
    /// The worker's private temp folder, removed once it has exited.
    pub(crate) scratch: PathBuf,
}

impl Shared {
    pub(crate) fn pending(&self) -> std::sync::MutexGuard<'_, PendingMap> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// SIGKILLs the worker's whole process group (it is a session leader),
    /// unless it was already reaped and its pid may belong to someone else.
    pub(crate) fn kill_group(&self) {
        // A pid of 0 would name greffon's own group.
        if self.pid > 0 && !self.reaped.load(Ordering::Acquire) {
            // SAFETY: plain syscall on a group we created.
            unsafe {
                libc::killpg(self.pid, libc::SIGKILL);
            }
        }
    }
}

/// A live worker process.
pub struct Worker {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("plugin", &self.shared.spec.plugin)
            .field("pid", &self.shared.pid)
            .finish_non_exhaustive()
    }
}

impl Worker {
    pub fn pid(&self) -> i32 {
        self.shared.pid
    }

    pub fn is_alive(&self) -> bool {
        self.shared.exit.get().is_none() && !self.shared.broken.load(Ordering::Acquire)
    }

    /// Sends a request and waits for its answer, at most `deadline`.
    /// `keep` is held for the crash dump should the worker die meanwhile.
    pub async fn request<P: serde::Serialize + ?Sized>(
        &self,
        method: &'static str,
        params: &P,
        keep: Option<Arc<Value>>,
        deadline: Duration,
    ) -> Result<Reply, Abandoned> {
        self.request_hooked(method, params, keep, deadline, &Hooks::default(), None)
            .await
    }

    /// [`Worker::request`], cancellable and with progress reports; `lease`
    /// is released when the worker is done with the request.
    pub async fn request_hooked<P: serde::Serialize + ?Sized>(
        &self,
        method: &'static str,
        params: &P,
        keep: Option<Arc<Value>>,
        deadline: Duration,
        hooks: &Hooks,
        lease: Option<Lease>,
    ) -> Result<Reply, Abandoned> {
        let (tx, rx) = oneshot::channel();
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let on_main = !self.shared.main_busy.swap(true, Ordering::AcqRel);
        {
            let mut pending = self.shared.pending();
            if pending.closed {
                if on_main {
                    self.shared.main_busy.store(false, Ordering::Release);
                }
                return Ok(Reply::NotDelivered);
            }
            pending.map.insert(
                id,
                Pending {
                    tx: Some(tx),
                    on_main,
                    method,
                    args: keep,
                    progress: hooks.progress.clone(),
                    lease,
                },
            );
        }
        let frame = encode_request(id, method, params);
        let sent = if on_main {
            self.shared.writer.lock().await.write_all(&frame).await
        } else {
            self.shared.side.lock().await.write_all(&frame).await
        };
        if sent.is_err() {
            // The peer end is closed: the worker died before this request.
            self.shared.broken.store(true, Ordering::Release);
            let mut pending = self.shared.pending();
            // Whether or not the reader already answered the slot, the
            // worker never saw this request.
            pending.map.remove(&id);
            return Ok(Reply::NotDelivered);
        }
        let cancelled = tokio::select! {
            answer = tokio::time::timeout(deadline, rx) => match answer {
                Ok(Ok(reply)) => return Ok(reply),
                // The sender is only dropped after the map is closed.
                Ok(Err(_)) => return Ok(Reply::Gone(self.wait_exit_now())),
                Err(_) => false,
            },
            () = hooks.cancelled() => true,
        };
        {
            let mut pending = self.shared.pending();
            if let Some(slot) = pending.map.get_mut(&id) {
                slot.tx = None;
                slot.progress = None;
            }
        }
        if cancelled {
            let note = Message::Notification {
                method: method::CANCEL.into(),
                params: serde_json::json!(method::Cancel { id }),
            };
            // The side channel: the worker's main thread may be the one
            // busy with this request. A worker already gone needs nothing.
            let _ = self
                .shared
                .side
                .lock()
                .await
                .write_all(&encode_frame(&note.to_json()))
                .await;
        }
        Err(Abandoned { id, cancelled })
    }

    /// Waits until request `id` is answered or the worker is gone, at most
    /// `limit`; false if it still runs then.
    pub async fn settled(&self, id: u64, limit: Duration) -> bool {
        let wait = async {
            loop {
                // Registered before the check, so an answer in between
                // still wakes this wait.
                let done = self.shared.run_done.notified();
                tokio::pin!(done);
                done.as_mut().enable();
                if !self.is_pending(id) {
                    return;
                }
                done.await;
            }
        };
        tokio::time::timeout(limit, wait).await.is_ok()
    }

    /// The exit record, for callers that learnt the worker is gone.
    pub(crate) fn wait_exit_now(&self) -> Arc<Exit> {
        self.shared.exit.get().cloned().unwrap_or_else(|| {
            Arc::new(Exit {
                description: "the worker's channel closed".into(),
                dump: None,
            })
        })
    }

    /// Waits until the worker is gone.
    pub async fn wait_exit(&self) -> Arc<Exit> {
        loop {
            let notified = self.shared.exited.notified();
            if let Some(e) = self.shared.exit.get() {
                return e.clone();
            }
            notified.await;
        }
    }

    /// Whether request `id` is still being served.
    pub fn is_pending(&self, id: u64) -> bool {
        let pending = self.shared.pending();
        pending.map.contains_key(&id)
    }

    /// Kills the worker's whole process group, saying why in its dump.
    pub fn kill(&self, reason: &str) {
        *self
            .shared
            .kill_reason
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(reason.to_string());
        self.shared.kill_group();
    }

    /// Kills the worker (see [`Worker::kill`]) and waits until it is gone.
    pub async fn kill_and_wait(&self, reason: &str) -> Arc<Exit> {
        self.kill(reason);
        self.wait_exit().await
    }

    /// Asks the worker to exit, then kills its group if it lingers. Its exit
    /// is not a crash.
    pub async fn shutdown(&self, grace: Duration) {
        self.shared.closing.store(true, Ordering::Release);
        if self.is_alive() {
            let _ = self
                .request(method::SHUTDOWN, &Value::Null, None, grace)
                .await;
            if tokio::time::timeout(grace, self.wait_exit()).await.is_err() {
                self.shared.kill_group();
            }
        }
        // The whole group goes, including anything the plugin started.
        self.shared.kill_group();
        self.wait_exit().await;
    }
}
