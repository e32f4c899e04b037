//! The verdict service: one verdict, a filtered stream, or a job's export rows. Streams
//! page through the store so a job of any size is sent with bounded memory.

use std::pin::Pin;

use futures::Stream;
use tonic::{Request, Response, Status};
use uuid::Uuid;
use verdict_core::export::{dpo_row, reward_rows, PromptForm};
use verdict_core::{AtK, LabelSpec, VerdictRecord};
use verdict_proto::convert::record_to_wire;
use verdict_proto::v1::{self, verdict_service_server::VerdictService};
use verdict_store::{JobState, VerdictFilter};

use crate::auth::caller;
use crate::error::{job_id, CoordinatorError};
use crate::app::App;

pub struct Verdicts {
    pub app: App,
}

const PAGE: i64 = 1024;

type Out<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Page through a job's verdicts, sending what `f` makes of each page, at most `limit`
/// rows in all (`f` may drop records: a re-vote's filters apply after it).
fn paged<T: Send + 'static>(
    app: App,
    job: Uuid,
    mut filter: VerdictFilter,
    limit: Option<i64>,
    f: impl Fn(Vec<VerdictRecord>) -> Result<Vec<T>, Status> + Send + 'static,
) -> Out<T> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        let total = limit.unwrap_or(i64::MAX);
        let mut sent = 0i64;
        loop {
            filter.limit = Some(PAGE);
            let page = match app.store.query_verdicts(job, &filter, None).await {
                Ok(p) => p,
                Err(e) => {
                    let _ = tx.send(Err(CoordinatorError::from(e).into())).await;
                    return;
                }
            };
            let n = page.len() as i64;
            filter.after_item_id = page.last().map(|r| r.id.clone());
            let rows = match f(page) {
                Ok(rows) => rows,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            for row in rows.into_iter().take((total - sent).max(0) as usize) {
                if tx.send(Ok(row)).await.is_err() {
                    return;
                }
                sent += 1;
            }
            if n < PAGE || sent >= total {
                return;
            }
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// A re-vote at the k a request asks for (`None`: the stored verdicts), checked against the
/// job's spec up front.
fn revote_at(job: &LabelSpec, k: Option<u32>, k_meta: Option<u32>) -> Result<Option<(AtK, LabelSpec)>, Status> {
    let Some(k) = k else {
        return match k_meta {
            Some(_) => Err(Status::invalid_argument("k_meta (--meta-rm-k) needs k (--k)")),
            None => Ok(None),
        };
    };
    let at = AtK { k, k_meta };
    let spec = at.spec(job).map_err(|e| Status::invalid_argument(e.to_string()))?;
    Ok(Some((at, spec)))
}

/// `record` re-voted as `at` says, if it says anything.
fn revoted(at: &Option<(AtK, LabelSpec)>, record: VerdictRecord) -> Result<VerdictRecord, Status> {
    match at {
        Some((at, spec)) => at.apply(spec, record).map_err(|e| Status::failed_precondition(e.to_string())),
        None => Ok(record),
    }
}

fn json_row<T: serde::Serialize>(row: &T, form: v1::PromptForm) -> Result<v1::ExportRow, Status> {
    serde_json::to_string(row).map(|json| v1::ExportRow { json, form: form as i32 }).map_err(|e| Status::internal(e.to_string()))
}

#[tonic::async_trait]
impl VerdictService for Verdicts {
    async fn get_verdict(&self, req: Request<v1::GetVerdictRequest>) -> Result<Response<v1::VerdictRecord>, Status> {
        let who = caller(&req)?;
        let req = req.into_inner();
        let job = job_id(&req.job_id)?;
        self.app.owned_job(&who, job).await?;
        let r = self.app.store.get_verdict(job, &req.item_id).await.map_err(CoordinatorError::from)?;
        Ok(Response::new(record_to_wire(&req.job_id, &r)))
    }

    type QueryVerdictsStream = Out<v1::VerdictRecord>;

    async fn query_verdicts(&self, req: Request<v1::QueryVerdictsRequest>) -> Result<Response<Self::QueryVerdictsStream>, Status> {
        let who = caller(&req)?;
        let req = req.into_inner();
        let job = job_id(&req.job_id)?;
        let row = self.app.owned_job(&who, job).await?;
        let at = revote_at(&row.spec, req.k, req.k_meta)?;
        let wanted = VerdictFilter {
            winner: req.winner,
            min_margin: req.min_margin,
            ties: req.ties,
            min_agreement: req.min_agreement,
            after_item_id: (!req.after_item_id.is_empty()).then_some(req.after_item_id),
            limit: None,
            with_samples: !req.without_samples,
            samples_without_text: false,
            votes_only: false,
        };
        // Stored verdicts are filtered by the store; re-voted ones here, after the vote,
        // which needs every record's samples.
        let filter = match at {
            None => wanted.clone(),
            Some(_) => VerdictFilter {
                after_item_id: wanted.after_item_id.clone(),
                with_samples: true,
                samples_without_text: !wanted.with_samples,
                // Records sent without samples need only the votes (one narrow row each).
                votes_only: !wanted.with_samples,
                ..Default::default()
            },
        };
        let limit = (req.limit > 0).then_some(req.limit as i64);
        let job_str = job.to_string();
        Ok(Response::new(paged(self.app.clone(), job, filter, limit, move |page| {
            let mut out = Vec::with_capacity(page.len());
            for r in page {
                let mut r = revoted(&at, r)?;
                if at.is_some() && !wanted.keeps(&r.verdict) {
                    continue;
                }
                if !wanted.with_samples {
                    r.samples.clear();
                }
                out.push(record_to_wire(&job_str, &r));
            }
            Ok(out)
        })))
    }

    type ExportJobStream = Out<v1::ExportRow>;

    async fn job_telemetry(&self, req: Request<v1::JobTelemetryRequest>) -> Result<Response<v1::JobTelemetryResponse>, Status> {
        let who = caller(&req)?;
        let job = job_id(&req.into_inner().job_id)?;
        // A job that does not exist is NOT_FOUND, not an empty report.
        self.app.owned_job(&who, job).await?;
        let report = crate::telemetry::job_report(&self.app.store, job).await.map_err(CoordinatorError::from)?;
        let json = serde_json::to_string(&report).map_err(|e| Status::internal(format!("telemetry of job {job}: {e}")))?;
        Ok(Response::new(v1::JobTelemetryResponse { json }))
    }

    async fn export_job(&self, req: Request<v1::ExportJobRequest>) -> Result<Response<Self::ExportJobStream>, Status> {
        let who = caller(&req)?;
        let req = req.into_inner();
        let job = job_id(&req.job_id)?;
        let row = self.app.owned_job(&who, job).await?;
        let progress = self.app.store.progress(job).await.map_err(CoordinatorError::from)?;
        // Training data from half a job looks like training data from all of it: refuse
        // unless asked for explicitly.
        let state = row.state(&progress);
        if !req.partial && matches!(state, JobState::Open | JobState::Running) {
            return Err(CoordinatorError::Precondition(format!(
                "job {job} is {}: {} of its {} item(s) have no verdict yet; wait for it (verdict watch {job}) or export what is stored with --partial",
                if state == JobState::Open { "still receiving items" } else { "still running" },
                progress.queued,
                progress.total
            ))
            .into());
        }
        let format = v1::ExportFormat::try_from(req.format).unwrap_or_default();
        let form = match v1::PromptForm::try_from(req.form).unwrap_or_default() {
            v1::PromptForm::Standard => PromptForm::Standard,
            v1::PromptForm::Conversational => PromptForm::Conversational,
            v1::PromptForm::Auto => PromptForm::for_job(self.app.store.has_conversations(job).await.map_err(CoordinatorError::from)?),
        };
        let wire_form = match form {
            PromptForm::Standard => v1::PromptForm::Standard,
            PromptForm::Conversational => v1::PromptForm::Conversational,
        };
        let at = revote_at(&row.spec, req.k, req.k_meta)?;
        let whole = matches!(format, v1::ExportFormat::Verdicts | v1::ExportFormat::Unspecified);
        // A re-vote reads the samples' scores; only whole records need their text.
        let filter = VerdictFilter { with_samples: whole || at.is_some(), samples_without_text: !whole, votes_only: !whole, ..Default::default() };
        let min_margin = req.min_margin;
        let refused = |e: verdict_core::export::ExportError| Status::failed_precondition(e.to_string());
        Ok(Response::new(paged(self.app.clone(), job, filter, None, move |page| {
            let mut out = Vec::new();
            for r in page {
                let r = &revoted(&at, r)?;
                match format {
                    v1::ExportFormat::Dpo => {
                        if let Some(row) = dpo_row(r, min_margin, form).map_err(refused)? {
                            out.push(json_row(&row, wire_form)?);
                        }
                    }
                    v1::ExportFormat::Rewards => {
                        for row in reward_rows(r, form).map_err(refused)? {
                            out.push(json_row(&row, wire_form)?);
                        }
                    }
                    _ => out.push(json_row(r, wire_form)?),
                }
            }
            Ok(out)
        })))
    }
}
