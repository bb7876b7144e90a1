//! The reader task of one worker: answers to the host's requests, the
//! worker's own requests (host services) and notifications, then its end —
//! the exit status, the crash report, every call still in flight answered.

use crate::frame::read_message;
use crate::output::{log_record, tail_text};
use crate::spawn::Process;
use crate::supervisor::{Crash, Supervisor};
use crate::worker::{Exit, Pending, Reply, Shared};
use greffon_protocol::method;
use greffon_protocol::{Message, ResponseBody, encode_frame};
use serde_json::Value;
use std::os::unix::process::ExitStatusExt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::unix::OwnedReadHalf;

/// A pidfd for `pid`, None when the kernel has none (the channel's end of
/// file then says the worker is gone).
pub(crate) fn pidfd(pid: i32) -> Option<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>> {
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
pub(crate) async fn wait_readable(fd: Option<&tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>>) {
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

/// Serves the worker's frames until it is gone, then settles its end.
pub(crate) async fn read_loop(
    rd: OwnedReadHalf,
    process: Process,
    pumps: [Option<tokio::task::JoinHandle<()>>; 2],
    shared: Arc<Shared>,
    supervisor: Arc<dyn Supervisor>,
) {
    // One read syscall usually brings a whole frame, header and body.
    let mut rd = tokio::io::BufReader::with_capacity(64 << 10, rd);
    // Readable once the worker has exited, before it is reaped: a child it
    // forked (with `process`) may keep the channel open after its death.
    let exited = pidfd(shared.pid);
    let broke = loop {
        let next = tokio::select! {
            // Frames the worker wrote before exiting are read first.
            biased;
            m = read_message(&mut rd, shared.spec.max_frame) => m,
            _ = wait_readable(exited.as_ref()) => break None,
        };
        match next {
            Ok(None) => break None,
            Err(e) => break Some(format!("broke the protocol: {e}")),
            Ok(Some(message)) => on_message(&shared, &supervisor, message),
        }
    };
    if broke.is_some() {
        // A worker that writes garbage is not trusted to stop by itself.
        shared.kill_group();
    }
    // The leader has exited but is not reaped yet, so its group id still
    // names its group: whatever it left behind dies with it.
    if exited.is_some() {
        wait_readable(exited.as_ref()).await;
        shared.kill_group();
    }
    settle(process, pumps, &shared, supervisor.as_ref(), broke).await;
}

/// One frame from the worker.
fn on_message(shared: &Arc<Shared>, supervisor: &Arc<dyn Supervisor>, message: Message) {
    match message {
        Message::Response { id, body, output } => {
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
        Message::Request {
            id,
            method,
            params,
            reply_on_main,
        } => {
            let (shared, answer) = (shared.clone(), supervisor.clone().serve(method, params));
            tokio::spawn(async move {
                let body = match answer.await {
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
                // The worker's main thread, busy with the host's request,
                // reads its own answer on the main channel (the host sends
                // nothing else there meanwhile); any other thread gets it
                // through the side channel.
                let mut w = if reply_on_main {
                    shared.writer.lock().await
                } else {
                    shared.side.lock().await
                };
                let _ = w.write_all(&frame).await;
            });
        }
        Message::Notification { method, params } => {
            if method == method::LOG {
                log_record(&shared.spec.plugin, params);
            } else if method == method::PROGRESS {
                forward_progress(shared, params);
            }
        }
    }
}

/// The worker is gone: reaps it, removes its temp folder, has an
/// unexpected end reported, and answers every call still in flight.
async fn settle(
    process: Process,
    pumps: [Option<tokio::task::JoinHandle<()>>; 2],
    shared: &Shared,
    supervisor: &dyn Supervisor,
    broke: Option<String>,
) {
    let status = process.wait().await;
    shared.reaped.store(true, Ordering::Release);
    // Its children (with `process`) may still hold it; they die with the
    // group or have already.
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
    let description = match (broke, kill_reason) {
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
        let (stdout, stderr) = (
            tail_text(&shared.stdout_tail),
            tail_text(&shared.stderr_tail),
        );
        tracing::warn!(
            target: "server",
            plugin = %shared.spec.plugin,
            pid = shared.pid,
            "worker ended unexpectedly: {description}"
        );
        // The host learns of the crash (its registry, its dump) before any
        // caller does, so a caller that sees its call fail also sees the
        // plugin's new state.
        supervisor.crashed(&Crash {
            plugin: &shared.spec.plugin,
            description: &description,
            status: &status_text,
            in_flight: args.as_ref(),
            stdout: &stdout,
            stderr: &stderr,
        })
    };
    let exit = Arc::new(Exit { description, dump });
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
