//! The distributed mode end to end, as processes: a throwaway Redis and Postgres, the real
//! `verdict coordinator`, `verdict worker`s with a tiny random model on the CPU, and the
//! client commands. Each test gets its own servers, ports and queue prefix.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::cluster::{records_and_distinct_ids, write_items, Cluster};
use common::{bin, examples, model};
use serde_json::Value;

#[test]
fn two_workers_label_the_examples_and_agree_with_embedded_mode() {
    let http = format!("127.0.0.1:{}", verdict_testkit::free_port());
    let c = Cluster::start(&[("VERDICT_HTTP_LISTEN", &http), ("VERDICT_DASHBOARD_REFRESH", "0.5")]);
    let _w1 = c.worker("w1", "8");
    let _w2 = c.worker("w2", "8");
    let job = c.submit(&examples(), &["--seed", "3", "--wait"]);
    let p = c.progress(&job);
    assert_eq!((p["done"], p["total"], p["queued"]), (16, 16, 0), "{p:?}");

    let records = c.query(&job);
    assert_eq!(records_and_distinct_ids(&records), (16, 16), "every item has exactly one verdict");
    for r in &records {
        assert_eq!(r["samples"].as_array().unwrap().len(), 2);
    }

    // The DPO export pairs each decided item's winner with its lowest-scored response.
    let dpo = c.dir.path().join("dpo.jsonl");
    c.ok(&["export", &job, "--format", "dpo", "-o", dpo.to_str().unwrap()]);
    let rows: Vec<Value> = std::fs::read_to_string(&dpo).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let by_id: HashMap<&str, &Value> = records.iter().map(|r| (r["id"].as_str().unwrap(), r)).collect();
    let decided = records.iter().filter(|r| r["winner"].is_number() && !r["tie"].as_bool().unwrap()).count();
    assert_eq!(rows.len(), decided);
    // Some example prompts are conversations, so the whole file is in TRL's conversational
    // form: every prompt a list of messages, every response one assistant message.
    for row in &rows {
        let r = by_id[row["id"].as_str().unwrap()];
        let w = r["winner"].as_u64().unwrap() as usize;
        assert_eq!(row["chosen"], serde_json::json!([{"role": "assistant", "content": r["responses"][w]}]));
        let prompt = match &r["prompt"] {
            Value::String(t) => serde_json::json!([{"role": "user", "content": t}]),
            conversation => conversation.clone(),
        };
        assert_eq!(row["prompt"], prompt);
        assert_ne!(row["chosen"], row["rejected"]);
        let summed: Vec<u64> = r["summed"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
        assert_eq!(row["margin"].as_u64().unwrap(), summed[w] - summed.iter().min().unwrap(), "margin is chosen minus rejected");
    }
    let pq = c.dir.path().join("dpo.parquet");
    c.ok(&["export", &job, "--format", "dpo", "-o", pq.to_str().unwrap()]);
    assert!(std::fs::metadata(&pq).unwrap().len() > 0);
    let rewards = c.dir.path().join("rewards.jsonl");
    c.ok(&["export", &job, "--format", "rewards", "-o", rewards.to_str().unwrap()]);
    let n_responses: usize = records.iter().filter(|r| r["valid"].as_u64().unwrap() > 0).map(|r| r["responses"].as_array().unwrap().len()).sum();
    assert_eq!(std::fs::read_to_string(&rewards).unwrap().lines().count(), n_responses);

    // Embedded mode, same model, same settings and seed: the same samples and verdicts.
    let out = c.dir.path().join("embedded.jsonl");
    let o = bin()
        .args(["label", examples().to_str().unwrap(), "-o", out.to_str().unwrap(), "--model", model().to_str().unwrap()])
        .args(["--k", "2", "--max-new-tokens", "32", "--seed", "3"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for line in std::fs::read_to_string(&out).unwrap().lines() {
        let e: Value = serde_json::from_str(line).unwrap();
        let d = by_id[e["id"].as_str().unwrap()];
        for field in ["key", "judge", "fingerprint", "summed", "winner", "margin", "tie", "valid", "agreement"] {
            assert_eq!(e[field], d[field], "item {} field {field}", e["id"]);
        }
        let raw = |v: &Value| v["samples"].as_array().unwrap().iter().map(|s| s["raw"].clone()).collect::<Vec<_>>();
        assert_eq!(raw(&e), raw(d), "item {}", e["id"]);
    }

    // The same dataset again is answered from the store.
    let again = c.submit(&examples(), &["--seed", "3", "--wait"]);
    let p = c.progress(&again);
    assert_eq!((p["done"], p["deduplicated"]), (16, 16), "{p:?}");

    // The judge's telemetry, counted by the coordinator over the job, is what `report`
    // counts over the embedded run's file: the same samples, the same figures.
    let job_json = c.ok(&["report", &job, "--json", "--html", c.dir.path().join("job.html").to_str().unwrap()]);
    let file_json = c.ok(&["report", out.to_str().unwrap(), "--json"]);
    let judges = |text: &str| serde_json::from_str::<Value>(text.trim()).unwrap()["judges"].clone();
    assert_eq!(judges(&job_json), judges(&file_json), "job and embedded file give different telemetry");
    let t = &judges(&job_json)[0][1];
    assert_eq!((t["verdicts"].as_u64(), t["samples"].as_u64()), (Some(16), Some(32)), "{t}");
    assert!(std::fs::read_to_string(out.with_extension("jsonl.report.html")).unwrap().contains("<svg"));
    let o = c.run(&["report", "00000000-0000-0000-0000-000000000000"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("not found"), "{}", String::from_utf8_lossy(&o.stderr));

    dashboard_shows_the_cluster(&c, &http, &[&job, &again]);
}

/// The dashboard as a browser shows it, after its script has fetched and drawn the figures:
/// both jobs done, the two workers, and the judge's telemetry over both jobs (32 verdicts).
fn dashboard_shows_the_cluster(c: &Cluster, http: &str, jobs: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let dom = loop {
        let dom = verdict_testkit::browser_dom(&format!("http://{http}/"), Duration::from_secs(5));
        let judge_done = dom.contains(r#"data-judge="tiny""#) && dom.contains(r#"<tr data-figure="verdicts"><td>Verdicts</td><td class="n">32</td>"#);
        if judge_done && dom.contains(r#"data-chart="throughput""#) {
            break dom;
        }
        assert!(Instant::now() < deadline, "the dashboard never showed both jobs' telemetry: {dom}\n{}", c.logs());
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(!dom.contains("data-failed"), "{dom}");
    for job in jobs {
        assert!(dom.contains(&format!(r#"<tr data-job="{job}" data-state="done" data-done="16" data-total="16">"#)), "job {job} not shown done: {dom}");
    }
    for w in ["w1", "w2"] {
        assert!(dom.contains(&format!(r#"data-worker="{w}""#)), "worker {w} missing: {dom}");
    }
    for chart in ["scores", "position", "tokens", "samples", "agreement"] {
        assert!(dom.contains(&format!(r#"data-chart="{chart}""#)), "chart {chart} missing: {dom}");
    }
    // A job's report page, as served by the dashboard.
    let report = verdict_testkit::browser_dom(&format!("http://{http}/jobs/{}/report", jobs[0]), Duration::from_secs(2));
    assert!(report.contains(r#"<tr data-figure="verdicts"><td>Verdicts</td><td class="n">16</td>"#), "{report}");
    assert_eq!(report.matches(r#"class="bar""#).count() >= 10, true, "{report}");
}

#[test]
fn a_worker_killed_mid_job_loses_nothing_and_duplicates_nothing() {
    let c = Cluster::start(&[("VERDICT_LEASE_TIMEOUT", "3")]);
    let items = write_items(c.dir.path(), 40);
    let mut doomed = c.worker("doomed", "4");
    let job = c.submit(&items, &[]);
    // Kill it (no chance to release or report) once it has done some work and holds more.
    let deadline = Instant::now() + Duration::from_secs(120);
    while c.progress(&job).get("done").copied().unwrap_or(0) < 4 {
        assert!(Instant::now() < deadline, "no progress: {}", doomed.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    doomed.kill("-KILL");
    doomed.wait(Duration::from_secs(10));
    let _w = c.worker("survivor", "8");
    c.wait_done(&job, Duration::from_secs(240));
    let records = c.query(&job);
    assert_eq!(records_and_distinct_ids(&records), (40, 40));
    assert!(records.iter().all(|r| r["samples"].as_array().unwrap().len() == 2), "no duplicated samples");
    let p = c.progress(&job);
    assert_eq!((p["done"], p["dead"]), (40, 0), "{p:?}");

    // A worker restarted under its old name picks up where it was.
    let _again = c.worker("doomed", "8");
    let job2 = c.submit(&write_items(c.dir.path(), 5), &["--seed", "9", "--wait"]);
    assert_eq!(c.progress(&job2)["done"], 5);
}

#[test]
fn restarts_of_the_coordinator_and_of_redis_are_ridden_out() {
    let mut c = Cluster::start(&[("VERDICT_REQUEUE_AFTER", "2")]);
    let items = write_items(c.dir.path(), 24);
    let job = c.submit(&items, &[]);
    let _w = c.worker("w", "4");
    // Coordinator down for a while mid-job: the worker keeps its results and retries.
    std::thread::sleep(Duration::from_millis(1500));
    c.coordinator.take();
    std::thread::sleep(Duration::from_secs(2));
    c.start_coordinator();
    // Redis loses everything (no persistence): the sweeper re-enqueues from Postgres.
    c.redis.restart();
    c.wait_done(&job, Duration::from_secs(240));
    let records = c.query(&job);
    assert_eq!(records_and_distinct_ids(&records), (24, 24));
}

#[test]
fn items_delivered_too_often_go_to_the_dead_letters() {
    let c = Cluster::start(&[("VERDICT_LEASE_TIMEOUT", "1"), ("VERDICT_MAX_DELIVERIES", "1")]);
    let items = write_items(c.dir.path(), 6);
    let mut doomed = c.worker("doomed", "64");
    // Long judgements, so the worker is still busy with all six when it is killed.
    let job = c.submit_with(&items, "1200", &[]);
    // Kill it once its heartbeat says it holds all six, before it reports any. (Killed
    // earlier, it may hold only its first lease; the rest would then be judged by the
    // reaper, 1,200 tokens each: a minute or more in a debug build on a loaded machine.)
    c.wait_in_flight(&doomed, "doomed", 6, Duration::from_secs(60));
    doomed.kill("-KILL");
    doomed.wait(Duration::from_secs(10));
    let _w = c.worker("reaper", "8");
    c.wait_done(&job, Duration::from_secs(120));
    let p = c.progress(&job);
    assert_eq!(p["dead"], 6, "every leased item was delivered twice with a maximum of one: {p:?}");

    // The dead letters name each item and why; requeued, the items are queued again.
    let listed: Vec<Value> = c.ok(&["dead-letters", "list", "--json"]).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(listed.len(), 6, "{listed:?}");
    for d in &listed {
        assert_eq!((d["job_id"].as_str(), d["judge"].as_str(), d["deliveries"].as_u64()), (Some(job.as_str()), Some("tiny"), Some(2)), "{d}");
        assert!(d["reason"].as_str().unwrap().contains("delivered 2 times"), "{d}");
    }
    let first = listed[0]["id"].as_str().unwrap();
    let shown = c.ok(&["dead-letters", "show", first, "--judge", "tiny"]);
    assert!(shown.contains(listed[0]["item_id"].as_str().unwrap()) && shown.contains("delivered 2 times"), "{shown}");
    let o = c.run(&["dead-letters", "requeue", "--judge", "tiny", "--all"]);
    assert!(o.status.success() && String::from_utf8_lossy(&o.stderr).contains("requeued 6 item(s)"), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(c.ok(&["dead-letters", "list", "--json"]).trim().is_empty(), "requeued letters leave the dead letters");
    let p = c.progress(&job);
    assert_eq!((p["dead"], p["queued"] + p["done"]), (0, 6), "{p:?}");
    let o = c.run(&["dead-letters", "requeue", "--judge", "tiny", first]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("not found"), "a requeued letter is gone");
}

#[test]
fn bad_input_and_cancellation() {
    let c = Cluster::start(&[]);
    let bad = c.dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"id\":\"a\",\"prompt\":\"p\",\"responses\":[\"x\"]}\n{\"id\":\"b\",\"prompt\":\"p\",\"responses\":[]}\n").unwrap();
    let o = c.run(&["submit", bad.to_str().unwrap(), "--judge", "tiny"]);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("line 2 (id b): field `responses` must hold at least one response"), "{e}");
    assert!(c.ok(&["status"]).lines().filter(|l| l.contains("tiny")).count() == 0, "no job was created");
    let o = c.run(&["submit", examples().to_str().unwrap(), "--judge", "bad{judge}"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("judge"));

    // With no worker running, a cancelled job's items are dropped, never judged.
    let job = c.submit(&examples(), &[]);
    c.ok(&["cancel", &job]);
    let p = c.progress(&job);
    assert_eq!((p["cancelled"], p["queued"]), (16, 0), "{p:?}");
    // A worker started now meets the cancelled job's entries first in the stream; a second
    // job submitted after them is done only once the worker has passed over all of them.
    let _w = c.worker("w", "8");
    let after = c.submit(&write_items(c.dir.path(), 3), &["--seed", "11", "--wait"]);
    assert_eq!(c.progress(&after)["done"], 3);
    assert!(c.query(&job).is_empty(), "a cancelled job's items were judged");
    assert!(c.ok(&["status", &job]).contains("state    cancelled"));
}

#[test]
fn a_worker_drains_its_batch_on_sigterm() {
    let c = Cluster::start(&[]);
    // Long judgements: the batch is still running when the signal comes. Submit first, so
    // the worker's first lease takes all of them: three, as many as it takes before its
    // engine has sized a batch (capacity k-hint = 2 items, and half again of look-ahead).
    // A fourth would be leased only once the batch is sized, which may come after the signal.
    let items = write_items(c.dir.path(), 3);
    let job = c.submit_with(&items, "600", &[]);
    let mut w = c.worker("draining", "8");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !w.log().contains("worker started") {
        assert!(Instant::now() < deadline, "{}", c.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    w.kill("-TERM");
    let status = w.wait(Duration::from_secs(120)).expect("the worker exits after draining");
    assert!(status.success(), "{}", c.logs());
    assert!(w.log().contains("worker stopped: 3 item(s) reported"), "{}", c.logs());
    assert_eq!(c.progress(&job)["done"], 3);
}

/// Re-voting needs no GPU and no new samples: a k = 4 job queried, exported and re-voted
/// at k = 2 gives what a k = 2 job gives (its content keys, verdicts and samples, its DPO
/// rows), filters apply to the re-voted verdicts, and impossible k's are named.
/// A counter of a worker's Prometheus endpoint.
fn worker_counter(port: u16, name: &str) -> u64 {
    metric(&format!("127.0.0.1:{port}"), name).map_or(0, |v| v as u64)
}

#[test]
fn a_job_extended_to_a_larger_k_is_what_a_fresh_run_at_that_k_gives() {
    let c = Cluster::start(&[]);
    let port = verdict_testkit::free_port();
    let listen = format!("127.0.0.1:{port}");
    let _w = c.worker_with("w", model(), &["--batch", "8", "--metrics-listen", &listen]);
    let examples = examples();
    let submit = |k: &str| c.ok(&["submit", examples.to_str().unwrap(), "--judge", "tiny", "--k", k, "--max-new-tokens", "32", "--seed", "5", "--wait"]).trim().to_string();
    let fresh = c.query(&submit("4"));
    let job = submit("2");
    // The worker counts a report's samples once the coordinator has it: wait for the count.
    let made_at_least = |n: u64| {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut got = worker_counter(port, "verdict_worker_samples_total");
        while got < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            got = worker_counter(port, "verdict_worker_samples_total");
        }
        got
    };
    let before = made_at_least(16 * 4 + 16 * 2);
    assert_eq!(before, 16 * 4 + 16 * 2);

    let o = c.run(&["extend", &job, "--k", "4"]);
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{said}");
    assert!(said.contains("k = 4; new samples queued for 16 item(s), 0 left as they are"), "{said}");
    assert_eq!(made_at_least(before + 32) - before, 16 * 2, "an extension makes only the missing samples");

    // Sample for sample and verdict for verdict, what a fresh run at k = 4 gives.
    let extended = c.query(&job);
    assert_eq!(extended.len(), 16);
    for (a, b) in extended.iter().zip(&fresh) {
        for field in ["id", "key", "summed", "mean", "winner", "margin", "tie", "valid", "agreement", "sample_scores"] {
            assert_eq!(a[field], b[field], "item {} field {field}", b["id"]);
        }
        let samples = |v: &Value| v["samples"].as_array().unwrap().iter().map(|s| (s["index"].clone(), s["permutation"].clone(), s["raw"].clone(), s["scores"].clone())).collect::<Vec<_>>();
        assert_eq!(samples(a), samples(b), "item {}", b["id"]);
    }
    assert!(c.ok(&["status", &job]).contains("(k=4,"), "the job's spec says k = 4 now");
    let file = |name: &str| c.dir.path().join(name).to_str().unwrap().to_string();
    c.ok(&["export", &job, "--k", "2", "--format", "rewards", "-o", &file("at-2.jsonl")]);
    assert!(!std::fs::read_to_string(file("at-2.jsonl")).unwrap().is_empty(), "the extended job re-votes at its old k");

    // Again at the same k: nothing left to do. A smaller k is a re-vote, not an extension.
    let o = c.run(&["extend", &job, "--k", "4"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("new samples queued for 0 item(s), 16 left as they are"));
    let o = c.run(&["extend", &job, "--k", "3"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("k 3 is less than job"), "{}", String::from_utf8_lossy(&o.stderr));
    let o = c.run(&["extend", &job, "--k", "65"]);
    assert!(!o.status.success(), "past the coordinator's --max-k");
}

#[test]
fn adaptive_k_in_a_job_stops_each_item_where_the_embedded_run_does() {
    let c = Cluster::start(&[]);
    let _w = c.worker("w", "8");
    let examples = examples();
    let flags = ["--k", "6", "--k-min", "2", "--stop", "confident", "--confidence", "0.6", "--max-new-tokens", "32", "--seed", "5"];
    let mut args = vec!["submit", examples.to_str().unwrap(), "--judge", "tiny", "--wait"];
    args.extend_from_slice(&flags);
    let job = c.ok(&args).trim().to_string();
    let stored = c.query(&job);
    let out = c.dir.path().join("embedded.jsonl");
    let o = bin().args(["label", examples.to_str().unwrap(), "-o", out.to_str().unwrap(), "--model", model().to_str().unwrap()]).args(flags).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let embedded: Vec<Value> = std::fs::read_to_string(&out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(stored.len(), 16);
    let mut by_id: HashMap<String, &Value> = embedded.iter().map(|r| (r["id"].as_str().unwrap().to_string(), r)).collect();
    for r in &stored {
        let e = by_id.remove(r["id"].as_str().unwrap()).unwrap();
        for field in ["stopped", "summed", "winner", "valid", "sample_scores"] {
            assert_eq!(r[field], e[field], "item {} field {field}", r["id"]);
        }
        // Postgres text holds no NUL: the store keeps a judge's NULs as U+FFFD.
        let raw = |v: &Value| v["samples"].as_array().unwrap().iter().map(|s| s["raw"].as_str().unwrap().replace('\0', "\u{FFFD}")).collect::<Vec<_>>();
        assert_eq!(raw(r), raw(e), "item {}", r["id"]);
    }
    assert!(stored.iter().any(|r| r["samples"].as_array().unwrap().len() < 6), "some item stopped early");
    // There is no k to extend when each item took what it needed.
    let o = c.run(&["extend", &job, "--k", "8"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("adaptive k"), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn a_job_revoted_at_a_smaller_k_is_what_a_run_at_that_k_gives() {
    let c = Cluster::start(&[]);
    let _w = c.worker("w", "8");
    let examples = examples();
    let submit = |k: &str| c.ok(&["submit", examples.to_str().unwrap(), "--judge", "tiny", "--k", k, "--max-new-tokens", "32", "--seed", "5", "--wait"]).trim().to_string();
    let job4 = submit("4");
    let job2 = submit("2");
    let lines = |out: String| -> Vec<Value> { out.lines().map(|l| serde_json::from_str(l).unwrap()).collect() };
    let fresh = c.query(&job2);
    let revoted = lines(c.ok(&["query", &job4, "--k", "2", "--json"]));
    assert_eq!(fresh.len(), 16);
    assert_eq!(revoted.len(), 16);
    let at_4 = c.query(&job4);
    assert!(at_4.iter().all(|r| r["samples"].as_array().unwrap().len() == 4));
    for (a, b) in revoted.iter().zip(&fresh) {
        for field in ["id", "key", "summed", "winner", "margin", "tie", "valid", "agreement", "sample_scores"] {
            assert_eq!(a[field], b[field], "item {} field {field}", b["id"]);
        }
        let samples = |v: &Value| v["samples"].as_array().unwrap().iter().map(|s| (s["index"].clone(), s["raw"].clone())).collect::<Vec<_>>();
        assert_eq!(samples(a), samples(b), "item {}", b["id"]);
    }
    assert!(revoted.iter().zip(&at_4).all(|(a, b)| a["key"] != b["key"]), "a verdict at another k has another content key");

    // Filters apply after the vote.
    let decided = lines(c.ok(&["query", &job4, "--k", "2", "--ties", "false", "--json", "--without-samples"]));
    let want: Vec<&Value> = fresh.iter().filter(|r| r["tie"] == false).map(|r| &r["id"]).collect();
    assert_eq!(decided.iter().map(|r| &r["id"]).collect::<Vec<_>>(), want);
    assert!(decided.iter().all(|r| r["samples"].as_array().is_none_or(Vec::is_empty)));
    let limited = lines(c.ok(&["query", &job4, "--k", "2", "--ties", "false", "--json", "--limit", "3"]));
    assert_eq!(limited.iter().map(|r| &r["id"]).collect::<Vec<_>>(), want[..3.min(want.len())].to_vec());

    // The training data at k = 2 from the k = 4 job is the k = 2 job's.
    let file = |name: &str| c.dir.path().join(name).to_str().unwrap().to_string();
    c.ok(&["export", &job4, "--k", "2", "--format", "dpo", "-o", &file("dpo-at-2.jsonl")]);
    c.ok(&["export", &job2, "--format", "dpo", "-o", &file("dpo-2.jsonl")]);
    let read = |name: &str| std::fs::read_to_string(file(name)).unwrap();
    assert!(!read("dpo-2.jsonl").is_empty());
    assert_eq!(read("dpo-at-2.jsonl"), read("dpo-2.jsonl"));

    // `revote` compares with the stored verdicts and writes the re-voted records.
    let summary = c.ok(&["revote", &job4, "--k", "2", "-o", &file("revoted.jsonl")]);
    assert!(summary.contains("16 item(s) re-voted at k = 2 (the job's k = 4)"), "{summary}");
    let changed = at_4.iter().zip(&fresh).filter(|(a, b)| a["winner"] != b["winner"]).count();
    assert!(summary.contains(&format!("winner changed     {changed:>8}")), "{summary}");
    assert_eq!(lines(read("revoted.jsonl")), revoted);

    // What cannot be done is named.
    let err = |args: &[&str]| {
        let o = c.run(args);
        assert!(!o.status.success(), "{args:?} succeeded");
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    assert!(err(&["query", &job4, "--k", "5"]).contains("--k 5 is more than the job's k = 4: samples 4..5 were never taken"));
    assert!(err(&["revote", &job4, "--k", "0"]).contains("--k must be at least 1"));
    assert!(err(&["export", &job4, "--k", "2", "--meta-rm-k", "1", "-o", &file("x.jsonl")]).contains("--meta-rm-k needs a job voted with a meta reward model"));
}

/// A gauge or counter of a Prometheus endpoint at `addr` (`None` until it is exported).
fn metric(addr: &str, name: &str) -> Option<f64> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.lines().find_map(|l| l.strip_prefix(&format!("{name} "))).and_then(|v| v.trim().parse().ok())
}

/// The distributed path on a three-master Redis Cluster (`--redis-url` naming its nodes):
/// the coordinator's autoscaling gauges see the items wait, a worker labels them, and the
/// job ends as on one server, with its worker listed.
#[test]
fn a_job_runs_on_a_three_master_redis_cluster() {
    let rc = verdict_testkit::RedisCluster::start(3);
    let metrics = format!("127.0.0.1:{}", verdict_testkit::free_port());
    let c = Cluster::start_with(&[("VERDICT_REDIS_URL", &rc.url())], &["--metrics-listen", &metrics]);
    let job = c.submit(&examples(), &["--seed", "3"]);
    // No worker yet: the gauges show every item waiting, and the oldest one ageing.
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(&metrics, r#"verdict_queue_waiting{judge="tiny"}"#) != Some(16.0) {
        assert!(Instant::now() < deadline, "the queue gauges never showed 16 waiting: {:?}\n{}", metric(&metrics, r#"verdict_queue_waiting{judge="tiny"}"#), c.logs());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(metric(&metrics, r#"verdict_queue_oldest_waiting_seconds{judge="tiny"}"#).is_some_and(|s| s > 0.0));
    let _w = c.worker("w1", "8");
    c.wait_done(&job, Duration::from_secs(120));
    let records = c.query(&job);
    assert_eq!(records_and_distinct_ids(&records), (16, 16), "every item has exactly one verdict");
    let status = c.ok(&["status"]);
    assert!(status.contains("w1"), "{status}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(&metrics, r#"verdict_queue_waiting{judge="tiny"}"#) != Some(0.0) || metric(&metrics, r#"verdict_workers_live{judge="tiny"}"#) != Some(1.0) {
        assert!(Instant::now() < deadline, "the gauges never showed the queue empty and one worker\n{}", c.logs());
        std::thread::sleep(Duration::from_millis(200));
    }
    // The work went to the cluster's nodes, not to the single Redis the harness also runs.
    assert!(rc.keys_per_node().iter().sum::<u64>() > 0);
}
