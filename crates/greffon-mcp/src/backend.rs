//! What the MCP handler serves from: the same host API the HTTP routes
//! use, embedded or behind a running `greffon serve`.

use greffon_host::{CallError, CallOptions, CancellationToken, Host, Progress};
use rmcp::ErrorData;
use rmcp::model::{CallToolResult, JsonObject, Tool};
use serde_json::Value;
use std::future::Future;
use tokio::sync::{mpsc, watch};

/// One `tools/call` as the handler passes it on.
#[derive(Debug)]
pub struct ToolCall {
    pub name: String,
    pub arguments: JsonObject,
    /// Cancelled when the client cancels the request (or goes away).
    pub cancel: CancellationToken,
    /// Set when the client asked for progress (it sent a progress token).
    pub progress: Option<mpsc::UnboundedSender<Progress>>,
}

/// A source of tools. Implemented by [`Host`] (embedded) and by
/// [`crate::Remote`] (a running server).
pub trait Backend: Clone + Send + Sync + 'static {
    /// The tools right now: one per enabled plugin.
    fn tools(&self) -> impl Future<Output = Result<Vec<Tool>, ErrorData>> + Send;
    /// Runs one call to its end, its cancellation or its failure.
    fn call(
        &self,
        call: ToolCall,
    ) -> impl Future<Output = Result<CallToolResult, ErrorData>> + Send;
    /// Changes whenever the tool list may have changed.
    fn changes(&self) -> watch::Receiver<u64>;
}

/// Runs `call` on `host` with its cancellation and progress: the host's
/// own answer, before it becomes a tool result ([`crate::result_of`]), for
/// a backend that also counts outcomes (`greffon serve`'s metrics).
pub async fn call_host(host: &Host, call: ToolCall) -> Result<Value, CallError> {
    let options = CallOptions {
        cancel: Some(call.cancel),
        progress: call.progress,
        ..CallOptions::default()
    };
    host.call_with(&call.name, Value::Object(call.arguments), options)
        .await
}

impl Backend for Host {
    async fn tools(&self) -> Result<Vec<Tool>, ErrorData> {
        Ok(crate::tools::tools_of(&self.plugins()))
    }

    async fn call(&self, call: ToolCall) -> Result<CallToolResult, ErrorData> {
        crate::tools::result_of(call_host(self, call).await)
    }

    fn changes(&self) -> watch::Receiver<u64> {
        Host::changes(self)
    }
}
