//! Plugin secrets end to end: `greffon secret` (embedded and through a
//! server), `/v1/secrets`, `greffon.secret()` in real sandboxed workers,
//! redaction in dumps, logs and errors, and reload escalation.

use crate::common;

use common::server::{call, start};
use common::{TestHome, stdio_exchange};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A value with a quote and a backslash, so that its JSON-escaped form
/// (in log lines) differs from the raw one.
const VALUE: &str = r#"ghp_9fQ2"x\7LmZ0kRtVw"#;

/// Reads its secret and proves it by a hash, raises or dies holding it,
/// and tries a name it did not declare.
const GH: &str = r#"import hashlib, os, greffon
from greffon import log
class P:
    meta = {'name': 'gh', 'secrets': ['GITHUB_TOKEN'], 'inputs': {'schema': {'action': 'string'}}}
    def run(self, action):
        if action == 'other':
            try:
                greffon.secret('OTHER_TOKEN')
            except greffon.HostError as e:
                return {'kind': e.kind, 'message': str(e)}
        try:
            token = greffon.secret('GITHUB_TOKEN')
        except greffon.HostError as e:
            return {'kind': e.kind, 'message': str(e)}
        if action == 'hash':
            return {'sha256': hashlib.sha256(token.encode()).hexdigest()}
        print('token is', token)
        log.get_logger('plugin').warning('using %s', token)
        if action == 'raise':
            raise ValueError(f'rejected {token}')
        # Straight to the file descriptor: what a crashing extension or a
        # child process writes, which no capture buffer holds.
        os.write(2, f'dying with {token}\n'.encode())
        os._exit(3)
plugin = P()
"#;

/// Declares nothing, or the same name as `gh`: neither reads gh's value.
const THIEF: &str = r#"import greffon
class P:
    meta = {'name': NAME, 'secrets': DECLARED}
    def run(self):
        try:
            return {'value': greffon.secret('GITHUB_TOKEN')}
        except greffon.HostError as e:
            return {'kind': e.kind, 'message': str(e)}
plugin = P()
"#;

fn thief(name: &str, declared: &str) -> String {
    THIEF
        .replace("NAME", &format!("'{name}'"))
        .replace("DECLARED", declared)
}

/// A home on the file store (a developer's desktop keyring must not take
/// part in these tests; the keyring has its own test below).
fn secrets_home() -> TestHome {
    let home = TestHome::new();
    home.config("[secrets]\nstore = \"file\"\n");
    home.plugin("gh", GH)
        .plugin("thief", &thief("thief", "[]"))
        .plugin("twin", &thief("twin", "['GITHUB_TOKEN']"));
    for name in ["gh", "thief", "twin"] {
        home.enable(name);
    }
    home
}

/// `greffon secret ARGS` with `stdin` piped in: (exit code, stdout, stderr).
fn secret(home: &TestHome, args: &[&str], stdin: &str) -> (i32, String, String) {
    secret_env(home, args, stdin, &[])
}

/// [`secret`] with extra environment variables.
fn secret_env(
    home: &TestHome,
    args: &[&str],
    stdin: &str,
    env: &[(&str, &str)],
) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_greffon"))
        .arg("--home")
        .arg(home.path())
        .arg("secret")
        .args(args)
        .env_remove("GREFFON_HOME")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("greffon runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("greffon ends");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn sha256(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every file under `dir` whose bytes hold `needle` (raw or JSON-escaped).
fn files_holding(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let escaped = serde_json::to_string(needle).expect("json");
    let escaped = &escaped[1..escaped.len() - 1];
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let path = entry.path();
            let kind = entry.file_type().expect("file type");
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                let bytes = std::fs::read(&path).unwrap_or_default();
                let text = String::from_utf8_lossy(&bytes);
                if text.contains(needle) || text.contains(escaped) {
                    found.push(path);
                }
            }
        }
    }
    found
}

fn list(home: &TestHome) -> Vec<Value> {
    let (code, out, err) = secret(home, &["list", "--json"], "");
    assert_eq!(code, 0, "{err}");
    serde_json::from_str::<Value>(&out)
        .expect("list JSON")
        .as_array()
        .expect("array")
        .clone()
}

