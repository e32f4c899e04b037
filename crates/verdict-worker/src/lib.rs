//! Verdict's worker: leases items from the judge's queue stream, judges them with the
//! continuously batched engine, and reports the results to the coordinator, which stores
//! them and only then acknowledges the entries.
//!
//! A worker that dies loses nothing: what it leased is reclaimed by another worker once the
//! lease times out. While alive it keeps its leases fresh (heartbeat), drops items of
//! cancelled jobs, sends items delivered too often to the dead letters, and rides out a
//! restart of Redis or of the coordinator by retrying with backoff. On shutdown it stops
//! leasing, finishes and reports the batch in hand within the drain timeout, and releases
//! whatever it could not finish so others take it at once.
//!
//! The labeling loop itself is [`pipeline`]: an item source → the engine (on its own
//! thread, [`engine_thread`]) → a result sink, with leasing ahead and reporting in the
//! background. The worker runs it with the queue and the coordinator as its [`ends`];
//! `verdict label` runs the same loop with a file at both ends.
//!
//! Layout: [`config`], [`run`] (registration, heartbeats, the pipeline), [`pipeline`],
//! [`engine_thread`], [`synthetic`] (the model's stand-in for benchmarks), [`ends`],
//! [`report`] (the coordinator client), [`metrics`].

pub mod config;
pub mod ends;
pub mod engine_thread;
pub mod metrics;
pub mod pipeline;
pub mod report;
mod run;
pub mod synthetic;

pub use config::WorkerConfig;
pub use pipeline::{Engine, Extend, Input, Outcome, PipelineConfig, PipelineError, PipelineStats, Sink, Source};
pub use run::{run, WorkerError, WorkerStats};
pub use synthetic::SyntheticJudge;
