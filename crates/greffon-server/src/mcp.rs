//! `/mcp`: the MCP server over the same host as `/v1`, its calls counted
//! in `/metrics` like any other.

use crate::app::App;
use crate::metrics::outcome_label;
use greffon_mcp::{Backend, ToolCall};
use rmcp::ErrorData;
use rmcp::model::{CallToolResult, Tool};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::watch;

/// The server's host, seen by MCP sessions.
#[derive(Clone)]
pub(crate) struct Metered(pub Arc<App>);

impl Backend for Metered {
    async fn tools(&self) -> Result<Vec<Tool>, ErrorData> {
        self.0.host.tools().await
    }

    async fn call(&self, call: ToolCall) -> Result<CallToolResult, ErrorData> {
        let started = Instant::now();
        let name = call.name.clone();
        let outcome = greffon_mcp::call_host(&self.0.host, call).await;
        self.0
            .metrics
            .call(&name, outcome_label(&outcome), started.elapsed());
        greffon_mcp::result_of(outcome)
    }

    fn changes(&self) -> watch::Receiver<u64> {
        Backend::changes(&self.0.host)
    }
}
