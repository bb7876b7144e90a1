//! `LLM().infer` from a sandboxed plugin against a direct llama-cpp-2
//! loop, on the same model, thread count and prompt, in the same run
//! (issue #6: target ≥ 0.95×).
//!
//! Each round times, on both paths, a request of 1 token (the prompt plus
//! the first token: the first-token latency, and prompt tok/s) and one of
//! `GREFFON_BENCH_TOKENS` (256) greedy tokens; generation tok/s is the
//! extra tokens over the extra time. The plugin path is measured from the
//! host's caller: plugin call, host service, queue, engine, answer.
//!
//! Needs the model: GREFFON_TEST_MODEL, else
//! ~/.cache/greffon/models-home/models/SmolLM2-135M-Instruct.Q4_1.gguf.
//! Knobs: GREFFON_BENCH_ROUNDS (7), GREFFON_BENCH_TOKENS (256).

#[path = "../../greffon-host/benches/support/mod.rs"]
mod support;

use greffon_core::Config;
use greffon_host::Host;
use greffon_llm::llama::{EngineSettings, backend, default_threads};
use greffon_llm::{LlmService, llama::LlamaLlm};
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;
use serde_json::json;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PROMPT: &str = "Write a long story about a dragon who guards a library in the mountains, \
and the girl who comes to borrow a book that nobody has read for three hundred years.";

const PLUGIN: &str = "from greffon import LLM\nclass P:\n    meta = {'name': 'gen', 'timeout': 300, 'inputs': {'schema': {'prompt': 'string', 'max_tokens': 'integer'}}}\n    def run(self, prompt, max_tokens):\n        return LLM().complete(prompt, {'max_tokens': max_tokens})\nplugin = P()\n";

fn model_file() -> PathBuf {
    std::env::var_os("GREFFON_TEST_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/greffon/models-home/models/SmolLM2-135M-Instruct.Q4_1.gguf")
        })
}

/// The direct loop: what the engine does, with nothing around it.
struct Direct {
    model: LlamaModel,
    threads: i32,
}

impl Direct {
    /// (prompt tokens, generated tokens, seconds) for `max` greedy tokens.
    fn run(&self, max: u32) -> (usize, u32, f64) {
        let b = backend().expect("backend");
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(2048))
            .with_n_batch(512)
            .with_n_ubatch(512)
            .with_n_threads(self.threads)
            .with_n_threads_batch(self.threads);
        let mut ctx = self.model.new_context(b, params).expect("context");
        let started = Instant::now();
        let template = self.model.chat_template(None).expect("template");
        let messages = [LlamaChatMessage::new("user".into(), PROMPT.into()).expect("message")];
        let prompt = self
            .model
            .apply_chat_template(&template, &messages, true)
            .expect("render");
        let vocab = self.model.vocab();
        let tokens = vocab.tokenize(prompt.as_bytes(), true, true);
        let mut batch = LlamaBatch::new(512, 1);
        for (i, t) in tokens.iter().enumerate() {
            batch
                .add(*t, i as i32, &[0], i == tokens.len() - 1)
                .expect("add");
        }
        ctx.decode(&mut batch).expect("decode");
        let mut sampler = LlamaSampler::chain_simple([LlamaSampler::greedy()]);
        let mut pos = tokens.len() as i32;
        let mut produced = 0;
        loop {
            let token = sampler.sample(&ctx, batch.n_tokens() - 1);
            if vocab.is_eog(token) {
                break;
            }
            let _ = vocab.token_to_piece(token, false, None);
            produced += 1;
            if produced >= max {
                break;
            }
            batch.clear();
            batch.add(token, pos, &[0], true).expect("add");
            pos += 1;
            ctx.decode(&mut batch).expect("decode");
        }
        (tokens.len(), produced, started.elapsed().as_secs_f64())
    }
}

