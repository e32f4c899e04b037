//! Verdict's work queue on Redis Streams, on one Redis server or a Redis Cluster.
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
//! Heartbeats keep `{prefix}:{judge}:worker:{id}` alive and index the worker by time in
//! `{prefix}:{judge}:workers`, so a judge's live workers are counted without a scan.
//!
//! All keys of one judge share the hash tag `{judge}`, so every command, pipeline and Lua
//! script of one judge runs on one cluster node: judges spread over a cluster's slots.
//!
//! Layout, by concern: [`conn`] (one server or a cluster), [`keys`], [`stream`] (the group,
//! enqueueing, lengths), [`lease`] (leasing, reclaiming, renewing, handing back), [`ack`]
//! (who holds a reported entry; acknowledging), [`dead`] (dead letters), [`cancel`]
//! (cancelled jobs), [`registry`] (live workers, idle consumers).

mod ack;
mod cancel;
pub mod conn;
mod dead;
mod keys;
mod lease;
mod registry;
mod stream;

use std::time::Duration;

use redis::streams::StreamId;
use redis::{Script, Value};
use serde::{Deserialize, Serialize};
use verdict_core::{Item, LabelSpec};

pub use conn::{cluster_nodes, Conn};
pub use dead::DeadLetter;
pub use keys::{valid_judge_name, Keys};
pub use registry::WorkerInfo;
pub use stream::Backlog;

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
    conn: Conn,
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
    /// Connect to a server or a cluster ([`conn`]); the connection reconnects by itself
    /// after a Redis restart.
    pub async fn connect(url: &str, cfg: QueueConfig) -> Result<Self> {
        Ok(Self {
            conn: conn::connect(url, Duration::from_secs(10), cfg.tls_ca.as_deref()).await?,
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
}

/// A dedicated connection for blocking reads.
pub struct LeaseConnection(Conn);
