//! What to change for each problem a plugin check finds.
//!
//! Every problem names its place first (`meta.permissions: …`,
//! `inputs.schema field 'days': …`, `plugin.py does not define …`), then
//! the rule it breaks. The fix is chosen by that place, so a new message
//! about a known place gets its fix without a new entry here, and a
//! problem about an unknown place simply has none.

use serde::{Deserialize, Serialize};

/// One problem of a plugin, and how to put it right.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// What is wrong: the place, the rule, what was found.
    pub problem: String,
    /// What to change, with an example; None when the problem already
    /// says it all (it names the command to run).
    pub fix: Option<String>,
}

impl Finding {
    pub fn new(problem: String) -> Finding {
        let fix = fix_for(&problem).map(str::to_string);
        Finding { problem, fix }
    }
}

/// The fix for `problem`, by the place it names.
pub fn fix_for(problem: &str) -> Option<&'static str> {
    let at = |place: &str| problem.starts_with(place);
    // "meta.paths.read is declared but 'fs_read' is not in meta.permissions"
    let needs_permission = problem.contains(" is declared but ");
    let fix = if at("meta must be a dict") || at("plugin has no `meta`") {
        r#"give the plugin class a meta dict: meta = {"name": "my_plugin", "description": "what it does", "permissions": [], "inputs": {"schema": {"city": "string"}}}"#
    } else if at("meta.name") {
        r#"set meta["name"] to a name of letters, digits, '_' and '-' (at most 64), e.g. "name": "weather"; it is how the plugin is called"#
    } else if at("meta.description") {
        r#"make meta["description"] a string saying in one line what the plugin does, or remove it"#
    } else if at("meta.version") {
        r#"make meta["version"] a string such as "1.0.0", or remove it"#
    } else if at("meta.permissions") {
        r#"list only "net", "fs_read", "fs_write" and "process" in meta["permissions"], e.g. "permissions": ["net"]; [] asks for nothing"#
    } else if at("meta.timeout") {
        r#"set meta["timeout"] to a positive number of seconds, e.g. "timeout": 30, or remove it for the configured default"#
    } else if at("inputs.schema field") {
        r#"give each field a type name (string, integer, number, boolean, array, object, or str, int, float, bool, list, dict) or a JSON Schema fragment, e.g. "days": {"type": "integer", "minimum": 1, "default": 3}; "required" is true or false"#
    } else if at("meta.inputs") || at("inputs.schema") {
        r#"write meta["inputs"] = {"schema": S} where S is a Pydantic model class, a JSON Schema ({"type": "object", "properties": {...}}) or the simplified dict {"city": "string", "days": {"type": "integer", "default": 3}}"#
    } else if at("meta.paths") && needs_permission {
        r#"add the permission it names to meta["permissions"] (fs_read for paths.read, fs_write for paths.write), or remove the entry"#
    } else if at("meta.paths") {
        r#"write meta["paths"] = {"read": [...], "write": [...]} with folders that exist (absolute, or relative to the home), not symlinks, and not greffon's own files"#
    } else if at("meta.allowlist_domains") && needs_permission {
        r#"add "net" to meta["permissions"], or remove meta["allowlist_domains"]"#
    } else if at("meta.allowlist_domains") {
        r#"list host names only, e.g. "allowlist_domains": ["api.open-meteo.com", "*.example.com"] (a port may follow: "localhost:8080"; no scheme, path or user)"#
    } else if at("meta.limits") {
        r#"use only memory_mb, cpu_s and max_open_files, each a positive integer, e.g. "limits": {"memory_mb": 256}"#
    } else if at("meta.secrets") {
        r#"list names like "API_TOKEN" (letters, digits and '_', not starting with a digit), then store each value with `greffon secret set PLUGIN NAME`"#
    } else if at("plugin.py does not define `plugin`") {
        "end plugin.py with an instance at module level: plugin = Plugin()"
    } else if at("plugin has no run() method") {
        "give the plugin class `def run(self, **kwargs):` returning a JSON-serializable dict (or {\"error\": \"...\"} on failure)"
    } else if at("importing plugin.py raised") {
        "run `python plugin.py` in the plugin's folder to see the traceback; a package the base interpreter lacks goes in a requirements.txt beside plugin.py"
    } else if at("plugin name '") {
        r#"give one of the plugins another meta["name"]: a name is declared by one plugin folder only"#
    } else if at("cannot start its worker") || at("cannot sandbox its worker") {
        "run `greffon doctor`: it checks the Python interpreter and what the kernel's sandbox supports"
    } else {
        return None;
    };
    Some(fix)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PluginMeta;
    use serde_json::json;

    /// Every problem `PluginMeta::parse` reports for these metas, one per
    /// kind of mistake, gets a fix: a new problem written without a known
    /// place fails here.
    #[test]
    fn every_meta_problem_has_a_fix() {
        let bad = [
            json!({}),
            json!("a string"),
            json!({"name": "no spaces allowed"}),
            json!({"name": 3, "description": 4, "version": [], "timeout": -1}),
            json!({"name": "p", "permissions": ["nett", 3]}),
            json!({"name": "p", "permissions": "net"}),
            json!({"name": "p", "inputs": 3}),
            json!({"name": "p", "inputs": {"schema": {"days": "integr", "n": 3, "x": {"type": "string", "required": "yes"}}}}),
            json!({"name": "p", "inputs": {"schema": {"type": "object", "properties": 3}}}),
            json!({"name": "p", "paths": {"read": ["/data"], "exec": []}}),
            json!({"name": "p", "paths": 3}),
            json!({"name": "p", "allowlist_domains": ["https://x.org/a"]}),
            json!({"name": "p", "permissions": ["net"], "allowlist_domains": ["*"]}),
            json!({"name": "p", "limits": {"memory_mb": 0, "gpus": 1}}),
            json!({"name": "p", "secrets": ["1BAD", 2]}),
        ];
        let mut seen = 0;
        for meta in &bad {
            let problems = PluginMeta::parse(Some(meta), None)
                .expect_err("each meta above is wrong")
                .problems;
            for p in problems {
                seen += 1;
                assert!(fix_for(&p).is_some(), "no fix for: {p}");
            }
        }
        let missing = PluginMeta::parse(None, None).expect_err("no meta").problems;
        assert!(fix_for(&missing[0]).is_some(), "{missing:?}");
        assert!(seen > 20, "only {seen} problems were produced");
    }

    #[test]
    fn the_fix_follows_the_place_and_the_rule() {
        let paths = fix_for("meta.paths.read is declared but 'fs_read' is not in meta.permissions");
        assert!(paths.expect("a fix").contains("add the permission"));
        let missing = fix_for("meta.paths.read: '/nope' does not exist");
        assert!(missing.expect("a fix").contains("folders that exist"));
        let run = Finding::new("plugin has no run() method".into());
        assert!(run.fix.expect("a fix").contains("def run(self, **kwargs)"));
        assert_eq!(fix_for("something nobody wrote"), None);
    }
}
