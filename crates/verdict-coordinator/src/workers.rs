//! The worker service: results are committed to Postgres, then their queue entries are
//! acknowledged (or, for dead items, moved to the dead letters). A report that fails to
//! commit acknowledges nothing, so its entries are delivered again.
//!
//! Heartbeats bind the judge name to the weights the worker loads (see
//! `verdict_store::judges`); reports from other weights than the bound ones are refused, so
//! a job is never judged by two checkpoints under one name.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tonic::{Request, Response, Status};
use verdict_proto::convert::record_from_wire;
use verdict_core::Fingerprints;
use verdict_proto::v1::{self, item_failure::Kind, item_result::Outcome as WireOutcome, worker_service_server::WorkerService};
use verdict_queue::{Holding, WorkerInfo};
use verdict_store::{Failure, FailureKind, Outcome};

use crate::auth::{caller, Role};
use crate::error::{job_id, CoordinatorError};
use crate::server::Shared;

pub struct Workers {
    pub shared: Shared,
}

/// How long a worker counts as alive after a heartbeat.
pub const WORKER_TTL: Duration = Duration::from_secs(30);

/// Seconds since the Unix epoch: heartbeat times and live-worker windows.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn weights(fingerprint: &str, meta: &Option<String>) -> Result<Fingerprints, CoordinatorError> {
    if fingerprint.is_empty() {
        return Err(CoordinatorError::Invalid("field `fingerprint` is empty: workers must say which weights they load".into()));
    }
    Ok(Fingerprints::new(fingerprint, meta.clone()))
}

struct Dead {
    entry: String,
    job: String,
    item: String,
    reason: String,
    deliveries: u64,
}

impl Workers {
    /// Keep only the results for entries the reporting worker holds now; return the entry
    /// ids of the others. A result naming another item than its entry carries is refused
    /// whole (INVALID_ARGUMENT): that is a forgery or a bug, never a race.
    async fn keep_held(&self, req: &mut v1::ReportResultsRequest) -> Result<Vec<String>, Status> {
        let triples: Vec<(&str, &str, &str)> = req.results.iter().map(|r| (r.entry_id.as_str(), r.job_id.as_str(), r.item_id.as_str())).collect();
        let holding = self.shared.queue.held(&req.judge, &req.worker_id, &triples).await.map_err(CoordinatorError::from)?;
        if let Some(r) = req.results.iter().zip(&holding).find(|(_, h)| **h == Holding::Mismatch).map(|(r, _)| r) {
            return Err(CoordinatorError::Invalid(format!("entry {} does not carry item {} of job {}", r.entry_id, r.item_id, r.job_id)).into());
        }
        let mut not_held = Vec::new();
        let mut kept = Vec::with_capacity(req.results.len());
        for (r, h) in std::mem::take(&mut req.results).into_iter().zip(holding) {
            if h == Holding::Held {
                kept.push(r);
            } else {
                not_held.push(r.entry_id);
            }
        }
        if !not_held.is_empty() {
            self.shared.metrics.results_not_held.inc_by(not_held.len() as u64);
            tracing::warn!(worker = %req.worker_id, entries = not_held.len(), "results for entries the worker no longer holds were not stored");
        }
        req.results = kept;
        Ok(not_held)
    }
}

