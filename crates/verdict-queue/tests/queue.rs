//! The queue against a real, throwaway Redis.

use std::time::Duration;

use verdict_core::{Item, LabelSpec};
use verdict_queue::{Holding, Queue, QueueConfig, QueuedItem};
use verdict_testkit::{unique, Redis, RedisCluster};

fn item(i: usize) -> QueuedItem {
    QueuedItem {
        job_id: "job-1".into(),
        spec: LabelSpec::new("tiny"),
        item: Item::from_json_line(&format!(r#"{{"id":"i{i}","prompt":"p{i}","responses":["a","b"]}}"#)).unwrap(),
        first_sample: 0,
    }
}

async fn queue(url: &str, lease: Duration) -> Queue {
    let cfg = QueueConfig { prefix: unique("t"), lease_timeout: lease, max_deliveries: 3, ..QueueConfig::default() };
    Queue::connect(url, cfg).await.unwrap()
}

#[tokio::test]
async fn lease_ack_and_trim() {
    let redis = Redis::start();
    lease_ack_and_trim_on(&redis.url()).await;
}

async fn lease_ack_and_trim_on(url: &str) {
    let q = queue(url, Duration::from_secs(60)).await;
    let ids = q.enqueue("tiny", &(0..5).map(item).collect::<Vec<_>>()).await.unwrap();
    assert_eq!(ids.len(), 5);
    let mut conn = Queue::lease_connection(url, Duration::from_millis(100)).await.unwrap();
    let a = q.lease("tiny", "w-a", 3, Duration::from_millis(100), &mut conn).await.unwrap();
    let b = q.lease("tiny", "w-b", 10, Duration::from_millis(100), &mut conn).await.unwrap();
    assert_eq!((a.len(), b.len()), (3, 2), "each entry goes to one consumer");
    assert_eq!(a[0].item, item(0));
    assert_eq!(a[0].deliveries, 1);
    let stats = q.stats("tiny").await.unwrap();
    assert_eq!((stats.length, stats.pending), (5, 5));
    assert_eq!(q.ack("tiny", &[a[0].id.clone(), a[1].id.clone()]).await.unwrap(), 2);
    assert_eq!(q.ack("tiny", &[a[0].id.clone()]).await.unwrap(), 0, "a second ack is a no-op");
    let stats = q.stats("tiny").await.unwrap();
    assert_eq!((stats.length, stats.pending), (3, 3), "acknowledged entries are deleted");
    assert_eq!(q.exists("tiny", &[a[0].id.clone(), a[2].id.clone()]).await.unwrap(), vec![false, true]);
    let none = q.lease("tiny", "w-a", 10, Duration::from_millis(50), &mut conn).await.unwrap();
    assert!(none.is_empty());}

#[tokio::test]
async fn stale_leases_are_reclaimed_counted_and_touch_keeps_them() {
    let redis = Redis::start();
    stale_leases_are_reclaimed_counted_and_touch_keeps_them_on(&redis.url()).await;
}

async fn stale_leases_are_reclaimed_counted_and_touch_keeps_them_on(url: &str) {
    let q = queue(url, Duration::from_millis(200)).await;
    q.enqueue("tiny", &[item(0), item(1)]).await.unwrap();
    let mut conn = Queue::lease_connection(url, Duration::from_millis(100)).await.unwrap();
    let leased = q.lease("tiny", "dead-worker", 2, Duration::from_millis(100), &mut conn).await.unwrap();
    assert_eq!(leased.len(), 2);
    assert!(q.reclaim("tiny", "w-b", 10).await.unwrap().is_empty(), "not idle long enough yet");
    // The live worker keeps touching item 1; item 0 is abandoned.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(80)).await;
        q.touch("tiny", "dead-worker", &[leased[1].id.clone()]).await.unwrap();
    }
    let got = q.reclaim("tiny", "w-b", 10).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].id, leased[0].id);
    assert_eq!(got[0].deliveries, 2);
    tokio::time::sleep(Duration::from_millis(250)).await;
    let again = q.reclaim("tiny", "w-c", 10).await.unwrap();
    assert_eq!(again.iter().find(|e| e.id == leased[0].id).map(|e| e.deliveries), Some(3));}

#[tokio::test]
async fn dead_letters_keep_the_reason_once() {
    let redis = Redis::start();
    dead_letters_keep_the_reason_once_on(&redis.url()).await;
}

