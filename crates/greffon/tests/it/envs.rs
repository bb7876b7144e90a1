//! Plugins' Python environments (issue #15): requirements declared in the
//! two standard forms, built with the real uv from wheels made here and
//! found through UV_FIND_LINKS + UV_NO_INDEX (no network), run in the
//! sandbox read-only.

use crate::common;

use common::server::{call, start};
use common::{TestHome, entry};
use serde_json::{Value, json};
use std::path::Path;

/// uv on PATH (scripts/test puts the one scripts/build-deps installed
/// there): without it these tests fail saying how to get it.
fn require_uv() {
    let ok = std::process::Command::new("uv")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "the environment tests need uv on PATH: run them through scripts/test (scripts/build-deps installs uv into ~/.cache/greffon/bin)"
    );
}

/// A folder of wheels (`tiny` 1.0 and 2.0, `other` 1.0, and `sneaky`,
/// whose `.pth` file tries to write into `markers/` and sets
/// `GREFFON_TEST_PTH`), a source distribution (`srconly`), and uv's cache.
fn wheels() -> tempfile::TempDir {
    require_uv();
    let dir = tempfile::tempdir().expect("tempdir");
    let python = std::env::var("GREFFON_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/make_wheel.py");
    std::fs::create_dir(dir.path().join("wheels")).expect("wheels");
    std::fs::create_dir(dir.path().join("markers")).expect("markers");
    let pth = format!(
        "import os; os.environ['GREFFON_TEST_PTH'] = '1'; open('{}/pid-%d' % os.getpid(), 'w').close()",
        dir.path().join("markers").display()
    );
    for (name, version, pth) in [
        ("tiny", "1.0", None),
        ("tiny", "2.0", None),
        ("other", "1.0", None),
        ("sneaky", "1.0", Some(pth)),
        ("srconly", "1.0", Some("--sdist".to_string())),
    ] {
        let status = std::process::Command::new(&python)
            .arg(&script)
            .arg(dir.path().join("wheels"))
            .args([name, version])
            .args(pth)
            .status()
            .expect("python runs");
        assert!(status.success(), "make_wheel.py {name} {version}");
    }
    dir
}

/// A home whose uv installs only from `wheels`.
fn home(wheels: &tempfile::TempDir) -> TestHome {
    let mut home = TestHome::new();
    let links = wheels.path().join("wheels");
    home.set_var("UV_FIND_LINKS", links.to_str().expect("utf-8"));
    home.set_var("UV_NO_INDEX", "1");
    let cache = wheels.path().join("uv-cache");
    home.set_var("UV_CACHE_DIR", cache.to_str().expect("utf-8"));
    home
}

/// A plugin that imports `tiny` at module level and reports its version
/// and the interpreter's prefix.
fn tiny_plugin(name: &str) -> String {
    format!(
        "import sys\nimport tiny\n\n\nclass Plugin:\n    meta = {{'name': '{name}', 'description': 'needs tiny', 'inputs': {{'schema': {{}}}}}}\n\n    def run(self):\n        return {{'version': tiny.VERSION, 'prefix': sys.prefix}}\n\n\nplugin = Plugin()\n"
    )
}

/// The same plugin declaring `deps` inline (PEP 723).
fn inline_plugin(name: &str, deps: &str) -> String {
    format!(
        "# /// script\n# dependencies = [{deps}]\n# ///\n{}",
        tiny_plugin(name)
    )
}

fn requirements(home: &TestHome, folder: &str, text: &str) {
    std::fs::write(
        home.path()
            .join("plugins")
            .join(folder)
            .join("requirements.txt"),
        text,
    )
    .expect("requirements.txt");
}

fn envs(home: &TestHome) -> Vec<Value> {
    let out = home.ok(&["env", "list", "--json"]);
    serde_json::from_str::<Value>(&out)
        .expect("env list JSON")
        .as_array()
        .expect("array")
        .clone()
}

fn builds(home: &TestHome) -> usize {
    home.log("server").matches("into a new environment").count()
}

