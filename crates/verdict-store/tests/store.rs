//! The store against a real, throwaway Postgres (one database per test).

use std::sync::OnceLock;

use uuid::Uuid;
use verdict_core::{aggregate, ContentKey, FinishReason, Item, LabelSpec, ParseFailure, ParseStatus, Sample, VerdictRecord};
use verdict_store::{Failure, FailureKind, NewItem, Outcome, Store, VerdictFilter};
use verdict_testkit::{unique, Postgres};

static PG: OnceLock<Postgres> = OnceLock::new();

async fn store() -> Store {
    let pg = PG.get_or_init(Postgres::start);
    let url = pg.create_database(&unique("store"));
    Store::connect(&url, 4).await.unwrap()
}

fn item(i: usize) -> Item {
    Item::from_json_line(&format!(r#"{{"id":"i{i:02}","prompt":"p{i}","chosen":"good {i}","rejected":"bad"}}"#)).unwrap()
}

fn new_items(spec: &LabelSpec, range: std::ops::Range<usize>) -> Vec<NewItem> {
    range
        .map(|i| {
            let it = item(i);
            NewItem { item_id: it.id.clone(), key: ContentKey::of(&it, spec).hex(), item: it }
        })
        .collect()
}

fn record(spec: &LabelSpec, it: &Item, scores: &[[u8; 2]]) -> VerdictRecord {
    let samples: Vec<Sample> = scores
        .iter()
        .enumerate()
        .map(|(j, s)| Sample::from_generation(j as u32, vec![1, 0], format!("Analysis: ok.\nScores: \\boxed{{{}, {}}}", s[1], s[0]), FinishReason::ScoreBlock, j == 1, 100, 20))
        .chain(std::iter::once(Sample::from_generation(9, vec![0, 1], "no scores".into(), FinishReason::Eos, false, 100, 3)))
        .collect();
    let verdict = aggregate(spec, ContentKey::of_item(it).seed_bits(), 2, &samples);
    VerdictRecord::new(it, ContentKey::of(it, spec).hex(), spec, verdict, samples)
}

#[tokio::test]
async fn jobs_items_results_round_trip() {
    let s = store().await;
    let spec = LabelSpec::new("tiny");
    let job = s.create_job("first", &spec).await.unwrap();
    assert_eq!(s.get_job(job.id).await.unwrap().spec, spec);
    let new = s.insert_items(job.id, &new_items(&spec, 0..5)).await.unwrap();
    assert_eq!(new.len(), 5);
    assert!(s.insert_items(job.id, &new_items(&spec, 3..6)).await.unwrap() == vec!["i05".to_string()], "re-sent ids are left alone");
    let p = s.progress(job.id).await.unwrap();
    assert_eq!((p.total, p.queued), (6, 6));

    let r0 = record(&spec, &item(0), &[[8, 3], [7, 5]]);
    let out = vec![
        Outcome::Verdict { job_id: job.id, record: Box::new(r0.clone()), worker: "w1".into() },
        Outcome::Failure { job_id: job.id, item_id: "i01".into(), failure: Failure { kind: FailureKind::Rejected, error: "field `prompt` too long".into() } },
    ];
    s.record(&out).await.unwrap();
    s.record(&out).await.unwrap(); // a redelivery writes the same rows
    let back = s.get_verdict(job.id, "i00").await.unwrap();
    assert_eq!(back, r0, "what goes in comes out");
    assert_eq!(back.samples.len(), 3);
    assert_eq!(back.samples[2].status, ParseStatus::Invalid(ParseFailure::NoScoreBlock));
    assert_eq!(back.samples[1].status, ParseStatus::Forced);
    let p = s.progress(job.id).await.unwrap();
    assert_eq!((p.done, p.rejected, p.queued), (1, 1, 4));
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM samples").fetch_one(s.pool()).await.unwrap();
    assert_eq!(n, 3, "no duplicate sample rows");

    // A dead declaration arriving after the verdict never undoes it.
    s.record(&[Outcome::Failure { job_id: job.id, item_id: "i00".into(), failure: Failure { kind: FailureKind::Dead, error: "x".into() } }]).await.unwrap();
    assert_eq!(s.progress(job.id).await.unwrap().done, 1);
}

#[tokio::test]
async fn dedup_answers_from_stored_verdicts_of_the_same_key() {
    let s = store().await;
    let spec = LabelSpec::new("tiny");
    let a = s.create_job("a", &spec).await.unwrap();
    s.insert_items(a.id, &new_items(&spec, 0..2)).await.unwrap();
    let r = record(&spec, &item(0), &[[9, 2]]);
    s.record(&[Outcome::Verdict { job_id: a.id, record: Box::new(r.clone()), worker: "w".into() }]).await.unwrap();

    let b = s.create_job("b", &spec).await.unwrap();
    let ids = s.insert_items(b.id, &new_items(&spec, 0..3)).await.unwrap();
    let answered = s.dedup(b.id, &ids).await.unwrap();
    assert_eq!(answered, vec!["i00".to_string()]);
    let copy = s.get_verdict(b.id, "i00").await.unwrap();
    assert_eq!(copy.verdict, r.verdict);
    assert_eq!(copy.samples, r.samples);
    let p = s.progress(b.id).await.unwrap();
    assert_eq!((p.done, p.deduplicated, p.queued), (1, 1, 2));
    assert_eq!(s.still_queued(b.id, &ids).await.unwrap().len(), 2);

    // Another spec (another seed) is another key: no reuse.
    let other = LabelSpec { seed: 5, ..spec.clone() };
    let c = s.create_job("c", &other).await.unwrap();
    let ids = s.insert_items(c.id, &new_items(&other, 0..1)).await.unwrap();
    assert!(s.dedup(c.id, &ids).await.unwrap().is_empty());
}

#[tokio::test]
async fn queries_filter_and_page() {
    let s = store().await;
    let spec = LabelSpec::new("tiny");
    let job = s.create_job("q", &spec).await.unwrap();
    s.insert_items(job.id, &new_items(&spec, 0..4)).await.unwrap();
    let rs = [record(&spec, &item(0), &[[9, 2]]), record(&spec, &item(1), &[[2, 9]]), record(&spec, &item(2), &[[5, 5]]), record(&spec, &item(3), &[[6, 5]])];
    s.record(&rs.iter().map(|r| Outcome::Verdict { job_id: job.id, record: Box::new(r.clone()), worker: "w".into() }).collect::<Vec<_>>()).await.unwrap();
    let q = |f: VerdictFilter| {
        let s = s.clone();
        async move { s.query_verdicts(job.id, &f, None).await.unwrap().into_iter().map(|r| r.id).collect::<Vec<_>>() }
    };
    assert_eq!(q(VerdictFilter { winner: Some(1), ties: Some(false), ..Default::default() }).await, ["i01"]);
    assert_eq!(q(VerdictFilter { min_margin: Some(2), ..Default::default() }).await, ["i00", "i01"]);
    assert_eq!(q(VerdictFilter { ties: Some(true), ..Default::default() }).await, ["i02"]);
    assert_eq!(q(VerdictFilter { after_item_id: Some("i01".into()), limit: Some(1), ..Default::default() }).await, ["i02"]);
    assert!(s.query_verdicts(job.id, &VerdictFilter::default(), None).await.unwrap()[0].samples.is_empty(), "samples only on request");
    assert!(s.get_verdict(job.id, "nope").await.is_err());
    assert!(s.get_job(Uuid::new_v4()).await.is_err());
}

#[tokio::test]
async fn cancel_seal_list_and_stale_claims() {
    let s = store().await;
    let spec = LabelSpec::new("tiny");
    let a = s.create_job("a", &spec).await.unwrap();
    let b = s.create_job("b", &spec).await.unwrap();
    s.insert_items(a.id, &new_items(&spec, 0..3)).await.unwrap();
    s.insert_items(b.id, &new_items(&spec, 0..2)).await.unwrap();
    s.set_entry_ids(a.id, &[("i00".into(), "1-0".into())]).await.unwrap();
    s.seal_job(a.id).await.unwrap();
    s.cancel_job(b.id).await.unwrap();
    let pb = s.progress(b.id).await.unwrap();
    assert_eq!((pb.cancelled, pb.queued), (2, 0));
    assert_eq!(s.get_job(b.id).await.unwrap().state(&pb), verdict_store::JobState::Cancelled);
    let pa = s.progress(a.id).await.unwrap();
    assert_eq!(s.get_job(a.id).await.unwrap().state(&pa), verdict_store::JobState::Running);
    let listed = s.list_jobs(1, None).await.unwrap();
    assert_eq!(listed[0].id, b.id, "newest first");
    let next = s.list_jobs(10, Some((listed[0].created_at, listed[0].id))).await.unwrap();
    assert_eq!(next.iter().map(|j| j.id).collect::<Vec<_>>(), vec![a.id]);

    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let stale = s.claim_stale(0.2, 100).await.unwrap();
    assert_eq!(stale.len(), 3, "queued items of live jobs only");
    assert_eq!(stale.iter().find(|x| x.item_id == "i00").unwrap().entry_id.as_deref(), Some("1-0"));
    assert!(s.claim_stale(0.2, 100).await.unwrap().is_empty(), "a claim marks them touched");
}
