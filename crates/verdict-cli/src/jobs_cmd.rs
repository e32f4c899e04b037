//! `verdict status`, `verdict watch`, `verdict cancel` and `verdict extend`.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Args;
use serde_json::json;
use tokio_stream::StreamExt;
use verdict_proto::v1;

use crate::client::{connect, status, Client, CoordinatorAddr};
use crate::say::{note, out, progress_bar, warn};

#[derive(Args)]
pub struct StatusArgs {
    /// A job id; without one, the newest jobs, the judges and the live workers.
    job: Option<String>,
    /// Print JSON (one object) instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    addr: CoordinatorAddr,
}

#[derive(Args)]
pub struct CancelArgs {
    /// The job to cancel: its queued items are dropped; stored verdicts stay.
    job: String,
    #[command(flatten)]
    addr: CoordinatorAddr,
}

#[derive(Args)]
pub struct ExtendArgs {
    /// The finished job whose k to raise.
    job: String,
    /// The new samples per item: only each item's missing samples (its k up to K) are made,
    /// and they are those a fresh run at K makes. The job's own k again finishes an extension
    /// that was cut off.
    #[arg(long = "k", value_name = "K")]
    k: u32,
    /// Return once the new samples are queued, without following the job.
    #[arg(long)]
    no_wait: bool,
    #[command(flatten)]
    addr: CoordinatorAddr,
}

#[derive(Args)]
pub struct WatchArgs {
    /// The job to watch until it is done.
    job: String,
    #[command(flatten)]
    addr: CoordinatorAddr,
}

fn state_name(s: i32) -> &'static str {
    match v1::JobState::try_from(s).unwrap_or_default() {
        v1::JobState::Open => "open",
        v1::JobState::Running => "running",
        v1::JobState::Done => "done",
        v1::JobState::Cancelled => "cancelled",
        v1::JobState::Unspecified => "?",
    }
}

fn progress_line(j: &v1::Job) -> String {
    let p = j.progress.unwrap_or_default();
    format!(
        "{} done / {} total ({} queued, {} deduplicated, {} rejected, {} dead, {} cancelled)",
        p.done, p.total, p.queued, p.deduplicated, p.rejected, p.dead, p.cancelled
    )
}

fn judge_of(j: &v1::Job) -> String {
    j.spec.as_ref().map(|s| s.judge.clone()).unwrap_or_default()
}

/// The warning for a job whose items wait for a judge nobody serves.
pub fn no_worker_warning(j: &v1::Job) -> Option<String> {
    let p = j.progress.unwrap_or_default();
    let waiting = matches!(v1::JobState::try_from(j.state).unwrap_or_default(), v1::JobState::Open | v1::JobState::Running) && p.queued > 0;
    (waiting && j.live_workers == Some(0)).then(|| {
        let judge = judge_of(j);
        format!("no live worker serves judge {judge}: the job's {} queued item(s) wait until one starts (verdict worker --judge {judge} --model DIR)", p.queued)
    })
}

fn job_json(j: &v1::Job) -> serde_json::Value {
    let p = j.progress.unwrap_or_default();
    let s = j.spec.clone().unwrap_or_default();
    json!({
        "id": j.id, "name": j.name, "state": state_name(j.state), "created_at": j.created_at,
        "judge": s.judge, "k": s.k, "temperature": s.temperature, "max_new_tokens": s.max_new_tokens, "seed": s.seed,
        "live_workers": j.live_workers, "note": j.note,
        "progress": {"total": p.total, "queued": p.queued, "done": p.done, "rejected": p.rejected, "dead": p.dead, "deduplicated": p.deduplicated, "cancelled": p.cancelled},
    })
}

fn short(fp: &str) -> &str {
    &fp[..fp.len().min(12)]
}

