//! The worker loop.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use verdict_engine::{EngineError, Judge};
use verdict_proto::v1;
use verdict_queue::{Entry, Queue, QueueError};

use crate::config::WorkerConfig;
use crate::metrics::Metrics;
use crate::process::process;
use crate::report::{Backoff, Coordinator};

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("queue: {0}")]
    Queue(#[from] QueueError),
    #[error("coordinator address {0}: {1}")]
    Coordinator(String, tonic::transport::Error),
    #[error("engine: {0}")]
    Engine(#[from] EngineError),
    #[error("metrics endpoint: {0}")]
    Metrics(std::io::Error),
    #[error("{0}")]
    Unreachable(String),
    /// The coordinator refused this worker's weights for its judge name.
    #[error("the coordinator refused this worker: {0}")]
    Refused(String),
}

/// What a worker did before it stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerStats {
    pub items_reported: u64,
    pub samples: u64,
    pub released: u64,
}

struct Held {
    ids: Mutex<Vec<String>>,
    /// Set when the coordinator refused our weights: stop leasing, then exit with it.
    refused: Mutex<Option<String>>,
}

impl Held {
    fn set(&self, ids: Vec<String>) {
        *self.ids.lock().unwrap_or_else(|e| e.into_inner()) = ids;
    }
    fn get(&self) -> Vec<String> {
        self.ids.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
    fn refuse(&self, why: String) {
        *self.refused.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
    }
    fn refused(&self) -> Option<String> {
        self.refused.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

fn heartbeat_request(cfg: &WorkerConfig, in_flight: usize) -> v1::HeartbeatRequest {
    v1::HeartbeatRequest {
        worker_id: cfg.worker_id.clone(),
        judge: cfg.judge.clone(),
        in_flight: in_flight as u32,
        device: cfg.device.clone(),
        fingerprint: cfg.fingerprints.judge.clone(),
        meta_fingerprint: cfg.fingerprints.meta_rm.clone(),
        context_length: cfg.context_length,
    }
}

/// The first heartbeat binds the judge name to our weights, or is refused. Until it is
/// answered nothing is leased: work done with weights the coordinator would refuse is
/// wasted. A coordinator that is down is waited for (it may be starting too).
async fn register(cfg: &WorkerConfig, coordinator: &Coordinator, stop: &watch::Receiver<bool>) -> Result<bool, WorkerError> {
    let mut backoff = Backoff::new();
    loop {
        match coordinator.heartbeat(heartbeat_request(cfg, 0)).await {
            Ok(_) => return Ok(true),
            Err(e) if e.code() == tonic::Code::FailedPrecondition || e.code() == tonic::Code::InvalidArgument => {
                return Err(WorkerError::Refused(e.message().to_string()))
            }
            Err(e) => {
                tracing::warn!(coordinator = %verdict_core::redact::url(&cfg.coordinator), error = %e.message(), "cannot reach the coordinator; retrying");
                if *stop.borrow() {
                    return Ok(false);
                }
                backoff.wait().await;
            }
        }
    }
}

/// Run until `shutdown` resolves, then drain.
pub async fn run(cfg: WorkerConfig, judge: Arc<Judge>, k_hint: usize, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<WorkerStats, WorkerError> {
    let queue = Queue::connect(&cfg.redis_url, cfg.queue.clone())
        .await
        .map_err(|e| WorkerError::Unreachable(format!("cannot reach Redis at {}: {e}", verdict_core::redact::url(&cfg.redis_url))))?;
    let coordinator = Coordinator::new(&cfg.coordinator).map_err(|e| WorkerError::Coordinator(cfg.coordinator.clone(), e))?;
    let metrics = Metrics::new();
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    if let Some(addr) = cfg.metrics_listen {
        let mut rx = stop_rx.clone();
        let bound = verdict_proto::metrics_http::serve_metrics(addr, metrics.registry.clone(), async move {
            let _ = rx.changed().await;
        })
        .await
        .map_err(WorkerError::Metrics)?;
        tracing::info!(%bound, "worker metrics");
    }

    if !register(&cfg, &coordinator, &stop_rx).await? {
        return Ok(WorkerStats::default());
    }
    let held = Arc::new(Held { ids: Mutex::new(Vec::new()), refused: Mutex::new(None) });
    let cancelled: Arc<Mutex<HashSet<String>>> = Arc::default();
    let heartbeat = tokio::spawn(heartbeat_loop(cfg.clone(), queue.clone(), coordinator.clone(), held.clone(), cancelled.clone(), stop_rx.clone()));

    let mut lease_conn = loop {
        match Queue::lease_connection(&cfg.redis_url, cfg.lease_block).await {
            Ok(c) => break c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot reach Redis; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                if *stop_rx.borrow() {
                    return Ok(WorkerStats::default());
                }
            }
        }
    };
    let per_batch = (cfg.max_batch / k_hint.max(1)).max(1);
    let mut stats = WorkerStats::default();
    let mut backoff = Backoff::new();
    let mut last_reclaim = Instant::now() - cfg.reclaim_every;
    tracing::info!(worker = %cfg.worker_id, judge = %cfg.judge, items_per_batch = per_batch, "worker started");

    while !*stop_rx.borrow() && held.refused().is_none() {
        let leased: Result<Vec<Entry>, QueueError> = if last_reclaim.elapsed() >= cfg.reclaim_every {
            last_reclaim = Instant::now();
            match queue.reclaim(&cfg.judge, &cfg.worker_id, per_batch).await {
                Ok(v) if v.is_empty() => queue.lease(&cfg.judge, &cfg.worker_id, per_batch, cfg.lease_block, &mut lease_conn).await,
                other => other,
            }
        } else {
            queue.lease(&cfg.judge, &cfg.worker_id, per_batch, cfg.lease_block, &mut lease_conn).await
        };
        let entries = match leased {
            Ok(e) => {
                backoff.reset();
                e
            }
            Err(e) => {
                tracing::warn!(error = %e, "leasing failed; retrying");
                backoff.wait().await;
                continue;
            }
        };
        if entries.is_empty() {
            continue;
        }
        metrics.items_leased.inc_by(entries.len() as u64);
        held.set(entries.iter().map(|e| e.id.clone()).collect());
        // Ask Redis now rather than trusting the last heartbeat, so a job cancelled a moment
        // ago is not judged.
        let cancelled_now = match queue.cancelled_jobs(&cfg.judge).await {
            Ok(jobs) => jobs.into_iter().collect(),
            Err(_) => cancelled.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        };
        let started = Instant::now();
        let j = judge.clone();
        let max_deliveries = cfg.queue.max_deliveries;
        let batch = entries.clone();
        let processed = tokio::task::spawn_blocking(move || process(&j, &batch, &cancelled_now, max_deliveries))
            .await
            .map_err(|e| EngineError::Synth(format!("engine thread failed: {e}")))??;
        let secs = started.elapsed().as_secs_f64();
        metrics.batch_seconds.observe(secs);
        metrics.samples.inc_by(processed.samples);
        metrics.generated_tokens.inc_by(processed.generated_tokens);
        metrics.tokens_per_second.set(processed.generated_tokens as f64 / secs.max(1e-9));
        metrics.samples_per_second.set(processed.samples as f64 / secs.max(1e-9));
        let n = processed.results.len() as u64;
        let failed = processed.results.iter().filter(|r| matches!(r.outcome, Some(v1::item_result::Outcome::Failure(_)))).count() as u64;

        // Report until it is stored: the coordinator may be restarting. After shutdown
        // begins, keep trying only until the drain timeout, then release the entries.
        let req = v1::ReportResultsRequest {
            worker_id: cfg.worker_id.clone(),
            judge: cfg.judge.clone(),
            results: processed.results,
            fingerprint: cfg.fingerprints.judge.clone(),
            meta_fingerprint: cfg.fingerprints.meta_rm.clone(),
        };
        let deadline = Instant::now() + cfg.drain_timeout;
        let mut backoff = Backoff::new();
        let reported = loop {
            match coordinator.report(req.clone()).await {
                Ok(_) => break true,
                Err(e) if e.code() == tonic::Code::FailedPrecondition => {
                    // Our weights are not the judge's (it was rebound): nothing we judge
                    // will be accepted. Hand the batch back and stop.
                    tracing::error!(error = %e.message(), "results refused for these weights; releasing the batch and stopping");
                    held.refuse(e.message().to_string());
                    break false;
                }
                Err(e) if !retryable(&e) => {
                    // The coordinator refuses this report as it is; retrying will not help.
                    // Release the entries: redelivery ends in the dead letters if it persists.
                    tracing::error!(error = %e, "report refused; releasing the batch");
                    break false;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "report failed; retrying");
                    if *stop_rx.borrow() && Instant::now() > deadline {
                        break false;
                    }
                    backoff.wait().await;
                }
            }
        };
        if reported {
            metrics.items_done.inc_by(n - failed);
            metrics.items_failed.inc_by(failed);
            stats.items_reported += n;
            stats.samples += processed.samples;
        } else {
            let ids = held.get();
            if queue.release(&cfg.judge, &cfg.worker_id, &ids).await.is_ok() {
                stats.released += ids.len() as u64;
            }
        }
        held.set(Vec::new());
    }
    if let Some(why) = held.refused() {
        heartbeat.abort();
        return Err(WorkerError::Refused(why));
    }
    let _ = heartbeat.await;
    tracing::info!(worker = %cfg.worker_id, reported = stats.items_reported, "worker stopped");
    Ok(stats)
}

/// Errors worth retrying: the coordinator or its dependencies are unavailable.
fn retryable(e: &tonic::Status) -> bool {
    use tonic::Code::*;
    matches!(e.code(), Unavailable | Unknown | DeadlineExceeded | ResourceExhausted | Aborted | Internal | Cancelled)
}

async fn heartbeat_loop(cfg: WorkerConfig, queue: Queue, coordinator: Coordinator, held: Arc<Held>, cancelled: Arc<Mutex<HashSet<String>>>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(cfg.heartbeat_every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let ids = held.get();
        // Keep our leases fresh through Redis directly, so a coordinator outage does not
        // hand our work to another worker.
        if let Err(e) = queue.touch(&cfg.judge, &cfg.worker_id, &ids).await {
            tracing::warn!(error = %e, "refreshing leases failed");
        }
        match coordinator.heartbeat(heartbeat_request(&cfg, ids.len())).await {
            Ok(r) => *cancelled.lock().unwrap_or_else(|e| e.into_inner()) = r.cancelled_jobs.into_iter().collect(),
            Err(e) if e.code() == tonic::Code::FailedPrecondition => {
                tracing::error!(error = %e.message(), "the coordinator refused this worker's weights; stopping after the batch in hand");
                held.refuse(e.message().to_string());
            }
            Err(e) => tracing::debug!(error = %e, "heartbeat failed"),
        }
    }
}