fn main() {
    let pinned = support::pin_from_env();
    let rounds = support::env_usize("GREFFON_BENCH_ROUNDS", 7);
    let max = support::env_usize("GREFFON_BENCH_TOKENS", 256) as u32;
    let path = model_file();
    assert!(path.is_file(), "no model at {}", path.display());
    let threads = default_threads();
    let direct = Direct {
        model: LlamaModel::load_from_file(
            backend().expect("backend"),
            &path,
            &LlamaModelParams::default(),
        )
        .expect("model"),
        threads: threads as i32,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("plugins/gen")).expect("dir");
        std::fs::write(dir.path().join("plugins/gen/plugin.py"), PLUGIN).expect("plugin");
        let host = Host::open_with(dir.path(), Config::parse("", Path::new("greffon.toml")).expect("config"))
            .await
            .expect("host");
        let llm = LlamaLlm::start(
            path.clone(),
            EngineSettings {
                threads,
                context: 2048,
                batch: 512,
                queue: 8,
                auto_pull: None,
            },
        );
        let service = LlmService::new(Arc::new(llm), false, Duration::from_secs(600));
        host.register_service("llm", Arc::new(service));
        host.enable("gen").await.expect("enable");
        let call = |n: u32| {
            let host = host.clone();
            async move {
                let t = Instant::now();
                let a = host
                    .call("gen", json!({"prompt": PROMPT, "max_tokens": n}))
                    .await
                    .expect("call");
                (
                    a["prompt_tokens"].as_u64().unwrap_or(0) as usize,
                    a["completion_tokens"].as_u64().unwrap_or(0) as u32,
                    t.elapsed().as_secs_f64(),
                )
            }
        };
        // Warm-up: the engine loads the model, the worker starts.
        call(1).await;
        direct.run(1);
        let (mut d_first, mut d_full, mut p_first, mut p_full) = (vec![], vec![], vec![], vec![]);
        let (mut prompt_tokens, mut generated) = (0, 0);
        // The two paths alternate back to back. (A pause before each
        // measurement was tried: after an idle gap every path starts slower,
        // the one with more threads to wake most, which measures the VM's
        // idle states rather than greffon.)
        for _ in 0..rounds {
            let (pt, _, s) = direct.run(1);
            d_first.push(s);
            let (ppt, _, s) = call(1).await;
            p_first.push(s);
            let (_, g, s) = direct.run(max);
            d_full.push(s);
            let (_, pg, s) = call(max).await;
            p_full.push(s);
            assert_eq!(pt, ppt, "both paths read the same prompt");
            assert_eq!(g, pg, "both paths generate the same tokens");
            prompt_tokens = pt;
            generated = g;
        }
        let med = |v: &Vec<f64>| support::percentile(v.clone(), 50);
        let (df, dg, pf, pg) = (med(&d_first), med(&d_full), med(&p_first), med(&p_full));
        let gen_tps = |first: f64, full: f64| f64::from(generated - 1) / (full - first);
        println!(
            "model {} | {threads} threads | prompt {prompt_tokens} tokens | {generated} generated | {rounds} rounds, medians{}",
            path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default(),
            pinned.map_or(String::new(), |c| format!(" | pinned to CPU {c}"))
        );
        println!("{:<34} {:>12} {:>14} {:>14}", "", "direct loop", "LLM().infer", "plugin/direct");
        let row = |label: &str, d: f64, p: f64, unit: &str| {
            println!("{label:<34} {d:>9.1} {unit:<2} {p:>11.1} {unit:<2} {:>13.3}×", p / d);
        };
        row(
            "prompt tok/s (prompt + 1st token)",
            prompt_tokens as f64 / df,
            prompt_tokens as f64 / pf,
            "",
        );
        row("generation tok/s", gen_tps(df, dg), gen_tps(pf, pg), "");
        println!(
            "{:<34} {:>9.1} ms {:>11.1} ms {:>13.3}×",
            "first-token latency",
            df * 1000.0,
            pf * 1000.0,
            pf / df
        );
        host.shutdown().await;
    });
}
