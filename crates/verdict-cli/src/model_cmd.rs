//! `verdict model init`: write a random-weight model folder.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use verdict_engine::synth::{self, InitOptions, Size};
use verdict_engine::{Arch, DigestCache, Prompter};

#[derive(Subcommand)]
pub enum ModelCommand {
    /// Write a random-weight model folder (config, safetensors, trained BPE tokenizer, chat
    /// template). Its judgements are noise: it exists to test and benchmark the machinery.
    Init(InitArgs),
    /// Write the engine's logits and greedy tokens for fixed inputs as JSON (for the
    /// parity check against transformers in bench/parity/).
    Probe(ProbeArgs),
    /// Time the engine at fixed prompt and output lengths over batch sizes (bench/gpu/).
    Bench(crate::bench_cmd::BenchArgs),
    /// Time one decode step's attention, today's per-row layout against segmented attention
    /// (random data, no model; bench/gpu/).
    BenchAttention(crate::bench_attention::BenchAttentionArgs),
    /// Print a model folder's fingerprint: what verdicts, workers and `verdict status` call its weights.
    Fingerprint(FingerprintArgs),
}

#[derive(Args)]
pub struct FingerprintArgs {
    /// Model folder.
    dir: PathBuf,
    /// A meta reward model folder, fingerprinted with it as a worker would.
    #[arg(long)]
    meta_rm: Option<PathBuf>,
    /// Hash every file again instead of using cached digests.
    #[arg(long)]
    no_cache: bool,
}

#[derive(Args)]
pub struct ProbeArgs {
    /// Model folder.
    dir: PathBuf,
    /// Output JSON file.
    #[arg(long)]
    out: PathBuf,
    /// Greedy steps per input.
    #[arg(long, default_value_t = 64)]
    steps: usize,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
}

#[derive(Args)]
pub struct InitArgs {
    /// Architecture: qwen2, qwen3, llama or gemma2.
    #[arg(long, default_value = "qwen2")]
    arch: Arch,
    /// tiny (tests, seconds on a CPU), small (Qwen2.5-0.5B layer shapes), medium (Qwen2.5-7B shapes).
    #[arg(long, default_value = "tiny")]
    size: Size,
    /// Output folder (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Seed of the random weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Write a sequence classifier (a meta reward model) instead of a causal LM.
    #[arg(long)]
    meta_rm: bool,
    /// Store weights in bf16 (default for small and medium) instead of f32.
    #[arg(long)]
    bf16: Option<bool>,
    /// Split the weights over this many safetensors files plus an index.
    #[arg(long, default_value_t = 1)]
    shards: usize,
}

pub fn init_model(args: &InitArgs) -> anyhow::Result<PathBuf> {
    let opts = InitOptions {
        arch: args.arch,
        size: args.size,
        out: args.out.clone(),
        seed: args.seed,
        classifier: args.meta_rm,
        bf16: args.bf16.unwrap_or(args.size != Size::Tiny),
        shards: args.shards,
    };
    synth::init(&opts).with_context(|| format!("writing a model to {}", args.out.display()))
}

pub fn run(cmd: ModelCommand) -> anyhow::Result<()> {
    match cmd {
        ModelCommand::Init(args) => {
            let dir = init_model(&args)?;
            crate::say::note(format!(
                "wrote a random-weight {} ({:?}) to {}: its verdicts are random, use it to test the machinery only",
                args.arch.model_type(),
                args.size,
                dir.display()
            ));
            Ok(())
        }
        ModelCommand::Bench(args) => crate::bench_cmd::run(&args),
        ModelCommand::BenchAttention(args) => crate::bench_attention::run(&args),
        ModelCommand::Fingerprint(args) => {
            let cache = if args.no_cache { DigestCache::none() } else { digest_cache() };
            let p = Prompter::open(&args.dir, args.meta_rm.as_deref(), &cache)?;
            let f = p.fingerprints();
            crate::say::out(serde_json::json!({"name": p.name(), "fingerprint": f.judge, "meta_fingerprint": f.meta_rm}))?;
            Ok(())
        }
        ModelCommand::Probe(args) => {
            let folder = verdict_engine::folder::ModelFolder::open(&args.dir)?;
            let cfg = folder.config()?;
            let tok = folder.tokenizer(&cfg)?;
            let (device, dtype) = verdict_engine::device::pick(&args.device)?;
            let model = folder.decoder(&cfg, dtype, &device)?;
            let records = verdict_engine::probe::probe_inputs(tok.vocab)
                .iter()
                .map(|input| verdict_engine::probe::probe(&model, input, args.steps, tok.vocab))
                .collect::<Result<Vec<_>, _>>()?;
            std::fs::write(&args.out, serde_json::to_string(&records)?)?;
            Ok(())
        }
    }
}

/// Verdict's cache: `$VERDICT_CACHE`, else `~/.cache/verdict`.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("VERDICT_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("verdict")))
        .unwrap_or_else(|| PathBuf::from(".verdict-cache"))
}

/// Where weight files' digests are cached between runs (see `verdict_engine::fingerprint`).
pub fn digest_cache() -> DigestCache {
    DigestCache::at(cache_dir().join("fingerprints.json"))
}

/// The tiny model `verdict label` uses when no `--model` is given, made once and cached.
pub fn default_tiny_model() -> anyhow::Result<PathBuf> {
    let dir = cache_dir().join("models").join("tiny-qwen2-random");
    if !dir.join("model.safetensors").is_file() {
        let args = InitArgs { arch: Arch::Qwen2, size: Size::Tiny, out: dir.clone(), seed: 0, meta_rm: false, bf16: None, shards: 1 };
        init_model(&args)?;
    }
    Ok(dir)
}
