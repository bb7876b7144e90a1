//! `Plugin.meta` as reported by a worker, judged and normalized.

use crate::allowlist::Pattern;
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
    /// `meta["paths"]["read"]` / `["write"]`, as written (relative to the
    /// greffon home or absolute); empty means the plugin's `data/<name>/`.
    pub paths_read: Vec<String>,
    pub paths_write: Vec<String>,
    /// `meta["allowlist_domains"]`: the hosts the plugin needs.
    pub allowlist: Option<Vec<Pattern>>,
    /// `meta["limits"]`; config `[plugins.NAME]` wins.
    pub limits: DeclaredLimits,
    /// `meta["secrets"]`: names of the secrets it may read, sorted,
    /// without duplicates (values live in the host's secret store).
    pub secrets: Vec<String>,
    /// The meta exactly as the worker reported it, for `plugin info`.
    pub raw: Value,
}

/// `meta["limits"]`: each unset one takes the config or the default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeclaredLimits {
    pub memory_mb: Option<u64>,
    pub cpu_s: Option<u64>,
    pub max_open_files: Option<u64>,
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

/// Longest accepted secret name.
const MAX_SECRET_NAME_LEN: usize = 64;

/// Whether `name` can be a secret name: an environment-variable-like
/// identifier (ASCII letters, digits and `_`, not starting with a digit),
/// at most 64 characters, so it reads the same in a shell, a file and a
/// log line.
pub fn is_valid_secret_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_SECRET_NAME_LEN
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

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
        let name = parse_name(map.get("name"), &mut problems);
        let description =
            parse_text(map.get("description"), "description", &mut problems).unwrap_or_default();
        let version = match map.get("version") {
            Some(Value::Number(n)) => Some(n.to_string()),
            v => parse_text(v, "version", &mut problems),
        };
        let permissions = parse_permissions(map.get("permissions"), &mut problems);
        let timeout_s = parse_timeout(map.get("timeout"), &mut problems);
        // The contract writes `inputs.schema`; both the nested form and the
        // literal dotted key are accepted.
        let schema = parse_schema(map.get("inputs"), map.get("inputs.schema"), &mut problems);
        let (paths_read, paths_write) = parse_paths(map.get("paths"), &permissions, &mut problems);
        let allowlist = parse_allowlist(map.get("allowlist_domains"), &permissions, &mut problems);
        let limits = parse_limits(map.get("limits"), &mut problems);
        let secrets = parse_secrets(map.get("secrets"), &mut problems);

        match schema {
            Some(schema) if problems.is_empty() => Ok(PluginMeta {
                name,
                description,
                version,
                permissions,
                timeout_s,
                schema,
                paths_read,
                paths_write,
                allowlist,
                limits,
                secrets,
                raw: meta.clone(),
            }),
            _ => Err(MetaError { problems }),
        }
    }
}

/// `meta.name`: a valid name (empty when it is not, with the problem).
fn parse_name(v: Option<&Value>, problems: &mut Vec<String>) -> String {
    match v {
        None => problems.push("meta.name is missing".into()),
        Some(Value::String(n)) if is_valid_name(n) => return n.clone(),
        Some(Value::String(n)) => problems.push(format!(
            "meta.name '{n}' is not a valid name (letters, digits, '_' and '-', at most {MAX_NAME_LEN})"
        )),
        Some(other) => problems.push(format!(
            "meta.name must be a string, got {}",
            schema::describe(other)
        )),
    }
    String::new()
}

/// An optional string field of meta (`description`, `version`).
fn parse_text(v: Option<&Value>, field: &str, problems: &mut Vec<String>) -> Option<String> {
    match v {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some(text.clone()),
        Some(other) => {
            problems.push(format!(
                "meta.{field} must be a string, got {}",
                schema::describe(other)
            ));
            None
        }
    }
}

