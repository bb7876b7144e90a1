//! `inputs.schema` in its three accepted forms, normalized to one JSON
//! Schema, and the validation of call arguments against it: every call is
//! checked before it reaches the plugin.

use serde_json::{Map, Value, json};
use std::fmt;

/// Where a plugin's schema came from; decides who fills defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SchemaSource {
    /// The plugin declared none: any object is accepted.
    None,
    /// The simplified `{field: spec}` dict.
    Dict,
    /// A full JSON Schema object.
    JsonSchema,
    /// A Pydantic model class; the worker also validates through it.
    Pydantic,
}

/// JSON type names accepted in the simplified form, with the Python
/// spellings an author may use out of habit.
fn json_type(name: &str) -> Option<&'static str> {
    Some(match name {
        "string" | "str" => "string",
        "integer" | "int" => "integer",
        "number" | "float" => "number",
        "boolean" | "bool" => "boolean",
        "array" | "list" => "array",
        "object" | "dict" => "object",
        "null" | "None" => "null",
        _ => return None,
    })
}

const TYPE_NAMES: &str = "string, integer, number, boolean, array, object, null";

/// Turns a raw `inputs.schema` (as reported by the worker) into a JSON
/// Schema. Problems are returned all at once, each naming the field.
///
/// A dict is a full JSON Schema when it has `$schema`, `properties`, or
/// `"type": "object"`; otherwise it is the simplified form.
pub fn normalize(raw: Option<&Value>) -> Result<(SchemaSource, Value), Vec<String>> {
    let raw = match raw {
        None | Some(Value::Null) => {
            return Ok((SchemaSource::None, json!({"type": "object"})));
        }
        Some(v) => v,
    };
    let Value::Object(map) = raw else {
        return Err(vec![format!(
            "inputs.schema must be a Pydantic model class or a dict, got {}",
            describe(raw)
        )]);
    };
    if let Some(model) = map.get("$pydantic") {
        let schema = model.get("schema").cloned().unwrap_or(Value::Null);
        return check_compiles(SchemaSource::Pydantic, schema);
    }
    if let Some(Value::String(t)) = map.get("$unsupported") {
        return Err(vec![format!(
            "inputs.schema is a Python {t}, not a Pydantic model class or a dict"
        )]);
    }
    let is_full = map.contains_key("$schema")
        || map.contains_key("properties")
        || map.get("type") == Some(&Value::String("object".into()));
    if is_full {
        return check_compiles(SchemaSource::JsonSchema, raw.clone());
    }
    let schema = from_simplified(map)?;
    check_compiles(SchemaSource::Dict, schema)
}

fn from_simplified(map: &Map<String, Value>) -> Result<Value, Vec<String>> {
    let mut problems = Vec::new();
    let mut properties = Map::new();
    let mut required = Vec::new();
    for (field, spec) in map {
        let mut fragment = match spec {
            Value::String(name) => match json_type(name) {
                Some(t) => Map::from_iter([("type".to_string(), Value::from(t))]),
                None => {
                    problems.push(format!(
                        "inputs.schema field '{field}': unknown type '{name}' (expected one of {TYPE_NAMES})"
                    ));
                    continue;
                }
            },
            Value::Object(frag) if frag.contains_key("$unsupported") => {
                let t = frag["$unsupported"].as_str().unwrap_or("object");
                problems.push(format!(
                    "inputs.schema field '{field}': a Python {t} is not a field spec (use a type name or a JSON Schema fragment)"
                ));
                continue;
            }
            Value::Object(frag) => frag.clone(),
            other => {
                problems.push(format!(
                    "inputs.schema field '{field}': spec must be a type name or a dict, got {}",
                    describe(other)
                ));
                continue;
            }
        };
        if let Some(Value::String(name)) = fragment.get("type") {
            match json_type(name) {
                Some(t) => {
                    fragment.insert("type".into(), Value::from(t));
                }
                None => problems.push(format!(
                    "inputs.schema field '{field}': unknown type '{name}' (expected one of {TYPE_NAMES})"
                )),
            }
        }
        let is_required = match fragment.remove("required") {
            None => !fragment.contains_key("default"),
            Some(Value::Bool(b)) => b,
            Some(other) => {
                problems.push(format!(
                    "inputs.schema field '{field}': 'required' must be true or false, got {}",
                    describe(&other)
                ));
                continue;
            }
        };
        if is_required {
            required.push(Value::from(field.clone()));
        }
        properties.insert(field.clone(), Value::Object(fragment));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(json!({
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    }))
}

fn check_compiles(
    source: SchemaSource,
    schema: Value,
) -> Result<(SchemaSource, Value), Vec<String>> {
    if !schema.is_object() {
        return Err(vec![format!(
            "inputs.schema must describe an object, got {}",
            describe(&schema)
        )]);
    }
    match jsonschema::validator_for(&schema) {
        Ok(_) => Ok((source, schema)),
        Err(e) => {
            let at = e.instance_path().as_str();
            let at = if at.is_empty() {
                String::new()
            } else {
                format!(" at {at}")
            };
            Err(vec![format!(
                "inputs.schema is not a valid JSON Schema{at}: {e}"
            )])
        }
    }
}

/// A short description of a JSON value's type for error messages.
pub fn describe(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Whether `schema` types the top-level property `name` as a string (for
/// `KEY=VALUE` arguments on the command line).
pub fn is_string_property(schema: &Value, name: &str) -> bool {
    let t = schema
        .get("properties")
        .and_then(|p| p.get(name))
        .and_then(|p| p.get("type"));
    match t {
        Some(Value::String(s)) => s == "string",
        Some(Value::Array(types)) => types.iter().any(|t| t == "string"),
        _ => false,
    }
}

/// A compiled schema, ready to check call arguments.
pub struct InputSchema {
    source: SchemaSource,
    schema: Value,
    validator: jsonschema::Validator,
    /// Top-level `default`s, applied by the host for every source except
    /// Pydantic (whose model applies its own in the worker).
    defaults: Vec<(String, Value)>,
}

impl fmt::Debug for InputSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InputSchema")
            .field("source", &self.source)
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

/// One way the arguments break the schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The argument at fault (dotted path), when there is one.
    pub field: Option<String>,
    /// The JSON Schema keyword that failed (`required`, `maximum`, ...).
    pub rule: String,
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(
                f,
                "argument '{field}': {} (rule: {})",
                self.message, self.rule
            ),
            None => write!(f, "{} (rule: {})", self.message, self.rule),
        }
    }
}

