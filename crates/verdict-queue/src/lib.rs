//! Verdict's work queue on Redis Streams.
//!
//! One stream per judge model (`{prefix}:{judge}:items`), read by one consumer group
//! (`workers`). Each worker process leases entries under its own unique consumer name
//! (XREADGROUP COUNT n), keeps them alive while it works (a script that resets the idle time
//! of the entries it still holds, and only those, without counting a delivery), and anyone
//! may reclaim entries idle past the lease timeout (XAUTOCLAIM), which counts a delivery.
//! Results are accepted only for entries their worker holds ([`Queue::held`]).
//! An entry that does not decode goes to the dead letters alone, with its reason; it never
//! blocks a lease or a reclaim. Entries are acknowledged only after
//! their results are committed in Postgres, and deleted on acknowledgement. An entry
//! delivered more than `max_deliveries` times goes to `{prefix}:{judge}:dead` with its
//! reason. Cancelled jobs are a set (`{prefix}:{judge}:cancelled`) that workers consult.
//! Heartbeats keep `{prefix}:worker:{id}` alive and index the worker by time in
//! `{prefix}:{judge}:workers`, so a judge's live workers are counted without a scan.
//!
//! All keys of one judge share the hash tag `{judge}`, so the Lua scripts (which touch
//! several keys) work on Redis Cluster.

mod keys;

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::streams::{StreamAutoClaimReply, StreamId, StreamPendingCountReply, StreamReadReply};
use redis::{AsyncCommands, Script, Value};
use serde::{Deserialize, Serialize};
use verdict_core::{Item, LabelSpec};

pub use keys::{valid_judge_name, Keys};

/// A stream entry as XRANGE returns it: its id and its field/value pairs.
type StreamEntry = (String, Vec<(String, String)>);

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("entry {id} of {stream} is not a Verdict item: {problem}")]
    BadEntry { stream: String, id: String, problem: String },
    #[error("judge name {0:?} is not valid: use letters, digits and . _ - @ / : (at most 128)")]
    BadJudge(String),
}

pub type Result<T, E = QueueError> = std::result::Result<T, E>;

/// Queue settings. Defaults suit GPU workers whose batches take minutes.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// Prefix of every key.
    pub prefix: String,
    /// Consumer group of the workers.
    pub group: String,
    /// An entry leased and not touched for this long may be reclaimed by another worker.
    pub lease_timeout: Duration,
    /// Deliveries after which an entry goes to the dead letters.
    pub max_deliveries: u64,
    /// The CA (PEM) that signed a `rediss://` server's certificate (default: the system's roots).
    pub tls_ca: Option<std::path::PathBuf>,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            prefix: "verdict".into(),
            group: "workers".into(),
            lease_timeout: Duration::from_secs(300),
            max_deliveries: 5,
            tls_ca: None,
        }
    }
}

/// What an entry carries: everything a worker needs, so workers never read Postgres.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueuedItem {
    pub job_id: String,
    pub spec: LabelSpec,
    pub item: Item,
    /// The first sample to make: 0, or the k of the run this entry extends to `spec.k`
    /// (`verdict extend`): samples `0..first_sample` are stored already.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub first_sample: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A leased entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub id: String,
    pub item: QueuedItem,
    /// How many times it has been delivered, this delivery included.
    pub deliveries: u64,
}

/// Lengths of a judge's streams.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Entries in the stream: waiting or leased.
    pub length: u64,
    /// Leased and not acknowledged.
    pub pending: u64,
    /// Dead letters.
    pub dead: u64,
}

#[derive(Clone)]
pub struct Queue {
    conn: ConnectionManager,
    cfg: QueueConfig,
    ack: Script,
    dead: Script,
    held: Script,
    renew: Script,
    prune: Script,
}

/// Whether a worker holds the entry a result names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holding {
    /// Leased to this worker, and it carries the named job's item.
    Held,
    /// Not pending for this worker: taken over by another, acknowledged, or never leased.
    NotHeld,
    /// Leased to this worker, but it carries another item than the result names.
    Mismatch,
}

const FIELD: &str = "item";

