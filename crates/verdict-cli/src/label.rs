//! `verdict label`: the embedded mode. Items from a JSONL file, the engine in this process,
//! verdicts appended to a JSONL file; resumable, and interruptible between batches.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use verdict_core::{Aggregation, ContentKey, VerdictRecord};
use verdict_engine::{device, EngineError, EngineOptions, Judge};

use crate::input::{read_dataset, Rejected};
use crate::spec_args::SpecArgs;
use crate::model_cmd::default_tiny_model;
use crate::output::{scan_existing, JsonlWriter};

#[derive(Args)]
pub struct LabelArgs {
    /// Input JSONL or Parquet (.parquet): {prompt, chosen, rejected}, {prompt, responses} or {messages, responses}, each with an optional id.
    input: PathBuf,
    /// Output JSONL, one verdict per item. An existing file is resumed: items already in it are skipped.
    #[arg(short, long)]
    output: PathBuf,
    /// Judge model folder (Hugging Face layout). Without it, a tiny random model is made and used: its verdicts are noise.
    #[arg(long, env = "VERDICT_MODEL")]
    model: Option<PathBuf>,
    #[command(flatten)]
    spec: SpecArgs,
    /// Meta reward model folder (a *ForSequenceClassification checkpoint); switches aggregation to meta-RM voting.
    #[arg(long)]
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

fn rejects_path(args: &LabelArgs) -> PathBuf {
    args.rejects.clone().unwrap_or_else(|| {
        let mut name = args.output.file_name().map(|n| n.to_os_string()).unwrap_or_default();
        name.push(".rejects.jsonl");
        args.output.with_file_name(name)
    })
}

fn rejected_record(r: &Rejected) -> serde_json::Value {
    json!({"line": r.line, "id": r.id, "field": r.field, "error": r.error, "input": r.input})
}

pub fn run(args: LabelArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let dataset = read_dataset(&args.input)?;
    let mut rejected = dataset.rejected;
    if !rejected.is_empty() && !args.skip_invalid {
        for r in rejected.iter().take(20) {
            eprintln!("error: {}: {r}", args.input.display());
        }
        if rejected.len() > 20 {
            eprintln!("... and {} more bad lines", rejected.len() - 20);
        }
        bail!("{} bad line(s) in {}; fix them, or pass --skip-invalid to write them to a rejects file and label the rest", rejected.len(), args.input.display());
    }

    let model_dir = match &args.model {
        Some(m) => m.clone(),
        None => {
            let dir = default_tiny_model()?;
            eprintln!(
                "note: no --model given, so this run uses a tiny RANDOM-weight model ({}).\n      Its verdicts are noise: they show the pipeline works, not which response is better.\n      Point --model at a real judge folder (e.g. Qwen2.5-7B-Instruct or DeepSeek-GRM) for real labels.",
                dir.display()
            );
            dir
        }
    };
    let (device, dtype) = device::pick(&args.device)?;
    let options = EngineOptions { max_batch: args.batch, device, dtype };
    let judge = Judge::load(&model_dir, args.meta_rm.as_deref(), options)
        .with_context(|| format!("loading the judge from {}", model_dir.display()))?;

    let mut spec = args.spec.spec(judge.identity());
    if args.meta_rm.is_some() {
        spec.aggregation = Aggregation::MetaRm { k_meta: args.spec.k_meta };
        spec.meta_rm = judge.meta_identity().map(str::to_string);
    }
    spec.validate().context("invalid label settings")?;

    let existing = scan_existing(&args.output)?;
    if existing.truncated_bytes > 0 {
        eprintln!("note: cut a partial last line ({} bytes) from {} left by an interrupted run", existing.truncated_bytes, args.output.display());
    }
    let mut todo = Vec::new();
    let mut resumed = 0;
    for (line, item) in dataset.items {
        match existing.done.get(&item.id) {
            Some(key) if *key == ContentKey::of(&item, &spec).hex() => resumed += 1,
            Some(_) => bail!(
                "{} already holds a verdict for id {} (line {line}) under other settings or content; write to a new output file",
                args.output.display(),
                item.id
            ),
            None => todo.push((line, item)),
        }
    }

    let interrupted = Arc::new(AtomicUsize::new(0));
    {
        let flag = interrupted.clone();
        ctrlc::set_handler(move || {
            if flag.fetch_add(1, Ordering::SeqCst) > 0 {
                eprintln!("\ninterrupted again: stopping now; re-run the same command to resume");
                std::process::exit(130);
            }
            eprintln!("\ninterrupted: finishing the batch in flight, then stopping (Ctrl-C again to stop at once)");
        })
        .context("installing the Ctrl-C handler")?;
    }

    let mut writer = JsonlWriter::append(&args.output)?;
    let bar = ProgressBar::new(todo.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} items  {per_sec}  ETA {eta}  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let rows = judge.batch_limit(crate::spec_args::PLANNING_PROMPT_TOKENS, spec.max_new_tokens as usize);
    let items_per_batch = (rows / spec.k.max(1) as usize).max(1);
    let mut done = 0usize;
    let mut samples = (0usize, 0usize, 0usize); // (total, valid, forced)
    let mut tokens = (0usize, 0usize); // (prompt, generated)
    let mut reference = (0usize, 0usize); // (agree, compared)
    let mut rejects_file: Vec<serde_json::Value> = rejected.iter().map(rejected_record).collect();

    let mut queue = todo.into_iter().peekable();
    while queue.peek().is_some() {
        if interrupted.load(Ordering::SeqCst) > 0 {
            break;
        }
        let mut batch = Vec::with_capacity(items_per_batch);
        while batch.len() < items_per_batch {
            let Some((line, item)) = queue.next() else { break };
            let id = item.id.clone();
            match judge.prepare(item, &spec) {
                Ok(p) => batch.push(p),
                Err(EngineError::Item { error, .. }) => {
                    let r = Rejected { line, id: Some(id), error: error.to_string(), field: error.field.clone(), input: String::new() };
                    if !args.skip_invalid {
                        bail!("{}: {r}", args.input.display());
                    }
                    rejects_file.push(rejected_record(&r));
                    rejected.push(r);
                    bar.inc(1);
                }
                Err(e) => return Err(e.into()),
            }
        }
        if batch.is_empty() {
            continue;
        }
        let records: Vec<VerdictRecord> = judge.judge(&batch, &spec)?;
        writer.write_batch(&records)?;
        for r in &records {
            samples.0 += r.samples.len();
            samples.1 += r.verdict.valid as usize;
            samples.2 += r.samples.iter().filter(|s| s.status == verdict_core::ParseStatus::Forced).count();
            tokens.0 += r.samples.iter().map(|s| s.prompt_tokens as usize).sum::<usize>();
            tokens.1 += r.samples.iter().map(|s| s.completion_tokens as usize).sum::<usize>();
            if let Some(a) = r.agrees_with_reference {
                reference.1 += 1;
                reference.0 += a as usize;
            }
        }
        done += records.len();
        bar.inc(records.len() as u64);
        bar.set_message(format!("{:.0}% samples valid", 100.0 * samples.1 as f64 / samples.0.max(1) as f64));
    }
    bar.finish_and_clear();

    if !rejects_file.is_empty() {
        let path = rejects_path(&args);
        let mut w = JsonlWriter::append(&path)?;
        w.write_batch(&rejects_file)?;
        eprintln!("{} rejected line(s) written to {}", rejects_file.len(), path.display());
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "labeled {done} item(s) in {secs:.1}s ({:.2} items/s); {resumed} already in {}; {} duplicate line(s); {} rejected",
        done as f64 / secs.max(1e-9),
        args.output.display(),
        dataset.duplicates,
        rejected.len()
    );
    if samples.0 > 0 {
        eprintln!(
            "samples: {} total, {} valid ({} forced at the token budget); {} prompt + {} generated tokens ({:.0} generated tokens/s)",
            samples.0,
            samples.1,
            samples.2,
            tokens.0,
            tokens.1,
            tokens.1 as f64 / secs.max(1e-9)
        );
    }
    if reference.1 > 0 {
        eprintln!("agreement with the dataset's chosen response: {}/{}", reference.0, reference.1);
    }
    if interrupted.load(Ordering::SeqCst) > 0 {
        eprintln!("stopped early; re-run the same command to resume");
        std::process::exit(130);
    }
    Ok(())
}
