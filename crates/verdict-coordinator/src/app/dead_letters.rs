//! Dead letters: listing them and putting their items back on the queue. A dead letter
//! keeps the payload its entry carried, so a requeue puts back exactly what died (an
//! extension's first sample included). The store says `queued` first, with no entry, so a
//! crash between the two steps leaves the item to the sweeper rather than lost.

use std::collections::HashMap;

use tonic::Status;
use uuid::Uuid;
use verdict_queue::{DeadLetter, QueuedItem};

use crate::auth::{Identity, Role};
use crate::error::CoordinatorError;
use crate::app::App;

/// The most dead letters one call lists.
const MOST: usize = 10_000;

/// Which dead letters to put back: those named in `ids`, or every one `all` that the caller
/// may see (of `job` if given).
#[derive(Debug, Default)]
pub struct Requeue {
    pub judge: String,
    pub job: Option<Uuid>,
    pub ids: Vec<String>,
    pub all: bool,
}

/// What a requeue did: how many went back, and each one left as it was, with why.
#[derive(Debug, Default)]
pub struct Requeued {
    pub requeued: u32,
    pub skipped: Vec<String>,
}

impl App {
    /// The judges a request names: one, or all the store knows.
    async fn judges_named(&self, judge: &str) -> Result<Vec<String>, Status> {
        if !judge.is_empty() {
            return Ok(vec![judge.to_string()]);
        }
        Ok(self.store.judges().await.map_err(CoordinatorError::from)?.into_iter().map(|j| j.name).collect())
    }

    /// Whether `who` may see a dead letter of `job` (its owner, or the admin); undecodable
    /// entries (no job) only the admin. Owners are looked up once per job.
    async fn may_see(&self, who: &Identity, job: &str, owners: &mut HashMap<String, Option<String>>) -> Result<bool, Status> {
        if who.role == Role::Admin {
            return Ok(true);
        }
        if job.is_empty() {
            return Ok(false);
        }
        if !owners.contains_key(job) {
            let owner = match Uuid::parse_str(job) {
                Ok(id) => self.store.get_job(id).await.ok().map(|j| j.owner),
                Err(_) => None,
            };
            owners.insert(job.to_string(), owner);
        }
        Ok(owners.get(job).cloned().flatten().is_some_and(|o| who.owns(&o)))
    }

    /// Dead letters `who` may see, with their judges, oldest first per judge, of `job` if given.
    pub async fn list_dead_letters(&self, who: &Identity, judge: &str, job: Option<Uuid>, limit: usize) -> Result<Vec<(String, DeadLetter)>, Status> {
        who.require(&[Role::Client], "read dead letters")?;
        let limit = if limit == 0 { 100 } else { limit.min(MOST) };
        let job = job.map(|j| j.to_string());
        let mut owners = HashMap::new();
        let mut out = Vec::new();
        for judge in self.judges_named(judge).await? {
            let mut after: Option<String> = None;
            'pages: loop {
                let page = self.queue.dead_letters(&judge, after.as_deref(), 500).await.map_err(CoordinatorError::from)?;
                let Some(last) = page.last() else { break };
                after = Some(last.id.clone());
                let full = page.len() == 500;
                for d in page {
                    if job.as_ref().is_some_and(|j| *j != d.job) || !self.may_see(who, &d.job, &mut owners).await? {
                        continue;
                    }
                    out.push((judge.clone(), d));
                    if out.len() == limit {
                        break 'pages;
                    }
                }
                if !full {
                    break;
                }
            }
            if out.len() == limit {
                break;
            }
        }
        Ok(out)
    }

    /// Put dead items back on the queue. Returns how many, and what was skipped and why.
    pub async fn requeue_dead_letters(&self, who: &Identity, req: Requeue) -> Result<Requeued, Status> {
        if req.judge.is_empty() {
            return Err(CoordinatorError::Invalid("field `judge` is empty: dead letters are kept per judge".into()).into());
        }
        let job = req.job;
        let letters: Vec<DeadLetter> = if req.all {
            self.list_dead_letters(who, &req.judge, job, MOST).await?.into_iter().map(|(_, d)| d).collect()
        } else {
            if req.ids.is_empty() {
                return Err(CoordinatorError::Invalid("name dead letters in `ids`, or set `all`".into()).into());
            }
            let found = self.queue.dead_letters_by_id(&req.judge, &req.ids).await.map_err(CoordinatorError::from)?;
            let mut owners = HashMap::new();
            let mut letters = Vec::new();
            for (id, d) in req.ids.iter().zip(found) {
                match d {
                    None => return Err(Status::not_found(format!("dead letter {id} of judge {} not found", req.judge))),
                    Some(d) if !self.may_see(who, &d.job, &mut owners).await? => {
                        return Err(Status::permission_denied(format!("dead letter {id} belongs to another client's job")));
                    }
                    Some(d) => letters.push(d),
                }
            }
            letters
        };
        let mut out = Requeued::default();
        for d in letters {
            match self.requeue_one(&req.judge, &d).await? {
                None => out.requeued += 1,
                Some(why) => out.skipped.push(format!("{}: {why}", d.id)),
            }
        }
        tracing::info!(judge = %req.judge, requeued = out.requeued, skipped = out.skipped.len(), by = %who.name, "dead letters requeued");
        Ok(out)
    }

    /// Requeue one dead letter; `Some(reason)` when it was left as it was.
    async fn requeue_one(&self, judge: &str, d: &DeadLetter) -> Result<Option<String>, Status> {
        let Ok(job_uuid) = Uuid::parse_str(&d.job) else {
            return Ok(Some("an entry that did not decode carries no item to requeue (the sweeper queues the item again from the store, if the store has it)".into()));
        };
        let job = self.store.get_job(job_uuid).await.map_err(CoordinatorError::from)?;
        if job.cancelled {
            return Ok(Some(format!("job {job_uuid} is cancelled")));
        }
        let Some(item) = self.store.requeue_dead(job_uuid, &d.item).await.map_err(CoordinatorError::from)? else {
            return Ok(Some(format!("item {} of job {job_uuid} is not dead (it has a verdict, or was requeued)", d.item)));
        };
        let payload = if d.payload.is_empty() {
            let q = QueuedItem { job_id: d.job.clone(), spec: job.spec.clone(), item, first_sample: 0 };
            serde_json::to_string(&q).map_err(|e| Status::internal(format!("item {}: {e}", d.item)))?
        } else {
            d.payload.clone()
        };
        let entry = self.queue.requeue_dead(judge, &d.id, &payload, &d.job, &d.item).await.map_err(CoordinatorError::from)?;
        self.store.set_entry_ids(job_uuid, &[(d.item.clone(), entry)]).await.map_err(CoordinatorError::from)?;
        self.metrics.items_queued.inc();
        Ok(None)
    }
}