pub async fn status_cmd(args: StatusArgs) -> anyhow::Result<()> {
    let mut client = connect(&args.addr).await?;
    match args.job {
        Some(id) => {
            let j = client.jobs.get_job(v1::GetJobRequest { job_id: id }).await.map_err(status)?.into_inner();
            if args.json {
                return Ok(out(job_json(&j))?);
            }
            let spec = j.spec.clone().unwrap_or_default();
            out(format!("job      {}", j.id))?;
            out(format!("name     {}", j.name))?;
            out(format!("state    {}", state_name(j.state)))?;
            out(format!("judge    {} (k={}, temperature={}, max_new_tokens={}, seed={})", spec.judge, spec.k, spec.temperature, spec.max_new_tokens, spec.seed))?;
            out(format!("workers  {} live for judge {}", j.live_workers.map(|n| n.to_string()).unwrap_or_else(|| "? (queue unreachable)".into()), spec.judge))?;
            out(format!("created  {}", j.created_at))?;
            out(format!("progress {}", progress_line(&j)))?;
            if !j.note.is_empty() {
                out(format!("note     {}", j.note))?;
            }
            if let Some(w) = no_worker_warning(&j) {
                warn(w);
            }
        }
        None => {
            let jobs = client.jobs.list_jobs(v1::ListJobsRequest { page_size: 20, page_token: String::new() }).await.map_err(status)?.into_inner();
            let judges = client.workers.list_judges(v1::ListJudgesRequest {}).await.map_err(status)?.into_inner();
            let workers = client.workers.list_workers(v1::ListWorkersRequest {}).await.map_err(status)?.into_inner();
            let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
            if args.json {
                return Ok(out(json!({
                    "jobs": jobs.jobs.iter().map(job_json).collect::<Vec<_>>(),
                    "judges": judges.judges.iter().map(|j| json!({
                        "name": j.name, "fingerprint": j.fingerprint, "meta_fingerprint": j.meta_fingerprint,
                        "context_length": j.context_length, "bound_at": j.bound_at, "live_workers": j.live_workers,
                    })).collect::<Vec<_>>(),
                    "workers": workers.workers.iter().map(|w| json!({
                        "id": w.worker_id, "judge": w.judge, "device": w.device, "in_flight": w.in_flight,
                        "fingerprint": w.fingerprint, "meta_fingerprint": w.meta_fingerprint, "seen_s_ago": now.saturating_sub(w.seen_at),
                        "generated_tokens": w.generated_tokens, "tokens_per_second": w.tokens_per_second,
                    })).collect::<Vec<_>>(),
                }))?);
            }
            out(format!("{:<36}  {:<10}  {:<20}  {:>8}  {:>8}  {:>7}  name", "job", "state", "judge", "done", "total", "workers"))?;
            for j in &jobs.jobs {
                let p = j.progress.unwrap_or_default();
                let live = j.live_workers.map(|n| n.to_string()).unwrap_or_else(|| "?".into());
                out(format!("{:<36}  {:<10}  {:<20}  {:>8}  {:>8}  {:>7}  {}", j.id, state_name(j.state), judge_of(j), p.done, p.total, live, j.name))?;
            }
            out(format!("\n{} judge(s)", judges.judges.len()))?;
            for j in &judges.judges {
                let meta = j.meta_fingerprint.as_deref().map(|m| format!(" + meta RM {}", short(m))).unwrap_or_default();
                out(format!("  {:<24} weights {}{meta}, {} live worker(s), bound since {}", j.name, short(&j.fingerprint), j.live_workers, j.bound_at))?;
            }
            out(format!("\n{} live worker(s)", workers.workers.len()))?;
            for w in &workers.workers {
                out(format!(
                    "  {:<40} judge {:<20} weights {} {:<8} {} in flight, {:.0} tok/s, seen {}s ago",
                    w.worker_id,
                    w.judge,
                    short(&w.fingerprint),
                    w.device,
                    w.in_flight,
                    w.tokens_per_second,
                    now.saturating_sub(w.seen_at)
                ))?;
            }
        }
    }
    Ok(())
}

