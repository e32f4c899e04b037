//! `ExtendJob`: raise a finished job's k by queueing only each item's missing samples.
//!
//! A sample's tokens depend on (seed, item, index) alone, so samples k..K2 made now are those
//! a fresh K2 run makes; the queue entry says where to start (`first_sample`), the worker
//! makes only those, and the store votes over all of the item's samples when they are in
//! (`verdict_store::extend`). Items are read and queued a page at a time, so a job of any
//! size extends in bounded memory. Running it again with the same k finishes an extension
//! that was cut off: items already under the new key are left alone.

use uuid::Uuid;
use verdict_core::{ContentKey, Item, LabelSpec};
use verdict_queue::QueuedItem;
use verdict_store::{JobRow, EXTEND_PAGE};

use crate::error::{CoordinatorError, Result};
use crate::app::{App, JobView};

/// What an extension did.
#[derive(Debug, Default)]
pub struct Extended {
    pub queued: u64,
    pub unchanged: u64,
}

impl App {
    pub async fn extend_job(&self, id: Uuid, k: u32) -> Result<(JobView, Extended)> {
        let job = self.store.get_job(id).await?;
        let spec = self.extended_spec(&job, k).await?;
        let weights = self.judge_weights(&job.judge).await?;
        if let Some(other) = self.store.verdict_fingerprints(id).await?.into_iter().find(|f| *f != weights.judge) {
            return Err(CoordinatorError::Precondition(format!(
                "job {id} was judged by weights {other}, and judge {} is now bound to {}: new samples would come from other weights than the old ones",
                job.judge, weights.judge
            )));
        }
        self.store.set_job_spec(id, &spec).await?;
        let job = JobRow { spec, ..job };
        let mut out = Extended::default();
        let mut after: Option<String> = None;
        loop {
            let page = self.store.done_items(id, after.as_deref(), EXTEND_PAGE).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.item_id.clone());
            let mut todo: Vec<(String, String, Item, u32)> = Vec::new();
            for d in page {
                let key = ContentKey::of(&d.item, &job.spec, &weights).hex();
                if key == d.key || d.samples >= k {
                    out.unchanged += 1;
                    continue;
                }
                todo.push((d.item_id, key, d.item, d.samples));
            }
            self.queue_extension(&job, todo, &mut out).await?;
        }
        let p = self.store.progress(id).await?;
        out.unchanged += p.rejected + p.dead + p.cancelled;
        tracing::info!(job = %id, k, queued = out.queued, unchanged = out.unchanged, "job extended");
        Ok((self.job_with_progress(id).await?, out))
    }

    /// The job's spec at the new k, if the job can be extended to it.
    async fn extended_spec(&self, job: &JobRow, k: u32) -> Result<LabelSpec> {
        let id = job.id;
        if job.cancelled {
            return Err(CoordinatorError::Precondition(format!("job {id} is cancelled")));
        }
        if job.spec.adaptive.is_some() {
            return Err(CoordinatorError::Precondition(format!("job {id} samples under adaptive k, where each item took what it needed: there is no k to extend")));
        }
        if k < job.spec.k {
            return Err(CoordinatorError::Invalid(format!(
                "k {k} is less than job {id}'s k of {}: extend adds samples; for a verdict at a smaller k, re-vote (verdict revote {id} --k {k})",
                job.spec.k
            )));
        }
        // At the job's own k this finishes an extension that was cut off; otherwise the job
        // must be finished, so that no item is being judged at the old k meanwhile.
        if k > job.spec.k {
            if !job.sealed {
                return Err(CoordinatorError::Precondition(format!("job {id} is still open for items: extend it once its items are all in and judged")));
            }
            let p = self.store.progress(id).await?;
            if p.queued > 0 {
                return Err(CoordinatorError::Precondition(format!("job {id} still has {} item(s) queued: extend it once they are judged", p.queued)));
            }
        }
        let spec = LabelSpec { k, ..job.spec.clone() };
        spec.validate_within(&self.limits).map_err(|e| CoordinatorError::Invalid(format!("k {k}: {e}")))?;
        Ok(spec)
    }

    /// Mark a page's items queued under their new keys, then queue their new samples.
    async fn queue_extension(&self, job: &JobRow, todo: Vec<(String, String, Item, u32)>, out: &mut Extended) -> Result<()> {
        if todo.is_empty() {
            return Ok(());
        }
        let keys: Vec<(String, String)> = todo.iter().map(|(id, key, ..)| (id.clone(), key.clone())).collect();
        let changed: std::collections::HashSet<String> = self.store.requeue_for_extension(job.id, &keys).await?.into_iter().collect();
        let (ids, queued): (Vec<String>, Vec<QueuedItem>) = todo
            .into_iter()
            .filter(|(id, ..)| changed.contains(id))
            .map(|(id, _, item, first)| (id, QueuedItem { job_id: job.id.to_string(), spec: job.spec.clone(), item, first_sample: first }))
            .unzip();
        if queued.is_empty() {
            return Ok(());
        }
        let entries = self.queue.enqueue(&job.judge, &queued).await?;
        let pairs: Vec<(String, String)> = ids.into_iter().zip(entries).collect();
        self.store.set_entry_ids(job.id, &pairs).await?;
        self.metrics.items_queued.inc_by(pairs.len() as u64);
        out.queued += pairs.len() as u64;
        Ok(())
    }
}
