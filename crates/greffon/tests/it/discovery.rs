//! Discovery, the registry, `check`, `info`, `scaffold` and the config
//! file, through the real binary.

use crate::common;

use common::{TestHome, echo_plugin, entry};
use serde_json::{Value, json};

#[test]
fn discovery_lists_valid_plugins_as_disabled_and_skips_underscore_folders() {
    let home = TestHome::new();
    home.plugin(
        "alpha",
        &echo_plugin(
            "{'name': 'alpha', 'description': 'first', 'permissions': ['network', 'fs_read']}",
        ),
    )
    .plugin("_hidden", &echo_plugin("{'name': 'hidden'}"));
    std::fs::create_dir_all(home.path().join("plugins/no_code")).expect("mkdir");
    let list = home.list();
    assert_eq!(list.len(), 1, "{list:?}");
    let alpha = entry(&list, "alpha");
    assert_eq!(alpha["state"], "disabled");
    assert_eq!(alpha["description"], "first");
    assert_eq!(alpha["permissions"], json!(["net", "fs_read"]));
    let audit = home.log("audit");
    assert!(
        audit.contains("\"event\":\"discovered\"") && audit.contains("\"plugin\":\"alpha\""),
        "{audit}"
    );
}

#[test]
fn the_human_list_shows_state_permissions_and_failure_reason() {
    let home = TestHome::new();
    home.plugin(
        "good",
        &echo_plugin("{'name': 'good', 'description': 'fine', 'permissions': ['net']}"),
    )
    .plugin("bad", "raise RuntimeError('nope')\n");
    let out = home.ok(&["plugin", "list"]);
    let good = out
        .lines()
        .find(|l| l.starts_with("good"))
        .expect("good row");
    assert!(
        good.contains("disabled") && good.contains("net") && good.contains("fine"),
        "{out}"
    );
    assert!(
        out.contains("reason: importing plugin.py raised RuntimeError: nope"),
        "{out}"
    );
}

#[test]
fn import_errors_fail_the_plugin_with_a_reason_and_a_crash_dump() {
    let home = TestHome::new();
    home.plugin("syntax", "def broken(:\n    pass\n")
        .plugin(
            "raises",
            "print('about to fail')\nraise ValueError('bad import')\n",
        )
        .plugin("ok", &echo_plugin("{'name': 'ok'}"));
    let list = home.list();
    assert_eq!(
        entry(&list, "ok")["state"],
        "disabled",
        "a broken neighbour harms nothing"
    );

    let syntax = entry(&list, "syntax");
    assert_eq!(syntax["state"], "failed");
    assert!(
        syntax["failure"]["reason"]
            .as_str()
            .expect("reason")
            .contains("SyntaxError"),
        "{syntax}"
    );

    let raises = entry(&list, "raises");
    assert_eq!(raises["state"], "failed");
    assert!(
        raises["failure"]["reason"]
            .as_str()
            .expect("reason")
            .contains("ValueError: bad import")
    );
    let dump = raises["failure"]["dump"].as_str().expect("dump path");
    let text = std::fs::read_to_string(dump).expect("dump readable");
    for needle in [
        "plugin: raises",
        "phase: import",
        "ValueError: bad import",
        "Traceback",
        "about to fail",
        "sha256: ",
    ] {
        assert!(
            text.contains(needle),
            "{needle:?} missing from dump:\n{text}"
        );
    }
    assert!(dump.contains("/app/logs/plugins/raises-"), "{dump}");
}

