//! The coordinator's application layer: what each request does, whatever carries it. The
//! gRPC services ([`crate::jobs`], [`crate::workers`], [`crate::verdicts`]) authenticate,
//! decode the wire types, call in here and encode the answer; the sweeper, the metrics
//! refresher and the dashboard call in here too. The services share no state but an
//! [`App`], and nothing here depends on them.
//!
//! Layout: [`jobs`] (ownership, progress, a submitted message), [`report`] (a worker's
//! results and heartbeats), [`extend`] (raising a finished job's k), [`dead_letters`].

mod dead_letters;
mod extend;
mod jobs;
mod report;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use verdict_core::SpecLimits;
use verdict_queue::Queue;
use verdict_store::Store;

use crate::metrics::Metrics;

pub use dead_letters::{Requeue, Requeued};
pub use extend::Extended;
pub use jobs::{Incoming, JobView, Rejection, Submitted};
pub use report::{Beat, Report, ReportOutcome, Reported, Result as ReportedResult};

/// What every request works with: the store, the queue, the metrics and the spec limits.
/// Cheap to clone.
#[derive(Clone)]
pub struct App {
    pub store: Store,
    pub queue: Queue,
    pub metrics: Metrics,
    pub limits: SpecLimits,
}

/// How long a worker counts as alive after a heartbeat.
pub const WORKER_TTL: Duration = Duration::from_secs(30);

/// Seconds since the Unix epoch: heartbeat times and live-worker windows.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
