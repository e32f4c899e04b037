//! Puts lost work back on the queue, and seals jobs nobody is feeding. A queued item whose
//! stream entry no longer exists was neither acknowledged (it would be done) nor
//! dead-lettered (it would be dead): its entry was lost, by a Redis restart without
//! persistence or an enqueue that failed after the commit. Items are claimed with SKIP
//! LOCKED, so replicas share the sweep. An open job that has received no items for the
//! open-job timeout (its submission broke off, or a `keep_open` caller never came back) is
//! sealed with a note, so it ends instead of staying open forever. Consumers that hold
//! nothing and were idle for a few lease timeouts (workers gone) leave the consumer group.

use std::collections::HashMap;
use std::time::Duration;

use verdict_store::StaleItem;

use crate::error::Result;
use crate::app::App;

/// One pass: check up to `batch` items untouched for `age`; re-enqueue the lost ones.
pub async fn sweep_once(app: &App, age: Duration, batch: i64) -> Result<usize> {
    let stale = app.store.claim_stale(age.as_secs_f64(), batch).await?;
    let mut by_job: HashMap<uuid::Uuid, Vec<StaleItem>> = HashMap::new();
    for s in stale {
        by_job.entry(s.job_id).or_default().push(s);
    }
    let mut requeued = 0;
    for (job_id, items) in by_job {
        let judge = items[0].spec.judge.clone();
        let entries: Vec<String> = items.iter().map(|s| s.entry_id.clone().unwrap_or_else(|| "0-0".into())).collect();
        let exists = app.queue.exists(&judge, &entries).await?;
        let lost: Vec<(String, verdict_core::Item)> = items
            .into_iter()
            .zip(exists)
            .filter(|(s, present)| !present || s.entry_id.is_none())
            .map(|(s, _)| (s.item_id, s.item))
            .collect();
        if lost.is_empty() {
            continue;
        }
        let job = app.store.get_job(job_id).await?;
        let n = app.enqueue(&job, lost).await?;
        app.metrics.items_requeued.inc_by(n as u64);
        tracing::warn!(job = %job_id, items = n, "re-enqueued items whose queue entries were lost");
        requeued += n;
    }
    Ok(requeued)
}

/// Remove every judge's consumers that hold nothing and were idle longer than `idle`.
pub async fn prune_consumers(app: &App, idle: Duration) -> Result<usize> {
    let mut n = 0;
    for j in app.store.judges().await? {
        let gone = app.queue.prune_consumers(&j.name, idle).await?;
        if !gone.is_empty() {
            tracing::info!(judge = %j.name, consumers = ?gone, "removed idle consumers that held nothing");
        }
        n += gone.len();
    }
    Ok(n)
}

/// How often the sweeper runs and what it counts as lost or idle.
#[derive(Debug, Clone, Copy)]
pub struct Every {
    pub tick: Duration,
    pub requeue_after: Duration,
    pub open_job_timeout: Duration,
}

/// Sweep every `every.tick` until `shutdown` fires.
pub async fn run(app: App, every: Every, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(every.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                loop {
                    match sweep_once(&app, every.requeue_after, 500).await {
                        Ok(500..) => continue,
                        Ok(_) => break,
                        Err(e) => {
                            tracing::warn!(error = %e, "sweep failed; will retry");
                            break;
                        }
                    }
                }
                match app.store.seal_idle_jobs(every.open_job_timeout.as_secs_f64()).await {
                    Ok(sealed) => {
                        for job in sealed {
                            tracing::warn!(%job, timeout_s = every.open_job_timeout.as_secs(), "sealed an open job that received no items");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "sealing idle jobs failed; will retry"),
                }
                // Three lease timeouts: long past any reclaim of what a dead worker held.
                if let Err(e) = prune_consumers(&app, 3 * app.queue.config().lease_timeout).await {
                    tracing::warn!(error = %e, "removing idle consumers failed; will retry");
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}
