//! Host services a plugin calls mid-call through its worker
//! (`greffon.system`, `greffon.http`, `greffon.secret`, and those other
//! crates register: `greffon.LLM`, `greffon.tasks`). Every call is
//! audited.

use crate::broker::{self, HttpSettings, NetAccess};
use crate::secrets::SecretStore;
use greffon_protocol::{ErrorKind, Service, WireError, method};
use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

/// Who is calling a service.
#[derive(Debug)]
pub(crate) struct Caller {
    pub plugin: String,
    pub python_version: String,
    /// Set when the worker was granted `net`.
    pub net: Option<NetAccess>,
    /// The secret names it may read.
    pub secrets: Vec<String>,
}

/// The services of one host.
#[derive(Debug)]
pub(crate) struct Services {
    /// Root of the file system the facts are read from (`/`; a fake tree
    /// in tests).
    pub sys_root: PathBuf,
    pub http: HttpSettings,
    pub secrets: SecretStore,
    /// Registered services by method prefix (`tasks` for `tasks.create`).
    pub extra: RwLock<HashMap<String, Arc<dyn Service>>>,
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
        if method == method::SECRET_GET {
            return self.secret(caller, params).await;
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
            other => match self.registered(other) {
                Some(service) => service.handle(&caller.plugin, other, params).await,
                None => Err(WireError::new(
                    ErrorKind::UnknownMethod,
                    format!("unknown host service '{other}'"),
                )),
            },
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

    /// `greffon.secret(NAME)`: the value, only for a name the plugin
    /// declared (and was granted) and that is set. The value is remembered
    /// for redaction before it leaves; the audit records the name only.
    async fn secret(&self, caller: &Caller, params: Value) -> Result<Value, WireError> {
        let plugin = &caller.plugin;
        let name = match params.get("name") {
            Some(Value::String(n)) => n.clone(),
            _ => {
                return Err(WireError::new(
                    ErrorKind::Validation,
                    "secret(): the name must be a string",
                ));
            }
        };
        let outcome = if !caller.secrets.contains(&name) {
            let declared = if caller.secrets.is_empty() {
                "none".to_string()
            } else {
                caller.secrets.join(", ")
            };
            Err(WireError::new(
                ErrorKind::PermissionDenied,
                format!(
                    "plugin '{plugin}' may not read the secret '{name}': it is not in meta[\"secrets\"] (declared and granted: {declared})"
                ),
            ))
        } else {
            match self.secrets.get(plugin, &name).await {
                Ok(Some(value)) => {
                    crate::redact::remember(&name, &value);
                    Ok(Value::String(value))
                }
                Ok(None) => Err(WireError::new(
                    ErrorKind::NotFound,
                    format!(
                        "the secret '{name}' of plugin '{plugin}' is not set; run `greffon secret set {plugin} {name}`"
                    ),
                )),
                Err(e) => Err(WireError::new(ErrorKind::Internal, e.to_string())),
            }
        };
        tracing::info!(
            target: "audit",
            event = "secret_read",
            plugin = %plugin,
            secret = %name,
            outcome = match &outcome {
                Ok(_) => "ok",
                Err(e) => e.kind.as_str(),
            },
        );
        outcome
    }

    fn registered(&self, method: &str) -> Option<Arc<dyn Service>> {
        let prefix = method.split_once('.')?.0;
        self.extra.read().ok()?.get(prefix).cloned()
    }
}
