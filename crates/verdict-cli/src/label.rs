//! `verdict label`: the embedded mode. Items from a JSONL or Parquet file, the engine in this
//! process, verdicts appended to the output: the worker's labeling pipeline with a file at
//! both ends ([`crate::file_ends`]); resumable, and interruptible.
//!
//! Every line is checked before anything is labeled: the tokenizer and chat template load in
//! a moment, before the weights, so prompts too long for the judge are found in the same
//! up-front scan as malformed lines. Without `--skip-invalid`, one bad line means nothing is
//! written at all.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use verdict_core::{ContentKey, Item, LabelSpec};
use verdict_worker::{Extend, PipelineConfig};
use verdict_engine::{device, EngineError, EngineOptions, Judge, Prompter};

use crate::file_ends::{FileSink, FileSource, Totals};
use crate::input::{no_items, refuse_bad_lines, rejects_path, Parsed, Reader, Rejected};
use crate::model_cmd::{default_tiny_model, digest_cache};
use crate::output::{records_of, Existing, JsonlWriter, Output};
use crate::say::{note, progress_bar};
use crate::spec_args::SpecArgs;

#[derive(Args)]
pub struct LabelArgs {
    /// Input JSONL or Parquet (.parquet): {prompt, chosen, rejected}, {prompt, responses} or {messages, responses}, each with an optional id.
    input: PathBuf,
    /// Output: JSONL, or Parquet by the .parquet extension. An existing output is resumed: items already in it are skipped; items in it at a smaller k (same settings otherwise) are extended to --k, making only their missing samples.
    #[arg(short, long)]
    output: PathBuf,
    /// Judge model folder (Hugging Face layout). Without it, a tiny random model is made and used: its verdicts are noise.
    #[arg(long, env = "VERDICT_MODEL")]
    model: Option<PathBuf>,
    #[command(flatten)]
    spec: SpecArgs,
    /// Meta reward model folder (a *ForSequenceClassification checkpoint); makes meta-RM voting the default aggregation.
    #[arg(long, env = "VERDICT_META_RM")]
    meta_rm: Option<PathBuf>,
    /// Most sequences decoded together: a number, or auto (from free GPU memory on CUDA; 32 on the CPU).
    #[arg(long, default_value = "auto", value_parser = crate::spec_args::parse_batch)]
    batch: usize,
    /// cpu, cuda or cuda:N (cuda needs a build with --features cuda).
    #[arg(long, default_value = "cpu", env = "VERDICT_DEVICE")]
    device: String,
    /// Write bad lines, with their reasons, to the rejects file and carry on, instead of stopping.
    #[arg(long)]
    skip_invalid: bool,
    /// Where rejected lines go with --skip-invalid (default: OUTPUT with .rejects.jsonl).
    #[arg(long)]
    rejects: Option<PathBuf>,
}

/// What the up-front scan found.
struct Scan {
    /// Items to label, with their line numbers and their first sample to make (0, or the k
    /// of their record in the output when this run extends it to a larger k).
    todo: Vec<(usize, Item, u32)>,
    /// The longest rendered prompt among them, in tokens (sizes the engine's cache).
    longest: usize,
    rejected: Vec<Rejected>,
    resumed: usize,
    duplicates: usize,
    /// Items whose records this run extends to the spec's k.
    extended: usize,
}

/// Lines rendered and tokenized together, on every core: before the first sample runs,
/// every line is checked against the judge, and on a single thread that check of 2,048
/// items of ~1,800 tokens held the GPU idle for about 8 s (bench/RESULTS.md).
const CHECK_CHUNK: usize = 2048;

