//! llama.cpp on a GGUF file (llama-cpp-2).
//!
//! One engine thread owns the model (mmap, loaded at the first request and
//! kept) and one context, and answers requests one after the other from a
//! bounded queue: a full queue is refused at once. A request whose caller
//! went away (its future dropped: a timeout, a closed connection) is
//! abandoned at the next token.

use crate::request::{Answer, FinishReason, InferOptions, InferRequest};
use crate::text::{StopScanner, Utf8Buffer};
use crate::{Llm, LlmError, LlmFuture, TextSink};
use greffon_core::LlmConfig;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

/// How the engine runs, from `[llm]`.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub threads: u32,
    pub context: u32,
    pub batch: u32,
    pub queue: usize,
    /// Fetch a known model (`greffon model pull`) when its file is
    /// missing at the first request.
    pub auto_pull: Option<crate::models::AutoPull>,
}

impl EngineSettings {
    pub fn from_config(
        c: &LlmConfig,
        auto_pull: Option<crate::models::AutoPull>,
    ) -> EngineSettings {
        EngineSettings {
            threads: c.threads.unwrap_or_else(default_threads),
            context: c.context,
            batch: c.batch,
            queue: c.queue,
            auto_pull,
        }
    }
}

/// The available cores.
pub fn default_threads() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| u32::try_from(n.get()).unwrap_or(1))
}

/// llama.cpp's process-wide state: initialized once, logs silenced.
pub fn backend() -> Result<&'static LlamaBackend, LlmError> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            LlamaBackend::init()
                .map(|mut b| {
                    b.void_logs();
                    b
                })
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| LlmError::Engine(e.clone()))
}

struct Job {
    request: InferRequest,
    sink: Option<TextSink>,
    /// Set when the caller is gone.
    cancel: Arc<AtomicBool>,
    queued: Instant,
    reply: tokio::sync::oneshot::Sender<Result<Answer, LlmError>>,
}

/// Sets the job's cancel flag when the caller's future is dropped.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// The llama.cpp backend: a handle to the engine thread.
pub struct LlamaLlm {
    jobs: SyncSender<Job>,
    path: PathBuf,
    queue: usize,
}

impl std::fmt::Debug for LlamaLlm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlamaLlm")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl LlamaLlm {
    /// Starts the engine thread; the model is loaded at the first request.
    pub fn start(path: PathBuf, settings: EngineSettings) -> LlamaLlm {
        // A queue of 0 takes a request only when the engine is idle.
        let (tx, rx) = std::sync::mpsc::sync_channel(settings.queue);
        let engine = Engine {
            path: path.clone(),
            settings: settings.clone(),
        };
        std::thread::Builder::new()
            .name("greffon-llm".into())
            .spawn(move || engine.run(rx))
            .map_err(|e| tracing::error!(target: "llm", "cannot start the LLM thread: {e}"))
            .ok();
        LlamaLlm {
            jobs: tx,
            path,
            queue: settings.queue,
        }
    }
}

impl Llm for LlamaLlm {
    fn infer(&self, request: InferRequest, sink: Option<TextSink>) -> LlmFuture {
        if let Err(e) = request.options.check() {
            return Box::pin(async move { Err(e) });
        }
        let cancel = Arc::new(AtomicBool::new(false));
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = Job {
            request,
            sink,
            cancel: cancel.clone(),
            queued: Instant::now(),
            reply,
        };
        // Refused now, not when the future is first polled.
        let sent = self.jobs.try_send(job);
        let queue = self.queue;
        Box::pin(async move {
            match sent {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => return Err(LlmError::Busy { waiting: queue }),
                Err(TrySendError::Disconnected(_)) => {
                    return Err(LlmError::Engine("the LLM thread has stopped".into()));
                }
            }
            let _guard = CancelOnDrop(cancel);
            answer
                .await
                .unwrap_or_else(|_| Err(LlmError::Engine("the LLM thread has stopped".into())))
        })
    }

    fn describe(&self) -> String {
        format!("llama: {}", self.path.display())
    }
}

struct Engine {
    path: PathBuf,
    settings: EngineSettings,
}

