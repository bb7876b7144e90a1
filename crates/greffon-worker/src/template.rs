//! The template process: one per interpreter and SDK, started on first
//! need, which has imported the SDK and the modules every worker needs and
//! forks workers on request (`python/greffon/template.py`). A forked worker
//! applies its own sandbox — the same [`greffon_sandbox::ChildRules`] a
//! worker started with exec gets — before it reads anything of its plugin.
//!
//! The template holds no grant: it runs no plugin code, gets each
//! worker's descriptors only to hand them to that worker (and closes them
//! once it has forked), and a worker closes everything but its own five.
//! It is forked from the spawner thread with the parent-death signal, so
//! it dies with the host; its workers die with it (their own parent-death
//! signal). It is watched through a pidfd: a dead template is logged and
//! forgotten, and the next worker start begins a new one.
//!
//! The control socket is a `SOCK_SEQPACKET` pair: one JSON message per
//! request or answer, descriptors passed with the request. One request at
//! a time; each is short (a fork, or a wait for a worker already seen
//! exiting).

use crate::SpawnSpec;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// What the template process runs.
const BOOTSTRAP: &str =
    "import sys; sys.path.insert(0, sys.argv[1]); from greffon.template import main; main()";

/// How long the template may take to answer (its start included).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(15);

/// Largest answer the template sends (a pid or a status).
const ANSWER_BYTES: usize = 4096;

/// The registry key of a template: its interpreter, SDK folder, and
/// whether `site` is left to the workers ([`SpawnSpec::site_in_sandbox`]).
type Key = (PathBuf, PathBuf, bool);

/// A running template.
pub(crate) struct Template {
    key: Key,
    pid: i32,
    /// The host's end of the control socket (blocking, with a receive
    /// timeout).
    ctl: OwnedFd,
    /// Held from a request to its answer (requests are rare: one per
    /// worker start and end).
    turn: tokio::sync::Mutex<()>,
    /// The template itself, to tell whether it still runs.
    process: Mutex<tokio::process::Child>,
}

impl std::fmt::Debug for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Template").field("pid", &self.pid).finish()
    }
}

type Registry = tokio::sync::Mutex<HashMap<Key, Arc<Template>>>;

fn registry() -> &'static Registry {
    static TEMPLATES: OnceLock<Registry> = OnceLock::new();
    TEMPLATES.get_or_init(Default::default)
}

impl Template {
    /// The live template for `spec`'s interpreter and SDK, started if
    /// there is none or it died.
    pub(crate) async fn get(spec: &SpawnSpec) -> io::Result<Arc<Template>> {
        let python = &spec.python;
        let key = (python.clone(), spec.sdk_dir.clone(), spec.site_in_sandbox);
        let mut templates = registry().lock().await;
        if let Some(t) = templates.get(&key) {
            if t.alive() {
                return Ok(t.clone());
            }
            tracing::warn!(target: "server", pid = t.pid, "the worker template process died; starting a new one");
            templates.remove(&key);
        }
        let template = Arc::new(Template::start(key.clone()).await?);
        tracing::info!(target: "server", pid = template.pid, python = %python.display(), "worker template process started");
        templates.insert(key, template.clone());
        watch(&template);
        Ok(template)
    }

    /// Takes this template out of the registry (if it is still the one
    /// there): the next worker start begins a new one.
    async fn unregister(self: &Arc<Self>) {
        let mut templates = registry().lock().await;
        if templates
            .get(&self.key)
            .is_some_and(|t| Arc::ptr_eq(t, self))
        {
            templates.remove(&self.key);
        }
    }

    fn alive(&self) -> bool {
        let mut process = self.process.lock().unwrap_or_else(|p| p.into_inner());
        matches!(process.try_wait(), Ok(None))
    }

