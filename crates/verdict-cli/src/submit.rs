//! `verdict submit`: create a job from a dataset, stream its items to the coordinator, and
//! optionally wait for it with a progress bar.

use std::path::PathBuf;

use clap::Args;
use verdict_core::Aggregation;
use verdict_proto::convert::{item_to_wire, spec_to_wire};
use verdict_proto::v1;

use crate::client::{connect, status, CoordinatorAddr};
use crate::input::read_dataset;
use crate::jobs_cmd::watch_job;
use crate::spec_args::SpecArgs;

#[derive(Args)]
pub struct SubmitArgs {
    /// Input JSONL or Parquet, in the same shapes as `verdict label`.
    input: PathBuf,
    /// The judge model's name: workers started with the same --judge take the items.
    #[arg(long, env = "VERDICT_JUDGE")]
    judge: String,
    /// A name to find the job by.
    #[arg(long, default_value = "")]
    name: String,
    #[command(flatten)]
    spec: SpecArgs,
    /// Meta reward model name; switches aggregation to meta-RM voting.
    #[arg(long)]
    meta_rm: Option<String>,
    /// Leave bad lines out (they are listed) instead of refusing the whole file.
    #[arg(long)]
    skip_invalid: bool,
    /// Wait for the job to finish, with a progress bar.
    #[arg(long)]
    wait: bool,
    #[command(flatten)]
    addr: CoordinatorAddr,
}

const CHUNK: usize = 256;

pub async fn run(args: SubmitArgs) -> anyhow::Result<()> {
    let dataset = read_dataset(&args.input)?;
    for r in &dataset.rejected {
        eprintln!("{}: {r}", if args.skip_invalid { "skipped" } else { "error" });
    }
    if !dataset.rejected.is_empty() && !args.skip_invalid {
        anyhow::bail!("{} bad line(s) in {}; fix them, or pass --skip-invalid to submit the rest", dataset.rejected.len(), args.input.display());
    }
    let mut spec = args.spec.spec(&args.judge);
    if let Some(m) = &args.meta_rm {
        spec.aggregation = Aggregation::MetaRm { k_meta: args.spec.k_meta };
        spec.meta_rm = Some(m.clone());
    }
    spec.validate()?;
    let mut client = connect(&args.addr).await?;
    let job = client
        .jobs
        .create_job(v1::CreateJobRequest { name: args.name.clone(), spec: Some(spec_to_wire(&spec)) })
        .await
        .map_err(status)?
        .into_inner();
    let lines: Vec<usize> = dataset.items.iter().map(|(l, _)| *l).collect();
    let messages: Vec<v1::SubmitItemsRequest> = dataset
        .items
        .chunks(CHUNK)
        .map(|c| v1::SubmitItemsRequest { job_id: job.id.clone(), items: c.iter().map(|(_, i)| item_to_wire(i)).collect(), keep_open: false })
        .collect();
    let resp = client.jobs.submit_items(tokio_stream::iter(messages)).await.map_err(status)?.into_inner();
    for r in &resp.rejected {
        let line = lines.get(r.index as usize).copied().unwrap_or(0);
        eprintln!("rejected: line {line} (id {}): {}", r.item_id, r.message);
    }
    eprintln!(
        "job {}: {} item(s) queued, {} answered from stored verdicts, {} already present, {} rejected",
        job.id,
        resp.queued,
        resp.deduplicated,
        resp.already_present,
        resp.rejected.len()
    );
    println!("{}", job.id);
    if args.wait {
        watch_job(&mut client, &job.id).await?;
    }
    Ok(())
}
