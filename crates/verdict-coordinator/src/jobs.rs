//! The job service: create, submit items, get, list, cancel, watch.

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};
use uuid::Uuid;
use verdict_core::{ContentKey, Item};
use verdict_proto::convert::{item_from_wire, spec_from_wire, spec_to_wire};
use verdict_proto::v1::{self, job_service_server::JobService};
use verdict_queue::{valid_judge_name, QueuedItem};
use verdict_store::{JobRow, JobState, NewItem, Progress};

use crate::error::{job_id, CoordinatorError, Result};
use crate::server::Shared;

pub struct Jobs {
    pub shared: Shared,
}

pub fn job_to_wire(job: &JobRow, p: &Progress) -> v1::Job {
    let state = match job.state(p) {
        JobState::Open => v1::JobState::Open,
        JobState::Running => v1::JobState::Running,
        JobState::Done => v1::JobState::Done,
        JobState::Cancelled => v1::JobState::Cancelled,
    };
    v1::Job {
        id: job.id.to_string(),
        name: job.name.clone(),
        spec: Some(spec_to_wire(&job.spec)),
        state: state as i32,
        progress: Some(v1::JobProgress {
            total: p.total,
            queued: p.queued,
            done: p.done,
            rejected: p.rejected,
            dead: p.dead,
            deduplicated: p.deduplicated,
            cancelled: p.cancelled,
        }),
        created_at: job.created_at.to_rfc3339(),
    }
}

impl Shared {
    pub async fn job_with_progress(&self, id: Uuid) -> Result<v1::Job> {
        let job = self.store.get_job(id).await?;
        let p = self.store.progress(id).await?;
        Ok(job_to_wire(&job, &p))
    }

    /// Validate, store, dedup and enqueue one message's items.
    async fn submit_batch(&self, job: &JobRow, items: Vec<v1::Item>, first_index: u64, seen: &mut HashMap<String, String>, out: &mut v1::SubmitItemsResponse) -> Result<()> {
        let mut accepted: Vec<NewItem> = Vec::new();
        for (i, w) in items.into_iter().enumerate() {
            let index = first_index + i as u64;
            let reject = |field: &str, message: String, id: &str| v1::ItemError { index, item_id: id.to_string(), field: field.to_string(), message };
            match item_from_wire(&w) {
                Err(e) => out.rejected.push(reject(&e.field, e.to_string(), &w.id)),
                Ok(item) => {
                    let content = ContentKey::of_item(&item).hex();
                    match seen.get(&item.id) {
                        Some(c) if *c == content => out.already_present += 1,
                        Some(_) => out.rejected.push(reject("id", format!("field `id` {:?} repeats an earlier item of this stream with other content", item.id), &item.id)),
                        None => {
                            seen.insert(item.id.clone(), content);
                            accepted.push(NewItem { item_id: item.id.clone(), key: ContentKey::of(&item, &job.spec).hex(), item });
                        }
                    }
                }
            }
        }
        self.metrics.items_submitted.inc_by(accepted.len() as u64);
        let ids: Vec<String> = accepted.iter().map(|n| n.item_id.clone()).collect();
        let new = self.store.insert_items(job.id, &accepted).await?;
        out.already_present += (ids.len() - new.len()) as u64;
        let dedup = self.store.dedup(job.id, &new).await?;
        out.deduplicated += dedup.len() as u64;
        self.metrics.items_deduplicated.inc_by(dedup.len() as u64);
        // Enqueue the new items still queued, and any re-sent one that never got an entry
        // (an earlier attempt failed between the commit and the enqueue).
        let new_set: HashSet<&String> = new.iter().collect();
        let queued = self.store.still_queued(job.id, &ids).await?;
        let to_enqueue: Vec<(String, Item)> = queued
            .into_iter()
            .filter(|(id, _, entry)| new_set.contains(id) || entry.is_none())
            .map(|(id, item, _)| (id, item))
            .collect();
        self.enqueue(job, to_enqueue).await?;
        Ok(())
    }

    pub async fn enqueue(&self, job: &JobRow, items: Vec<(String, Item)>) -> Result<usize> {
        if items.is_empty() {
            return Ok(0);
        }
        let queued: Vec<QueuedItem> = items
            .iter()
            .map(|(_, item)| QueuedItem { job_id: job.id.to_string(), spec: job.spec.clone(), item: item.clone() })
            .collect();
        let entries = self.queue.enqueue(&job.judge, &queued).await?;
        let pairs: Vec<(String, String)> = items.iter().map(|(id, _)| id.clone()).zip(entries).collect();
        self.store.set_entry_ids(job.id, &pairs).await?;
        self.metrics.items_queued.inc_by(pairs.len() as u64);
        Ok(pairs.len())
    }
}

type JobStream = Pin<Box<dyn Stream<Item = Result<v1::Job, Status>> + Send>>;

#[tonic::async_trait]
impl JobService for Jobs {
    async fn create_job(&self, req: Request<v1::CreateJobRequest>) -> Result<Response<v1::Job>, Status> {
        let req = req.into_inner();
        let spec = req.spec.ok_or_else(|| CoordinatorError::Invalid("field `spec` is missing".into()))?;
        let spec = spec_from_wire(&spec).map_err(CoordinatorError::from)?;
        if !valid_judge_name(&spec.judge) {
            return Err(CoordinatorError::Invalid(format!("spec.judge {:?}: use letters, digits and . _ - @ / : (at most 128)", spec.judge)).into());
        }
        let job = self.shared.store.create_job(&req.name, &spec).await.map_err(CoordinatorError::from)?;
        tracing::info!(job = %job.id, judge = %spec.judge, name = %req.name, "job created");
        Ok(Response::new(job_to_wire(&job, &Progress::default())))
    }

