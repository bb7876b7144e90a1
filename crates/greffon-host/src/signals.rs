//! The two generations a live view of the host watches: `changes` (the
//! enabled set or a plugin's meta may have changed: MCP sessions re-list
//! their tools) and `incidents` (a crash dump was written or a worker
//! ended unexpectedly: a dashboard refreshes; MCP clients are not told,
//! their tools did not change). A spurious wake-up is harmless.

use tokio::sync::watch;

#[derive(Debug)]
pub(crate) struct Signals {
    changes: watch::Sender<u64>,
    incidents: watch::Sender<u64>,
}

impl Signals {
    pub(crate) fn new() -> Signals {
        Signals {
            changes: watch::Sender::new(0),
            incidents: watch::Sender::new(0),
        }
    }

    pub(crate) fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    pub(crate) fn incidents(&self) -> watch::Receiver<u64> {
        self.incidents.subscribe()
    }

    /// Tells watchers of `changes` that something moved.
    pub(crate) fn changed(&self) {
        bump(&self.changes);
    }

    /// Tells watchers of `incidents` that something happened.
    pub(crate) fn incident(&self) {
        bump(&self.incidents);
    }

    /// Announces a change when the returned guard drops, whichever way
    /// the operation holding it ends (a failed enable marks the plugin
    /// failed: also a change).
    pub(crate) fn change_on_drop(&self) -> ChangeOnDrop<'_> {
        ChangeOnDrop(self)
    }
}

fn bump(generation: &watch::Sender<u64>) {
    generation.send_modify(|g| *g = g.wrapping_add(1));
}

/// See [`Signals::change_on_drop`].
pub(crate) struct ChangeOnDrop<'a>(&'a Signals);

impl Drop for ChangeOnDrop<'_> {
    fn drop(&mut self) {
        self.0.changed();
    }
}
