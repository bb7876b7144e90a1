//! `Plugin.meta` as reported by a worker, judged and normalized.

use crate::permission::Permission;
use crate::schema::{self, InputSchema};
use serde_json::Value;
use std::fmt;

/// The validated meta of a plugin.
#[derive(Debug)]
pub struct PluginMeta {
    /// Registry key (`meta["name"]`).
    pub name: String,
    pub description: String,
    pub version: Option<String>,
    /// Canonical, sorted, without duplicates.
    pub permissions: Vec<Permission>,
    /// `meta["timeout"]` in seconds; config `[plugins.NAME] timeout_s` wins.
    pub timeout_s: Option<f64>,
    pub schema: InputSchema,
    /// The meta exactly as the worker reported it, for `plugin info`.
    pub raw: Value,
}

/// Every problem found in a meta, so an author fixes them in one pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaError {
    pub problems: Vec<String>,
}

impl fmt::Display for MetaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.problems.join("; "))
    }
}

impl std::error::Error for MetaError {}

/// Longest accepted plugin name; names end up in file names and URLs.
const MAX_NAME_LEN: usize = 64;

/// Whether `name` can be a plugin name: ASCII letters, digits, `_` and `-`,
/// not starting with `-`, at most 64 characters.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl PluginMeta {
    /// Judges `meta` (None when `plugin.meta` is missing; `meta_type` is
    /// its Python type when it is not a dict).
    pub fn parse(meta: Option<&Value>, meta_type: Option<&str>) -> Result<PluginMeta, MetaError> {
        let fail = |p: String| MetaError { problems: vec![p] };
        let Some(meta) = meta else {
            return Err(match meta_type {
                Some(t) => fail(format!("meta must be a dict, got a Python {t}")),
                None => fail("plugin has no `meta` attribute (a dict with at least `name`)".into()),
            });
        };
        let Value::Object(map) = meta else {
            return Err(fail(format!(
                "meta must be a dict, got {}",
                schema::describe(meta)
            )));
        };
        let mut problems = Vec::new();

        let name = match map.get("name") {
            None => {
                problems.push("meta.name is missing".into());
                String::new()
            }
            Some(Value::String(n)) if is_valid_name(n) => n.clone(),
            Some(Value::String(n)) => {
                problems.push(format!(
                    "meta.name '{n}' is not a valid name (letters, digits, '_' and '-', at most {MAX_NAME_LEN})"
                ));
                String::new()
            }
            Some(other) => {
                problems.push(format!(
                    "meta.name must be a string, got {}",
                    schema::describe(other)
                ));
                String::new()
            }
        };

        let description = match map.get("description") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(d)) => d.clone(),
            Some(other) => {
                problems.push(format!(
                    "meta.description must be a string, got {}",
                    schema::describe(other)
                ));
                String::new()
            }
        };

        let version = match map.get("version") {
            None | Some(Value::Null) => None,
            Some(Value::String(v)) => Some(v.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(other) => {
                problems.push(format!(
                    "meta.version must be a string, got {}",
                    schema::describe(other)
                ));
                None
            }
        };

        let mut permissions = Vec::new();
        match map.get("permissions") {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) => {
                for item in items {
                    match item.as_str().map(|s| (s, Permission::parse(s))) {
                        Some((_, Some(p))) => permissions.push(p),
                        Some((s, None)) => problems.push(format!(
                            "meta.permissions: unknown permission '{s}' (expected net, fs_read, fs_write or process; synonyms: network, filesystem)"
                        )),
                        None => problems.push(format!(
                            "meta.permissions: each permission must be a string, got {}",
                            schema::describe(item)
                        )),
                    }
                }
            }
            Some(other) => problems.push(format!(
                "meta.permissions must be a list of strings, got {}",
                schema::describe(other)
            )),
        }
        permissions.sort();
        permissions.dedup();

        let timeout_s = match map.get("timeout") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => match n.as_f64() {
                Some(t) if t > 0.0 && t.is_finite() => Some(t),
                _ => {
                    problems.push(format!(
                        "meta.timeout must be a positive number of seconds, got {n}"
                    ));
                    None
                }
            },
            Some(other) => {
                problems.push(format!(
                    "meta.timeout must be a number of seconds, got {}",
                    schema::describe(other)
                ));
                None
            }
        };

        // The contract writes `inputs.schema`; both the nested form and the
        // literal dotted key are accepted.
        let raw_schema = match (map.get("inputs"), map.get("inputs.schema")) {
            (Some(Value::Object(inputs)), _) => inputs.get("schema"),
            (Some(Value::Null) | None, dotted) => dotted,
            (Some(other), _) => {
                problems.push(format!(
                    "meta.inputs must be a dict with a 'schema' key, got {}",
                    schema::describe(other)
                ));
                None
            }
        };
        let schema = match schema::normalize(raw_schema) {
            Ok((source, s)) => match InputSchema::compile(source, s) {
                Ok(compiled) => Some(compiled),
                Err(p) => {
                    problems.push(p);
                    None
                }
            },
            Err(ps) => {
                problems.extend(ps);
                None
            }
        };

        match schema {
            Some(schema) if problems.is_empty() => Ok(PluginMeta {
                name,
                description,
                version,
                permissions,
                timeout_s,
                schema,
                raw: meta.clone(),
            }),
            _ => Err(MetaError { problems }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_seed_style_meta_is_accepted() {
        let raw = json!({
            "name": "weather",
            "description": "Weather",
            "permissions": ["network", "fs_read", "net"],
            "inputs": {"schema": {"city": "string"}},
            "timeout": 5,
        });
        let m = PluginMeta::parse(Some(&raw), None).expect("valid");
        assert_eq!(m.name, "weather");
        assert_eq!(m.permissions, vec![Permission::Net, Permission::FsRead]);
        assert_eq!(m.timeout_s, Some(5.0));
        assert_eq!(m.schema.schema()["required"], json!(["city"]));
    }

    #[test]
    fn dotted_inputs_schema_key_is_accepted() {
        let raw = json!({"name": "x", "inputs.schema": {"q": "string"}});
        let m = PluginMeta::parse(Some(&raw), None).expect("valid");
        assert_eq!(m.schema.schema()["required"], json!(["q"]));
    }

    #[test]
    fn missing_or_non_dict_meta_is_refused() {
        let e = PluginMeta::parse(None, None).expect_err("refused");
        assert!(e.to_string().contains("no `meta`"));
        let e = PluginMeta::parse(None, Some("list")).expect_err("refused");
        assert!(e.to_string().contains("Python list"));
        let e = PluginMeta::parse(Some(&json!([1])), None).expect_err("refused");
        assert!(e.to_string().contains("must be a dict"));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let raw = json!({
            "description": 3,
            "permissions": ["net", "root", 7],
            "timeout": -1,
            "inputs": {"schema": {"a": "strng"}},
        });
        let e = PluginMeta::parse(Some(&raw), None).expect_err("refused");
        let text = e.to_string();
        assert_eq!(e.problems.len(), 6, "{text}");
        for needle in [
            "meta.name is missing",
            "meta.description",
            "'root'",
            "each permission",
            "meta.timeout",
            "'strng'",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in {text}");
        }
    }

    #[test]
    fn names_are_checked() {
        assert!(is_valid_name("system_info"));
        assert!(is_valid_name("my-plugin2"));
        assert!(!is_valid_name(""));
        assert!(!is_valid_name("../etc"));
        assert!(!is_valid_name("a b"));
        assert!(!is_valid_name(&"x".repeat(65)));
        let e = PluginMeta::parse(Some(&json!({"name": "a/b"})), None).expect_err("refused");
        assert!(e.to_string().contains("not a valid name"));
        let e = PluginMeta::parse(Some(&json!({"name": 5})), None).expect_err("refused");
        assert!(e.to_string().contains("must be a string"));
    }
}
