//! A worker's report and heartbeat. A report's results are kept only for the entries the
//! reporting worker holds now, committed to Postgres, and only then acknowledged (or, for
//! dead items, moved to the dead letters); a report that fails to commit acknowledges
//! nothing, so its entries are delivered again.
//!
//! Heartbeats bind the judge name to the weights the worker loads (see
//! `verdict_store::judges`); reports from other weights than the bound ones are refused, so
//! a job is never judged by two checkpoints under one name.

use uuid::Uuid;
use verdict_core::{Fingerprints, VerdictRecord};
use verdict_queue::{Holding, WorkerInfo};
use verdict_store::{Failure, FailureKind, Outcome};

use crate::app::{unix_now, App, WORKER_TTL};
use crate::error::{CoordinatorError, Result as AppResult};

/// One worker's results for the entries it leased.
#[derive(Debug)]
pub struct Report {
    pub worker: String,
    pub judge: String,
    /// The weights that produced the results.
    pub weights: Fingerprints,
    pub results: Vec<Reported>,
}

/// One entry's result.
#[derive(Debug)]
pub struct Reported {
    pub entry: String,
    pub job: Uuid,
    pub item: String,
    pub result: Result,
}

/// What became of an item.
#[derive(Debug)]
pub enum Result {
    Verdict(Box<VerdictRecord>),
    Failure { kind: FailureKind, error: String, deliveries: u64 },
}

/// What the coordinator did with a report.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReportOutcome {
    /// Entries acknowledged or moved to the dead letters.
    pub acknowledged: u64,
    /// Entries whose results were not stored: the worker no longer holds them.
    pub not_held: Vec<String>,
}

/// A worker's heartbeat.
#[derive(Debug)]
pub struct Beat {
    pub worker: String,
    pub judge: String,
    pub device: String,
    pub in_flight: u32,
    pub weights: Fingerprints,
    pub context_length: Option<u32>,
    pub generated_tokens: u64,
    pub tokens_per_second: f64,
}

impl App {
    /// Store a report's results for the entries its worker holds, then acknowledge them.
    pub async fn report(&self, mut report: Report) -> AppResult<ReportOutcome> {
        self.check_binding(&report.judge, &report.weights).await?;
        for r in &report.results {
            if let Result::Verdict(v) = &r.result {
                if v.id != r.item {
                    return Err(CoordinatorError::Invalid(format!("result for item {} carries item {}", r.item, v.id)));
                }
                if v.fingerprint != report.weights.judge || v.meta_fingerprint.as_ref().is_some_and(|m| Some(m) != report.weights.meta_rm.as_ref()) {
                    return Err(CoordinatorError::Invalid(format!("result for item {} names weights {} but the report comes from {}", r.item, v.fingerprint, report.weights.judge)));
                }
            }
        }
        let not_held = self.keep_held(&mut report).await?;
        let mut outcomes = Vec::with_capacity(report.results.len());
        let (mut ack, mut dead) = (Vec::new(), Vec::new());
        let (mut done, mut samples, mut tokens, mut rejected) = (0u64, 0u64, 0u64, 0u64);
        for r in report.results {
            match r.result {
                Result::Verdict(record) => {
                    done += 1;
                    samples += record.samples.len() as u64;
                    tokens += record.samples.iter().map(|s| s.completion_tokens as u64).sum::<u64>();
                    outcomes.push(Outcome::Verdict { job_id: r.job, record, worker: report.worker.clone() });
                    ack.push(r.entry);
                }
                Result::Failure { kind, error, deliveries } => {
                    match kind {
                        FailureKind::Dead => dead.push((r.entry, r.job, r.item.clone(), error.clone(), deliveries)),
                        FailureKind::Rejected => {
                            rejected += 1;
                            ack.push(r.entry);
                        }
                        FailureKind::Cancelled => ack.push(r.entry),
                    }
                    outcomes.push(Outcome::Failure { job_id: r.job, item_id: r.item, failure: Failure { kind, error } });
                }
            }
        }
        // Commit first; only then acknowledge.
        self.store.record(&outcomes).await?;
        let mut acknowledged = self.queue.ack(&report.judge, &ack).await?;
        for (entry, job, item, reason, deliveries) in &dead {
            if self.queue.dead_letter(&report.judge, entry, &job.to_string(), item, reason, *deliveries).await? {
                acknowledged += 1;
            }
            tracing::warn!(%job, %item, %reason, "item dead-lettered");
        }
        let m = &self.metrics;
        m.items_done.inc_by(done);
        m.items_dead.inc_by(dead.len() as u64);
        m.items_rejected.with_label_values(&["engine"]).inc_by(rejected);
        m.samples_stored.inc_by(samples);
        m.generated_tokens.inc_by(tokens);
        Ok(ReportOutcome { acknowledged, not_held })
    }