/// A client for `url`; a `rediss://` one trusts `ca` if given (a private CA), else the
/// system's roots.
fn client(url: &str, ca: Option<&std::path::Path>) -> Result<redis::Client> {
    match ca {
        Some(path) => {
            let root_cert = std::fs::read(path).map_err(|e| {
                redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, "cannot read the Redis CA certificate", format!("{}: {e}", path.display())))
            })?;
            Ok(redis::Client::build_with_tls(url, redis::TlsCertificates { client_tls: None, root_cert: Some(root_cert) })?)
        }
        None => Ok(redis::Client::open(url)?),
    }
}

async fn manager(url: &str, timeout: Duration, ca: Option<&std::path::Path>) -> Result<ConnectionManager> {
    let client = client(url, ca)?;
    let cfg = ConnectionManagerConfig::new()
        .set_response_timeout(Some(timeout))
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(2));
    Ok(ConnectionManager::new_with_config(client, cfg).await?)
}

fn parse_entry(stream: &str, e: &StreamId, deliveries: u64) -> Result<Entry> {
    let bad = |problem: String| QueueError::BadEntry { stream: stream.into(), id: e.id.clone(), problem };
    let raw = match e.map.get(FIELD) {
        Some(Value::BulkString(b)) => b.clone(),
        Some(Value::SimpleString(s)) => s.clone().into_bytes(),
        _ => return Err(bad(format!("no `{FIELD}` field"))),
    };
    let item = decode_item(&raw).map_err(|e| bad(e.to_string()))?;
    Ok(Entry { id: e.id.clone(), item, deliveries })
}

/// An entry's payload as a queued item. Anything may sit in a stream (another version's
/// entries, a hand-written one): this never panics, it says what is wrong.
pub fn decode_item(payload: &[u8]) -> std::result::Result<QueuedItem, serde_json::Error> {
    serde_json::from_slice(payload)
}

impl Queue {
    /// Connect (the connection reconnects by itself after a Redis restart).
    pub async fn connect(url: &str, cfg: QueueConfig) -> Result<Self> {
        Ok(Self {
            conn: manager(url, Duration::from_secs(10), cfg.tls_ca.as_deref()).await?,
            cfg,
            ack: Script::new(include_str!("lua/ack.lua")),
            dead: Script::new(include_str!("lua/dead.lua")),
            held: Script::new(include_str!("lua/held.lua")),
            renew: Script::new(include_str!("lua/renew.lua")),
            prune: Script::new(include_str!("lua/prune.lua")),
        })
    }

    /// Whether Redis answers (for health checks).
    pub async fn ping(&self) -> Result<()> {
        let mut c = self.conn.clone();
        let _: String = redis::cmd("PING").query_async(&mut c).await?;
        Ok(())
    }

    pub fn config(&self) -> &QueueConfig {
        &self.cfg
    }

    pub fn keys(&self, judge: &str) -> Result<Keys> {
        Keys::new(&self.cfg.prefix, judge)
    }

