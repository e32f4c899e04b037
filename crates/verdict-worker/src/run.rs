//! The worker: register the judge's weights with the coordinator, then run the pipeline
//! with the queue as source and the coordinator as sink, keeping leases alive with
//! heartbeats until the pipeline has drained.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use verdict_engine::EngineError;
use verdict_proto::v1;
use verdict_queue::{Queue, QueueError};

use crate::config::WorkerConfig;
use crate::ends::{CoordinatorSink, Held, QueueSource};
use crate::metrics::Metrics;
use crate::pipeline::{self, PipelineConfig, PipelineError};
use crate::report::{Backoff, Coordinator};

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("queue: {0}")]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Coordinator(#[from] verdict_proto::tls::TlsError),
    #[error("engine: {0}")]
    Engine(#[from] EngineError),
    #[error("metrics endpoint: {0}")]
    Metrics(std::io::Error),
    #[error("{0}")]
    Unreachable(String),
    #[error("token: {0}")]
    Token(#[from] verdict_proto::auth::TokenError),
    /// The coordinator refused this worker's weights for its judge name.
    #[error("the coordinator refused this worker: {0}")]
    Refused(String),
    #[error("{0}")]
    Pipeline(#[from] PipelineError),
}

/// What a worker did before it stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerStats {
    pub items_reported: u64,
    pub samples: u64,
    pub released: u64,
}

/// What a heartbeat says about the worker's output: tokens so far and the recent rate.
#[derive(Debug, Clone, Copy, Default)]
struct Output {
    generated_tokens: u64,
    tokens_per_second: f64,
}

fn heartbeat_request(cfg: &WorkerConfig, in_flight: usize, output: Output) -> v1::HeartbeatRequest {
    v1::HeartbeatRequest {
        generated_tokens: output.generated_tokens,
        tokens_per_second: output.tokens_per_second,
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
        match coordinator.heartbeat(heartbeat_request(cfg, 0, Output::default())).await {
            Ok(_) => return Ok(true),
            Err(e) if matches!(e.code(), tonic::Code::FailedPrecondition | tonic::Code::InvalidArgument | tonic::Code::Unauthenticated | tonic::Code::PermissionDenied) => {
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

/// Connect to Redis, retrying with backoff for the start timeout: it may be starting too.
async fn connect_queue(cfg: &WorkerConfig) -> Result<Queue, WorkerError> {
    let deadline = std::time::Instant::now() + cfg.start_timeout;
    let mut backoff = Backoff::new();
    loop {
        match Queue::connect(&cfg.redis_url, cfg.queue.clone()).await {
            Ok(q) => return Ok(q),
            Err(e) => {
                let message = format!("cannot reach Redis at {}: {e}", verdict_core::redact::url(&cfg.redis_url));
                if std::time::Instant::now() + backoff.next_wait() > deadline {
                    return Err(WorkerError::Unreachable(message));
                }
                tracing::warn!("{message}; retrying");
                backoff.wait().await;
            }
        }
    }
}

/// Run until `shutdown` resolves, then drain.
pub async fn run(cfg: WorkerConfig, engine: impl Into<crate::pipeline::Engine>, k_hint: usize, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<WorkerStats, WorkerError> {
    let engine: crate::pipeline::Engine = engine.into();
    let queue = connect_queue(&cfg).await?;
    let bearer = verdict_proto::auth::Bearer::new(cfg.token.as_deref())?;
    let coordinator = Coordinator::new(&cfg.coordinator, bearer, cfg.tls_ca.as_deref())?;
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
    let held = Arc::new(Held::default());
    let cancelled: Arc<Mutex<HashSet<String>>> = Arc::default();
    // Heartbeats go on until the pipeline has drained, not just until the signal: a long
    // drain must not lose its leases.
    let (beat_tx, beat_rx) = watch::channel(false);
    let heartbeat = tokio::spawn(heartbeat_loop(cfg.clone(), queue.clone(), coordinator.clone(), held.clone(), cancelled.clone(), metrics.clone(), beat_rx));

    let conn = loop {
        match Queue::lease_connection_with(&cfg.redis_url, cfg.lease_block, cfg.queue.tls_ca.as_deref()).await {
            Ok(c) => break c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot reach Redis; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                if *stop_rx.borrow() {
                    let _ = beat_tx.send(true);
                    return Ok(WorkerStats::default());
                }
            }
        }
    };
    let source = QueueSource::new(cfg.clone(), queue.clone(), conn, held.clone(), cancelled, metrics.clone(), stop_rx.clone());
    let mut sink = CoordinatorSink { last_report: std::time::Instant::now(), cfg: cfg.clone(), coordinator, queue, held: held.clone(), metrics: metrics.clone(), stop: stop_rx.clone() };
    tracing::info!(worker = %cfg.worker_id, judge = %cfg.judge, "worker started");
    let mut stop = stop_rx.clone();
    let until_stop = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    let pcfg = PipelineConfig { k_hint, drain_timeout: cfg.drain_timeout, prompt_tokens: cfg.prompt_tokens, ..PipelineConfig::default() };
    let result = pipeline::run(engine, source, &mut sink, pcfg, until_stop).await;
    let _ = beat_tx.send(true);
    let _ = heartbeat.await;
    if let Some(why) = held.refused() {
        return Err(WorkerError::Refused(why));
    }
    let stats = result?;
    tracing::info!(worker = %cfg.worker_id, reported = stats.items, "worker stopped");
    Ok(WorkerStats { items_reported: stats.items - stats.released, samples: stats.samples, released: stats.released })
}

async fn heartbeat_loop(cfg: WorkerConfig, queue: Queue, coordinator: Coordinator, held: Arc<Held>, cancelled: Arc<Mutex<HashSet<String>>>, metrics: Metrics, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(cfg.heartbeat_every);
    let mut last = (std::time::Instant::now(), metrics.generated_tokens.get());
    // When a coordinator last answered, and whether our leases were handed back since.
    let (mut reached, mut orphaned) = (std::time::Instant::now(), false);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let (now, tokens) = (std::time::Instant::now(), metrics.generated_tokens.get());
        let seconds = now.duration_since(last.0).as_secs_f64();
        let output = Output { generated_tokens: tokens, tokens_per_second: if seconds > 0.0 { tokens.saturating_sub(last.1) as f64 / seconds } else { 0.0 } };
        last = (now, tokens);
        let ids = held.get();
        if reached.elapsed() > cfg.orphan_after() {
            // No coordinator for a while: our results could not be stored, so let a worker
            // whose coordinator is healthy take our items, and lease nothing new. Those still
            // unclaimed when we reach one again are still ours (checked when we report).
            if !orphaned {
                tracing::warn!(entries = ids.len(), after_s = cfg.orphan_after().as_secs_f64(), "no coordinator reached; handing back our leases");
                if let Err(e) = queue.release(&cfg.judge, &cfg.worker_id, &ids).await {
                    tracing::warn!(error = %e, "handing back leases failed; they return after the lease timeout");
                }
                orphaned = true;
                held.set_orphaned(true);
            }
        } else {
            // Keep our leases fresh through Redis directly, so a short coordinator outage
            // does not hand our work to another worker. Only entries still ours are renewed.
            match queue.touch(&cfg.judge, &cfg.worker_id, &ids).await {
                Ok(still) if still.len() < ids.len() => {
                    // Reported a moment ago, or taken over by another worker after a stall
                    // (whose results then stand; ours will be refused).
                    tracing::debug!(gone = ids.len() - still.len(), "some entries are no longer ours");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "refreshing leases failed"),
            }
        }
        // A slow answer still counts (a loaded coordinator is not a dead one), up to the
        // bound; renewals wait for it at most that long, well within the lease timeout.
        let beat = tokio::time::timeout(cfg.orphan_after(), coordinator.heartbeat(heartbeat_request(&cfg, ids.len(), output)))
            .await
            .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("heartbeat timed out")));
        match beat {
            Ok(r) => {
                (reached, orphaned) = (std::time::Instant::now(), false);
                held.set_orphaned(false);
                *cancelled.lock().unwrap_or_else(|e| e.into_inner()) = r.cancelled_jobs.into_iter().collect();
            }
            Err(e) if matches!(e.code(), tonic::Code::FailedPrecondition | tonic::Code::Unauthenticated | tonic::Code::PermissionDenied) => {
                tracing::error!(error = %e.message(), "the coordinator refused this worker; stopping");
                held.refuse(e.message().to_string());
            }
            Err(e) => tracing::debug!(error = %e, "heartbeat failed"),
        }
    }
}
