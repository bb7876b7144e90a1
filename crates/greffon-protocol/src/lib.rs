//! The wire between the greffon host and a Python worker, as types only.
//!
//! This crate deliberately does no I/O: it says what a frame is, how a
//! frame is laid out in bytes, and which methods and error kinds exist.
//! The host engine (`greffon-host`) and the Python SDK (`python/greffon`)
//! both speak it.
//!
//! # Layout
//!
//! - [`frame`]: the byte framing (4-byte big-endian length + JSON body) and
//!   its limits.
//! - [`message`]: the three kinds of message (request, response,
//!   notification), in both directions.
//! - [`method`]: method names and their parameter and result types.
//! - [`error`]: the error kinds a call can end with, shared by every edge
//!   (CLI, HTTP) so that one mapping decides exit codes and statuses.

mod error;
mod frame;
mod message;
pub mod method;
#[cfg(test)]
mod properties;

pub use error::{ErrorKind, WireError, returned_error};
pub use frame::{FRAME_HEADER_LEN, FrameError, decode_header, encode_frame, encode_request};
pub use message::{Message, Output, ResponseBody};

/// Version of the wire protocol; the worker sends it in its `hello` and the
/// host refuses a worker that speaks another one.
pub const PROTOCOL_VERSION: u32 = 1;