#[test]
fn two_versions_of_one_package_run_side_by_side_and_the_base_has_neither() {
    let wheels = wheels();
    let home = home(&wheels);
    home.plugin("one", &tiny_plugin("one"));
    requirements(&home, "one", "tiny==1.0\n");
    home.plugin("two", &inline_plugin("two", "\"tiny==2.0\""));
    home.plugin(
        "bare",
        "class Plugin:\n    meta = {'name': 'bare', 'description': 'declares nothing', 'inputs': {'schema': {}}}\n\n    def run(self):\n        import tiny\n        return tiny.VERSION\n\n\nplugin = Plugin()\n",
    );

    // Listed before any build: the module-level import fails on the base
    // interpreter, and the message says enabling builds the environment.
    let list = home.list();
    let reason = entry(&list, "one")["failure"].to_string();
    assert!(
        reason.contains("No module named 'tiny'") && reason.contains("greffon plugin enable one"),
        "{reason}"
    );

    let out = home.greffon(&["plugin", "enable", "one"]);
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("installing tiny==1.0 for plugin 'one'")
            && said.contains("uv: Installed 1 package"),
        "enable says what it installs, then uv's steps: {said}"
    );
    home.enable("two");
    home.enable("bare");
    let (code, one) = home.run("one", "{}");
    assert_eq!((code, one["version"].as_str()), (0, Some("1.0")), "{one}");
    let (code, two) = home.run("two", "{}");
    assert_eq!((code, two["version"].as_str()), (0, Some("2.0")), "{two}");
    let envs_dir = home.path().canonicalize().expect("home").join("envs");
    for v in [&one, &two] {
        assert!(
            v["prefix"]
                .as_str()
                .is_some_and(|p| Path::new(p).starts_with(&envs_dir)),
            "runs in its environment: {v}"
        );
    }
    assert_ne!(one["prefix"], two["prefix"]);
    let e = home.run_error("bare", "{}");
    assert!(e.contains("No module named 'tiny'"), "{e}");

    let listed = envs(&home);
    assert_eq!(listed.len(), 2, "{listed:?}");
    let used: Vec<&Value> = listed.iter().map(|e| &e["used_by"]).collect();
    assert!(
        used.contains(&&json!(["one"])) && used.contains(&&json!(["two"])),
        "{listed:?}"
    );
    assert!(listed.iter().all(|e| e["size_bytes"].as_u64() > Some(0)));
}

#[test]
fn a_shared_set_is_built_once_and_a_change_rebuilds_and_prune_removes_the_unused() {
    let wheels = wheels();
    let home = home(&wheels);
    // The same set; comments and blank lines do not count.
    for (name, text) in [
        ("a", "# pinned\ntiny == 1.0\n"),
        ("b", "\ntiny == 1.0  # pinned\n"),
    ] {
        home.plugin(name, &tiny_plugin(name));
        requirements(&home, name, text);
    }
    home.enable("a");
    home.enable("b");
    assert_eq!(builds(&home), 1, "one build for the shared set");
    let listed = envs(&home);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["used_by"], json!(["a", "b"]));
    assert_eq!(listed[0]["requirements"], json!(["tiny == 1.0"]));

    // Enabling again with the same requirements builds nothing.
    home.enable("a");
    assert_eq!(builds(&home), 1);

    // A change of requirements builds a new environment at the next
    // enable; the other plugin keeps its own.
    requirements(&home, "a", "tiny==2.0\nother==1.0\n");
    home.enable("a");
    assert_eq!(builds(&home), 2);
    assert_eq!(home.run("a", "{}").1["version"], json!("2.0"));
    assert_eq!(home.run("b", "{}").1["version"], json!("1.0"));
    assert_eq!(envs(&home).len(), 2);

    // b declares nothing now: its old environment is unused, and pruned.
    std::fs::remove_file(home.path().join("plugins/b/requirements.txt")).expect("rm");
    let pruned: Value =
        serde_json::from_str(&home.ok(&["env", "prune", "--json"])).expect("prune JSON");
    assert_eq!(pruned.as_array().map(Vec::len), Some(1), "{pruned}");
    assert_eq!(pruned[0]["requirements"], json!(["tiny == 1.0"]));
    assert!(!Path::new(pruned[0]["path"].as_str().expect("path")).exists());
    let left = envs(&home);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["used_by"], json!(["a"]));
    assert_eq!(home.run("a", "{}").1["version"], json!("2.0"));
}