#[test]
fn a_plugin_reads_only_its_declared_secret_and_the_value_stays_in_the_store() {
    let home = secrets_home();
    // Unset: the plugin learns how to set it.
    let (_, v) = home.run("gh", r#"{"action": "hash"}"#);
    assert_eq!(v["kind"], "not_found", "{v}");
    assert!(
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("greffon secret set gh GITHUB_TOKEN")),
        "{v}"
    );

    // A value on the command line is refused and not stored.
    let (code, _, err) = secret(&home, &["set", "gh", "GITHUB_TOKEN", "ghp_on_the_line"], "");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("never from the command line"), "{err}");
    assert!(files_holding(home.path(), "ghp_on_the_line").is_empty());

    // A name the plugin does not declare is refused, naming what it does.
    let (code, _, err) = secret(&home, &["set", "gh", "GITHUB_TOKN"], "x\n");
    assert_eq!(code, 1);
    assert!(
        err.contains("does not declare the secret 'GITHUB_TOKN'") && err.contains("GITHUB_TOKEN"),
        "{err}"
    );

    let (code, out, err) = secret(&home, &["set", "gh", "GITHUB_TOKEN"], &format!("{VALUE}\n"));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("stored"), "{out}");
    let store = home.path().join("app/secrets.json");
    let mode = std::fs::metadata(&store)
        .expect("store")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the store is private");
    let entries = list(&home);
    assert!(
        entries.contains(
            &json!({"plugin": "gh", "name": "GITHUB_TOKEN", "set": true, "declared": true})
        )
    );
    assert!(entries.contains(
        &json!({"plugin": "twin", "name": "GITHUB_TOKEN", "set": false, "declared": true})
    ));
    assert_eq!(
        home.info("gh")["secrets"],
        json!([{"name": "GITHUB_TOKEN", "set": true}])
    );

    // The plugin reads exactly the stored value (the trailing newline of
    // stdin dropped).
    let (code, v) = home.run("gh", r#"{"action": "hash"}"#);
    assert_eq!(
        (code, v["sha256"].clone()),
        (0, json!(sha256(VALUE))),
        "{v}"
    );
    let (_, v) = home.run("gh", r#"{"action": "other"}"#);
    assert_eq!(v["kind"], "permission_denied", "{v}");
    assert!(
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("'OTHER_TOKEN'") && m.contains("GITHUB_TOKEN")),
        "{v}"
    );
    // Another plugin cannot read it, declared or not.
    let (_, v) = home.run("thief", "{}");
    assert_eq!(v["kind"], "permission_denied", "{v}");
    let (_, v) = home.run("twin", "{}");
    assert_eq!(v["kind"], "not_found", "twin has its own, unset: {v}");

    // It prints, logs and raises with the value: the answer and the dump
    // name the secret instead.
    let message = home.run_error("gh", r#"{"action": "raise"}"#);
    assert!(
        message.contains("ValueError: rejected [secret GITHUB_TOKEN]"),
        "{message}"
    );
    let dump = std::fs::read_to_string(home.dumps().last().expect("a dump")).expect("dump");
    assert!(dump.contains("token is [secret GITHUB_TOKEN]"), "{dump}");
    // The worker dies holding it: the worker-exit dump has its raw output.
    let before = home.dumps().len();
    let message = home.run_error("gh", r#"{"action": "exit"}"#);
    assert!(!message.contains(VALUE), "{message}");
    let dumps = home.dumps();
    assert!(dumps.len() > before, "a worker-exit dump");
    let exit_dump = dumps
        .iter()
        .map(|d| std::fs::read_to_string(d).expect("dump"))
        .find(|t| t.contains("phase: worker exit"))
        .expect("worker exit dump");
    assert!(
        exit_dump.contains("dying with [secret GITHUB_TOKEN]"),
        "{exit_dump}"
    );

    // Through a server: an HTTP call and an MCP call read it too.
    let server = start(&home);
    let (st, v) = call(
        &server.api,
        "POST",
        "/v1/plugins/gh/run",
        r#"{"action": "hash"}"#,
    );
    assert_eq!(
        (st, v["sha256"].clone()),
        (200, json!(sha256(VALUE))),
        "{v}"
    );
    let (st, v) = call(
        &server.api,
        "POST",
        "/v1/plugins/gh/run",
        r#"{"action": "raise"}"#,
    );
    assert_eq!(st, 502, "{v}");
    assert!(!v.to_string().contains("9fQ2"), "{v}");
    let answers = mcp_call_hash(&home);
    assert_eq!(
        answers["result"]["structuredContent"]["sha256"],
        json!(sha256(VALUE)),
        "{answers}"
    );
    drop(server);

    // Every read is audited by name, never by value.
    let audit = home.log("audit");
    assert!(
        audit
            .lines()
            .any(|l| l.contains("\"event\":\"secret_read\"")
                && l.contains("\"plugin\":\"gh\"")
                && l.contains("\"secret\":\"GITHUB_TOKEN\"")),
        "{audit}"
    );
    assert!(audit.contains("\"event\":\"secret_set\""), "{audit}");
    let holding: Vec<PathBuf> = files_holding(home.path(), VALUE)
        .into_iter()
        .filter(|p| p != &store)
        .collect();
    assert!(holding.is_empty(), "the value leaked into {holding:?}");
    assert!(
        home.log("plugin").contains("[secret GITHUB_TOKEN]"),
        "the plugin's output is logged, redacted"
    );

    // Removing the folder keeps the secret; `secret rm` removes it.
    std::fs::remove_dir_all(home.path().join("plugins/gh")).expect("rm plugin");
    assert!(list(&home).contains(
        &json!({"plugin": "gh", "name": "GITHUB_TOKEN", "set": true, "declared": false})
    ));
    let (code, out, err) = secret(&home, &["rm", "gh", "GITHUB_TOKEN"], "");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("removed"), "{out}");
    let (code, _, err) = secret(&home, &["rm", "gh", "GITHUB_TOKEN"], "");
    assert_eq!(code, 1);
    assert!(err.contains("is not set"), "{err}");
    assert!(files_holding(home.path(), VALUE).is_empty());
}

/// `tools/call gh {"action": "hash"}` through `greffon mcp` (which goes
/// through the running server): its answer.
fn mcp_call_hash(home: &TestHome) -> Value {
    let requests = [
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"gh","arguments":{"action":"hash"}}}"#,
    ];
    let mut answers = stdio_exchange(home, &["mcp"], &[], &requests);
    answers.pop().expect("the call's answer")
}

