//! The job service: create, submit items, get, list, cancel, watch.

use std::collections::HashMap;
use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};
use verdict_core::Fingerprints;
use verdict_proto::convert::{item_from_wire, spec_from_wire, spec_to_wire};
use verdict_proto::v1::{self, job_service_server::JobService};
use verdict_queue::valid_judge_name;
use verdict_store::{JobRow, JobState, Progress};

use crate::auth::{caller, Identity, Role};
use crate::error::{job_id, CoordinatorError, Result};
use crate::app::{App, Incoming, JobView, Rejection, Requeue, Submitted};

pub struct Jobs {
    pub app: App,
}

pub fn job_to_wire(view: &JobView) -> v1::Job {
    let state = match view.state() {
        JobState::Open => v1::JobState::Open,
        JobState::Running => v1::JobState::Running,
        JobState::Done => v1::JobState::Done,
        JobState::Cancelled => v1::JobState::Cancelled,
    };
    let (job, p) = (&view.job, &view.progress);
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
        live_workers: view.live_workers.map(|n| n.min(u32::MAX as u64) as u32),
        note: job.note.clone(),
    }
}

/// A wire item at its stream position, decoded, or rejected naming the field at fault.
fn decode_item(index: u64, w: v1::Item) -> Incoming {
    item_from_wire(&w).map(|item| (index, item)).map_err(|e| Rejection { index, item_id: w.id.clone(), field: e.field.clone(), message: e.to_string() })
}

type JobStream = Pin<Box<dyn Stream<Item = Result<v1::Job, Status>> + Send>>;

impl Jobs {
    /// A SubmitItems stream's messages, stored and queued one by one.
    async fn receive_items(&self, who: &Identity, mut stream: Streaming<v1::SubmitItemsRequest>, broke: &mut BrokenOff) -> Result<Response<v1::SubmitItemsResponse>, Status> {
        let mut job: Option<(JobRow, Fingerprints)> = None;
        let mut out = Submitted::default();
        let mut index = 0u64;
        let mut keep_open = false;
        let mut last_touch = None;
        while let Some(msg) = stream.next().await {
            let msg = match msg {
                Ok(m) => m,
                Err(e) => {
                    // The client is gone (or sent garbage). What arrived is stored; `broke`
                    // says so on the job, which the sweeper seals if nobody resumes it.
                    broke.client_error = Some(e.message().to_string());
                    return Err(e);
                }
            };
            let id = job_id(&msg.job_id)?;
            let current = match &job {
                Some((j, w)) if j.id == id => (j.clone(), w.clone()),
                Some((j, _)) => return Err(CoordinatorError::Invalid(format!("job_id changed within one stream ({} then {id})", j.id)).into()),
                None => {
                    let j = self.app.owned_job(who, id).await?;
                    if j.cancelled {
                        return Err(CoordinatorError::Precondition(format!("job {id} is cancelled")).into());
                    }
                    if j.sealed {
                        return Err(CoordinatorError::Precondition(format!("job {id} is sealed: its items are complete; create a new job")).into());
                    }
                    let w = self.app.judge_weights(&j.judge).await?;
                    broke.job = Some(j.id);
                    job = Some((j.clone(), w.clone()));
                    (j, w)
                }
            };
            let n = msg.items.len() as u64;
            broke.received = index + n;
            // The open-job timeout counts from the last touch; once a second is plenty (it
            // is minutes), and spares the job's row a write per message.
            if last_touch.is_none_or(|t: std::time::Instant| t.elapsed() >= Duration::from_secs(1)) {
                self.app.store.touch_submission(current.0.id).await.map_err(CoordinatorError::from)?;
                last_touch = Some(std::time::Instant::now());
            }
            let items: Vec<Incoming> = msg.items.into_iter().zip(index..).map(|(w, i)| decode_item(i, w)).collect();
            self.app.submit_batch(&current.0, &current.1, items, &mut out).await?;
            index += n;
            keep_open = msg.keep_open;
        }
        let (job, _) = job.ok_or_else(|| CoordinatorError::Invalid("no message: a SubmitItems stream names its job_id".into()))?;
        if !keep_open {
            self.app.store.seal_job(job.id).await.map_err(CoordinatorError::from)?;
        }
        self.app.metrics.items_rejected.with_label_values(&["submit"]).inc_by(out.rejected.len() as u64);
        let p = self.app.store.progress(job.id).await.map_err(CoordinatorError::from)?;
        tracing::info!(job = %job.id, received = index, queued = p.queued, deduplicated = out.deduplicated, rejected = out.rejected.len(), "items submitted");
        Ok(Response::new(v1::SubmitItemsResponse {
            job_id: job.id.to_string(),
            queued: p.queued,
            deduplicated: out.deduplicated,
            already_present: out.already_present,
            rejected: out.rejected.into_iter().map(|r| v1::ItemError { index: r.index, item_id: r.item_id, field: r.field, message: r.message }).collect(),
        }))
    }
}

