//! `verdict model bench`: the engine's throughput, for bench/gpu/. Three workloads:
//!
//! - `fixed`: prompts of about `--prompt-tokens`, every sample exactly `--new-tokens` long
//!   (stop tokens and the score block ignored, as `min_new_tokens` does in transformers);
//! - `varied`: what labeling looks like. Each item's prompt length is drawn uniformly from
//!   `--prompt-min..--prompt-max` tokens and each sample's judgement length from a seeded
//!   log-normal (median `--new-median`, 5th–95th percentile about 0.39–2.6 times it, capped
//!   at `--new-tokens`). Every batch size runs it twice: with the drawn lengths, and with
//!   every sample at their mean (the fixed-length figure at the same mean length);
//! - `--items FILE`: a dataset's items with the lengths the judge writes, as `label` would
//!   judge them (the figure `label` is compared with).
//!
//! One JSON line per run on stdout. `--prompts-out` writes every sample's prompt ids (and,
//! for `varied`, its length) in order, for bench/gpu/hf_bench.py.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use serde_json::json;
use verdict_core::shuffle::SplitMix64;
use verdict_core::{Item, LabelSpec, Prompt};
use verdict_engine::engine::GenStats;
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
    /// fixed (every sample --new-tokens long) or varied (drawn prompt and judgement lengths).
    #[arg(long, default_value = "fixed", value_parser = ["fixed", "varied"])]
    workload: String,
    /// fixed: rendered prompt length to aim for, in tokens.
    #[arg(long, default_value_t = 512)]
    prompt_tokens: usize,
    /// fixed: tokens generated per sample, exactly; varied and --items: the most per sample.
    #[arg(long, default_value_t = 256)]
    new_tokens: u32,
    /// varied: items in the workload.
    #[arg(long, default_value_t = 256)]
    items_count: usize,
    /// varied: shortest and longest prompt, in tokens.
    #[arg(long, default_value_t = 600)]
    prompt_min: usize,
    #[arg(long, default_value_t = 3000)]
    prompt_max: usize,
    /// varied: median judgement length, in tokens.
    #[arg(long, default_value_t = 350.0)]
    new_median: f64,
    /// varied: seed of the drawn lengths.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Judge this dataset instead (JSONL or Parquet), with the lengths the judge writes.
    #[arg(long)]
    items: Option<PathBuf>,
    /// Batch sizes (most sequences decoded together), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32,128")]
    batches: Vec<usize>,
    /// Sampling temperature.
    #[arg(long, default_value_t = 0.5)]
    temperature: f32,
    /// Run every decode step eagerly, without CUDA graphs (to measure what they change).
    #[arg(long)]
    no_cuda_graphs: bool,
    /// Write every sample's prompt ids (and varied lengths), in order, as JSON (for bench/gpu/hf_bench.py).
    #[arg(long)]
    prompts_out: Option<PathBuf>,
}

/// An item whose responses are `words` words of the corpus starting at word `at`.
fn item(n: usize, words: &[&str], at: usize, len: usize) -> Item {
    let take = |from: usize, count: usize| -> String { (0..count).map(|i| words[(from + i) % words.len()]).collect::<Vec<_>>().join(" ") };
    Item {
        id: format!("bench-{n}"),
        prompt: Prompt::Text(format!("Question {n}: {}?", take(at, 24))),
        responses: vec![take(at + 997, len), take(at + 4_999, len)],
        reference_winner: None,
        metadata: Default::default(),
    }
}

