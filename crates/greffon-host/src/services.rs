//! Host services a plugin calls mid-call through its worker
//! (`greffon.system`, `greffon.http`, and later `greffon.LLM`,
//! `greffon.tasks`). Every call is audited.

use crate::broker::{self, HttpSettings, NetAccess};
use greffon_protocol::{ErrorKind, WireError, method};
use serde_json::Value;
use std::path::PathBuf;

/// Who is calling a service.
#[derive(Debug)]
pub(crate) struct Caller {
    pub plugin: String,
    pub python_version: String,
    /// Set when the worker was granted `net`.
    pub net: Option<NetAccess>,
}

/// The services of one host.
#[derive(Debug)]
pub(crate) struct Services {
    /// Root of the file system the facts are read from (`/`; a fake tree
    /// in tests).
    pub sys_root: PathBuf,
    pub http: HttpSettings,
}

impl Services {
    pub(crate) async fn handle(
        &self,
        caller: &Caller,
        method: &str,
        params: Value,
    ) -> Result<Value, WireError> {
        if method == method::HTTP_REQUEST {
            // The broker writes its own, more detailed audit record.
            return broker::request(&caller.plugin, caller.net.as_ref(), self.http, params).await;
        }
        let outcome = match method {
            method::SYSTEM_INFO => {
                let root = self.sys_root.clone();
                let python = caller.python_version.clone();
                tokio::task::spawn_blocking(move || crate::sysinfo::gather(&root, &python))
                    .await
                    .map_err(|e| {
                        WireError::new(ErrorKind::Internal, format!("system.info failed: {e}"))
                    })
            }
            other => Err(WireError::new(
                ErrorKind::UnknownMethod,
                format!("unknown host service '{other}'"),
            )),
        };
        tracing::info!(
            target: "audit",
            event = "host_service",
            plugin = %caller.plugin,
            service = method,
            outcome = if outcome.is_ok() { "ok" } else { "error" },
        );
        outcome
    }
}