async fn dead_letters_keep_the_reason_once_on(url: &str) {
    let q = queue(url, Duration::from_secs(60)).await;
    let ids = q.enqueue("tiny", &[item(0)]).await.unwrap();
    let mut conn = Queue::lease_connection(url, Duration::from_millis(100)).await.unwrap();
    q.lease("tiny", "w", 1, Duration::from_millis(100), &mut conn).await.unwrap();
    assert!(q.dead_letter("tiny", &ids[0], "job-1", "i0", "delivered 6 times", 6).await.unwrap());
    assert!(!q.dead_letter("tiny", &ids[0], "job-1", "i0", "delivered 6 times", 6).await.unwrap());
    let dead = q.dead_letters("tiny", None, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].reason.as_str(), dead[0].job.as_str(), dead[0].item.as_str(), dead[0].deliveries), ("delivered 6 times", "job-1", "i0", 6));
    // The payload goes with it, so a requeue puts back what died.
    let back: QueuedItem = serde_json::from_str(&dead[0].payload).unwrap();
    assert_eq!(back, item(0));
    let stats = q.stats("tiny").await.unwrap();
    assert_eq!((stats.length, stats.pending, stats.dead), (0, 0, 1));
    assert!(q.dead_letters("tiny", Some(&dead[0].id), 10).await.unwrap().is_empty());

    let fresh = q.requeue_dead("tiny", &dead[0].id, &dead[0].payload, "job-1", "i0").await.unwrap();
    let stats = q.stats("tiny").await.unwrap();
    assert_eq!((stats.length, stats.dead), (1, 0));
    let again = q.lease("tiny", "w2", 5, Duration::from_millis(100), &mut conn).await.unwrap();
    assert_eq!((again[0].id.as_str(), &again[0].item, again[0].deliveries), (fresh.as_str(), &item(0), 1));}

#[tokio::test]
async fn cancellation_and_judges_are_separate() {
    let redis = Redis::start();
    cancellation_and_judges_are_separate_on(&redis.url()).await;
}

async fn cancellation_and_judges_are_separate_on(url: &str) {
    let q = queue(url, Duration::from_secs(60)).await;
    q.cancel("tiny", "job-9").await.unwrap();
    assert_eq!(q.cancelled_jobs("tiny").await.unwrap(), vec!["job-9".to_string()]);
    assert!(q.cancelled_jobs("other").await.unwrap().is_empty());
    q.enqueue("other", &[item(0)]).await.unwrap();
    let mut conn = Queue::lease_connection(url, Duration::from_millis(100)).await.unwrap();
    assert!(q.lease("tiny", "w", 5, Duration::from_millis(50), &mut conn).await.unwrap().is_empty());
    assert!(q.enqueue("bad{name}", &[item(0)]).await.is_err());}

#[tokio::test]
async fn a_redis_restart_is_ridden_out() {
    let mut redis = Redis::start();
    let q = queue(&redis.url(), Duration::from_secs(60)).await;
    q.enqueue("tiny", &[item(0)]).await.unwrap();
    redis.restart();
    // The first command after the restart may fail while the connection is re-made.
    let mut ok = false;
    for _ in 0..20 {
        if q.enqueue("tiny", &[item(1)]).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "the queue reconnects");
    let mut conn = Queue::lease_connection(&redis.url(), Duration::from_millis(100)).await.unwrap();
    let got = q.lease("tiny", "w", 5, Duration::from_millis(100), &mut conn).await.unwrap();
    // Redis ran without persistence: item 0 is gone (the coordinator's sweeper re-enqueues
    // such items from Postgres), item 1 is there.
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].item, item(1));
}

#[tokio::test]
async fn released_entries_are_reclaimable_at_once_and_workers_register() {
    let redis = Redis::start();
    released_entries_are_reclaimable_at_once_and_workers_register_on(&redis.url()).await;
}

