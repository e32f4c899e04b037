//! `verdict query` and `verdict export`: stored verdicts out, as JSONL (stdout or file) or
//! Parquet (by the `.parquet` extension).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use serde_json::Value;
use tokio_stream::StreamExt;
use verdict_core::export::prompt_messages;
use verdict_core::Prompt;
use verdict_proto::convert::record_from_wire;
use verdict_proto::v1;

use crate::client::{connect, status, CoordinatorAddr};

#[derive(Args)]
pub struct QueryArgs {
    /// The job to read.
    job: String,
    /// Only verdicts whose winner is this response index.
    #[arg(long)]
    winner: Option<u32>,
    /// Only verdicts with at least this margin.
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
    /// Most verdicts.
    #[arg(long)]
    limit: Option<u64>,
    /// Output file (.jsonl or .parquet); stdout when absent.
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
    /// dpo: leave out items whose winner leads by less than this.
    #[arg(long, default_value_t = 0)]
    min_margin: u32,
    /// Output file: .parquet for Parquet, anything else for JSONL.
    #[arg(short, long)]
    output: PathBuf,
    #[command(flatten)]
    addr: CoordinatorAddr,
}

fn is_parquet(p: &std::path::Path) -> bool {
    p.extension().is_some_and(|e| e.eq_ignore_ascii_case("parquet"))
}

/// Parquet wants one type per column: when any prompt is a conversation, every prompt is
/// written as messages, and chosen/rejected as one assistant message (TRL's conversational
/// format); otherwise all stay strings.
fn uniform_prompts(rows: &mut [Value]) {
    let conversational = rows.iter().any(|r| r.get("prompt").is_some_and(Value::is_array));
    if !conversational {
        return;
    }
    for r in rows.iter_mut() {
        let Some(obj) = r.as_object_mut() else { continue };
        if let Some(Value::String(p)) = obj.get("prompt") {
            let msgs = prompt_messages(&Prompt::Text(p.clone()));
            obj.insert("prompt".into(), serde_json::to_value(msgs).unwrap_or(Value::Null));
        }
        for k in ["chosen", "rejected", "response"] {
            if let Some(Value::String(t)) = obj.get(k) {
                let v = serde_json::json!([{"role": "assistant", "content": t}]);
                obj.insert(k.into(), v);
            }
        }
    }
}

fn write_rows(output: Option<&std::path::Path>, mut rows: Vec<Value>) -> anyhow::Result<usize> {
    let n = rows.len();
    match output {
        Some(p) if is_parquet(p) => {
            uniform_prompts(&mut rows);
            crate::tabular::write_parquet(p, &rows)?;
        }
        Some(p) => {
            let mut f = std::io::BufWriter::new(std::fs::File::create(p).with_context(|| format!("cannot write {}", p.display()))?);
            for r in &rows {
                serde_json::to_writer(&mut f, r)?;
                f.write_all(b"\n")?;
            }
            f.flush()?;
        }
        None => {
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            for r in &rows {
                serde_json::to_writer(&mut out, r)?;
                out.write_all(b"\n")?;
            }
        }
    }
    Ok(n)
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
        after_item_id: String::new(),
    };
    let mut stream = client.verdicts.query_verdicts(req).await.map_err(status)?.into_inner();
    let mut rows = Vec::new();
    while let Some(r) = stream.next().await {
        let r = r.map_err(status)?;
        let record = record_from_wire(&r).map_err(|e| anyhow::anyhow!("the coordinator sent a bad record: {e}"))?;
        rows.push(serde_json::to_value(&record)?);
    }
    let n = write_rows(args.output.as_deref(), rows)?;
    eprintln!("{n} verdict(s)");
    Ok(())
}

pub async fn export_cmd(args: ExportArgs) -> anyhow::Result<()> {
    let mut client = connect(&args.addr).await?;
    let format = match args.format.as_str() {
        "verdicts" => v1::ExportFormat::Verdicts,
        "rewards" => v1::ExportFormat::Rewards,
        _ => v1::ExportFormat::Dpo,
    };
    let req = v1::ExportJobRequest { job_id: args.job.clone(), format: format as i32, min_margin: args.min_margin };
    let mut stream = client.verdicts.export_job(req).await.map_err(status)?.into_inner();
    let mut rows = Vec::new();
    while let Some(r) = stream.next().await {
        let r = r.map_err(status)?;
        rows.push(serde_json::from_str::<Value>(&r.json).context("the coordinator sent a row that is not JSON")?);
    }
    if rows.is_empty() {
        eprintln!("no rows to export (no decided verdicts yet?)");
    }
    let n = if rows.is_empty() && is_parquet(&args.output) { 0 } else { write_rows(Some(&args.output), rows)? };
    eprintln!("wrote {n} {} row(s) to {}", args.format, args.output.display());
    Ok(())
}