    /// Create the consumer group (and the stream) if missing. Also needed after a Redis
    /// restart that lost them.
    pub async fn ensure_group(&self, judge: &str) -> Result<()> {
        let k = self.keys(judge)?;
        let mut c = self.conn.clone();
        let r: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&k.items)
            .arg(&self.cfg.group)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut c)
            .await;
        match r {
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            other => Ok(other?),
        }
    }

    /// Append items; returns their entry ids in order.
    pub async fn enqueue(&self, judge: &str, items: &[QueuedItem]) -> Result<Vec<String>> {
        if items.is_empty() {
            return Ok(vec![]);
        }
        self.ensure_group(judge).await?;
        let k = self.keys(judge)?;
        let mut pipe = redis::pipe();
        for it in items {
            let payload = serde_json::to_string(it).map_err(|e| QueueError::BadEntry {
                stream: k.items.clone(),
                id: "(new)".into(),
                problem: e.to_string(),
            })?;
            // The job and item ids beside the payload let a report be checked against its
            // entry without decoding the item.
            pipe.cmd("XADD").arg(&k.items).arg("*").arg(FIELD).arg(payload).arg("job").arg(&it.job_id).arg("id").arg(&it.item.id);
        }
        let mut c = self.conn.clone();
        Ok(pipe.query_async(&mut c).await?)
    }

    /// Lease up to `count` new entries for `consumer`, waiting up to `block` for some.
    /// Uses its own connection: a blocking read would stall every other command sharing one.
    pub async fn lease(&self, judge: &str, consumer: &str, count: usize, block: Duration, conn: &mut LeaseConnection) -> Result<Vec<Entry>> {
        let k = self.keys(judge)?;
        let read = || {
            redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(&self.cfg.group)
                .arg(consumer)
                .arg("COUNT")
                .arg(count)
                .arg("BLOCK")
                .arg(block.as_millis() as u64)
                .arg("STREAMS")
                .arg(&k.items)
                .arg(">")
                .clone()
        };
        let reply: redis::RedisResult<Option<StreamReadReply>> = read().query_async(&mut conn.0).await;
        let reply = match reply {
            Err(e) if e.code() == Some("NOGROUP") => {
                self.ensure_group(judge).await?;
                read().query_async(&mut conn.0).await?
            }
            other => other?,
        };
        let fresh: Vec<(StreamId, u64)> = reply.map(|r| r.keys).unwrap_or_default().into_iter().flat_map(|key| key.ids).map(|e| (e, 1)).collect();
        self.decode_or_bury(judge, &k, fresh).await
    }

    /// Decode leased entries; one that is not a Verdict item goes to the dead letters with
    /// its reason (its item, if Postgres has it, is queued again by the sweeper).
    async fn decode_or_bury(&self, judge: &str, k: &Keys, leased: Vec<(StreamId, u64)>) -> Result<Vec<Entry>> {
        let mut out = Vec::with_capacity(leased.len());
        for (e, deliveries) in &leased {
            match parse_entry(&k.items, e, *deliveries) {
                Ok(entry) => out.push(entry),
                Err(bad) => {
                    let field = |name: &str| match e.map.get(name) {
                        Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
                        _ => String::new(),
                    };
                    tracing::error!(stream = %k.items, entry = %e.id, error = %bad, "undecodable queue entry moved to the dead letters");
                    self.dead_letter(judge, &e.id, &field("job"), &field("id"), &bad.to_string(), *deliveries).await?;
                }
            }
        }
        Ok(out)
    }

    /// A connection for [`Queue::lease`], with a response timeout longer than `block`.
    pub async fn lease_connection(url: &str, block: Duration) -> Result<LeaseConnection> {
        Self::lease_connection_with(url, block, None).await
    }

    /// [`Queue::lease_connection`] to a `rediss://` server signed by `ca`.
    pub async fn lease_connection_with(url: &str, block: Duration, ca: Option<&std::path::Path>) -> Result<LeaseConnection> {
        Ok(LeaseConnection(manager(url, block + Duration::from_secs(10), ca).await?))
    }

    /// Take over up to `count` entries idle longer than the lease timeout (their worker died
    /// or stalled). Each comes with its delivery count, this one included.
    pub async fn reclaim(&self, judge: &str, consumer: &str, count: usize) -> Result<Vec<Entry>> {
        let k = self.keys(judge)?;
        let mut c = self.conn.clone();
        let reply: redis::RedisResult<StreamAutoClaimReply> = redis::cmd("XAUTOCLAIM")
            .arg(&k.items)
            .arg(&self.cfg.group)
            .arg(consumer)
            .arg(self.cfg.lease_timeout.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut c)
            .await;
        let reply = match reply {
            Err(e) if e.code() == Some("NOGROUP") => return Ok(vec![]),
            other => other?,
        };
        if reply.claimed.is_empty() {
            return Ok(vec![]);
        }
        let mut pipe = redis::pipe();
        for e in &reply.claimed {
            pipe.cmd("XPENDING").arg(&k.items).arg(&self.cfg.group).arg(&e.id).arg(&e.id).arg(1);
        }
        let pending: Vec<StreamPendingCountReply> = pipe.query_async(&mut c).await?;
        let claimed: Vec<(StreamId, u64)> = reply
            .claimed
            .into_iter()
            .zip(pending)
            .map(|(e, p)| {
                let deliveries = p.ids.first().map(|x| x.times_delivered as u64).unwrap_or(1);
                (e, deliveries)
            })
            .collect();
        self.decode_or_bury(judge, &k, claimed).await
    }

    /// Renew the leases this consumer still holds among `ids`, so they are not reclaimed
    /// (no delivery is counted). Returns the ids still held: the others were taken over
    /// after a lease timeout, or acknowledged, and are left alone.
    pub async fn touch(&self, judge: &str, consumer: &str, ids: &[String]) -> Result<Vec<String>> {
        self.set_idle(judge, consumer, ids, 0).await
    }

    /// Set the idle time of the entries `consumer` still holds among `ids`; returns those.
    async fn set_idle(&self, judge: &str, consumer: &str, ids: &[String], idle_ms: u64) -> Result<Vec<String>> {
        if ids.is_empty() {
            return Ok(vec![]);
        }
        let k = self.keys(judge)?;
        let mut c = self.conn.clone();
        let mut held = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(1000) {
            let h: Vec<String> = self.renew.key(&k.items).arg(&self.cfg.group).arg(consumer).arg(idle_ms).arg(chunk).invoke_async(&mut c).await?;
            held.extend(h);
        }
        Ok(held)
    }

    /// For each (entry id, job id, item id) a worker reports, whether that worker holds the
    /// entry and it carries that item.
    pub async fn held(&self, judge: &str, consumer: &str, entries: &[(&str, &str, &str)]) -> Result<Vec<Holding>> {
        if entries.is_empty() {
            return Ok(vec![]);
        }
        let k = self.keys(judge)?;
        let mut c = self.conn.clone();
        let mut out = Vec::with_capacity(entries.len());
        for chunk in entries.chunks(500) {
            let mut inv = self.held.key(&k.items);
            inv.arg(&self.cfg.group).arg(consumer);
            for (id, job, item) in chunk {
                inv.arg(*id).arg(*job).arg(*item);
            }
            let codes: Vec<i64> = inv.invoke_async(&mut c).await?;
            out.extend(codes.into_iter().map(|code| match code {
                1 => Holding::Held,
                -1 => Holding::Mismatch,
                _ => Holding::NotHeld,
            }));
        }
        Ok(out)
    }

    /// Acknowledge and delete entries whose results are committed. Returns how many were
    /// still pending (a second acknowledgement of the same entry counts 0).
    pub async fn ack(&self, judge: &str, ids: &[String]) -> Result<u64> {
        let k = self.keys(judge)?;
        let mut total = 0;
        let mut c = self.conn.clone();
        for chunk in ids.chunks(1000) {
            let n: u64 = self.ack.key(&k.items).arg(&self.cfg.group).arg(chunk).invoke_async(&mut c).await?;
            total += n;
        }
        Ok(total)
    }

    /// Move an entry to the dead letters with its reason (after the item is marked dead in
    /// the store). Returns false if it was already gone.
    pub async fn dead_letter(&self, judge: &str, entry_id: &str, job_id: &str, item_id: &str, reason: &str, deliveries: u64) -> Result<bool> {
        let k = self.keys(judge)?;
        let mut c = self.conn.clone();
        let n: u64 = self
            .dead
            .key(&k.items)
            .key(&k.dead)
            .arg(&self.cfg.group)
            .arg(entry_id)
            .arg(job_id)
            .arg(item_id)
            .arg(reason)
            .arg(deliveries)
            .invoke_async(&mut c)
            .await?;
        Ok(n == 1)
    }

    /// Dead letters, oldest first, after the dead letter `after` (exclusive) if given.
    pub async fn dead_letters(&self, judge: &str, after: Option<&str>, count: usize) -> Result<Vec<DeadLetter>> {
        let k = self.keys(judge)?;
        let mut c = self.conn.clone();
        let start = after.map(|a| format!("({a}")).unwrap_or_else(|| "-".into());
        let entries: Vec<StreamEntry> = redis::cmd("XRANGE").arg(&k.dead).arg(start).arg("+").arg("COUNT").arg(count).query_async(&mut c).await?;
        Ok(entries.into_iter().map(DeadLetter::from_fields).collect())
    }

    /// The dead letters with these ids (`None` for one that does not exist).
    pub async fn dead_letters_by_id(&self, judge: &str, ids: &[String]) -> Result<Vec<Option<DeadLetter>>> {
        let k = self.keys(judge)?;
        let found = self.entries_by_id(&k.dead, ids).await?;
        Ok(found.into_iter().map(|e| e.map(DeadLetter::from_fields)).collect())
    }

    /// The entries of `stream` with these ids, in one round trip (`None` where one is gone).
    async fn entries_by_id(&self, stream: &str, ids: &[String]) -> Result<Vec<Option<StreamEntry>>> {
        if ids.is_empty() {
            return Ok(vec![]);
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("XRANGE").arg(stream).arg(id).arg(id);
        }
        let mut c = self.conn.clone();
        // One XRANGE reply per id: its entries (none or one), each (id, field/value pairs).
        let found: Vec<Vec<StreamEntry>> = pipe.query_async(&mut c).await?;
        Ok(found.into_iter().map(|v| v.into_iter().next()).collect())
    }

    /// Put a dead item back on the queue as a new entry (its deliveries start again) and
    /// drop its dead letter. `payload` is what the entry carried. Returns the new entry id.
    pub async fn requeue_dead(&self, judge: &str, dead_id: &str, payload: &str, job_id: &str, item_id: &str) -> Result<String> {
        self.ensure_group(judge).await?;
        let k = self.keys(judge)?;
        let mut c = self.conn.clone();
        let (entry, _): (String, u64) = redis::pipe()
            .cmd("XADD").arg(&k.items).arg("*").arg(FIELD).arg(payload).arg("job").arg(job_id).arg("id").arg(item_id)
            .cmd("XDEL").arg(&k.dead).arg(dead_id)
            .atomic()
            .query_async(&mut c)
            .await?;
        Ok(entry)
    }

    /// Whether entries still exist in the stream (waiting or leased): an entry absent from
    /// the stream was acknowledged, dead-lettered, or lost with a Redis restart.
    pub async fn exists(&self, judge: &str, ids: &[String]) -> Result<Vec<bool>> {
        let k = self.keys(judge)?;
        Ok(self.entries_by_id(&k.items, ids).await?.iter().map(Option::is_some).collect())
    }

    pub async fn cancel(&self, judge: &str, job_id: &str) -> Result<()> {
        let k = self.keys(judge)?;
        let mut c = self.conn.clone();
        let _: u64 = c.sadd(&k.cancelled, job_id).await?;
        Ok(())
    }

    pub async fn cancelled_jobs(&self, judge: &str) -> Result<Vec<String>> {
        let k = self.keys(judge)?;
        let mut c = self.conn.clone();
        Ok(c.smembers(&k.cancelled).await?)
    }

    /// Record that a worker is alive for `ttl` (workers heartbeat well within it), and
    /// index it under its judge so a judge's live workers are counted without a scan.
    pub async fn register_worker(&self, worker: &WorkerInfo, ttl: Duration) -> Result<()> {
        let key = format!("{}:worker:{}", self.cfg.prefix, worker.id);
        let k = self.keys(&worker.judge)?;
        let json = serde_json::to_string(worker).unwrap_or_default();
        let mut c = self.conn.clone();
        let _: () = redis::pipe()
            .cmd("SET").arg(&key).arg(json).arg("EX").arg(ttl.as_secs().max(1)).ignore()
            .cmd("ZADD").arg(&k.workers).arg(worker.seen_at).arg(&worker.id).ignore()
            // Forget workers silent for ten TTLs, so the set stays as small as the fleet.
            .cmd("ZREMRANGEBYSCORE").arg(&k.workers).arg("-inf").arg(worker.seen_at.saturating_sub(10 * ttl.as_secs())).ignore()
            .query_async(&mut c)
            .await?;
        Ok(())
    }

    /// How many workers of `judge` were heard from within `ttl` before `now` (unix seconds).
    pub async fn live_workers(&self, judge: &str, ttl: Duration, now: u64) -> Result<u64> {
        let k = self.keys(judge)?;
        let mut c = self.conn.clone();
        Ok(c.zcount(&k.workers, now.saturating_sub(ttl.as_secs()), "+inf").await?)
    }

    /// Workers heard from within their TTL.
    pub async fn workers(&self) -> Result<Vec<WorkerInfo>> {
        let mut c = self.conn.clone();
        let pattern = format!("{}:worker:*", self.cfg.prefix);
        let mut keys: Vec<String> = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) =
                redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(200).query_async(&mut c).await?;
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        if keys.is_empty() {
            return Ok(vec![]);
        }
        let values: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query_async(&mut c).await?;
        let mut out: Vec<WorkerInfo> = values.into_iter().flatten().filter_map(|v| serde_json::from_str(&v).ok()).collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Make entries this consumer holds reclaimable at once (a worker shutting down before
    /// it could finish them), without counting a delivery.
    pub async fn release(&self, judge: &str, consumer: &str, ids: &[String]) -> Result<()> {
        self.set_idle(judge, consumer, ids, self.cfg.lease_timeout.as_millis() as u64 + 1).await.map(drop)
    }

    /// Remove the judge's consumers that hold nothing and were idle longer than `idle`.
    /// Returns their names.
    pub async fn prune_consumers(&self, judge: &str, idle: Duration) -> Result<Vec<String>> {
        let k = self.keys(judge)?;
        let mut c = self.conn.clone();
        Ok(self.prune.key(&k.items).arg(&self.cfg.group).arg(idle.as_millis() as u64).invoke_async(&mut c).await?)
    }

    pub async fn stats(&self, judge: &str) -> Result<QueueStats> {
        let k = self.keys(judge)?;
        let mut c = self.conn.clone();
        let (length, dead): (u64, u64) = redis::pipe().cmd("XLEN").arg(&k.items).cmd("XLEN").arg(&k.dead).query_async(&mut c).await?;
        let pending: redis::RedisResult<Value> = redis::cmd("XPENDING").arg(&k.items).arg(&self.cfg.group).query_async(&mut c).await;
        let pending = match pending {
            Ok(Value::Array(v)) => match v.first() {
                Some(Value::Int(n)) => *n as u64,
                _ => 0,
            },
            Err(e) if e.code() == Some("NOGROUP") => 0,
            Err(e) => return Err(e.into()),
            Ok(_) => 0,
        };
        Ok(QueueStats { length, pending, dead })
    }
}