#[test]
fn a_plugin_cannot_write_into_its_environment() {
    let wheels = wheels();
    let home = home(&wheels);
    home.plugin(
        "planter",
        "import os\nimport tiny\n\n\nclass Plugin:\n    meta = {'name': 'planter', 'description': 'plants code', 'permissions': ['fs_write'], 'inputs': {'schema': {}}}\n\n    def run(self):\n        target = os.path.join(os.path.dirname(tiny.__file__), 'planted.py')\n        try:\n            with open(target, 'w') as f:\n                f.write('x = 1')\n        except OSError as e:\n            return {'refused': type(e).__name__, 'target': target}\n        return {'written': target}\n\n\nplugin = Plugin()\n",
    );
    requirements(&home, "planter", "tiny==1.0\n");
    home.enable("planter");
    let (code, v) = home.run("planter", "{}");
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["refused"], json!("PermissionError"), "{v}");
    assert!(!Path::new(v["target"].as_str().expect("target")).exists());

    // Nor can it be granted the environments folder.
    home.plugin(
        "grabber",
        "class Plugin:\n    meta = {'name': 'grabber', 'description': 'asks for envs', 'permissions': ['fs_write'], 'paths': {'write': ['envs']}, 'inputs': {'schema': {}}}\n\n    def run(self):\n        return 1\n\n\nplugin = Plugin()\n",
    );
    let out = home.greffon(&["plugin", "enable", "grabber"]);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("the plugins' environments"), "{said}");
}

