//! The `llm.*` host service (`greffon.LLM` in plugins), and the `llm` log
//! category: one record per request with the model, tokens, durations and
//! speed; the prompt and answer only with `[llm] log_prompts = true`.

use crate::request::{Answer, InferOptions, InferRequest};
use crate::{Llm, LlmError};
use greffon_protocol::{ErrorKind, WireError};
use greffon_protocol::{Service, ServiceFuture};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// Serves `llm.infer` to plugins. Needs no permission: the model runs in
/// greffon, not in the worker, and reaches no network (llama backend).
#[derive(Clone)]
pub struct LlmService {
    llm: Arc<dyn Llm>,
    log_prompts: bool,
    /// The longest a request may take, whatever the caller asks.
    timeout: Duration,
}

impl std::fmt::Debug for LlmService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmService")
            .field("llm", &self.llm.describe())
            .finish_non_exhaustive()
    }
}

impl LlmService {
    pub fn new(llm: Arc<dyn Llm>, log_prompts: bool, timeout: Duration) -> LlmService {
        LlmService {
            llm,
            log_prompts,
            timeout,
        }
    }

    /// One request, bounded by `timeout` (and the service's own): the
    /// request is cancelled when the time is up. Logged in `llm.log`.
    pub async fn infer(
        &self,
        caller: &str,
        request: InferRequest,
        sink: Option<crate::TextSink>,
        timeout: Option<Duration>,
    ) -> Result<Answer, LlmError> {
        let limit = timeout.map_or(self.timeout, |t| t.min(self.timeout));
        let prompt = self.log_prompts.then(|| request.prompt.clone());
        let outcome = match tokio::time::timeout(limit, self.llm.infer(request, sink)).await {
            Ok(r) => r,
            Err(_) => Err(LlmError::Timeout(limit.as_secs_f64())),
        };
        match &outcome {
            Ok(a) => tracing::info!(
                target: "llm",
                caller,
                model = %a.model,
                prompt_tokens = a.prompt_tokens,
                completion_tokens = a.completion_tokens,
                queue_ms = a.queue_ms,
                prompt_ms = a.prompt_ms,
                generation_ms = a.generation_ms,
                first_token_ms = a.first_token_ms,
                tokens_per_s = a.tokens_per_s(),
                finish = ?a.finish_reason,
                prompt = prompt.as_deref(),
                answer = self.log_prompts.then_some(a.text.as_str()),
                "answered"
            ),
            Err(e) => {
                tracing::warn!(target: "llm", caller, llm = %self.llm.describe(), error = %e, "failed")
            }
        }
        outcome
    }
}

fn wire(e: LlmError) -> WireError {
    let kind = match &e {
        LlmError::InvalidOption { .. } | LlmError::PromptTooLong { .. } => ErrorKind::Validation,
        LlmError::Timeout(_) => ErrorKind::Timeout,
        _ => ErrorKind::HostService,
    };
    WireError::new(kind, e.to_string())
}

impl Service for LlmService {
    /// `llm.infer` with `{"prompt", "options", "timeout"}` (seconds left
    /// in the plugin's call).
    fn handle(&self, plugin: &str, method: &str, params: Value) -> ServiceFuture {
        let this = self.clone();
        let plugin = plugin.to_string();
        let method = method.to_string();
        Box::pin(async move {
            if method != "llm.infer" {
                return Err(WireError::new(
                    ErrorKind::UnknownMethod,
                    format!("unknown host service '{method}'"),
                ));
            }
            let Some(prompt) = params.get("prompt").and_then(Value::as_str) else {
                return Err(WireError::new(
                    ErrorKind::Validation,
                    "llm: 'prompt' must be a string",
                ));
            };
            let options =
                InferOptions::from_json(params.get("options").cloned().unwrap_or(Value::Null))
                    .map_err(wire)?;
            let timeout = params
                .get("timeout")
                .and_then(Value::as_f64)
                .filter(|t| t.is_finite() && *t > 0.0)
                .map(Duration::from_secs_f64);
            let request = InferRequest {
                prompt: prompt.to_string(),
                options,
            };
            let answer = this
                .infer(&plugin, request, None, timeout)
                .await
                .map_err(wire)?;
            serde_json::to_value(answer)
                .map_err(|e| WireError::new(ErrorKind::Internal, e.to_string()))
        })
    }
}
