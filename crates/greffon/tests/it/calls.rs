//! `greffon plugin run`: validation, every kind of outcome, crash dumps,
//! timeouts, crashes, the SDK and the bundled plugins.

use crate::common;

use common::{TestHome, echo_plugin};
use serde_json::json;

const SCHEMA_META: &str = "{'name': 'w', 'inputs': {'schema': {
    'city': 'string',
    'days': {'type': 'integer', 'default': 1, 'minimum': 1, 'maximum': 16},
    'units': {'type': 'string', 'enum': ['celsius', 'fahrenheit'], 'required': False},
}}}";

fn schema_home() -> TestHome {
    let home = TestHome::new();
    home.plugin("w", &echo_plugin(SCHEMA_META));
    home.enable("w");
    home
}

#[test]
fn valid_arguments_reach_run_with_defaults_filled() {
    let home = schema_home();
    let (code, value) = home.run("w", r#"{"city": "Paris"}"#);
    assert_eq!(code, 0);
    assert_eq!(value, json!({"args": {"city": "Paris", "days": 1}}));
    let audit = home.log("audit");
    let call = audit
        .lines()
        .find(|l| l.contains("\"event\":\"call\""))
        .expect("call audited");
    assert!(
        call.contains("\"plugin\":\"w\"")
            && call.contains("\"outcome\":\"ok\"")
            && call.contains("duration_us")
    );
    assert!(
        !call.contains("Paris"),
        "argument values are not logged by default: {call}"
    );
}

#[test]
fn key_value_arguments_follow_the_schema_types() {
    let home = schema_home();
    let out = home.greffon(&["plugin", "run", "w", "city=42", "days=3"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v, json!({"args": {"city": "42", "days": 3}}));
}

#[test]
fn violations_name_the_plugin_the_field_and_the_rule() {
    let home = schema_home();
    let err = home.run_error("w", r#"{"days": 20, "colour": "red", "units": "kelvin"}"#);
    assert!(err.starts_with("plugin 'w': invalid arguments:"), "{err}");
    for needle in [
        "argument 'city': is required but missing (rule: required)",
        "argument 'days':",
        "(rule: maximum)",
        "argument 'colour': is not an accepted argument (rule: additionalProperties)",
        "argument 'units':",
        "(rule: enum)",
    ] {
        assert!(err.contains(needle), "{needle:?} missing from {err}");
    }
    let err = home.run_error("w", r#"{"city": 3}"#);
    assert!(
        err.contains("argument 'city':") && err.contains("(rule: type)"),
        "{err}"
    );
}

#[test]
fn arguments_that_are_not_an_object_are_refused() {
    let home = schema_home();
    let err = home.run_error("w", "[1, 2]");
    assert!(
        err.contains("arguments must be a JSON object, got an array"),
        "{err}"
    );
    let out = home.greffon(&["plugin", "run", "w", "--json", "{not json"]);
    assert_eq!(out.status.code(), Some(2), "invalid JSON is a usage error");
    let out = home.greffon(&["plugin", "run", "w", "novalue"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stdout).contains("is not KEY=VALUE"));
}

#[test]
fn oversized_arguments_are_refused_before_validation() {
    let home = TestHome::new();
    home.config("max_args_bytes = 100\n");
    home.plugin(
        "w",
        &echo_plugin("{'name': 'w', 'inputs': {'schema': {'s': 'string'}}}"),
    );
    home.enable("w");
    let big = format!(r#"{{"s": "{}"}}"#, "x".repeat(200));
    let err = home.run_error("w", &big);
    assert!(
        err.contains("over the limit of 100 bytes (max_args_bytes)"),
        "{err}"
    );
    assert_eq!(home.run("w", r#"{"s": "small"}"#).0, 0);
}

#[test]
fn calling_a_disabled_plugin_says_how_to_enable_it() {
    let home = TestHome::new();
    home.plugin("w", &echo_plugin("{'name': 'w'}"));
    let err = home.run_error("w", "{}");
    assert_eq!(
        err,
        "plugin 'w' is disabled; enable it with `greffon plugin enable w`"
    );
}

#[test]
fn a_returned_error_passes_through_unchanged() {
    let home = TestHome::new();
    home.plugin("e", "class P:\n    meta = {'name': 'e'}\n    def run(self):\n        return {'error': 'city not found', 'code': 404}\nplugin = P()\n");
    home.enable("e");
    let (code, value) = home.run("e", "{}");
    assert_eq!(code, 1);
    assert_eq!(value, json!({"error": "city not found", "code": 404}));
    assert!(home.dumps().is_empty(), "a returned error is not a crash");
}

#[test]
fn an_unexpected_exception_answers_an_error_and_writes_a_dump() {
    let home = TestHome::new();
    home.plugin(
        "boom",
        "import sys\nclass P:\n    meta = {'name': 'boom', 'inputs': {'schema': {'n': 'integer'}}}\n    def run(self, n):\n        print('working on', n)\n        print('warning!', file=sys.stderr)\n        return 1 / 0\nplugin = P()\n",
    );
    home.enable("boom");
    let err = home.run_error("boom", r#"{"n": 7}"#);
    assert!(
        err.starts_with("plugin 'boom' raised ZeroDivisionError: division by zero (crash dump: "),
        "{err}"
    );
    let dumps = home.dumps();
    assert_eq!(dumps.len(), 1);
    assert!(err.contains(&dumps[0].display().to_string()));
    let name = dumps[0].file_name().and_then(|n| n.to_str()).expect("name");
    assert!(
        name.starts_with("boom-20") && name.ends_with("Z.log"),
        "{name}"
    );
    let text = std::fs::read_to_string(&dumps[0]).expect("dump");
    for needle in [
        "phase: run",
        "\"n\": 7",
        "ZeroDivisionError",
        "line 7, in run",
        "working on 7",
        "warning!",
    ] {
        assert!(
            text.contains(needle),
            "{needle:?} missing from dump:\n{text}"
        );
    }
    home.run_error("boom", r#"{"n": 8}"#);
    assert_eq!(
        home.dumps().len(),
        2,
        "a second dump never overwrites the first"
    );
}

#[test]
fn a_result_json_cannot_hold_is_an_error() {
    let home = TestHome::new();
    home.plugin("s", "class P:\n    meta = {'name': 's'}\n    def run(self):\n        return {'items': {1, 2}}\nplugin = P()\n");
    home.enable("s");
    let err = home.run_error("s", "{}");
    assert!(
        err.contains("plugin 's': the result of run() is not JSON-serializable"),
        "{err}"
    );
    assert!(err.contains("set"), "{err}");
}

#[test]
fn a_call_past_its_timeout_answers_a_timeout() {
    let home = TestHome::new();
    home.config("kill_grace_s = 0.5\n[plugins.slow]\ntimeout_s = 0.5\n");
    home.plugin("slow", "import time\nclass P:\n    meta = {'name': 'slow', 'timeout': 60}\n    def run(self):\n        time.sleep(30)\nplugin = P()\n");
    home.enable("slow");
    let started = std::time::Instant::now();
    let err = home.run_error("slow", "{}");
    assert_eq!(err, "plugin 'slow' did not answer within 0.5 s (timeout)");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "the config timeout won over meta's 60 s"
    );
}

#[test]
fn meta_timeout_applies_when_config_is_silent() {
    let home = TestHome::new();
    home.plugin("slow", "import time\nclass P:\n    meta = {'name': 'slow', 'timeout': 0.3}\n    def run(self):\n        time.sleep(30)\nplugin = P()\n");
    home.enable("slow");
    assert_eq!(
        home.run_error("slow", "{}"),
        "plugin 'slow' did not answer within 0.3 s (timeout)"
    );
}

#[test]
fn a_worker_that_dies_mid_call_is_answered_dumped_and_restarted() {
    let home = TestHome::new();
    home.plugin(
        "die",
        "import os\nclass P:\n    meta = {'name': 'die', 'inputs': {'schema': {'die': 'boolean'}}}\n    def run(self, die):\n        if die:\n            print('last words', flush=True)\n            os._exit(9)\n        return 'alive'\nplugin = P()\n",
    );
    home.enable("die");
    let err = home.run_error("die", r#"{"die": true}"#);
    assert!(
        err.contains(
            "plugin 'die': its worker ended during the call (the worker exited with code 9)"
        ),
        "{err}"
    );
    let dumps = home.dumps();
    assert_eq!(dumps.len(), 1);
    let text = std::fs::read_to_string(&dumps[0]).expect("dump");
    assert!(
        text.contains("phase: worker exit")
            && text.contains("\"die\": true")
            && text.contains("exited with code 9"),
        "{text}"
    );
    assert_eq!(home.run("die", r#"{"die": false}"#), (0, json!("alive")));
}

#[test]
fn garbage_on_the_channel_kills_the_worker_and_harms_nothing() {
    let home = TestHome::new();
    home.plugin(
        "liar",
        "import os\nclass P:\n    meta = {'name': 'liar', 'inputs': {'schema': {'lie': 'boolean'}}}\n    def run(self, lie):\n        if lie:\n            os.write(3, b'\\xff\\xff\\xff\\xffgarbage')\n            import time; time.sleep(30)\n        return 'honest'\nplugin = P()\n",
    );
    home.enable("liar");
    let err = home.run_error("liar", r#"{"lie": true}"#);
    assert!(
        err.contains("broke the protocol") && err.contains("exceeds the limit"),
        "{err}"
    );
    let text = std::fs::read_to_string(home.dumps().last().expect("dump")).expect("dump");
    assert!(
        text.contains("broke the protocol") && text.contains("SIGKILL"),
        "{text}"
    );
    assert_eq!(home.run("liar", r#"{"lie": false}"#), (0, json!("honest")));
}

#[test]
fn start_runs_at_enable_and_stop_at_disable() {
    let home = TestHome::new();
    home.plugin(
        "life",
        "from greffon.log import get_logger\nlog = get_logger('plugin')\nclass P:\n    meta = {'name': 'life'}\n    def __init__(self):\n        self.ready = False\n    def start(self):\n        self.ready = True\n        log.info('life started')\n    def stop(self):\n        log.info('life stopped')\n    def run(self):\n        return self.ready\nplugin = P()\n",
    );
    home.enable("life");
    let log = home.log("plugin");
    assert!(
        log.contains("life started") && log.contains("life stopped"),
        "enable starts, CLI exit stops:\n{log}"
    );
    assert_eq!(
        home.run("life", "{}"),
        (0, json!(true)),
        "start() ran before run()"
    );
    // The embedded CLI stops what it started on exit: every start() has
    // its stop().
    let log = home.log("plugin");
    assert_eq!(log.matches("life started").count(), 2);
    assert_eq!(log.matches("life stopped").count(), 2);
}

#[test]
fn a_failing_start_fails_the_plugin_with_a_dump() {
    let home = TestHome::new();
    home.plugin("bad_start", "class P:\n    meta = {'name': 'bad_start'}\n    def start(self):\n        raise OSError('no model file')\n    def run(self):\n        return 1\nplugin = P()\n");
    let out = home.greffon(&["plugin", "enable", "bad_start"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("start() raised OSError: no model file") && err.contains("crash dump"),
        "{err}"
    );
    let text = std::fs::read_to_string(home.dumps().last().expect("dump")).expect("dump");
    assert!(text.contains("phase: start"), "{text}");
    assert_eq!(
        common::entry(&home.list(), "bad_start")["state"],
        "disabled",
        "a failed enable is not persisted"
    );
}

#[test]
fn a_stop_that_hangs_is_bounded() {
    let home = TestHome::new();
    home.config("stop_timeout_s = 0.5\n");
    home.plugin("hang", "import time\nclass P:\n    meta = {'name': 'hang'}\n    def stop(self):\n        time.sleep(60)\n    def run(self):\n        return 1\nplugin = P()\n");
    let started = std::time::Instant::now();
    home.enable("hang");
    home.ok(&["plugin", "disable", "hang"]);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "stop() was not bounded"
    );
}

#[test]
fn plugin_output_and_logs_land_in_their_categories() {
    let home = TestHome::new();
    home.plugin(
        "talk",
        "from app.core.logger import get_logger, logger\nfrom greffon import log\nclass P:\n    meta = {'name': 'talk'}\n    def run(self):\n        print('printed-by-run')\n        logger.warning('compat-logger-record')\n        log.get_logger('llm').info('llm-category-record')\n        get_logger('audit').info('audit-category-record')\n        return 'ok'\nplugin = P()\n",
    );
    home.enable("talk");
    assert_eq!(home.run("talk", "{}"), (0, json!("ok")));
    let plugin = home.log("plugin");
    assert!(
        plugin.contains("printed-by-run") && plugin.contains("compat-logger-record"),
        "{plugin}"
    );
    assert!(home.log("llm").contains("llm-category-record"));
    assert!(home.log("audit").contains("audit-category-record"));
    assert!(!home.log("server").contains("printed-by-run"));
}

#[test]
fn megabytes_of_output_are_bounded() {
    let home = TestHome::new();
    home.plugin(
        "loud",
        "import sys\nclass P:\n    meta = {'name': 'loud'}\n    def run(self):\n        chunk = 'x' * 65536 + '\\n'\n        for _ in range(160):\n            sys.stdout.write(chunk)\n            sys.stderr.write(chunk)\n        return 'done'\nplugin = P()\n",
    );
    home.enable("loud");
    assert_eq!(home.run("loud", "{}"), (0, json!("done")));
    let size = std::fs::metadata(home.path().join("app/logs/plugin.log"))
        .expect("log")
        .len();
    assert!(size < 512 << 10, "20 MiB printed, {size} bytes logged");
    assert!(home.log("plugin").contains("\"dropped\":"));
}

#[test]
fn config_table_reaches_the_plugin() {
    let home = TestHome::new();
    home.config("[plugins.c.config]\nbase_url = \"http://127.0.0.1:9\"\nretries = 3\n");
    home.plugin("c", "import greffon\nclass P:\n    meta = {'name': 'c'}\n    def run(self):\n        return greffon.config()\nplugin = P()\n");
    home.enable("c");
    assert_eq!(
        home.run("c", "{}"),
        (0, json!({"base_url": "http://127.0.0.1:9", "retries": 3}))
    );
}

#[test]
fn pydantic_model_schemas_validate_in_the_host_and_fill_defaults_in_the_worker() {
    let home = TestHome::new();
    home.plugin(
        "pyd",
        "from pydantic import BaseModel, Field\nclass Args(BaseModel):\n    city: str\n    days: int = Field(default=1, ge=1, le=16)\nclass P:\n    meta = {'name': 'pyd', 'inputs': {'schema': Args}}\n    def run(self, city, days):\n        return {'city': city, 'days': days}\nplugin = P()\n",
    );
    home.enable("pyd");
    let info = home.info("pyd");
    assert_eq!(info["schema_source"], "pydantic");
    assert_eq!(info["schema"]["required"], json!(["city"]));
    assert_eq!(
        home.run("pyd", r#"{"city": "Lyon"}"#),
        (0, json!({"city": "Lyon", "days": 1}))
    );
    let err = home.run_error("pyd", r#"{"city": "Lyon", "days": 40}"#);
    assert!(
        err.contains("argument 'days':") && err.contains("(rule: maximum)"),
        "{err}"
    );
    let err = home.run_error("pyd", "{}");
    assert!(
        err.contains("argument 'city': is required but missing"),
        "{err}"
    );
}

#[test]
fn system_info_reports_the_machine_through_the_host_service() {
    let home = TestHome::new();
    home.bundled("system_info");
    home.enable("system_info");
    let (code, facts) = home.run("system_info", "{}");
    assert_eq!(code, 0, "{facts}");
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
    assert_eq!(facts["kernel"]["release"], release.trim());
    assert!(facts["cpu"]["logical"].as_u64().expect("logical") >= 1);
    assert!(
        facts["memory"]["total_bytes"].as_u64().expect("total")
            > facts["memory"]["available_bytes"]
                .as_u64()
                .expect("available")
    );
    assert!(facts["gpus"].is_array());
    assert!(
        facts["python"]["version"]
            .as_str()
            .expect("python")
            .starts_with("3.")
    );
    let (_, only) = home.run("system_info", r#"{"only": ["hostname"]}"#);
    assert_eq!(only.as_object().map(|o| o.len()), Some(1));
    assert!(home.log("audit").contains("\"service\":\"system.info\""));
}

#[test]
fn a_worker_inherits_no_descriptor_beyond_its_channels() {
    let home = TestHome::new();
    home.plugin(
        "fds",
        "import os\nclass P:\n    meta = {'name': 'fds'}\n    def run(self):\n        def is_open(fd):\n            try:\n                os.fstat(fd)\n                return True\n            except OSError:\n                return False\n        return [fd for fd in range(1024) if is_open(fd)]\nplugin = P()\n",
    );
    home.enable("fds");
    // stdin, stdout, stderr, the main channel and the side channel.
    assert_eq!(home.run("fds", "{}"), (0, json!([0, 1, 2, 3, 4])));
}

#[test]
fn sigterm_during_a_call_still_runs_stop() {
    let home = TestHome::new();
    home.plugin(
        "slow",
        "import time\nfrom greffon.log import get_logger\nlog = get_logger('plugin')\nclass P:\n    meta = {'name': 'slow'}\n    def stop(self):\n        log.info('slow stopped cleanly')\n    def run(self):\n        log.info('slow running')\n        time.sleep(30)\nplugin = P()\n",
    );
    home.enable("slow");
    let before = home.log("plugin").matches("slow stopped cleanly").count();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_greffon"))
        .arg("--home")
        .arg(home.path())
        .args(["plugin", "run", "slow"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("greffon runs");
    // Signal only once the call is running in the worker.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !home.log("plugin").contains("slow running") {
        assert!(
            std::time::Instant::now() < deadline,
            "the call never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // SAFETY: plain syscall on our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let out = child.wait_with_output().expect("exits");
    assert_eq!(out.status.code(), Some(130));
    assert!(String::from_utf8_lossy(&out.stderr).contains("terminated; stopping plugins"));
    assert_eq!(
        home.log("plugin").matches("slow stopped cleanly").count(),
        before + 1
    );
}

#[test]
fn output_printed_outside_a_call_reaches_the_crash_dump() {
    let home = TestHome::new();
    home.plugin(
        "bg",
        "import os, threading\nclass P:\n    meta = {'name': 'bg'}\n    def run(self):\n        t = threading.Thread(target=lambda: print('bg-before-crash'))\n        t.start(); t.join()\n        os._exit(3)\nplugin = P()\n",
    );
    home.enable("bg");
    let err = home.run_error("bg", "{}");
    assert!(err.contains("exited with code 3"), "{err}");
    let text = std::fs::read_to_string(home.dumps().last().expect("dump")).expect("dump");
    assert!(text.contains("bg-before-crash"), "{text}");
}

#[test]
fn a_result_over_the_size_limit_is_an_error() {
    let home = TestHome::new();
    home.config("max_result_bytes = 1000\n");
    home.plugin(
        "big",
        "class P:\n    meta = {'name': 'big', 'inputs': {'schema': {'n': 'integer'}}}\n    def run(self, n):\n        return 'x' * n\nplugin = P()\n",
    );
    home.enable("big");
    let err = home.run_error("big", r#"{"n": 5000}"#);
    assert_eq!(
        err,
        "plugin 'big': the result of run() is 5002 bytes, over the limit of 1000 bytes (max_result_bytes)"
    );
    assert_eq!(home.run("big", r#"{"n": 3}"#), (0, json!("xxx")));
}

#[test]
fn reload_without_a_server_explains_that_none_is_running() {
    let home = TestHome::new();
    home.plugin("p", &echo_plugin("{'name': 'p'}"));
    let out = home.greffon(&["plugin", "reload", "p"]);
    assert_eq!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no greffon server is running"), "{err}");
    let out = home.greffon(&["plugin", "reload", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown plugin 'nope'"));
}
