//! The job service: create, submit items, get, list, cancel, watch.

use std::collections::HashMap;
use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};
use uuid::Uuid;
use verdict_core::{ContentKey, Fingerprints, Item};
use verdict_proto::convert::{item_from_wire, spec_from_wire, spec_to_wire};
use verdict_proto::v1::{self, job_service_server::JobService};
use verdict_queue::{valid_judge_name, QueuedItem};
use verdict_store::{Inserted, JobRow, JobState, NewItem, Progress, StoreError};

use crate::auth::{caller, Identity, Role};
use crate::error::{data_error, job_id, CoordinatorError, Result};
use crate::server::Shared;
use crate::workers::{unix_now, WORKER_TTL};

pub struct Jobs {
    pub shared: Shared,
}

pub fn job_to_wire(job: &JobRow, p: &Progress, live_workers: Option<u64>) -> v1::Job {
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
        live_workers: live_workers.map(|n| n.min(u32::MAX as u64) as u32),
        note: job.note.clone(),
    }
}

impl Shared {
    /// Workers of `judge` heard from within their heartbeat TTL; `None` when Redis cannot
    /// be asked (a job's progress lives in Postgres and is still worth showing).
    pub async fn live_workers(&self, judge: &str) -> Option<u64> {
        match self.queue.live_workers(judge, WORKER_TTL, unix_now()).await {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::warn!(judge, error = %e, "cannot count the judge's live workers");
                None
            }
        }
    }

    /// The job, if `who` may see and change it: a client its own jobs, the admin any.
    /// NOT_FOUND for no such job, PERMISSION_DENIED for another client's.
    pub async fn owned_job(&self, who: &Identity, id: Uuid) -> Result<JobRow, Status> {
        who.require(&[Role::Client], "read or change jobs")?;
        let job = self.store.get_job(id).await.map_err(CoordinatorError::from)?;
        who.check_owner(id, &job.owner)?;
        Ok(job)
    }

    pub async fn job_with_progress(&self, id: Uuid) -> Result<v1::Job> {
        let job = self.store.get_job(id).await?;
        let p = self.store.progress(id).await?;
        let live = self.live_workers(&job.judge).await;
        Ok(job_to_wire(&job, &p, live))
    }

    /// The weights new items of `judge` are keyed with: those the name is bound to, or none
    /// yet (then nothing stored can match, and no item is answered from the store).
    pub async fn judge_weights(&self, judge: &str) -> Result<Fingerprints> {
        Ok(self.store.judge(judge).await?.map(|j| j.fingerprints).unwrap_or_default())
    }

    /// Validate, store, dedup and enqueue one message's items.
    async fn submit_batch(&self, job: &JobRow, weights: &Fingerprints, items: Vec<v1::Item>, first_index: u64, out: &mut v1::SubmitItemsResponse) -> Result<()> {
        // The message's good items, and each one's position in the stream.
        let (mut accepted, mut indexes): (Vec<NewItem>, Vec<u64>) = (Vec::new(), Vec::new());
        // Repeats within this message; repeats of earlier messages are found in the store.
        let mut seen: HashMap<String, String> = HashMap::new();
        for (i, w) in items.into_iter().enumerate() {
            let index = first_index + i as u64;
            let reject = |field: &str, message: String, id: &str| v1::ItemError { index, item_id: id.to_string(), field: field.to_string(), message };
            match item_from_wire(&w) {
                Err(e) => out.rejected.push(reject(&e.field, e.to_string(), &w.id)),
                Ok(item) => {
                    let content = ContentKey::of_item(&item).hex();
                    match seen.get(&item.id) {
                        Some(c) if *c == content => out.already_present += 1,
                        Some(_) => out.rejected.push(reject("id", format!("field `id` {:?} repeats an earlier item of this job with other content", item.id), &item.id)),
                        None => {
                            seen.insert(item.id.clone(), content.clone());
                            let key = ContentKey::of(&item, &job.spec, weights).hex();
                            accepted.push(NewItem { item_id: item.id.clone(), key, content, item });
                            indexes.push(index);
                        }
                    }
                }
            }
        }
        self.metrics.items_submitted.inc_by(accepted.len() as u64);
        let outcome = self.insert_isolating(job, &accepted, &indexes, out).await?;
        let mut new_ids = Vec::new();
        let mut resend = Vec::new();
        let by_id: HashMap<&str, (&NewItem, u64)> = accepted.iter().zip(&indexes).map(|(a, &i)| (a.item_id.as_str(), (a, i))).collect();
        for (id, o) in outcome {
            match o {
                Inserted::New => new_ids.push(id),
                Inserted::Present { queued, has_entry } => {
                    out.already_present += 1;
                    // A re-sent item whose first enqueue failed after its commit.
                    if queued && !has_entry {
                        resend.push(id);
                    }
                }
                Inserted::Conflict => {
                    let index = by_id.get(id.as_str()).map(|a| a.1).unwrap_or(first_index);
                    out.rejected.push(v1::ItemError {
                        index,
                        item_id: id.clone(),
                        field: "id".into(),
                        message: format!("field `id` {id:?} repeats an earlier item of this job with other content"),
                    });
                }
            }
        }
        let dedup = self.store.dedup(job.id, &new_ids).await?;
        out.deduplicated += dedup.len() as u64;
        self.metrics.items_deduplicated.inc_by(dedup.len() as u64);
        let answered: std::collections::HashSet<&String> = dedup.iter().collect();
        let to_enqueue: Vec<(String, Item)> = new_ids
            .iter()
            .filter(|id| !answered.contains(id))
            .chain(resend.iter())
            .filter_map(|id| by_id.get(id.as_str()).map(|a| (id.clone(), a.0.item.clone())))
            .collect();
        self.enqueue(job, to_enqueue).await?;
        Ok(())
    }

    /// Insert a message's items. If the store refuses the data of some item, insert them one
    /// by one so that only the bad ones are rejected (with the store's reason).
    async fn insert_isolating(&self, job: &JobRow, items: &[NewItem], indexes: &[u64], out: &mut v1::SubmitItemsResponse) -> Result<Vec<(String, Inserted)>> {
        match self.store.insert_items(job.id, items).await {
            Err(StoreError::Db(e)) if data_error(&e) => {
                tracing::warn!(job = %job.id, error = %e, "the store refused a message of items; inserting them one by one");
                let mut outcome = Vec::with_capacity(items.len());
                for (item, &index) in items.iter().zip(indexes) {
                    match self.store.insert_items(job.id, std::slice::from_ref(item)).await {
                        Ok(o) => outcome.extend(o),
                        Err(StoreError::Db(e)) if data_error(&e) => out.rejected.push(v1::ItemError {
                            index,
                            item_id: item.item_id.clone(),
                            field: String::new(),
                            message: format!("the store refused this item: {e}"),
                        }),
                        Err(e) => return Err(e.into()),
                    }
                }
                Ok(outcome)
            }
            other => Ok(other?),
        }
    }

    pub async fn enqueue(&self, job: &JobRow, items: Vec<(String, Item)>) -> Result<usize> {
        if items.is_empty() {
            return Ok(0);
        }
        let queued: Vec<QueuedItem> = items
            .iter()
            .map(|(_, item)| QueuedItem { job_id: job.id.to_string(), spec: job.spec.clone(), item: item.clone(), first_sample: 0 })
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
        let who = caller(&req)?;
        who.require(&[Role::Client], "create jobs")?;
        let req = req.into_inner();
        let spec = req.spec.ok_or_else(|| CoordinatorError::Invalid("field `spec` is missing".into()))?;
        let spec = spec_from_wire(&spec, &self.shared.limits).map_err(CoordinatorError::from)?;
        if !valid_judge_name(&spec.judge) {
            return Err(CoordinatorError::Invalid(format!("spec.judge {:?}: use letters, digits and . _ - @ / : (at most 128)", spec.judge)).into());
        }
        // What the judge's workers said about it: a budget it cannot hold, or meta-RM voting
        // without a meta RM, would only reject every item later.
        if let Some(j) = self.shared.store.judge(&spec.judge).await.map_err(CoordinatorError::from)? {
            if let Some(context) = j.context_length.filter(|&c| spec.max_new_tokens >= c) {
                return Err(CoordinatorError::Invalid(format!(
                    "spec.max_new_tokens {} does not fit judge {}'s context of {context} tokens, which must also hold the prompt",
                    spec.max_new_tokens, spec.judge
                ))
                .into());
            }
            if spec.uses_meta_rm() && j.fingerprints.meta_rm.is_none() {
                return Err(CoordinatorError::Precondition(format!(
                    "judge {}'s workers load no meta reward model, and meta-RM voting needs one (start them with --meta-rm DIR)",
                    spec.judge
                ))
                .into());
            }
        }
        let job = self.shared.store.create_job(&req.name, &spec, &who.name).await.map_err(CoordinatorError::from)?;
        tracing::info!(job = %job.id, judge = %spec.judge, name = %req.name, owner = %who.name, "job created");
        let live = self.shared.live_workers(&job.judge).await;
        Ok(Response::new(job_to_wire(&job, &Progress::default(), live)))
    }

    async fn submit_items(&self, req: Request<Streaming<v1::SubmitItemsRequest>>) -> Result<Response<v1::SubmitItemsResponse>, Status> {
        let who = caller(&req)?;
        let mut stream = req.into_inner();
        let mut job: Option<(JobRow, Fingerprints)> = None;
        let mut out = v1::SubmitItemsResponse::default();
        let mut index = 0u64;
        let mut keep_open = false;
        while let Some(msg) = stream.next().await {
            let msg = match msg {
                Ok(m) => m,
                Err(e) => {
                    // The client is gone (or sent garbage). What arrived is stored; say so on
                    // the job, which the sweeper seals if nobody resumes it.
                    if let Some((j, _)) = &job {
                        let note = format!("submission broke off after {index} item(s): {}", e.message());
                        tracing::warn!(job = %j.id, "{note}");
                        // On its own task: with the client gone, this handler may be dropped at
                        // its next await.
                        let (store, id) = (self.shared.store.clone(), j.id);
                        tokio::spawn(async move {
                            if let Err(e) = store.note_job(id, &note).await {
                                tracing::warn!(job = %id, error = %e, "could not note the broken submission");
                            }
                        });
                    }
                    return Err(e);
                }
            };
            let id = job_id(&msg.job_id)?;
            let current = match &job {
                Some((j, w)) if j.id == id => (j.clone(), w.clone()),
                Some((j, _)) => return Err(CoordinatorError::Invalid(format!("job_id changed within one stream ({} then {id})", j.id)).into()),
                None => {
                    let j = self.shared.owned_job(&who, id).await?;
                    if j.cancelled {
                        return Err(CoordinatorError::Precondition(format!("job {id} is cancelled")).into());
                    }
                    if j.sealed {
                        return Err(CoordinatorError::Precondition(format!("job {id} is sealed: its items are complete; create a new job")).into());
                    }
                    let w = self.shared.judge_weights(&j.judge).await?;
                    job = Some((j.clone(), w.clone()));
                    (j, w)
                }
            };
            let n = msg.items.len() as u64;
            self.shared.store.touch_submission(current.0.id).await.map_err(CoordinatorError::from)?;
            self.shared.submit_batch(&current.0, &current.1, msg.items, index, &mut out).await?;
            index += n;
            keep_open = msg.keep_open;
        }
        let (job, _) = job.ok_or_else(|| CoordinatorError::Invalid("no message: a SubmitItems stream names its job_id".into()))?;
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
        let who = caller(&req)?;
        let id = job_id(&req.into_inner().job_id)?;
        self.shared.owned_job(&who, id).await?;
        Ok(Response::new(self.shared.job_with_progress(id).await?))
    }

    async fn list_jobs(&self, req: Request<v1::ListJobsRequest>) -> Result<Response<v1::ListJobsResponse>, Status> {
        let who = caller(&req)?;
        who.require(&[Role::Client], "list jobs")?;
        let req = req.into_inner();
        let size = if req.page_size == 0 { 50 } else { req.page_size.min(1000) } as i64;
        let before = if req.page_token.is_empty() {
            None
        } else {
            let (ts, id) = req.page_token.split_once('/').ok_or_else(|| CoordinatorError::Invalid("page_token is not one this server issued".into()))?;
            let ts = chrono::DateTime::parse_from_rfc3339(ts).map_err(|_| CoordinatorError::Invalid("page_token is not one this server issued".into()))?;
            Some((ts.with_timezone(&chrono::Utc), job_id(id)?))
        };
        let rows = self.shared.store.list_jobs(size, before, who.listing_owner()).await.map_err(CoordinatorError::from)?;
        let mut jobs = Vec::with_capacity(rows.len());
        let mut live: HashMap<String, Option<u64>> = HashMap::new();
        for j in &rows {
            let p = self.shared.store.progress(j.id).await.map_err(CoordinatorError::from)?;
            let n = match live.get(&j.judge) {
                Some(&n) => n,
                None => {
                    let n = self.shared.live_workers(&j.judge).await;
                    live.insert(j.judge.clone(), n);
                    n
                }
            };
            jobs.push(job_to_wire(j, &p, n));
        }
        let next_page_token = match rows.last() {
            Some(last) if rows.len() as i64 == size => format!("{}/{}", last.created_at.to_rfc3339(), last.id),
            _ => String::new(),
        };
        Ok(Response::new(v1::ListJobsResponse { jobs, next_page_token }))
    }

    async fn cancel_job(&self, req: Request<v1::CancelJobRequest>) -> Result<Response<v1::Job>, Status> {
        let who = caller(&req)?;
        let id = job_id(&req.into_inner().job_id)?;
        let job = self.shared.owned_job(&who, id).await?;
        self.shared.store.cancel_job(id).await.map_err(CoordinatorError::from)?;
        self.shared.queue.cancel(&job.judge, &id.to_string()).await.map_err(CoordinatorError::from)?;
        tracing::info!(job = %id, by = %who.name, "job cancelled");
        Ok(Response::new(self.shared.job_with_progress(id).await?))
    }

    type WatchJobStream = JobStream;

    async fn watch_job(&self, req: Request<v1::WatchJobRequest>) -> Result<Response<Self::WatchJobStream>, Status> {
        let who = caller(&req)?;
        let id = job_id(&req.into_inner().job_id)?;
        self.shared.owned_job(&who, id).await?;
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
                // A watcher that went away ends this task at once, not at the next change.
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = tx.closed() => return,
                }
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

    async fn extend_job(&self, req: Request<v1::ExtendJobRequest>) -> Result<Response<v1::ExtendJobResponse>, Status> {
        let who = caller(&req)?;
        let req = req.into_inner();
        let id = job_id(&req.job_id)?;
        self.shared.owned_job(&who, id).await?;
        let (job, done) = self.shared.extend_job(id, req.k).await?;
        Ok(Response::new(v1::ExtendJobResponse { job: Some(job), queued: done.queued, unchanged: done.unchanged }))
    }

    async fn list_dead_letters(&self, req: Request<v1::ListDeadLettersRequest>) -> Result<Response<v1::ListDeadLettersResponse>, Status> {
        let who = caller(&req)?;
        let req = req.into_inner();
        let job = (!req.job_id.is_empty()).then(|| job_id(&req.job_id)).transpose()?;
        let dead_letters = self.shared.list_dead_letters(&who, &req.judge, job, req.limit as usize).await?;
        Ok(Response::new(v1::ListDeadLettersResponse { dead_letters }))
    }

    async fn requeue_dead_letters(&self, req: Request<v1::RequeueDeadLettersRequest>) -> Result<Response<v1::RequeueDeadLettersResponse>, Status> {
        let who = caller(&req)?;
        who.require(&[Role::Client], "requeue dead letters")?;
        Ok(Response::new(self.shared.requeue_dead_letters(&who, req.into_inner()).await?))
    }
}
