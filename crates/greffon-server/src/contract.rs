//! The published contract made as strict as the validation (issue #18).
//! The route annotations describe most bodies and parameters as a bare
//! `object` or `string`; a client generated from that (or schemathesis)
//! would send what the server refuses. Here they get the JSON Schema the
//! handlers actually enforce, written once, next to one another.

use serde_json::{Value, json};

/// A plugin name (`greffon_core::is_valid_name`).
const PLUGIN_NAME: &str = "^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$";
/// A secret name (`greffon_core::is_valid_secret_name`).
const SECRET_NAME: &str = "^[A-Za-z_][A-Za-z0-9_]{0,63}$";

/// Tightens the generated description in place.
pub(crate) fn tighten(doc: &mut Value) {
    tighten_secrets(doc);
    tighten_queries(doc);
    tighten_bodies(doc);
}

/// The secret routes: names as the store checks them, a `{"value"}` body.
fn tighten_secrets(doc: &mut Value) {
    for path in ["/v1/secrets/{plugin}", "/v1/secrets/{plugin}/{name}"] {
        for method in ["get", "put", "delete"] {
            set_param(
                doc,
                path,
                method,
                "plugin",
                json!({"type": "string", "pattern": PLUGIN_NAME}),
            );
            set_param(
                doc,
                path,
                method,
                "name",
                json!({"type": "string", "pattern": SECRET_NAME}),
            );
        }
    }
    set_body(
        doc,
        "/v1/secrets/{plugin}/{name}",
        "put",
        json!({
            "type": "object",
            "required": ["value"],
            "properties": {"value": {"type": "string"}},
            "additionalProperties": false
        }),
    );
}

/// Query parameters: the handlers clamp `limit` (500 records) and `n` (100
/// fire times) but refuse what does not fit their integer type.
fn tighten_queries(doc: &mut Value) {
    set_param(
        doc,
        "/v1/logs",
        "get",
        "category",
        json!({"type": "string", "enum": ["server", "plugin", "llm", "audit"]}),
    );
    set_param(
        doc,
        "/v1/logs",
        "get",
        "limit",
        json!({"type": "integer", "minimum": 0, "maximum": u64::MAX}),
    );
    set_param(
        doc,
        "/v1/tasks/{task}/runs",
        "get",
        "limit",
        json!({"type": "integer", "minimum": 0, "maximum": u32::MAX}),
    );
    set_param(
        doc,
        "/v1/tasks/{task}/next",
        "get",
        "n",
        json!({"type": "integer", "minimum": 0, "maximum": crate::tasks::MAX_NEXT}),
    );
    for path in ["/v1/tasks/{task}/runs", "/v1/tasks/{task}/next"] {
        add_response(
            doc,
            path,
            "get",
            "422",
            "A query parameter that is not a number of the right range",
        );
    }
}

/// Request bodies of the task and LLM routes, and the infer stream.
fn tighten_bodies(doc: &mut Value) {
    set_body(
        doc,
        "/v1/tasks/{task}/run",
        "post",
        json!({
            "type": "object",
            "properties": {"force": {"type": "boolean"}},
            "additionalProperties": false
        }),
    );
    add_response(
        doc,
        "/v1/tasks/{task}/run",
        "post",
        "422",
        "A body other than {\"force\": bool}",
    );
    set_body(doc, "/v1/llm/infer", "post", infer_body());
    // With "stream": true the answer is server-sent events.
    if let Some(op) = operation(doc, "/v1/llm/infer", "post") {
        op["responses"]["200"]["content"]["text/event-stream"] =
            json!({"schema": {"type": "object"}});
    }
    set_body(doc, "/v1/tasks", "post", task_body(true));
    set_body(doc, "/v1/tasks/{task}", "patch", task_body(false));
}

