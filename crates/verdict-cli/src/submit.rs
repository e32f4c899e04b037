//! `verdict submit`: create a job from a dataset, stream its items to the coordinator, and
//! optionally wait for it with a progress bar.
//!
//! The file is read twice and never held: once to check every line (nothing is submitted
//! from a file with a bad line unless `--skip-invalid`, and an empty file creates no job),
//! then again to stream the items, in messages bounded by count and by bytes so large items
//! never exceed what one HTTP/2 message may carry. Nothing in memory grows with the file:
//! the repeat check sorts its records on disk in bounded runs, and the coordinator names
//! rejected items by id, whose lines one more read finds (only when there are any).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use prost::Message;
use verdict_proto::convert::{item_to_wire, spec_to_wire};
use verdict_proto::v1;

use crate::client::{connect, status, CoordinatorAddr};
use crate::input::{content_hash, hash64, no_items, refuse_bad_lines, Parsed, Reader, Rejected};
use crate::repeats::Seen;
use crate::jobs_cmd::{no_worker_warning, watch_job};
use crate::say::{note, out, warn};
use crate::spec_args::SpecArgs;

#[derive(Args)]
pub struct SubmitArgs {
    /// Input JSONL or Parquet, in the same shapes as `verdict label`.
    input: PathBuf,
    /// The judge model's name: workers started with the same --judge take the items.
    #[arg(long, env = "VERDICT_JUDGE", required_unless_present = "job")]
    judge: Option<String>,
    /// A name to find the job by.
    #[arg(long, default_value = "")]
    name: String,
    #[command(flatten)]
    spec: SpecArgs,
    /// Not for submit: the meta RM is a folder the judge's workers load (`verdict worker --meta-rm DIR`); choose meta-RM voting with --aggregation meta-rm.
    #[arg(long, hide = true)]
    meta_rm: Option<String>,
    /// Add the items to this open job instead of creating one (to resume a submission that broke off; items already in it are skipped).
    #[arg(long)]
    job: Option<String>,
    /// Leave bad lines out (they are listed) instead of refusing the whole file.
    #[arg(long)]
    skip_invalid: bool,
    /// Wait for the job to finish, with a progress bar.
    #[arg(long)]
    wait: bool,
    #[command(flatten)]
    addr: CoordinatorAddr,
}

/// Most items per message.
const CHUNK_ITEMS: usize = 256;
/// Most bytes per message (encoded), well under the coordinator's 64 MiB limit.
const CHUNK_BYTES: usize = 4 << 20;
/// Largest single item: a message holds at least one item, and must stay under the limit.
const MAX_ITEM_BYTES: usize = 32 << 20;

/// Pass 1: every bad line, and how many items there are. Repeated ids are found in bounded
/// memory ([`crate::repeats`]), so checking a file of any size keeps a few MB.
fn check(args: &SubmitArgs) -> anyhow::Result<(Vec<Rejected>, usize)> {
    let mut reader = Reader::unchecked(&args.input)?;
    let (mut rejected, mut items) = (Vec::new(), 0usize);
    let mut seen = Seen::default();
    for p in reader.by_ref() {
        match p? {
            Parsed::Rejected(r) => rejected.push(r),
            Parsed::Item { line, item, text } => {
                let bytes = item_to_wire(&item).encoded_len();
                if bytes > MAX_ITEM_BYTES {
                    let error = format!("the item is {:.1} MiB, more than the {} MiB one message may carry", bytes as f64 / (1 << 20) as f64, MAX_ITEM_BYTES >> 20);
                    rejected.push(Rejected { line, id: Some(item.id), error, field: "(line)".into(), input: text });
                } else {
                    seen.add(hash64(&item.id), line, content_hash(&item)).context("checking the file for repeated ids")?;
                    items += 1;
                }
            }
        }
    }
    if reader.non_blank == 0 {
        return Err(no_items(&args.input));
    }
    let repeats = seen.repeats().context("checking the file for repeated ids")?;
    if !repeats.conflicts.is_empty() {
        // One more read, for the bad lines' ids and text (there are few, or the file is refused).
        let first: std::collections::HashMap<usize, usize> = repeats.conflicts.iter().copied().collect();
        for p in Reader::unchecked(&args.input)? {
            if let Parsed::Item { line, item, text } = p? {
                if let Some(f) = first.get(&line) {
                    let error = format!("field `id` repeats the id of line {f} with different content");
                    rejected.push(Rejected { line, id: Some(item.id), error, field: "id".into(), input: text });
                    items -= 1;
                }
            }
        }
        rejected.sort_by_key(|r| r.line);
    }
    Ok((rejected, items))
}

/// Concurrent SubmitItems streams of one submission: each message's round trips to
/// Postgres and Redis overlap with the next ones' instead of queueing behind them.
const STREAMS: usize = 4;

/// Pass 2, on a blocking thread: read the items again and send them in messages, dealt to
/// the streams in turn.
fn stream_items(input: PathBuf, job_id: String, rejected: std::collections::HashSet<usize>, txs: Vec<tokio::sync::mpsc::Sender<v1::SubmitItemsRequest>>) -> anyhow::Result<()> {
    // Every stream keeps the job open; the caller seals it once all of them are in.
    let empty = || v1::SubmitItemsRequest { job_id: job_id.clone(), items: Vec::new(), keep_open: true };
    let (mut msg, mut bytes, mut turn) = (empty(), 0usize, 0usize);
    let send = |msg: v1::SubmitItemsRequest, turn: &mut usize| -> bool {
        let i = *turn % txs.len();
        *turn += 1;
        txs[i].blocking_send(msg).is_ok()
    };
    // Checked in the first pass: exact repeats are simply sent again (the coordinator counts
    // them as already present), ids reused with other content are in `rejected`.
    for p in Reader::unchecked(&input)? {
        let Parsed::Item { line, item, .. } = p? else { continue };
        if rejected.contains(&line) {
            continue;
        }
        let wire = item_to_wire(&item);
        let size = wire.encoded_len();
        if !msg.items.is_empty() && (msg.items.len() >= CHUNK_ITEMS || bytes + size > CHUNK_BYTES) {
            if !send(std::mem::replace(&mut msg, empty()), &mut turn) {
                break; // a stream ended early; its error is reported by the caller
            }
            bytes = 0;
        }
        bytes += size;
        msg.items.push(wire);
    }
    if !msg.items.is_empty() {
        send(msg, &mut turn);
    }
    Ok(())
}

