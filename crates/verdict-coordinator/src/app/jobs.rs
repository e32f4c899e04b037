//! Jobs, as the application sees them: who may touch a job, its progress with the judge's
//! live workers, and one submitted message's items validated, stored, deduplicated and
//! queued.

use std::collections::HashMap;

use tonic::Status;
use uuid::Uuid;
use verdict_core::{ContentKey, Fingerprints, Item};
use verdict_queue::QueuedItem;
use verdict_store::{Inserted, JobRow, JobState, NewItem, Progress, StoreError};

use crate::app::{unix_now, App, WORKER_TTL};
use crate::auth::{Identity, Role};
use crate::error::{data_error, CoordinatorError, Result};

/// A job as its watchers see it: the row, its counts, and the judge's live workers (`None`
/// when Redis cannot be asked).
#[derive(Debug, Clone)]
pub struct JobView {
    pub job: JobRow,
    pub progress: Progress,
    pub live_workers: Option<u64>,
}

impl JobView {
    pub fn state(&self) -> JobState {
        self.job.state(&self.progress)
    }
}

/// A submitted item that is not taken, and why; `index` is its position in its stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub index: u64,
    pub item_id: String,
    pub field: String,
    pub message: String,
}

/// One item of a submitted message as the transport decoded it: the item with its position
/// in the stream, or why it could not be decoded.
pub type Incoming = std::result::Result<(u64, Item), Rejection>;

/// What became of a stream's items so far.
#[derive(Debug, Default)]
pub struct Submitted {
    /// Answered from verdicts stored under the same key.
    pub deduplicated: u64,
    /// The job already held them (a resumed or repeated submission).
    pub already_present: u64,
    pub rejected: Vec<Rejection>,
}

impl App {
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

    pub async fn job_with_progress(&self, id: Uuid) -> Result<JobView> {
        let job = self.store.get_job(id).await?;
        let progress = self.store.progress(id).await?;
        let live_workers = self.live_workers(&job.judge).await;
        Ok(JobView { job, progress, live_workers })
    }

    /// The weights new items of `judge` are keyed with: those the name is bound to, or none
    /// yet (then nothing stored can match, and no item is answered from the store).
    pub async fn judge_weights(&self, judge: &str) -> Result<Fingerprints> {
        Ok(self.store.judge(judge).await?.map(|j| j.fingerprints).unwrap_or_default())
    }

    /// Validate, store, dedup and enqueue one message's items.
    pub async fn submit_batch(&self, job: &JobRow, weights: &Fingerprints, items: Vec<Incoming>, out: &mut Submitted) -> Result<()> {
        // The message's good items, and each one's position in the stream.
        let (mut accepted, mut indexes): (Vec<NewItem>, Vec<u64>) = (Vec::new(), Vec::new());
        // Repeats within this message; repeats of earlier messages are found in the store.
        let mut seen: HashMap<String, String> = HashMap::new();
        for incoming in items {
            match incoming {
                Err(r) => out.rejected.push(r),
                Ok((index, item)) => {
                    let reject = |field: &str, message: String, id: &str| Rejection { index, item_id: id.to_string(), field: field.to_string(), message };
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
                    // Every id the store answers for is one of this message's accepted items.
                    let index = by_id.get(id.as_str()).map_or(0, |a| a.1);
                    out.rejected.push(Rejection {
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
    async fn insert_isolating(&self, job: &JobRow, items: &[NewItem], indexes: &[u64], out: &mut Submitted) -> Result<Vec<(String, Inserted)>> {
        match self.store.insert_items(job.id, items).await {
            Err(StoreError::Db(e)) if data_error(&e) => {
                tracing::warn!(job = %job.id, error = %e, "the store refused a message of items; inserting them one by one");
                let mut outcome = Vec::with_capacity(items.len());
                for (item, &index) in items.iter().zip(indexes) {
                    match self.store.insert_items(job.id, std::slice::from_ref(item)).await {
                        Ok(o) => outcome.extend(o),
                        Err(StoreError::Db(e)) if data_error(&e) => out.rejected.push(Rejection {
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

