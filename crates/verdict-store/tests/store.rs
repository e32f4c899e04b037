//! The store against a real, throwaway Postgres (one database per test).

use std::sync::OnceLock;

use uuid::Uuid;
use verdict_core::{aggregate, ContentKey, FinishReason, Fingerprints, Item, LabelSpec, ParseFailure, ParseStatus, Sample, VerdictRecord};
use verdict_store::{Failure, FailureKind, Inserted, NewItem, Outcome, Store, StoreError, VerdictFilter};
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

fn weights() -> Fingerprints {
    Fingerprints::new("f00d", None)
}

fn new_item(spec: &LabelSpec, it: Item) -> NewItem {
    NewItem { item_id: it.id.clone(), key: ContentKey::of(&it, spec, &weights()).hex(), content: ContentKey::of_item(&it).hex(), item: it }
}

fn new_items(spec: &LabelSpec, range: std::ops::Range<usize>) -> Vec<NewItem> {
    range.map(|i| new_item(spec, item(i))).collect()
}

fn ids_of(outcome: &[(String, Inserted)], which: &Inserted) -> Vec<String> {
    outcome.iter().filter(|(_, o)| o == which).map(|(id, _)| id.clone()).collect()
}

fn record(spec: &LabelSpec, it: &Item, scores: &[[u8; 2]]) -> VerdictRecord {
    let samples: Vec<Sample> = scores
        .iter()
        .enumerate()
        .map(|(j, s)| Sample::from_generation(j as u32, vec![1, 0], format!("Analysis: ok.\nScores: \\boxed{{{}, {}}}", s[1], s[0]), FinishReason::ScoreBlock, j == 1, 100, 20))
        .chain(std::iter::once(Sample::from_generation(9, vec![0, 1], "no scores".into(), FinishReason::Eos, false, 100, 3)))
        .collect();
    let verdict = aggregate(spec, ContentKey::of_item(it).seed_bits(), 2, &samples);
    VerdictRecord::new(it, ContentKey::of(it, spec, &weights()).hex(), spec, &weights(), verdict, samples)
}

#[tokio::test]
async fn jobs_items_results_round_trip() {
    let s = store().await;
    let spec = LabelSpec::new("tiny");
    let job = s.create_job("first", &spec, "anonymous").await.unwrap();
    assert_eq!(s.get_job(job.id).await.unwrap().spec, spec);
    let new = s.insert_items(job.id, &new_items(&spec, 0..5)).await.unwrap();
    assert_eq!(ids_of(&new, &Inserted::New).len(), 5);
    let again = s.insert_items(job.id, &new_items(&spec, 3..6)).await.unwrap();
    assert_eq!(ids_of(&again, &Inserted::New), ["i05"], "re-sent ids are left alone");
    assert_eq!(ids_of(&again, &Inserted::Present { queued: true, has_entry: false }), ["i03", "i04"]);
    let mut other = item(7);
    other.id = "i01".into();
    let conflict = s.insert_items(job.id, &[new_item(&spec, other)]).await.unwrap();
    assert_eq!(conflict, [("i01".to_string(), Inserted::Conflict)], "an id reused with other content is told apart");
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
    let a = s.create_job("a", &spec, "anonymous").await.unwrap();
    s.insert_items(a.id, &new_items(&spec, 0..2)).await.unwrap();
    let r = record(&spec, &item(0), &[[9, 2]]);
    s.record(&[Outcome::Verdict { job_id: a.id, record: Box::new(r.clone()), worker: "w".into() }]).await.unwrap();

    let b = s.create_job("b", &spec, "anonymous").await.unwrap();
    let ids = ids_of(&s.insert_items(b.id, &new_items(&spec, 0..3)).await.unwrap(), &Inserted::New);
    let answered = s.dedup(b.id, &ids).await.unwrap();
    assert_eq!(answered, vec!["i00".to_string()]);
    let copy = s.get_verdict(b.id, "i00").await.unwrap();
    assert_eq!(copy.verdict, r.verdict);
    assert_eq!(copy.samples, r.samples);
    let p = s.progress(b.id).await.unwrap();
    assert_eq!((p.done, p.deduplicated, p.queued), (1, 1, 2));
    assert_eq!(copy.fingerprint, "f00d", "the copy names the weights that produced it");

    // Another spec (another seed) is another key: no reuse.
    let other = LabelSpec { seed: 5, ..spec.clone() };
    let c = s.create_job("c", &other, "anonymous").await.unwrap();
    let ids = ids_of(&s.insert_items(c.id, &new_items(&other, 0..1)).await.unwrap(), &Inserted::New);
    assert!(s.dedup(c.id, &ids).await.unwrap().is_empty());
    // Nor do other weights under the same judge name.
    let d = s.create_job("d", &spec, "anonymous").await.unwrap();
    let it = item(0);
    let retrained = NewItem { key: ContentKey::of(&it, &spec, &Fingerprints::new("beef", None)).hex(), ..new_item(&spec, it) };
    s.insert_items(d.id, &[retrained]).await.unwrap();
    assert!(s.dedup(d.id, &["i00".to_string()]).await.unwrap().is_empty(), "dedup never crosses fingerprints");
}