/// The line each of these ids was sent from (its first line not left out): the coordinator
/// names rejected items by id, and there are few of them, so one more read is cheaper than
/// keeping every item's line.
fn lines_of(input: &std::path::Path, ids: &std::collections::HashSet<String>, skipped: &std::collections::HashSet<usize>) -> anyhow::Result<std::collections::HashMap<String, usize>> {
    let mut lines = std::collections::HashMap::new();
    if ids.is_empty() {
        return Ok(lines);
    }
    for p in Reader::unchecked(input)? {
        if let Parsed::Item { line, item, .. } = p? {
            if !skipped.contains(&line) && ids.contains(&item.id) {
                lines.entry(item.id).or_insert(line);
            }
        }
    }
    Ok(lines)
}

pub async fn run(args: SubmitArgs) -> anyhow::Result<()> {
    if args.meta_rm.is_some() {
        anyhow::bail!("submit takes no --meta-rm: the meta reward model is a folder the judge's workers load (verdict worker --meta-rm DIR); choose meta-RM voting with --aggregation meta-rm");
    }
    let (rejected, n_items) = check(&args)?;
    for r in &rejected {
        if args.skip_invalid {
            note(format!("skipped: {r}"));
        }
    }
    if !args.skip_invalid {
        refuse_bad_lines(&args.input, &rejected, "submit the rest")?;
    }
    if n_items == 0 {
        anyhow::bail!("{}: every line was rejected, so there is nothing to submit", args.input.display());
    }
    let mut client = connect(&args.addr).await?;
    let job = match &args.job {
        Some(id) => client.jobs.get_job(v1::GetJobRequest { job_id: id.clone() }).await.map_err(status)?.into_inner(),
        None => {
            let judge = args.judge.clone().context("--judge is required to create a job")?;
            let spec = args.spec.spec(&judge, false)?;
            client
                .jobs
                .create_job(v1::CreateJobRequest { name: args.name.clone(), spec: Some(spec_to_wire(&spec)) })
                .await
                .map_err(status)?
                .into_inner()
        }
    };

    let skip: std::collections::HashSet<usize> = rejected.iter().map(|r| r.line).collect();
    // No more streams than messages: a stream with no message names no job.
    let streams = STREAMS.min(n_items.div_ceil(CHUNK_ITEMS)).max(1);
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..streams).map(|_| tokio::sync::mpsc::channel(2)).unzip();
    let reader = tokio::task::spawn_blocking({
        let (input, id, skip) = (args.input.clone(), job.id.clone(), skip.clone());
        move || stream_items(input, id, skip, txs)
    });
    let tasks: Vec<_> = rxs
        .into_iter()
        .map(|rx| {
            let mut jobs = client.jobs.clone();
            tokio::spawn(async move { jobs.submit_items(tokio_stream::wrappers::ReceiverStream::new(rx)).await })
        })
        .collect();
    let mut sent = Vec::with_capacity(tasks.len());
    for t in tasks {
        sent.push(t.await.context("a submitting task failed")?);
    }
    reader.await.context("the file reader failed")??;
    let broke_off = |e: &tonic::Status| {
        anyhow::anyhow!(
            "submitting to job {} broke off: {}; the items that arrived are kept: resume with `verdict submit {} --job {}` (items already in the job are skipped)",
            job.id,
            e.message(),
            args.input.display(),
            job.id
        )
    };
    let mut resp = v1::SubmitItemsResponse::default();
    for r in sent {
        let r = r.map_err(|e| broke_off(&e))?.into_inner();
        resp.deduplicated += r.deduplicated;
        resp.already_present += r.already_present;
        resp.rejected.extend(r.rejected);
    }
    // The coordinator's positions are per stream: name the rejected items by their lines.
    let ids = resp.rejected.iter().map(|e| e.item_id.clone()).collect();
    let lines = lines_of(&args.input, &ids, &skip)?;
    for e in &mut resp.rejected {
        e.index = lines.get(&e.item_id).copied().unwrap_or(0) as u64;
    }
    // Every stream is in: seal the job (unless more may come, as when resuming into it).
    let seal = v1::SubmitItemsRequest { job_id: job.id.clone(), items: Vec::new(), keep_open: false };
    let last = client.jobs.submit_items(tokio_stream::iter([seal])).await.map_err(|e| broke_off(&e))?.into_inner();
    resp.queued = last.queued;
    for r in &resp.rejected {
        note(format!("rejected: line {} (id {}): {}", r.index, r.item_id, r.message));
    }
    note(format!(
        "job {}: {} item(s) queued, {} answered from stored verdicts, {} already present, {} rejected",
        job.id,
        resp.queued,
        resp.deduplicated,
        resp.already_present,
        resp.rejected.len() + rejected.len()
    ));
    let now = client.jobs.get_job(v1::GetJobRequest { job_id: job.id.clone() }).await.map_err(status)?.into_inner();
    if let Some(w) = no_worker_warning(&now) {
        warn(w);
    }
    out(&job.id)?;
    if args.wait {
        watch_job(&mut client, &job.id).await?;
    }
    Ok(())
}
