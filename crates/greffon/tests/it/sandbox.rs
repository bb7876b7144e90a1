//! The sandbox as the operator meets it: `greffon doctor`, the refusal to
//! run plugins on a kernel that cannot enforce it (fail closed), and the
//! explicit opt-out.

use crate::common;

use common::{TestHome, echo_plugin, entry};
use serde_json::Value;

fn doctor(home: &TestHome, env: &[(&str, &str)]) -> (i32, Value) {
    let out = home.greffon_env(&["doctor", "--json"], env);
    let v = serde_json::from_slice(&out.stdout).expect("doctor JSON");
    (out.status.code().unwrap_or(-1), v)
}

#[test]
fn doctor_reports_the_interpreter_and_the_kernel() {
    let home = TestHome::new();
    let (code, v) = doctor(&home, &[]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["ok"], Value::Bool(true));
    assert!(
        v["python"]["version"]
            .as_str()
            .unwrap_or("")
            .starts_with("3."),
        "{v}"
    );
    assert!(
        v["sandbox"]["landlock_abi"].as_i64().unwrap_or(0) >= 6,
        "{v}"
    );
    assert_eq!(v["sandbox"]["seccomp"], Value::Bool(true));
    assert_eq!(v["sandbox"]["mode"], "enforce");
    assert!(
        !v["sandbox"]["protections"]
            .as_array()
            .expect("list")
            .is_empty()
    );
    let human = home.ok(&["doctor"]);
    assert!(human.contains("landlock:    ABI"), "{human}");
}

#[test]
fn a_kernel_without_what_the_sandbox_needs_runs_no_plugin() {
    let home = TestHome::new();
    home.plugin("p", &echo_plugin("{'name': 'p'}"));
    for (cap, says) in [
        (
            "5",
            "Landlock ABI 5 lacks the signal and abstract-socket scopes",
        ),
        ("0", "Landlock is not available"),
    ] {
        let env = [("GREFFON_LANDLOCK_ABI_CAP", cap)];
        let (code, v) = doctor(&home, &env);
        assert_eq!(code, 1, "{v}");
        assert!(
            v["problems"][0].as_str().unwrap_or("").contains(says),
            "{v}"
        );
        // Discovery itself fails closed, naming what is missing.
        let out = home.greffon_env(&["plugin", "list", "--json"], &env);
        let list: Vec<Value> = serde_json::from_slice(&out.stdout).expect("list");
        let p = entry(&list, "p");
        assert_eq!(p["state"], "failed", "{p}");
        let reason = p["failure"]["reason"].as_str().unwrap_or("");
        assert!(
            reason.contains(says) && reason.contains("greffon doctor"),
            "{reason}"
        );
        let out = home.greffon_env(&["plugin", "enable", "p"], &env);
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{err}");
    }
    // On the real kernel the same home works.
    home.enable("p");
    let (code, v) = home.run("p", "{}");
    assert_eq!(code, 0, "{v}");
}