/// `meta.permissions`: known names (or synonyms), sorted, once each.
fn parse_permissions(v: Option<&Value>, problems: &mut Vec<String>) -> Vec<Permission> {
    let mut permissions = Vec::new();
    match v {
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
    permissions
}

/// `meta.timeout`: a positive, finite number of seconds.
fn parse_timeout(v: Option<&Value>, problems: &mut Vec<String>) -> Option<f64> {
    match v {
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
    }
}

/// The input schema, from `meta.inputs.schema` or the literal key
/// `meta["inputs.schema"]`, normalized and compiled.
fn parse_schema(
    inputs: Option<&Value>,
    dotted: Option<&Value>,
    problems: &mut Vec<String>,
) -> Option<InputSchema> {
    let raw = match (inputs, dotted) {
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
    match schema::normalize(raw) {
        Ok((source, s)) => InputSchema::compile(source, s)
            .map_err(|p| problems.push(p))
            .ok(),
        Err(ps) => {
            problems.extend(ps);
            None
        }
    }
}

fn string_list(v: &Value, what: &str, problems: &mut Vec<String>) -> Vec<String> {
    match v {
        Value::Array(items) => items
            .iter()
            .filter_map(|i| match i {
                Value::String(s) => Some(s.clone()),
                other => {
                    problems.push(format!(
                        "{what}: each entry must be a string, got {}",
                        schema::describe(other)
                    ));
                    None
                }
            })
            .collect(),
        other => {
            problems.push(format!(
                "{what} must be a list of strings, got {}",
                schema::describe(other)
            ));
            Vec::new()
        }
    }
}

fn parse_paths(
    v: Option<&Value>,
    permissions: &[Permission],
    problems: &mut Vec<String>,
) -> (Vec<String>, Vec<String>) {
    let map = match v {
        None | Some(Value::Null) => return (Vec::new(), Vec::new()),
        Some(Value::Object(m)) => m,
        Some(other) => {
            problems.push(format!(
                "meta.paths must be a dict like {{\"read\": [...], \"write\": [...]}}, got {}",
                schema::describe(other)
            ));
            return (Vec::new(), Vec::new());
        }
    };
    let mut out = [Vec::new(), Vec::new()];
    for (key, list) in map {
        let (slot, needs) = match key.as_str() {
            "read" => (0, Permission::FsRead),
            "write" => (1, Permission::FsWrite),
            other => {
                problems.push(format!(
                    "meta.paths: unknown key '{other}' (expected 'read' and 'write')"
                ));
                continue;
            }
        };
        out[slot] = string_list(list, &format!("meta.paths.{key}"), problems);
        if !out[slot].is_empty() && !permissions.contains(&needs) {
            problems.push(format!(
                "meta.paths.{key} is declared but '{}' is not in meta.permissions",
                needs.as_str()
            ));
        }
    }
    let [read, write] = out;
    (read, write)
}

fn parse_allowlist(
    v: Option<&Value>,
    permissions: &[Permission],
    problems: &mut Vec<String>,
) -> Option<Vec<Pattern>> {
    let v = v.filter(|v| !v.is_null())?;
    let entries = string_list(v, "meta.allowlist_domains", problems);
    if !permissions.contains(&Permission::Net) {
        problems
            .push("meta.allowlist_domains is declared but 'net' is not in meta.permissions".into());
    }
    let mut patterns = Vec::new();
    for e in entries {
        match Pattern::parse(&e) {
            Ok(p) => patterns.push(p),
            Err(why) => problems.push(format!("meta.allowlist_domains: {why}")),
        }
    }
    Some(patterns)
}

fn parse_secrets(v: Option<&Value>, problems: &mut Vec<String>) -> Vec<String> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Vec::new();
    };
    let mut names = Vec::new();
    for name in string_list(v, "meta.secrets", problems) {
        if is_valid_secret_name(&name) {
            names.push(name);
        } else {
            problems.push(format!(
                "meta.secrets: '{name}' is not a valid secret name (letters, digits and '_', not starting with a digit, at most {MAX_SECRET_NAME_LEN})"
            ));
        }
    }
    names.sort();
    names.dedup();
    names
}

