//! Worker settings (plain values; the CLI fills them from flags and the environment).

use std::net::SocketAddr;
use std::time::Duration;

use verdict_core::Fingerprints;
use verdict_queue::QueueConfig;

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Unique per process: it is the worker's consumer name on the queue (two processes
    /// sharing a name could not recover each other's leases).
    pub worker_id: String,
    /// The judge name this worker serves: it reads that judge's stream.
    pub judge: String,
    /// The coordinator's gRPC URL, e.g. `http://127.0.0.1:50051`.
    pub coordinator: String,
    pub redis_url: String,
    pub queue: QueueConfig,
    /// Longest wait for new entries in one read.
    pub lease_block: Duration,
    /// Heartbeat and lease refresh period (well under the lease timeout).
    pub heartbeat_every: Duration,
    /// How often to look for entries abandoned by dead workers.
    pub reclaim_every: Duration,
    /// How long to finish the batch in hand after shutdown begins.
    pub drain_timeout: Duration,
    /// "cpu", "cuda:0", ... (reported in heartbeats).
    pub device: String,
    /// The weights this worker loads: the judge name is bound to them (reported in every
    /// heartbeat and report).
    pub fingerprints: Fingerprints,
    /// The judge's context length in tokens (reported in heartbeats).
    pub context_length: u32,
    /// The longest prompt to size the engine's cache for, when the operator knows it.
    pub prompt_tokens: Option<usize>,
    pub metrics_listen: Option<SocketAddr>,
    /// The bearer token sent to the coordinator (worker role), if it wants one.
    pub token: Option<String>,
    /// With no coordinator reached for this long, the worker stops renewing its leases and
    /// hands them back, so another worker (of a healthy coordinator) takes them. `None`:
    /// a third of the lease timeout.
    pub orphan_after: Option<Duration>,
    /// How long to keep trying Redis at start.
    pub start_timeout: Duration,
    /// The CA that signed an https:// coordinator's certificate.
    pub tls_ca: Option<std::path::PathBuf>,
}

impl WorkerConfig {
    /// How long the worker keeps its leases without reaching a coordinator.
    pub fn orphan_after(&self) -> Duration {
        self.orphan_after.unwrap_or(self.queue.lease_timeout / 3)
    }
}

impl WorkerConfig {
    pub fn new(worker_id: String, judge: String, coordinator: String, redis_url: String) -> Self {
        Self {
            worker_id,
            judge,
            coordinator,
            redis_url,
            queue: QueueConfig::default(),
            lease_block: Duration::from_secs(2),
            heartbeat_every: Duration::from_secs(5),
            reclaim_every: Duration::from_secs(15),
            drain_timeout: Duration::from_secs(120),
            device: "cpu".into(),
            fingerprints: Fingerprints::default(),
            context_length: 0,
            prompt_tokens: None,
            metrics_listen: None,
            token: None,
            orphan_after: None,
            start_timeout: Duration::from_secs(60),
            tls_ca: None,
        }
    }
}