#[test]
fn sandbox_off_is_explicit_and_never_silent() {
    let home = TestHome::new();
    home.config("sandbox = \"off\"\n");
    home.plugin(
        "p",
        "class P:\n    meta = {'name': 'p'}\n    def run(self):\n        return open('/etc/hostname').read() != ''\nplugin = P()\n",
    );
    let (code, v) = doctor(&home, &[("GREFFON_LANDLOCK_ABI_CAP", "0")]);
    assert_eq!(code, 0, "off does not depend on the kernel: {v}");
    assert_eq!(v["sandbox"]["mode"], "off");
    assert!(
        v["warnings"][0]
            .as_str()
            .unwrap_or("")
            .contains("WITHOUT kernel isolation"),
        "{v}"
    );
    let protections = v["sandbox"]["protections"].to_string();
    assert!(
        !protections.contains("Landlock") && !protections.contains("seccomp"),
        "{protections}"
    );
    let out = home.greffon(&["plugin", "enable", "p"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("WITHOUT kernel isolation"),
        "warned at start: {err}"
    );
    let (code, v) = home.run("p", "{}");
    assert_eq!(
        (code, v),
        (0, Value::Bool(true)),
        "unsandboxed, /etc is readable"
    );
    assert!(home.log("audit").contains("\"event\":\"sandbox_off\""));
}

#[test]
fn workers_die_with_a_killed_host_and_their_temp_folders_are_swept() {
    let home = TestHome::new();
    // The worker writes its pid into its data folder and sleeps, after
    // disabling the SDK's own exit when the host's channel closes: only the
    // kernel's parent-death signal can end it.
    home.plugin(
        "slow",
        "import os, time\nclass P:\n    meta = {'name': 'slow', 'permissions': ['fs_write'], 'timeout': 60}\n    def run(self, path):\n        os._exit = lambda code: time.sleep(60)\n        with open(path, 'w') as f:\n            f.write(str(os.getpid()))\n        time.sleep(60)\nplugin = P()\n",
    );
    home.enable("slow");
    let pid_file = home.path().join("data/slow/pid");
    let mut host = std::process::Command::new(env!("CARGO_BIN_EXE_greffon"))
        .arg("--home")
        .arg(home.path())
        .args(["plugin", "run", "slow", "--json"])
        .arg(serde_json::json!({"path": pid_file}).to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("greffon runs");
    let worker: i32 = common::wait_for(std::time::Duration::from_secs(20), || {
        std::fs::read_to_string(&pid_file).ok()?.trim().parse().ok()
    })
    .expect("the worker wrote its pid");
    host.kill().expect("SIGKILL the host");
    let _ = host.wait();
    let gone = common::wait_for(std::time::Duration::from_secs(10), || {
        let stat = std::fs::read_to_string(format!("/proc/{worker}/stat")).unwrap_or_default();
        let alive = stat
            .rsplit(')')
            .next()
            .is_some_and(|s| !s.trim_start().starts_with('Z'));
        (!alive).then_some(())
    });
    assert!(gone.is_some(), "worker {worker} outlived its killed host");
    // The killed host could not remove the worker's temp folder; the next
    // greffon does.
    let tmp = home.path().join("app/tmp");
    assert!(std::fs::read_dir(&tmp).map(|d| d.count()).unwrap_or(0) > 0);
    home.list();
    assert_eq!(std::fs::read_dir(&tmp).map(|d| d.count()).unwrap_or(0), 0);
}

#[test]
fn check_names_declared_paths_greffon_will_not_grant() {
    let home = TestHome::new();
    home.plugin(
        "p",
        "class P:\n    meta = {'name': 'p', 'permissions': ['fs_read', 'fs_write'], 'paths': {'read': ['app/logs', '/no/such/dir'], 'write': ['plugins/x', 'data/ok']}}\n    def run(self):\n        return 1\nplugin = P()\n",
    );
    let out = home.greffon(&["plugin", "check", "p", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).expect("report");
    let problems: Vec<&str> = report["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(
        problems[0].contains("meta.paths.read") && problems[0].contains("greffon's own state"),
        "{problems:?}"
    );
    assert!(
        problems[1].contains("'/no/such/dir' does not exist"),
        "{problems:?}"
    );
    assert!(
        problems[2].contains("meta.paths.write") && problems[2].contains("the plugins' code"),
        "{problems:?}"
    );
    assert!(
        !home.path().join("data/ok").exists(),
        "check creates nothing"
    );
}

#[test]
fn a_python_runtime_holding_the_home_is_refused() {
    // A venv whose prefix holds the greffon home: granting workers read on
    // the runtime would expose greffon's state, so nothing starts.
    let tmp = tempfile::tempdir().expect("tempdir");
    let venv = tmp.path().join("venv");
    let python = std::env::var("GREFFON_PYTHON").unwrap_or_else(|_| "python3".into());
    let made = std::process::Command::new(&python)
        .args(["-m", "venv", "--without-pip"])
        .arg(&venv)
        .status()
        .expect("python runs");
    assert!(made.success());
    let root = venv.join("home");
    std::fs::create_dir_all(root.join("plugins/p")).expect("mkdir");
    std::fs::write(
        root.join("plugins/p/plugin.py"),
        echo_plugin("{'name': 'p'}"),
    )
    .expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_greffon"))
        .arg("--home")
        .arg(&root)
        .args(["plugin", "list", "--json"])
        .env("GREFFON_PYTHON", venv.join("bin/python"))
        .output()
        .expect("greffon runs");
    let list: Vec<Value> = serde_json::from_slice(&out.stdout).expect("list");
    let reason = entry(&list, "p")["failure"]["reason"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        reason.contains("the Python runtime must be readable by workers")
            && reason.contains("greffon's own state"),
        "{reason}"
    );
}