#[tokio::test]
async fn queries_filter_and_page() {
    let s = store().await;
    let spec = LabelSpec::new("tiny");
    let job = s.create_job("q", &spec, "anonymous").await.unwrap();
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
    let a = s.create_job("a", &spec, "anonymous").await.unwrap();
    let b = s.create_job("b", &spec, "bob").await.unwrap();
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
    let listed = s.list_jobs(1, None, None).await.unwrap();
    assert_eq!(listed[0].id, b.id, "newest first");
    let next = s.list_jobs(10, Some((listed[0].created_at, listed[0].id)), None).await.unwrap();
    assert_eq!(next.iter().map(|j| j.id).collect::<Vec<_>>(), vec![a.id]);
    // A client's listing holds its own jobs only.
    assert_eq!(s.get_job(b.id).await.unwrap().owner, "bob");
    let bobs = s.list_jobs(10, None, Some("bob")).await.unwrap();
    assert_eq!(bobs.iter().map(|j| j.id).collect::<Vec<_>>(), vec![b.id]);
    assert!(s.list_jobs(10, None, Some("carol")).await.unwrap().is_empty());

    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let stale = s.claim_stale(0.2, 100).await.unwrap();
    assert_eq!(stale.len(), 3, "queued items of live jobs only");
    assert_eq!(stale.iter().find(|x| x.item_id == "i00").unwrap().entry_id.as_deref(), Some("1-0"));
    assert!(s.claim_stale(0.2, 100).await.unwrap().is_empty(), "a claim marks them touched");
}

#[tokio::test]
async fn a_judge_name_keeps_its_weights_while_it_has_a_backlog() {
    let s = store().await;
    let (old, new) = (Fingerprints::new("aaaa1111", None), Fingerprints::new("bbbb2222", Some("cccc3333".into())));
    let bound = s.bind_judge("tiny", &old, Some(2048)).await.unwrap();
    assert_eq!((bound.fingerprints.clone(), bound.context_length), (old.clone(), Some(2048)));
    assert_eq!(s.bind_judge("tiny", &old, None).await.unwrap().context_length, Some(2048), "heartbeats confirm");

    let spec = LabelSpec::new("tiny");
    let job = s.create_job("j", &spec, "anonymous").await.unwrap();
    s.insert_items(job.id, &new_items(&spec, 0..2)).await.unwrap();
    match s.bind_judge("tiny", &new, Some(2048)).await {
        Err(StoreError::Conflict(m)) => {
            assert!(m.contains("aaaa1111") && m.contains("bbbb2222") && m.contains("cccc3333"), "{m}");
            assert!(m.contains("2 of its items"), "{m}");
        }
        other => panic!("other weights were accepted while items wait: {other:?}"),
    }
    assert_eq!(s.judge("tiny").await.unwrap().unwrap().fingerprints, old);
    // Another name is free, whatever its weights.
    assert!(s.bind_judge("tiny-v2", &new, None).await.is_ok());
    // Once the backlog is gone, the name follows the new weights.
    s.cancel_job(job.id).await.unwrap();
    assert_eq!(s.judge_backlog("tiny").await.unwrap(), 0);
    assert_eq!(s.bind_judge("tiny", &new, None).await.unwrap().fingerprints, new);
    assert_eq!(s.judges().await.unwrap().len(), 2);
}

