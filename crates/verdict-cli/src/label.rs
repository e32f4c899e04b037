//! `verdict label`: the embedded mode. Items from a JSONL or Parquet file, the engine in this
//! process, verdicts appended to the output; resumable, and interruptible between batches.
//!
//! Every line is checked before anything is labeled: the tokenizer and chat template load in
//! a moment, before the weights, so prompts too long for the judge are found in the same
//! up-front scan as malformed lines. Without `--skip-invalid`, one bad line means nothing is
//! written at all.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use verdict_core::{ContentKey, Item, LabelSpec, VerdictRecord};
use verdict_engine::{device, EngineError, EngineOptions, Judge, Prompter};

use crate::input::{no_items, refuse_bad_lines, rejects_path, Parsed, Reader, Rejected};
use crate::model_cmd::{default_tiny_model, digest_cache};
use crate::output::{Existing, JsonlWriter, Output};
use crate::say::{note, progress_bar};
use crate::spec_args::SpecArgs;

#[derive(Args)]
pub struct LabelArgs {
    /// Input JSONL or Parquet (.parquet): {prompt, chosen, rejected}, {prompt, responses} or {messages, responses}, each with an optional id.
    input: PathBuf,
    /// Output: JSONL, or Parquet by the .parquet extension. An existing output is resumed: items already in it are skipped.
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
    /// Items to label, with their line numbers.
    todo: Vec<(usize, Item)>,
    rejected: Vec<Rejected>,
    resumed: usize,
    duplicates: usize,
}

/// Read every line, check it against the judge (shape, length, resume), and sort it.
fn scan(args: &LabelArgs, prompter: &Prompter, spec: &LabelSpec, existing: &Existing, output: &Output) -> anyhow::Result<Scan> {
    let mut reader = Reader::open(&args.input)?;
    let (mut todo, mut rejected, mut resumed) = (Vec::new(), Vec::new(), 0);
    for parsed in reader.by_ref() {
        let (line, item, text) = match parsed? {
            Parsed::Rejected(r) => {
                rejected.push(r);
                continue;
            }
            Parsed::Item { line, item, text } => (line, item, text),
        };
        if let Some(done) = existing.done.get(&item.id) {
            if done.key == ContentKey::of(&item, spec, prompter.fingerprints()).hex() {
                resumed += 1;
                continue;
            }
            let why = if !done.fingerprint.is_empty() && done.fingerprint != prompter.fingerprints().judge {
                format!("judged by other weights (fingerprint {}; this judge's is {})", done.fingerprint, prompter.fingerprints().judge)
            } else {
                "under other settings or content".to_string()
            };
            bail!("{} already holds a verdict for id {} (line {line}) {why}; write to a new output file", output.path.display(), item.id);
        }
        match prompter.prepare(item, spec) {
            Ok(p) => todo.push((line, p.item)),
            Err(EngineError::Item { id, error }) => rejected.push(Rejected::of_item(line, &id, &error, text)),
            Err(e) => return Err(e.into()),
        }
    }
    if reader.non_blank == 0 {
        return Err(no_items(&args.input));
    }
    Ok(Scan { todo, rejected, resumed, duplicates: reader.duplicates })
}

/// Running totals for the closing summary.
#[derive(Default)]
struct Totals {
    done: usize,
    samples: usize,
    valid: usize,
    forced: usize,
    prompt_tokens: usize,
    generated_tokens: usize,
    agree: usize,
    compared: usize,
}

impl Totals {
    fn add(&mut self, records: &[VerdictRecord]) {
        for r in records {
            self.samples += r.samples.len();
            self.valid += r.verdict.valid as usize;
            self.forced += r.samples.iter().filter(|s| s.status == verdict_core::ParseStatus::Forced).count();
            self.prompt_tokens += r.samples.iter().map(|s| s.prompt_tokens as usize).sum::<usize>();
            self.generated_tokens += r.samples.iter().map(|s| s.completion_tokens as usize).sum::<usize>();
            if let Some(a) = r.agrees_with_reference {
                self.compared += 1;
                self.agree += a as usize;
            }
        }
        self.done += records.len();
    }
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
    let Scan { todo, mut rejected, resumed, duplicates } = scan(&args, &prompter, &spec, &existing, &output)?;
    if !args.skip_invalid {
        refuse_bad_lines(&args.input, &rejected, "write them to a rejects file and label the rest")?;
    }
    drop(existing);

    let (device, dtype) = device::pick(&args.device)?;
    let options = EngineOptions { max_batch: args.batch, device, dtype, digest_cache };
    let judge = Judge::with_weights(prompter, options).with_context(|| format!("loading the judge's weights from {}", model_dir.display()))?;

    let interrupted = Arc::new(AtomicUsize::new(0));
    {
        let flag = interrupted.clone();
        ctrlc::set_handler(move || {
            if flag.fetch_add(1, Ordering::SeqCst) > 0 {
                note("\ninterrupted again: stopping now; re-run the same command to resume");
                std::process::exit(130);
            }
            note("\ninterrupted: finishing the batch in flight, then stopping (Ctrl-C again to stop at once)");
        })
        .context("installing the Ctrl-C handler")?;
    }

    let mut writer = output.writer()?;
    let bar = progress_bar(todo.len() as u64);
    let rows = judge.batch_limit(crate::spec_args::PLANNING_PROMPT_TOKENS, spec.max_new_tokens as usize);
    let items_per_batch = (rows / spec.k.max(1) as usize).max(1);
    let mut totals = Totals::default();
    let mut queue = todo.into_iter().peekable();
    while queue.peek().is_some() {
        if interrupted.load(Ordering::SeqCst) > 0 {
            break;
        }
        let mut batch = Vec::with_capacity(items_per_batch);
        while batch.len() < items_per_batch {
            let Some((_, item)) = queue.next() else { break };
            // Checked in the scan; preparing again is tokenizing again, cheaper than holding
            // every prompt's tokens for the whole run.
            batch.push(judge.prepare(item, &spec)?);
        }
        let records: Vec<VerdictRecord> = judge.judge(&batch, &spec)?;
        writer.write_batch(&records)?;
        totals.add(&records);
        bar.inc(records.len() as u64);
        bar.set_message(format!("{:.0}% samples valid", 100.0 * totals.valid as f64 / totals.samples.max(1) as f64));
    }
    bar.finish_and_clear();
    let stopped = interrupted.load(Ordering::SeqCst) > 0;
    if !stopped {
        output.finish()?;
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
