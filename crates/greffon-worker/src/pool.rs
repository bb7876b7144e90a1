//! The workers of one plugin: up to `size` processes, each serving one
//! call at a time, and the bounded queue of calls waiting for one.
//!
//! One call per worker is what makes a pool a pool: a plugin's `self` is
//! never touched by two calls at once (the seed's plugins are plain
//! classes, not thread-safe ones), a slow call holds one worker and no
//! other, and a call gets a whole interpreter rather than a share of one
//! GIL. `workers = N` is the plugin's concurrency.
//!
//! The pool hands out [`Lease`]s; dropping one gives the worker back,
//! straight to the oldest waiting call if there is one. It never starts a
//! process itself: when no worker is idle and the pool has room, the
//! caller gets a [`Ticket`] and starts one (with the host's crash backoff
//! and failure rules), so a crashed worker is replaced by the next call
//! that needs it.

use crate::worker::Worker;
use greffon_protocol::api::PoolStats;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{Notify, oneshot};

/// What a call gets from [`Pool::checkout`].
#[derive(Debug)]
pub enum Checkout {
    /// An idle worker, now this call's.
    Ready(Lease),
    /// No worker is idle but the pool has room: the caller starts one.
    Start(Ticket),
    /// Every worker is busy: the call waits its turn.
    Wait(oneshot::Receiver<Handoff>),
    /// Every worker is busy and the queue is full.
    Busy,
    /// A reload or disable replaced this pool: ask the plugin's current one.
    Retired,
}

/// What a waiting call is handed.
#[derive(Debug)]
pub enum Handoff {
    Worker(Lease),
    /// A worker left (crash, timeout kill): the waiter starts its
    /// replacement.
    Start(Ticket),
    Retired,
}

pub struct Pool {
    size: usize,
    queue_limit: usize,
    state: Mutex<PoolState>,
    /// Signalled whenever a worker comes back or leaves: a retired pool's
    /// drain waits on it.
    returned: Notify,
}

#[derive(Default)]
struct PoolState {
    /// Every live worker of the pool, busy or idle.
    workers: Vec<Arc<Worker>>,
    /// The idle ones; the most recently used is reused first (its pages
    /// are warm).
    idle: Vec<Arc<Worker>>,
    /// Workers being started by holders of a [`Ticket`].
    starting: usize,
    waiters: VecDeque<oneshot::Sender<Handoff>>,
    retired: bool,
    /// The pool's workers were handed over to be stopped: a worker coming
    /// back later (one started by a call that raced the retirement) is
    /// shut down rather than kept where no one would stop it.
    emptied: bool,
}

impl PoolState {
    fn forget(&mut self, worker: &Arc<Worker>) {
        self.workers.retain(|w| !Arc::ptr_eq(w, worker));
        self.idle.retain(|w| !Arc::ptr_eq(w, worker));
    }
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("stats", &self.stats())
            .finish()
    }
}

impl Pool {
    pub fn new(size: usize, queue_limit: usize) -> Arc<Pool> {
        Arc::new(Pool {
            size: size.max(1),
            queue_limit,
            state: Mutex::new(PoolState::default()),
            returned: Notify::new(),
        })
    }

    fn state(&self) -> MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// A worker for one call, or what to do instead. A `patient` call
    /// waits even when the queue is full.
    pub fn checkout(self: &Arc<Self>, patient: bool) -> Checkout {
        let mut s = self.state();
        if s.retired {
            return Checkout::Retired;
        }
        while let Some(worker) = s.idle.pop() {
            if worker.is_alive() {
                return Checkout::Ready(Lease::new(self, worker));
            }
            s.forget(&worker);
        }
        if s.workers.len() + s.starting < self.size {
            s.starting += 1;
            return Checkout::Start(Ticket::new(self));
        }
        // Calls that gave up (timeout, cancel) leave their sender behind.
        s.waiters.retain(|w| !w.is_closed());
        if !patient && s.waiters.len() >= self.queue_limit {
            return Checkout::Busy;
        }
        let (tx, rx) = oneshot::channel();
        s.waiters.push_back(tx);
        Checkout::Wait(rx)
    }

    /// Takes the pool out of service: waiting calls are told to ask the
    /// plugin's new pool; calls holding a worker finish on it.
    pub fn retire(&self) {
        let waiters = {
            let mut s = self.state();
            s.retired = true;
            std::mem::take(&mut s.waiters)
        };
        for w in waiters {
            let _ = w.send(Handoff::Retired);
        }
    }

    /// Waits until no worker serves a call (at most `limit`), then answers
    /// every live worker, to be stopped. False in the pair if some were
    /// still busy at the limit.
    pub async fn drain(&self, limit: Duration) -> (Vec<Arc<Worker>>, bool) {
        let wait = async {
            loop {
                let back = self.returned.notified();
                tokio::pin!(back);
                back.as_mut().enable();
                {
                    let s = self.state();
                    let busy = s
                        .workers
                        .iter()
                        .any(|w| w.is_alive() && !s.idle.iter().any(|i| Arc::ptr_eq(i, w)));
                    if !busy && s.starting == 0 {
                        return;
                    }
                }
                back.await;
            }
        };
        let drained = tokio::time::timeout(limit, wait).await.is_ok();
        (self.empty(), drained)
    }

    /// Every worker, busy or not, taken out of the pool (disable, shutdown).
    pub fn take_all(&self) -> Vec<Arc<Worker>> {
        self.retire();
        self.empty()
    }

