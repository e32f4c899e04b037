//! Verdict's worker: leases items from the judge's queue stream, judges them in batches with
//! the engine, and reports the results to the coordinator, which stores them and only then
//! acknowledges the entries.
//!
//! A worker that dies loses nothing: what it leased is reclaimed by another worker once the
//! lease times out. While alive it keeps its leases fresh (heartbeat), drops items of
//! cancelled jobs, sends items delivered too often to the dead letters, and rides out a
//! restart of Redis or of the coordinator by retrying with backoff. On shutdown it stops
//! leasing, finishes and reports the batch in hand within the drain timeout, and releases
//! whatever it could not finish so others take it at once.
//!
//! Layout: [`config`], [`run`] (the loop), [`process`] (entries → results),
//! [`report`] (the coordinator client), [`metrics`].

pub mod config;
pub mod metrics;
pub mod process;
pub mod report;
mod run;

pub use config::WorkerConfig;
pub use run::{run, WorkerError, WorkerStats};