#[tonic::async_trait]
impl WorkerService for Workers {
    async fn report_results(&self, req: Request<v1::ReportResultsRequest>) -> Result<Response<v1::ReportResultsResponse>, Status> {
        let started = Instant::now();
        caller(&req)?.require(&[Role::Worker], "report results")?;
        let mut req = req.into_inner();
        // Only the weights the judge is bound to may write its verdicts.
        let from = weights(&req.fingerprint, &req.meta_fingerprint)?;
        let bound = match self.shared.store.judge(&req.judge).await.map_err(CoordinatorError::from)? {
            Some(b) => b,
            // Unbound (a fresh store): these weights bind it, as a heartbeat would.
            None => self.shared.store.bind_judge(&req.judge, &from, None).await.map_err(CoordinatorError::from)?,
        };
        if let Some(b) = Some(bound).filter(|b| b.fingerprints != from) {
            return Err(CoordinatorError::Precondition(format!(
                "judge {} is bound to weights {}{}; these results come from weights {}{}",
                req.judge,
                b.fingerprints.judge,
                b.fingerprints.meta_rm.as_deref().map(|m| format!(" (meta RM {m})")).unwrap_or_default(),
                from.judge,
                from.meta_rm.as_deref().map(|m| format!(" (meta RM {m})")).unwrap_or_default(),
            ))
            .into());
        }
        let not_held = self.keep_held(&mut req).await?;
        let mut outcomes = Vec::with_capacity(req.results.len());
        let mut ack = Vec::new();
        let mut dead = Vec::new();
        let (mut done, mut samples, mut tokens, mut rejected) = (0u64, 0u64, 0u64, 0u64);
        for r in req.results {
            let job = job_id(&r.job_id)?;
            match r.outcome {
                Some(WireOutcome::Verdict(v)) => {
                    let record = record_from_wire(&v).map_err(|e| CoordinatorError::Invalid(format!("result for item {}: {e}", r.item_id)))?;
                    if record.id != r.item_id {
                        return Err(CoordinatorError::Invalid(format!("result for item {} carries item {}", r.item_id, record.id)).into());
                    }
                    if record.fingerprint != from.judge || record.meta_fingerprint.as_ref().is_some_and(|m| Some(m) != from.meta_rm.as_ref()) {
                        return Err(CoordinatorError::Invalid(format!("result for item {} names weights {} but the report comes from {}", r.item_id, record.fingerprint, from.judge)).into());
                    }
                    done += 1;
                    samples += record.samples.len() as u64;
                    tokens += record.samples.iter().map(|s| s.completion_tokens as u64).sum::<u64>();
                    outcomes.push(Outcome::Verdict { job_id: job, record: Box::new(record), worker: req.worker_id.clone() });
                    ack.push(r.entry_id);
                }
                Some(WireOutcome::Failure(f)) => {
                    let kind = match Kind::try_from(f.kind).unwrap_or_default() {
                        Kind::Rejected => FailureKind::Rejected,
                        Kind::Dead => FailureKind::Dead,
                        Kind::Cancelled => FailureKind::Cancelled,
                        Kind::Unspecified => return Err(CoordinatorError::Invalid(format!("failure of item {} has no kind", r.item_id)).into()),
                    };
                    let error = if f.field.is_empty() { f.message.clone() } else { format!("field `{}` {}", f.field, f.message) };
                    match kind {
                        FailureKind::Dead => dead.push(Dead { entry: r.entry_id, job: r.job_id.clone(), item: r.item_id.clone(), reason: error.clone(), deliveries: f.deliveries }),
                        FailureKind::Rejected => {
                            rejected += 1;
                            ack.push(r.entry_id);
                        }
                        FailureKind::Cancelled => ack.push(r.entry_id),
                    }
                    outcomes.push(Outcome::Failure { job_id: job, item_id: r.item_id, failure: Failure { kind, error } });
                }
                None => return Err(CoordinatorError::Invalid(format!("result for item {} has no outcome", r.item_id)).into()),
            }
        }
        // Commit first; only then acknowledge.
        self.shared.store.record(&outcomes).await.map_err(CoordinatorError::from)?;
        let mut acknowledged = self.shared.queue.ack(&req.judge, &ack).await.map_err(CoordinatorError::from)?;
        for d in &dead {
            if self.shared.queue.dead_letter(&req.judge, &d.entry, &d.job, &d.item, &d.reason, d.deliveries).await.map_err(CoordinatorError::from)? {
                acknowledged += 1;
            }
            tracing::warn!(job = %d.job, item = %d.item, reason = %d.reason, "item dead-lettered");
        }
        let m = &self.shared.metrics;
        m.items_done.inc_by(done);
        m.items_dead.inc_by(dead.len() as u64);
        m.items_rejected.with_label_values(&["engine"]).inc_by(rejected);
        m.samples_stored.inc_by(samples);
        m.generated_tokens.inc_by(tokens);
        m.report_seconds.observe(started.elapsed().as_secs_f64());
        Ok(Response::new(v1::ReportResultsResponse { acknowledged: acknowledged as u32, not_held }))
    }

