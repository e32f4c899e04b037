//! Verdict's gRPC API: the code generated from `proto/verdict/v1/*.proto` (into OUT_DIR by
//! build.rs), the file descriptor set for server reflection, and conversions between the
//! wire types and `verdict-core`'s. Conversions from the wire validate: a bad field becomes
//! a [`FieldError`] naming it, never a panic.

pub mod auth;
pub mod tls;
pub mod convert;
pub mod metrics_http;

#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("verdict.v1");
}

/// The encoded file descriptor set of all Verdict protos, for tonic-reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/verdict_descriptor.bin"));

pub use convert::ConvertError;
