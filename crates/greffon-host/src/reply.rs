//! A worker's reply to one request, and every way the request can end,
//! folded once into [`Ended`]: the hooks outside a call (`load`,
//! `start()`, `stop()`) and the call path each only say what each ending
//! means to them.

use greffon_protocol::{Output, ResponseBody, WireError};
use greffon_worker::{Abandoned, Exit, Reply, Worker};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// How a request ended.
pub(crate) enum Ended {
    /// It returned a value.
    Returned(Value, Option<Output>),
    /// It raised (or the worker refused it): the error and what it printed.
    Raised(WireError, Option<Output>),
    /// The worker ended: during the request, or (`delivered` false) before
    /// it could be sent, which makes it safe to send to another worker.
    Died { delivered: bool, exit: Arc<Exit> },
    /// Its caller stopped waiting (the time given passed, or a call was
    /// cancelled); the worker still runs, and each caller decides whether
    /// to kill it.
    Abandoned(Abandoned),
}

impl Ended {
    /// Folds what [`Worker::request`] answered.
    pub(crate) async fn of(worker: &Worker, answer: Result<Reply, Abandoned>) -> Ended {
        match answer {
            Ok(Reply::Response {
                body: ResponseBody::Ok(v),
                output,
            }) => Ended::Returned(v, output),
            Ok(Reply::Response {
                body: ResponseBody::Err(e),
                output,
            }) => Ended::Raised(e, output),
            Ok(Reply::Gone(exit)) => Ended::Died {
                delivered: true,
                exit,
            },
            Ok(Reply::NotDelivered) => Ended::Died {
                delivered: false,
                exit: worker.wait_exit().await,
            },
            Err(abandoned) => Ended::Abandoned(abandoned),
        }
    }
}

/// Sends a hook's `method` to `worker` and waits at most `timeout` for how
/// it ends.
pub(crate) async fn request<P: serde::Serialize + ?Sized>(
    worker: &Worker,
    method: &'static str,
    params: &P,
    timeout: Duration,
) -> Ended {
    Ended::of(worker, worker.request(method, params, None, timeout).await).await
}

/// Logs what a plugin printed while serving one request (category
/// `plugin`).
pub(crate) fn log_output(plugin: &str, output: Option<&Output>) {
    if let Some(o) = output.filter(|o| !o.is_empty()) {
        tracing::info!(
            target: "plugin",
            plugin,
            stdout = %o.stdout,
            stderr = %o.stderr,
            dropped = o.dropped,
            "call output"
        );
    }
}
