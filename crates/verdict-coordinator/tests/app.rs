//! The application layer on its own, without gRPC: a worker's report against a real,
//! throwaway Redis and Postgres. Only what the reporter holds is stored; a forged pairing
//! of entry and item, or other weights than the judge's, is refused whole; stored results
//! are acknowledged and their items counted.

use std::time::Duration;

use verdict_coordinator::app::{App, Report, ReportOutcome, Reported, ReportedResult};
use verdict_coordinator::error::CoordinatorError;
use verdict_coordinator::metrics::Metrics;
use verdict_core::{aggregate, ContentKey, FinishReason, Fingerprints, Item, LabelSpec, Sample, SpecLimits, VerdictRecord};
use verdict_queue::{Queue, QueueConfig};
use verdict_store::{FailureKind, NewItem, Store};
use verdict_testkit::{Postgres, Redis};

fn item(i: usize) -> Item {
    Item::from_json_line(&format!(r#"{{"id":"i{i}","prompt":"p{i}","chosen":"good {i}","rejected":"bad"}}"#)).unwrap()
}

fn record(spec: &LabelSpec, it: &Item, weights: &Fingerprints) -> VerdictRecord {
    let samples: Vec<Sample> = (0..2).map(|j| Sample::from_generation(j, vec![0, 1], "Analysis: ok.\nScores: \\boxed{8, 3}".into(), FinishReason::ScoreBlock, false, 100, 20)).collect();
    let verdict = aggregate(spec, ContentKey::of_item(it).seed_bits(), 2, &samples);
    VerdictRecord::new(it, ContentKey::of(it, spec, weights).hex(), spec, weights, verdict, samples)
}

fn verdict_for(entry: &str, job: uuid::Uuid, r: VerdictRecord) -> Reported {
    Reported { entry: entry.into(), job, item: r.id.clone(), result: ReportedResult::Verdict(Box::new(r)) }
}

/// An application over a throwaway Redis and Postgres (kept alive by the caller).
async fn app() -> (Redis, Postgres, App) {
    let (redis, pg) = (Redis::start(), Postgres::start());
    let store = Store::connect(&pg.create_database("app"), 4).await.unwrap();
    let queue = Queue::connect(&redis.url(), QueueConfig::default()).await.unwrap();
    (redis, pg, App { store, queue, metrics: Metrics::new(), limits: SpecLimits::default() })
}

#[tokio::test]
async fn a_report_stores_what_its_worker_holds_then_acknowledges_it() {
    let (redis, _pg, app) = app().await;
    let (spec, weights) = (LabelSpec::new("tiny"), Fingerprints::new("fp-a", None));
    let job = app.store.create_job("j", &spec, "anonymous").await.unwrap();
    let items: Vec<Item> = (0..3).map(item).collect();
    let new: Vec<NewItem> = items
        .iter()
        .map(|it| NewItem { item_id: it.id.clone(), key: ContentKey::of(it, &spec, &weights).hex(), content: ContentKey::of_item(it).hex(), item: it.clone() })
        .collect();
    app.store.insert_items(job.id, &new).await.unwrap();
    assert_eq!(app.enqueue(&job, items.iter().map(|it| (it.id.clone(), it.clone())).collect()).await.unwrap(), 3);
    let mut conn = Queue::lease_connection(&redis.url(), Duration::from_millis(100)).await.unwrap();
    let leased = app.queue.lease("tiny", "w1", 10, Duration::from_millis(100), &mut conn).await.unwrap();
    let entry = |i: usize| leased[i].id.clone();
    let report = |worker: &str, weights: &Fingerprints, results: Vec<Reported>| Report { worker: worker.into(), judge: "tiny".into(), weights: weights.clone(), results };

    // Another worker's report for w1's entry: nothing stored, the entry named back.
    let out = app.report(report("w2", &weights, vec![verdict_for(&entry(0), job.id, record(&spec, &items[0], &weights))])).await.unwrap();
    assert_eq!(out, ReportOutcome { acknowledged: 0, not_held: vec![entry(0)] });
    // The holder pairing an entry with another item than it carries: refused whole.
    let forged = app.report(report("w1", &weights, vec![verdict_for(&entry(0), job.id, record(&spec, &items[1], &weights))])).await.unwrap_err();
    assert!(matches!(&forged, CoordinatorError::Invalid(m) if m.contains("does not carry")), "{forged}");
    // The first report bound the judge to fp-a: other weights are refused.
    let other = Fingerprints::new("fp-b", None);
    let refused = app.report(report("w1", &other, vec![verdict_for(&entry(0), job.id, record(&spec, &items[0], &other))])).await.unwrap_err();
    assert!(matches!(&refused, CoordinatorError::Precondition(m) if m.contains("fp-a") && m.contains("fp-b")), "{refused}");
    assert_eq!(app.store.progress(job.id).await.unwrap().done, 0, "nothing refused was stored");

    // The holder's report: two verdicts and a rejection, stored, then all acknowledged.
    let rejected = Reported { entry: entry(2), job: job.id, item: "i2".into(), result: ReportedResult::Failure { kind: FailureKind::Rejected, error: "too long".into(), deliveries: 1 } };
    let out = app
        .report(report("w1", &weights, vec![verdict_for(&entry(0), job.id, record(&spec, &items[0], &weights)), verdict_for(&entry(1), job.id, record(&spec, &items[1], &weights)), rejected]))
        .await
        .unwrap();
    assert_eq!(out, ReportOutcome { acknowledged: 3, not_held: vec![] });
    let p = app.store.progress(job.id).await.unwrap();
    assert_eq!((p.done, p.rejected, p.queued), (2, 1, 0));
    let stats = app.queue.stats("tiny").await.unwrap();
    assert_eq!((stats.length, stats.pending), (0, 0), "acknowledged entries are gone");
    assert_eq!(app.metrics.items_done.get(), 2);
}

#[tokio::test]
async fn a_submitted_message_is_stored_queued_and_its_bad_items_named() {
    use verdict_coordinator::app::{Incoming, Rejection, Submitted};
    let (_redis, _pg, app) = app().await;
    let spec = LabelSpec::new("tiny");
    let job = app.store.create_job("j", &spec, "anonymous").await.unwrap();
    let weights = app.judge_weights("tiny").await.unwrap();
    let undecodable = Rejection { index: 10, item_id: "x".into(), field: "responses".into(), message: "field `responses` is empty".into() };
    let mut other = item(2);
    other.responses[0] = "another answer".into();
    // Positions 10..: a message later in its stream.
    let message: Vec<Incoming> = vec![Err(undecodable.clone()), Ok((11, item(1))), Ok((12, item(2))), Ok((13, item(1))), Ok((14, other))];
    let mut out = Submitted::default();
    app.submit_batch(&job, &weights, message, &mut out).await.unwrap();
    assert_eq!(out.already_present, 1, "an exact repeat within the message is counted, not queued twice");
    assert_eq!(out.rejected.len(), 2, "{:?}", out.rejected);
    assert_eq!(out.rejected[0], undecodable, "the transport's rejection is passed on as it came");
    assert_eq!((out.rejected[1].index, out.rejected[1].item_id.as_str(), out.rejected[1].field.as_str()), (14, "i2", "id"), "the id reused with other content is named at its position");
    assert_eq!(app.queue.stats("tiny").await.unwrap().length, 2, "two items queued");
    assert_eq!(app.store.progress(job.id).await.unwrap().queued, 2);

    // The same items again (a resumed submission): present, nothing queued twice.
    let mut again = Submitted::default();
    app.submit_batch(&job, &weights, vec![Ok((0, item(1))), Ok((1, item(2)))], &mut again).await.unwrap();
    assert_eq!((again.already_present, again.rejected.len()), (2, 0));
    assert_eq!(app.queue.stats("tiny").await.unwrap().length, 2);
    let view = app.job_with_progress(job.id).await.unwrap();
    assert_eq!((view.progress.total, view.live_workers), (2, Some(0)));
}