/// Item `n` with a rendered prompt of about `target` tokens (response length by bisection).
fn sized_item(judge: &Judge, spec: &LabelSpec, words: &[&str], n: usize, target: usize) -> anyhow::Result<PreparedItem> {
    let prompt_len = |len: usize| -> anyhow::Result<usize> {
        match judge.prepare(item(n, words, n * 131, len), spec) {
            Ok(p) => Ok(p.prompts.iter().map(|(_, ids)| ids.len()).max().unwrap_or(0)),
            // Past the judge's context: too long, as far as the bisection cares.
            Err(verdict_engine::EngineError::Item { .. }) => Ok(usize::MAX),
            Err(e) => Err(e.into()),
        }
    };
    let (mut lo, mut hi) = (1usize, 4 * target.max(1));
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if prompt_len(mid)? <= target {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    Ok(judge.prepare(item(n, words, n * 131, lo), spec)?)
}

fn corpus_words() -> anyhow::Result<Vec<&'static str>> {
    let words: Vec<&str> = verdict_engine::synth::corpus().split_whitespace().collect();
    anyhow::ensure!(!words.is_empty(), "the synthetic corpus is empty");
    Ok(words)
}

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut SplitMix64) -> f64 {
    let u1 = rng.next_f64().max(1e-12);
    let u2 = rng.next_f64();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// The varied workload: items of drawn prompt lengths, and each sample's drawn length.
fn varied(judge: &Judge, spec: &LabelSpec, args: &BenchArgs) -> anyhow::Result<(Vec<PreparedItem>, Vec<Vec<usize>>)> {
    let words = corpus_words()?;
    let mut rng = SplitMix64::new(args.seed);
    // ln(p95 / median) = 1.645 σ: σ = 0.574 puts the 5th–95th percentile at 0.39–2.6 × median.
    let sigma = 0.574;
    let cap = args.new_tokens as usize;
    let mut items = Vec::with_capacity(args.items_count);
    let mut lengths = Vec::with_capacity(args.items_count);
    for n in 0..args.items_count {
        let target = args.prompt_min + (rng.next_f64() * (args.prompt_max.saturating_sub(args.prompt_min)) as f64) as usize;
        items.push(sized_item(judge, spec, &words, n, target)?);
        lengths.push((0..spec.k).map(|_| ((args.new_median * (sigma * normal(&mut rng)).exp()).round() as usize).clamp(16, cap)).collect());
    }
    Ok((items, lengths))
}

/// Bytes a decode step must move: every weight once, plus each row's keys and values.
#[derive(Clone, Copy)]
struct Costs {
    weight_bytes: f64,
    kv_bytes_per_token: f64,
}

fn line(args: &BenchArgs, costs: Costs, workload: &str, batch: usize, items: &[PreparedItem], stats: &GenStats, seconds: f64) -> serde_json::Value {
    let prompt_tokens: usize = items.iter().flat_map(|p| p.samples.iter().map(|(_, i)| p.prompts[*i].1.len())).sum();
    let steps = stats.decode_steps.max(1) as f64;
    let mean_prompt = prompt_tokens as f64 / stats.sequences.max(1) as f64;
    let mean_new = stats.generated_tokens as f64 / stats.sequences.max(1) as f64;
    // What a step must read: the weights once, each distinct prompt once for the rows that
    // continue it (samples per prompt = sequences / prompts), each row's own tokens (half
    // the judgement, over its life).
    let rows_per_step = stats.decode_rows as f64 / steps;
    let per_prompt = stats.sequences as f64 / stats.prompts.max(1) as f64;
    let step_bytes = costs.weight_bytes + rows_per_step * (mean_prompt / per_prompt.max(1.0) + mean_new / 2.0) * costs.kv_bytes_per_token;
    json!({
        "engine": "verdict",
        "model": args.dir.file_name().map(|n| n.to_string_lossy().into_owned()),
        "workload": workload,
        "batch": batch,
        "rows": stats.rows,
        "items": items.len(),
        "k": items.first().map(|p| p.samples.len()).unwrap_or(0),
        "sequences": stats.sequences,
        "mean_prompt_tokens": mean_prompt,
        "mean_new_tokens": mean_new,
        "generated_tokens": stats.generated_tokens,
        "seconds": seconds,
        "tokens_per_s": stats.generated_tokens as f64 / seconds,
        "items_per_s": items.len() as f64 / seconds,
        "prefill_s": stats.prefill_seconds,
        "decode_s": stats.decode_seconds,
        "ms_per_step": 1e3 * stats.decode_seconds / steps,
        "busy": stats.live_rows as f64 / stats.decode_rows.max(1) as f64,
        "cache_moves": stats.cache_moves,
        "kv_slots_allocated": stats.kv_slots,
        "kv_slots_peak_used": stats.kv_slots_peak,
        "kv_bytes_allocated": stats.kv_slots as f64 * costs.kv_bytes_per_token,
        "prefill_tokens_per_item": stats.prefill_tokens as f64 / items.len().max(1) as f64,
        "distinct_prompts_per_item": stats.prompts as f64 / items.len().max(1) as f64,
        "decode_bytes_per_s": step_bytes * steps / stats.decode_seconds.max(1e-9),
        "graph_captures": stats.graph_captures,
        "graph_replays": stats.graph_replays,
    })
}

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let (dev, dtype) = device::pick(&args.device)?;
    let mut judge = Judge::load(&args.dir, None, EngineOptions { max_batch: usize::MAX, device: dev, dtype, digest_cache: crate::model_cmd::digest_cache(), cuda_graphs: !args.no_cuda_graphs })
        .with_context(|| format!("loading {}", args.dir.display()))?;
    let spec = LabelSpec { k: args.k.max(1), temperature: args.temperature, top_p: 1.0, max_new_tokens: args.new_tokens, ..LabelSpec::new(judge.name()) };
    let weight_bytes: u64 = std::fs::read_dir(&args.dir)?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "safetensors"))
        .filter_map(|e| e.metadata().ok().map(|m| m.len()))
        .sum();
    let kv = verdict_engine::model::KvCache::bytes_per_sequence(judge.config(), 1, dtype);
    let costs = Costs { weight_bytes: weight_bytes as f64, kv_bytes_per_token: kv as f64 };
    if let Some(path) = &args.items {
        return run_dataset(&mut judge, &spec, costs, path, args);
    }
    if args.workload == "varied" {
        return run_varied(&mut judge, &spec, costs, args);
    }
    run_fixed(&mut judge, &spec, costs, args)
}

