//! Connecting to the coordinator.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use tonic::service::interceptor::InterceptedService;
use verdict_proto::auth::{load_token, AuthedChannel, Bearer};
use verdict_proto::v1::job_service_client::JobServiceClient;
use verdict_proto::v1::verdict_service_client::VerdictServiceClient;
use verdict_proto::v1::worker_service_client::WorkerServiceClient;

#[derive(Args, Clone, Debug)]
pub struct CoordinatorAddr {
    /// The coordinator's gRPC address.
    #[arg(long, env = "VERDICT_COORDINATOR", default_value = "http://127.0.0.1:50051", hide_env_values = true)]
    pub coordinator: String,
    /// A file holding this caller's token for the coordinator (else the VERDICT_TOKEN environment variable, if set).
    #[arg(long, env = "VERDICT_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// The CA certificate (PEM) that signed an https:// coordinator's certificate (default: the public web roots).
    #[arg(long, env = "VERDICT_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
}

impl CoordinatorAddr {
    /// The token to send, from `--token-file` or `VERDICT_TOKEN`.
    pub fn token(&self) -> anyhow::Result<Option<String>> {
        Ok(load_token(self.token_file.as_deref())?)
    }
}

pub struct Client {
    pub jobs: JobServiceClient<AuthedChannel>,
    pub workers: WorkerServiceClient<AuthedChannel>,
    pub verdicts: VerdictServiceClient<AuthedChannel>,
}

const MAX: usize = 64 << 20;

pub async fn connect(addr: &CoordinatorAddr) -> anyhow::Result<Client> {
    let url = if addr.coordinator.contains("://") { addr.coordinator.clone() } else { format!("http://{}", addr.coordinator) };
    let channel = verdict_proto::tls::endpoint(&url, addr.tls_ca.as_deref())?
        .connect()
        .await
        .with_context(|| format!("cannot reach the coordinator at {} (set --coordinator or VERDICT_COORDINATOR)", verdict_core::redact::url(&url)))?;
    let channel = InterceptedService::new(channel, Bearer::new(addr.token()?.as_deref())?);
    Ok(Client {
        jobs: JobServiceClient::new(channel.clone()).max_encoding_message_size(MAX).max_decoding_message_size(MAX),
        workers: WorkerServiceClient::new(channel.clone()),
        verdicts: VerdictServiceClient::new(channel).max_decoding_message_size(MAX),
    })
}

/// A gRPC error as a user should read it.
pub fn status(e: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{} ({:?})", e.message(), e.code())
}
