//! The local LLM through the real binary with the real SmolLM2 model
//! (`GREFFON_TEST_MODEL`, which `scripts/test` pulls once and caches):
//! the `llm` plugin (CLI and API), `greffon.LLM` options, determinism,
//! limits, the queue, cancellation, `/v1/llm/infer` with and without
//! streaming, model errors; and the `openai` backend against a local
//! server speaking the real wire format.

use crate::common;

use common::TestHome;
use common::server::{Api, call, start};
use common::upstream::{Response, Upstream};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// A home with the bundled `llm` plugin enabled and this `greffon.toml`.
fn llm_home(config: &str) -> TestHome {
    let home = TestHome::new();
    home.bundled("llm");
    home.config(config);
    home.enable("llm");
    home
}

/// The test model, with more `[llm]` settings.
fn home(llm: &str) -> TestHome {
    llm_home(&format!(
        "[llm]\nmodel = \"{}\"\n{llm}",
        common::test_model().display()
    ))
}

fn ask(home: &TestHome, args: Value) -> Value {
    let (code, v) = home.run("llm", &args.to_string());
    assert_eq!(code, 0, "{v}");
    v
}

#[test]
fn the_llm_plugin_answers_greedily_and_honours_its_options() {
    let home = home("");
    // No permission: the model runs in greffon, not in the worker.
    assert_eq!(home.info("llm")["granted"], json!([]));
    let a = ask(&home, json!({"prompt": "What is the capital of France?"}));
    assert!(
        a["text"].as_str().is_some_and(|t| t.contains("Paris")),
        "{a}"
    );
    assert_eq!(a["finish_reason"], "stop");
    assert!(a["prompt_tokens"].as_u64().is_some_and(|n| n > 5), "{a}");

    // The same seed gives the same text.
    let sampled = json!({"prompt": "Write a sentence about the sea.", "temperature": 0.9, "seed": 7, "max_tokens": 24});
    let one = ask(&home, sampled.clone());
    let two = ask(&home, sampled);
    assert_eq!(one["text"], two["text"]);

    // max_tokens, exactly.
    let short = ask(
        &home,
        json!({"prompt": "Count from one to one hundred.", "max_tokens": 5}),
    );
    assert_eq!(short["completion_tokens"], 5, "{short}");
    assert_eq!(short["finish_reason"], "length");

    // A stop string ends the text before it.
    let stopped = ask(
        &home,
        json!({"prompt": "What is the capital of France?", "stop": ["Paris"]}),
    );
    assert_eq!(stopped["finish_reason"], "stop_string", "{stopped}");
    let text = stopped["text"].as_str().expect("text");
    assert!(!text.contains("Paris") && !text.is_empty(), "{text}");
    assert!(a["text"].as_str().is_some_and(|t| t.starts_with(text)));

    // Out-of-range values are refused by the plugin's schema.
    let e = home.run_error("llm", r#"{"prompt": "x", "temperature": 3}"#);
    assert!(e.contains("temperature"), "{e}");

    // llm.log records the request, without the prompt by default.
    let log = home.log("llm");
    assert!(log.contains("\"completion_tokens\":5"), "{log}");
    assert!(
        !log.contains("capital of France"),
        "prompts are not logged by default"
    );
}

/// A plugin that calls the SDK directly, to see its refusals.
const DIRECT: &str = r#"from app.core.llm import LLM, LLMError

class P:
    meta = {'name': 'direct', 'timeout': 1, 'inputs': {'schema': {'prompt': 'string', 'options': {'type': 'object', 'default': {}}}}}

    def run(self, prompt, options):
        try:
            return {'text': LLM().infer(prompt, options)}
        except LLMError as e:
            return {'error': str(e), 'kind': e.kind}

plugin = P()
"#;

#[test]
fn the_sdk_refuses_bad_options_and_long_prompts_naming_them() {
    let home = home("context = 64\n");
    home.plugin("direct", DIRECT);
    home.enable("direct");
    let cases = [
        (
            json!({"prompt": "hi", "options": {"max_token": 3}}),
            "max_token",
        ),
        (
            json!({"prompt": "hi", "options": {"max_tokens": -4}}),
            "llm option 'max_tokens'",
        ),
        (
            json!({"prompt": "hi", "options": {"temperature": 9}}),
            "llm option 'temperature': 9 is out of range",
        ),
        (
            json!({"prompt": "hi", "options": {"top_p": 0}}),
            "llm option 'top_p'",
        ),
        (
            json!({"prompt": "word ".repeat(200)}),
            "the context holds 64",
        ),
    ];
    for (args, expected) in cases {
        let (code, v) = home.run("direct", &args.to_string());
        assert_eq!(code, 1, "{v}");
        let e = v["error"].as_str().unwrap_or_default();
        assert!(e.contains(expected), "{args}: {e}");
        assert_eq!(v["kind"], "validation", "{v}");
    }
}

#[test]
fn a_missing_model_names_the_path_and_the_pull_command() {
    let home = llm_home("[llm]\nmodel = \"nowhere.gguf\"\n");
    let e = home.run_error("llm", r#"{"prompt": "hi"}"#);
    assert!(e.contains("models/nowhere.gguf"), "{e}");
    assert!(e.contains("greffon model pull smollm2"), "{e}");
    let out = home.greffon(&["doctor", "--json"]);
    let doctor: Value = serde_json::from_slice(&out.stdout).expect("doctor JSON");
    let problem = doctor["llm"]["problem"].as_str().unwrap_or_default();
    assert!(problem.contains("greffon model pull smollm2"), "{doctor}");
    // A corrupt file is named as such.
    std::fs::create_dir_all(home.path().join("models")).expect("models");
    std::fs::write(home.path().join("models/nowhere.gguf"), vec![0u8; 2 << 20]).expect("write");
    let e = home.run_error("llm", r#"{"prompt": "hi"}"#);
    assert!(e.contains("not usable") && e.contains("GGUF magic"), "{e}");
}

#[test]
fn the_default_model_is_pulled_at_its_first_use() {
    // No [llm] model: the default file, missing from this new home.
    let home = llm_home("");
    let model = home.path().join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(!model.exists());
    let a = ask(&home, json!({"prompt": "What is the capital of France?"}));
    assert!(
        a["text"].as_str().is_some_and(|t| t.contains("Paris")),
        "{a}"
    );
    assert_eq!(
        std::fs::metadata(&model).map(|m| m.len()).ok(),
        Some(98_362_432)
    );
    assert!(
        home.path()
            .join("models/SmolLM2-135M-Instruct.Q4_1.gguf.sha256")
            .is_file()
    );
    assert!(home.log("llm").contains("pulling smollm2 (first use)"));
    // `model list` shows it, configured and sound.
    let listed: Value = serde_json::from_str(&home.ok(&["model", "list", "--json"])).expect("json");
    assert_eq!(listed[0]["configured"], true, "{listed}");
    assert_eq!(listed[0]["problem"], Value::Null, "{listed}");
    let out = home.greffon(&["model", "pull", "gpt5"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no model called 'gpt5' (known: smollm2)"),
        "{err}"
    );
    // A second pull finds the verified copy and downloads nothing.
    let again = home.ok(&["model", "pull", "smollm2"]);
    assert!(again.contains("is already there"), "{again}");
    // With auto_pull off, a missing model stays an error.
    let other = llm_home("[llm]\nauto_pull = false\n");
    let e = other.run_error("llm", r#"{"prompt": "hi"}"#);
    assert!(e.contains("greffon model pull smollm2"), "{e}");
}

/// Reads a streaming response until `needle` appears; the connection
/// stays open.
fn stream_until(api: &Api, body: &Value, needle: &str) -> (TcpStream, String) {
    let mut s = TcpStream::connect(&api.address).expect("connect");
    let body = body.to_string();
    write!(
        s,
        "POST /v1/llm/infer HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        api.address,
        api.token,
        body.len()
    )
    .expect("write");
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while !seen.contains(needle) {
        let n = s.read(&mut buf).expect("read");
        assert!(n > 0, "the stream ended before {needle:?}: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    (s, seen)
}

#[test]
fn the_api_answers_streams_and_runs_the_plugin() {
    let home = home("");
    let server = start(&home);
    let api = &server.api;
    let (st, a) = call(
        api,
        "POST",
        "/v1/llm/infer",
        r#"{"prompt": "What is the capital of France?", "options": {"max_tokens": 16}}"#,
    );
    assert_eq!(st, 200, "{a}");
    assert!(
        a["text"].as_str().is_some_and(|t| t.contains("Paris")),
        "{a}"
    );

    // Streaming: token events, then the whole answer.
    let (mut s, mut seen) = stream_until(
        api,
        &json!({"prompt": "What is the capital of France?", "options": {"max_tokens": 16}, "stream": true}),
        "event: token",
    );
    s.read_to_string(&mut seen).expect("rest of the stream");
    assert!(seen.contains("text/event-stream"), "{seen}");
    let mut streamed = String::new();
    let mut done = None;
    for block in seen.split("\n\n") {
        let event = block.lines().find_map(|l| l.strip_prefix("event: "));
        let data = block.lines().find_map(|l| l.strip_prefix("data: "));
        if let (Some(event), Some(data)) = (event, data) {
            let v: Value = serde_json::from_str(data).expect("event data");
            match event {
                "token" => streamed.push_str(v["text"].as_str().expect("text")),
                "done" => done = Some(v),
                other => panic!("unexpected event {other}: {v}"),
            }
        }
    }
    let done = done.expect("a done event");
    assert_eq!(done["text"].as_str(), Some(streamed.as_str()));
    assert_eq!(done["text"], a["text"], "greedy: the same answer");

    // The plugin through the API.
    let (st, v) = call(
        api,
        "POST",
        "/v1/plugins/llm/run",
        r#"{"prompt": "What is the capital of France?"}"#,
    );
    assert_eq!(st, 200);
    assert!(
        v["text"].as_str().is_some_and(|t| t.contains("Paris")),
        "{v}"
    );

    let (st, v) = call(
        api,
        "POST",
        "/v1/llm/infer",
        r#"{"prompt": "x", "options": {"colour": 1}}"#,
    );
    assert_eq!(st, 422);
    assert!(
        v["error"].as_str().is_some_and(|e| e.contains("colour")),
        "{v}"
    );
    let (st, v) = call(api, "POST", "/v1/llm/infer", "prompt: x");
    assert_eq!(st, 422);
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("llm: the body is not a request")),
        "{v}"
    );

    // Concurrent requests wait their turn and all complete.
    let answers: Vec<_> = (0..4)
        .map(|i| {
            let api = api.clone();
            std::thread::spawn(move || {
                call(&api, "POST", "/v1/llm/infer", &json!({"prompt": format!("Say the number {i}."), "options": {"max_tokens": 8}}).to_string())
            })
        })
        .collect();
    for a in answers {
        let (st, v) = a.join().expect("thread");
        assert_eq!(st, 200, "{v}");
        assert!(
            v["completion_tokens"]
                .as_u64()
                .is_some_and(|n| (1..=8).contains(&n)),
            "{v}"
        );
    }
}

#[test]
fn a_full_queue_is_refused_at_once_and_a_caller_that_gives_up_frees_the_model() {
    // queue = 0: a request is taken only while the model is idle.
    let home = home("queue = 0\n");
    home.plugin("direct", DIRECT);
    home.enable("direct");
    let server = start(&home);
    let api = &server.api;
    let long = json!({"prompt": "Write a long story about a dragon.", "options": {"max_tokens": 1500, "temperature": 0.8, "seed": 1, "stop": []}, "stream": true});
    let (running, _) = stream_until(api, &long, "event: token");
    let t = Instant::now();
    let (st, v) = call(api, "POST", "/v1/llm/infer", r#"{"prompt": "hi"}"#);
    assert_eq!(st, 503, "{v}");
    assert!(
        v["error"].as_str().is_some_and(|e| e.contains("busy")),
        "{v}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "refused at once, not after waiting"
    );
    // The client goes away: the generation is abandoned, the model is
    // free. (Left running, 1,500 tokens would hold it for over 10 s.)
    drop(running);
    let freed = common::wait_for(Duration::from_secs(4), || {
        let (st, v) = call(
            api,
            "POST",
            "/v1/llm/infer",
            r#"{"prompt": "hi", "options": {"max_tokens": 4}}"#,
        );
        (st == 200).then_some(v)
    });
    assert!(freed.is_some(), "the abandoned request kept the model busy");

    // A plugin call that times out (1 s) cancels its request too.
    let (code, v) = home.run("direct", &json!({"prompt": "Write a long story about a dragon.", "options": {"max_tokens": 1500, "temperature": 0.8, "seed": 2}}).to_string());
    assert_eq!(code, 1, "{v}");
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("within 1 s")),
        "{v}"
    );
    let freed = common::wait_for(Duration::from_secs(4), || {
        let (st, _) = call(
            api,
            "POST",
            "/v1/llm/infer",
            r#"{"prompt": "hi", "options": {"max_tokens": 4}}"#,
        );
        (st == 200).then_some(())
    });
    assert!(freed.is_some(), "the timed-out request kept the model busy");
    // And llm.log says the plugin's request was cut, not answered (a
    // bound on the elapsed time would only measure the machine's load).
    let log = home.log("llm");
    let direct: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"caller\":\"direct\""))
        .collect();
    assert!(
        direct.len() == 1
            && direct[0].contains("failed")
            && direct[0].contains("did not answer within"),
        "{log}"
    );
}

#[test]
fn the_openai_backend_speaks_the_wire_format() {
    let upstream = Upstream::start(|req| {
        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let prompt = body["messages"]
            .as_array()
            .and_then(|m| m.last())
            .map(|m| m["content"].clone());
        match prompt.as_ref().and_then(Value::as_str) {
            Some("fail") => Response::new(
                500,
                "application/json",
                r#"{"error": {"message": "model crashed", "type": "server_error"}}"#,
            ),
            Some("slow") => Response {
                delay: Duration::from_secs(3),
                ..Response::json(&json!({}))
            },
            _ => Response::json(&json!({
                "id": "chatcmpl-1", "object": "chat.completion", "created": 1764090000, "model": "smollm2:135m",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "The capital of France is Paris."}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 16, "completion_tokens": 7, "total_tokens": 23},
                "echo": body,
                "auth": req.headers.get("authorization"),
                "path": req.target,
            })),
        }
    });
    let home = llm_home(&format!(
        "[llm]\nbackend = \"openai\"\nbase_url = \"{}\"\napi_model = \"smollm2:135m\"\napi_key = \"sk-local-secret\"\ntimeout_s = 0.5\n",
        upstream.url("/v1")
    ));
    let a = ask(
        &home,
        json!({"prompt": "What is the capital of France?", "max_tokens": 12, "temperature": 0.5, "stop": ["\n"], "system": "Be brief."}),
    );
    assert_eq!(a["text"], "The capital of France is Paris.");
    assert_eq!(
        (a["prompt_tokens"].as_u64(), a["completion_tokens"].as_u64()),
        (Some(16), Some(7))
    );
    assert_eq!(a["finish_reason"], "stop");
    assert_eq!(upstream.hits(), 1);
    let e = home.run_error("llm", r#"{"prompt": "fail"}"#);
    assert_eq!(e, "the LLM server answered HTTP 500: model crashed");
    let e = home.run_error("llm", r#"{"prompt": "slow"}"#);
    assert_eq!(e, "the LLM did not answer within 0.5 s");
    assert!(
        !home.log("llm").contains("sk-local-secret"),
        "the key is never logged"
    );
    // No server at all.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    home.config(&format!(
        "[llm]\nbackend = \"openai\"\nbase_url = \"http://127.0.0.1:{port}/v1\"\n"
    ));
    let e = home.run_error("llm", r#"{"prompt": "hi"}"#);
    let expected =
        format!("the LLM server at http://127.0.0.1:{port}/v1/chat/completions cannot be reached");
    assert!(e.starts_with(&expected), "{e}");
}

#[test]
fn the_openai_request_carries_the_options() {
    let upstream = Upstream::start(|req| {
        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let echo =
            json!({"body": body, "auth": req.headers.get("authorization"), "path": req.target});
        Response::json(&json!({
            "model": "m", "choices": [{"message": {"role": "assistant", "content": echo.to_string()}, "finish_reason": "length"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 2}
        }))
    });
    let home = llm_home(&format!(
        "[llm]\nbackend = \"openai\"\nbase_url = \"{}/\"\napi_model = \"qwen\"\napi_key = \"sk-x\"\n",
        upstream.url("/v1")
    ));
    let a = ask(
        &home,
        json!({"prompt": "Hi", "max_tokens": 12, "temperature": 0.5, "top_k": 5, "seed": 3, "stop": ["\n"], "system": "Be brief."}),
    );
    assert_eq!(a["finish_reason"], "length");
    let echo: Value = serde_json::from_str(a["text"].as_str().expect("text")).expect("echo");
    assert_eq!(echo["path"], "/v1/chat/completions");
    assert_eq!(echo["auth"], "Bearer sk-x");
    let b = &echo["body"];
    assert_eq!(b["model"], "qwen");
    assert_eq!(
        b["messages"],
        json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
    );
    assert_eq!(
        (
            b["max_tokens"].as_u64(),
            b["top_k"].as_u64(),
            b["seed"].as_u64()
        ),
        (Some(12), Some(5), Some(3))
    );
    assert_eq!(b["temperature"], 0.5);
    assert_eq!(b["stop"], json!(["\n"]));
    assert_eq!(b["stream"], false);
}
