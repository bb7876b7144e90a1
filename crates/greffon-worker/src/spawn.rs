//! Starting a worker: its channels, the interpreter started in its sandbox
//! from the spawner thread, and its `hello`.

use crate::frame::read_message;
use crate::output::{TAIL_BYTES, pump_output};
use crate::supervisor::Supervisor;
use crate::worker::{PendingMap, Shared, Worker};
use greffon_protocol::method::{self, Hello};
use greffon_protocol::{Message, PROTOCOL_VERSION};
use greffon_sandbox::Sandbox;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::sync::Notify;

/// How long a fresh interpreter may take to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(15);

/// What a worker needs to start.
#[derive(Debug, Clone)]
pub struct SpawnSpec {
    pub python: PathBuf,
    /// The materialized SDK ([`crate::sdk::materialize`]).
    pub sdk_dir: PathBuf,
    /// Registry name (or folder) of the plugin, for logs and dumps.
    pub plugin: String,
    pub plugin_dir: PathBuf,
    /// Largest frame accepted from the worker.
    pub max_frame: usize,
}

/// The sandbox a worker starts in, built by the host from what the plugin
/// was granted.
#[derive(Debug)]
pub struct Jail {
    pub sandbox: Sandbox,
    /// The worker's private temp folder (`TMPDIR`), removed at its exit.
    pub scratch: PathBuf,
    /// The bootstrap's no-exec filter, when `process` is not granted and
    /// the sandbox is on.
    pub noexec: Option<String>,
}

/// Why a worker could not be started.
#[derive(Debug, Clone)]
pub struct SpawnError {
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

/// The host's ends of a worker's two channels, and the worker's.
struct Channels {
    main: std::os::unix::net::UnixStream,
    side: std::os::unix::net::UnixStream,
    theirs: std::os::unix::net::UnixStream,
    side_theirs: std::os::unix::net::UnixStream,
}

impl Channels {
    fn new() -> io::Result<Channels> {
        let pair = || {
            let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
            ours.set_nonblocking(true)?;
            // Older kernels lack it: see `Support::refuse_passed_fds`.
            greffon_sandbox::refuse_passed_fds(&ours);
            Ok::<_, io::Error>((ours, theirs))
        };
        let (main, theirs) = pair()?;
        let (side, side_theirs) = pair()?;
        Ok(Channels {
            main,
            side,
            theirs,
            side_theirs,
        })
    }
}

/// The interpreter's command line and environment: nothing of the host's
/// environment (keys, tokens) leaks in.
fn command(
    spec: &SpawnSpec,
    scratch: &std::path::Path,
    noexec: Option<&str>,
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(&spec.python);
    cmd.arg("-I")
        .arg("-B")
        .arg("-c")
        .arg(crate::sdk::BOOTSTRAP)
        .arg(&spec.sdk_dir)
        .arg(noexec.unwrap_or(""))
        .current_dir(&spec.plugin_dir)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("LC_ALL", "C.UTF-8")
        .env("TMPDIR", scratch)
        .env("HOME", scratch)
        // Few allocator arenas, so RLIMIT_AS counts memory, not
        // per-thread reservations.
        .env("MALLOC_ARENA_MAX", "2")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Reads the worker's first frame, which must be a `hello` in this host's
/// protocol version.
async fn hello(
    rd: &mut tokio::net::unix::OwnedReadHalf,
    max_frame: usize,
) -> Result<Hello, String> {
    let first = tokio::time::timeout(HELLO_TIMEOUT, read_message(rd, max_frame)).await;
    let hello = match first {
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
    }?;
    if hello.protocol != PROTOCOL_VERSION {
        return Err(format!(
            "the worker speaks protocol {} but this host speaks {PROTOCOL_VERSION}",
            hello.protocol
        ));
    }
    Ok(hello)
}

/// Ends a worker that never said hello, keeping what it printed.
async fn abort(
    mut child: tokio::process::Child,
    pid: i32,
    scratch: &std::path::Path,
    message: String,
) -> SpawnError {
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
    let _ = std::fs::remove_dir_all(scratch);
    SpawnError { message, stderr }
}

impl Worker {
    /// Starts a worker in `jail`, waits for its `hello`, and hands its
    /// traffic and its end to `supervisor`.
    pub async fn spawn(
        spec: SpawnSpec,
        jail: Jail,
        supervisor: Arc<dyn Supervisor>,
    ) -> Result<Arc<Worker>, SpawnError> {
        let fail = |message: String| SpawnError {
            message,
            stderr: String::new(),
        };
        let channels =
            Channels::new().map_err(|e| fail(format!("cannot create the worker channel: {e}")))?;
        let (fd, side_fd) = (
            channels.theirs.as_raw_fd(),
            channels.side_theirs.as_raw_fd(),
        );
        let Jail {
            mut sandbox,
            scratch,
            noexec,
        } = jail;
        let enforced = sandbox.enforced();
        let mut cmd = command(&spec, &scratch, noexec.as_deref());
        // SAFETY: child_setup only makes async-signal-safe syscalls.
        unsafe {
            cmd.pre_exec(move || child_setup(fd, side_fd, &mut sandbox));
        }
        let mut child = crate::spawner::spawn(cmd).await.map_err(|e| {
            let _ = std::fs::remove_dir_all(&scratch);
            let sandboxed = if enforced { " in its sandbox" } else { "" };
            fail(format!(
                "cannot start Python '{}'{sandboxed}: {e}",
                spec.python.display()
            ))
        })?;
        let Channels {
            main,
            side,
            theirs,
            side_theirs,
        } = channels;
        // The worker holds its ends now: with ours closed, its exit reads
        // as end of file.
        drop((theirs, side_theirs));
        let pid = child.id().map(|p| p as i32).unwrap_or(0);
        let setup = || -> io::Result<_> {
            let (rd, wr) = tokio::net::UnixStream::from_std(main)?.into_split();
            // The side channel only carries host → worker frames.
            let _ = side.shutdown(std::net::Shutdown::Read);
            let (_, side_wr) = tokio::net::UnixStream::from_std(side)?.into_split();
            Ok((rd, wr, side_wr))
        };
        let (mut rd, wr, side_wr) =
            setup().map_err(|e| fail(format!("cannot set up the worker channel: {e}")))?;
        if let Err(message) = hello(&mut rd, spec.max_frame).await {
            return Err(abort(child, pid, &scratch, message).await);
        }
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
        tokio::spawn(crate::reader::read_loop(
            rd,
            child,
            pumps,
            shared.clone(),
            supervisor,
        ));
        Ok(Arc::new(Worker { shared }))
    }
}
