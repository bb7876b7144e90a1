//! The adapter in process, with rmcp's own client over an in-memory pipe
//! and a real host (real sandboxed workers): tools from the registry, a
//! call, an error result, and a list change announced to the session.
//! The official Python client covers the binary (crates/greffon/tests/it/mcp.rs).

use greffon_core::Config;
use greffon_host::Host;
use greffon_mcp::McpServer;
use rmcp::model::CallToolRequestParams;
use rmcp::service::NotificationContext;
use rmcp::{ClientHandler, ClientLifecycleMode, ClientServiceExt, RoleClient, ServiceExt};
use serde_json::json;
use std::path::Path;
use std::time::Duration;
use tokio::sync::mpsc;

const ECHO: &str = "class P:\n    meta = {'name': 'echo', 'description': 'Echoes', 'inputs': {'schema': {'n': {'type': 'integer', 'maximum': 5}}}}\n    def run(self, n):\n        return {'n': n}\nplugin = P()\n";
const OTHER: &str =
    "class P:\n    meta = {'name': 'other'}\n    def run(self):\n        return {}\nplugin = P()\n";

fn write_plugin(root: &Path, folder: &str, code: &str) {
    let dir = root.join("plugins").join(folder);
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("plugin.py"), code).expect("write");
}

/// Counts the tool-list changes the server announces.
#[derive(Clone)]
struct Told(mpsc::UnboundedSender<()>);

impl ClientHandler for Told {
    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        let _ = self.0.send(());
    }
}

#[tokio::test]
async fn the_registry_is_the_tool_list_and_changes_are_announced() {
    let tmp = tempfile::tempdir().expect("tempdir");
    write_plugin(tmp.path(), "echo", ECHO);
    write_plugin(tmp.path(), "other", OTHER);
    let host = Host::open_with(tmp.path(), Config::default())
        .await
        .expect("host");
    host.enable("echo").await.expect("enable");

    let (server_io, client_io) = tokio::io::duplex(64 << 10);
    let server = McpServer::new(host.clone());
    tokio::spawn(async move {
        if let Ok(running) = server.serve(server_io).await {
            let _ = running.waiting().await;
        }
    });
    let (tx, mut told) = mpsc::unbounded_channel();
    let client = Told(tx)
        .serve_with_lifecycle(client_io, ClientLifecycleMode::Initialize)
        .await
        .expect("handshake");

    let tools = client.peer().list_all_tools().await.expect("tools");
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    assert_eq!(names, ["echo"], "only enabled plugins are tools");
    assert_eq!(
        tools[0].input_schema["properties"]["n"]["maximum"],
        json!(5)
    );

    let call = |n: i64| {
        let args = json!({ "n": n }).as_object().cloned().expect("object");
        CallToolRequestParams::new("echo").with_arguments(args)
    };
    let ok = client.peer().call_tool(call(3)).await.expect("call");
    assert_eq!(ok.structured_content, Some(json!({"n": 3})));
    let bad = client.peer().call_tool(call(9)).await.expect("a result");
    assert_eq!(bad.is_error, Some(true));
    let text = bad.structured_content.expect("structured").to_string();
    assert!(text.contains("'n'") && text.contains("maximum"), "{text}");

    host.enable("other").await.expect("enable other");
    tokio::time::timeout(Duration::from_secs(10), told.recv())
        .await
        .expect("the change is announced")
        .expect("a notification");
    let tools = client.peer().list_all_tools().await.expect("tools");
    assert_eq!(tools.len(), 2);

    host.disable("echo").await.expect("disable");
    tokio::time::timeout(Duration::from_secs(10), told.recv())
        .await
        .expect("the change is announced")
        .expect("a notification");
    let err = client
        .peer()
        .call_tool(call(1))
        .await
        .expect_err("a disabled tool is a protocol error");
    assert!(err.to_string().contains("'echo'"), "{err}");
    let _ = client.cancel().await;
    host.shutdown().await;
}
