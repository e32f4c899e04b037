//! `verdict report`: a judge's telemetry over a job (counted by the coordinator, next to the
//! data) or over a file `verdict label` wrote (counted here), printed and written as one
//! self-contained HTML page with SVG charts.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use verdict_core::VerdictRecord;
use verdict_proto::v1;
use verdict_report::{render_html, render_text, Report};

use crate::client::{connect, status, CoordinatorAddr};
use crate::say::{note, out};
use crate::sink::is_parquet;

#[derive(Args)]
pub struct ReportArgs {
    /// A job id, or a file `verdict label` wrote (.jsonl or .parquet).
    source: String,
    /// Where the HTML report goes (default: report-JOB.html, or FILE.report.html beside a file).
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// Print the counts as JSON (the coordinator's JobTelemetry form) instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    addr: CoordinatorAddr,
}

/// Count every record of a label output. A record that cannot be read is an error naming
/// its line: a report that silently skipped records would misstate every rate.
fn file_report(path: &Path) -> anyhow::Result<Report> {
    let mut report = Report::new(path.display().to_string());
    let mut add = |n: usize, line: &str| -> anyhow::Result<()> {
        if line.trim().is_empty() {
            return Ok(());
        }
        let r: VerdictRecord = serde_json::from_str(line).with_context(|| format!("{} record {n} is not a verdict record", path.display()))?;
        report.add(&r);
        Ok(())
    };
    if is_parquet(path) {
        for (n, row) in crate::tabular::parquet_rows(path)?.enumerate() {
            add(n + 1, &row?)?;
        }
    } else {
        let file = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
        for (n, line) in BufReader::new(file).lines().enumerate() {
            add(n + 1, &line.with_context(|| format!("cannot read {}", path.display()))?)?;
        }
    }
    Ok(report)
}

async fn job_report(job: &str, addr: &CoordinatorAddr) -> anyhow::Result<Report> {
    let mut client = connect(addr).await?;
    let r = client.verdicts.job_telemetry(v1::JobTelemetryRequest { job_id: job.to_string() }).await.map_err(status)?.into_inner();
    serde_json::from_str(&r.json).context("the coordinator sent telemetry this client cannot read")
}

pub async fn run(args: ReportArgs) -> anyhow::Result<()> {
    let as_file = Path::new(&args.source);
    let (report, default_html) = if as_file.is_file() {
        let mut html = as_file.as_os_str().to_owned();
        html.push(".report.html");
        (file_report(as_file)?, PathBuf::from(html))
    } else {
        (job_report(&args.source, &args.addr).await?, PathBuf::from(format!("report-{}.html", args.source)))
    };
    if args.json {
        out(serde_json::to_string(&report)?)?;
    } else {
        out(render_text(&report).trim_end())?;
    }
    let html = args.html.unwrap_or(default_html);
    std::fs::write(&html, render_html(&report)).with_context(|| format!("cannot write {}", html.display()))?;
    note(format!("report written to {}", html.display()));
    Ok(())
}