    async fn heartbeat(&self, req: Request<v1::HeartbeatRequest>) -> Result<Response<v1::HeartbeatResponse>, Status> {
        caller(&req)?.require(&[Role::Worker], "send worker heartbeats")?;
        let req = req.into_inner();
        let from = weights(&req.fingerprint, &req.meta_fingerprint)?;
        let context = (req.context_length > 0).then_some(req.context_length);
        // Refused (FAILED_PRECONDITION, naming both fingerprints) while the name is bound to
        // other weights with items waiting. With Postgres away the heartbeat still counts
        // (reports check the binding again): a store outage must not make every worker
        // hand its leases back and judge them all again.
        match self.shared.store.bind_judge(&req.judge, &from, context).await {
            Ok(_) => {}
            Err(e @ verdict_store::StoreError::Conflict(_)) => return Err(CoordinatorError::from(e).into()),
            Err(e) => tracing::warn!(worker = %req.worker_id, error = %e, "cannot check the judge's binding now; heartbeat accepted"),
        }
        let info = WorkerInfo {
            id: req.worker_id,
            judge: req.judge.clone(),
            device: req.device,
            in_flight: req.in_flight,
            seen_at: unix_now(),
            fingerprint: from.judge,
            meta_fingerprint: from.meta_rm,
            generated_tokens: req.generated_tokens,
            tokens_per_second: req.tokens_per_second,
        };
        self.shared.queue.register_worker(&info, WORKER_TTL).await.map_err(CoordinatorError::from)?;
        let cancelled_jobs = self.shared.queue.cancelled_jobs(&req.judge).await.map_err(CoordinatorError::from)?;
        Ok(Response::new(v1::HeartbeatResponse { cancelled_jobs }))
    }

    async fn list_workers(&self, _req: Request<v1::ListWorkersRequest>) -> Result<Response<v1::ListWorkersResponse>, Status> {
        let workers = self.shared.queue.workers().await.map_err(CoordinatorError::from)?;
        Ok(Response::new(v1::ListWorkersResponse {
            workers: workers
                .into_iter()
                .map(|w| v1::WorkerStatus {
                    worker_id: w.id,
                    judge: w.judge,
                    device: w.device,
                    in_flight: w.in_flight,
                    seen_at: w.seen_at,
                    fingerprint: w.fingerprint,
                    meta_fingerprint: w.meta_fingerprint,
                    generated_tokens: w.generated_tokens,
                    tokens_per_second: w.tokens_per_second,
                })
                .collect(),
        }))
    }

    async fn list_judges(&self, _req: Request<v1::ListJudgesRequest>) -> Result<Response<v1::ListJudgesResponse>, Status> {
        let judges = self.shared.store.judges().await.map_err(CoordinatorError::from)?;
        let mut out = Vec::with_capacity(judges.len());
        for j in judges {
            let live = self.shared.live_workers(&j.name).await.unwrap_or(0);
            out.push(v1::JudgeStatus {
                name: j.name,
                fingerprint: j.fingerprints.judge,
                meta_fingerprint: j.fingerprints.meta_rm,
                context_length: j.context_length.unwrap_or(0),
                bound_at: j.bound_at.to_rfc3339(),
                live_workers: live.min(u32::MAX as u64) as u32,
            });
        }
        Ok(Response::new(v1::ListJudgesResponse { judges: out }))
    }
}