impl InputSchema {
    /// Compiles a normalized schema (see [`normalize`]).
    pub fn compile(source: SchemaSource, schema: Value) -> Result<InputSchema, String> {
        let validator = jsonschema::validator_for(&schema)
            .map_err(|e| format!("inputs.schema is not a valid JSON Schema: {e}"))?;
        let defaults = if source == SchemaSource::Pydantic {
            Vec::new()
        } else {
            schema
                .get("properties")
                .and_then(Value::as_object)
                .map(|props| {
                    props
                        .iter()
                        .filter_map(|(k, p)| p.get("default").map(|d| (k.clone(), d.clone())))
                        .collect()
                })
                .unwrap_or_default()
        };
        Ok(InputSchema {
            source,
            schema,
            validator,
            defaults,
        })
    }

    pub fn source(&self) -> SchemaSource {
        self.source
    }

    /// The normalized JSON Schema.
    pub fn schema(&self) -> &Value {
        &self.schema
    }

    /// Checks `args` and returns them with defaults filled in.
    pub fn check(&self, args: Value) -> Result<Value, Vec<Violation>> {
        let Value::Object(mut map) = args else {
            return Err(vec![Violation {
                field: None,
                rule: "type".into(),
                message: format!("arguments must be a JSON object, got {}", describe(&args)),
            }]);
        };
        for (name, default) in &self.defaults {
            if !map.contains_key(name) {
                map.insert(name.clone(), default.clone());
            }
        }
        let args = Value::Object(map);
        // The common case answers without collecting anything.
        if self.validator.is_valid(&args) {
            return Ok(args);
        }
        Err(self.validator.iter_errors(&args).map(violation).collect())
    }
}

