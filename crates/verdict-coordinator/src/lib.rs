//! Verdict's coordinator: one gRPC server with three services — jobs (create, submit items,
//! watch, cancel), workers (report results, heartbeat) and verdicts (get, query, export) —
//! plus the standard health service and server reflection.
//!
//! It keeps no state of its own: jobs, items and verdicts live in Postgres, the work in
//! Redis Streams, so any number of replicas can serve behind one address. Results are
//! committed to Postgres before their queue entries are acknowledged. A sweeper puts back
//! on the queue any queued item whose entry was lost (a Redis restart without persistence,
//! an enqueue that failed after the commit).
//!
//! Layout: [`server`] (start-up, drain), [`app`] (what each request does: jobs, reports,
//! extensions, dead letters), [`jobs`], [`workers`], [`verdicts`] (the three gRPC services,
//! thin over [`app`]), [`auth`] (tokens, roles, job ownership), [`telemetry`] (a job's
//! judge figures), [`dashboard`] (the read-only web page), [`sweeper`], [`metrics`],
//! [`error`] (the one mapping to gRPC status codes).

pub mod app;
pub mod auth;
pub mod dashboard;
pub mod error;
pub mod jobs;
pub mod metrics;
pub mod server;
pub mod sweeper;
pub mod telemetry;
pub mod verdicts;
pub mod workers;

pub use server::{run, CoordinatorConfig, Running};
