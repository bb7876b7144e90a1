//! A plugin's own hooks outside a call (`load`, `start()`, `stop()`): one
//! request to one worker, and every way it can end folded into [`Ended`]
//! once, so that each caller only says what each ending means to it.

use greffon_protocol::{Output, ResponseBody, WireError};
use greffon_worker::{Exit, Reply, Worker};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// How a hook request ended.
pub(crate) enum Ended {
    /// It returned a value.
    Returned(Value, Option<Output>),
    /// It raised (or the worker refused it): the error and what it printed.
    Raised(WireError, Option<Output>),
    /// The worker ended: during the hook, or (`delivered` false) before it
    /// could be sent.
    Died { delivered: bool, exit: Arc<Exit> },
    /// It did not answer within the time given; the worker still runs
    /// (each caller decides whether to kill it).
    TimedOut,
}

/// Sends `method` to `worker` and waits at most `timeout` for how it ends.
pub(crate) async fn request<P: serde::Serialize + ?Sized>(
    worker: &Worker,
    method: &'static str,
    params: &P,
    timeout: Duration,
) -> Ended {
    match worker.request(method, params, None, timeout).await {
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
        Err(_) => Ended::TimedOut,
    }
}
