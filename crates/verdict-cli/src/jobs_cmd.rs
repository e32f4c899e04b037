//! `verdict status` and `verdict watch`.

use std::time::{SystemTime, UNIX_EPOCH};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use tokio_stream::StreamExt;
use verdict_proto::v1;

use crate::client::{connect, status, Client, CoordinatorAddr};

#[derive(Args)]
pub struct StatusArgs {
    /// A job id; without one, the newest jobs and the live workers.
    job: Option<String>,
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

pub async fn status_cmd(args: StatusArgs) -> anyhow::Result<()> {
    let mut client = connect(&args.addr).await?;
    match args.job {
        Some(id) => {
            let j = client.jobs.get_job(v1::GetJobRequest { job_id: id }).await.map_err(status)?.into_inner();
            let spec = j.spec.clone().unwrap_or_default();
            println!("job      {}", j.id);
            println!("name     {}", j.name);
            println!("state    {}", state_name(j.state));
            println!("judge    {} (k={}, temperature={}, max_new_tokens={}, seed={})", spec.judge, spec.k, spec.temperature, spec.max_new_tokens, spec.seed);
            println!("created  {}", j.created_at);
            println!("progress {}", progress_line(&j));
        }
        None => {
            let jobs = client.jobs.list_jobs(v1::ListJobsRequest { page_size: 20, page_token: String::new() }).await.map_err(status)?.into_inner();
            println!("{:<36}  {:<10}  {:<20}  {:>8}  {:>8}  name", "job", "state", "judge", "done", "total");
            for j in &jobs.jobs {
                let p = j.progress.unwrap_or_default();
                let judge = j.spec.as_ref().map(|s| s.judge.clone()).unwrap_or_default();
                println!("{:<36}  {:<10}  {:<20}  {:>8}  {:>8}  {}", j.id, state_name(j.state), judge, p.done, p.total, j.name);
            }
            let workers = client.workers.list_workers(v1::ListWorkersRequest {}).await.map_err(status)?.into_inner();
            let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
            println!("\n{} live worker(s)", workers.workers.len());
            for w in &workers.workers {
                println!("  {:<40} judge {:<20} {:<8} {} in flight, seen {}s ago", w.worker_id, w.judge, w.device, w.in_flight, now.saturating_sub(w.seen_at));
            }
        }
    }
    Ok(())
}

/// Follow a job until it is done or cancelled, with a progress bar on stderr.
pub async fn watch_job(client: &mut Client, job_id: &str) -> anyhow::Result<()> {
    let mut stream = client.jobs.watch_job(v1::WatchJobRequest { job_id: job_id.to_string() }).await.map_err(status)?.into_inner();
    let bar = ProgressBar::new(0);
    bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} items  {per_sec}  ETA {eta}  {msg}").unwrap_or_else(|_| ProgressStyle::default_bar()));
    let mut last = None;
    while let Some(j) = stream.next().await {
        let j = j.map_err(status)?;
        let p = j.progress.unwrap_or_default();
        bar.set_length(p.total);
        bar.set_position(p.done + p.rejected + p.dead + p.cancelled);
        bar.set_message(state_name(j.state).to_string());
        last = Some(j);
    }
    bar.finish_and_clear();
    let j = last.ok_or_else(|| anyhow::anyhow!("the coordinator closed the watch without a word"))?;
    eprintln!("job {} {}: {}", j.id, state_name(j.state), progress_line(&j));
    Ok(())
}

pub async fn watch_cmd(args: WatchArgs) -> anyhow::Result<()> {
    let mut client = connect(&args.addr).await?;
    watch_job(&mut client, &args.job).await
}

pub async fn cancel_cmd(args: CancelArgs) -> anyhow::Result<()> {
    let mut client = connect(&args.addr).await?;
    let j = client.jobs.cancel_job(v1::CancelJobRequest { job_id: args.job }).await.map_err(status)?.into_inner();
    eprintln!("job {} {}: {}", j.id, state_name(j.state), progress_line(&j));
    Ok(())
}