/// Render and tokenize `pending` in parallel (in order): each either joins `todo` (and
/// `longest`) or is rejected naming its line and field.
fn check(prompter: &Prompter, spec: &LabelSpec, pending: &mut Vec<(usize, Item, String, u32)>, todo: &mut Vec<(usize, Item, u32)>, rejected: &mut Vec<Rejected>, longest: &mut usize) -> anyhow::Result<()> {
    use rayon::prelude::*;
    let checked: Vec<_> = std::mem::take(pending).into_par_iter().map(|(line, item, text, first)| (line, text, first, prompter.prepare(item, spec))).collect();
    for (line, text, first, prepared) in checked {
        match prepared {
            Ok(p) => {
                *longest = (*longest).max(p.prompts.iter().map(|(_, ids)| ids.len()).max().unwrap_or(0));
                todo.push((line, p.item, first));
            }
            Err(EngineError::Item { id, error }) => rejected.push(Rejected::of_item(line, &id, &error, text)),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Read every line, check it against the judge (shape, length, resume), and sort it.
fn scan(args: &LabelArgs, prompter: &Prompter, spec: &LabelSpec, existing: &Existing, output: &Output) -> anyhow::Result<Scan> {
    let mut reader = Reader::open(&args.input)?;
    let (mut todo, mut rejected, mut resumed, mut longest, mut extended) = (Vec::new(), Vec::new(), 0, 0, 0);
    let mut pending = Vec::with_capacity(CHECK_CHUNK);
    for parsed in reader.by_ref() {
        let (line, item, text) = match parsed? {
            Parsed::Rejected(r) => {
                rejected.push(r);
                continue;
            }
            Parsed::Item { line, item, text } => (line, item, text),
        };
        let mut first = 0;
        if let Some(done) = existing.done.get(&item.id) {
            if done.key == ContentKey::of(&item, spec, prompter.fingerprints()).hex() {
                resumed += 1;
                continue;
            }
            // The same item, spec and weights at another k: a smaller one is extended (only
            // the missing samples are made), a larger one is a re-vote's business.
            let same_but_k = done.key == ContentKey::of(&item, &LabelSpec { k: done.samples, ..spec.clone() }, prompter.fingerprints()).hex();
            let why = if same_but_k && done.samples > spec.k {
                format!("at k = {}, more samples than this run's {} (a verdict at a smaller k is a re-vote of the stored samples)", done.samples, spec.k)
            } else if !done.fingerprint.is_empty() && done.fingerprint != prompter.fingerprints().judge {
                format!("judged by other weights (fingerprint {}; this judge's is {})", done.fingerprint, prompter.fingerprints().judge)
            } else {
                "under other settings or content".to_string()
            };
            if same_but_k && spec.adaptive.is_some() {
                bail!("{} already holds a verdict for id {} (line {line}); adaptive k does not extend an earlier run: write to a new output file", output.path.display(), item.id);
            }
            if !(same_but_k && done.samples < spec.k) {
                bail!("{} already holds a verdict for id {} (line {line}) {why}; write to a new output file", output.path.display(), item.id);
            }
            first = done.samples;
            extended += 1;
        }
        pending.push((line, item, text, first));
        if pending.len() == CHECK_CHUNK {
            check(prompter, spec, &mut pending, &mut todo, &mut rejected, &mut longest)?;
        }
    }
    check(prompter, spec, &mut pending, &mut todo, &mut rejected, &mut longest)?;
    if reader.non_blank == 0 {
        return Err(no_items(&args.input));
    }
    Ok(Scan { todo, longest, rejected, resumed, duplicates: reader.duplicates, extended })
}

pub fn run(args: LabelArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let model_dir = match &args.model {
        Some(m) => m.clone(),
        None => {
            let dir = default_tiny_model()?;
            note(format!(
                "note: no --model given, so this run uses a tiny RANDOM-weight model ({}).\n      Its verdicts are noise: they show the pipeline works, not which response is better.\n      Point --model at a real judge folder (e.g. Qwen2.5-7B-Instruct or DeepSeek-GRM) for real labels.",
                dir.display()
            ));
            dir
        }
    };
    let digest_cache = digest_cache();
    let prompter = Prompter::open(&model_dir, args.meta_rm.as_deref(), &digest_cache)
        .with_context(|| format!("opening the judge in {}", model_dir.display()))?;
    let spec = args.spec.spec(prompter.name(), args.meta_rm.is_some())?;
    prompter.check_spec(&spec)?;

    let output = Output::new(&args.output);
    let existing = output.existing()?;
    if existing.truncated_bytes > 0 {
        note(format!("note: cut a partial last line ({} bytes) from {} left by an interrupted run", existing.truncated_bytes, output.journal.display()));
    }
    let Scan { todo, longest, mut rejected, resumed, duplicates, extended } = scan(&args, &prompter, &spec, &existing, &output)?;
    if !args.skip_invalid {
        refuse_bad_lines(&args.input, &rejected, "write them to a rejects file and label the rest")?;
    }
    let superseded = existing.superseded > 0 || extended > 0;
    drop(existing);
    let todo = with_prior_samples(todo, &output)?;
    if extended > 0 {
        note(format!("extending {extended} item(s) of {} to k = {}: only their new samples are made", output.path.display(), spec.k));
    }

    let (device, dtype) = device::pick(&args.device)?;
    let options = EngineOptions { max_batch: args.batch, device, dtype, digest_cache, cuda_graphs: true };
    let judge = Judge::with_weights(prompter, options).with_context(|| format!("loading the judge's weights from {}", model_dir.display()))?;

    // First Ctrl-C: take no new items, finish the ones in flight. Second: stop at once.
    let interrupts = Arc::new(AtomicUsize::new(0));
    let stopped = Arc::new(AtomicBool::new(false));
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    {
        let (count, stopped) = (interrupts.clone(), stopped.clone());
        ctrlc::set_handler(move || {
            if count.fetch_add(1, Ordering::SeqCst) > 0 {
                stopped.store(true, Ordering::SeqCst);
                note("\ninterrupted again: stopping now; re-run the same command to resume");
                std::process::exit(130);
            }
            note("\ninterrupted: finishing the items in flight, then stopping (Ctrl-C again to stop at once)");
            let _ = stop_tx.send(true);
        })
        .context("installing the Ctrl-C handler")?;
    }

    let total = todo.len() as u64;
    let firsts = todo.iter().enumerate().filter(|(_, t)| t.2.first > 0).map(|(tag, t)| (tag, t.2.first)).collect();
    let source = FileSource::new(todo, spec.clone());
    let mut sink = FileSink::new(output.writer()?, progress_bar(total), stopped, firsts);
    let pcfg = PipelineConfig {
        k_hint: spec.samples_in_flight() as usize,
        drain_timeout: Duration::from_secs(365 * 24 * 3600),
        prompt_tokens: Some(longest),
        ..PipelineConfig::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = runtime.block_on(async {
        let until_stop = async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        };
        verdict_worker::pipeline::run(Arc::new(judge), source, &mut sink, pcfg, until_stop).await
    });
    let stopped = interrupts.load(Ordering::SeqCst) > 0;
    if stopped {
        sink.flush_all()?;
    }
    result?;
    let totals = sink.finish();
    for (tag, why) in &totals.refused {
        note(format!("error: item {tag} of the run was refused by the engine: {why}"));
    }
    if !stopped && totals.refused.is_empty() {
        output.finish(superseded)?;
    }
    write_rejects(&args, &mut rejected)?;
    summarize(&args, &totals, started, resumed, duplicates, rejected.len());
    if stopped {
        note(format!(
            "stopped early; re-run the same command to resume{}",
            if output.journal != output.path { format!(" (the Parquet file is written once every item is in; until then records are in {})", output.journal.display()) } else { String::new() }
        ));
        std::process::exit(130);
    }
    Ok(())
}

/// Each item to label with what to make of it: every sample, or (extending its record in
/// the output) the samples after those the record holds, which are read back to vote with.
fn with_prior_samples(todo: Vec<(usize, Item, u32)>, output: &Output) -> anyhow::Result<Vec<(usize, Item, Extend)>> {
    let ids: HashSet<&str> = todo.iter().filter(|t| t.2 > 0).map(|t| t.1.id.as_str()).collect();
    let mut records = records_of(&output.journal, &ids)?;
    todo.into_iter()
        .map(|(line, item, first)| {
            if first == 0 {
                return Ok((line, item, Extend::none()));
            }
            let record = records.remove(&item.id).with_context(|| format!("the record of item {} went missing from {}", item.id, output.journal.display()))?;
            let prior: Vec<_> = record.samples.into_iter().filter(|s| s.index < first).collect();
            Ok((line, item, Extend { first, prior }))
        })
        .collect()
}

fn write_rejects(args: &LabelArgs, rejected: &mut [Rejected]) -> anyhow::Result<()> {
    if rejected.is_empty() {
        return Ok(());
    }
    rejected.sort_by_key(|r| r.line);
    let path = rejects_path(&args.output, args.rejects.as_ref());
    let records: Vec<serde_json::Value> = rejected.iter().map(Rejected::record).collect();
    JsonlWriter::append(&path)?.write_batch(&records)?;
    note(format!("{} rejected line(s) written to {}", records.len(), path.display()));
    Ok(())
}

fn summarize(args: &LabelArgs, t: &Totals, started: Instant, resumed: usize, duplicates: usize, rejected: usize) {
    let secs = started.elapsed().as_secs_f64();
    note(format!(
        "labeled {} item(s) in {secs:.1}s ({:.2} items/s); {resumed} already in {}; {duplicates} duplicate line(s); {rejected} rejected",
        t.done,
        t.done as f64 / secs.max(1e-9),
        args.output.display(),
    ));
    if t.samples > 0 {
        note(format!(
            "samples: {} total, {} valid ({} forced at the token budget); {} prompt + {} generated tokens ({:.0} generated tokens/s)",
            t.samples,
            t.valid,
            t.forced,
            t.prompt_tokens,
            t.generated_tokens,
            t.generated_tokens as f64 / secs.max(1e-9)
        ));
    }
    if t.compared > 0 {
        note(format!("agreement with the dataset's chosen response: {}/{}", t.agree, t.compared));
    }
}
