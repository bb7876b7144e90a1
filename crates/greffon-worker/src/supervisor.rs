//! What the host provides a worker: answers to its host-service requests,
//! and the handling of its crash (dump, crash accounting).

use greffon_protocol::WireError;
use serde_json::Value;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

/// An answer to a worker's request, later.
pub type Answer = Pin<Box<dyn Future<Output = Result<Value, WireError>> + Send>>;

/// The host's side of one worker.
pub trait Supervisor: Send + Sync + 'static {
    /// Answers a request the worker made mid-call (a host service such as
    /// `http.request`).
    fn serve(self: Arc<Self>, method: String, params: Value) -> Answer;

    /// The worker ended without being asked to (a crash, a kill, a broken
    /// protocol): write its crash dump and count the crash. Answers where
    /// the dump is, which every call it was serving is told.
    fn crashed(&self, crash: &Crash<'_>) -> Option<PathBuf>;
}

/// What is known of a worker that ended unexpectedly.
#[derive(Debug)]
pub struct Crash<'a> {
    /// The plugin (or folder) the worker served.
    pub plugin: &'a str,
    /// Why it ended, in words: "the worker exited with code 1", ...
    pub description: &'a str,
    /// Its exit status alone ("exited with code 1", "killed by signal 9").
    pub status: &'a str,
    /// `[{"method", "args"}]` of the requests it was serving, when any
    /// carried arguments.
    pub in_flight: Option<&'a Value>,
    /// The last 64 KiB of its raw output.
    pub stdout: &'a str,
    pub stderr: &'a str,
}
