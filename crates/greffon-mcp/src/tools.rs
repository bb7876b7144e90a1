//! A plugin as an MCP tool, and a call's outcome as a tool result.

use greffon_core::Permission;
use greffon_host::CallError;
use greffon_protocol::ErrorKind;
use greffon_protocol::api::{PluginInfo, State};
use rmcp::ErrorData;
use rmcp::model::{CallToolResult, JsonObject, Tool, ToolAnnotations};
use serde_json::{Value, json};
use std::sync::Arc;

/// The tools of the enabled plugins, by name.
pub(crate) fn tools_of(plugins: &[PluginInfo]) -> Vec<Tool> {
    plugins
        .iter()
        .filter(|p| p.state == State::Enabled)
        .map(tool_of)
        .collect()
}

/// One enabled plugin as a tool: its name, its description, its
/// normalized argument schema, and hints drawn from its permissions.
fn tool_of(plugin: &PluginInfo) -> Tool {
    let schema = match &plugin.schema {
        Some(Value::Object(o)) => o.clone(),
        _ => JsonObject::from_iter([("type".to_string(), json!("object"))]),
    };
    let declares = |p: Permission| plugin.permissions.contains(&p);
    // Hints only, as MCP says: what the kernel lets the plugin do, not
    // what it does. A plugin that may neither write files nor run
    // programs cannot change this machine (host services such as
    // `greffon.tasks` are not permissions, so they are not seen here).
    let mut annotations = ToolAnnotations::new();
    annotations.read_only_hint =
        Some(!declares(Permission::FsWrite) && !declares(Permission::Process));
    annotations.open_world_hint = Some(declares(Permission::Net));
    Tool::new(
        plugin.name.clone(),
        plugin.description.clone(),
        Arc::new(schema),
    )
    .with_annotations(annotations)
}

/// The embedded host's answer as MCP sees it. The plugin's result is
/// structured content (and its JSON as text); a returned `{"error"}`, a
/// schema violation, a timeout, a crash or a cancellation is a result with
/// `isError`, so the assistant reads it and the session goes on. A tool
/// that is not there to call (unknown, disabled, failed) is a protocol
/// error naming it.
pub fn result_of(outcome: Result<Value, CallError>) -> Result<CallToolResult, ErrorData> {
    match outcome {
        Ok(value) if greffon_protocol::returned_error(&value).is_some() => {
            Ok(CallToolResult::structured_error(value))
        }
        Ok(value) => Ok(CallToolResult::structured(value)),
        Err(e) => match e.kind {
            ErrorKind::UnknownPlugin | ErrorKind::NotEnabled | ErrorKind::PluginFailed => {
                Err(ErrorData::invalid_params(e.message, None))
            }
            kind => Ok(CallToolResult::structured_error(
                json!({"error": e.message, "kind": kind.as_str()}),
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_returned_error_and_a_violation_are_error_results() {
        let r = result_of(Ok(json!({"error": "no city"}))).expect("a result");
        assert_eq!(r.is_error, Some(true));
        assert_eq!(r.structured_content, Some(json!({"error": "no city"})));
        let e = CallError {
            kind: ErrorKind::Validation,
            message: "plugin 'w': invalid arguments: 'days' must be <= 16".into(),
            dump: None,
        };
        let r = result_of(Err(e)).expect("a result");
        assert_eq!(r.is_error, Some(true));
        let text = r.structured_content.expect("structured").to_string();
        assert!(
            text.contains("'days' must be <= 16") && text.contains("validation"),
            "{text}"
        );
    }

    #[test]
    fn a_result_is_structured_and_text() {
        let r = result_of(Ok(json!({"t": 21}))).expect("a result");
        assert_eq!(r.is_error, Some(false));
        assert_eq!(r.structured_content, Some(json!({"t": 21})));
        assert_eq!(r.content.len(), 1);
    }

    #[test]
    fn an_absent_tool_is_a_protocol_error() {
        for kind in [
            ErrorKind::UnknownPlugin,
            ErrorKind::NotEnabled,
            ErrorKind::PluginFailed,
        ] {
            let e = CallError {
                kind,
                message: "plugin 'x' is disabled".into(),
                dump: None,
            };
            let err = result_of(Err(e)).expect_err("a protocol error");
            assert!(err.message.contains("plugin 'x'"), "{}", err.message);
        }
    }
}
