//! [`Runner`] for the real host: task runs take the normal call path
//! (validation, timeout, crash handling, audit).

use crate::scheduler::{CheckError, CheckFuture, Outcome, RunFuture, Runner};
use greffon_host::Host;
use greffon_protocol::ErrorKind;
use serde_json::Value;
use std::time::Duration;

/// Runs tasks on a [`Host`].
#[derive(Debug, Clone)]
pub struct HostRunner(pub Host);

impl Runner for HostRunner {
    fn check(&self, plugin: &str, args: &Value) -> CheckFuture {
        let (host, plugin, args) = (self.0.clone(), plugin.to_string(), args.clone());
        Box::pin(async move {
            host.check_args(&plugin, args)
                .await
                .map(|_| ())
                .map_err(|e| CheckError {
                    field: match e.kind {
                        ErrorKind::Validation | ErrorKind::TooLarge => "args",
                        _ => "plugin",
                    },
                    message: e.message,
                })
        })
    }

    fn run(&self, plugin: &str, args: Value, timeout: Option<Duration>) -> RunFuture {
        let host = self.0.clone();
        let plugin = plugin.to_string();
        Box::pin(async move {
            match host.call_with_timeout(&plugin, args, timeout).await {
                Ok(v) => Outcome::Ok(v),
                Err(e) if e.kind == ErrorKind::Timeout => Outcome::TimedOut(e.message),
                Err(e) => Outcome::Failed(e.message),
            }
        })
    }

    fn plugins(&self) -> Vec<String> {
        self.0.enabled_plugins()
    }
}

/// The scheduler of `host` on `store`: runs through the host, and the
/// `tasks.*` service registered for plugins.
pub fn attach<S: crate::TaskStore>(
    host: &Host,
    store: S,
    settings: crate::Settings,
) -> crate::Scheduler<S> {
    let scheduler = crate::Scheduler::new(
        store,
        std::sync::Arc::new(HostRunner(host.clone())),
        std::sync::Arc::new(crate::SystemClock),
        settings,
    );
    host.register_service(
        "tasks",
        std::sync::Arc::new(crate::TasksService::new(&scheduler)),
    );
    scheduler
}