    async fn start(key: Key) -> io::Result<Template> {
        let (python, sdk_dir) = (&key.0, &key.1);
        let (ours, theirs) = seqpacket_pair()?;
        set_receive_timeout(&ours, ANSWER_TIMEOUT)?;
        let fd = theirs.as_raw_fd();
        let mut cmd = tokio::process::Command::new(python);
        // Unsandboxed: with `-S` no `.pth` file of a plugin's environment
        // runs here; each worker runs `site` once sealed.
        let site = if key.2 { "-S" } else { "-s" };
        cmd.args(["-I", "-B", site, "-c", BOOTSTRAP])
            .arg(sdk_dir)
            .current_dir(sdk_dir)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("LC_ALL", "C.UTF-8")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true);
        // SAFETY: getpid has no preconditions.
        let parent = unsafe { libc::getpid() };
        // SAFETY: only async-signal-safe syscalls between fork and exec.
        unsafe {
            cmd.pre_exec(move || template_setup(fd, parent));
        }
        let process = crate::spawner::spawn(cmd).await?;
        drop(theirs);
        let template = Template {
            pid: process.id().map_or(0, |p| p as i32),
            key,
            ctl: ours,
            turn: tokio::sync::Mutex::new(()),
            process: Mutex::new(process),
        };
        let ready = template.ask(None, &[]).await?;
        if ready["ready"].as_i64() != Some(i64::from(template.pid)) {
            return Err(io::Error::other(format!(
                "the template process answered {ready} instead of ready"
            )));
        }
        Ok(template)
    }

    /// Sends `request` (None: only read the next answer) with `fds`, and
    /// reads the answer, on a blocking thread.
    async fn ask(&self, request: Option<Value>, fds: &[RawFd]) -> io::Result<Value> {
        let ctl = self.ctl.try_clone()?;
        let fds = fds.to_vec();
        tokio::task::spawn_blocking(move || {
            if let Some(request) = request {
                send_with_fds(ctl.as_raw_fd(), request.to_string().as_bytes(), &fds)?;
            }
            receive_json(ctl.as_raw_fd())
        })
        .await
        .map_err(io::Error::other)?
    }

    /// Forks a worker that applies `request`'s sandbox to itself and
    /// serves on `fds` (main, side, stdout, stderr, then the Landlock
    /// ruleset when there is one). Answers its pid.
    /// A template that cannot answer is killed and forgotten.
    pub(crate) async fn fork(self: &Arc<Self>, request: Value, fds: &[RawFd]) -> io::Result<i32> {
        let _turn = self.turn.lock().await;
        match self.ask(Some(request), fds).await {
            Ok(a) => a["pid"]
                .as_i64()
                .map(|p| p as i32)
                .ok_or_else(|| io::Error::other(format!("the template could not fork: {a}"))),
            Err(e) => {
                self.unregister().await;
                let _ = self
                    .process
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .start_kill();
                Err(e)
            }
        }
    }

    /// Reaps worker `pid`, which the host saw exit: its status.
    pub(crate) async fn reap(self: &Arc<Self>, pid: i32) -> io::Result<ExitStatus> {
        let _turn = self.turn.lock().await;
        let answer = self
            .ask(Some(json!({"op": "reap", "pid": pid})), &[])
            .await?;
        answer["status"]
            .as_i64()
            .map(|s| ExitStatus::from_raw(s as i32))
            .ok_or_else(|| io::Error::other(format!("the template could not reap {pid}: {answer}")))
    }
}

/// Watches a template through a pidfd: when it ends, says so and forgets
/// it, so that the next worker start begins a new one at once.
fn watch(template: &Arc<Template>) {
    let Some(exited) = crate::reader::pidfd(template.pid) else {
        return;
    };
    let watched = Arc::downgrade(template);
    tokio::spawn(async move {
        crate::reader::wait_readable(Some(&exited)).await;
        if let Some(template) = watched.upgrade() {
            tracing::warn!(target: "server", pid = template.pid, "the worker template process ended; its workers end with it, and the next worker start begins a new template");
            template.unregister().await;
        }
    });
}

/// Between fork and exec of the template: its own session, death with the
/// host, the control socket on fd 3 and nothing else inherited.
fn template_setup(fd: RawFd, parent: libc::pid_t) -> io::Result<()> {
    // SAFETY: plain syscalls on integers.
    unsafe {
        if libc::setsid() < 0 || libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::getppid() != parent {
            libc::_exit(1);
        }
        crate::spawn::place_fd(fd, 3)?;
        if libc::syscall(
            libc::SYS_close_range,
            4u32,
            u32::MAX,
            crate::spawn::CLOSE_RANGE_CLOEXEC,
        ) < 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: socketpair writes two descriptors into the array.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both are new descriptors owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn set_receive_timeout(fd: &OwnedFd, limit: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: limit.as_secs() as libc::time_t,
        tv_usec: 0,
    };
    // SAFETY: setsockopt reads a timeval of the size given.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// One message with `fds` attached (`SCM_RIGHTS`).
fn send_with_fds(sock: RawFd, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let payload = std::mem::size_of_val(fds);
    // SAFETY: CMSG_SPACE is arithmetic.
    let space = unsafe { libc::CMSG_SPACE(payload as u32) } as usize;
    // u64s, so the control buffer is aligned for a cmsghdr.
    let mut control = vec![0u64; space.div_ceil(8)];
    // SAFETY: msghdr is plain data; every pointer set below outlives the
    // sendmsg call.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if !fds.is_empty() {
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = space;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(payload as u32) as usize;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr().cast::<u8>(),
                libc::CMSG_DATA(cmsg),
                payload,
            );
        }
        if libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn receive_json(sock: RawFd) -> io::Result<Value> {
    let mut buf = vec![0u8; ANSWER_BYTES];
    // SAFETY: recv writes at most buf.len() bytes into buf.
    let n = unsafe { libc::recv(sock, buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the template process ended",
        ));
    }
    serde_json::from_slice(&buf[..n as usize]).map_err(io::Error::other)
}
