//! A temporary greffon home and the real `greffon` binary run against it.

pub mod server;
pub mod upstream;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct TestHome {
    dir: tempfile::TempDir,
    /// Environment variables every greffon process of this home gets.
    vars: Vec<(String, String)>,
}

impl TestHome {
    pub fn new() -> TestHome {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("plugins")).expect("plugins dir");
        TestHome {
            dir,
            vars: Vec::new(),
        }
    }

    /// Gives every greffon process of this home `key=value`.
    pub fn set_var(&mut self, key: &str, value: &str) {
        self.vars.push((key.to_string(), value.to_string()));
    }

    pub fn vars(&self) -> impl Iterator<Item = (&str, &str)> {
        self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `plugins/<folder>/plugin.py`.
    pub fn plugin(&self, folder: &str, code: &str) -> &TestHome {
        let dir = self.path().join("plugins").join(folder);
        std::fs::create_dir_all(&dir).expect("plugin dir");
        std::fs::write(dir.join("plugin.py"), code).expect("plugin.py");
        self
    }

    /// Copies a bundled plugin from the repository.
    pub fn bundled(&self, folder: &str) -> &TestHome {
        let src = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../plugins")
            .join(folder)
            .join("plugin.py");
        let code = std::fs::read_to_string(&src).expect("bundled plugin");
        self.plugin(folder, &code)
    }

    pub fn config(&self, text: &str) -> &TestHome {
        std::fs::write(self.path().join("greffon.toml"), text).expect("greffon.toml");
        self
    }

    pub fn greffon(&self, args: &[&str]) -> Output {
        self.greffon_env(args, &[])
    }

    /// Runs greffon with extra environment variables.
    pub fn greffon_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_greffon"))
            .arg("--home")
            .arg(self.path())
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove("GREFFON_HOME")
            .envs(self.vars())
            .envs(env.iter().copied())
            .output()
            .expect("greffon runs")
    }

    /// Runs a command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.greffon(args);
        assert!(
            out.status.success(),
            "greffon {args:?} failed ({:?})\nstdout: {}\nstderr: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn enable(&self, name: &str) {
        self.ok(&["plugin", "enable", name]);
    }

    /// `plugin run NAME --json ARGS`: (exit code, printed JSON).
    pub fn run(&self, name: &str, args: &str) -> (i32, Value) {
        let out = self.greffon(&["plugin", "run", name, "--json", args]);
        let code = out.status.code().unwrap_or(-1);
        let value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "run printed no JSON ({e}); stdout: {}\nstderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (code, value)
    }

    /// The `{"error"}` message of a failed run, asserting exit code 1.
    pub fn run_error(&self, name: &str, args: &str) -> String {
        let (code, value) = self.run(name, args);
        assert_eq!(code, 1, "expected an error, got {value}");
        value["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error in {value}"))
            .to_string()
    }

    pub fn list(&self) -> Vec<Value> {
        let out = self.ok(&["plugin", "list", "--json"]);
        serde_json::from_str::<Value>(&out)
            .expect("list JSON")
            .as_array()
            .expect("array")
            .clone()
    }

    pub fn info(&self, name: &str) -> Value {
        serde_json::from_str(&self.ok(&["plugin", "info", name, "--json"])).expect("info JSON")
    }

    pub fn dumps(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.path().join("app/logs/plugins"))
            .map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    pub fn log(&self, category: &str) -> String {
        std::fs::read_to_string(self.path().join("app/logs").join(format!("{category}.log")))
            .unwrap_or_default()
    }
}

/// The entry of `name` in a `plugin list --json` answer.
pub fn entry<'a>(list: &'a [Value], name: &str) -> &'a Value {
    list.iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no plugin {name} in {list:?}"))
}

/// A plugin whose `run` echoes its arguments, with the given meta body.
pub fn echo_plugin(meta: &str) -> String {
    format!(
        "class Plugin:\n    meta = {meta}\n\n    def run(self, **kwargs):\n        return {{'args': kwargs}}\n\n\nplugin = Plugin()\n"
    )
}

/// The interpreter of the test venv (`GREFFON_PYTHON`), checked to import
/// `modules`: without them the test fails saying how to get them (CI must
/// not skip). `who` names the tests that need them.
pub fn venv_python(modules: &str, who: &str) -> String {
    let python = std::env::var("GREFFON_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = std::process::Command::new(&python)
        .args(["-c", &format!("import {modules}")])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{who} need {modules} in {python}: run them through scripts/test (it installs python/requirements-test.txt into its venv and sets GREFFON_PYTHON)"
    );
    python
}

/// The SmolLM2 model the LLM tests load (`GREFFON_TEST_MODEL`, which
/// `scripts/test` pulls once and caches).
pub fn test_model() -> PathBuf {
    let path = std::env::var_os("GREFFON_TEST_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/greffon/models-home/models/SmolLM2-135M-Instruct.Q4_1.gguf")
        });
    assert!(
        path.is_file(),
        "the test model is missing at {}: run scripts/test (it pulls it), or `greffon --home ~/.cache/greffon/models-home model pull smollm2`",
        path.display()
    );
    path
}

/// Polls `probe` every 20 ms until it gives a value or `limit` passes: a
/// wait on a condition, not a sleep that hopes.
pub fn wait_for<T>(limit: std::time::Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = probe() {
            return Some(v);
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// `greffon mcp` over raw stdio, with `env` set: the lines it answers to
/// `requests`.
pub fn stdio_exchange(
    home: &TestHome,
    args: &[&str],
    env: &[(&str, &str)],
    requests: &[&str],
) -> Vec<serde_json::Value> {
    use std::io::{BufRead, Write};
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_greffon"))
        .arg("--home")
        .arg(home.path())
        .args(args)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("greffon mcp starts");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut lines = std::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut answers = Vec::new();
    for request in requests {
        writeln!(stdin, "{request}").expect("write");
        if request.contains("\"id\"") {
            let line = lines.next().expect("an answer").expect("a line");
            answers.push(serde_json::from_str(&line).expect("only JSON-RPC on stdout"));
        }
    }
    drop(stdin);
    let _ = child.wait();
    answers
}