/// Follow a job until it is done or cancelled, with a progress bar on stderr.
/// Whether a watch broke because the coordinator went away (a restart, a network blip), so
/// watching again will do, rather than because of the request.
fn coordinator_gone(e: &tonic::Status) -> bool {
    use tonic::Code::*;
    matches!(e.code(), Unavailable | Unknown | Cancelled | DeadlineExceeded | Aborted | Internal)
}

/// How long a watch keeps reconnecting to a coordinator that is away.
const RECONNECT_FOR: Duration = Duration::from_secs(600);

pub async fn watch_job(client: &mut Client, job_id: &str) -> anyhow::Result<()> {
    let bar = progress_bar(0);
    let mut last: Option<v1::Job> = None;
    let mut warned = false;
    // Since when the coordinator has been away, if it is.
    let mut away: Option<Instant> = None;
    loop {
        let mut stream = match client.jobs.watch_job(v1::WatchJobRequest { job_id: job_id.to_string() }).await {
            Ok(s) => s.into_inner(),
            Err(e) if coordinator_gone(&e) => {
                reconnect_pause(&bar, &mut away, &e).await?;
                continue;
            }
            Err(e) => return Err(status(e)),
        };
        let mut broke = None;
        while let Some(j) = stream.next().await {
            let j = match j {
                Ok(j) => j,
                Err(e) => {
                    broke = Some(e);
                    break;
                }
            };
            away = None;
            let p = j.progress.unwrap_or_default();
            bar.set_length(p.total);
            bar.set_position(p.done + p.rejected + p.dead + p.cancelled);
            match no_worker_warning(&j) {
                Some(w) => {
                    bar.set_message(format!("{}, no live worker", state_name(j.state)));
                    if !warned {
                        bar.suspend(|| warn(&w));
                        warned = true;
                    }
                }
                None => bar.set_message(state_name(j.state).to_string()),
            }
            last = Some(j);
        }
        match broke {
            None => break,
            Some(e) if coordinator_gone(&e) => reconnect_pause(&bar, &mut away, &e).await?,
            Some(e) => return Err(status(e)),
        }
    }
    bar.finish_and_clear();
    let j = last.ok_or_else(|| anyhow::anyhow!("the coordinator closed the watch without a word"))?;
    note(format!("job {} {}: {}", j.id, state_name(j.state), progress_line(&j)));
    Ok(())
}

/// Wait before watching again; give up once the coordinator has been away too long.
async fn reconnect_pause(bar: &indicatif::ProgressBar, away: &mut Option<Instant>, e: &tonic::Status) -> anyhow::Result<()> {
    let since = *away.get_or_insert_with(Instant::now);
    if since.elapsed() > RECONNECT_FOR {
        return Err(anyhow::anyhow!("the coordinator has been unreachable for {} s: {}", RECONNECT_FOR.as_secs(), e.message()));
    }
    if since.elapsed() < Duration::from_millis(100) {
        bar.suspend(|| warn(format!("lost the coordinator ({}); reconnecting", e.message())));
    }
    bar.set_message("reconnecting");
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(())
}

pub async fn watch_cmd(args: WatchArgs) -> anyhow::Result<()> {
    let mut client = connect(&args.addr).await?;
    watch_job(&mut client, &args.job).await
}

pub async fn extend_cmd(args: ExtendArgs) -> anyhow::Result<()> {
    let mut client = connect(&args.addr).await?;
    let r = client.jobs.extend_job(v1::ExtendJobRequest { job_id: args.job.clone(), k: args.k }).await.map_err(status)?.into_inner();
    note(format!("job {}: k = {}; new samples queued for {} item(s), {} left as they are", args.job, args.k, r.queued, r.unchanged));
    if args.no_wait || r.queued == 0 {
        return Ok(());
    }
    watch_job(&mut client, &args.job).await
}

pub async fn cancel_cmd(args: CancelArgs) -> anyhow::Result<()> {
    let mut client = connect(&args.addr).await?;
    let j = client.jobs.cancel_job(v1::CancelJobRequest { job_id: args.job }).await.map_err(status)?.into_inner();
    note(format!("job {} {}: {}", j.id, state_name(j.state), progress_line(&j)));
    Ok(())
}