    async fn submit_items(&self, req: Request<Streaming<v1::SubmitItemsRequest>>) -> Result<Response<v1::SubmitItemsResponse>, Status> {
        let mut stream = req.into_inner();
        let mut job: Option<JobRow> = None;
        let mut out = v1::SubmitItemsResponse::default();
        let mut seen = HashMap::new();
        let mut index = 0u64;
        let mut keep_open = false;
        while let Some(msg) = stream.next().await {
            let msg = msg?;
            let id = job_id(&msg.job_id)?;
            let current = match &job {
                Some(j) if j.id == id => j.clone(),
                Some(j) => return Err(CoordinatorError::Invalid(format!("job_id changed within one stream ({} then {id})", j.id)).into()),
                None => {
                    let j = self.shared.store.get_job(id).await.map_err(CoordinatorError::from)?;
                    if j.cancelled {
                        return Err(CoordinatorError::Precondition(format!("job {id} is cancelled")).into());
                    }
                    if j.sealed {
                        return Err(CoordinatorError::Precondition(format!("job {id} is sealed: its items are complete; create a new job")).into());
                    }
                    job = Some(j.clone());
                    j
                }
            };
            let n = msg.items.len() as u64;
            self.shared.submit_batch(&current, msg.items, index, &mut seen, &mut out).await?;
            index += n;
            keep_open = msg.keep_open;
        }
        let job = job.ok_or_else(|| CoordinatorError::Invalid("no message: a SubmitItems stream names its job_id".into()))?;
        if !keep_open {
            self.shared.store.seal_job(job.id).await.map_err(CoordinatorError::from)?;
        }
        self.shared.metrics.items_rejected.with_label_values(&["submit"]).inc_by(out.rejected.len() as u64);
        let p = self.shared.store.progress(job.id).await.map_err(CoordinatorError::from)?;
        out.queued = p.queued;
        out.job_id = job.id.to_string();
        tracing::info!(job = %job.id, received = index, queued = p.queued, deduplicated = out.deduplicated, rejected = out.rejected.len(), "items submitted");
        Ok(Response::new(out))
    }

    async fn get_job(&self, req: Request<v1::GetJobRequest>) -> Result<Response<v1::Job>, Status> {
        let id = job_id(&req.into_inner().job_id)?;
        Ok(Response::new(self.shared.job_with_progress(id).await?))
    }

    async fn list_jobs(&self, req: Request<v1::ListJobsRequest>) -> Result<Response<v1::ListJobsResponse>, Status> {
        let req = req.into_inner();
        let size = if req.page_size == 0 { 50 } else { req.page_size.min(1000) } as i64;
        let before = if req.page_token.is_empty() {
            None
        } else {
            let (ts, id) = req.page_token.split_once('/').ok_or_else(|| CoordinatorError::Invalid("page_token is not one this server issued".into()))?;
            let ts = chrono::DateTime::parse_from_rfc3339(ts).map_err(|_| CoordinatorError::Invalid("page_token is not one this server issued".into()))?;
            Some((ts.with_timezone(&chrono::Utc), job_id(id)?))
        };
        let rows = self.shared.store.list_jobs(size, before).await.map_err(CoordinatorError::from)?;
        let mut jobs = Vec::with_capacity(rows.len());
        for j in &rows {
            let p = self.shared.store.progress(j.id).await.map_err(CoordinatorError::from)?;
            jobs.push(job_to_wire(j, &p));
        }
        let next_page_token = match rows.last() {
            Some(last) if rows.len() as i64 == size => format!("{}/{}", last.created_at.to_rfc3339(), last.id),
            _ => String::new(),
        };
        Ok(Response::new(v1::ListJobsResponse { jobs, next_page_token }))
    }

    async fn cancel_job(&self, req: Request<v1::CancelJobRequest>) -> Result<Response<v1::Job>, Status> {
        let id = job_id(&req.into_inner().job_id)?;
        let job = self.shared.store.get_job(id).await.map_err(CoordinatorError::from)?;
        self.shared.store.cancel_job(id).await.map_err(CoordinatorError::from)?;
        self.shared.queue.cancel(&job.judge, &id.to_string()).await.map_err(CoordinatorError::from)?;
        tracing::info!(job = %id, "job cancelled");
        Ok(Response::new(self.shared.job_with_progress(id).await?))
    }

    type WatchJobStream = JobStream;

    async fn watch_job(&self, req: Request<v1::WatchJobRequest>) -> Result<Response<Self::WatchJobStream>, Status> {
        let id = job_id(&req.into_inner().job_id)?;
        let first = self.shared.job_with_progress(id).await?;
        let shared = self.shared.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let mut last = first;
            if tx.send(Ok(last.clone())).await.is_err() {
                return;
            }
            let terminal = |j: &v1::Job| j.state == v1::JobState::Done as i32 || j.state == v1::JobState::Cancelled as i32;
            while !terminal(&last) {
                tokio::time::sleep(Duration::from_millis(500)).await;
                match shared.job_with_progress(id).await {
                    Ok(j) if j != last => {
                        last = j;
                        if tx.send(Ok(last.clone())).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
}