#[test]
fn the_api_is_write_only_and_refuses_what_the_cli_refuses() {
    let home = secrets_home();
    let server = start(&home);
    let s = &server.api;
    let body = json!({"value": VALUE}).to_string();
    let (st, v) = call(s, "PUT", "/v1/secrets/gh/GITHUB_TOKEN", &body);
    assert_eq!(st, 204, "{v}");
    // The CLI goes through the running server and sees it.
    let (code, out, err) = secret(&home, &["list", "gh"], "");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("GITHUB_TOKEN") && out.contains("set"), "{out}");
    for path in [
        "/v1/secrets",
        "/v1/secrets/gh",
        "/v1/plugins/gh",
        "/v1/plugins",
    ] {
        let (st, v) = call(s, "GET", path, "");
        assert_eq!(st, 200, "{path}: {v}");
        assert!(
            !v.to_string().contains("9fQ2"),
            "{path} returned the value: {v}"
        );
    }
    let (_, v) = call(s, "GET", "/v1/secrets/gh", "");
    assert_eq!(
        v,
        json!([{"plugin": "gh", "name": "GITHUB_TOKEN", "set": true, "declared": true}])
    );
    let (st, v) = call(s, "POST", "/v1/plugins/gh/run", r#"{"action": "hash"}"#);
    assert_eq!(
        (st, v["sha256"].clone()),
        (200, json!(sha256(VALUE))),
        "{v}"
    );

    // Refusals: each names what is wrong, none echoes the body.
    let too_big = json!({"value": "x".repeat(greffon_host::MAX_SECRET_BYTES + 1)}).to_string();
    let cases = [
        (
            "PUT",
            "/v1/secrets/gh/GITHUB_TOKEN",
            too_big.as_str(),
            422,
            "more than 65536",
        ),
        (
            "PUT",
            "/v1/secrets/gh/GITHUB_TOKEN",
            r#"{"value": "a\u0000b"}"#,
            422,
            "contains a NUL byte",
        ),
        (
            "PUT",
            "/v1/secrets/gh/NOPE",
            body.as_str(),
            422,
            "does not declare the secret 'NOPE'",
        ),
        (
            "PUT",
            "/v1/secrets/nobody/TOKEN",
            body.as_str(),
            404,
            "unknown plugin 'nobody'",
        ),
        (
            "PUT",
            "/v1/secrets/gh/1BAD",
            body.as_str(),
            422,
            "not a valid secret name",
        ),
        (
            "PUT",
            "/v1/secrets/gh/GITHUB_TOKEN",
            r#"{"value": ""}"#,
            422,
            "is empty",
        ),
        (
            "PUT",
            "/v1/secrets/gh/GITHUB_TOKEN",
            r#"{"value": "abc""#,
            422,
            "not JSON",
        ),
        (
            "PUT",
            "/v1/secrets/gh/GITHUB_TOKEN",
            r#"{"valu": "sekret-typo"}"#,
            422,
            "must be {\"value\"",
        ),
        (
            "GET",
            "/v1/secrets/nobody",
            "",
            404,
            "unknown plugin 'nobody'",
        ),
        (
            "DELETE",
            "/v1/secrets/twin/GITHUB_TOKEN",
            "",
            404,
            "is not set",
        ),
    ];
    for (method, path, body, status, says) in cases {
        let (st, v) = call(s, method, path, body);
        let text = v["error"].as_str().unwrap_or_default();
        assert_eq!(st, status, "{method} {path}: {v}");
        assert!(text.contains(says), "{method} {path}: {v}");
        assert!(
            !text.contains("sekret-typo"),
            "{method} {path} echoed the body: {v}"
        );
    }
    let (st, v) = call(s, "DELETE", "/v1/secrets/gh/GITHUB_TOKEN", "");
    assert_eq!(st, 204, "{v}");
    let (_, v) = call(s, "POST", "/v1/plugins/gh/run", r#"{"action": "hash"}"#);
    assert_eq!(v["kind"], "not_found", "removed: {v}");
    let (st, _) = request_without_token(s, "/v1/secrets");
    assert_eq!(st, 401);
}

fn request_without_token(s: &common::server::Api, path: &str) -> (u16, Value) {
    common::server::request(s, "GET", path, None, None, "")
}

#[test]
fn doctor_fails_when_the_keyring_is_required_and_none_answers() {
    let home = TestHome::new();
    home.config("[secrets]\nstore = \"keyring\"\n");
    let dir = tempfile::tempdir().expect("tempdir");
    let nobody = format!("unix:path={}", dir.path().join("no-bus").display());
    let out = home.greffon_env(
        &["doctor", "--json"],
        &[
            ("DBUS_SESSION_BUS_ADDRESS", &nobody),
            ("XDG_RUNTIME_DIR", &dir.path().display().to_string()),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).expect("doctor JSON");
    assert_eq!(v["secrets"]["keyring_available"], json!(false), "{v}");
    assert!(
        v["problems"]
            .to_string()
            .contains("store = \\\"keyring\\\" but no Secret Service answers"),
        "{v}"
    );
}

#[test]
fn a_reload_that_declares_a_new_secret_waits_for_the_operator() {
    let home = TestHome::new();
    home.config("[secrets]\nstore = \"file\"\n");
    home.plugin("gh", &thief("gh", "['GITHUB_TOKEN']"));
    home.enable("gh");
    let server = start(&home);
    let s = &server.api;
    home.plugin("gh", &thief("gh", "['GITHUB_TOKEN', 'MAIL_PASSWORD']"));
    let (st, v) = call(s, "POST", "/v1/plugins/gh/reload", "");
    assert_eq!(st, 502, "{v}");
    let text = v["error"].as_str().unwrap_or_default();
    assert!(
        text.contains("secrets that were not granted (MAIL_PASSWORD)")
            && text.contains("greffon plugin enable gh"),
        "{v}"
    );
    assert!(home.log("audit").contains("permission_escalation_refused"));
    let (st, _) = call(s, "POST", "/v1/plugins/gh/run", "");
    assert_eq!(st, 200, "the granted version keeps serving");
    let (st, v) = call(s, "POST", "/v1/plugins/gh/enable", "");
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        v["secrets"],
        json!([{"name": "GITHUB_TOKEN", "set": false}, {"name": "MAIL_PASSWORD", "set": false}])
    );
    // A restart keeps the grant (persisted), so the plugin stays enabled.
    drop(server);
    assert_eq!(home.info("gh")["state"], "enabled");
}

/// A private session bus with GNOME Keyring on it (the Secret Service of
/// a desktop session), in a temporary HOME, stopped on drop.
struct Keyring {
    _dir: tempfile::TempDir,
    bus: std::process::Child,
    daemon: std::process::Child,
    address: String,
    runtime: String,
}

impl Keyring {
    fn start(home: &TestHome) -> Keyring {
        for tool in ["dbus-daemon", "gnome-keyring-daemon"] {
            let found = Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            assert!(
                found,
                "the keyring test needs {tool}: run scripts/build-deps (it installs dbus-daemon and gnome-keyring)"
            );
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let runtime = dir.path().join("run");
        std::fs::create_dir_all(dir.path().join("home")).expect("home");
        std::fs::create_dir_all(&runtime).expect("runtime dir");
        std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        let mut bus = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--nopidfile", "--print-address=1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-daemon starts");
        let mut address = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(bus.stdout.take().expect("stdout")),
            &mut address,
        )
        .expect("the bus address");
        let address = address.trim().to_string();
        let log = dir.path().join("keyring.log");
        let daemon = spawn_keyring_daemon(dir.path(), &runtime, &address, &log);
        let mut keyring = Keyring {
            _dir: dir,
            bus,
            daemon,
            address,
            runtime: runtime.display().to_string(),
        };
        // A daemon that exits while starting (seen once in CI, under
        // load) is started again, at most twice; what it said is kept for
        // the failure message.
        let mut restarts = 0;
        let ready = common::wait_for(std::time::Duration::from_secs(30), || {
            let out = home.greffon_env(&["doctor", "--json"], &keyring.env());
            let v: Value = serde_json::from_slice(&out.stdout).ok()?;
            if v["secrets"]["keyring_available"] == json!(true) {
                return Some(());
            }
            if restarts < 2 && keyring.daemon.try_wait().ok().flatten().is_some() {
                restarts += 1;
                keyring.daemon = spawn_keyring_daemon(
                    keyring._dir.path(),
                    Path::new(&keyring.runtime),
                    &keyring.address,
                    &log,
                );
            }
            None
        });
        assert!(
            ready.is_some(),
            "gnome-keyring did not come up on the bus ({restarts} restart(s)): {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        keyring
    }

    fn env(&self) -> [(&str, &str); 2] {
        [
            ("DBUS_SESSION_BUS_ADDRESS", &self.address),
            ("XDG_RUNTIME_DIR", &self.runtime),
        ]
    }
}

/// gnome-keyring's secrets component on the bus at `address`, its login
/// keyring created and unlocked by a password on stdin; its output
/// appended to `log`.
fn spawn_keyring_daemon(
    dir: &Path,
    runtime: &Path,
    address: &str,
    log: &Path,
) -> std::process::Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("keyring log");
    let mut daemon = Command::new("gnome-keyring-daemon")
        .args(["--foreground", "--unlock", "--components=secrets"])
        .env("HOME", dir.join("home"))
        .env("XDG_RUNTIME_DIR", runtime)
        .env("DBUS_SESSION_BUS_ADDRESS", address)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("gnome-keyring-daemon starts");
    // The login keyring's password, which creates and unlocks it.
    let mut stdin = daemon.stdin.take().expect("stdin");
    stdin.write_all(b"test-login-password").expect("password");
    drop(stdin);
    daemon
}

impl Drop for Keyring {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        let _ = self.bus.kill();
        let _ = self.bus.wait();
    }
}

