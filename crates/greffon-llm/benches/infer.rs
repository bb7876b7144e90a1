//! `LLM().infer` from a sandboxed plugin against a direct llama-cpp-2
//! loop, on the same model, thread count and prompt, in the same run
//! (issue #6: target ≥ 0.95×).
//!
//! Each round times, on both paths, a request of 1 token (the prompt plus
//! the first token: the first-token latency, and prompt tok/s) and one of
//! `GREFFON_BENCH_TOKENS` (256) greedy tokens; generation tok/s is the
//! extra tokens over the extra time. The plugin path is measured from the
//! host's caller: plugin call, host service, queue, engine, answer. The
//! direct loop runs in a child process (this bench with `--direct`),
//! before and after the plugin rounds: two llama.cpp engines in one
//! process, each with its own OpenMP pool, slow each other on 2 vCPUs.
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

/// The direct loop's rounds, in this process: (prompt tokens, generated,
/// 1-token times, full times).
fn direct_rounds(
    path: &Path,
    threads: u32,
    rounds: usize,
    max: u32,
) -> (usize, u32, Vec<f64>, Vec<f64>) {
    let direct = Direct {
        model: LlamaModel::load_from_file(
            backend().expect("backend"),
            path,
            &LlamaModelParams::default(),
        )
        .expect("model"),
        threads: threads as i32,
    };
    direct.run(1);
    let (mut first, mut full, mut pt, mut g) = (vec![], vec![], 0, 0);
    for _ in 0..rounds {
        let (p, _, s) = direct.run(1);
        first.push(s);
        let (_, n, s) = direct.run(max);
        full.push(s);
        (pt, g) = (p, n);
    }
    (pt, g, first, full)
}

/// The direct loop in a child process (this bench run with `--direct`),
/// so that each engine has the machine to itself, as in production.
fn direct_in_child(rounds: usize, max: u32) -> (usize, u32, Vec<f64>, Vec<f64>) {
    let out = std::process::Command::new(std::env::current_exe().expect("exe"))
        .arg("--direct")
        .env("GREFFON_BENCH_ROUNDS", rounds.to_string())
        .env("GREFFON_BENCH_TOKENS", max.to_string())
        .output()
        .expect("child runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("child JSON");
    let list = |k: &str| -> Vec<f64> {
        v[k].as_array()
            .expect("list")
            .iter()
            .filter_map(serde_json::Value::as_f64)
            .collect()
    };
    (
        v["prompt_tokens"].as_u64().unwrap_or(0) as usize,
        v["generated"].as_u64().unwrap_or(0) as u32,
        list("first"),
        list("full"),
    )
}

fn main() {
    let pinned = support::pin_from_env();
    let rounds = support::env_usize("GREFFON_BENCH_ROUNDS", 7);
    let max = support::env_usize("GREFFON_BENCH_TOKENS", 256) as u32;
    let path = model_file();
    assert!(path.is_file(), "no model at {}", path.display());
    let threads = default_threads();
    if std::env::args().any(|a| a == "--direct") {
        let (pt, g, first, full) = direct_rounds(&path, threads, rounds, max);
        println!(
            "{}",
            json!({"prompt_tokens": pt, "generated": g, "first": first, "full": full})
        );
        return;
    }
    // Direct, plugin, direct again: the direct figures bracket the
    // plugin's in time.
    let (prompt_tokens, generated, mut d_first, mut d_full) =
        direct_in_child(rounds.div_ceil(2), max);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (p_first, p_full) = rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("plugins/gen")).expect("dir");
        std::fs::write(dir.path().join("plugins/gen/plugin.py"), PLUGIN).expect("plugin");
        let host = Host::open_with(
            dir.path(),
            Config::parse("", Path::new("greffon.toml")).expect("config"),
        )
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
        let (mut first, mut full) = (vec![], vec![]);
        for _ in 0..rounds {
            let (pt, _, s) = call(1).await;
            first.push(s);
            let (_, g, s) = call(max).await;
            full.push(s);
            assert_eq!(pt, prompt_tokens, "both paths read the same prompt");
            assert_eq!(g, generated, "both paths generate the same tokens");
        }
        host.shutdown().await;
        (first, full)
    });
    let (_, _, more_first, more_full) = direct_in_child(rounds / 2 + 1, max);
    d_first.extend(more_first);
    d_full.extend(more_full);
    let med = |v: &Vec<f64>| support::percentile(v.clone(), 50);
    let (df, dg, pf, pg) = (med(&d_first), med(&d_full), med(&p_first), med(&p_full));
    let gen_tps = |first: f64, full: f64| f64::from(generated - 1) / (full - first);
    println!(
        "model {} | {threads} threads | prompt {prompt_tokens} tokens | {generated} generated | {rounds} rounds each, medians{}",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        pinned.map_or(String::new(), |c| format!(" | pinned to CPU {c}"))
    );
    println!(
        "{:<34} {:>12} {:>14} {:>14}",
        "", "direct loop", "LLM().infer", "plugin/direct"
    );
    let row = |label: &str, d: f64, p: f64| {
        println!("{label:<34} {d:>12.1} {p:>14.1} {:>13.3}×", p / d);
    };
    row(
        "prompt tok/s (prompt + 1st token)",
        prompt_tokens as f64 / df,
        prompt_tokens as f64 / pf,
    );
    row("generation tok/s", gen_tps(df, dg), gen_tps(pf, pg));
    println!(
        "{:<34} {:>9.1} ms {:>11.1} ms {:>13.3}×",
        "first-token latency",
        df * 1000.0,
        pf * 1000.0,
        pf / df
    );
}