fn violation(e: jsonschema::ValidationError<'_>) -> Violation {
    use jsonschema::error::ValidationErrorKind as K;
    let rule = e.kind().keyword().to_string();
    let path: Vec<String> = e.instance_path().iter().map(|s| s.to_string()).collect();
    let at = (!path.is_empty()).then(|| path.join("."));
    let join = |base: Option<&String>, name: &str| match base {
        Some(b) => format!("{b}.{name}"),
        None => name.to_string(),
    };
    match e.kind() {
        K::Required { property } => {
            let name = property
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| property.to_string());
            Violation {
                field: Some(join(at.as_ref(), &name)),
                rule,
                message: "is required but missing".into(),
            }
        }
        K::AdditionalProperties { unexpected } => Violation {
            field: Some(join(at.as_ref(), &unexpected.join(", "))),
            rule,
            message: "is not an accepted argument".into(),
        },
        _ => Violation {
            field: at,
            rule,
            message: e.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compiled(raw: Value) -> InputSchema {
        let (source, schema) = normalize(Some(&raw)).expect("normalizes");
        InputSchema::compile(source, schema).expect("compiles")
    }

    #[test]
    fn simplified_dict_becomes_a_strict_object_schema() {
        let (source, schema) = normalize(Some(&json!({
            "city": "string",
            "days": {"type": "int", "default": 1, "minimum": 1, "maximum": 16},
            "units": {"type": "string", "enum": ["celsius", "fahrenheit"], "required": false},
        })))
        .expect("normalizes");
        assert_eq!(source, SchemaSource::Dict);
        assert_eq!(schema["required"], json!(["city"]));
        assert_eq!(schema["properties"]["days"]["type"], "integer");
        assert_eq!(schema["additionalProperties"], false);
        assert!(schema["properties"]["units"].get("required").is_none());
    }

    #[test]
    fn full_json_schema_passes_unchanged() {
        let raw = json!({"type": "object", "properties": {"q": {"type": "string"}}});
        let (source, schema) = normalize(Some(&raw)).expect("normalizes");
        assert_eq!(source, SchemaSource::JsonSchema);
        assert_eq!(schema, raw);
    }

    #[test]
    fn pydantic_marker_uses_the_model_schema() {
        let raw = json!({"$pydantic": {"name": "Args", "schema": {
            "type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}}});
        let (source, schema) = normalize(Some(&raw)).expect("normalizes");
        assert_eq!(source, SchemaSource::Pydantic);
        assert_eq!(schema["required"], json!(["n"]));
    }

    #[test]
    fn missing_schema_accepts_any_object() {
        let s = InputSchema::compile(SchemaSource::None, normalize(None).expect("ok").1)
            .expect("compiles");
        assert!(s.check(json!({"anything": 1})).is_ok());
        assert!(s.check(json!([1])).is_err());
    }

    #[test]
    fn bad_specs_are_all_reported_with_their_field() {
        let problems = normalize(Some(&json!({
            "a": "strng",
            "b": 3,
            "c": {"type": "string", "required": "yes"},
            "d": {"$unsupported": "function"},
        })))
        .expect_err("refused");
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems[0].contains("field 'a'") && problems[0].contains("unknown type 'strng'"));
        assert!(problems[1].contains("field 'b'"));
        assert!(problems[2].contains("field 'c'") && problems[2].contains("'required'"));
        assert!(problems[3].contains("field 'd'") && problems[3].contains("function"));
    }

    #[test]
    fn invalid_json_schema_is_refused() {
        let problems = normalize(Some(
            &json!({"type": "object", "properties": {"x": {"type": "strin"}}}),
        ))
        .expect_err("refused");
        assert!(
            problems[0].contains("not a valid JSON Schema"),
            "{problems:?}"
        );
        assert!(normalize(Some(&json!("string"))).is_err());
        assert!(normalize(Some(&json!({"$unsupported": "int"}))).is_err());
    }

    #[test]
    fn defaults_are_filled_and_violations_name_field_and_rule() {
        let s = compiled(json!({
            "city": "string",
            "days": {"type": "integer", "default": 1, "minimum": 1, "maximum": 16},
        }));
        let ok = s.check(json!({"city": "Paris"})).expect("valid");
        assert_eq!(ok, json!({"city": "Paris", "days": 1}));

        let v = s
            .check(json!({"days": 20, "extra": true}))
            .expect_err("invalid");
        let rendered: Vec<String> = v.iter().map(ToString::to_string).collect();
        assert!(
            v.iter()
                .any(|x| x.field.as_deref() == Some("city") && x.rule == "required"),
            "{rendered:?}"
        );
        assert!(
            v.iter()
                .any(|x| x.field.as_deref() == Some("days") && x.rule == "maximum"),
            "{rendered:?}"
        );
        assert!(
            v.iter()
                .any(|x| x.field.as_deref() == Some("extra") && x.rule == "additionalProperties"),
            "{rendered:?}"
        );
        let days = rendered
            .iter()
            .find(|r| r.contains("'days'"))
            .expect("days violation");
        assert!(days.contains("16"), "{days}");
    }

    #[test]
    fn nested_paths_are_dotted() {
        let s = compiled(json!({"type": "object", "properties": {
            "opts": {"type": "object", "properties": {"n": {"type": "integer"}}}}}));
        let v = s.check(json!({"opts": {"n": "x"}})).expect_err("invalid");
        assert_eq!(v[0].field.as_deref(), Some("opts.n"));
        assert_eq!(v[0].rule, "type");
    }

    #[test]
    fn string_properties_are_known() {
        let s = compiled(json!({"q": "string", "n": "integer", "m": {"type": ["string", "null"]}}));
        assert!(is_string_property(s.schema(), "q"));
        assert!(is_string_property(s.schema(), "m"));
        assert!(!is_string_property(s.schema(), "n"));
        assert!(!is_string_property(s.schema(), "missing"));
    }
}
