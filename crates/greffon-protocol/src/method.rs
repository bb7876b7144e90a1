//! Method names and the parameter and result types that go with them.
//!
//! Host → worker: [`LOAD`], [`START`], [`RUN`], [`STOP`], [`SHUTDOWN`],
//! and the [`CANCEL`] notification.
//! Worker → host: [`HELLO`], [`LOG`] and [`PROGRESS`] (notifications), and host
//! services such as [`SYSTEM_INFO`] and [`HTTP_REQUEST`] (requests, possibly mid-call).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Worker → host notification, the first frame a worker sends.
pub const HELLO: &str = "hello";
/// Worker → host notification: a record from `greffon.log`.
pub const LOG: &str = "log";
/// Host → worker: import `plugin.py` and report its meta.
pub const LOAD: &str = "load";
/// Host → worker: call `plugin.start()` if it exists.
pub const START: &str = "start";
/// Worker → host notification: `greffon.progress()` during a `run`.
pub const PROGRESS: &str = "progress";
/// Host → worker notification: the caller gave up on a request; the worker
/// interrupts it if it can.
pub const CANCEL: &str = "cancel";
/// Host → worker: call `plugin.run(**args)`.
pub const RUN: &str = "run";
/// Host → worker: call `plugin.stop()` if it exists.
pub const STOP: &str = "stop";
/// Host → worker: exit cleanly once answered.
pub const SHUTDOWN: &str = "shutdown";
/// Worker → host service: facts about the machine.
pub const SYSTEM_INFO: &str = "system.info";
/// Worker → host service: an HTTP request made by the host's broker.
pub const HTTP_REQUEST: &str = "http.request";
/// Worker → host service: the value of one of the plugin's declared secrets
/// (`{"name"}` → the value as a string).
pub const SECRET_GET: &str = "secret.get";

/// Parameters of [`HELLO`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol: u32,
    /// `sys.version` of the worker's interpreter, first word.
    pub python: String,
    pub pid: u32,
}

/// Parameters of [`PROGRESS`]: how far the `run` request `id` has got.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgressParams {
    /// The host's id of the `run` request being served.
    pub id: u64,
    #[serde(flatten)]
    pub report: Progress,
}

/// One `greffon.progress(done, total, message)` of a running call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub progress: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Parameters of [`CANCEL`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Cancel {
    pub id: u64,
}

/// Parameters of [`LOAD`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadParams {
    /// Absolute path of the plugin's `plugin.py`.
    pub path: String,
    /// The plugin's folder name, used for the module name.
    pub folder: String,
    /// The plugin's `[plugins.NAME.config]` table, returned by
    /// `greffon.config()`.
    pub config: Value,
    /// Bytes of stdout+stderr kept per request; more is counted, not kept.
    pub capture_limit: usize,
    /// A result whose JSON is larger is answered with a `too_large` error.
    pub max_result_bytes: usize,
}

/// Result of [`LOAD`]: raw facts about the module, judged by the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadResult {
    /// Whether the module defines `plugin`.
    pub has_plugin: bool,
    /// `plugin.meta` made JSON-safe: a Pydantic class becomes
    /// `{"$pydantic": {"name", "schema"}}`, a Python builtin type its JSON
    /// type name, anything else `{"$unsupported": "<type name>"}`. `None`
    /// when the attribute is missing.
    pub meta: Option<Value>,
    /// Python type name of `plugin.meta` when it is not a dict.
    pub meta_type: Option<String>,
    pub has_run: bool,
}

/// Parameters of [`RUN`], borrowed: the host serializes them straight into
/// the frame.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunParams<'a> {
    pub args: &'a Value,
    /// Validate through the plugin's Pydantic model before `run`, for its
    /// defaults and coercions (the host has already checked the schema).
    #[serde(default)]
    pub pydantic: bool,
    /// The call's timeout, so host services the plugin calls (HTTP) can
    /// end before the call does.
    pub timeout_ms: u64,
}

/// Parameters of [`LOG`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogRecord {
    /// One of `server`, `plugin`, `llm`, `audit`.
    pub category: String,
    /// Python level name (`DEBUG`, `INFO`, `WARNING`, `ERROR`, `CRITICAL`).
    pub level: String,
    pub logger: String,
    pub message: String,
}

#[cfg(test)]
mod progress_tests {
    use super::{Progress, ProgressParams};
    use serde_json::json;

    #[test]
    fn the_sdk_frames_decode_with_integers_or_fractions() {
        let full: ProgressParams =
            serde_json::from_value(json!({"id": 3, "progress": 1, "total": 2, "message": "half"}))
                .expect("decodes");
        assert_eq!(full.id, 3);
        assert_eq!(
            full.report,
            Progress {
                progress: 1.0,
                total: Some(2.0),
                message: Some("half".into())
            }
        );
        let bare: ProgressParams =
            serde_json::from_value(json!({"id": 4, "progress": 0.5})).expect("decodes");
        assert_eq!((bare.report.progress, bare.report.total), (0.5, None));
        assert!(serde_json::from_value::<ProgressParams>(json!({"id": 4})).is_err());
    }
}
