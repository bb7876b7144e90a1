//! One Python worker process and the framed channels to it.
//!
//! A [`Worker`] multiplexes requests by id: each caller registers a slot,
//! writes its frame and awaits its own answer, while one reader task
//! delivers answers, serves the worker's host-service requests, and, when
//! the channel closes, answers every call still in flight and writes the
//! crash dump.
//!
//! Two socketpairs, so that the common call costs no thread hand-off in
//! the worker:
//! - fd 3, the main channel: everything the worker sends, and requests the
//!   host sends while no other main-channel request is in flight. The
//!   worker's main thread reads it and serves each request itself.
//! - fd 4, the side channel (host → worker only): requests that overlap one
//!   already in flight, and the answers to host-service calls made by
//!   threads other than the main one (the main thread, busy with a
//!   main-channel request, reads its own answers on fd 3: no hand-off). A
//!   worker thread reads fd 4 and hands requests to a pool of threads, so
//!   overlapping calls run concurrently.

use crate::broker::NetAccess;
use crate::dump::{self, Dump, Phase};
use crate::jail::Jail;
use crate::pool::Lease;
use crate::services::{Caller, Services};
use greffon_core::Allowlist;
use greffon_protocol::method::{self, Hello, LogRecord, Progress};
use greffon_protocol::{
    FRAME_HEADER_LEN, Message, Output, PROTOCOL_VERSION, ResponseBody, decode_header, encode_frame,
    encode_request,
};
use greffon_sandbox::Sandbox;
use serde_json::Value;
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// How long a fresh interpreter may take to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(15);
/// Bytes of the worker's raw stdout/stderr kept for crash dumps.
const TAIL_BYTES: usize = 64 << 10;
/// Longest line of raw worker output written to the plugin log.
const LOG_LINE_BYTES: usize = 4 << 10;
/// Raw output one worker may write into the plugin log over its life; past
/// it only the crash-dump tail keeps the output, so a flood cannot fill
/// the disk.
const LOG_BUDGET_BYTES: usize = 4 << 20;

/// What a worker needs to start.
#[derive(Debug, Clone)]
pub(crate) struct SpawnSpec {
    pub python: PathBuf,
    pub sdk_dir: PathBuf,
    /// Registry name (or folder) of the plugin, for logs and dumps.
    pub plugin: String,
    pub plugin_dir: PathBuf,
    /// Where crash dumps go.
    pub dumps_dir: PathBuf,
    /// SHA-256 of `plugin.py`, written into dumps.
    pub file_hash: String,
    /// Largest frame accepted from the worker.
    pub max_frame: usize,
    /// The effective allowlist when `net` is granted.
    pub net: Option<Allowlist>,
    /// The secret names it may read (declared and granted).
    pub secrets: Vec<String>,
}

/// Why a worker is gone, shared with every call it was serving.
#[derive(Debug, Clone)]
pub(crate) struct Exit {
    /// "exited with code 1", "killed by signal 9 (SIGKILL)", ...
    pub description: String,
    /// The dump written for an unexpected exit.
    pub dump: Option<PathBuf>,
}

