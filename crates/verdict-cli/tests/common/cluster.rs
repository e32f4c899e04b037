//! A cluster for end-to-end tests: a throwaway Redis and Postgres, the real `verdict
//! coordinator` as a process, workers with a tiny random model, and the client commands.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use verdict_testkit::{free_port, unique, Postgres, Redis};

use super::{bin, model};

/// A child process killed when dropped; its stderr goes to a file for failure messages.
pub struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    pub fn kill(&mut self, signal: &str) {
        let _ = Command::new("kill").args([signal, &self.child.id().to_string()]).status();
    }

    pub fn wait(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One test's cluster: servers, coordinator address, and the env every command gets.
pub struct Cluster {
    pub redis: Redis,
    pub pg: Postgres,
    pub dir: tempfile::TempDir,
    pub env: Vec<(String, String)>,
    pub port: u16,
    pub coordinator: Option<Proc>,
    /// Extra flags of `verdict coordinator` (e.g. --auth-tokens).
    pub coordinator_args: Vec<String>,
}

impl Cluster {
    pub fn start(extra: &[(&str, &str)]) -> Self {
        Self::start_with(extra, &[])
    }

    /// A cluster whose coordinator gets `coordinator_args` too.
    pub fn start_with(extra: &[(&str, &str)], coordinator_args: &[&str]) -> Self {
        let redis = Redis::start();
        let pg = Postgres::start();
        let db = pg.create_database("verdict");
        let port = free_port();
        let mut env = vec![
            ("DATABASE_URL".to_string(), db),
            ("VERDICT_REDIS_URL".to_string(), redis.url()),
            ("VERDICT_QUEUE_PREFIX".to_string(), unique("e2e")),
            ("VERDICT_COORDINATOR".to_string(), format!("http://127.0.0.1:{port}")),
            ("VERDICT_LOG".to_string(), "info".to_string()),
        ];
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let coordinator_args = coordinator_args.iter().map(|a| a.to_string()).collect();
        let mut c = Cluster { redis, pg, dir: tempfile::tempdir().unwrap(), env, port, coordinator: None, coordinator_args };
        c.start_coordinator();
        c
    }

    pub fn cmd(&self) -> Command {
        let mut c = bin();
        c.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        c
    }

    pub fn spawn(&self, name: &str, args: &[&str]) -> Proc {
        let log = self.dir.path().join(format!("{name}-{}.log", unique("p")));
        let child = self
            .cmd()
            .args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Proc { child, log }
    }

    pub fn start_coordinator(&mut self) {
        let listen = format!("127.0.0.1:{}", self.port);
        let mut args = vec!["coordinator", "--listen", &listen];
        args.extend(self.coordinator_args.iter().map(String::as_str));
        let p = self.spawn("coordinator", &args);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "coordinator did not start: {}", p.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        self.coordinator = Some(p);
    }

    /// A worker decoding up to `batch` sequences together (batch / 2 items per lease).
    pub fn worker(&self, id: &str, batch: &str) -> Proc {
        self.worker_with(id, model(), &["--batch", batch])
    }

    /// A worker of judge `tiny` with the model in `dir` and extra flags.
    pub fn worker_with(&self, id: &str, dir: &Path, extra: &[&str]) -> Proc {
        let m = dir.to_str().unwrap().to_string();
        let mut args = vec!["worker", "--model", &m, "--judge", "tiny", "--worker-id", id, "--k-hint", "2"];
        args.extend_from_slice(extra);
        self.spawn(id, &args)
    }

    /// Wait until `p` has logged `text`.
    pub fn wait_log(&self, p: &Proc, text: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !p.log().contains(text) {
            assert!(Instant::now() < deadline, "no {text:?} within {limit:?}: {}", self.logs());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(o.status.success(), "verdict {args:?} failed: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    pub fn submit(&self, input: &Path, extra: &[&str]) -> String {
        self.submit_with(input, "32", extra)
    }

    pub fn submit_with(&self, input: &Path, max_new_tokens: &str, extra: &[&str]) -> String {
        let mut args = vec!["submit", input.to_str().unwrap(), "--judge", "tiny", "--k", "2", "--max-new-tokens", max_new_tokens];
        args.extend_from_slice(extra);
        self.ok(&args).trim().to_string()
    }

    pub fn progress(&self, job: &str) -> HashMap<String, u64> {
        let out = self.ok(&["status", job]);
        let line = out.lines().find(|l| l.starts_with("progress")).unwrap_or_default().to_string();
        // "progress 16 done / 16 total (0 queued, 0 deduplicated, ...)"
        let words: Vec<&str> = line.split([' ', '(', ')', ',', '/']).filter(|w| !w.is_empty()).collect();
        let mut m = HashMap::new();
        for pair in words.windows(2) {
            if let Ok(n) = pair[0].parse::<u64>() {
                m.insert(pair[1].to_string(), n);
            }
        }
        m
    }

    /// Every process log of this cluster, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for e in std::fs::read_dir(self.dir.path()).unwrap().flatten() {
            if e.path().extension().is_some_and(|x| x == "log") {
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(30).collect();
                out.push_str(&format!("\n== {} ==\n{}", e.file_name().to_string_lossy(), tail.into_iter().rev().collect::<Vec<_>>().join("\n")));
            }
        }
        out
    }

    pub fn wait_done(&self, job: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let out = self.ok(&["status", job]);
            if out.contains("state    done") {
                return;
            }
            assert!(Instant::now() < deadline, "job not done in {limit:?}: {out}\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Items worker `id` holds, as its last heartbeat said (`None` if it is not listed).
    pub fn in_flight(&self, id: &str) -> Option<u64> {
        let s: Value = serde_json::from_str(&self.ok(&["status", "--json"])).unwrap();
        s["workers"].as_array().unwrap().iter().find(|w| w["id"] == id).and_then(|w| w["in_flight"].as_u64())
    }

    /// Wait until worker `p` (named `id`) holds at least `n` items.
    pub fn wait_in_flight(&self, p: &Proc, id: &str, n: u64, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.in_flight(id).unwrap_or(0) < n {
            assert!(Instant::now() < deadline, "worker {id} never held {n} items: {}", p.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn query(&self, job: &str) -> Vec<Value> {
        self.ok(&["query", job, "--json"]).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }
}

/// How many verdict records there are, and how many distinct item ids they carry: equal
/// counts mean exactly one verdict per item.
pub fn records_and_distinct_ids(records: &[Value]) -> (usize, usize) {
    let ids: HashSet<&str> = records.iter().map(|r| r["id"].as_str().unwrap()).collect();
    (records.len(), ids.len())
}

pub fn write_items(dir: &Path, n: usize) -> PathBuf {
    let p = dir.join(format!("items-{n}.jsonl"));
    let mut text = String::new();
    for i in 0..n {
        text.push_str(&format!("{{\"id\":\"q{i:03}\",\"prompt\":\"question {i}\",\"responses\":[\"yes\",\"no {i}\"]}}\n"));
    }
    std::fs::write(&p, text).unwrap();
    p
}