#[test]
fn bad_meta_is_refused_with_every_problem_named() {
    let home = TestHome::new();
    home.plugin("no_plugin", "x = 1\n")
        .plugin(
            "no_meta",
            "class P:\n    def run(self):\n        return 1\nplugin = P()\n",
        )
        .plugin(
            "list_meta",
            "class P:\n    meta = ['x']\n    def run(self):\n        return 1\nplugin = P()\n",
        )
        .plugin("no_name", &echo_plugin("{'description': 'x'}"))
        .plugin(
            "wrong_types",
            &echo_plugin("{'name': 'wrong_types', 'description': 5, 'permissions': 'net'}"),
        )
        .plugin(
            "unknown_perm",
            &echo_plugin("{'name': 'unknown_perm', 'permissions': ['net', 'root']}"),
        )
        .plugin(
            "bad_schema",
            &echo_plugin("{'name': 'bad_schema', 'inputs': {'schema': {'n': 'strng'}}}"),
        )
        .plugin(
            "no_run",
            "class P:\n    meta = {'name': 'no_run'}\nplugin = P()\n",
        );
    let list = home.list();
    let reason = |name: &str| {
        let e = entry(&list, name);
        assert_eq!(e["state"], "failed", "{e}");
        e["failure"]["reason"].as_str().expect("reason").to_string()
    };
    assert!(reason("no_plugin").contains("does not define `plugin`"));
    assert!(reason("no_meta").contains("no `meta`"));
    assert!(reason("list_meta").contains("meta must be a dict, got a Python list"));
    assert!(reason("no_name").contains("meta.name is missing"));
    let wrong = reason("wrong_types");
    assert!(
        wrong.contains("meta.description must be a string")
            && wrong.contains("meta.permissions must be a list"),
        "{wrong}"
    );
    assert!(reason("unknown_perm").contains("unknown permission 'root'"));
    assert!(reason("bad_schema").contains("field 'n': unknown type 'strng'"));
    assert!(reason("no_run").contains("no run() method"));
}

