//! The host's side of each worker ([`greffon_worker::Supervisor`]): host
//! services answered for the plugin it serves, and its crash written down
//! (dump) and counted (registry).

use crate::dump::{self, Dump, Phase};
use crate::services::{Caller, Services};
use greffon_worker::{Answer, Crash, Exit, Supervisor};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;

/// Called once when a worker ends without being asked to, after its dump
/// is written (the registry counts the crash).
pub(crate) type OnCrash = Box<dyn Fn(&Exit) + Send + Sync>;

/// One worker's supervisor.
pub(crate) struct Supervised {
    pub caller: Arc<Caller>,
    pub services: Arc<Services>,
    /// Where its crash dump goes.
    pub dumps_dir: PathBuf,
    /// SHA-256 of the `plugin.py` it loaded, written into dumps.
    pub file_hash: String,
    pub on_crash: Option<OnCrash>,
}

impl Supervisor for Supervised {
    fn serve(self: Arc<Self>, method: String, params: Value) -> Answer {
        Box::pin(async move { self.services.handle(&self.caller, &method, params).await })
    }

    fn crashed(&self, crash: &Crash<'_>) -> Option<PathBuf> {
        let dump = dump::write_logged(
            &self.dumps_dir,
            &Dump {
                plugin: crash.plugin,
                file_hash: &self.file_hash,
                phase: Phase::WorkerExit,
                args: crash.in_flight,
                error: crash.description,
                traceback: Some(crash.status),
                stdout: crash.stdout,
                stderr: crash.stderr,
            },
        );
        if let Some(cb) = &self.on_crash {
            cb(&Exit {
                description: crash.description.to_string(),
                dump: dump.clone(),
            });
        }
        dump
    }
}