/// A task as `NewTask` (`new`) or `TaskPatch` reads it: the fields and
/// their types. What JSON Schema cannot say — that the plugin exists and
/// the arguments fit its schema, that a cron expression parses, that
/// `end` comes after `start` — is answered 422 naming the field.
fn task_body(new: bool) -> Value {
    let seconds = json!({"type": ["number", "null"], "minimum": 0});
    let stamp = json!({"type": "string", "format": "date-time"});
    let maybe_stamp = json!({"oneOf": [stamp, {"type": "null"}]});
    let trigger = json!({"oneOf": [
        {"type": "object", "required": ["kind", "expr"], "additionalProperties": false, "properties": {
            "kind": {"const": "cron"}, "expr": {"type": "string"}, "tz": {"type": ["string", "null"]}}},
        {"type": "object", "required": ["kind", "every_s"], "additionalProperties": false, "properties": {
            "kind": {"const": "interval"}, "every_s": {"type": "integer", "minimum": 1},
            "start": maybe_stamp, "end": maybe_stamp}},
        {"type": "object", "required": ["kind", "at"], "additionalProperties": false, "properties": {
            "kind": {"const": "date"}, "at": stamp}}
    ]});
    let mut schema = json!({
        "type": "object",
        "additionalProperties": false,
        "properties": {
            // Trimmed, then 1 to 100 characters, no control character,
            // not only digits (digits name a task by its id).
            "name": {
                "type": "string",
                "maxLength": 100,
                "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*\\S[^\\u0000-\\u001f\\u007f-\\u009f]*$",
                "not": {"pattern": "^\\s*[0-9]+\\s*$"}
            },
            "plugin": {"type": "string"},
            "args": {"type": "object"},
            "trigger": trigger,
            "enabled": {"type": ["boolean", "null"]},
            "coalesce": {"enum": ["latest", "earliest", "all", null]},
            "misfire_grace_s": {"type": ["number", "null"], "minimum": 0},
            "max_instances": {"type": ["integer", "null"], "minimum": 1, "maximum": u32::MAX},
            "jitter_s": seconds,
            "timeout_s": {"type": ["number", "null"], "exclusiveMinimum": 0},
            "retries": {"type": ["integer", "null"], "minimum": 0, "maximum": 100},
            "retry_backoff_s": seconds
        }
    });
    if new {
        schema["required"] = json!(["name", "plugin", "trigger"]);
    } else {
        // A patch leaves a field that is null as it is.
        for field in ["name", "plugin", "args", "trigger"] {
            let one = schema["properties"][field].take();
            schema["properties"][field] = json!({"anyOf": [one, {"type": "null"}]});
        }
    }
    schema
}

/// `POST /v1/llm/infer`: the prompt, the options `InferOptions::check`
/// accepts (each may be null, read as unset), and `stream`.
fn infer_body() -> Value {
    let u32_ = |min: u32| json!({"type": ["integer", "null"], "minimum": min, "maximum": u32::MAX});
    json!({
        "type": "object",
        "required": ["prompt"],
        "additionalProperties": false,
        "properties": {
            "prompt": {"type": "string"},
            "stream": {"type": "boolean"},
            "options": {
                "type": ["object", "null"],
                "additionalProperties": false,
                "properties": {
                    "max_tokens": u32_(1),
                    "temperature": {"type": ["number", "null"], "minimum": 0, "maximum": 2},
                    // Read as f32: below ~7e-46 a positive number rounds to
                    // 0, which is refused; 1e-45 still reads as above 0.
                    "top_p": {"type": ["number", "null"], "minimum": 1e-45, "maximum": 1},
                    "top_k": u32_(0),
                    "seed": u32_(0),
                    "repeat_penalty": {"type": ["number", "null"], "minimum": 1e-45, "maximum": 2},
                    "stop": {"type": ["array", "null"], "maxItems": 8, "items": {"type": "string", "minLength": 1}},
                    "system": {"type": ["string", "null"]}
                }
            }
        }
    })
}

fn operation<'a>(doc: &'a mut Value, path: &str, method: &str) -> Option<&'a mut Value> {
    doc.get_mut("paths")?.get_mut(path)?.get_mut(method)
}

/// Replaces the schema of the parameter `name` of one operation.
fn set_param(doc: &mut Value, path: &str, method: &str, name: &str, schema: Value) {
    let Some(params) = operation(doc, path, method)
        .and_then(|op| op.get_mut("parameters"))
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    for p in params.iter_mut().filter(|p| p["name"] == name) {
        p["schema"] = schema.clone();
    }
}

/// Replaces the JSON request body schema of one operation.
fn set_body(doc: &mut Value, path: &str, method: &str, schema: Value) {
    if let Some(op) = operation(doc, path, method) {
        op["requestBody"]["content"]["application/json"]["schema"] = schema;
    }
}

/// Documents a status one operation answers.
fn add_response(doc: &mut Value, path: &str, method: &str, status: &str, description: &str) {
    if let Some(op) = operation(doc, path, method) {
        op["responses"][status] = json!({
            "description": description,
            "content": {"application/json": {"schema": {"type": "object"}}}
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tightened_schemas_reach_their_operations() {
        let p = &crate::openapi()["paths"];
        assert_eq!(
            p["/v1/llm/infer"]["post"]["requestBody"]["content"]["application/json"]["schema"]["required"],
            json!(["prompt"])
        );
        let logs = p["/v1/logs"]["get"]["parameters"]
            .as_array()
            .expect("params");
        assert!(
            logs.iter()
                .any(|q| q["name"] == "category" && q["schema"]["enum"].is_array())
        );
        assert!(p["/v1/tasks/{task}/next"]["get"]["responses"]["422"].is_object());
        let secret = p["/v1/secrets/{plugin}/{name}"]["delete"]["parameters"]
            .as_array()
            .expect("params");
        assert!(secret.iter().all(|q| q["schema"]["pattern"].is_string()));
    }
}