async fn released_entries_are_reclaimable_at_once_and_workers_register_on(url: &str) {
    let q = queue(url, Duration::from_secs(60)).await;
    q.enqueue("tiny", &[item(0)]).await.unwrap();
    let mut conn = Queue::lease_connection(url, Duration::from_millis(100)).await.unwrap();
    let got = q.lease("tiny", "leaving", 1, Duration::from_millis(100), &mut conn).await.unwrap();
    assert!(q.reclaim("tiny", "other", 5).await.unwrap().is_empty());
    q.release("tiny", "leaving", &[got[0].id.clone()]).await.unwrap();
    let again = q.reclaim("tiny", "other", 5).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].deliveries, 2);

    let now = 1_000_000;
    let worker = |id: &str, judge: &str, seen_at: u64| verdict_queue::WorkerInfo {
        id: id.into(),
        judge: judge.into(),
        device: "cpu".into(),
        in_flight: 3,
        seen_at,
        fingerprint: "f00d".into(),
        meta_fingerprint: None,
        generated_tokens: 1200,
        tokens_per_second: 40.5,
    };
    let info = worker("w1", "tiny", now);
    q.register_worker(&info, Duration::from_secs(30)).await.unwrap();
    assert_eq!(q.workers().await.unwrap(), vec![info]);
    // Live workers are counted per judge, and only those heard from within the TTL.
    q.register_worker(&worker("w2", "tiny", now - 100), Duration::from_secs(30)).await.unwrap();
    q.register_worker(&worker("w3", "other", now), Duration::from_secs(30)).await.unwrap();
    assert_eq!(q.live_workers("tiny", Duration::from_secs(30), now).await.unwrap(), 1);
    assert_eq!(q.live_workers("other", Duration::from_secs(30), now).await.unwrap(), 1);
    assert_eq!(q.live_workers("nobody", Duration::from_secs(30), now).await.unwrap(), 0);}

#[tokio::test]
async fn renewal_and_results_belong_to_the_holder_only() {
    let redis = Redis::start();
    renewal_and_results_belong_to_the_holder_only_on(&redis.url()).await;
}

async fn renewal_and_results_belong_to_the_holder_only_on(url: &str) {
    let q = queue(url, Duration::from_millis(200)).await;
    q.enqueue("tiny", &[item(0), item(1)]).await.unwrap();
    let mut conn = Queue::lease_connection(url, Duration::from_millis(100)).await.unwrap();
    let leased = q.lease("tiny", "stale", 2, Duration::from_millis(100), &mut conn).await.unwrap();
    let (e0, e1) = (leased[0].id.clone(), leased[1].id.clone());
    assert_eq!(
        q.held("tiny", "stale", &[(&e0, "job-1", "i0"), (&e1, "job-1", "i1")]).await.unwrap(),
        vec![Holding::Held, Holding::Held]
    );
    // Another item than the entry carries is a mismatch, whoever asks.
    assert_eq!(q.held("tiny", "stale", &[(&e0, "job-1", "i1"), (&e0, "job-2", "i0")]).await.unwrap(), vec![Holding::Mismatch, Holding::Mismatch]);
    assert_eq!(q.held("tiny", "other", &[(&e0, "job-1", "i0")]).await.unwrap(), vec![Holding::NotHeld]);

    // The stale worker stalls past the lease timeout; another takes both over.
    tokio::time::sleep(Duration::from_millis(250)).await;
    let took = q.reclaim("tiny", "fresh", 10).await.unwrap();
    assert_eq!(took.len(), 2);
    // The stale worker's renewal must not take them back, and says what it lost.
    assert!(q.touch("tiny", "stale", &[e0.clone(), e1.clone()]).await.unwrap().is_empty());
    assert_eq!(q.held("tiny", "stale", &[(&e0, "job-1", "i0")]).await.unwrap(), vec![Holding::NotHeld]);
    assert_eq!(q.held("tiny", "fresh", &[(&e0, "job-1", "i0")]).await.unwrap(), vec![Holding::Held]);
    assert_eq!(q.touch("tiny", "fresh", &[e0.clone(), e1.clone()]).await.unwrap().len(), 2);
    // Released entries are reclaimable at once; released by someone else, nothing happens.
    q.release("tiny", "stale", std::slice::from_ref(&e0)).await.unwrap();
    assert!(q.reclaim("tiny", "third", 10).await.unwrap().is_empty(), "a stranger's release frees nothing");
    q.release("tiny", "fresh", std::slice::from_ref(&e0)).await.unwrap();
    let third = q.reclaim("tiny", "third", 10).await.unwrap();
    assert_eq!(third.iter().map(|e| e.id.clone()).collect::<Vec<_>>(), vec![e0.clone()]);
    // Acknowledged: held by nobody.
    q.ack("tiny", std::slice::from_ref(&e0)).await.unwrap();
    assert_eq!(q.held("tiny", "third", &[(&e0, "job-1", "i0")]).await.unwrap(), vec![Holding::NotHeld]);}

#[tokio::test]
async fn an_undecodable_entry_goes_to_the_dead_letters_alone() {
    let redis = Redis::start();
    an_undecodable_entry_goes_to_the_dead_letters_alone_on(&redis.url()).await;
}