#[test]
fn a_missing_package_is_named_and_fails_only_its_plugin() {
    let wheels = wheels();
    let home = home(&wheels);
    // Two workers, one build (and one dump) for the pool.
    home.config("workers = 2\n");
    home.plugin("wants", &tiny_plugin("wants"));
    requirements(&home, "wants", "tiny==1.0\nnothing-here==9.9\n");
    home.plugin(
        "fine",
        &common::echo_plugin("{'name': 'fine', 'inputs': {'schema': {}}}"),
    );
    home.enable("fine");
    let out = home.greffon(&["plugin", "enable", "wants"]);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    // "provided package locations": uv looked only at the local wheels
    // (UV_NO_INDEX), not at PyPI.
    assert!(
        said.contains("could not be built")
            && said.contains("nothing-here was not found in the provided package locations"),
        "{said}"
    );
    let info = home.info("wants");
    assert_eq!(info["state"], json!("failed"), "{info}");
    // The dump keeps uv's whole report.
    let dumps: Vec<String> = home
        .dumps()
        .into_iter()
        .filter_map(|d| std::fs::read_to_string(d).ok())
        .filter(|t| t.contains("phase: environment"))
        .collect();
    assert_eq!(dumps.len(), 1, "one build, one dump");
    let text = &dumps[0];
    assert!(text.contains("nothing-here"), "{text}");
    assert!(envs(&home).is_empty(), "a failed build leaves nothing");
    assert!(
        std::fs::read_dir(home.path().join("envs"))
            .expect("envs")
            .next()
            .is_none(),
        "no staging folder left"
    );
    assert_eq!(home.run("fine", "{}").0, 0);

    // No uv where the configuration says: named, and only that plugin.
    home.config("[python]\nuv = \"/no/such/uv\"\n");
    let out = home.greffon(&["plugin", "enable", "wants"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        said.contains("[python] uv = '/no/such/uv' is not a file"),
        "{said}"
    );
    assert_eq!(home.run("fine", "{}").0, 0);
    // doctor says so too (a warning: only such plugins need uv).
    let out = home.greffon(&["doctor", "--json"]);
    let report: Value = serde_json::from_slice(&out.stdout).expect("doctor JSON");
    assert_eq!(report["uv"]["path"], Value::Null, "{report}");
    assert!(
        report["warnings"].to_string().contains("/no/such/uv"),
        "{report}"
    );
}

#[test]
fn doctor_reports_uv() {
    require_uv();
    let home = TestHome::new();
    let out = home.greffon(&["doctor", "--json"]);
    let report: Value = serde_json::from_slice(&out.stdout).expect("doctor JSON");
    assert!(
        report["uv"]["path"]
            .as_str()
            .is_some_and(|p| p.ends_with("/uv")),
        "{report}"
    );
    assert!(
        report["uv"]["version"]
            .as_str()
            .is_some_and(|v| v.starts_with("uv ")),
        "{report}"
    );
    assert!(home.ok(&["doctor"]).contains("uv:"));
}

#[test]
fn a_source_only_package_is_refused_unless_builds_are_allowed() {
    let wheels = wheels();
    let home = home(&wheels);
    home.plugin("src", &tiny_plugin("src"));
    requirements(&home, "src", "srconly==1.0\n");
    let out = home.greffon(&["plugin", "enable", "src"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        said.contains("srconly") && said.contains("building from source is disabled"),
        "{said}"
    );
    // Allowed, uv attempts the build (which needs setuptools, absent
    // from this offline index): a different refusal, and another key.
    home.config("[python]\nallow_build = true\n");
    let out = home.greffon(&["plugin", "enable", "src"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        said.contains("setuptools") && !said.contains("building from source is disabled"),
        "{said}"
    );
}

#[test]
fn escapes_and_double_declarations_are_refused_at_discovery() {
    let wheels = wheels();
    let home = home(&wheels);
    let cases = [
        ("editable", "-e ../..\n", "'-e' is refused"),
        (
            "index",
            "--index-url https://evil.example/simple\ntiny\n",
            "'--index-url' is refused",
        ),
        (
            "url",
            "tiny @ https://evil.example/tiny-1.0-py3-none-any.whl\n",
            "direct URL",
        ),
        (
            "outside",
            "../editable/plugin.py\n",
            "outside the plugin folder",
        ),
    ];
    for (name, text, _) in cases {
        home.plugin(name, &tiny_plugin(name));
        requirements(&home, name, text);
    }
    home.plugin("twice", &inline_plugin("twice", "\"tiny\""));
    requirements(&home, "twice", "tiny\n");
    let list = home.list();
    for (name, _, words) in cases {
        let e = entry(&list, name);
        assert_eq!(e["state"], json!("failed"), "{e}");
        let reason = e["failure"].to_string();
        assert!(
            reason.contains("requirements.txt line") && reason.contains(words),
            "{name}: {reason}"
        );
        let out = home.greffon(&["plugin", "enable", name]);
        assert!(!out.status.success(), "{name} must not enable");
    }
    let reason = entry(&list, "twice")["failure"].to_string();
    assert!(
        reason.contains("requirements.txt") && reason.contains("# /// script"),
        "{reason}"
    );
    assert!(!home.path().join("envs").exists(), "nothing was built");
}

#[test]
fn a_reload_with_new_requirements_builds_beside_the_running_version_and_rolls_back_a_failed_build()
{
    let wheels = wheels();
    let home = home(&wheels);
    home.config("[server]\nwatch = false\n");
    home.plugin("live", &tiny_plugin("live"));
    requirements(&home, "live", "tiny==1.0\n");
    home.enable("live");
    home.plugin("late", &tiny_plugin("late"));
    requirements(&home, "late", "tiny==2.0\nother==1.0\n");
    let server = start(&home);
    let api = &server.api;
    let run = || call(api, "POST", "/v1/plugins/live/run", "{}");
    assert_eq!(run().1["version"], json!("1.0"));

    // Enabled through the server, which builds: the CLI says what.
    let out = home.greffon(&["plugin", "enable", "late"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("the server installs other==1.0, tiny==2.0 for late"),
        "{said}"
    );

    requirements(&home, "live", "tiny==2.0\n");
    let (st, v) = call(api, "POST", "/v1/plugins/live/reload", "");
    assert_eq!(st, 200, "{v}");
    assert_eq!(run().1["version"], json!("2.0"));

    // A build that fails leaves the running version serving, with a dump.
    requirements(&home, "live", "nothing-here==1\n");
    let (st, v) = call(api, "POST", "/v1/plugins/live/reload", "");
    assert_eq!(st, 502, "{v}");
    assert!(v["error"].to_string().contains("nothing-here"), "{v}");
    assert_eq!(run().1["version"], json!("2.0"));
    let (_, info) = call(api, "GET", "/v1/plugins/live", "");
    assert_eq!(info["state"], json!("enabled"), "{info}");
}

/// A package's `.pth` file runs when the interpreter starts: for an
/// environment's interpreter that must be inside the sandbox, never in
/// the (unsandboxed) template process, whichever way the worker starts.
#[test]
fn a_packages_startup_code_runs_only_inside_the_sandbox() {
    let wheels = wheels();
    for template in [true, false] {
        let home = home(&wheels);
        home.config(&format!("worker_template = {template}\n"));
        home.plugin(
            "pth",
            "import os\n\n\nclass Plugin:\n    meta = {'name': 'pth', 'description': 'has a .pth', 'inputs': {'schema': {}}}\n\n    def run(self):\n        return os.environ.get('GREFFON_TEST_PTH')\n\n\nplugin = Plugin()\n",
        );
        requirements(&home, "pth", "sneaky==1.0\n");
        home.enable("pth");
        let (code, ran) = home.run("pth", "{}");
        // It ran in the worker (so the check below is not vacuous)...
        assert_eq!((code, &ran), (0, &json!("1")), "template = {template}");
        // ...and could write nothing outside the plugin's grants.
        let written: Vec<_> = std::fs::read_dir(wheels.path().join("markers"))
            .expect("markers")
            .collect();
        assert!(written.is_empty(), "template = {template}: {written:?}");
    }
}