/// The answer to one request.
#[derive(Debug)]
pub(crate) enum Reply {
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
pub(crate) struct Abandoned {
    pub id: u64,
    pub cancelled: bool,
}

/// How the caller of a `run` follows it beyond its answer (the default:
/// not at all).
#[derive(Debug, Default)]
pub(crate) struct Hooks {
    pub cancel: Option<CancellationToken>,
    pub progress: Option<mpsc::UnboundedSender<Progress>>,
}

impl Hooks {
    /// Resolves when the caller cancels; never for a call that cannot be
    /// cancelled (no token is made for those: this is the call path).
    pub(crate) async fn cancelled(&self) {
        match &self.cancel {
            Some(token) => token.cancelled().await,
            None => std::future::pending().await,
        }
    }
}

struct Pending {
    /// Taken when the caller gives up (timeout): the slot stays until the
    /// worker answers, so a watchdog can tell the call is still running.
    tx: Option<oneshot::Sender<Reply>>,
    /// Sent on the main channel: its answer frees the main thread.
    on_main: bool,
    method: &'static str,
    /// A `run`'s arguments, kept for the crash dump.
    args: Option<Arc<Value>>,
    /// Where the plugin's `greffon.progress()` reports go.
    progress: Option<mpsc::UnboundedSender<Progress>>,
    /// The pool's hold on this worker for the call: released (the worker
    /// handed to the next call) by the reader the moment the answer
    /// arrives or the worker dies — not when the caller gets round to it,
    /// and not before for a call its caller abandoned.
    lease: Option<Lease>,
}

#[derive(Default)]
struct PendingMap {
    map: HashMap<u64, Pending>,
    /// Set once the worker is gone; no new request may register.
    closed: bool,
}

/// Called once when a worker ends without being asked to.
pub(crate) type OnCrash = Box<dyn Fn(&Exit) + Send + Sync>;

struct Shared {
    spec: SpawnSpec,
    pid: i32,
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    side: tokio::sync::Mutex<OwnedWriteHalf>,
    /// A request sent on the main channel is unanswered: the worker's main
    /// thread is busy with it, so further requests take the side channel.
    main_busy: AtomicBool,