async fn an_undecodable_entry_goes_to_the_dead_letters_alone_on(url: &str) {
    let q = queue(url, Duration::from_millis(150)).await;
    q.enqueue("tiny", &[item(0)]).await.unwrap();
    // Written by hand: not a Verdict item (a bug elsewhere, or an older format).
    let k = q.keys("tiny").unwrap();
    let mut raw = verdict_queue::conn::connect(url, Duration::from_secs(5), None).await.unwrap();
    let bad: String = redis::cmd("XADD").arg(&k.items).arg("*").arg("item").arg("{not json").arg("job").arg("job-x").query_async(&mut raw).await.unwrap();
    q.enqueue("tiny", &[item(2)]).await.unwrap();
    let mut conn = Queue::lease_connection(url, Duration::from_millis(100)).await.unwrap();
    let got = q.lease("tiny", "w", 10, Duration::from_millis(100), &mut conn).await.unwrap();
    assert_eq!(got.iter().map(|e| e.item.item.id.clone()).collect::<Vec<_>>(), vec!["i0", "i2"], "the good ones still come");
    let dead = q.dead_letters("tiny", None, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].entry.as_str(), dead[0].job.as_str()), (bad.as_str(), "job-x"));
    assert!(dead[0].reason.contains("not a Verdict item"), "{}", dead[0].reason);
    // Reclaims never meet it again.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(q.reclaim("tiny", "w2", 10).await.unwrap().len(), 2);}

#[tokio::test]
async fn consumers_that_hold_nothing_leave_the_group() {
    let redis = Redis::start();
    consumers_that_hold_nothing_leave_the_group_on(&redis.url()).await;
}

async fn consumers_that_hold_nothing_leave_the_group_on(url: &str) {
    let q = queue(url, Duration::from_secs(60)).await;
    q.enqueue("tiny", &[item(0), item(1)]).await.unwrap();
    let mut conn = Queue::lease_connection(url, Duration::from_millis(50)).await.unwrap();
    let held = q.lease("tiny", "busy", 1, Duration::from_millis(50), &mut conn).await.unwrap();
    assert_eq!(held.len(), 1);
    // A worker that finished its last item (acknowledged) and went away.
    let done = q.lease("tiny", "gone", 1, Duration::from_millis(50), &mut conn).await.unwrap();
    assert_eq!(q.ack("tiny", &[done[0].id.clone()]).await.unwrap(), 1);
    tokio::time::sleep(Duration::from_millis(150)).await;
    // Only the idle consumer with nothing pending goes; the one holding an entry stays.
    assert_eq!(q.prune_consumers("tiny", Duration::from_millis(100)).await.unwrap(), vec!["gone".to_string()]);
    assert!(q.prune_consumers("tiny", Duration::from_millis(100)).await.unwrap().is_empty());
    assert_eq!(q.held("tiny", "busy", &[(&held[0].id, "job-1", "i0")]).await.unwrap(), vec![Holding::Held]);
    assert!(q.prune_consumers("missing-judge", Duration::from_millis(1)).await.unwrap().is_empty());}

/// Every part of the queue again, on a three-master Redis Cluster: a judge's keys share a
/// hash tag, so its commands, pipelines and scripts land on one node, while different
/// judges spread over the nodes.
#[tokio::test]
async fn every_part_works_on_a_three_master_cluster() {
    let cluster = RedisCluster::start(3);
    let url = cluster.url();
    lease_ack_and_trim_on(&url).await;
    stale_leases_are_reclaimed_counted_and_touch_keeps_them_on(&url).await;
    dead_letters_keep_the_reason_once_on(&url).await;
    cancellation_and_judges_are_separate_on(&url).await;
    released_entries_are_reclaimable_at_once_and_workers_register_on(&url).await;
    renewal_and_results_belong_to_the_holder_only_on(&url).await;
    an_undecodable_entry_goes_to_the_dead_letters_alone_on(&url).await;
    consumers_that_hold_nothing_leave_the_group_on(&url).await;

    let q = queue(&url, Duration::from_secs(60)).await;
    let before = cluster.keys_per_node();
    for j in 0..12 {
        q.enqueue(&format!("judge-{j}"), &[item(j)]).await.unwrap();
    }
    let after = cluster.keys_per_node();
    let grew = before.iter().zip(&after).filter(|(b, a)| a > b).count();
    assert!(grew >= 2, "twelve judges' streams all landed on one node: {before:?} -> {after:?}");
    // Every judge's entry is there to lease, wherever its node.
    let mut conn = Queue::lease_connection(&url, Duration::from_millis(50)).await.unwrap();
    for j in 0..12 {
        let got = q.lease(&format!("judge-{j}"), "w", 5, Duration::from_millis(50), &mut conn).await.unwrap();
        assert_eq!(got.iter().map(|e| e.item.clone()).collect::<Vec<_>>(), vec![item(j)]);
    }
}