/// `greffon secret ARGS` with the keyring's bus in the environment:
/// (exit code, stdout and stderr).
fn secret_on(home: &TestHome, keyring: &Keyring, args: &[&str], stdin: &str) -> (i32, String) {
    let (code, out, err) = secret_env(home, args, stdin, &keyring.env());
    (code, format!("{out}{err}"))
}

#[test]
fn the_os_keyring_holds_the_value_when_a_secret_service_answers() {
    let home = TestHome::new();
    home.plugin("gh", GH);
    home.enable("gh");
    let keyring = Keyring::start(&home);
    let (code, out) = secret_on(&home, &keyring, &["set", "gh", "GITHUB_TOKEN"], VALUE);
    assert_eq!(code, 0, "{out}");
    assert!(
        !home.path().join("app/secrets.json").exists(),
        "auto chose the keyring: no file store"
    );
    let (code, out) = secret_on(&home, &keyring, &["list", "--json"], "");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("\"set\": true"), "{out}");
    let run = home.greffon_env(
        &["plugin", "run", "gh", "--json", r#"{"action": "hash"}"#],
        &keyring.env(),
    );
    let v: Value = serde_json::from_slice(&run.stdout).expect("run JSON");
    assert_eq!(v["sha256"], json!(sha256(VALUE)), "{v}");
    // The value is nowhere under the home.
    assert!(files_holding(home.path(), VALUE).is_empty());
    // Without the bus the file store serves, and it is empty: the keyring
    // was really where the value was.
    let (_, v) = home.run("gh", r#"{"action": "hash"}"#);
    assert_eq!(v["kind"], "not_found", "{v}");
    let (code, out) = secret_on(&home, &keyring, &["rm", "gh", "GITHUB_TOKEN"], "");
    assert_eq!(code, 0, "{out}");
    let run = home.greffon_env(
        &["plugin", "run", "gh", "--json", r#"{"action": "hash"}"#],
        &keyring.env(),
    );
    let v: Value = serde_json::from_slice(&run.stdout).expect("run JSON");
    assert_eq!(v["kind"], "not_found", "removed from the keyring: {v}");
}
