//! greffon as a Model Context Protocol server: every enabled plugin is a
//! tool any MCP client (a desktop assistant, an IDE agent, a framework)
//! can list and call, sandboxed and validated like any other call.
//!
//! - [`McpServer`]: the rmcp handler — tools, calls (cancellation,
//!   progress), tool-list changes in both protocol generations
//!   (`notifications/tools/list_changed` for handshake sessions,
//!   `subscriptions/listen` for 2026-07-28 ones);
//! - [`Backend`]: what the handler serves from — the embedded
//!   [`greffon_host::Host`], or a running `greffon serve` ([`Remote`]);
//! - `tools`: the enabled plugins as tools; [`result_of`]: a call's
//!   outcome as a tool result;
//! - [`http_service`]: the Streamable HTTP service `greffon serve` mounts
//!   at `/mcp`; [`serve_stdio`]: `greffon mcp`.

#![forbid(unsafe_code)]

mod backend;
mod remote;
mod server;
mod tools;

pub use backend::{Backend, ToolCall, call_host};
pub use remote::Remote;
pub use server::{HttpOptions, McpServer, http_service, serve_stdio};
pub use tools::result_of;

/// Why an MCP server could not run.
#[derive(Debug, thiserror::Error)]
pub enum McpError {
    #[error("cannot connect to the greffon server at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("the MCP session failed: {0}")]
    Session(String),
}
