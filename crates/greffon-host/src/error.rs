//! Errors of the host engine.

use greffon_protocol::ErrorKind;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// ` (crash dump: PATH)` when there is a dump, for the end of a message.
pub(crate) fn dump_note(dump: Option<&Path>) -> String {
    dump.map(|d| format!(" (crash dump: {})", d.display()))
        .unwrap_or_default()
}

/// Why a management operation (open, enable, disable, scaffold) failed.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error(transparent)]
    Config(#[from] greffon_core::ConfigError),
    /// No usable interpreter.
    #[error("{0}; set `python` in greffon.toml or GREFFON_PYTHON")]
    Python(String),
    #[error("cannot write the Python SDK under {path}: {source}")]
    Sdk {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("database {path}: {source}")]
    Database { path: PathBuf, source: sqlx::Error },
    #[error("{0}")]
    UnknownPlugin(String),
    #[error("plugin '{name}' failed: {reason}{}", dump_note(dump.as_deref()))]
    Failed {
        name: String,
        reason: String,
        dump: Option<PathBuf>,
    },
    #[error("{0}")]
    NotEnabled(String),
    /// A hot reload failed; the previous version keeps serving.
    #[error("plugin '{name}': reload failed, the running version keeps serving: {reason}{}", dump_note(dump.as_deref()))]
    Reload {
        name: String,
        reason: String,
        dump: Option<PathBuf>,
    },
    #[error("cannot scaffold '{name}': {reason}")]
    Scaffold { name: String, reason: String },
    #[error(transparent)]
    Secret(#[from] crate::secrets::SecretError),
    /// A secret name or value that cannot be stored (says which and why).
    #[error("{0}")]
    InvalidSecret(String),
    #[error("the secret '{name}' of plugin '{plugin}' is not set")]
    SecretNotSet { plugin: String, name: String },
    /// Something named that does not exist (a crash dump, a log).
    #[error("{0}")]
    NotFound(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

impl HostError {
    /// The kind an edge maps to an exit code or status.
    pub fn kind(&self) -> ErrorKind {
        match self {
            HostError::UnknownPlugin(_) => ErrorKind::UnknownPlugin,
            HostError::Failed { .. } | HostError::Reload { .. } => ErrorKind::PluginFailed,
            HostError::NotEnabled(_) => ErrorKind::NotEnabled,
            HostError::SecretNotSet { .. } | HostError::NotFound(_) => ErrorKind::NotFound,
            HostError::Scaffold { .. } | HostError::InvalidSecret(_) => ErrorKind::Validation,
            _ => ErrorKind::Internal,
        }
    }
}

/// A call that did not produce the plugin's result.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct CallError {
    pub kind: ErrorKind,
    /// Names the plugin and, for validation, the field and the rule.
    pub message: String,
    /// The crash dump written for this call, if any.
    pub dump: Option<PathBuf>,
}

impl CallError {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> CallError {
        CallError {
            kind,
            message: message.into(),
            dump: None,
        }
    }

    /// The contract's answer: `{"error": "..."}`.
    pub fn to_json(&self) -> Value {
        json!({ "error": self.message })
    }
}
