//! The wire between the greffon host and a Python worker, as types only.
//!
//! This crate deliberately does no I/O: it says what a frame is, how a
//! frame is laid out in bytes, and which methods and error kinds exist.
//! The host engine (`greffon-host`) and the Python SDK (`python/greffon`)
//! both speak it.
//!
//! # Layout
//!
//! - `frame`: the byte framing (4-byte big-endian length + JSON body) and
//!   its limits.
//! - `message`: the three kinds of message (request, response,
//!   notification), in both directions.
//! - [`method`]: method names and their parameter and result types.
//! - `error`: the error kinds a call can end with, shared by every edge
//!   (CLI, HTTP) so that one mapping decides exit codes and statuses.
//! - [`Service`]: what a crate implements to answer host calls of its own
//!   (`tasks.*`, `llm.*`).
//! - [`api`]: what the API answers about plugins and secrets, shared by
//!   the server, the remote CLI and MCP.

#![forbid(unsafe_code)]

pub mod api;
mod error;
mod frame;
mod message;
pub mod method;
#[cfg(test)]
mod properties;
mod service;

pub use error::{ErrorKind, WireError, returned_error};
pub use frame::{FRAME_HEADER_LEN, FrameError, decode_header, encode_frame, encode_request};
pub use message::{Message, Output, ResponseBody};
pub use service::{Service, ServiceFuture};

/// Rewrites the `keys` of `map` that hold an integral float (`27.0`) in
/// `0..=u32::MAX` as integers: JSON has one number type, and to a JSON
/// Schema (or a client that computed the value as a float) `27.0` is the
/// integer 27, which serde would refuse for an integer field.
pub fn integral_floats(map: &mut serde_json::Map<String, serde_json::Value>, keys: &[&str]) {
    for key in keys {
        if let Some(n) = map
            .get(*key)
            .filter(|v| v.is_f64())
            .and_then(|v| v.as_f64())
            && n.fract() == 0.0
            && (0.0..=f64::from(u32::MAX)).contains(&n)
        {
            map.insert((*key).to_string(), serde_json::Value::from(n as u32));
        }
    }
}

/// Version of the wire protocol; the worker sends it in its `hello` and the
/// host refuses a worker that speaks another one.
pub const PROTOCOL_VERSION: u32 = 1;