/// An entry moved to the dead letters, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The dead letter's own id in the dead-letter stream.
    pub id: String,
    /// The queue entry that died.
    pub entry: String,
    /// Empty for an entry that did not decode.
    pub job: String,
    pub item: String,
    pub reason: String,
    pub deliveries: u64,
    /// What the entry carried (empty for dead letters written before payloads were kept).
    pub payload: String,
}

impl DeadLetter {
    fn from_fields((id, fields): StreamEntry) -> Self {
        let get = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap_or_default();
        DeadLetter {
            entry: get("entry"),
            job: get("job"),
            item: get("item"),
            reason: get("reason"),
            deliveries: get("deliveries").parse().unwrap_or(0),
            payload: get("payload"),
            id,
        }
    }
}

/// What a worker says about itself in its heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerInfo {
    pub id: String,
    pub judge: String,
    pub device: String,
    pub in_flight: u32,
    /// Unix seconds of the heartbeat.
    pub seen_at: u64,
    /// Fingerprints of the weights it loads.
    #[serde(default)]
    pub fingerprint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta_fingerprint: Option<String>,
    /// Tokens generated since the worker started, and its recent rate.
    #[serde(default)]
    pub generated_tokens: u64,
    #[serde(default)]
    pub tokens_per_second: f64,
}

/// A dedicated connection for blocking reads.
pub struct LeaseConnection(ConnectionManager);
