//! Nothing forged, nothing leaked, nothing stuck: bearer tokens and roles on every service,
//! jobs that belong to their client, results accepted only from the worker holding the
//! entry, an open coordinator kept on loopback, and a worker cut off from its coordinator
//! handing its leases back. Real processes, real Redis and Postgres.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use common::cluster::{write_items, Cluster};
use common::{bin, model};
use serde_json::Value;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use verdict_proto::auth::Bearer;
use verdict_proto::v1::{self, job_service_client::JobServiceClient, verdict_service_client::VerdictServiceClient, worker_service_client::WorkerServiceClient};

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `verdict token new`: the token (stdout) into `NAME.token`, its line into `tokens`.
fn token(dir: &Path, role: &str, name: &str) -> PathBuf {
    let tokens = dir.join("tokens");
    let o = bin().args(["token", "new", "--role", role, "--name", name, "--append", tokens.to_str().unwrap()]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let t = String::from_utf8(o.stdout).unwrap();
    assert!(t.trim().starts_with("vdt_"), "{t}");
    let text = std::fs::read_to_string(&tokens).unwrap();
    assert!(!text.contains(t.trim()), "the token file holds hashes, never tokens");
    let file = dir.join(format!("{name}.token"));
    std::fs::write(&file, &t).unwrap();
    file
}

/// A cluster command as the holder of `token`.
fn as_(c: &Cluster, token: &Path, args: &[&str]) -> Output {
    c.cmd().env("VERDICT_TOKEN_FILE", token).args(args).output().unwrap()
}

fn ok_as(c: &Cluster, token: &Path, args: &[&str]) -> String {
    let o = as_(c, token, args);
    assert!(o.status.success(), "verdict {args:?} failed: {}", stderr(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn refused(o: &Output, code: &str) {
    assert!(!o.status.success() && stderr(o).contains(code), "expected {code}: {}", stderr(o));
}

fn channel(port: u16, token: Option<&str>) -> InterceptedService<Channel, Bearer> {
    let ch = Channel::from_shared(format!("http://127.0.0.1:{port}")).unwrap().connect_lazy();
    InterceptedService::new(ch, Bearer::new(token).unwrap())
}

#[test]
fn tokens_guard_every_service_and_a_job_belongs_to_its_client() {
    let dir = tempfile::tempdir().unwrap();
    let alice = token(dir.path(), "client", "alice");
    let bob = token(dir.path(), "client", "bob");
    let worker = token(dir.path(), "worker", "gpu-pool");
    let admin = token(dir.path(), "admin", "ops");
    let tokens = dir.path().join("tokens");
    let mut c = Cluster::start_with(&[], &["--auth-tokens", tokens.to_str().unwrap()]);
    assert!(c.coordinator.as_ref().unwrap().log().contains("(tokens required)"));

    // No token, or a wrong one: nothing at all.
    let items = write_items(c.dir.path(), 4);
    refused(&c.run(&["status"]), "Unauthenticated");
    refused(&c.run(&["submit", items.to_str().unwrap(), "--judge", "tiny", "--k", "2"]), "Unauthenticated");
    let forged = dir.path().join("forged.token");
    std::fs::write(&forged, "vdt_0000000000000000000000000000000000000000000000000000000000000000").unwrap();
    refused(&as_(&c, &forged, &["status"]), "unknown token");
    // A worker token cannot submit; a client token cannot serve as a worker.
    refused(&as_(&c, &worker, &["submit", items.to_str().unwrap(), "--judge", "tiny", "--k", "2"]), "PermissionDenied");
    let mut impostor = c.spawn("impostor", &["worker", "--model", model().to_str().unwrap(), "--judge", "tiny", "--worker-id", "impostor", "--token-file", alice.to_str().unwrap()]);
    let st = impostor.wait(Duration::from_secs(60)).expect("a worker with a client's token stops");
    assert!(!st.success() && impostor.log().contains("may not send worker heartbeats"), "{}", impostor.log());

    // Alice's job is hers: Bob can neither see nor touch it.
    let job = ok_as(&c, &alice, &["submit", items.to_str().unwrap(), "--judge", "tiny", "--k", "2", "--max-new-tokens", "32"]).trim().to_string();
    for args in [vec!["status", &job], vec!["cancel", &job], vec!["query", &job], vec!["export", &job, "-o", "/dev/null"], vec!["watch", &job], vec!["report", &job]] {
        refused(&as_(&c, &bob, &args), "PermissionDenied");
    }
    assert!(!ok_as(&c, &bob, &["status"]).contains(&job), "another client's job is not listed");
    assert!(ok_as(&c, &alice, &["status"]).contains(&job));
    assert!(ok_as(&c, &admin, &["status"]).contains(&job), "the admin sees every job");

    let _w = c.spawn("w", &["worker", "--model", model().to_str().unwrap(), "--judge", "tiny", "--worker-id", "w", "--k-hint", "2", "--batch", "8", "--token-file", worker.to_str().unwrap()]);
    let deadline = Instant::now() + Duration::from_secs(180);
    while !ok_as(&c, &alice, &["status", &job]).contains("state    done") {
        assert!(Instant::now() < deadline, "job not done: {}", c.logs());
        std::thread::sleep(Duration::from_millis(250));
    }
    let records: Vec<Value> = ok_as(&c, &alice, &["query", &job, "--json"]).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(records.len(), 4);

    // A forged report: a verdict for an entry the reporter does not hold is not stored,
    // whoever sends it; clients and strangers may not report at all.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let read = |t: &Path| std::fs::read_to_string(t).unwrap().trim().to_string();
    rt.block_on(async {
        let (ta, tw, tb) = (read(&alice), read(&worker), read(&bob));
        let mut verdicts = VerdictServiceClient::new(channel(c.port, Some(&ta)));
        let stored = verdicts.get_verdict(v1::GetVerdictRequest { job_id: job.clone(), item_id: "q000".into() }).await.unwrap().into_inner();
        let mut fake = stored.clone();
        let v = fake.verdict.as_mut().unwrap();
        v.summed.reverse();
        v.winner = Some(if v.winner == Some(0) { 1 } else { 0 });
        let report = v1::ReportResultsRequest {
            worker_id: "w".into(),
            judge: "tiny".into(),
            fingerprint: stored.fingerprint.clone(),
            meta_fingerprint: None,
            results: vec![v1::ItemResult { entry_id: "1-1".into(), job_id: job.clone(), item_id: "q000".into(), outcome: Some(v1::item_result::Outcome::Verdict(fake)) }],
        };
        let r = WorkerServiceClient::new(channel(c.port, Some(&tw))).report_results(report.clone()).await.unwrap().into_inner();
        assert_eq!((r.acknowledged, r.not_held), (0, vec!["1-1".to_string()]));
        let e = WorkerServiceClient::new(channel(c.port, Some(&tb))).report_results(report.clone()).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e}");
        let e = WorkerServiceClient::new(channel(c.port, None)).report_results(report).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e}");
        let after = verdicts.get_verdict(v1::GetVerdictRequest { job_id: job.clone(), item_id: "q000".into() }).await.unwrap().into_inner();
        assert_eq!(after.verdict, stored.verdict, "the stored verdict is untouched");
        // Bob, through the API directly: another client's verdicts and job are refused.
        let e = VerdictServiceClient::new(channel(c.port, Some(&tb))).get_verdict(v1::GetVerdictRequest { job_id: job.clone(), item_id: "q000".into() }).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        let e = JobServiceClient::new(channel(c.port, Some(&tb))).extend_job(v1::ExtendJobRequest { job_id: job.clone(), k: 4 }).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        // Health answers anyone (load balancers have no token).
        let mut health = tonic_health::pb::health_client::HealthClient::new(Channel::from_shared(format!("http://127.0.0.1:{}", c.port)).unwrap().connect_lazy());
        let h = health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.unwrap().into_inner();
        assert_eq!(h.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
    });

    // Token rotation: a line removed and SIGHUP, and that token is refused from then on.
    let text = std::fs::read_to_string(&tokens).unwrap();
    std::fs::write(&tokens, text.lines().filter(|l| !l.contains(" bob ")).map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    c.coordinator.as_mut().unwrap().kill("-HUP");
    let deadline = Instant::now() + Duration::from_secs(20);
    while as_(&c, &bob, &["status"]).status.success() {
        assert!(Instant::now() < deadline, "bob's token still accepted after the reload: {}", c.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    refused(&as_(&c, &bob, &["status"]), "Unauthenticated");
    assert!(as_(&c, &alice, &["status"]).status.success());
}

#[test]
fn an_open_coordinator_stays_on_loopback_and_help_shows_no_secret() {
    let pg_url = "postgres://verdict:S3cretPassw0rd@127.0.0.1:1/verdict";
    let o = bin().args(["coordinator", "--listen", "0.0.0.0:0"]).env("DATABASE_URL", pg_url).output().unwrap();
    assert!(!o.status.success(), "an open coordinator must not listen on every address");
    let e = stderr(&o);
    assert!(e.contains("refusing to listen on 0.0.0.0:0 without authentication") && e.contains("--insecure"), "{e}");
    assert!(!e.contains("S3cretPassw0rd"), "{e}");
    // --insecure lets it past that check (it then fails on the unreachable Postgres, by name).
    let o = bin().args(["coordinator", "--listen", "0.0.0.0:0", "--insecure", "--start-timeout", "1"]).env("DATABASE_URL", pg_url).output().unwrap();
    let e = stderr(&o);
    assert!(!e.contains("refusing") && e.contains("Postgres") && !e.contains("S3cretPassw0rd"), "{e}");
    // No --help prints a secret from the environment.
    for cmd in ["coordinator", "worker", "submit", "status", "query", "export", "dead-letters"] {
        let o = bin()
            .args([cmd, "--help"])
            .env("DATABASE_URL", pg_url)
            .env("VERDICT_REDIS_URL", "redis://:S3cretPassw0rd@127.0.0.1:1/")
            .env("VERDICT_COORDINATOR", "http://u:S3cretPassw0rd@127.0.0.1:1")
            .env("VERDICT_TOKEN", "vdt_S3cretPassw0rd")
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
        assert!(!text.contains("S3cretPassw0rd"), "verdict {cmd} --help shows a secret:\n{text}");
    }
}

#[test]
fn a_worker_cut_off_from_its_coordinator_hands_its_leases_back() {
    // Two coordinators over one Redis and Postgres. Worker A talks to the first, which dies;
    // A's items must reach worker B (of the second), although A keeps running: A stops
    // renewing and hands its leases back after a third of the lease timeout (without that,
    // A would renew them for as long as it runs and the job would never end).
    let mut c = Cluster::start(&[("VERDICT_LEASE_TIMEOUT", "9")]);
    // More work than A finishes in the seconds before its coordinator goes.
    let items = write_items(c.dir.path(), 24);
    let first = format!("http://127.0.0.1:{}", c.port);
    let mut a = c.spawn("a", &["worker", "--model", model().to_str().unwrap(), "--judge", "tiny", "--worker-id", "a", "--k-hint", "2", "--batch", "64", "--coordinator", &first]);
    c.wait_log(&a, "worker started", Duration::from_secs(60));
    // Long judgements: A is busy with items when its coordinator goes.
    let job = c.submit_with(&items, "1200", &[]);
    c.wait_in_flight(&a, "a", 1, Duration::from_secs(60));
    c.coordinator.as_mut().unwrap().kill("-KILL");
    c.coordinator.as_mut().unwrap().wait(Duration::from_secs(10));
    // The second coordinator, on another port; B and the client use it.
    let port2 = verdict_testkit::free_port();
    c.port = port2;
    for (k, v) in c.env.iter_mut() {
        if k == "VERDICT_COORDINATOR" {
            *v = format!("http://127.0.0.1:{port2}");
        }
    }
    c.start_coordinator();
    c.wait_log(&a, "no coordinator reached; handing back our leases", Duration::from_secs(30));
    // B, of the healthy coordinator, takes them over at its first reclaim.
    let _b = c.spawn("b", &["worker", "--model", model().to_str().unwrap(), "--judge", "tiny", "--worker-id", "b", "--k-hint", "2", "--batch", "64"]);
    let s = Instant::now();
    // Done by B while A, holding the items' old leases, still runs.
    c.wait_done(&job, Duration::from_secs(240));
    assert_eq!(c.query(&job).len(), 24);
    assert!(a.wait(Duration::from_millis(1)).is_none(), "a is still running, and yet b judged its items");
    eprintln!("b finished a's items {:.1} s after it started", s.elapsed().as_secs_f64());
}

fn health(port: u16) -> Option<i32> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let ch = Channel::from_shared(format!("http://127.0.0.1:{port}")).unwrap().connect_timeout(Duration::from_secs(2)).connect_lazy();
        let mut h = tonic_health::pb::health_client::HealthClient::new(ch);
        let r = tokio::time::timeout(Duration::from_secs(3), h.check(tonic_health::pb::HealthCheckRequest { service: "verdict.v1.JobService".into() })).await;
        r.ok().and_then(|r| r.ok()).map(|r| r.into_inner().status)
    })
}

#[test]
fn health_follows_redis_and_a_watch_outlives_a_coordinator_restart() {
    use tonic_health::pb::health_check_response::ServingStatus;
    let mut c = Cluster::start(&[("VERDICT_REQUEUE_AFTER", "2"), ("VERDICT_SWEEP_EVERY", "1")]);
    let items = write_items(c.dir.path(), 3);
    let job = c.submit(&items, &[]);
    let mut watch = c.spawn("watch", &["watch", &job]);
    assert_eq!(health(c.port), Some(ServingStatus::Serving as i32));

    // Redis dies: the coordinator stays up and says it cannot serve, then serves again.
    c.redis.kill();
    let wait_for = |want: ServingStatus, c: &Cluster| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while health(c.port) != Some(want as i32) {
            assert!(Instant::now() < deadline, "health never became {want:?}: {}", c.logs());
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    wait_for(ServingStatus::NotServing, &c);
    c.redis.start_again();
    wait_for(ServingStatus::Serving, &c);

    // The coordinator restarts under the watch, which reconnects; the sweeper puts the
    // items whose entries the empty Redis lost back on the queue; a worker finishes them.
    c.coordinator.as_mut().unwrap().kill("-KILL");
    std::thread::sleep(Duration::from_secs(1));
    c.start_coordinator();
    let _w = c.worker("w", "8");
    let st = watch.wait(Duration::from_secs(180)).unwrap_or_else(|| panic!("the watch never ended: {}", c.logs()));
    let log = watch.log();
    assert!(st.success() && log.contains("reconnecting") && log.contains("done"), "{log}");
    assert_eq!(c.progress(&job)["done"], 3);
}

/// The repository's least-privilege files, with test passwords.
fn deploy_file(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn set(env: &mut [(String, String)], key: &str, value: String) {
    env.iter_mut().find(|(k, _)| k == key).unwrap_or_else(|| panic!("{key} not in the cluster's env")).1 = value;
}

#[test]
fn the_documented_least_privilege_users_are_enough() {
    // The first coordinator runs as the superuser and migrates the schema (the owner's job).
    let mut c = Cluster::start(&[]);
    // The queue's keys use the documented prefix, as the ACL names it.
    set(&mut c.env, "VERDICT_QUEUE_PREFIX", "verdict".into());
    c.coordinator.as_mut().unwrap().kill("-KILL");
    c.coordinator.as_mut().unwrap().wait(Duration::from_secs(10));
    c.pg.sql("verdict", &deploy_file("postgres-grants.sql"));

    let rt = tokio::runtime::Runtime::new().unwrap();
    let admin_url = c.redis.url();
    rt.block_on(async {
        let client = redis::Client::open(admin_url.as_str()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        for line in deploy_file("redis-acl.conf").lines().filter(|l| l.starts_with("user ")) {
            let words: Vec<String> = line.split_whitespace().skip(1).map(|w| w.replace("CHANGE-ME-", "pw-")).collect();
            let _: () = redis::cmd("ACL").arg("SETUSER").arg(&words).query_async(&mut conn).await.unwrap_or_else(|e| panic!("{line}: {e}"));
        }
        // The default user can no longer be used without a password either.
        let _: () = redis::cmd("ACL").arg("SETUSER").arg("default").arg("off").query_async(&mut conn).await.unwrap();
    });
    let port = c.redis.port;
    let redis_as = |user: &str| format!("redis://{user}:pw-{}@127.0.0.1:{port}/", user.trim_start_matches("verdict-"));
    let pg_url = c.env.iter().find(|(k, _)| k == "DATABASE_URL").unwrap().1.clone();
    let app_url = pg_url.replacen("postgres@", "verdict_app:pw-app@", 1).replacen("://postgres:", "://verdict_app:", 1);
    assert!(app_url.contains("verdict_app"), "{app_url}");
    set(&mut c.env, "DATABASE_URL", app_url.clone());
    set(&mut c.env, "VERDICT_REDIS_URL", redis_as("verdict-coordinator"));
    c.coordinator_args = vec!["--no-migrate".into(), "--sweep-every".into(), "1".into()];
    c.start_coordinator();

    // Without --no-migrate the app role may not touch the schema, and says so.
    let o = bin().args(["coordinator", "--listen", "127.0.0.1:0", "--start-timeout", "1"]).env("DATABASE_URL", &app_url).env("VERDICT_REDIS_URL", redis_as("verdict-coordinator")).output().unwrap();
    assert!(!o.status.success() && stderr(&o).contains("permission denied"), "{}", stderr(&o));

    set(&mut c.env, "VERDICT_REDIS_URL", redis_as("verdict-worker"));
    let _w = c.worker("w", "8");
    let job = c.submit(&write_items(c.dir.path(), 4), &["--wait"]);
    assert_eq!(c.progress(&job)["done"], 4);
    assert_eq!(c.query(&job).len(), 4);
    let out = c.dir.path().join("dpo.jsonl");
    c.ok(&["export", &job, "--format", "dpo", "-o", out.to_str().unwrap()]);
    c.ok(&["dead-letters", "list"]);
    let other = c.submit(&write_items(c.dir.path(), 2), &[]);
    c.ok(&["cancel", &other]);
    c.ok(&["status"]);

    rt.block_on(async {
        // The worker's user cannot do the coordinator's part, nor touch other keys.
        let client = redis::Client::open(redis_as("verdict-worker")).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let e = redis::cmd("SADD").arg("verdict:{tiny}:cancelled").arg("x").query_async::<i64>(&mut conn).await.unwrap_err();
        assert!(e.to_string().to_lowercase().contains("noperm"), "{e}");
        let e = redis::cmd("XADD").arg("other:key").arg("*").arg("a").arg("b").query_async::<String>(&mut conn).await.unwrap_err();
        assert!(e.to_string().to_lowercase().contains("noperm"), "{e}");
        // The coordinator's user can remove idle consumers (the script's XINFO is allowed).
        let cfg = verdict_queue::QueueConfig { prefix: "verdict".into(), ..Default::default() };
        let q = verdict_queue::Queue::connect(&redis_as("verdict-coordinator"), cfg).await.unwrap();
        let mut lease = verdict_queue::Queue::lease_connection(&redis_as("verdict-worker"), Duration::from_millis(50)).await.unwrap();
        let wq = verdict_queue::Queue::connect(&redis_as("verdict-worker"), verdict_queue::QueueConfig { prefix: "verdict".into(), ..Default::default() }).await.unwrap();
        // Another judge than the running worker's, so that nobody else leases the entry.
        let spec = verdict_core::LabelSpec::new("probe");
        let item = verdict_core::Item::from_json_line(r#"{"id":"x","prompt":"p","responses":["a","b"]}"#).unwrap();
        q.enqueue("probe", &[verdict_queue::QueuedItem { job_id: "j".into(), spec, item, first_sample: 0 }]).await.unwrap();
        let got = wq.lease("probe", "idle-one", 1, Duration::from_millis(50), &mut lease).await.unwrap();
        assert_eq!(q.ack("probe", &[got[0].id.clone()]).await.unwrap(), 1);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(q.prune_consumers("probe", Duration::from_millis(50)).await.unwrap(), vec!["idle-one".to_string()]);
    });
    // The app role cannot delete rows or change the schema.
    for sql in ["DELETE FROM verdicts", "DROP TABLE samples", "TRUNCATE jobs"] {
        let o = c.pg.psql(&app_url, sql);
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && (e.contains("must be owner") || e.contains("permission denied")), "{sql}: {e}");
    }
}

/// A CA and a certificate for 127.0.0.1 it signed, made with openssl: (ca, cert, key).
fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let o = std::process::Command::new(verdict_testkit::openssl()).args(args).current_dir(dir).output().expect("running openssl");
        assert!(o.status.success(), "openssl {args:?}: {}", stderr(&o));
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    run(&[&["req", "-x509"][..], &ec, &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=verdict test CA"]].concat());
    run(&[&["req"][..], &ec, &["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"]].concat());
    std::fs::write(dir.join("ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n").unwrap();
    run(&["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext"]);
    (dir.join("ca.pem"), dir.join("server.pem"), dir.join("server.key"))
}

#[test]
fn every_connection_over_tls_with_certificates_the_test_made() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates(certs.path());
    // Redis speaks TLS only; Postgres offers it and the URL demands a verified certificate.
    let redis = verdict_testkit::Redis::start_tls(&cert, &key);
    let pg = verdict_testkit::Postgres::start_tls(&cert, &key);
    let db = format!("{}?sslmode=verify-full&sslrootcert={}", pg.create_database("verdict"), ca.display());
    let port = verdict_testkit::free_port();
    let ca_s = ca.to_str().unwrap().to_string();
    let env = [
        ("DATABASE_URL", db),
        ("VERDICT_REDIS_URL", redis.url()),
        ("VERDICT_REDIS_TLS_CA", ca_s.clone()),
        ("VERDICT_QUEUE_PREFIX", verdict_testkit::unique("tls")),
        ("VERDICT_COORDINATOR", format!("https://127.0.0.1:{port}")),
        ("VERDICT_TLS_CA", ca_s),
        ("VERDICT_LOG", "info".to_string()),
    ];
    assert!(redis.url().starts_with("rediss://"));
    let args = vec!["--tls-cert".to_string(), cert.display().to_string(), "--tls-key".to_string(), key.display().to_string()];
    let mut c = Cluster { redis, pg, dir: tempfile::tempdir().unwrap(), env: env.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(), port, coordinator: None, coordinator_args: args };
    c.start_coordinator();
    // Workers and clients trusting the CA work end to end, every hop encrypted.
    let _w = c.worker("w", "8");
    let job = c.submit(&write_items(c.dir.path(), 4), &["--wait"]);
    assert_eq!(c.query(&job).len(), 4);
    let super_url = c.pg.url("verdict");
    let o = c.pg.psql(&super_url, "SELECT count(*) FILTER (WHERE s.ssl) || '/' || count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.datname = 'verdict' AND a.pid <> pg_backend_pid()");
    let counts = String::from_utf8_lossy(&o.stdout).lines().map(str::trim).find(|l| l.contains('/')).unwrap_or_default().to_string();
    let (tls, all) = counts.split_once('/').unwrap_or(("", ""));
    assert!(!all.is_empty() && tls == all && all != "0", "the coordinator's Postgres connections over TLS / all: {counts}");
    // Without the CA the certificate is refused; in plaintext the server does not answer.
    let o = c.cmd().env_remove("VERDICT_TLS_CA").args(["status"]).output().unwrap();
    assert!(!o.status.success() && stderr(&o).contains("UnknownIssuer"), "{}", stderr(&o));
    let o = c.cmd().env("VERDICT_COORDINATOR", format!("http://127.0.0.1:{}", c.port)).env_remove("VERDICT_TLS_CA").args(["status"]).output().unwrap();
    assert!(!o.status.success(), "a plaintext client was served");
    // A CA for a plaintext address is a mistake, said as such.
    let o = c.cmd().env("VERDICT_COORDINATOR", format!("http://127.0.0.1:{}", c.port)).args(["status"]).output().unwrap();
    assert!(!o.status.success() && stderr(&o).contains("use https://"), "{}", stderr(&o));
}
