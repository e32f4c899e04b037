//! `verdict query` and `verdict export`: stored verdicts out, streamed to stdout or to a
//! file (JSONL, or Parquet by the `.parquet` extension; see [`crate::sink`]).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use serde_json::Value;
use tokio_stream::StreamExt;
use verdict_core::export::PromptForm;
use verdict_proto::convert::record_from_wire;
use verdict_proto::v1;

use crate::client::{connect, status, CoordinatorAddr};
use crate::say::{note, out};
use crate::sink::{RowKind, RowSink};

#[derive(Args)]
pub struct QueryArgs {
    /// The job to read.
    job: String,
    /// Only verdicts whose winner is this response index.
    #[arg(long)]
    winner: Option<u32>,
    /// Only verdicts whose winner leads the runner-up by at least this.
    #[arg(long)]
    min_margin: Option<u32>,
    /// Only ties (--ties true) or only decided items (--ties false).
    #[arg(long)]
    ties: Option<bool>,
    /// Only verdicts with at least this agreement (0..1).
    #[arg(long)]
    min_agreement: Option<f64>,
    /// Leave the samples out.
    #[arg(long)]
    without_samples: bool,
    /// Most verdicts (one page); the next page starts with --after and the id printed last.
    #[arg(long)]
    limit: Option<u64>,
    /// Start after this item id (paging, in item-id order).
    #[arg(long)]
    after: Option<String>,
    #[command(flatten)]
    at: AtKArgs,
    /// Print whole records as JSON lines instead of a table.
    #[arg(long)]
    json: bool,
    /// Output file (.jsonl or .parquet) for the whole records.
    #[arg(short, long)]
    output: Option<PathBuf>,
    #[command(flatten)]
    addr: CoordinatorAddr,
}

#[derive(Args)]
pub struct ExportArgs {
    /// The job to export.
    job: String,
    /// verdicts (whole records), dpo (prompt, chosen, rejected, margin: TRL's DPO columns) or rewards (one row per response).
    #[arg(long, default_value = "dpo", value_parser = ["verdicts", "dpo", "rewards"])]
    format: String,
    /// dpo: leave out pairs whose margin (chosen's summed score minus rejected's) is smaller.
    #[arg(long, default_value_t = 0)]
    min_margin: u32,
    /// dpo and rewards: TRL's standard form (strings) or conversational form (messages); auto is standard unless some prompt is a conversation.
    #[arg(long, default_value = "auto", value_parser = ["auto", "standard", "conversational"])]
    form: String,
    /// Export a job that is not done yet: what is stored now, without the items still missing.
    #[arg(long)]
    partial: bool,
    #[command(flatten)]
    at: AtKArgs,
    /// Output file: .parquet for Parquet, anything else for JSONL.
    #[arg(short, long)]
    output: PathBuf,
    #[command(flatten)]
    addr: CoordinatorAddr,
}

/// Verdicts at a smaller k than the job's, voted again over each item's first k samples.
#[derive(Args, Clone, Copy, Debug)]
pub struct AtKArgs {
    /// Vote again over each item's first K stored samples (K ≤ the job's k), as a run at K
    /// would have: no GPU, the same samples. Filters apply to those verdicts.
    #[arg(long = "k", value_name = "K")]
    pub k: Option<u32>,
    /// With --k, on a job voted with a meta reward model: how many of the K samples it keeps
    /// (default: the job's own, if it fits, else K / 2).
    #[arg(long = "meta-rm-k", value_name = "K_META", requires = "k")]
    pub k_meta: Option<u32>,
}

fn table_row(r: &verdict_core::VerdictRecord) -> String {
    let v = &r.verdict;
    let winner = v.winner.map(|w| w.to_string()).unwrap_or_else(|| "-".into());
    let summed: Vec<String> = v.summed.iter().map(u32::to_string).collect();
    format!("{:<24}  {:>6}  {:>6}  {:>5}  {:>5}  {:>9.2}  {}", r.id, winner, v.margin, if v.tie { "yes" } else { "no" }, v.valid, v.agreement, summed.join(","))
}

