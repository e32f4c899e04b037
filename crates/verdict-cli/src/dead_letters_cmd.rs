//! `verdict dead-letters list|show|requeue`: items delivered too often without a result
//! (or queue entries that did not decode), and putting them back on the queue.

use clap::{Args, Subcommand};
use serde_json::json;
use verdict_proto::v1;

use crate::client::{connect, status, CoordinatorAddr};
use crate::say::{note, out, warn};

#[derive(Subcommand)]
pub enum DeadLettersCommand {
    /// List dead letters, oldest first.
    List(ListArgs),
    /// Show dead letters whole.
    Show(ShowArgs),
    /// Put dead items back on the queue (their delivery count starts again).
    Requeue(RequeueArgs),
}

#[derive(Args)]
pub struct ListArgs {
    /// Only this judge's (default: every judge's).
    #[arg(long)]
    judge: Option<String>,
    /// Only this job's.
    #[arg(long)]
    job: Option<String>,
    /// At most this many.
    #[arg(long, default_value_t = 100)]
    limit: u32,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    addr: CoordinatorAddr,
}

#[derive(Args)]
pub struct ShowArgs {
    /// Dead letter ids (as `list` prints them).
    #[arg(required = true)]
    ids: Vec<String>,
    /// The judge whose dead letters they are.
    #[arg(long)]
    judge: String,
    #[command(flatten)]
    addr: CoordinatorAddr,
}

#[derive(Args)]
pub struct RequeueArgs {
    /// Dead letter ids; or --all.
    ids: Vec<String>,
    /// The judge whose dead letters they are.
    #[arg(long)]
    judge: String,
    /// Every dead letter of the judge (of --job, if given) you may see.
    #[arg(long, conflicts_with = "ids")]
    all: bool,
    /// With --all: only this job's.
    #[arg(long, requires = "all")]
    job: Option<String>,
    #[command(flatten)]
    addr: CoordinatorAddr,
}

fn as_json(d: &v1::DeadLetter) -> serde_json::Value {
    json!({"id": d.id, "judge": d.judge, "entry_id": d.entry_id, "job_id": d.job_id, "item_id": d.item_id, "reason": d.reason, "deliveries": d.deliveries})
}

async fn list(judge: &str, job: &str, limit: u32, addr: &CoordinatorAddr) -> anyhow::Result<Vec<v1::DeadLetter>> {
    let mut client = connect(addr).await?;
    let req = v1::ListDeadLettersRequest { judge: judge.into(), job_id: job.into(), limit };
    Ok(client.jobs.list_dead_letters(req).await.map_err(status)?.into_inner().dead_letters)
}

pub async fn run(cmd: DeadLettersCommand) -> anyhow::Result<()> {
    match cmd {
        DeadLettersCommand::List(a) => {
            let dead = list(a.judge.as_deref().unwrap_or(""), a.job.as_deref().unwrap_or(""), a.limit, &a.addr).await?;
            if a.json {
                for d in &dead {
                    out(as_json(d).to_string())?;
                }
                return Ok(());
            }
            if dead.is_empty() {
                note("no dead letters");
            }
            for d in &dead {
                let what = if d.job_id.is_empty() { format!("entry {} (did not decode)", d.entry_id) } else { format!("job {} item {}", d.job_id, d.item_id) };
                out(format!("{}  {}  {what}  after {} deliveries: {}", d.id, d.judge, d.deliveries, d.reason))?;
            }
        }
        DeadLettersCommand::Show(a) => {
            // The dead letters of one judge, found by id among those the caller may see.
            let dead = list(&a.judge, "", 10_000, &a.addr).await?;
            for id in &a.ids {
                match dead.iter().find(|d| &d.id == id) {
                    Some(d) => out(serde_json::to_string_pretty(&as_json(d))?)?,
                    None => anyhow::bail!("dead letter {id} of judge {} not found (or not yours)", a.judge),
                }
            }
        }
        DeadLettersCommand::Requeue(a) => {
            anyhow::ensure!(a.all || !a.ids.is_empty(), "name dead letters to requeue, or pass --all");
            let mut client = connect(&a.addr).await?;
            let req = v1::RequeueDeadLettersRequest { judge: a.judge.clone(), ids: a.ids.clone(), all: a.all, job_id: a.job.clone().unwrap_or_default() };
            let r = client.jobs.requeue_dead_letters(req).await.map_err(status)?.into_inner();
            for s in &r.skipped {
                warn(format!("left as it was: {s}"));
            }
            note(format!("requeued {} item(s) of judge {}", r.requeued, a.judge));
        }
    }
    Ok(())
}
