//! Error kinds shared by the worker, the host and every edge.

use serde::{Deserialize, Serialize};
use std::fmt;

/// What went wrong, in a form an edge can map to an exit code or an HTTP
/// status without parsing the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The arguments broke the plugin's schema, or were not an object.
    Validation,
    /// No plugin has that name.
    UnknownPlugin,
    /// The plugin exists but is not enabled.
    NotEnabled,
    /// The plugin could not be loaded or started, or crashed too often.
    PluginFailed,
    /// The call did not finish within its timeout.
    Timeout,
    /// The worker process died or broke the protocol during the call.
    WorkerCrashed,
    /// The plugin raised an unexpected exception.
    Exception,
    /// The plugin returned something JSON cannot represent.
    NotSerializable,
    /// Arguments or result exceed the configured size limit.
    TooLarge,
    /// The peer sent a frame that breaks the protocol.
    Protocol,
    /// The worker does not know the method (a host/SDK version mismatch).
    UnknownMethod,
    /// A host service called by the plugin failed.
    HostService,
    /// A host service refused what the plugin was not granted.
    PermissionDenied,
    /// Something in greffon itself failed (I/O, database).
    Internal,
    /// No such thing (a task, a run).
    NotFound,
    /// The request conflicts with the current state (a taken name, a limit
    /// of runs reached).
    Conflict,
    /// The caller gave up on the call (an MCP client's cancellation).
    Cancelled,
    /// Every worker of the plugin is busy and its queue is full.
    Busy,
}

impl ErrorKind {
    /// The stable snake_case name used on the wire and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Validation => "validation",
            ErrorKind::UnknownPlugin => "unknown_plugin",
            ErrorKind::NotEnabled => "not_enabled",
            ErrorKind::PluginFailed => "plugin_failed",
            ErrorKind::Timeout => "timeout",
            ErrorKind::WorkerCrashed => "worker_crashed",
            ErrorKind::Exception => "exception",
            ErrorKind::NotSerializable => "not_serializable",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::Protocol => "protocol",
            ErrorKind::UnknownMethod => "unknown_method",
            ErrorKind::HostService => "host_service",
            ErrorKind::PermissionDenied => "permission_denied",
            ErrorKind::Internal => "internal",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Busy => "busy",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error carried in a response frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireError {
    pub kind: ErrorKind,
    pub message: String,
    /// The Python exception class, when the error is an exception.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub exc_type: Option<String>,
    /// The formatted Python traceback; kept for crash dumps, never shown
    /// to the caller in full.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceback: Option<String>,
}

impl WireError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        WireError {
            kind,
            message: message.into(),
            exc_type: None,
            traceback: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_match_serde() {
        for kind in [
            ErrorKind::Validation,
            ErrorKind::UnknownPlugin,
            ErrorKind::NotEnabled,
            ErrorKind::PluginFailed,
            ErrorKind::Timeout,
            ErrorKind::WorkerCrashed,
            ErrorKind::Exception,
            ErrorKind::NotSerializable,
            ErrorKind::TooLarge,
            ErrorKind::Protocol,
            ErrorKind::UnknownMethod,
            ErrorKind::HostService,
            ErrorKind::PermissionDenied,
            ErrorKind::Internal,
            ErrorKind::NotFound,
            ErrorKind::Conflict,
            ErrorKind::Cancelled,
        ] {
            let json = serde_json::to_value(kind).expect("serializes");
            assert_eq!(json, serde_json::Value::from(kind.as_str()));
        }
    }
}

/// The error a plugin *returned* (the contract's `{"error": "..."}`): an
/// object whose `error` is set and not null. A record that merely has an
/// empty `error` field (a task run) is a result.
pub fn returned_error(result: &serde_json::Value) -> Option<&serde_json::Value> {
    result.get("error").filter(|e| !e.is_null())
}

#[cfg(test)]
mod returned_error_tests {
    use super::returned_error;
    use serde_json::json;

    #[test]
    fn only_a_set_error_is_an_error() {
        assert_eq!(returned_error(&json!({"error": "no"})), Some(&json!("no")));
        assert_eq!(
            returned_error(&json!({"error": null, "status": "ok"})),
            None
        );
        assert_eq!(returned_error(&json!([1])), None);
    }
}