pub async fn query_cmd(args: QueryArgs) -> anyhow::Result<()> {
    let mut client = connect(&args.addr).await?;
    let req = v1::QueryVerdictsRequest {
        job_id: args.job.clone(),
        winner: args.winner,
        min_margin: args.min_margin,
        ties: args.ties,
        min_agreement: args.min_agreement,
        without_samples: args.without_samples,
        limit: args.limit.unwrap_or(0),
        after_item_id: args.after.clone().unwrap_or_default(),
        k: args.at.k,
        k_meta: args.at.k_meta,
    };
    let mut stream = client.verdicts.query_verdicts(req).await.map_err(status)?.into_inner();
    let table = args.output.is_none() && !args.json;
    let mut sink = if table { None } else { Some(RowSink::open(args.output.as_deref(), RowKind::Verdicts)?) };
    if table {
        out(format!("{:<24}  {:>6}  {:>6}  {:>5}  {:>5}  {:>9}  summed", "id", "winner", "margin", "tie", "valid", "agreement"))?;
    }
    let (mut n, mut last) = (0u64, None);
    while let Some(r) = stream.next().await {
        let record = record_from_wire(&r.map_err(status)?).map_err(|e| anyhow::anyhow!("the coordinator sent a bad record: {e}"))?;
        match &mut sink {
            Some(s) => s.write(serde_json::to_value(&record)?)?,
            None => out(table_row(&record))?,
        }
        n += 1;
        last = Some(record.id);
    }
    if let Some(s) = sink {
        s.finish()?;
    }
    note(format!("{n} verdict(s)"));
    if let (Some(limit), Some(last)) = (args.limit, last) {
        if n == limit {
            note(format!("more may follow: --after {last}"));
        }
    }
    Ok(())
}

fn form_of(w: i32) -> PromptForm {
    match v1::PromptForm::try_from(w).unwrap_or_default() {
        v1::PromptForm::Conversational => PromptForm::Conversational,
        _ => PromptForm::Standard,
    }
}

pub async fn export_cmd(args: ExportArgs) -> anyhow::Result<()> {
    let mut client = connect(&args.addr).await?;
    let format = match args.format.as_str() {
        "verdicts" => v1::ExportFormat::Verdicts,
        "rewards" => v1::ExportFormat::Rewards,
        _ => v1::ExportFormat::Dpo,
    };
    let form = match args.form.as_str() {
        "standard" => v1::PromptForm::Standard,
        "conversational" => v1::PromptForm::Conversational,
        _ => v1::PromptForm::Auto,
    };
    let req = v1::ExportJobRequest {
        job_id: args.job.clone(),
        format: format as i32,
        min_margin: args.min_margin,
        form: form as i32,
        partial: args.partial,
        k: args.at.k,
        k_meta: args.at.k_meta,
    };
    let mut stream = client.verdicts.export_job(req).await.map_err(status)?.into_inner();
    let kind = |f: PromptForm| match format {
        v1::ExportFormat::Dpo => RowKind::Dpo(f),
        v1::ExportFormat::Rewards => RowKind::Rewards(f),
        _ => RowKind::Verdicts,
    };
    // The rows say which form the coordinator chose; the file's schema follows the first.
    let mut sink: Option<RowSink> = None;
    while let Some(r) = stream.next().await {
        let r = r.map_err(status)?;
        let row: Value = serde_json::from_str(&r.json).context("the coordinator sent a row that is not JSON")?;
        if sink.is_none() {
            sink = Some(RowSink::open(Some(&args.output), kind(form_of(r.form)))?);
        }
        if let Some(s) = sink.as_mut() {
            s.write(row)?;
        }
    }
    let sink = match sink {
        Some(s) => s,
        None => {
            note(format!("no {} rows to export (no decided verdicts?)", args.format));
            let f = if form == v1::PromptForm::Conversational { PromptForm::Conversational } else { PromptForm::Standard };
            RowSink::open(Some(&args.output), kind(f))?
        }
    };
    let n = sink.finish()?;
    note(format!("wrote {n} {} row(s) to {}", args.format, args.output.display()));
    Ok(())
}