fn warm_up(judge: &mut Judge, spec: &LabelSpec, item: &PreparedItem) -> anyhow::Result<()> {
    // Kernels load and cuBLAS picks its algorithms outside the timings.
    judge.set_max_batch(spec.k as usize);
    judge.judge_with(std::slice::from_ref(item), &LabelSpec { max_new_tokens: 8, ..spec.clone() }, true)?;
    let _ = verdict_engine::profile::report();
    Ok(())
}

fn print_profile(batch: usize) {
    if verdict_engine::profile::enabled() {
        eprintln!("profile, batch {batch} (VERDICT_PROFILE: every region waits for the device)\n{}", verdict_engine::profile::report());
    }
}

fn run_fixed(judge: &mut Judge, spec: &LabelSpec, costs: Costs, args: &BenchArgs) -> anyhow::Result<()> {
    let largest = args.batches.iter().copied().max().unwrap_or(1);
    let k = spec.k as usize;
    let words = corpus_words()?;
    let all = (0..largest.div_ceil(k)).map(|n| sized_item(judge, spec, &words, n, args.prompt_tokens)).collect::<anyhow::Result<Vec<_>>>()?;
    if let Some(path) = &args.prompts_out {
        let prompts: Vec<&Vec<u32>> = all.iter().flat_map(|p| p.samples.iter().map(|(_, i)| &p.prompts[*i].1)).collect();
        std::fs::write(path, serde_json::to_string(&prompts)?).with_context(|| format!("writing {}", path.display()))?;
    }
    warm_up(judge, spec, &all[0])?;
    for &batch in &args.batches {
        let per_item = k.min(batch);
        let n_items = batch.div_ceil(per_item);
        let spec = LabelSpec { k: per_item as u32, ..spec.clone() };
        let chosen: Vec<PreparedItem> = all[..n_items].iter().map(|p| PreparedItem { samples: p.samples[..per_item].to_vec(), ..p.clone() }).collect();
        judge.set_max_batch(batch);
        let started = Instant::now();
        let (_, stats) = judge.judge_with(&chosen, &spec, true)?;
        crate::say::out(line(args, costs, "fixed", batch, &chosen, &stats, started.elapsed().as_secs_f64()))?;
        print_profile(batch);
    }
    Ok(())
}

fn run_varied(judge: &mut Judge, spec: &LabelSpec, costs: Costs, args: &BenchArgs) -> anyhow::Result<()> {
    let (items, lengths) = varied(judge, spec, args)?;
    let total: usize = lengths.iter().flatten().sum();
    let samples = lengths.iter().map(Vec::len).sum::<usize>().max(1);
    let mean = ((total as f64 / samples as f64).round() as usize).max(1);
    let at_mean: Vec<Vec<usize>> = lengths.iter().map(|l| vec![mean; l.len()]).collect();
    if let Some(path) = &args.prompts_out {
        let prompts: Vec<&Vec<u32>> = items.iter().flat_map(|p| p.samples.iter().map(|(_, i)| &p.prompts[*i].1)).collect();
        let flat: Vec<usize> = lengths.iter().flatten().copied().collect();
        std::fs::write(path, serde_json::to_string(&json!({"prompts": prompts, "lengths": flat, "mean_length": mean}))?).with_context(|| format!("writing {}", path.display()))?;
    }
    warm_up(judge, spec, &items[0])?;
    for &batch in &args.batches {
        judge.set_max_batch(batch);
        for (workload, l) in [("varied", &lengths), ("fixed-at-mean", &at_mean)] {
            let started = Instant::now();
            let (_, stats) = judge.judge_lengths(&items, spec, l)?;
            crate::say::out(line(args, costs, workload, batch, &items, &stats, started.elapsed().as_secs_f64()))?;
            print_profile(batch);
        }
    }
    Ok(())
}

fn run_dataset(judge: &mut Judge, spec: &LabelSpec, costs: Costs, path: &std::path::Path, args: &BenchArgs) -> anyhow::Result<()> {
    let mut items = Vec::new();
    for parsed in crate::input::Reader::open(path)? {
        if let crate::input::Parsed::Item { item, .. } = parsed? {
            items.push(judge.prepare(item, spec)?);
        }
    }
    anyhow::ensure!(!items.is_empty(), "{} has no items", path.display());
    warm_up(judge, spec, &items[0])?;
    for &batch in &args.batches {
        judge.set_max_batch(batch);
        let started = Instant::now();
        let (_, stats) = judge.judge_with(&items, spec, false)?;
        crate::say::out(line(args, costs, "dataset", batch, &items, &stats, started.elapsed().as_secs_f64()))?;
        print_profile(batch);
    }
    Ok(())
}
