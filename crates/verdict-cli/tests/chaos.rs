//! Chaos: 3,000 items judged while workers are killed at random (kill -9, more than 20
//! times), a coordinator is killed and restarted while a second one serves beside it,
//! Redis restarts empty, Postgres is stopped for 30 s, and a worker is stopped with SIGTERM
//! in the middle of its batch. At the end every item has exactly one verdict, no sample row
//! is duplicated, and the verdicts are those embedded mode makes for the same seed. The
//! test prints what it did and what it checked.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::cluster::{records_and_distinct_ids, write_items, Cluster, Proc};
use common::{bin, model};
use serde_json::Value;

const ITEMS: usize = 3000;
const KILLS: usize = 22;
/// Judgement budget; with ITEMS the job outlasts the faults (checked below; 1,500 items
/// ended before the SIGTERM fault on 2026-12-04, in about 67 s). Long enough
/// for the random judge to write NULs, which once made stored samples differ from a label
/// file's (the store kept U+FFFD); every path now carries the same text.
const NEW_TOKENS: &str = "64";

/// A small deterministic generator: the same run of faults every time.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % n
    }
}

/// The position of a worker that holds items now (by its heartbeats), waiting for one.
fn holding_worker(c: &Cluster, ids: &[String]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s: Value = serde_json::from_str(&c.ok(&["status", "--json"])).unwrap();
        let holding = s["workers"].as_array().unwrap().iter().filter(|w| w["in_flight"].as_u64().unwrap_or(0) > 0).filter_map(|w| ids.iter().position(|id| w["id"] == id.as_str())).next();
        if let Some(i) = holding {
            return i;
        }
        assert!(s["jobs"][0]["state"] != "done", "the job ended before this fault: raise ITEMS so that it outlasts them: {s}");
        assert!(Instant::now() < deadline, "no worker held items for a minute: {s}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn say(t0: Instant, what: impl AsRef<str>) {
    eprintln!("[chaos {:6.1} s] {}", t0.elapsed().as_secs_f64(), what.as_ref());
}

#[test]
fn three_thousand_items_survive_kills_restarts_and_outages_exactly_once() {
    let t0 = Instant::now();
    // Short leases, so killed workers' items come back within seconds (but not so short that
    // a heartbeat slowed by this 2-core machine's load counts as a lost coordinator, which
    // hands leases back and makes work judged twice); deliveries enough that no
    // item dies of the kills alone; a sweeper that notices lost entries quickly.
    let mut c = Cluster::start(&[
        ("VERDICT_LEASE_TIMEOUT", "15"),
        ("VERDICT_MAX_DELIVERIES", "100"),
        ("VERDICT_REQUEUE_AFTER", "5"),
        ("VERDICT_SWEEP_EVERY", "1"),
        ("VERDICT_START_TIMEOUT", "120"),
    ]);
    let port2 = verdict_testkit::free_port();
    let second = format!("http://127.0.0.1:{port2}");
    let mut c2 = c.spawn("coordinator2", &["coordinator", "--listen", &format!("127.0.0.1:{port2}")]);
    let items = write_items(c.dir.path(), ITEMS);
    let job = c.submit_with(&items, NEW_TOKENS, &["--seed", "7"]);
    say(t0, format!("submitted {ITEMS} items (k = 2, {NEW_TOKENS} new tokens) as job {job}; coordinators on :{} and :{port2}", c.port));

    let mut rng = Rng(42);
    let mut n = 0usize;
    let spawn = |c: &Cluster, n: &mut usize| -> Proc {
        *n += 1;
        let id = format!("w{n}");
        // Every other worker reports to the second coordinator.
        let mut args = vec!["worker", "--model", model().to_str().unwrap(), "--judge", "tiny", "--worker-id", &id, "--k-hint", "2", "--batch", "32"];
        if (*n).is_multiple_of(2) {
            args.extend(["--coordinator", &second]);
        }
        c.spawn(&id, &args)
    };
    let mut workers: Vec<Proc> = Vec::new();
    // Each worker's id, by position in `workers`.
    let mut ids: Vec<String> = Vec::new();
    for _ in 0..3 {
        workers.push(spawn(&c, &mut n));
        ids.push(format!("w{n}"));
    }
    let mut kills = 0;
    let mut did = Vec::new();
    while kills < KILLS {
        std::thread::sleep(Duration::from_millis(2000));
        let i = rng.below(workers.len());
        workers[i].kill("-KILL");
        workers[i].wait(Duration::from_secs(10));
        kills += 1;
        workers[i] = spawn(&c, &mut n);
        ids[i] = format!("w{n}");
        say(t0, format!("kill -9 of a worker ({kills} of {KILLS}); a new one starts"));
        match kills {
            5 => {
                c.coordinator.as_mut().unwrap().kill("-KILL");
                c.coordinator.as_mut().unwrap().wait(Duration::from_secs(10));
                c.start_coordinator();
                did.push("coordinator 1 killed and restarted");
                say(t0, "coordinator 1: kill -9, restarted");
            }
            9 => {
                c.redis.kill();
                c.redis.start_again();
                did.push("Redis restarted empty");
                say(t0, "Redis: kill -9, restarted empty (the sweeper queues the lost entries again)");
            }
            13 => {
                say(t0, "Postgres: stopped for 30 s");
                c.pg.stop();
                std::thread::sleep(Duration::from_secs(30));
                c.pg.start_again();
                did.push("Postgres stopped for 30 s");
                say(t0, "Postgres: back");
            }
            17 => {
                // SIGTERM in the middle of a batch: once a worker holds items, it is told to
                // stop; it finishes and reports what it holds.
                let i = holding_worker(&c, &ids);
                workers[i].kill("-TERM");
                let st = workers[i].wait(Duration::from_secs(120)).expect("a worker drains within its drain timeout");
                assert!(st.success(), "a drained worker exits cleanly: {}", workers[i].log());
                workers[i] = spawn(&c, &mut n);
                ids[i] = format!("w{n}");
                did.push("a worker stopped with SIGTERM in its batch, drained");
                say(t0, "SIGTERM to a worker: it drained and exited 0");
            }
            _ => {}
        }
    }
    // Faults on an idle cluster prove nothing: the job must still have had work to do.
    let left = c.progress(&job)["queued"];
    assert!(left > 0, "the job was done before the faults were: make its work longer");
    say(t0, format!("faults done with {left} items still to judge; waiting for the job"));
    c.wait_done(&job, Duration::from_secs(900));
    say(t0, "job done");

    // Exactly once: one verdict per item, two samples each, no duplicated sample row.
    let records = c.query(&job);
    assert_eq!(records_and_distinct_ids(&records), (ITEMS, ITEMS), "every item has exactly one verdict");
    assert!(records.iter().all(|r| r["samples"].as_array().unwrap().len() == 2));
    let db = c.env.iter().find(|(k, _)| k == "DATABASE_URL").unwrap().1.clone();
    let o = c.pg.psql(&db, "SELECT count(*) || ' ' || count(DISTINCT (job_id, item_id, sample_index)) FROM samples");
    let counts = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(counts.contains(&format!("{} {}", 2 * ITEMS, 2 * ITEMS)), "sample rows (all, distinct): {counts}");
    let p = c.progress(&job);
    assert_eq!((p["done"], p["dead"], p["queued"]), (ITEMS as u64, 0, 0), "{p:?}");

    // The same verdicts as embedded mode, for a sample of the items (each item's verdict
    // depends only on the item, the spec and the seed).
    let subset = c.dir.path().join("subset.jsonl");
    let lines: Vec<String> = std::fs::read_to_string(&items).unwrap().lines().step_by(10).map(String::from).collect();
    std::fs::write(&subset, lines.join("\n") + "\n").unwrap();
    let out = c.dir.path().join("embedded.jsonl");
    let o = bin()
        .args(["label", subset.to_str().unwrap(), "-o", out.to_str().unwrap(), "--model", model().to_str().unwrap()])
        .args(["--k", "2", "--max-new-tokens", NEW_TOKENS, "--seed", "7"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let by_id: HashMap<&str, &Value> = records.iter().map(|r| (r["id"].as_str().unwrap(), r)).collect();
    let mut compared = 0;
    for line in std::fs::read_to_string(&out).unwrap().lines() {
        let e: Value = serde_json::from_str(line).unwrap();
        let d = by_id[e["id"].as_str().unwrap()];
        for field in ["key", "summed", "winner", "margin", "tie", "valid"] {
            assert_eq!(e[field], d[field], "item {} field {field}", e["id"]);
        }
        let raw = |v: &Value| v["samples"].as_array().unwrap().iter().map(|s| s["raw"].clone()).collect::<Vec<_>>();
        assert_eq!(raw(&e), raw(d), "item {}", e["id"]);
        compared += 1;
    }
    assert_eq!(compared, lines.len());
    drop(workers);
    c2.kill("-TERM");
    say(t0, format!("did: {kills} kill -9 of workers ({n} workers in all); {}", did.join("; ")));
    say(t0, format!("checked: {ITEMS} verdicts for {ITEMS} items, {} sample rows none duplicated, no item dead or queued, {compared} verdicts equal to embedded mode's (samples' text included)", 2 * ITEMS));
}
