//! The contract of a host service another crate provides (the
//! scheduler's `tasks.*`, the LLM's `llm.*`): a plugin calls it mid-call
//! through its worker, and the host routes the call by the prefix of the
//! method name. Here rather than in the host so that a provider needs
//! only the wire types, not the host engine.

use crate::WireError;
use serde_json::Value;
use std::future::Future;
use std::pin::Pin;

/// What a [`Service`] answers, later.
pub type ServiceFuture = Pin<Box<dyn Future<Output = Result<Value, WireError>> + Send>>;

/// A host service, registered with the host under the prefix of its
/// method names (`Host::register_service`).
pub trait Service: Send + Sync + 'static {
    /// Answers `method` (the full name, e.g. `tasks.create`) for `plugin`.
    fn handle(&self, plugin: &str, method: &str, params: Value) -> ServiceFuture;
}

impl std::fmt::Debug for dyn Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Service")
    }
}
