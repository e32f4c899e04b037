//! The coordinator client: reports and heartbeats, retried with backoff so a coordinator
//! restart costs time, never results.

use std::time::Duration;

use tonic::service::interceptor::InterceptedService;
use verdict_proto::auth::{AuthedChannel, Bearer};
use verdict_proto::v1::{self, worker_service_client::WorkerServiceClient};

#[derive(Clone)]
pub struct Coordinator {
    client: WorkerServiceClient<AuthedChannel>,
}

impl Coordinator {
    /// A lazily connecting client: it (re)connects on use, so a coordinator that is down at
    /// start or restarts later is simply retried.
    pub fn new(url: &str, bearer: Bearer, tls_ca: Option<&std::path::Path>) -> Result<Self, verdict_proto::tls::TlsError> {
        let channel = verdict_proto::tls::endpoint(url, tls_ca)?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(120))
            .connect_lazy();
        let channel = InterceptedService::new(channel, bearer);
        Ok(Self { client: WorkerServiceClient::new(channel).max_encoding_message_size(64 << 20) })
    }

    pub async fn report(&self, req: v1::ReportResultsRequest) -> Result<v1::ReportResultsResponse, tonic::Status> {
        self.client.clone().report_results(req).await.map(|r| r.into_inner())
    }

    pub async fn heartbeat(&self, req: v1::HeartbeatRequest) -> Result<v1::HeartbeatResponse, tonic::Status> {
        self.client.clone().heartbeat(req).await.map(|r| r.into_inner())
    }
}

/// Exponential backoff from 200 ms to 5 s.
pub struct Backoff(Duration);

impl Backoff {
    pub fn new() -> Self {
        Self(Duration::from_millis(200))
    }

    pub async fn wait(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(Duration::from_secs(5));
    }

    /// How long the next `wait` sleeps.
    pub fn next_wait(&self) -> Duration {
        self.0
    }

    pub fn reset(&mut self) {
        self.0 = Duration::from_millis(200);
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}
