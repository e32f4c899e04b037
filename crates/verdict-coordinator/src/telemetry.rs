//! A job's judge telemetry, counted over its stored verdicts a page at a time (samples
//! without their text, which telemetry never reads), for `JobTelemetry` and the dashboard.

use uuid::Uuid;
use verdict_report::Report;
use verdict_store::{Store, StoreError, VerdictFilter};

const PAGE: i64 = 2048;

pub async fn job_report(store: &Store, job: Uuid) -> Result<Report, StoreError> {
    let mut report = Report::new(format!("job {job}"));
    let mut filter = VerdictFilter { with_samples: true, samples_without_text: true, limit: Some(PAGE), ..Default::default() };
    loop {
        let page = store.query_verdicts(job, &filter, None).await?;
        for r in &page {
            report.add(r);
        }
        if (page.len() as i64) < PAGE {
            return Ok(report);
        }
        filter.after_item_id = page.last().map(|r| r.id.clone());
    }
}