fn parse_limits(v: Option<&Value>, problems: &mut Vec<String>) -> DeclaredLimits {
    let map = match v {
        None | Some(Value::Null) => return DeclaredLimits::default(),
        Some(Value::Object(m)) => m,
        Some(other) => {
            problems.push(format!(
                "meta.limits must be a dict, got {}",
                schema::describe(other)
            ));
            return DeclaredLimits::default();
        }
    };
    let mut limits = DeclaredLimits::default();
    for (key, value) in map {
        let slot = match key.as_str() {
            "memory_mb" => &mut limits.memory_mb,
            "cpu_s" => &mut limits.cpu_s,
            "max_open_files" => &mut limits.max_open_files,
            other => {
                problems.push(format!(
                    "meta.limits: unknown limit '{other}' (expected memory_mb, cpu_s, max_open_files)"
                ));
                continue;
            }
        };
        match value.as_u64().filter(|&n| n > 0) {
            Some(n) => *slot = Some(n),
            None => problems.push(format!(
                "meta.limits.{key} must be a positive integer, got {value}"
            )),
        }
    }
    limits
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
    fn paths_allowlist_and_limits_are_parsed_and_checked() {
        let raw = json!({
            "name": "w",
            "permissions": ["net", "fs_read", "fs_write"],
            "paths": {"read": ["data/shared", "/srv/maps"], "write": ["data/w/out"]},
            "allowlist_domains": ["api.open-meteo.com", "*.example.com"],
            "limits": {"memory_mb": 512, "cpu_s": 60},
        });
        let m = PluginMeta::parse(Some(&raw), None).expect("valid");
        assert_eq!(m.paths_read, ["data/shared", "/srv/maps"]);
        assert_eq!(m.paths_write, ["data/w/out"]);
        assert_eq!(m.allowlist.as_ref().map(Vec::len), Some(2));
        assert_eq!(m.limits.memory_mb, Some(512));
        assert_eq!(m.limits.max_open_files, None);

        let raw = json!({
            "name": "w",
            "permissions": [],
            "paths": {"read": ["x"], "exec": []},
            "allowlist_domains": ["*.com"],
            "limits": {"memory_mb": -1, "disk": 3},
        });
        let text = PluginMeta::parse(Some(&raw), None)
            .expect_err("refused")
            .to_string();
        for needle in [
            "meta.paths.read is declared but 'fs_read'",
            "unknown key 'exec'",
            "'net' is not in meta.permissions",
            "top-level domain",
            "meta.limits.memory_mb must be a positive integer",
            "unknown limit 'disk'",
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

    #[test]
    fn secrets_are_names_checked_sorted_and_deduplicated() {
        let raw = json!({"name": "gh", "secrets": ["GITHUB_TOKEN", "api_key", "GITHUB_TOKEN"]});
        let m = PluginMeta::parse(Some(&raw), None).expect("valid");
        assert_eq!(m.secrets, vec!["GITHUB_TOKEN", "api_key"]);
        assert!(
            PluginMeta::parse(Some(&json!({"name": "x"})), None)
                .expect("valid")
                .secrets
                .is_empty()
        );
        for bad in ["1TOKEN", "MY-TOKEN", "", "A B", "../x"] {
            let raw = json!({"name": "gh", "secrets": [bad]});
            let e = PluginMeta::parse(Some(&raw), None).expect_err("refused");
            assert!(
                e.to_string()
                    .contains(&format!("meta.secrets: '{bad}' is not a valid secret name")),
                "{e}"
            );
        }
        let long = "A".repeat(65);
        assert!(!is_valid_secret_name(&long));
        let e = PluginMeta::parse(Some(&json!({"name": "gh", "secrets": "TOKEN"})), None)
            .expect_err("refused");
        assert!(
            e.to_string()
                .contains("meta.secrets must be a list of strings"),
            "{e}"
        );
        let e = PluginMeta::parse(Some(&json!({"name": "gh", "secrets": [3]})), None)
            .expect_err("refused");
        assert!(
            e.to_string()
                .contains("meta.secrets: each entry must be a string"),
            "{e}"
        );
    }
}