#[test]
fn two_plugins_with_one_name_both_fail_naming_both_folders() {
    let home = TestHome::new();
    home.plugin("one", &echo_plugin("{'name': 'same'}"))
        .plugin("two", &echo_plugin("{'name': 'same'}"));
    let list = home.list();
    assert_eq!(list.len(), 2);
    for folder in ["one", "two"] {
        let e = list.iter().find(|p| p["folder"] == folder).expect("entry");
        assert_eq!(e["state"], "failed");
        let reason = e["failure"]["reason"].as_str().expect("reason");
        assert!(
            reason.contains("plugins/one") && reason.contains("plugins/two"),
            "{reason}"
        );
    }
    let out = home.greffon(&["plugin", "enable", "one"]);
    assert_eq!(out.status.code(), Some(1), "a duplicate cannot be enabled");

    // check and scaffold see the shared name too, although both entries
    // are keyed by folder.
    let out = home.greffon(&["plugin", "check", "one"]);
    assert_eq!(out.status.code(), Some(1));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("plugin name 'same' is also declared by plugins/two"),
        "{report}"
    );
    let out = home.greffon(&["plugin", "scaffold", "same"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already declares that name"));
    assert!(!home.path().join("plugins/same").exists());
    home.ok(&["plugin", "disable", "one"]);
    assert_eq!(
        entry(&home.list(), "one")["state"],
        "failed",
        "disabling does not clear a shared name"
    );
}

#[test]
fn enabled_set_is_persisted_and_restored_at_next_start() {
    let home = TestHome::new();
    home.plugin("p", &echo_plugin("{'name': 'p', 'permissions': ['net']}"));
    let out = home.ok(&["plugin", "enable", "p"]);
    assert!(out.contains("permissions granted: net"), "{out}");
    assert_eq!(entry(&home.list(), "p")["state"], "enabled");
    assert_eq!(entry(&home.list(), "p")["granted"], json!(["net"]));
    assert!(home.path().join("greffon.db").is_file());
    let audit = home.log("audit");
    assert!(
        audit.contains("\"event\":\"enable\"") && audit.contains("net"),
        "{audit}"
    );

    home.ok(&["plugin", "disable", "p"]);
    assert_eq!(entry(&home.list(), "p")["state"], "disabled");
    assert!(home.log("audit").contains("\"event\":\"disable\""));
}

#[test]
fn a_plugin_that_now_asks_for_more_permissions_is_not_run_until_enabled_again() {
    let home = TestHome::new();
    home.plugin("p", &echo_plugin("{'name': 'p', 'permissions': []}"));
    home.enable("p");
    home.plugin(
        "p",
        &echo_plugin("{'name': 'p', 'permissions': ['process']}"),
    );
    let e = home.info("p");
    assert_eq!(e["state"], "failed");
    assert!(
        e["failure"]["reason"]
            .as_str()
            .expect("reason")
            .contains("greffon plugin enable p"),
        "{e}"
    );
    let err = home.run_error("p", "{}");
    assert!(err.contains("not granted (process)"), "{err}");
    home.enable("p");
    assert_eq!(home.run("p", "{}").0, 0);
}

#[test]
fn info_shows_meta_normalized_schema_state_and_last_dump() {
    let home = TestHome::new();
    home.plugin(
        "p",
        "class P:\n    meta = {'name': 'p', 'version': '1.2', 'inputs': {'schema': {'n': {'type': 'integer', 'default': 2}}}}\n    def run(self, n):\n        raise KeyError(n)\nplugin = P()\n",
    );
    home.enable("p");
    let info = home.info("p");
    assert_eq!(info["version"], "1.2");
    assert_eq!(info["schema"]["properties"]["n"]["type"], "integer");
    assert_eq!(info["schema"]["additionalProperties"], false);
    assert_eq!(info["schema_source"], "dict");
    assert!(info["last_dump"].is_null());
    home.run_error("p", "{}");
    let info = home.info("p");
    let dump = info["last_dump"].as_str().expect("a dump now");
    assert_eq!(
        Some(std::path::PathBuf::from(dump)),
        home.dumps().last().cloned()
    );
    let human = home.ok(&["plugin", "info", "p"]);
    assert!(
        human.contains("state:       enabled") && human.contains("\"integer\""),
        "{human}"
    );
}

/// The folders a home's audit log says were imported by discovery, in
/// order (one `discovered` record per folder and discovery).
fn discovered(home: &TestHome) -> Vec<String> {
    home.log("audit")
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["event"] == "discovered")
        .map(|r| r["folder"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// A command naming one plugin imports that plugin's folder alone; one
/// that needs another plugin (the `tasks` plugin checking a task's
/// arguments) discovers the rest then; a name that is not a folder's is
/// found by the full discovery.
#[test]
fn a_command_naming_one_plugin_imports_only_that_one() {
    let home = TestHome::new();
    home.bundled("tasks")
        .plugin(
            "a",
            &echo_plugin("{'name': 'a', 'inputs': {'schema': {'n': 'integer'}}}"),
        )
        .plugin("b", &echo_plugin("{'name': 'b'}"))
        .plugin("c-folder", &echo_plugin("{'name': 'c'}"));
    home.enable("a");
    home.enable("tasks");
    let seen = discovered(&home).len();
    let (code, v) = home.run("a", r#"{"n": 1}"#);
    assert_eq!((code, v), (0, json!({"args": {"n": 1}})));
    assert_eq!(discovered(&home)[seen..], ["a"]);

    // `tasks` checks the arguments against a's schema: a is discovered
    // then (with every other folder), and a wrong argument is refused.
    let seen = discovered(&home).len();
    let bad =
        json!({"action": "create", "name": "t", "plugin": "a", "args": {"n": "x"}, "every_s": 60});
    let error = home.run_error("tasks", &bad.to_string());
    assert!(
        error.contains("'n'") && error.contains("integer"),
        "{error}"
    );
    // plugins/tasks alone first, then the others when a was asked for.
    let mut after = discovered(&home)[seen..].to_vec();
    assert_eq!(
        after.first().map(String::as_str),
        Some("tasks"),
        "{after:?}"
    );
    after[1..].sort();
    assert_eq!(after[1..], ["a", "b", "c-folder"]);

    // c is declared by c-folder: no folder has its name, so everything is
    // discovered and c found.
    let seen = discovered(&home).len();
    let info = home.info("c");
    assert_eq!(info["folder"], "c-folder");
    assert_eq!(discovered(&home).len() - seen, 4);
}

/// A command naming a folder that declares another name falls back to
/// the full discovery, which reuses that folder's load: each folder is
/// imported (and recorded) once.
#[test]
fn a_folder_declaring_another_name_is_imported_once() {
    let home = TestHome::new();
    home.plugin("d", &echo_plugin("{'name': 'e'}"))
        .plugin("f", &echo_plugin("{'name': 'f'}"));
    let out = home.greffon(&["plugin", "info", "d"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unknown plugin 'd' (known: e, f)"),
        "{stderr}"
    );
    let mut seen = discovered(&home);
    seen.sort();
    assert_eq!(seen, ["d", "f"]);
}

#[test]
fn check_reports_every_problem_and_exits_nonzero() {
    let home = TestHome::new();
    home.plugin("bad", "class P:\n    meta = {'permissions': ['nope'], 'inputs': {'schema': {'a': 'strng'}}}\nplugin = P()\n")
        .plugin("good", &echo_plugin("{'name': 'good'}"));
    let out = home.greffon(&["plugin", "check", "bad", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let problems = report["problems"].as_array().expect("problems");
    assert_eq!(problems.len(), 4, "{problems:?}");
    let text = report["problems"].to_string();
    for needle in ["meta.name is missing", "'nope'", "'strng'", "no run()"] {
        assert!(text.contains(needle), "{needle} missing in {text}");
    }
    // Each problem comes with what to change, in the same order.
    let findings = report["findings"].as_array().expect("findings");
    assert_eq!(findings.len(), problems.len());
    for (f, p) in findings.iter().zip(problems) {
        assert_eq!(&f["problem"], p);
        assert!(f["fix"].as_str().is_some_and(|x| !x.is_empty()), "{f}");
    }
    let human = String::from_utf8(home.greffon(&["plugin", "check", "bad"]).stdout).expect("utf-8");
    let fixes: Vec<&str> = human
        .lines()
        .filter(|l| l.starts_with("    fix: "))
        .collect();
    assert_eq!(fixes.len(), 4, "{human}");
    assert!(
        human.contains(r#"fix: list only "net", "fs_read", "fs_write" and "process""#)
            && human.contains("fix: give the plugin class `def run(self, **kwargs):`"),
        "{human}"
    );
    let out = home.ok(&["plugin", "check", "good"]);
    assert!(out.contains("good (plugins/good): ok"), "{out}");
}

#[test]
fn scaffold_creates_a_working_plugin_from_the_template() {
    let home = TestHome::new();
    home.bundled("_template");
    home.ok(&["plugin", "scaffold", "greeter"]);
    let code =
        std::fs::read_to_string(home.path().join("plugins/greeter/plugin.py")).expect("created");
    assert!(code.contains("\"name\": \"greeter\""));
    home.ok(&["plugin", "check", "greeter"]);
    home.enable("greeter");
    let (code, value) = home.run("greeter", r#"{"name": "Ada", "times": 2}"#);
    assert_eq!(code, 0, "{value}");
    assert_eq!(
        value,
        json!({"greeting": "Hello, Ada! Hello, Ada!", "count": 1})
    );
    // Template's own error convention: a returned {"error"} exits 1.
    let (code, value) = home.run("greeter", r#"{"name": "  "}"#);
    assert_eq!(
        (code, value),
        (1, json!({"error": "name must not be blank"}))
    );

    let again = home.greffon(&["plugin", "scaffold", "greeter"]);
    assert_eq!(again.status.code(), Some(1));
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(
        err.contains("plugins/greeter already declares that name"),
        "{err}"
    );
    let bad = home.greffon(&["plugin", "scaffold", "Not-valid"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("lowercase identifier"));
}

#[test]
fn a_bad_config_file_is_refused_naming_file_line_and_key() {
    let home = TestHome::new();
    home.config("default_timeout_s = 5\n\n[plugins.p]\ntimeout_s = \"soon\"\n");
    let out = home.greffon(&["plugin", "list"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("greffon.toml:4: key 'plugins.p.timeout_s'"),
        "{err}"
    );

    home.config("max_args_bytes = 10\nfrobnicate = true\n");
    let err = String::from_utf8_lossy(&home.greffon(&["plugin", "list"]).stderr).into_owned();
    assert!(
        err.contains("greffon.toml:2: key 'frobnicate'") && err.contains("unknown field"),
        "{err}"
    );
}

#[test]
fn unknown_plugin_commands_say_which_plugins_exist() {
    let home = TestHome::new();
    home.plugin("known", &echo_plugin("{'name': 'known'}"));
    let out = home.greffon(&["plugin", "info", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown plugin 'nope' (known: known)"));
    let err = home.run_error("nope", "{}");
    assert!(err.contains("unknown plugin 'nope'"), "{err}");
}

#[test]
fn scaffold_refuses_a_name_another_folder_declares() {
    let home = TestHome::new();
    home.plugin("elsewhere", &echo_plugin("{'name': 'wanted'}"));
    let out = home.greffon(&["plugin", "scaffold", "wanted"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("plugins/elsewhere already declares that name"),
        "{err}"
    );
    assert!(!home.path().join("plugins/wanted").exists());
}

#[test]
fn a_missing_interpreter_is_named_with_the_way_to_set_one() {
    let home = TestHome::new();
    home.config("python = \"/nonexistent/python3\"\n");
    let out = home.greffon(&["plugin", "list"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("'/nonexistent/python3' (config key `python`) not found")
            && err.contains("GREFFON_PYTHON"),
        "{err}"
    );
}

#[test]
fn a_worker_that_never_says_hello_fails_the_plugin_not_the_host() {
    let home = TestHome::new();
    home.plugin("p", &echo_plugin("{'name': 'p'}"));
    home.list();
    // A damaged SDK: the worker exits before its hello.
    let sdk = std::fs::read_dir(home.path().join("app/sdk"))
        .expect("sdk root")
        .flatten()
        .next()
        .expect("materialized sdk")
        .path();
    std::fs::write(sdk.join("greffon/worker.py"), "import sys\nsys.exit(3)\n").expect("write");
    let list = home.list();
    let reason = entry(&list, "p")["failure"]["reason"]
        .as_str()
        .expect("reason")
        .to_string();
    assert!(
        reason.contains("cannot start its worker: the worker exited before saying hello"),
        "{reason}"
    );
}

#[test]
fn an_interpreter_that_is_not_python_is_a_clear_host_error() {
    let home = TestHome::new();
    home.config("python = \"/bin/true\"\n");
    home.plugin("p", &echo_plugin("{'name': 'p'}"));
    let out = home.greffon(&["plugin", "list"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Python interpreter '/bin/true'") && err.contains("did not report"),
        "{err}"
    );
}

#[test]
fn verbosity_flags_shape_the_human_log_on_stderr() {
    let home = TestHome::new();
    home.plugin("p", &echo_plugin("{'name': 'p'}"));
    let verbose = home.greffon(&["-v", "plugin", "list"]);
    let err = String::from_utf8_lossy(&verbose.stderr);
    assert!(
        err.contains("INFO audit: event=\"discovered\" plugin=p"),
        "{err}"
    );
    assert!(
        !err.contains('\u{1b}'),
        "no colour codes when stderr is not a terminal"
    );
    let quiet = home.greffon(&["-q", "plugin", "list"]);
    assert!(
        quiet.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&quiet.stderr)
    );
}

#[test]
fn a_home_where_the_sdk_or_the_database_cannot_live_is_refused_clearly() {
    let home = TestHome::new();
    std::fs::create_dir_all(home.path().join("app")).expect("app");
    std::fs::write(home.path().join("app/sdk"), "not a folder").expect("file");
    let out = home.greffon(&["plugin", "list"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot write the Python SDK under") && err.contains("app/sdk"),
        "{err}"
    );

    let home = TestHome::new();
    std::fs::create_dir_all(home.path().join("greffon.db")).expect("a folder where the file goes");
    let out = home.greffon(&["plugin", "list"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("database ") && err.contains("greffon.db"),
        "{err}"
    );
}
