//! The worker's two ends of the pipeline: the judge's queue stream as the source (leases,
//! with reclaims of abandoned entries, and the items that must not run settled at once) and
//! the coordinator as the sink (reports retried until stored; refused weights stop the
//! worker). Both keep [`Held`] up to date: the entries leased and not yet reported, which
//! the heartbeat keeps alive.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::watch;
use verdict_proto::convert::record_to_wire;
use verdict_proto::v1::{self, item_failure::Kind};
use verdict_queue::{Entry, LeaseConnection, Queue};

use crate::config::WorkerConfig;
use crate::metrics::Metrics;
use crate::pipeline::{Extend, Input, Outcome, PipelineError, Sink, Source};
use crate::report::{Backoff, Coordinator};

/// Entries leased and not yet reported, and the coordinator's refusal if it came.
#[derive(Default)]
pub struct Held {
    ids: Mutex<HashSet<String>>,
    refused: Mutex<Option<String>>,
    /// No coordinator answers: lease nothing new (its results could not be stored).
    orphaned: std::sync::atomic::AtomicBool,
}

impl Held {
    pub fn add(&self, ids: impl IntoIterator<Item = String>) {
        self.ids.lock().unwrap_or_else(|e| e.into_inner()).extend(ids);
    }
    pub fn remove<'a>(&self, ids: impl IntoIterator<Item = &'a String>) {
        let mut held = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        for id in ids {
            held.remove(id);
        }
    }
    pub fn get(&self) -> Vec<String> {
        self.ids.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect()
    }
    pub fn refuse(&self, why: String) {
        *self.refused.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
    }
    pub fn refused(&self) -> Option<String> {
        self.refused.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
    pub fn set_orphaned(&self, orphaned: bool) {
        self.orphaned.store(orphaned, std::sync::atomic::Ordering::Relaxed);
    }
    pub fn orphaned(&self) -> bool {
        self.orphaned.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// A leased entry, as the pipeline carries it to the sink.
#[derive(Debug, Clone)]
pub struct Lease {
    pub entry: String,
    pub job_id: String,
    pub item_id: String,
}

pub struct QueueSource {
    pub cfg: WorkerConfig,
    pub queue: Queue,
    pub conn: LeaseConnection,
    pub held: Arc<Held>,
    pub cancelled: Arc<Mutex<HashSet<String>>>,
    pub metrics: Metrics,
    pub stop: watch::Receiver<bool>,
    last_reclaim: Instant,
    backoff: Backoff,
}

impl QueueSource {
    pub fn new(cfg: WorkerConfig, queue: Queue, conn: LeaseConnection, held: Arc<Held>, cancelled: Arc<Mutex<HashSet<String>>>, metrics: Metrics, stop: watch::Receiver<bool>) -> Self {
        let last_reclaim = Instant::now() - cfg.reclaim_every;
        Self { cfg, queue, conn, held, cancelled, metrics, stop, last_reclaim, backoff: Backoff::new() }
    }

    /// Sort leased entries: those that must not run are settled here.
    async fn inputs(&self, entries: Vec<Entry>) -> Vec<Input<Lease>> {
        // Ask Redis now rather than trusting the last heartbeat, so a job cancelled a moment
        // ago is not judged.
        let cancelled: HashSet<String> = match self.queue.cancelled_jobs(&self.cfg.judge).await {
            Ok(jobs) => jobs.into_iter().collect(),
            Err(_) => self.cancelled.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        };
        let max = self.cfg.queue.max_deliveries;
        entries
            .into_iter()
            .map(|e| {
                let tag = Lease { entry: e.id.clone(), job_id: e.item.job_id.clone(), item_id: e.item.item.id.clone() };
                if e.deliveries > max {
                    let message = format!("delivered {} times without a result (maximum {max})", e.deliveries);
                    Input::Settled { tag, outcome: Outcome::Dead { message, deliveries: e.deliveries } }
                } else if cancelled.contains(&e.item.job_id) {
                    Input::Settled { tag, outcome: Outcome::Cancelled }
                } else {
                    // An extension's earlier samples are in Postgres: the coordinator votes
                    // over them with the new ones.
                    Input::Judge { tag, spec: e.item.spec, item: e.item.item, extend: Extend { first: e.item.first_sample, prior: Vec::new() } }
                }
            })
            .collect()
    }
}

impl Source for QueueSource {
    type Tag = Lease;

    async fn next(&mut self, max: usize) -> Result<Option<Vec<Input<Lease>>>, PipelineError> {
        if *self.stop.borrow() || self.held.refused().is_some() {
            return Ok(None);
        }
        if self.held.orphaned() {
            // Until a coordinator answers again, leave the work to workers that have one.
            tokio::time::sleep(self.cfg.lease_block).await;
            return Ok(Some(vec![]));
        }
        let (judge, me) = (self.cfg.judge.clone(), self.cfg.worker_id.clone());
        let leased = if self.last_reclaim.elapsed() >= self.cfg.reclaim_every {
            self.last_reclaim = Instant::now();
            match self.queue.reclaim(&judge, &me, max).await {
                Ok(v) if v.is_empty() => self.queue.lease(&judge, &me, max, self.cfg.lease_block, &mut self.conn).await,
                other => other,
            }
        } else {
            self.queue.lease(&judge, &me, max, self.cfg.lease_block, &mut self.conn).await
        };
        match leased {
            Ok(entries) => {
                self.backoff.reset();
                if entries.is_empty() {
                    return Ok(Some(vec![]));
                }
                self.metrics.items_leased.inc_by(entries.len() as u64);
                self.held.add(entries.iter().map(|e| e.id.clone()));
                Ok(Some(self.inputs(entries).await))
            }
            Err(e) => {
                tracing::warn!(error = %e, "leasing failed; retrying");
                self.backoff.wait().await;
                Ok(Some(vec![]))
            }
        }
    }

    async fn release(&mut self, tags: Vec<Lease>) {
        let ids: Vec<String> = tags.into_iter().map(|t| t.entry).collect();
        if let Err(e) = self.queue.release(&self.cfg.judge, &self.cfg.worker_id, &ids).await {
            tracing::warn!(error = %e, entries = ids.len(), "could not release entries; they return after the lease timeout");
        }
        self.held.remove(&ids);
    }
}

pub struct CoordinatorSink {
    /// When the previous report was stored (rates are per interval between reports).
    pub last_report: Instant,
    pub cfg: WorkerConfig,
    pub coordinator: Coordinator,
    /// To hand back entries whose report the coordinator refused as it was.
    pub queue: Queue,
    pub held: Arc<Held>,
    pub metrics: Metrics,
    pub stop: watch::Receiver<bool>,
}

fn failure(kind: Kind, field: &str, message: String, deliveries: u64) -> v1::item_result::Outcome {
    v1::item_result::Outcome::Failure(v1::ItemFailure { kind: kind as i32, field: field.into(), message, deliveries })
}

/// Errors worth retrying: the coordinator or its dependencies are unavailable.
fn retryable(e: &tonic::Status) -> bool {
    use tonic::Code::*;
    matches!(e.code(), Unavailable | Unknown | DeadlineExceeded | ResourceExhausted | Aborted | Internal | Cancelled)
}

impl Sink<Lease> for CoordinatorSink {
    async fn put(&mut self, results: &[(Lease, Outcome)]) -> Result<(), PipelineError> {
        let wire: Vec<v1::ItemResult> = results
            .iter()
            .map(|(l, o)| v1::ItemResult {
                entry_id: l.entry.clone(),
                job_id: l.job_id.clone(),
                item_id: l.item_id.clone(),
                outcome: Some(match o {
                    Outcome::Verdict(r) => v1::item_result::Outcome::Verdict(record_to_wire(&l.job_id, r)),
                    Outcome::Rejected { field, message } => failure(Kind::Rejected, field, message.clone(), 0),
                    Outcome::Dead { message, deliveries } => failure(Kind::Dead, "", message.clone(), *deliveries),
                    Outcome::Cancelled => failure(Kind::Cancelled, "", "job cancelled".into(), 0),
                }),
            })
            .collect();
        let req = v1::ReportResultsRequest {
            worker_id: self.cfg.worker_id.clone(),
            judge: self.cfg.judge.clone(),
            results: wire,
            fingerprint: self.cfg.fingerprints.judge.clone(),
            meta_fingerprint: self.cfg.fingerprints.meta_rm.clone(),
        };
        // Report until it is stored: the coordinator may be restarting. After shutdown
        // begins, only until the drain timeout (the pipeline then hands the entries back).
        let started = Instant::now();
        let mut backoff = Backoff::new();
        loop {
            match self.coordinator.report(req.clone()).await {
                Ok(r) => {
                    if !r.not_held.is_empty() {
                        // Another worker took these over after a lease timeout; its results stand.
                        tracing::warn!(entries = r.not_held.len(), "results refused: these entries are no longer ours");
                        self.metrics.results_not_held.inc_by(r.not_held.len() as u64);
                    }
                    break;
                }
                Err(e) if matches!(e.code(), tonic::Code::FailedPrecondition | tonic::Code::Unauthenticated | tonic::Code::PermissionDenied) => {
                    // Our weights are not the judge's (it was rebound), or our token is not a
                    // worker's: nothing we judge will be accepted.
                    self.held.refuse(e.message().to_string());
                    return Err(PipelineError::Sink(format!("results refused for these weights: {}", e.message())));
                }
                Err(e) if !retryable(&e) => {
                    // Refused as it is: hand the entries back and carry on; redelivery ends
                    // in the dead letters if it persists.
                    tracing::error!(error = %e, "report refused; releasing its entries");
                    let ids: Vec<String> = results.iter().map(|(l, _)| l.entry.clone()).collect();
                    if let Err(e) = self.queue.release(&self.cfg.judge, &self.cfg.worker_id, &ids).await {
                        tracing::warn!(error = %e, "could not release entries; they return after the lease timeout");
                    }
                    self.held.remove(&ids);
                    return Ok(());
                }
                Err(e) => {
                    tracing::warn!(error = %e, "report failed; retrying");
                    if *self.stop.borrow() && started.elapsed() > self.cfg.drain_timeout {
                        return Err(PipelineError::Sink("the coordinator did not take the report before the drain timeout".into()));
                    }
                    backoff.wait().await;
                }
            }
        }
        let verdicts = results.iter().filter(|(_, o)| o.is_verdict()).count() as u64;
        let (samples, tokens) = results
            .iter()
            .filter_map(|(_, o)| match o {
                Outcome::Verdict(r) => Some((r.samples.len() as u64, r.samples.iter().map(|s| s.completion_tokens as u64).sum::<u64>())),
                _ => None,
            })
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        let m = &self.metrics;
        m.items_done.inc_by(verdicts);
        m.items_failed.inc_by(results.len() as u64 - verdicts);
        m.samples.inc_by(samples);
        m.generated_tokens.inc_by(tokens);
        m.report_seconds.observe(started.elapsed().as_secs_f64());
        let interval = self.last_report.elapsed().as_secs_f64().max(1e-3);
        m.samples_per_second.set(samples as f64 / interval);
        m.tokens_per_second.set(tokens as f64 / interval);
        self.last_report = Instant::now();
        self.held.remove(results.iter().map(|(l, _)| &l.entry));
        Ok(())
    }
}