    /// Only the weights the judge is bound to may write its verdicts. An unbound judge (a
    /// fresh store) is bound by these weights, as a heartbeat would bind it.
    async fn check_binding(&self, judge: &str, from: &Fingerprints) -> AppResult<()> {
        let bound = match self.store.judge(judge).await? {
            Some(b) => b,
            None => self.store.bind_judge(judge, from, None).await?,
        };
        if bound.fingerprints != *from {
            let meta = |f: &Fingerprints| f.meta_rm.as_deref().map(|m| format!(" (meta RM {m})")).unwrap_or_default();
            return Err(CoordinatorError::Precondition(format!(
                "judge {judge} is bound to weights {}{}; these results come from weights {}{}",
                bound.fingerprints.judge,
                meta(&bound.fingerprints),
                from.judge,
                meta(from),
            )));
        }
        Ok(())
    }

    /// Keep only the results for entries the reporting worker holds now; return the entry
    /// ids of the others. A result naming another item than its entry carries is refused
    /// whole (INVALID_ARGUMENT): that is a forgery or a bug, never a race.
    async fn keep_held(&self, report: &mut Report) -> AppResult<Vec<String>> {
        let jobs: Vec<String> = report.results.iter().map(|r| r.job.to_string()).collect();
        let triples: Vec<(&str, &str, &str)> = report.results.iter().zip(&jobs).map(|(r, j)| (r.entry.as_str(), j.as_str(), r.item.as_str())).collect();
        let holding = self.queue.held(&report.judge, &report.worker, &triples).await?;
        if let Some((r, _)) = report.results.iter().zip(&holding).find(|(_, h)| **h == Holding::Mismatch) {
            return Err(CoordinatorError::Invalid(format!("entry {} does not carry item {} of job {}", r.entry, r.item, r.job)));
        }
        let mut not_held = Vec::new();
        let mut kept = Vec::with_capacity(report.results.len());
        for (r, h) in std::mem::take(&mut report.results).into_iter().zip(holding) {
            if h == Holding::Held {
                kept.push(r);
            } else {
                not_held.push(r.entry);
            }
        }
        if !not_held.is_empty() {
            self.metrics.results_not_held.inc_by(not_held.len() as u64);
            tracing::warn!(worker = %report.worker, entries = not_held.len(), "results for entries the worker no longer holds were not stored");
        }
        report.results = kept;
        Ok(not_held)
    }

    /// Record a heartbeat: bind or confirm the judge's weights, mark the worker alive, and
    /// answer with the judge's cancelled jobs.
    pub async fn heartbeat(&self, beat: Beat) -> AppResult<Vec<String>> {
        // Refused (FAILED_PRECONDITION, naming both fingerprints) while the name is bound to
        // other weights with items waiting. With Postgres away the heartbeat still counts
        // (reports check the binding again): a store outage must not make every worker
        // hand its leases back and judge them all again.
        match self.store.bind_judge(&beat.judge, &beat.weights, beat.context_length).await {
            Ok(_) => {}
            Err(e @ verdict_store::StoreError::Conflict(_)) => return Err(e.into()),
            Err(e) => tracing::warn!(worker = %beat.worker, error = %e, "cannot check the judge's binding now; heartbeat accepted"),
        }
        let info = WorkerInfo {
            id: beat.worker,
            judge: beat.judge.clone(),
            device: beat.device,
            in_flight: beat.in_flight,
            seen_at: unix_now(),
            fingerprint: beat.weights.judge,
            meta_fingerprint: beat.weights.meta_rm,
            generated_tokens: beat.generated_tokens,
            tokens_per_second: beat.tokens_per_second,
        };
        self.queue.register_worker(&info, WORKER_TTL).await?;
        Ok(self.queue.cancelled_jobs(&beat.judge).await?)
    }
}
