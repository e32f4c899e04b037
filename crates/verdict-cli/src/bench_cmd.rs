//! `verdict model bench`: the engine's throughput at fixed lengths, for bench/gpu/.
//!
//! Items are built from the synthetic corpus so that every rendered judge prompt is close
//! to `--prompt-tokens`; each sample generates exactly `--new-tokens` (stop tokens and the
//! score block are ignored, as `min_new_tokens` does in transformers), so the figures compare
//! with a fixed-length `generate` over the same prompts. One JSON line per batch size on
//! stdout; with `--prompts-out`, every sample's prompt token ids (in batch order) for the
//! transformers side of the benchmark.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use serde_json::json;
use verdict_core::{Item, LabelSpec, Prompt};
use verdict_engine::{device, EngineOptions, Judge, PreparedItem};

#[derive(Args)]
pub struct BenchArgs {
    /// Judge model folder.
    dir: PathBuf,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Samples per item.
    #[arg(long, default_value_t = 8)]
    k: u32,
    /// Rendered prompt length to aim for, in tokens.
    #[arg(long, default_value_t = 512)]
    prompt_tokens: usize,
    /// Tokens generated per sample, exactly.
    #[arg(long, default_value_t = 256)]
    new_tokens: u32,
    /// Batch sizes (sequences decoded together), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32,128")]
    batches: Vec<usize>,
    /// Sampling temperature.
    #[arg(long, default_value_t = 0.5)]
    temperature: f32,
    /// Write every sample's prompt ids, in batch order, as JSON (for bench/gpu/hf_bench.py).
    #[arg(long)]
    prompts_out: Option<PathBuf>,
}

/// An item whose responses are `words` words of the corpus starting at word `at`.
fn item(n: usize, words: &[&str], at: usize, len: usize) -> Item {
    let take = |from: usize, count: usize| -> String {
        (0..count).map(|i| words[(from + i) % words.len()]).collect::<Vec<_>>().join(" ")
    };
    Item {
        id: format!("bench-{n}"),
        prompt: Prompt::Text(format!("Question {n}: {}?", take(at, 24))),
        responses: vec![take(at + 997, len), take(at + 4_999, len)],
        reference_winner: None,
        metadata: Default::default(),
    }
}

/// `count` items whose prompts render to about `target` tokens.
fn items(judge: &Judge, spec: &LabelSpec, count: usize, target: usize) -> anyhow::Result<Vec<PreparedItem>> {
    let words: Vec<&str> = verdict_engine::synth::corpus().split_whitespace().collect();
    anyhow::ensure!(!words.is_empty(), "the synthetic corpus is empty");
    let prompt_len = |len: usize| -> anyhow::Result<usize> {
        let p = judge.prepare(item(0, &words, 0, len), spec)?;
        Ok(p.prompts.iter().map(|(_, ids)| ids.len()).max().unwrap_or(0))
    };
    // Response length by bisection on the rendered prompt's token count.
    let (mut lo, mut hi) = (1usize, 4 * target.max(1));
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if prompt_len(mid)? <= target {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    (0..count)
        .map(|n| judge.prepare(item(n, &words, n * 131, lo), spec).map_err(anyhow::Error::from))
        .collect()
}

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let (dev, dtype) = device::pick(&args.device)?;
    let mut judge = Judge::load(&args.dir, None, EngineOptions { max_batch: usize::MAX, device: dev, dtype, digest_cache: crate::model_cmd::digest_cache() })
        .with_context(|| format!("loading {}", args.dir.display()))?;
    let weight_bytes: u64 = std::fs::read_dir(&args.dir)?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "safetensors"))
        .filter_map(|e| e.metadata().ok().map(|m| m.len()))
        .sum();
    let cfg = judge.config().clone();
    let kv_bytes_per_token = verdict_engine::model::KvCache::bytes_per_sequence(&cfg, 1, dtype);
    let identity = judge.name().to_string();
    let spec_for = |k: u32, new: u32| LabelSpec {
        k,
        temperature: args.temperature,
        top_p: 1.0,
        max_new_tokens: new,
        ..LabelSpec::new(identity.clone())
    };
    let largest = args.batches.iter().copied().max().unwrap_or(1);
    let k = args.k.max(1);
    let all = items(&judge, &spec_for(k, args.new_tokens), largest.div_ceil(k as usize), args.prompt_tokens)?;

    if let Some(path) = &args.prompts_out {
        let prompts: Vec<&Vec<u32>> = all.iter().flat_map(|p| p.samples.iter().map(|(_, i)| &p.prompts[*i].1)).collect();
        std::fs::write(path, serde_json::to_string(&prompts)?).with_context(|| format!("writing {}", path.display()))?;
    }
    // Warm-up: kernels load and cuBLAS picks its algorithms outside the timings.
    judge.set_max_batch(k as usize);
    judge.judge_with(&all[..1], &spec_for(k, 8), true)?;
    let _ = verdict_engine::profile::report();

    for &batch in &args.batches {
        let per_item = (k as usize).min(batch);
        let n_items = batch.div_ceil(per_item);
        let spec = spec_for(per_item as u32, args.new_tokens);
        let chosen: Vec<PreparedItem> = all[..n_items]
            .iter()
            .map(|p| PreparedItem { samples: p.samples[..per_item].to_vec(), ..p.clone() })
            .collect();
        judge.set_max_batch(batch);
        let started = Instant::now();
        let (_, stats) = judge.judge_with(&chosen, &spec, true)?;
        let seconds = started.elapsed().as_secs_f64();
        let prompt_tokens: usize = chosen.iter().flat_map(|p| p.samples.iter().map(|(_, i)| p.prompts[*i].1.len())).sum();
        let mean_prompt = prompt_tokens as f64 / stats.sequences.max(1) as f64;
        let steps = stats.decode_steps.max(1) as f64;
        // Bytes a decode step must move: every weight once, plus the KV cache read at the
        // step's context (mean over the steps) for every row.
        let mean_context = mean_prompt + args.new_tokens as f64 / 2.0;
        let step_bytes = weight_bytes as f64 + (stats.decode_rows as f64 / steps) * mean_context * kv_bytes_per_token as f64;
        let line = json!({
            "engine": "verdict",
            "model": args.dir.file_name().map(|n| n.to_string_lossy().into_owned()),
            "batch": batch,
            "items": n_items,
            "k": per_item,
            "sequences": stats.sequences,
            "mean_prompt_tokens": mean_prompt,
            "new_tokens": args.new_tokens,
            "generated_tokens": stats.generated_tokens,
            "seconds": seconds,
            "tokens_per_s": stats.generated_tokens as f64 / seconds,
            "items_per_s": n_items as f64 / seconds,
            "prefill_s": stats.prefill_seconds,
            "decode_s": stats.decode_seconds,
            "ms_per_step": 1e3 * stats.decode_seconds / steps,
            "prefill_tokens_per_item": stats.prefill_tokens as f64 / n_items as f64,
            "distinct_prompts_per_item": stats.prompts as f64 / n_items as f64,
            "decode_bytes_per_s": step_bytes * steps / stats.decode_seconds.max(1e-9),
        });
        crate::say::out(line)?;
        if verdict_engine::profile::enabled() {
            eprintln!("profile, batch {batch} (VERDICT_PROFILE: every region waits for the device)\n{}", verdict_engine::profile::report());
        }
    }
    Ok(())
}