    pending: Mutex<PendingMap>,
    next_id: AtomicU64,
    /// The host asked the worker to go; its exit is not a crash.
    closing: AtomicBool,
    /// A write to the channel failed: the worker is dead even if the
    /// reader has not noticed yet.
    broken: AtomicBool,
    /// Set when the host killed the worker itself, to say why in the dump.
    kill_reason: Mutex<Option<String>>,
    /// The process has been reaped: its pid may be reused, never signal it.
    reaped: AtomicBool,
    exit: OnceLock<Arc<Exit>>,
    exited: Notify,
    /// Signalled when a `run` is answered or the worker is gone: a call
    /// abandoned at its timeout waits on it for the worker to be free.
    run_done: Notify,
    stdout_tail: Mutex<Vec<u8>>,
    stderr_tail: Mutex<Vec<u8>>,
    /// The worker's private temp folder, removed once it has exited.
    scratch: PathBuf,
}

impl Shared {
    fn pending(&self) -> std::sync::MutexGuard<'_, PendingMap> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// SIGKILLs the worker's whole process group (it is a session leader),
    /// unless it was already reaped and its pid may belong to someone else.
    fn kill_group(&self) {
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
pub(crate) struct Worker {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("plugin", &self.shared.spec.plugin)
            .field("pid", &self.shared.pid)
            .finish_non_exhaustive()
    }
}

/// Why a worker could not be started.
#[derive(Debug, Clone)]
pub(crate) struct SpawnError {
    pub message: String,
    /// What the interpreter printed before failing.
    pub stderr: String,
}

/// Runs between fork and exec: only async-signal-safe syscalls, no
/// allocation, no panic.
fn child_setup(main: RawFd, side: RawFd, sandbox: &mut Sandbox) -> io::Result<()> {
    // SAFETY: plain syscall; nothing is allocated or locked.
    unsafe {
        // Its own session and process group: no controlling terminal
        // (no TIOCSTI), terminal signals do not reach it, and the host can
        // kill the whole group.
        if libc::setsid() < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    sandbox.apply(|| {
        // SAFETY: plain syscalls on integers.
        unsafe {
            // Moving main to 3 must not clobber side.
            let side = if side == 3 {
                libc::fcntl(side, libc::F_DUPFD_CLOEXEC, 5)
            } else {
                side
            };
            if side < 0 {
                return Err(io::Error::last_os_error());
            }
            place_fd(main, 3)?;
            place_fd(side, 4)?;
            // Nothing else the host holds open may reach the plugin (an
            // inherited fd bypasses Landlock). CLOEXEC, not close: std's
            // own error pipe must survive until exec.
            if libc::syscall(libc::SYS_close_range, 5u32, u32::MAX, CLOSE_RANGE_CLOEXEC) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    })
}

/// `close_range` flag (linux/close_range.h), absent from older libc crates.
const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;

/// Puts `fd` at `target` without close-on-exec.
///
/// # Safety
/// Only syscalls; callable between fork and exec.
unsafe fn place_fd(fd: RawFd, target: RawFd) -> io::Result<()> {
    // SAFETY: plain syscalls on integers.
    let rc = unsafe {
        if fd == target {
            // Already in place, but socketpair set close-on-exec.
            libc::fcntl(target, libc::F_SETFD, 0)
        } else {
            libc::dup2(fd, target)
        }
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A dead peer shows as end of file or as a reset, depending on timing.
fn is_closed(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
    )
}

async fn read_message<R: AsyncRead + Unpin>(
    rd: &mut R,
    max: usize,
) -> Result<Option<Message>, String> {
    let mut header = [0u8; FRAME_HEADER_LEN];
    match rd.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if is_closed(&e) => return Ok(None),
        Err(e) => return Err(format!("channel read failed: {e}")),
    }
    let len = decode_header(header, max).map_err(|e| e.to_string())?;
    let mut body = vec![0u8; len];
    match rd.read_exact(&mut body).await {
        Ok(_) => {}
        Err(e) if is_closed(&e) => return Ok(None),
        Err(e) => return Err(format!("channel read failed: {e}")),
    }
    Message::from_json(&body).map(Some)
}

/// A pidfd for `pid`, None when the kernel has none (the channel's end of
/// file then says the worker is gone).
fn pidfd(pid: i32) -> Option<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open takes integers; a valid result is a new fd we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: see above; the OwnedFd keeps it open for the AsyncFd's life.
    unsafe {
        let fd = std::os::fd::OwnedFd::from_raw_fd(fd as i32);
        tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE).ok()
    }
}

/// Waits until the pidfd says the process exited (forever without one).
async fn wait_readable(fd: Option<&tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>>) {
    match fd {
        Some(fd) => {
            let _ = fd.readable().await;
        }
        None => std::future::pending().await,
    }
}

fn describe_status(status: std::process::ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exited with code {code}");
    }
    match status.signal() {
        Some(sig) => {
            let name = match sig {
                libc::SIGKILL => " (SIGKILL)",
                libc::SIGSEGV => " (SIGSEGV)",
                libc::SIGABRT => " (SIGABRT)",
                libc::SIGTERM => " (SIGTERM)",
                libc::SIGXCPU => " (SIGXCPU)",
                _ => "",
            };
            format!("killed by signal {sig}{name}")
        }
        None => "ended".into(),
    }
}

fn push_tail(tail: &Mutex<Vec<u8>>, bytes: &[u8]) {
    let mut t = tail.lock().unwrap_or_else(|p| p.into_inner());
    t.extend_from_slice(bytes);
    if t.len() > TAIL_BYTES {
        let cut = t.len() - TAIL_BYTES;
        t.drain(..cut);
    }
}

fn tail_text(tail: &Mutex<Vec<u8>>) -> String {
    String::from_utf8_lossy(&tail.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
}

/// Copies one of the worker's raw output pipes into the plugin log (line
/// by line, lines cut at 4 KiB) and a bounded tail for crash dumps.
async fn pump_output<R: AsyncRead + Unpin>(mut pipe: R, shared: Arc<Shared>, stream: &'static str) {
    let mut buf = vec![0u8; 8192];
    let mut line: Vec<u8> = Vec::new();
    let plugin = shared.spec.plugin.clone();
    let mut budget = LOG_BUDGET_BYTES;
    let mut log = |bytes: &[u8]| {
        if budget == 0 {
            return;
        }
        budget = budget.saturating_sub(bytes.len());
        let text = String::from_utf8_lossy(bytes);
        tracing::info!(target: "plugin", plugin = %plugin, stream, "{}", text.trim_end());
        if budget == 0 {
            tracing::warn!(target: "plugin", plugin = %plugin, stream, "output log budget spent; further {stream} output of this worker is not logged");
        }
    };
    loop {
        let n = match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &buf[..n];
        let tail = if stream == "stdout" {
            &shared.stdout_tail
        } else {
            &shared.stderr_tail
        };
        push_tail(tail, chunk);
        for piece in chunk.split_inclusive(|&b| b == b'\n') {
            if line.len() < LOG_LINE_BYTES {
                let room = LOG_LINE_BYTES - line.len();
                line.extend_from_slice(&piece[..piece.len().min(room)]);
            }
            if piece.ends_with(b"\n") {
                log(&line);
                line.clear();
            }
        }
    }
    if !line.is_empty() {
        log(&line);
    }
}

fn log_record(plugin: &str, params: Value) {
    let Ok(r) = serde_json::from_value::<LogRecord>(params) else {
        tracing::warn!(target: "server", plugin, "worker sent a malformed log record");
        return;
    };
    macro_rules! emit {
        ($target:literal) => {
            match r.level.as_str() {
                "DEBUG" => tracing::debug!(target: $target, plugin, logger = %r.logger, "{}", r.message),
                "INFO" => tracing::info!(target: $target, plugin, logger = %r.logger, "{}", r.message),
                "WARNING" => tracing::warn!(target: $target, plugin, logger = %r.logger, "{}", r.message),
                _ => tracing::error!(target: $target, plugin, logger = %r.logger, "{}", r.message),
            }
        };
    }
    // tracing targets are constants, hence one arm per category.
    match r.category.as_str() {
        "server" => emit!("server"),
        "llm" => emit!("llm"),
        "audit" => emit!("audit"),
        _ => emit!("plugin"),
    }
}

impl Worker {
    /// Starts a worker and waits for its `hello`.
    pub(crate) async fn spawn(
        spec: SpawnSpec,
        jail: Jail,
        services: Arc<Services>,
        on_crash: Option<OnCrash>,
    ) -> Result<Arc<Worker>, SpawnError> {
        let fail = |message: String| SpawnError {
            message,
            stderr: String::new(),
        };
        let pair = || {
            let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
            ours.set_nonblocking(true)?;
            // Older kernels lack it: see `Support::refuse_passed_fds`.
            greffon_sandbox::refuse_passed_fds(&ours);
            Ok::<_, io::Error>((ours, theirs))
        };
        let channel_error = |e: io::Error| fail(format!("cannot create the worker channel: {e}"));
        let (ours, theirs) = pair().map_err(channel_error)?;
        let (side_ours, side_theirs) = pair().map_err(channel_error)?;
        let (fd, side_fd) = (theirs.as_raw_fd(), side_theirs.as_raw_fd());
        let Jail {
            mut sandbox,
            scratch,
            noexec,
        } = jail;
        let enforced = sandbox.enforced();
        let mut cmd = tokio::process::Command::new(&spec.python);
        cmd.arg("-I")
            .arg("-B")
            .arg("-c")
            .arg(crate::sdk::BOOTSTRAP)
            .arg(&spec.sdk_dir)
            .arg(noexec.as_deref().unwrap_or(""))
            .current_dir(&spec.plugin_dir)
            // Nothing of the host's environment (keys, tokens) leaks in.
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("LC_ALL", "C.UTF-8")
            .env("TMPDIR", &scratch)
            .env("HOME", &scratch)
            // Few allocator arenas, so RLIMIT_AS counts memory, not
            // per-thread reservations.
            .env("MALLOC_ARENA_MAX", "2")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // SAFETY: child_setup only makes async-signal-safe syscalls.
        unsafe {
            cmd.pre_exec(move || child_setup(fd, side_fd, &mut sandbox));
        }
        let spawned = crate::spawner::spawn(cmd).await;
        let mut child = spawned.map_err(|e| {
            let _ = std::fs::remove_dir_all(&scratch);
            fail(if enforced {
                format!(
                    "cannot start Python '{}' in its sandbox: {e}",
                    spec.python.display()
                )
            } else {
                format!("cannot start Python '{}': {e}", spec.python.display())
            })
        })?;
        drop(theirs);
        drop(side_theirs);

        let pid = child.id().map(|p| p as i32).unwrap_or(0);
        let stream = tokio::net::UnixStream::from_std(ours)
            .map_err(|e| fail(format!("cannot set up the worker channel: {e}")))?;
        let (mut rd, wr) = stream.into_split();
        // The side channel only carries host → worker frames.
        let _ = side_ours.shutdown(std::net::Shutdown::Read);
        let side = tokio::net::UnixStream::from_std(side_ours)
            .map_err(|e| fail(format!("cannot set up the worker channel: {e}")))?;
        let (_, side_wr) = side.into_split();

        let hello =
            tokio::time::timeout(HELLO_TIMEOUT, read_message(&mut rd, spec.max_frame)).await;
        let hello = match hello {
            Ok(Ok(Some(Message::Notification { method, params }))) if method == method::HELLO => {
                serde_json::from_value::<Hello>(params).map_err(|e| format!("malformed hello: {e}"))
            }
            Ok(Ok(Some(_))) => Err("the worker's first frame was not a hello".to_string()),
            Ok(Ok(None)) => Err("the worker exited before saying hello".to_string()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(format!(
                "the worker did not say hello within {} s",
                HELLO_TIMEOUT.as_secs()
            )),
        }
        .and_then(|h| {
            if h.protocol == PROTOCOL_VERSION {
                Ok(h)
            } else {
                Err(format!(
                    "the worker speaks protocol {} but this host speaks {PROTOCOL_VERSION}",
                    h.protocol
                ))
            }
        });
        let hello = match hello {
            Ok(h) => h,
            Err(message) => {
                if pid > 0 {
                    // SAFETY: plain syscall on the group we just created.
                    unsafe {
                        libc::killpg(pid, libc::SIGKILL);
                    }
                }
                let mut stderr = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let mut buf = Vec::new();
                    let _ = tokio::time::timeout(
                        Duration::from_secs(2),
                        (&mut e).take(TAIL_BYTES as u64).read_to_end(&mut buf),
                    )
                    .await;
                    stderr = String::from_utf8_lossy(&buf).into_owned();
                }
                let _ = child.wait().await;
                let _ = std::fs::remove_dir_all(&scratch);
                return Err(SpawnError { message, stderr });
            }
        };

        let shared = Arc::new(Shared {
            spec,
            pid,
            writer: tokio::sync::Mutex::new(wr),
            side: tokio::sync::Mutex::new(side_wr),
            main_busy: AtomicBool::new(false),
            pending: Mutex::new(PendingMap::default()),
            next_id: AtomicU64::new(1),
            closing: AtomicBool::new(false),
            broken: AtomicBool::new(false),
            kill_reason: Mutex::new(None),
            reaped: AtomicBool::new(false),
            exit: OnceLock::new(),
            exited: Notify::new(),
            run_done: Notify::new(),
            stdout_tail: Mutex::new(Vec::new()),
            stderr_tail: Mutex::new(Vec::new()),
            scratch,
        });
        let pumps = [
            child
                .stdout
                .take()
                .map(|p| tokio::spawn(pump_output(p, shared.clone(), "stdout"))),
            child
                .stderr
                .take()
                .map(|p| tokio::spawn(pump_output(p, shared.clone(), "stderr"))),
        ];
        let caller = Caller {
            plugin: shared.spec.plugin.clone(),
            python_version: hello.python,
            net: shared.spec.net.clone().map(NetAccess::new),
            secrets: shared.spec.secrets.clone(),
        };
        tokio::spawn(read_loop(
            rd,
            child,
            pumps,
            shared.clone(),
            services,
            caller,
            on_crash,
        ));
        Ok(Arc::new(Worker { shared }))
    }

    pub(crate) fn pid(&self) -> i32 {
        self.shared.pid
    }

    pub(crate) fn is_alive(&self) -> bool {
        self.shared.exit.get().is_none() && !self.shared.broken.load(Ordering::Acquire)
    }

    /// Sends a request and waits for its answer, at most `deadline`.
    /// `keep` is held for the crash dump should the worker die meanwhile.
    pub(crate) async fn request<P: serde::Serialize + ?Sized>(
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
    pub(crate) async fn request_hooked<P: serde::Serialize + ?Sized>(
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
    pub(crate) async fn settled(&self, id: u64, limit: Duration) -> bool {
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
    fn wait_exit_now(&self) -> Arc<Exit> {
        self.shared.exit.get().cloned().unwrap_or_else(|| {
            Arc::new(Exit {
                description: "the worker's channel closed".into(),
                dump: None,
            })
        })
    }

    /// Waits until the worker is gone.
    pub(crate) async fn wait_exit(&self) -> Arc<Exit> {
        loop {
            let notified = self.shared.exited.notified();
            if let Some(e) = self.shared.exit.get() {
                return e.clone();
            }
            notified.await;
        }
    }

    /// Whether request `id` is still being served.
    pub(crate) fn is_pending(&self, id: u64) -> bool {
        let pending = self.shared.pending();
        pending.map.contains_key(&id)
    }

    /// Kills the worker's whole process group, saying why in its dump.
    pub(crate) fn kill(&self, reason: &str) {
        *self
            .shared
            .kill_reason
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(reason.to_string());
        self.shared.kill_group();
    }

    /// Kills the worker (see [`Worker::kill`]) and waits until it is gone.
    pub(crate) async fn kill_and_wait(&self, reason: &str) -> Arc<Exit> {
        self.kill(reason);
        self.wait_exit().await
    }

    /// Asks the worker to exit, then kills its group if it lingers. Its exit
    /// is not a crash.
    pub(crate) async fn shutdown(&self, grace: Duration) {
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

async fn read_loop(
    rd: OwnedReadHalf,
    mut child: tokio::process::Child,
    pumps: [Option<tokio::task::JoinHandle<()>>; 2],
    shared: Arc<Shared>,
    services: Arc<Services>,
    caller: Caller,
    on_crash: Option<OnCrash>,
) {
    let caller = Arc::new(caller);
    // One read syscall usually brings a whole frame, header and body.
    let mut rd = tokio::io::BufReader::with_capacity(64 << 10, rd);
    // Readable once the worker has exited, before it is reaped: a child it
    // forked (with `process`) may keep the channel open after its death.
    let exited = pidfd(shared.pid);
    let end = loop {
        let next = tokio::select! {
            // Frames the worker wrote before exiting are read first.
            biased;
            m = read_message(&mut rd, shared.spec.max_frame) => m,
            _ = wait_readable(exited.as_ref()) => break None,
        };
        match next {
            Ok(None) => break None,
            Err(e) => break Some(format!("broke the protocol: {e}")),
            Ok(Some(Message::Response { id, body, output })) => {
                let slot = shared.pending().map.remove(&id);
                if let Some(mut slot) = slot {
                    if slot.on_main {
                        shared.main_busy.store(false, Ordering::Release);
                    }
                    // The worker is free: the next call may go.
                    drop(slot.lease.take());
                    if let Some(tx) = slot.tx {
                        let _ = tx.send(Reply::Response { body, output });
                    }
                    if slot.method == method::RUN {
                        shared.run_done.notify_waiters();
                    }
                }
            }
            Ok(Some(Message::Request {
                id,
                method,
                params,
                reply_on_main,
            })) => {
                let shared = shared.clone();
                let services = services.clone();
                let caller = caller.clone();
                tokio::spawn(async move {
                    let body = match services.handle(&caller, &method, params).await {
                        Ok(v) => ResponseBody::Ok(v),
                        Err(e) => ResponseBody::Err(e),
                    };
                    let frame = encode_frame(
                        &Message::Response {
                            id,
                            body,
                            output: None,
                        }
                        .to_json(),
                    );
                    // The worker's main thread, busy with the host's
                    // request, reads its own answer on the main channel
                    // (the host sends nothing else there meanwhile); any
                    // other thread gets it through the side channel.
                    let mut w = if reply_on_main {
                        shared.writer.lock().await
                    } else {
                        shared.side.lock().await
                    };
                    let _ = w.write_all(&frame).await;
                });
            }
            Ok(Some(Message::Notification { method, params })) => {
                if method == method::LOG {
                    log_record(&shared.spec.plugin, params);
                } else if method == method::PROGRESS {
                    forward_progress(&shared, params);
                }
            }
        }
    };
    if end.is_some() {
        // A worker that writes garbage is not trusted to stop by itself.
        shared.kill_group();
    }
    // The leader has exited but is not reaped yet, so its group id still
    // names its group: whatever it left behind dies with it.
    if exited.is_some() {
        wait_readable(exited.as_ref()).await;
        shared.kill_group();
    }
    let status = child.wait().await;
    shared.reaped.store(true, Ordering::Release);
    // Its children (with `process`) may still hold it; they die with the
    // group below or have already.
    let _ = std::fs::remove_dir_all(&shared.scratch);
    for pump in pumps.into_iter().flatten() {
        // A grandchild may hold the pipes open; do not wait for it forever.
        let _ = tokio::time::timeout(Duration::from_millis(500), pump).await;
    }
    let expected = shared.closing.load(Ordering::Acquire);
    let kill_reason = shared
        .kill_reason
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let status_text = match &status {
        Ok(s) => describe_status(*s),
        Err(e) => format!("could not be waited for: {e}"),
    };
    let description = match (end, kill_reason) {
        (Some(protocol), _) => format!("{protocol}; the worker was killed"),
        (None, Some(reason)) => format!("{reason}; the worker {status_text}"),
        (None, None) => format!("the worker {status_text}"),
    };
    let in_flight: Vec<Pending> = {
        let mut pending = shared.pending();
        pending.closed = true;
        shared.broken.store(true, Ordering::Release);
        pending.map.drain().map(|(_, p)| p).collect()
    };
    let dump = if expected {
        None
    } else {
        let args: Vec<Value> = in_flight
            .iter()
            .filter_map(|p| {
                let args = p.args.as_deref()?;
                Some(serde_json::json!({"method": p.method, "args": args}))
            })
            .collect();
        let args = (!args.is_empty()).then_some(Value::Array(args));
        let stdout = tail_text(&shared.stdout_tail);
        let stderr = tail_text(&shared.stderr_tail);
        let d = Dump {
            plugin: &shared.spec.plugin,
            file_hash: &shared.spec.file_hash,
            phase: Phase::WorkerExit,
            args: args.as_ref(),
            error: &description,
            traceback: Some(&status_text),
            stdout: &stdout,
            stderr: &stderr,
        };
        dump::write_logged(&shared.spec.dumps_dir, &d)
    };
    if !expected {
        tracing::warn!(
            target: "server",
            plugin = %shared.spec.plugin,
            pid = shared.pid,
            dump = ?dump,
            "worker ended unexpectedly: {description}"
        );
    }
    let exit = Arc::new(Exit { description, dump });
    // The registry learns of the crash before any caller does, so a caller
    // that sees its call fail also sees the plugin's new state.
    if !expected && let Some(cb) = on_crash {
        cb(&exit);
    }
    let _ = shared.exit.set(exit.clone());
    shared.exited.notify_waiters();
    shared.run_done.notify_waiters();
    for p in in_flight {
        if let Some(tx) = p.tx {
            let _ = tx.send(Reply::Gone(exit.clone()));
        }
    }
}

/// Hands a `greffon.progress()` report to the caller of its request, if
/// it asked for them; a malformed or stray report is dropped.
fn forward_progress(shared: &Shared, params: Value) {
    let Ok(params) = serde_json::from_value::<method::ProgressParams>(params) else {
        return;
    };
    let pending = shared.pending();
    if let Some(tx) = pending
        .map
        .get(&params.id)
        .and_then(|p| p.progress.as_ref())
    {
        let _ = tx.send(params.report);
    }
}

/// Reads the plugin's `plugin.py` hash for dumps.
pub(crate) fn file_hash(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    match std::fs::read(path) {
        Ok(bytes) => crate::sdk::hex(&Sha256::digest(&bytes)),
        Err(_) => "(unreadable)".into(),
    }
}