#[tokio::test]
async fn idle_open_jobs_are_sealed_with_a_note() {
    let s = store().await;
    let spec = LabelSpec::new("tiny");
    let open = s.create_job("broken", &spec, "anonymous").await.unwrap();
    let fresh = s.create_job("fresh", &spec, "anonymous").await.unwrap();
    s.note_job(open.id, "submission broke off after 3 items").await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    s.touch_submission(fresh.id).await.unwrap();
    assert_eq!(s.seal_idle_jobs(0.3).await.unwrap(), vec![open.id]);
    let j = s.get_job(open.id).await.unwrap();
    assert!(j.sealed);
    assert!(j.note.starts_with("submission broke off after 3 items; sealed after"), "{}", j.note);
    assert!(!s.get_job(fresh.id).await.unwrap().sealed);
}

/// Rows a plan read, summed over its nodes: what it returned plus what its filters dropped.
fn rows_touched(plan: &serde_json::Value) -> f64 {
    let node = |k: &str| plan.get(k).and_then(serde_json::Value::as_f64).unwrap_or(0.0);
    let own = (node("Actual Rows") + node("Rows Removed by Filter") + node("Rows Removed by Index Recheck")) * node("Actual Loops").max(1.0);
    own + plan.get("Plans").and_then(serde_json::Value::as_array).map(|p| p.iter().map(rows_touched).sum()).unwrap_or(0.0)
}

