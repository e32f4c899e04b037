//! `verdict revote`: a job's verdicts at a smaller k, voted again over each item's first k
//! stored samples by the coordinator (no GPU), compared with the stored ones: how many
//! winners the extra samples changed, and what the ties and agreement were at k. `-o` writes
//! the re-voted records (each with its first k samples), as a run at k would have.

use std::path::PathBuf;

use clap::Args;
use tokio_stream::StreamExt;
use verdict_core::{Verdict, VerdictRecord};
use verdict_proto::convert::record_from_wire;
use verdict_proto::v1;

use crate::client::{connect, status, Client, CoordinatorAddr};
use crate::say::{note, out};
use crate::sink::{RowKind, RowSink};

#[derive(Args)]
pub struct RevoteArgs {
    /// The job.
    job: String,
    /// Vote over each item's first K stored samples (K ≤ the job's k).
    #[arg(long = "k", value_name = "K")]
    k: u32,
    /// On a job voted with a meta reward model: how many of the K samples it keeps (default:
    /// the job's own, if it fits, else K / 2).
    #[arg(long = "meta-rm-k", value_name = "K_META")]
    k_meta: Option<u32>,
    /// Write the re-voted records here (.jsonl or .parquet).
    #[arg(short, long)]
    output: Option<PathBuf>,
    #[command(flatten)]
    addr: CoordinatorAddr,
}

/// How the verdicts at k compare with the stored ones.
#[derive(Debug, Default)]
struct Comparison {
    items: u64,
    changed: u64,
    ties: (u64, u64),
    agreement: (f64, f64),
    margin: (f64, f64),
}

impl Comparison {
    fn add(&mut self, stored: &Verdict, at_k: &Verdict) {
        self.items += 1;
        self.changed += u64::from(stored.winner != at_k.winner);
        self.ties.0 += u64::from(stored.tie);
        self.ties.1 += u64::from(at_k.tie);
        self.agreement.0 += stored.agreement;
        self.agreement.1 += at_k.agreement;
        self.margin.0 += f64::from(stored.margin);
        self.margin.1 += f64::from(at_k.margin);
    }
}

/// A job's verdicts in item-id order, re-voted at `at` (or stored, with `None`).
async fn stream(client: &mut Client, job: &str, at: Option<(u32, Option<u32>)>, with_samples: bool) -> anyhow::Result<tonic::Streaming<v1::VerdictRecord>> {
    let req = v1::QueryVerdictsRequest {
        job_id: job.to_string(),
        without_samples: !with_samples,
        k: at.map(|a| a.0),
        k_meta: at.and_then(|a| a.1),
        ..Default::default()
    };
    Ok(client.verdicts.query_verdicts(req).await.map_err(status)?.into_inner())
}

fn record(r: Option<Result<v1::VerdictRecord, tonic::Status>>) -> anyhow::Result<Option<VerdictRecord>> {
    r.map(|r| record_from_wire(&r.map_err(status)?).map_err(|e| anyhow::anyhow!("the coordinator sent a bad record: {e}"))).transpose()
}

pub async fn run(args: RevoteArgs) -> anyhow::Result<()> {
    let mut client = connect(&args.addr).await?;
    let job = client.jobs.get_job(v1::GetJobRequest { job_id: args.job.clone() }).await.map_err(status)?.into_inner();
    let job_k = job.spec.as_ref().map_or(0, |s| s.k);
    let mut stored = stream(&mut client, &args.job, None, false).await?;
    let mut at_k = stream(&mut client, &args.job, Some((args.k, args.k_meta)), args.output.is_some()).await?;
    let mut sink = args.output.as_deref().map(|p| RowSink::open(Some(p), RowKind::Verdicts)).transpose()?;
    let mut cmp = Comparison::default();
    // Both streams are in item-id order over the same stored verdicts.
    while let Some(new) = record(at_k.next().await)? {
        let Some(old) = record(stored.next().await)? else { anyhow::bail!("the stored verdicts ended before the re-voted ones (item {})", new.id) };
        anyhow::ensure!(old.id == new.id, "the stored and re-voted verdicts went out of step at items {} and {}", old.id, new.id);
        cmp.add(&old.verdict, &new.verdict);
        if let Some(s) = sink.as_mut() {
            s.write(serde_json::to_value(&new)?)?;
        }
    }
    if let Some(s) = sink {
        let n = s.finish()?;
        note(format!("wrote {n} re-voted verdict(s) to {}", args.output.as_deref().map(|p| p.display().to_string()).unwrap_or_default()));
    }
    let n = cmp.items.max(1) as f64;
    out(format!("{} item(s) re-voted at k = {} (the job's k = {job_k})", cmp.items, args.k))?;
    out(format!("winner changed     {:>8}  ({:.1}%)", cmp.changed, 100.0 * cmp.changed as f64 / n))?;
    out(format!("ties               {:>8}  (k = {job_k}: {})", cmp.ties.1, cmp.ties.0))?;
    out(format!("mean agreement     {:>8.3}  (k = {job_k}: {:.3})", cmp.agreement.1 / n, cmp.agreement.0 / n))?;
    out(format!("mean margin        {:>8.2}  (k = {job_k}: {:.2})", cmp.margin.1 / n, cmp.margin.0 / n))?;
    Ok(())
}
