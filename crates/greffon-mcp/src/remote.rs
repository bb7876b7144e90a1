//! `greffon mcp` while a `greffon serve` runs for the home: the stdio
//! session is served from the server's `/mcp`, so it sees the same
//! workers, scheduler and live state as every other client.

use crate::McpError;
use crate::backend::{Backend, ToolCall};
use greffon_host::Progress;
use rmcp::model::{
    CallToolRequest, CallToolRequestParams, CallToolResult, ClientRequest,
    ProgressNotificationParam, ProgressToken, ResultType, ServerResult, Tool,
};
use rmcp::service::{NotificationContext, Peer, PeerRequestOptions, RunningService, ServiceError};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ClientHandler, ClientLifecycleMode, ClientServiceExt, ErrorData, RoleClient};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{OnceCell, mpsc, watch};

type ProgressRoutes = Arc<Mutex<HashMap<ProgressToken, mpsc::UnboundedSender<Progress>>>>;

/// The client half: hears the server's notifications.
#[derive(Debug, Clone)]
struct Listener {
    changes: Arc<watch::Sender<u64>>,
    progress: ProgressRoutes,
}

impl ClientHandler for Listener {
    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.changes.send_modify(|g| *g = g.wrapping_add(1));
    }

    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        let routes = self.progress.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = routes.get(&params.progress_token) {
            let _ = tx.send(Progress {
                progress: params.progress,
                total: params.total,
                message: params.message,
            });
        }
    }
}

/// A running `greffon serve`, reached through its `/mcp`.
#[derive(Debug, Clone)]
pub struct Remote {
    url: Arc<str>,
    token: Arc<str>,
    /// The session with the server, opened once, in the background from
    /// [`Remote::connect`] so that it overlaps the stdio client's own
    /// handshake; the first request that needs it waits for it.
    session: Arc<OnceCell<Upstream>>,
    changes: Arc<watch::Sender<u64>>,
    progress: ProgressRoutes,
}

/// An open session with the server.
#[derive(Debug)]
struct Upstream {
    peer: Peer<RoleClient>,
    /// Keeps the session (and its notification stream) alive.
    _service: RunningService<RoleClient, Listener>,
}

impl Remote {
    /// A backend for the server at `url` (its `/mcp` endpoint); the session
    /// opens in the background. A server that cannot be reached fails the
    /// first request that needs it, naming the URL.
    pub fn connect(url: &str, token: &str) -> Remote {
        let remote = Remote {
            url: url.into(),
            token: token.into(),
            session: Arc::default(),
            changes: Arc::new(watch::Sender::new(0)),
            progress: ProgressRoutes::default(),
        };
        let early = remote.clone();
        tokio::spawn(async move {
            if let Err(e) = early.upstream().await {
                tracing::error!(target: "server", "{}", e.message);
            }
        });
        remote
    }

    async fn upstream(&self) -> Result<&Peer<RoleClient>, ErrorData> {
        let session = self
            .session
            .get_or_try_init(|| async {
                let listener = Listener {
                    changes: self.changes.clone(),
                    progress: self.progress.clone(),
                };
                let config = StreamableHttpClientTransportConfig::with_uri(self.url.clone())
                    .auth_header(self.token.to_string());
                let client = greffon_host::server_client(&self.url)
                    .build()
                    .map_err(|e| ErrorData::internal_error(format!("HTTP client: {e}"), None))?;
                let transport = StreamableHttpClientTransport::with_client(client, config);
                // A handshake session: the server then pushes tool-list
                // changes on the session's stream, with no subscription to
                // keep open.
                let service = listener
                    .serve_with_lifecycle(transport, ClientLifecycleMode::Initialize)
                    .await
                    .map_err(|e| {
                        let e = McpError::Connect {
                            url: self.url.to_string(),
                            reason: e.to_string(),
                        };
                        ErrorData::internal_error(e.to_string(), None)
                    })?;
                Ok::<_, ErrorData>(Upstream {
                    peer: service.peer().clone(),
                    _service: service,
                })
            })
            .await?;
        Ok(&session.peer)
    }
}

/// The server's own error as it sent it; a transport failure as internal.
fn from_server(e: ServiceError) -> ErrorData {
    match e {
        ServiceError::McpError(e) => e,
        other => ErrorData::internal_error(format!("the greffon server: {other}"), None),
    }
}

impl Backend for Remote {
    async fn tools(&self) -> Result<Vec<Tool>, ErrorData> {
        self.upstream()
            .await?
            .list_all_tools()
            .await
            .map_err(from_server)
    }

    async fn call(&self, call: ToolCall) -> Result<CallToolResult, ErrorData> {
        let params = CallToolRequestParams::new(call.name).with_arguments(call.arguments);
        let request = ClientRequest::CallToolRequest(CallToolRequest::new(params));
        let mut handle = self
            .upstream()
            .await?
            .send_cancellable_request(request, PeerRequestOptions::no_options())
            .await
            .map_err(from_server)?;
        let token = handle.progress_token.clone();
        if let Some(tx) = call.progress {
            let mut routes = self.progress.lock().unwrap_or_else(|p| p.into_inner());
            routes.insert(token.clone(), tx);
        }
        let answer = tokio::select! {
            answer = &mut handle.rx => Some(answer),
            () = call.cancel.cancelled() => None,
        };
        self.progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&token);
        let Some(answer) = answer else {
            // The server stops the call in its worker.
            let _ = handle.cancel(Some("cancelled by the client".into())).await;
            return Err(ErrorData::internal_error("the call was cancelled", None));
        };
        match answer.map_err(|_| from_server(ServiceError::TransportClosed))? {
            // The server answered this handshake-era session without
            // `resultType`; the client on stdio may speak 2026-07-28, which
            // requires it (rmcp strips it again for older clients).
            Ok(ServerResult::CallToolResult(mut result)) => {
                result.result_type = Some(ResultType::COMPLETE);
                Ok(result)
            }
            Ok(_) => Err(from_server(ServiceError::UnexpectedResponse)),
            Err(e) => Err(from_server(e)),
        }
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}
