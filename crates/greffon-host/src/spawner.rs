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

/// Spawns `cmd` from the spawner thread. The child's pipes belong to the
/// caller's runtime.
pub(crate) async fn spawn(mut cmd: Command) -> io::Result<Child> {
    let handle = tokio::runtime::Handle::current();
    let (tx, rx) = oneshot::channel();
    let job: Job = Box::new(move || {
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