/// Notes on its job a submission its client did not finish: the stream failed, or the
/// handler was dropped mid-message because the connection closed (hyper drops a closed
/// connection's handlers at their next await, so the handler itself cannot be relied on to
/// say so). From a task of its own, since the handler may be gone. A stream that ended as
/// the client meant, or with the coordinator's own error (which the client sees), is not
/// noted.
struct BrokenOff {
    store: verdict_store::Store,
    job: Option<uuid::Uuid>,
    /// Items received, the message being stored included.
    received: u64,
    client_error: Option<String>,
    finished: bool,
}

impl Drop for BrokenOff {
    fn drop(&mut self) {
        let Some(id) = self.job else { return };
        let reason = match (&self.client_error, self.finished) {
            (Some(e), _) => e.clone(),
            (None, false) => "the connection closed while a message was being stored".to_string(),
            (None, true) => return,
        };
        let note = format!("submission broke off after {} item(s): {reason}", self.received);
        tracing::warn!(job = %id, "{note}");
        let store = self.store.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = store.note_job(id, &note).await {
                    tracing::warn!(job = %id, error = %e, "could not note the broken submission");
                }
            });
        }
    }
}

#[tonic::async_trait]
impl JobService for Jobs {
    async fn create_job(&self, req: Request<v1::CreateJobRequest>) -> Result<Response<v1::Job>, Status> {
        let who = caller(&req)?;
        who.require(&[Role::Client], "create jobs")?;
        let req = req.into_inner();
        let spec = req.spec.ok_or_else(|| CoordinatorError::Invalid("field `spec` is missing".into()))?;
        let spec = spec_from_wire(&spec, &self.app.limits).map_err(CoordinatorError::from)?;
        if !valid_judge_name(&spec.judge) {
            return Err(CoordinatorError::Invalid(format!("spec.judge {:?}: use letters, digits and . _ - @ / : (at most 128)", spec.judge)).into());
        }
        // What the judge's workers said about it: a budget it cannot hold, or meta-RM voting
        // without a meta RM, would only reject every item later.
        if let Some(j) = self.app.store.judge(&spec.judge).await.map_err(CoordinatorError::from)? {
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
        let job = self.app.store.create_job(&req.name, &spec, &who.name).await.map_err(CoordinatorError::from)?;
        tracing::info!(job = %job.id, judge = %spec.judge, name = %req.name, owner = %who.name, "job created");
        let live = self.app.live_workers(&job.judge).await;
        Ok(Response::new(job_to_wire(&JobView { job, progress: Progress::default(), live_workers: live })))
    }

    async fn submit_items(&self, req: Request<Streaming<v1::SubmitItemsRequest>>) -> Result<Response<v1::SubmitItemsResponse>, Status> {
        let who = caller(&req)?;
        let mut broke = BrokenOff { store: self.app.store.clone(), job: None, received: 0, client_error: None, finished: false };
        let result = self.receive_items(&who, req.into_inner(), &mut broke).await;
        broke.finished = true;
        result
    }

    async fn get_job(&self, req: Request<v1::GetJobRequest>) -> Result<Response<v1::Job>, Status> {
        let who = caller(&req)?;
        let id = job_id(&req.into_inner().job_id)?;
        self.app.owned_job(&who, id).await?;
        Ok(Response::new(job_to_wire(&self.app.job_with_progress(id).await?)))
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
        let rows = self.app.store.list_jobs(size, before, who.listing_owner()).await.map_err(CoordinatorError::from)?;
        let mut jobs = Vec::with_capacity(rows.len());
        let mut live: HashMap<String, Option<u64>> = HashMap::new();
        for j in &rows {
            let p = self.app.store.progress(j.id).await.map_err(CoordinatorError::from)?;
            let n = match live.get(&j.judge) {
                Some(&n) => n,
                None => {
                    let n = self.app.live_workers(&j.judge).await;
                    live.insert(j.judge.clone(), n);
                    n
                }
            };
            jobs.push(job_to_wire(&JobView { job: j.clone(), progress: p, live_workers: n }));
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
        let job = self.app.owned_job(&who, id).await?;
        self.app.store.cancel_job(id).await.map_err(CoordinatorError::from)?;
        self.app.queue.cancel(&job.judge, &id.to_string()).await.map_err(CoordinatorError::from)?;
        tracing::info!(job = %id, by = %who.name, "job cancelled");
        Ok(Response::new(job_to_wire(&self.app.job_with_progress(id).await?)))
    }

    type WatchJobStream = JobStream;

    async fn watch_job(&self, req: Request<v1::WatchJobRequest>) -> Result<Response<Self::WatchJobStream>, Status> {
        let who = caller(&req)?;
        let id = job_id(&req.into_inner().job_id)?;
        self.app.owned_job(&who, id).await?;
        let first = job_to_wire(&self.app.job_with_progress(id).await?);
        let app = self.app.clone();
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
                match app.job_with_progress(id).await.map(|v| job_to_wire(&v)) {
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
        self.app.owned_job(&who, id).await?;
        let (job, done) = self.app.extend_job(id, req.k).await?;
        Ok(Response::new(v1::ExtendJobResponse { job: Some(job_to_wire(&job)), queued: done.queued, unchanged: done.unchanged }))
    }

    async fn list_dead_letters(&self, req: Request<v1::ListDeadLettersRequest>) -> Result<Response<v1::ListDeadLettersResponse>, Status> {
        let who = caller(&req)?;
        let req = req.into_inner();
        let job = (!req.job_id.is_empty()).then(|| job_id(&req.job_id)).transpose()?;
        let dead_letters = self.app.list_dead_letters(&who, &req.judge, job, req.limit as usize).await?;
        let dead_letters = dead_letters
            .into_iter()
            .map(|(judge, d)| v1::DeadLetter { id: d.id, judge, entry_id: d.entry, job_id: d.job, item_id: d.item, reason: d.reason, deliveries: d.deliveries })
            .collect();
        Ok(Response::new(v1::ListDeadLettersResponse { dead_letters }))
    }

    async fn requeue_dead_letters(&self, req: Request<v1::RequeueDeadLettersRequest>) -> Result<Response<v1::RequeueDeadLettersResponse>, Status> {
        let who = caller(&req)?;
        who.require(&[Role::Client], "requeue dead letters")?;
        let req = req.into_inner();
        let job = (!req.job_id.is_empty()).then(|| job_id(&req.job_id)).transpose()?;
        let done = self.app.requeue_dead_letters(&who, Requeue { judge: req.judge, job, ids: req.ids, all: req.all }).await?;
        Ok(Response::new(v1::RequeueDeadLettersResponse { requeued: done.requeued, skipped: done.skipped }))
    }
}
