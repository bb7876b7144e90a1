//! The rmcp handler over a [`Backend`], and the two ways to serve it.

use crate::McpError;
use crate::backend::{Backend, ToolCall};
use greffon_host::Progress;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, Implementation, ListToolsResult,
    PaginatedRequestParams, ProgressNotificationParam, ProgressToken, ServerCapabilities,
    ServerConfig, SubscriptionFilter,
};
use rmcp::service::{NotificationContext, Peer, RequestContext, SubscriptionContext};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How often a handshake session's change watcher checks that its client
/// is still there when nothing changes.
const PEER_CHECK: Duration = Duration::from_secs(30);

/// greffon's MCP server: one tool per enabled plugin of its backend.
#[derive(Debug, Clone)]
pub struct McpServer<B> {
    backend: B,
}

impl<B: Backend> McpServer<B> {
    pub fn new(backend: B) -> Self {
        McpServer { backend }
    }
}

impl<B: Backend> ServerHandler for McpServer<B> {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .build(),
        )
        .with_server_info(Implementation::new("greffon", env!("CARGO_PKG_VERSION")))
        .with_instructions(
            "Each tool is a greffon plugin running in its own kernel sandbox. \
             Errors (invalid arguments, the plugin's own error, a timeout, a crash) \
             come back as tool results with isError set.",
        )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(self.backend.tools().await?))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let mut call = ToolCall {
            name: request.name.to_string(),
            arguments: request.arguments.unwrap_or_default(),
            cancel: context.ct.clone(),
            progress: None,
        };
        let Some(token) = context.meta.get_progress_token() else {
            return self.backend.call(call).await.map(Into::into);
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        call.progress = Some(tx);
        let call = self.backend.call(call);
        tokio::pin!(call);
        // Progress is sent from this task, so every report reaches the
        // client before the result does.
        let outcome = loop {
            tokio::select! {
                biased;
                Some(p) = rx.recv() => send_progress(&context.peer, &token, p).await,
                outcome = &mut call => break outcome,
            }
        };
        while let Ok(p) = rx.try_recv() {
            send_progress(&context.peer, &token, p).await;
        }
        outcome.map(Into::into)
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        // A handshake session learns of changes by notification, for as
        // long as its client is there.
        let peer = context.peer;
        let mut changes = self.backend.changes();
        changes.mark_unchanged();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    changed = changes.changed() => {
                        if changed.is_err() || peer.notify_tool_list_changed().await.is_err() {
                            return;
                        }
                    }
                    () = tokio::time::sleep(PEER_CHECK) => {
                        if peer.is_transport_closed() {
                            return;
                        }
                    }
                }
            }
        });
    }

    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        Some(requested.supported_by(&self.get_info().capabilities))
    }

    async fn listen(&self, context: SubscriptionContext) -> Result<(), ErrorData> {
        let mut changes = self.backend.changes();
        changes.mark_unchanged();
        loop {
            tokio::select! {
                () = context.cancelled() => return Ok(()),
                changed = changes.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    if context.sink().notify_tool_list_changed().await.is_err() {
                        return Ok(());
                    }
                }
            }
        }
    }
}

async fn send_progress(peer: &Peer<RoleServer>, token: &ProgressToken, p: Progress) {
    let mut param = ProgressNotificationParam::new(token.clone(), p.progress);
    param.total = p.total;
    param.message = p.message;
    // A client that went away loses its progress, not its result.
    let _ = peer.notify_progress(param).await;
}

/// Serves `backend` on stdin/stdout until the client closes them.
pub async fn serve_stdio<B: Backend>(backend: B) -> Result<(), McpError> {
    // Clients launch stdio servers on pipes: served by the reactor, with
    // no hand-off to a blocking thread per message.
    let running = McpServer::new(backend)
        .serve(rmcp::transport::stdio_pipes())
        .await
        .map_err(|e| McpError::Session(e.to_string()))?;
    running
        .waiting()
        .await
        .map_err(|e| McpError::Session(e.to_string()))?;
    Ok(())
}

/// What `/mcp` accepts.
#[derive(Debug, Clone, Default)]
pub struct HttpOptions {
    /// `Host` names accepted besides loopback ones.
    pub allowed_hosts: Vec<String>,
    /// Browser origins accepted; any other `Origin` is refused (403).
    pub allowed_origins: Vec<String>,
    /// Cancelled at shutdown: every session ends.
    pub shutdown: CancellationToken,
}

/// The Streamable HTTP service `greffon serve` mounts at `/mcp` (the
/// bearer token is checked in front of it). Handshake-era clients get a
/// session, so they can be told of tool-list changes; 2026-07-28 clients
/// are served statelessly, as that version requires, with JSON answers
/// where no progress is streamed.
pub fn http_service<B: Backend>(
    backend: B,
    options: HttpOptions,
) -> StreamableHttpService<McpServer<B>, LocalSessionManager> {
    let mut hosts: Vec<String> = ["localhost", "127.0.0.1", "::1"]
        .into_iter()
        .map(String::from)
        .collect();
    hosts.extend(options.allowed_hosts);
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(true)
        // A 2026-07-28 request whose answer is its only message gets plain
        // JSON (one write, no event stream); one that reports progress
        // still streams.
        .with_json_response(true)
        .with_allowed_hosts(hosts)
        .with_allowed_origins(options.allowed_origins)
        .enforce_origin_validation()
        .with_cancellation_token(options.shutdown);
    let server = McpServer::new(backend);
    StreamableHttpService::new(move || Ok(server.clone()), Default::default(), config)
}
