//! The worker service, thin: decode a report or heartbeat into the application's types
//! ([`crate::app`]), call it, encode the answer, and count refusals and failures.

use std::time::Instant;

use tonic::{Request, Response, Status};
use verdict_core::Fingerprints;
use verdict_proto::convert::record_from_wire;
use verdict_proto::v1::{self, item_failure::Kind, item_result::Outcome as WireOutcome, worker_service_server::WorkerService};
use verdict_store::FailureKind;

use crate::app::{App, Beat, Report, Reported, ReportedResult};
use crate::auth::{caller, Role};
use crate::error::{job_id, CoordinatorError};

pub struct Workers {
    pub app: App,
}

fn weights(fingerprint: &str, meta: &Option<String>) -> Result<Fingerprints, CoordinatorError> {
    if fingerprint.is_empty() {
        return Err(CoordinatorError::Invalid("field `fingerprint` is empty: workers must say which weights they load".into()));
    }
    Ok(Fingerprints::new(fingerprint, meta.clone()))
}

/// A report as the application takes it; a malformed result refuses the whole report.
fn report_from_wire(req: v1::ReportResultsRequest) -> Result<Report, CoordinatorError> {
    let weights = weights(&req.fingerprint, &req.meta_fingerprint)?;
    let mut results = Vec::with_capacity(req.results.len());
    for r in req.results {
        let job = job_id(&r.job_id)?;
        let result = match r.outcome {
            Some(WireOutcome::Verdict(v)) => {
                ReportedResult::Verdict(Box::new(record_from_wire(&v).map_err(|e| CoordinatorError::Invalid(format!("result for item {}: {e}", r.item_id)))?))
            }
            Some(WireOutcome::Failure(f)) => {
                let kind = match Kind::try_from(f.kind).unwrap_or_default() {
                    Kind::Rejected => FailureKind::Rejected,
                    Kind::Dead => FailureKind::Dead,
                    Kind::Cancelled => FailureKind::Cancelled,
                    Kind::Unspecified => return Err(CoordinatorError::Invalid(format!("failure of item {} has no kind", r.item_id))),
                };
                let error = if f.field.is_empty() { f.message } else { format!("field `{}` {}", f.field, f.message) };
                ReportedResult::Failure { kind, error, deliveries: f.deliveries }
            }
            None => return Err(CoordinatorError::Invalid(format!("result for item {} has no outcome", r.item_id))),
        };
        results.push(Reported { entry: r.entry_id, job, item: r.item_id, result });
    }
    Ok(Report { worker: req.worker_id, judge: req.judge, weights, results })
}

impl Workers {
    async fn report(&self, req: Request<v1::ReportResultsRequest>) -> Result<Response<v1::ReportResultsResponse>, Status> {
        let started = Instant::now();
        caller(&req)?.require(&[Role::Worker], "report results")?;
        let out = self.app.report(report_from_wire(req.into_inner())?).await?;
        self.app.metrics.report_seconds.observe(started.elapsed().as_secs_f64());
        Ok(Response::new(v1::ReportResultsResponse { acknowledged: out.acknowledged as u32, not_held: out.not_held }))
    }

    async fn beat(&self, req: Request<v1::HeartbeatRequest>) -> Result<Response<v1::HeartbeatResponse>, Status> {
        caller(&req)?.require(&[Role::Worker], "send worker heartbeats")?;
        let req = req.into_inner();
        let beat = Beat {
            weights: weights(&req.fingerprint, &req.meta_fingerprint)?,
            context_length: (req.context_length > 0).then_some(req.context_length),
            worker: req.worker_id,
            judge: req.judge,
            device: req.device,
            in_flight: req.in_flight,
            generated_tokens: req.generated_tokens,
            tokens_per_second: req.tokens_per_second,
        };
        Ok(Response::new(v1::HeartbeatResponse { cancelled_jobs: self.app.heartbeat(beat).await? }))
    }
}

/// Count a refused or failed call under its gRPC code.
fn counted<T>(failures: &prometheus::IntCounterVec, r: Result<T, Status>) -> Result<T, Status> {
    if let Err(e) = &r {
        failures.with_label_values(&[&format!("{:?}", e.code())]).inc();
    }
    r
}

#[tonic::async_trait]
impl WorkerService for Workers {
    async fn report_results(&self, req: Request<v1::ReportResultsRequest>) -> Result<Response<v1::ReportResultsResponse>, Status> {
        counted(&self.app.metrics.report_failures, self.report(req).await)
    }

    async fn heartbeat(&self, req: Request<v1::HeartbeatRequest>) -> Result<Response<v1::HeartbeatResponse>, Status> {
        counted(&self.app.metrics.heartbeat_failures, self.beat(req).await)
    }

    async fn list_workers(&self, _req: Request<v1::ListWorkersRequest>) -> Result<Response<v1::ListWorkersResponse>, Status> {
        let workers = self.app.queue.workers().await.map_err(CoordinatorError::from)?;
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
        let judges = self.app.store.judges().await.map_err(CoordinatorError::from)?;
        let mut out = Vec::with_capacity(judges.len());
        for j in judges {
            let live = self.app.live_workers(&j.name).await.unwrap_or(0);
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