    fn empty(&self) -> Vec<Arc<Worker>> {
        let mut s = self.state();
        s.emptied = true;
        s.idle.clear();
        std::mem::take(&mut s.workers)
    }

    pub fn stats(&self) -> PoolStats {
        let s = self.state();
        let idle = s.idle.iter().filter(|w| w.is_alive()).count();
        let live = s.workers.iter().filter(|w| w.is_alive()).count();
        PoolStats {
            size: self.size,
            busy: live.saturating_sub(idle),
            idle,
            queued: s.waiters.iter().filter(|w| !w.is_closed()).count(),
            queue_limit: self.queue_limit,
        }
    }

    /// The pids of its live workers, for tests and benchmarks that inspect
    /// the processes.
    pub fn pids(&self) -> Vec<i32> {
        let s = self.state();
        s.workers
            .iter()
            .filter(|w| w.is_alive())
            .map(|w| w.pid())
            .collect()
    }

    /// A worker comes back from a call: to the oldest waiting call, else
    /// idle. A dead one leaves, and a waiting call starts its replacement.
    fn give_back(self: &Arc<Self>, worker: Arc<Worker>) {
        let mut s = self.state();
        if s.emptied {
            drop(s);
            if worker.is_alive() {
                // Dropped outside a runtime (a host torn down without
                // shutdown), the worker is killed rather than asked.
                match tokio::runtime::Handle::try_current() {
                    Ok(rt) => {
                        rt.spawn(async move { worker.shutdown(Duration::from_secs(1)).await });
                    }
                    Err(_) => worker.kill("its pool was stopped"),
                }
            }
            return;
        }
        if !worker.is_alive() {
            s.forget(&worker);
            if !s.retired {
                s.starting += 1;
                if !self.offer_start(&mut s) {
                    s.starting -= 1;
                }
            }
            drop(s);
            self.returned.notify_waiters();
            return;
        }
        if !s.retired {
            let mut lease = Lease::new(self, worker);
            while let Some(w) = s.waiters.pop_front() {
                match w.send(Handoff::Worker(lease)) {
                    Ok(()) => return,
                    Err(Handoff::Worker(back)) => lease = back,
                    Err(_) => unreachable!("a handoff comes back as it was sent"),
                }
            }
            // No one waits: back to idle, without dropping the lease (its
            // drop would come back here).
            let worker = lease.defuse();
            s.idle.push(worker);
        } else {
            s.idle.push(worker);
        }
        drop(s);
        self.returned.notify_waiters();
    }

    /// Hands the room of one start (already counted in `starting`) to the
    /// oldest call still waiting; false when none waits and the room stays
    /// with the caller. A ticket that comes back from a gone waiter is
    /// defused, not dropped: its drop would take the lock held here.
    fn offer_start(self: &Arc<Self>, s: &mut PoolState) -> bool {
        let mut ticket = Ticket::new(self);
        while let Some(w) = s.waiters.pop_front() {
            match w.send(Handoff::Start(ticket)) {
                Ok(()) => return true,
                Err(Handoff::Start(back)) => ticket = back,
                Err(_) => unreachable!("a handoff comes back as it was sent"),
            }
        }
        ticket.defuse();
        false
    }

    /// A ticket's start failed or was abandoned: its room goes to the next
    /// waiting call, which tries in turn (and fails fast if the plugin is
    /// now failed).
    fn release(self: &Arc<Self>) {
        let mut s = self.state();
        if !s.retired && self.offer_start(&mut s) {
            return;
        }
        s.starting -= 1;
        drop(s);
        // A retiring pool's drain waits for starts to end too.
        self.returned.notify_waiters();
    }
}

/// One call's hold on a worker; dropping it gives the worker back.
#[derive(Debug)]
pub struct Lease {
    pool: Arc<Pool>,
    worker: Option<Arc<Worker>>,
}

impl Lease {
    fn new(pool: &Arc<Pool>, worker: Arc<Worker>) -> Lease {
        Lease {
            pool: pool.clone(),
            worker: Some(worker),
        }
    }

    pub fn worker(&self) -> &Arc<Worker> {
        self.worker
            .as_ref()
            .expect("a lease holds its worker until dropped")
    }

    /// Takes the worker out without giving it back (the caller holds the
    /// pool's lock and places it itself).
    fn defuse(mut self) -> Arc<Worker> {
        self.worker
            .take()
            .expect("a lease holds its worker until dropped")
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(worker) = self.worker.take() {
            self.pool.give_back(worker);
        }
    }
}

/// Room in the pool for one more worker, held while the caller starts it;
/// dropping it unused gives the room back.
#[derive(Debug)]
pub struct Ticket {
    pool: Arc<Pool>,
    used: bool,
}

impl Ticket {
    fn new(pool: &Arc<Pool>) -> Ticket {
        Ticket {
            pool: pool.clone(),
            used: false,
        }
    }

    /// The started worker joins the pool, busy with the ticket holder's
    /// call.
    pub fn fill(mut self, worker: Arc<Worker>) -> Lease {
        self.used = true;
        let mut s = self.pool.state();
        s.starting -= 1;
        s.workers.push(worker.clone());
        drop(s);
        self.pool.returned.notify_waiters();
        Lease::new(&self.pool, worker)
    }

    /// Marks the ticket handled by the caller, who holds the pool's lock.
    fn defuse(mut self) {
        self.used = true;
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.used {
            self.pool.release();
        }
    }
}