impl Engine {
    fn run(self, jobs: Receiver<Job>) {
        // Until a model loads, each request tries (the file may be pulled
        // meanwhile); once loaded, it serves every request that follows.
        while let Ok(job) = jobs.recv() {
            let loaded = backend().and_then(|b| {
                let model = load(b, &self.path, self.settings.auto_pull.as_ref())?;
                Ok((b, model))
            });
            let (backend, model) = match loaded {
                Ok(m) => m,
                Err(e) => {
                    let _ = job.reply.send(Err(e));
                    continue;
                }
            };
            let mut session = match Session::new(backend, &model, &self.settings) {
                Ok(s) => s,
                Err(e) => {
                    let _ = job.reply.send(Err(e));
                    continue;
                }
            };
            tracing::info!(target: "llm", model = %self.path.display(), threads = self.settings.threads, context = self.settings.context, "model loaded");
            session.serve(job);
            while let Ok(job) = jobs.recv() {
                session.serve(job);
            }
            return;
        }
    }
}

/// Checks the file, then maps it.
fn load(
    backend: &LlamaBackend,
    path: &Path,
    auto_pull: Option<&crate::models::AutoPull>,
) -> Result<LlamaModel, LlmError> {
    match (crate::models::check(path), auto_pull) {
        (Err(LlmError::ModelMissing { .. }), Some(pull)) => pull.fetch(path)?,
        (checked, _) => {
            checked?;
        }
    }
    LlamaModel::load_from_file(backend, path, &LlamaModelParams::default()).map_err(|e| {
        LlmError::ModelCorrupt {
            path: path.to_path_buf(),
            why: format!("llama.cpp cannot load it: {e}"),
        }
    })
}

/// A loaded model and its context, reused request after request.
struct Session<'m> {
    model: &'m LlamaModel,
    ctx: LlamaContext<'m>,
    template: LlamaChatTemplate,
    name: String,
    batch: usize,
    context: u32,
}

