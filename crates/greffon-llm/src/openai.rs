//! Any OpenAI-compatible server (Ollama, llama-server, vLLM) over
//! `POST {base_url}/chat/completions`, non-streaming. Stop strings are
//! sent to the server; a streaming caller gets the whole text at once.

use crate::request::{Answer, FinishReason, InferRequest};
use crate::{Llm, LlmError, LlmFuture, TextSink};
use greffon_core::LlmConfig;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// The client of one server.
#[derive(Debug, Clone)]
pub struct OpenAiLlm {
    client: reqwest::Client,
    url: String,
    model: String,
    /// Sent as a bearer token; never logged.
    key: Option<String>,
    timeout: Duration,
}

impl OpenAiLlm {
    pub fn new(config: &LlmConfig) -> Result<OpenAiLlm, LlmError> {
        // reqwest's rustls needs a process-wide crypto provider; the
        // first crate to install it wins, the others keep it.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs_f64(config.timeout_s))
            .build()
            .map_err(|e| LlmError::Engine(format!("cannot build the HTTP client: {e}")))?;
        Ok(OpenAiLlm {
            client,
            url: format!("{}/chat/completions", config.base_url.trim_end_matches('/')),
            model: config.api_model.clone(),
            key: config.api_key.clone(),
            timeout: Duration::from_secs_f64(config.timeout_s),
        })
    }

    fn body(&self, request: &InferRequest) -> Value {
        let o = &request.options;
        let mut messages = Vec::new();
        if let Some(system) = &o.system {
            messages.push(json!({"role": "system", "content": system}));
        }
        messages.push(json!({"role": "user", "content": request.prompt}));
        let mut body = json!({
            "model": self.model,
            "messages": messages,
            "max_tokens": o.max_tokens(),
            "temperature": o.temperature(),
            "stream": false,
        });
        let extra = [
            ("top_p", o.top_p.map(|v| json!(v))),
            // Not in OpenAI's API; Ollama, llama-server and vLLM read it.
            ("top_k", o.top_k.map(|v| json!(v))),
            ("seed", o.seed.map(|v| json!(v))),
            ("repeat_penalty", o.repeat_penalty.map(|v| json!(v))),
            ("stop", o.stop.as_ref().map(|v| json!(v))),
        ];
        for (k, v) in extra {
            if let Some(v) = v {
                body[k] = v;
            }
        }
        body
    }
}

/// The server's own error message, from `{"error": {"message"}}` or
/// `{"error": "..."}`.
fn server_message(v: &Value) -> Option<String> {
    let e = v.get("error")?;
    e.get("message")
        .and_then(Value::as_str)
        .or_else(|| e.as_str())
        .map(str::to_string)
}

impl Llm for OpenAiLlm {
    fn infer(&self, request: InferRequest, sink: Option<TextSink>) -> LlmFuture {
        let this = self.clone();
        Box::pin(async move {
            request.options.check()?;
            let started = Instant::now();
            let mut req = this
                .client
                .post(&this.url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(this.body(&request).to_string());
            if let Some(key) = &this.key {
                req = req.bearer_auth(key);
            }
            let resp = req.send().await.map_err(|e| {
                if e.is_timeout() {
                    LlmError::Timeout(this.timeout.as_secs_f64())
                } else {
                    LlmError::Upstream(format!(
                        "the LLM server at {} cannot be reached: {e}",
                        this.url
                    ))
                }
            })?;
            let status = resp.status();
            let bytes = resp.bytes().await.map_err(|e| {
                if e.is_timeout() {
                    LlmError::Timeout(this.timeout.as_secs_f64())
                } else {
                    LlmError::Upstream(format!("the LLM server's answer was cut: {e}"))
                }
            })?;
            let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            if !status.is_success() {
                let detail = server_message(&v).unwrap_or_else(|| {
                    String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned()
                });
                return Err(LlmError::Upstream(format!(
                    "the LLM server answered HTTP {}: {detail}",
                    status.as_u16()
                )));
            }
            let choice = &v["choices"][0];
            let Some(text) = choice["message"]["content"].as_str() else {
                return Err(LlmError::Upstream(
                    "the LLM server's answer has no choices[0].message.content".into(),
                ));
            };
            let elapsed = started.elapsed().as_secs_f64() * 1000.0;
            if let Some(s) = &sink {
                let _ = s.send(text.to_string());
            }
            let count = |k: &str| {
                v["usage"][k]
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .unwrap_or(0)
            };
            Ok(Answer {
                text: text.to_string(),
                finish_reason: match choice["finish_reason"].as_str() {
                    Some("length") => FinishReason::Length,
                    _ => FinishReason::Stop,
                },
                model: v["model"].as_str().unwrap_or(&this.model).to_string(),
                prompt_tokens: count("prompt_tokens"),
                completion_tokens: count("completion_tokens"),
                queue_ms: 0.0,
                // The server does not say how its time was spent.
                prompt_ms: 0.0,
                generation_ms: elapsed,
                first_token_ms: elapsed,
            })
        })
    }

    fn describe(&self) -> String {
        format!("openai: {} ({})", self.url, self.model)
    }
}