#[tokio::test]
async fn per_message_and_per_report_statements_touch_only_their_rows_whatever_the_job_size() {
    use verdict_store::items::per_message;
    let s = store().await;
    let spec = LabelSpec::new("tiny");
    let big = s.create_job("big", &spec, "anonymous").await.unwrap();
    // A job of 30,000 queued items, as a large submission leaves it.
    for chunk in (0..30_000).collect::<Vec<usize>>().chunks(5_000) {
        let items: Vec<NewItem> = chunk.iter().map(|&i| new_item(&spec, Item::from_json_line(&format!(r#"{{"id":"b{i:06}","prompt":"p{i}","responses":["x","y"]}}"#)).unwrap())).collect();
        s.insert_items(big.id, &items).await.unwrap();
    }
    let msg: Vec<NewItem> = ["b000007", "b029999", "new-1", "new-2"]
        .iter()
        .map(|id| new_item(&spec, Item::from_json_line(&format!(r#"{{"id":"{id}","prompt":"p","responses":["x","y"]}}"#)).unwrap()))
        .collect();
    let ids: Vec<String> = msg.iter().map(|m| m.item_id.clone()).collect();
    let keys: Vec<String> = msg.iter().map(|m| m.key.clone()).collect();
    let contents: Vec<String> = msg.iter().map(|m| m.content.clone()).collect();
    let json: Vec<serde_json::Value> = msg.iter().map(|m| serde_json::to_value(&m.item).unwrap()).collect();
    let entries: Vec<String> = ids.iter().map(|_| "1-0".to_string()).collect();
    // Right after a large insert the planner's statistics are stale (that is when a plan
    // over `(job_id, state)` walks the whole job); after ANALYZE they are not. Both count.
    for (analyzed, (name, sql)) in [false, true]
        .into_iter()
        .flat_map(|a| [("insert", per_message::INSERT), ("dedup", per_message::DEDUP), ("set entry ids", per_message::SET_ENTRY_IDS)].map(|x| (a, x)))
    {
        if analyzed {
            sqlx::query("ANALYZE items").execute(s.pool()).await.unwrap();
        }
        // EXPLAIN ANALYZE runs the statement: inside a transaction rolled back.
        let mut tx = s.pool().begin().await.unwrap();
        let text = format!("EXPLAIN (ANALYZE, FORMAT JSON) {sql}");
        let q = sqlx::query_scalar::<_, serde_json::Value>(&text).bind(big.id).bind(&ids);
        let q = match name {
            "insert" => q.bind(&keys).bind(&contents).bind(&json),
            "set entry ids" => q.bind(&entries),
            _ => q,
        };
        let plan = q.fetch_one(&mut *tx).await.unwrap();
        tx.rollback().await.unwrap();
        let touched = rows_touched(&plan[0]["Plan"]);
        assert!(touched <= 100.0, "{name} (analyzed: {analyzed}) touched {touched} rows for a message of 4 items in a job of 30,000: {plan:#}");
    }
    // A report's statements on items, the same way: 4 results in the job of 30,000.
    use verdict_store::results::per_report;
    let jobs = vec![big.id; ids.len()];
    for (analyzed, (name, sql)) in [false, true].into_iter().flat_map(|a| [("mark done", per_report::MARK_DONE), ("mark failed", per_report::MARK_FAILED)].map(|x| (a, x))) {
        if analyzed {
            sqlx::query("ANALYZE items").execute(s.pool()).await.unwrap();
        }
        let mut tx = s.pool().begin().await.unwrap();
        let text = format!("EXPLAIN (ANALYZE, FORMAT JSON) {sql}");
        let q = sqlx::query_scalar::<_, serde_json::Value>(&text).bind(&jobs).bind(&ids);
        let states = vec!["rejected".to_string(); ids.len()];
        let q = if name == "mark failed" { q.bind(&states).bind(&states) } else { q };
        let plan = q.fetch_one(&mut *tx).await.unwrap();
        tx.rollback().await.unwrap();
        let touched = rows_touched(&plan[0]["Plan"]);
        assert!(touched <= 100.0, "{name} (analyzed: {analyzed}) touched {touched} rows for a report of 4 items in a job of 30,000: {plan:#}");
    }
}

/// What voting reads of each sample: index, whether it counts, its scores, its meta score.
fn voting_view(r: &VerdictRecord) -> Vec<(u32, bool, Option<Vec<u8>>, Option<f32>)> {
    r.samples.iter().map(|s| (s.index, s.status.is_valid(), s.valid_scores().map(<[u8]>::to_vec), s.meta_score)).collect()
}

#[tokio::test]
async fn votes_on_the_verdict_row_give_voting_what_the_sample_rows_give() {
    let s = store().await;
    let spec = LabelSpec::new("tiny");
    let job = s.create_job("v", &spec, "anonymous").await.unwrap();
    s.insert_items(job.id, &new_items(&spec, 0..3)).await.unwrap();
    let mut r0 = record(&spec, &item(0), &[[8, 3], [7, 5]]);
    r0.samples[0].meta_score = Some(1.5);
    let r1 = record(&spec, &item(1), &[[2, 9]]);
    for r in [&r0, &r1] {
        s.record(&[Outcome::Verdict { job_id: job.id, record: Box::new(r.clone()), worker: "w".into() }]).await.unwrap();
    }
    let whole = VerdictFilter { with_samples: true, ..Default::default() };
    let votes = VerdictFilter { with_samples: true, votes_only: true, ..Default::default() };
    let from_rows = s.query_verdicts(job.id, &whole, None).await.unwrap();
    let from_votes = s.query_verdicts(job.id, &votes, None).await.unwrap();
    assert_eq!(from_rows.iter().map(voting_view).collect::<Vec<_>>(), from_votes.iter().map(voting_view).collect::<Vec<_>>());
    assert_eq!(voting_view(&from_votes[0])[0].3, Some(1.5));
    assert!(from_votes[0].samples[0].raw.is_empty(), "votes carry no text");

    // A verdict stored before votes were kept is read from its sample rows.
    sqlx::query("UPDATE verdicts SET votes = NULL, vote_meta = NULL WHERE item_id = 'i01'").execute(s.pool()).await.unwrap();
    let mixed = s.query_verdicts(job.id, &votes, None).await.unwrap();
    assert_eq!(mixed.iter().map(voting_view).collect::<Vec<_>>(), from_rows.iter().map(voting_view).collect::<Vec<_>>());

    // An extension's report (samples 10 and 11) leaves votes over all of the item's samples.
    let mut ext = record(&spec, &item(0), &[[1, 9], [2, 8]]);
    ext.samples.truncate(2);
    for (j, smp) in ext.samples.iter_mut().enumerate() {
        smp.index = 10 + j as u32;
    }
    s.record(&[Outcome::Verdict { job_id: job.id, record: Box::new(ext), worker: "w".into() }]).await.unwrap();
    let after = s.query_verdicts(job.id, &votes, None).await.unwrap();
    let rows_after = s.query_verdicts(job.id, &whole, None).await.unwrap();
    assert_eq!(voting_view(&after[0]).iter().map(|v| v.0).collect::<Vec<_>>(), [0, 1, 9, 10, 11]);
    assert_eq!(voting_view(&after[0]), voting_view(&rows_after[0]));

    // A deduplicated copy carries the votes too.
    let b = s.create_job("b", &spec, "anonymous").await.unwrap();
    let ids = ids_of(&s.insert_items(b.id, &new_items(&spec, 0..1)).await.unwrap(), &Inserted::New);
    s.dedup(b.id, &ids).await.unwrap();
    let copied: Option<Vec<i16>> = sqlx::query_scalar("SELECT votes FROM verdicts WHERE job_id = $1").bind(b.id).fetch_one(s.pool()).await.unwrap();
    assert_eq!(copied.map(|v| v.len()), Some(5 * 4), "five samples of [index, status, two scores]");
}

#[tokio::test]
async fn progress_counters_equal_a_scan_of_the_items_through_every_change() {
    let s = store().await;
    let spec = LabelSpec::new("tiny");
    let job = s.create_job("counted", &spec, "alice").await.unwrap();
    let same = |label: &'static str| {
        let s = s.clone();
        async move {
            let (counted, scanned) = (s.progress(job.id).await.unwrap(), s.progress_by_scan(job.id).await.unwrap());
            assert_eq!(counted, scanned, "after {label}");
            counted
        }
    };
    assert_eq!(same("nothing").await.total, 0);
    s.insert_items(job.id, &new_items(&spec, 0..40)).await.unwrap();
    s.insert_items(job.id, &new_items(&spec, 30..45)).await.unwrap();
    assert_eq!(same("inserts and a re-send").await.queued, 45);
    // Reports from many connections at once: each writes its own shard of the counters.
    let mut tasks = Vec::new();
    for chunk in 0..8 {
        let (s, spec) = (s.clone(), spec.clone());
        tasks.push(tokio::spawn(async move {
            for i in (chunk * 4)..(chunk * 4 + 4) {
                let out = if i % 4 == 3 {
                    Outcome::Failure { job_id: job.id, item_id: format!("i{i:02}"), failure: Failure { kind: FailureKind::Dead, error: "delivered 6 times".into() } }
                } else {
                    Outcome::Verdict { job_id: job.id, record: Box::new(record(&spec, &item(i), &[[8, 3], [7, 5]])), worker: format!("w{chunk}") }
                };
                s.record(std::slice::from_ref(&out)).await.unwrap();
                s.record(&[out]).await.unwrap(); // redelivered: counted once
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let p = same("concurrent reports").await;
    assert_eq!((p.done, p.dead, p.queued), (24, 8, 13));
    assert!(s.requeue_dead(job.id, "i03").await.unwrap().is_some());
    assert!(s.requeue_dead(job.id, "i03").await.unwrap().is_none(), "not dead any more");
    assert!(s.requeue_dead(job.id, "i00").await.unwrap().is_none(), "an item with a verdict stays done");
    assert_eq!(same("a requeue").await.dead, 7);
    let b = s.create_job("second", &spec, "alice").await.unwrap();
    s.insert_items(b.id, &new_items(&spec, 0..6)).await.unwrap();
    let dedup = s.dedup(b.id, &(0..6).map(|i| format!("i{i:02}")).collect::<Vec<_>>()).await.unwrap();
    assert!(!dedup.is_empty());
    let pb = s.progress(b.id).await.unwrap();
    assert_eq!(pb, s.progress_by_scan(b.id).await.unwrap(), "after dedup");
    assert_eq!(pb.deduplicated, dedup.len() as u64);
    s.cancel_job(job.id).await.unwrap();
    assert_eq!(same("a cancel").await.queued, 0);
}

/// One message's statements run on any executor: in a transaction, they stand or fall together.
#[tokio::test]
async fn one_message_statements_share_a_transaction() {
    use verdict_store::items;
    let s = store().await;
    let spec = LabelSpec::new("tiny");
    let job = s.create_job("tx", &spec, "anonymous").await.unwrap();
    let mut tx = s.pool().begin().await.unwrap();
    items::insert_items(&mut *tx, job.id, &new_items(&spec, 0..3)).await.unwrap();
    items::set_entry_ids(&mut *tx, job.id, &[("i00".to_string(), "1-0".to_string())]).await.unwrap();
    assert!(items::dedup(&mut *tx, job.id, &["i01".to_string()]).await.unwrap().is_empty(), "nothing stored to answer from");
    tx.rollback().await.unwrap();
    assert_eq!(s.progress(job.id).await.unwrap().total, 0, "rolled back with its transaction");
    let mut tx = s.pool().begin().await.unwrap();
    items::insert_items(&mut *tx, job.id, &new_items(&spec, 0..3)).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(s.progress(job.id).await.unwrap().total, 3);
}

#[tokio::test]
async fn jobs_judges_and_reports_run_inside_a_callers_transaction() {
    use verdict_store::{jobs, judges, results};
    let s = store().await;
    let spec = LabelSpec::new("txjudge");
    // Everything below is rolled back: the job, its items, the binding and the report.
    let mut tx = s.pool().begin().await.unwrap();
    let job = jobs::create_job(&mut *tx, "tx", &spec, "anonymous").await.unwrap();
    verdict_store::items::insert_items(&mut *tx, job.id, &new_items(&spec, 0..2)).await.unwrap();
    judges::bind_judge(&mut tx, "txjudge", &weights(), Some(4096)).await.unwrap();
    let r = record(&spec, &item(0), &[[8, 3], [7, 5]]);
    results::record(&mut tx, &[Outcome::Verdict { job_id: job.id, record: Box::new(r), worker: "w".into() }]).await.unwrap();
    let p = jobs::progress(&mut *tx, job.id).await.unwrap();
    assert_eq!((p.total, p.done, p.queued), (2, 1, 1), "the report's savepoint is visible inside the transaction");
    // A statement that fails inside a function's own savepoint rolls back that function alone.
    assert!(matches!(jobs::cancel_job(&mut tx, Uuid::new_v4()).await, Err(StoreError::NotFound(_))));
    assert_eq!(jobs::get_job(&mut *tx, job.id).await.unwrap().id, job.id, "the outer transaction is still usable");
    tx.rollback().await.unwrap();
    assert!(matches!(s.get_job(job.id).await, Err(StoreError::NotFound(_))), "the job went with the transaction");
    assert!(s.judge("txjudge").await.unwrap().is_none(), "so did the binding");
    assert!(s.get_verdict(job.id, "i00").await.is_err(), "and the verdict");
}