impl<'m> Session<'m> {
    fn new(
        backend: &LlamaBackend,
        model: &'m LlamaModel,
        s: &EngineSettings,
    ) -> Result<Session<'m>, LlmError> {
        let threads = i32::try_from(s.threads).unwrap_or(1);
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(s.context))
            .with_n_batch(s.batch)
            .with_n_ubatch(s.batch)
            .with_n_threads(threads)
            .with_n_threads_batch(threads);
        let ctx = model
            .new_context(backend, params)
            .map_err(|e| LlmError::Engine(format!("cannot create a context: {e}")))?;
        // The GGUF's own template; ChatML when it has none.
        let template = model
            .chat_template(None)
            .or_else(|_| LlamaChatTemplate::new("chatml"))
            .map_err(|e| LlmError::Engine(format!("no chat template: {e}")))?;
        let name = model
            .meta_val_str("general.name")
            .unwrap_or_else(|_| "unknown".into());
        Ok(Session {
            model,
            ctx,
            template,
            name,
            batch: s.batch as usize,
            context: s.context,
        })
    }

    fn serve(&mut self, job: Job) {
        let queue_ms = job.queued.elapsed().as_secs_f64() * 1000.0;
        let outcome = if job.cancel.load(Ordering::SeqCst) {
            Err(LlmError::Cancelled)
        } else {
            self.generate(&job.request, job.sink.as_ref(), &job.cancel)
                .map(|mut a| {
                    a.queue_ms = queue_ms;
                    a
                })
        };
        let _ = job.reply.send(outcome);
    }

    /// The prompt, rendered with the chat template.
    fn render(&self, request: &InferRequest) -> Result<String, LlmError> {
        let message = |role: &str, content: &str| {
            LlamaChatMessage::new(role.into(), content.into()).map_err(|e| {
                LlmError::InvalidOption {
                    option: if role == "system" {
                        "system".into()
                    } else {
                        String::new()
                    },
                    message: format!("the {role} text cannot be used: {e}"),
                }
            })
        };
        let mut messages = Vec::new();
        if let Some(system) = &request.options.system {
            messages.push(message("system", system)?);
        }
        messages.push(message("user", &request.prompt)?);
        self.model
            .apply_chat_template(&self.template, &messages, true)
            .map_err(|e| LlmError::Engine(format!("cannot render the chat template: {e}")))
    }

    fn sampler(&self, o: &InferOptions) -> LlamaSampler {
        let mut chain = Vec::new();
        if let Some(r) = o.repeat_penalty.filter(|r| (*r - 1.0).abs() > f32::EPSILON) {
            chain.push(LlamaSampler::penalties(
                self.model.n_vocab(),
                64,
                r,
                0.0,
                0.0,
            ));
        }
        let t = o.temperature();
        if t <= 0.0 {
            chain.push(LlamaSampler::greedy());
        } else {
            let k = o.top_k.unwrap_or(40);
            if k > 0 {
                chain.push(LlamaSampler::top_k(i32::try_from(k).unwrap_or(i32::MAX)));
            }
            chain.push(LlamaSampler::top_p(o.top_p.unwrap_or(0.95), 1));
            chain.push(LlamaSampler::temp(t));
            let seed = o.seed.unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.subsec_nanos())
            });
            chain.push(LlamaSampler::dist(seed));
        }
        LlamaSampler::chain_simple(chain)
    }

    /// Decodes the prompt from an empty cache, in chunks of `batch`
    /// tokens, with logits for the last token only.
    fn read_prompt(
        &mut self,
        tokens: &[LlamaToken],
        batch: &mut LlamaBatch<'_>,
        cancel: &AtomicBool,
    ) -> Result<(), LlmError> {
        let engine = |e: &dyn std::fmt::Display| LlmError::Engine(e.to_string());
        self.ctx.clear_kv_cache();
        let last = tokens.len() - 1;
        for (c, chunk) in tokens.chunks(self.batch.max(1)).enumerate() {
            if cancel.load(Ordering::SeqCst) {
                return Err(LlmError::Cancelled);
            }
            batch.clear();
            for (i, t) in chunk.iter().enumerate() {
                let pos = c * self.batch + i;
                batch
                    .add(*t, pos as i32, &[0], pos == last)
                    .map_err(|e| engine(&e))?;
            }
            self.ctx.decode(batch).map_err(|e| engine(&e))?;
        }
        Ok(())
    }

    fn generate(
        &mut self,
        request: &InferRequest,
        sink: Option<&TextSink>,
        cancel: &AtomicBool,
    ) -> Result<Answer, LlmError> {
        let started = Instant::now();
        let prompt = self.render(request)?;
        let vocab = self.model.vocab();
        let tokens = vocab.tokenize(prompt.as_bytes(), true, true);
        if tokens.len() + 1 > self.context as usize {
            return Err(LlmError::PromptTooLong {
                tokens: tokens.len(),
                context: self.context,
            });
        }
        let engine = |e: &dyn std::fmt::Display| LlmError::Engine(e.to_string());
        let mut batch = LlamaBatch::new(self.batch.max(1), 1);
        self.read_prompt(&tokens, &mut batch, cancel)?;
        let prompt_ms = started.elapsed().as_secs_f64() * 1000.0;
        let generating = Instant::now();
        let mut sampler = self.sampler(&request.options);
        let max = request.options.max_tokens();
        let mut utf8 = Utf8Buffer::default();
        let mut scan = StopScanner::new(request.options.stops());
        let send = |text: String| {
            if let (Some(s), false) = (sink, text.is_empty()) {
                let _ = s.send(text);
            }
        };
        let mut pos = tokens.len() as i32;
        let mut produced = 0u32;
        let mut first_token_ms = 0.0;
        let finish = loop {
            if cancel.load(Ordering::SeqCst) {
                return Err(LlmError::Cancelled);
            }
            let token = sampler.sample(&self.ctx, batch.n_tokens() - 1);
            if vocab.is_eog(token) {
                break FinishReason::Stop;
            }
            produced += 1;
            if produced == 1 {
                first_token_ms = started.elapsed().as_secs_f64() * 1000.0;
            }
            let piece = vocab.token_to_piece(token, false, None);
            send(scan.push(&utf8.push(&piece)));
            if scan.stopped() {
                break FinishReason::StopString;
            }
            if produced >= max || pos as u32 + 1 >= self.context {
                break FinishReason::Length;
            }
            batch.clear();
            batch.add(token, pos, &[0], true).map_err(|e| engine(&e))?;
            pos += 1;
            self.ctx.decode(&mut batch).map_err(|e| engine(&e))?;
        };
        if finish != FinishReason::StopString {
            let rest = utf8.finish();
            send(scan.push(&rest));
            send(scan.flush());
        }
        Ok(Answer {
            text: scan.text().to_string(),
            finish_reason: if scan.stopped() {
                FinishReason::StopString
            } else {
                finish
            },
            model: self.name.clone(),
            prompt_tokens: u32::try_from(tokens.len()).unwrap_or(u32::MAX),
            completion_tokens: produced,
            queue_ms: 0.0,
            prompt_ms,
            generation_ms: generating.elapsed().as_secs_f64() * 1000.0,
            first_token_ms,
        })
    }
}
