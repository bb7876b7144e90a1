//! Starting a worker: its channels, the interpreter started in its sandbox
//! from the spawner thread, and its `hello`.

use crate::frame::read_message;
use crate::output::{TAIL_BYTES, pump_output};
use crate::supervisor::Supervisor;
use crate::template::Template;
use crate::worker::{PendingMap, Shared, Worker};
use greffon_protocol::method::{self, Hello};
use greffon_protocol::{Message, PROTOCOL_VERSION};
use greffon_sandbox::Sandbox;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
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
    /// Fork it from the interpreter's template process rather than start
    /// the interpreter afresh (only when the sandbox is on: the template
    /// hands the worker the same rules to apply itself; without one, or
    /// with `sandbox = "off"`, the worker is started with exec).
    pub template: bool,
    /// The interpreter's packages are a plugin's own (its environment):
    /// it starts with `-S`, and `site` (which runs `.pth` files) runs only
    /// once the worker is sealed, never in the template or before the
    /// no-exec filter.
    pub site_in_sandbox: bool,
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
pub(crate) const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;

/// Puts `fd` at `target` without close-on-exec.
///
/// # Safety
/// Only syscalls; callable between fork and exec.
pub(crate) unsafe fn place_fd(fd: RawFd, target: RawFd) -> io::Result<()> {
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

/// A worker's whole environment: nothing of the host's (keys, tokens)
/// leaks in.
fn worker_env(scratch: &std::path::Path) -> Vec<(&'static str, String)> {
    let scratch = scratch.to_string_lossy().into_owned();
    vec![
        ("PATH", "/usr/local/bin:/usr/bin:/bin".into()),
        ("LC_ALL", "C.UTF-8".into()),
        ("TMPDIR", scratch.clone()),
        ("HOME", scratch),
        // Few allocator arenas, so RLIMIT_AS counts memory, not
        // per-thread reservations.
        ("MALLOC_ARENA_MAX", "2".into()),
    ]
}

/// The interpreter's command line, started with exec.
fn command(
    spec: &SpawnSpec,
    scratch: &std::path::Path,
    noexec: Option<&str>,
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(&spec.python);
    cmd.arg("-I")
        .arg("-B")
        // `-s` (no user site, already implied by `-I`) keeps the command
        // line's shape.
        .arg(if spec.site_in_sandbox { "-S" } else { "-s" })
        .arg("-c")
        .arg(crate::sdk::BOOTSTRAP)
        .arg(&spec.sdk_dir)
        .arg(noexec.unwrap_or(""))
        .current_dir(&spec.plugin_dir)
        .env_clear()
        .envs(worker_env(scratch))
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
async fn abort(started: Started, scratch: &std::path::Path, message: String) -> SpawnError {
    let Started {
        process,
        pid,
        stderr,
        ..
    } = started;
    if pid > 0 {
        // SAFETY: plain syscall on the group we just created.
        unsafe {
            libc::killpg(pid, libc::SIGKILL);
        }
    }
    let mut text = String::new();
    if let Some(mut e) = stderr {
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            (&mut e).take(TAIL_BYTES as u64).read_to_end(&mut buf),
        )
        .await;
        text = String::from_utf8_lossy(&buf).into_owned();
    }
    let _ = process.wait().await;
    let _ = std::fs::remove_dir_all(scratch);
    SpawnError {
        message,
        stderr: text,
    }
}

/// A worker's raw output pipe, as the host reads it.
type OutputPipe = Box<dyn tokio::io::AsyncRead + Unpin + Send>;

/// A worker process just started, before its hello.
struct Started {
    process: Process,
    pid: i32,
    stdout: Option<OutputPipe>,
    stderr: Option<OutputPipe>,
}

/// Starts the interpreter with exec, from the spawner thread, the sandbox
/// applied between fork and exec.
async fn exec_start(
    spec: &SpawnSpec,
    jail: Jail,
    fd: RawFd,
    side_fd: RawFd,
) -> Result<Started, String> {
    let Jail {
        mut sandbox,
        scratch,
        noexec,
    } = jail;
    let enforced = sandbox.enforced();
    let mut cmd = command(spec, &scratch, noexec.as_deref());
    // SAFETY: child_setup only makes async-signal-safe syscalls.
    unsafe {
        cmd.pre_exec(move || child_setup(fd, side_fd, &mut sandbox));
    }
    let mut child = crate::spawner::spawn(cmd).await.map_err(|e| {
        let sandboxed = if enforced { " in its sandbox" } else { "" };
        format!(
            "cannot start Python '{}'{sandboxed}: {e}",
            spec.python.display()
        )
    })?;
    Ok(Started {
        pid: child.id().map(|p| p as i32).unwrap_or(0),
        stdout: child.stdout.take().map(|p| Box::new(p) as OutputPipe),
        stderr: child.stderr.take().map(|p| Box::new(p) as OutputPipe),
        process: Process::Exec(child),
    })
}

/// Has the template fork the worker, which applies the same sandbox to
/// itself before it imports anything of the plugin.
async fn fork_start(
    spec: &SpawnSpec,
    template: Arc<Template>,
    jail: Jail,
    fd: RawFd,
    side_fd: RawFd,
) -> Result<Started, String> {
    let Jail {
        sandbox,
        scratch,
        noexec,
    } = jail;
    let (out_r, out_w) = pipe().map_err(|e| format!("cannot create the worker's pipes: {e}"))?;
    let (err_r, err_w) = pipe().map_err(|e| format!("cannot create the worker's pipes: {e}"))?;
    let rules = sandbox.into_child_rules();
    let mut fds = vec![fd, side_fd, out_w.as_raw_fd(), err_w.as_raw_fd()];
    if let Some(ruleset) = &rules.ruleset {
        fds.push(ruleset.as_raw_fd());
    }
    let request = serde_json::json!({
        "op": "fork",
        "cwd": spec.plugin_dir,
        "env": worker_env(&scratch),
        "rlimits": rules.rlimits,
        "drop_caps": rules.drop_caps,
        "filters": rules.filters,
        "noexec": noexec.unwrap_or_default(),
    });
    let pid = template
        .fork(request, &fds)
        .await
        .map_err(|e| format!("the worker template could not start a worker: {e}"))?;
    drop((out_w, err_w, rules));
    let reader = |fd: OwnedFd| -> Result<Option<OutputPipe>, String> {
        let pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(fd)
            .map_err(|e| format!("cannot read the worker's output: {e}"))?;
        Ok(Some(Box::new(pipe)))
    };
    Ok(Started {
        pid,
        stdout: reader(out_r)?,
        stderr: reader(err_r)?,
        process: Process::Forked { pid, template },
    })
}

/// A pipe: (read end, write end), both close-on-exec.
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both are new descriptors owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The worker's process, as the host holds it.
pub(crate) enum Process {
    /// Started with exec: greffon's own child.
    Exec(tokio::process::Child),
    /// Forked by the template: its child, reaped through it.
    Forked { pid: i32, template: Arc<Template> },
}

impl Process {
    /// Waits for the process to end (reaps it): its status.
    pub(crate) async fn wait(self) -> io::Result<std::process::ExitStatus> {
        match self {
            Process::Exec(mut child) => child.wait().await,
            Process::Forked { pid, template } => template.reap(pid).await,
        }
    }
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
        let scratch = jail.scratch.clone();
        let template = if spec.template && jail.sandbox.enforced() {
            Template::get(&spec)
                .await
                .map_err(|e| tracing::warn!(target: "server", plugin = %spec.plugin, "no worker template ({e}); starting the worker with exec"))
                .ok()
        } else {
            None
        };
        let started = match template {
            Some(t) => fork_start(&spec, t, jail, fd, side_fd).await,
            None => exec_start(&spec, jail, fd, side_fd).await,
        };
        let mut started = started.map_err(|message| {
            let _ = std::fs::remove_dir_all(&scratch);
            fail(message)
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
        let pid = started.pid;
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
            return Err(abort(started, &scratch, message).await);
        }
        let shared = Arc::new(Shared::new(spec, pid, wr, side_wr, scratch));
        let pumps = [
            started
                .stdout
                .take()
                .map(|p| tokio::spawn(pump_output(p, shared.clone(), "stdout"))),
            started
                .stderr
                .take()
                .map(|p| tokio::spawn(pump_output(p, shared.clone(), "stderr"))),
        ];
        tokio::spawn(crate::reader::read_loop(
            rd,
            started.process,
            pumps,
            shared.clone(),
            supervisor,
        ));
        Ok(Arc::new(Worker { shared }))
    }
}

impl Shared {
    fn new(
        spec: SpawnSpec,
        pid: i32,
        writer: tokio::net::unix::OwnedWriteHalf,
        side: tokio::net::unix::OwnedWriteHalf,
        scratch: PathBuf,
    ) -> Shared {
        Shared {
            spec,
            pid,
            writer: tokio::sync::Mutex::new(writer),
            side: tokio::sync::Mutex::new(side),
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
        }
    }
}
