//! One long-lived thread that forks every worker.
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits,
//! not the process: a worker forked from a tokio pool thread that later
//! retires would be killed for nothing. Forking from a thread that lives
//! as long as the process ties each worker's life to the host's.

use std::io;
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send>;

fn queue() -> io::Result<&'static Mutex<mpsc::Sender<Job>>> {
    static QUEUE: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    if let Some(q) = QUEUE.get() {
        return Ok(q);
    }
    let (tx, rx) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("greffon-spawner".into())
        .spawn(move || {
            for job in rx {
                job();
            }
        })?;
    // A racing caller may have set it first; its thread serves then, and
    // ours ends as soon as its sender is dropped.
    Ok(QUEUE.get_or_init(|| Mutex::new(tx)))
}

/// The calling thread's CPU affinity, if it can be read.
fn affinity() -> Option<libc::cpu_set_t> {
    // SAFETY: a zeroed cpu_set_t is valid; the kernel fills it.
    unsafe {
        let mut mask: libc::cpu_set_t = std::mem::zeroed();
        (libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut mask) == 0)
            .then_some(mask)
    }
}

/// Spawns `cmd` from the spawner thread. The child's pipes belong to the
/// caller's runtime, and it starts with the caller's CPU affinity, as if
/// the caller had forked it (a greffon confined with `taskset` keeps its
/// workers within those CPUs; and measured here, a worker forked with
/// another thread's affinity answered calls 2x slower across CPUs).
pub(crate) async fn spawn(mut cmd: Command) -> io::Result<Child> {
    let handle = tokio::runtime::Handle::current();
    let (tx, rx) = oneshot::channel();
    let mask = affinity();
    let job: Job = Box::new(move || {
        if let Some(mask) = mask {
            // SAFETY: sets this thread's affinity from a mask the kernel
            // gave; the spawner thread only forks.
            unsafe {
                libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mask);
            }
        }
        let _runtime = handle.enter();
        let _ = tx.send(cmd.spawn());
    });
    queue()?
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .send(job)
        .map_err(|_| io::Error::other("the spawner thread is gone"))?;
    rx.await
        .map_err(|_| io::Error::other("the spawner thread dropped a spawn"))?
}
