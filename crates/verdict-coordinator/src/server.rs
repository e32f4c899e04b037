//! Start-up and shutdown: connect the store (running migrations) and the queue, serve the
//! three services plus health and reflection, run the sweeper, and drain on shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use verdict_proto::v1::job_service_server::JobServiceServer;
use verdict_proto::v1::verdict_service_server::VerdictServiceServer;
use verdict_proto::v1::worker_service_server::WorkerServiceServer;
use verdict_core::{redact, SpecLimits};
use verdict_queue::{Queue, QueueConfig};
use verdict_store::Store;

use crate::error::CoordinatorError;
use crate::jobs::Jobs;
use crate::metrics::Metrics;
use crate::verdicts::Verdicts;
use crate::workers::Workers;

/// Everything the coordinator needs; no defaults are read from the environment here.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// gRPC address (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Prometheus `/metrics` address, if any.
    pub metrics_listen: Option<SocketAddr>,
    /// The dashboard's address, if any.
    pub http_listen: Option<SocketAddr>,
    /// How often the dashboard's figures are read again.
    pub dashboard_refresh: Duration,
    pub redis_url: String,
    pub database_url: String,
    pub queue: QueueConfig,
    pub db_connections: u32,
    /// How often to look for queued items whose queue entry was lost.
    pub sweep_every: Duration,
    /// Queued items untouched this long are checked by the sweeper.
    pub requeue_after: Duration,
    /// How long in-flight requests may run after shutdown begins.
    pub drain_timeout: Duration,
    /// Bounds on jobs' specs (most samples per item).
    pub spec_limits: SpecLimits,
    /// An open job that receives no items for this long is sealed, with a note.
    pub open_job_timeout: Duration,
}

impl CoordinatorConfig {
    pub fn new(listen: SocketAddr, redis_url: String, database_url: String) -> Self {
        Self {
            listen,
            metrics_listen: None,
            http_listen: None,
            dashboard_refresh: Duration::from_secs(5),
            redis_url,
            database_url,
            queue: QueueConfig::default(),
            db_connections: 16,
            sweep_every: Duration::from_secs(10),
            requeue_after: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(30),
            spec_limits: SpecLimits::default(),
            open_job_timeout: Duration::from_secs(900),
        }
    }
}

/// What every service shares: cheap to clone.
#[derive(Clone)]
pub struct Shared {
    pub store: Store,
    pub queue: Queue,
    pub metrics: Metrics,
    pub limits: SpecLimits,
}

/// A started coordinator.
pub struct Running {
    pub addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    /// Where the dashboard is served, if it is.
    pub http_addr: Option<SocketAddr>,
    handle: JoinHandle<Result<(), CoordinatorError>>,
}

impl Running {
    /// Wait until the server has shut down (after the shutdown future fired and it drained).
    pub async fn wait(self) -> Result<(), CoordinatorError> {
        self.handle.await.map_err(|e| CoordinatorError::Precondition(format!("server task failed: {e}")))?
    }
}

const MAX_MESSAGE: usize = 64 << 20;

/// Connect, bind and start serving; returns once the server listens.
pub async fn run(cfg: CoordinatorConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<Running, CoordinatorError> {
    // Name what could not be reached (without its password): "pool timed out" alone says
    // nothing about which service, or where.
    let store = Store::connect(&cfg.database_url, cfg.db_connections)
        .await
        .map_err(|e| CoordinatorError::Precondition(format!("cannot reach Postgres at {}: {e}", redact::url(&cfg.database_url))))?;
    let queue = Queue::connect(&cfg.redis_url, cfg.queue.clone())
        .await
        .map_err(|e| CoordinatorError::Precondition(format!("cannot reach Redis at {}: {e}", redact::url(&cfg.redis_url))))?;
    let metrics = Metrics::new();
    let shared = Shared { store, queue, metrics: metrics.clone(), limits: cfg.spec_limits };

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<JobServiceServer<Jobs>>().await;
    health.set_serving::<WorkerServiceServer<Workers>>().await;
    health.set_serving::<VerdictServiceServer<Verdicts>>().await;
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(verdict_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_err = |e: tonic_reflection::server::Error| CoordinatorError::Precondition(format!("reflection: {e}"));
    // v1 for current clients, v1alpha for older grpcurl builds.
    let reflection_v1 = reflection().build_v1().map_err(reflection_err)?;
    let reflection_v1alpha = reflection().build_v1alpha().map_err(reflection_err)?;

    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| CoordinatorError::Precondition(format!("cannot listen on {}: {e}", cfg.listen)))?;
    let addr = listener.local_addr().map_err(|e| CoordinatorError::Precondition(e.to_string()))?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let metrics_addr = match cfg.metrics_listen {
        Some(m) => {
            let mut rx = stop_rx.clone();
            let bound = verdict_proto::metrics_http::serve_metrics(m, metrics.registry.clone(), async move {
                let _ = rx.changed().await;
            })
            .await
            .map_err(|e| CoordinatorError::Precondition(format!("cannot serve metrics on {m}: {e}")))?;
            Some(bound)
        }
        None => None,
    };
    let http_addr = match cfg.http_listen {
        Some(h) => Some(
            crate::dashboard::serve(h, cfg.dashboard_refresh, shared.clone(), stop_rx.clone())
                .await
                .map_err(|e| CoordinatorError::Precondition(format!("cannot serve the dashboard on {h}: {e}")))?,
        ),
        None => None,
    };
    let sweeper = tokio::spawn(crate::sweeper::run(
        shared.clone(),
        crate::sweeper::Every { tick: cfg.sweep_every, requeue_after: cfg.requeue_after, open_job_timeout: cfg.open_job_timeout },
        stop_rx.clone(),
    ));

    let router = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(JobServiceServer::new(Jobs { shared: shared.clone() }).max_decoding_message_size(MAX_MESSAGE).max_encoding_message_size(MAX_MESSAGE))
        .add_service(WorkerServiceServer::new(Workers { shared: shared.clone() }).max_decoding_message_size(MAX_MESSAGE))
        .add_service(VerdictServiceServer::new(Verdicts { shared }).max_encoding_message_size(MAX_MESSAGE));

    let drain = cfg.drain_timeout;
    let handle = tokio::spawn(async move {
        let mut stop_for_server = stop_rx.clone();
        let server = router.serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
            let _ = stop_for_server.changed().await;
        });
        tokio::pin!(server);
        tokio::select! {
            r = &mut server => r.map_err(|e| CoordinatorError::Precondition(format!("server: {e}")))?,
            _ = shutdown => {
                tracing::info!("shutting down: draining in-flight requests");
                let _ = stop_tx.send(true);
                health.set_not_serving::<JobServiceServer<Jobs>>().await;
                match tokio::time::timeout(drain, &mut server).await {
                    Ok(r) => r.map_err(|e| CoordinatorError::Precondition(format!("server: {e}")))?,
                    Err(_) => tracing::warn!("drain timeout: closing the remaining streams"),
                }
            }
        }
        let _ = stop_tx.send(true);
        let _ = sweeper.await;
        Ok(())
    });
    tracing::info!(%addr, metrics = ?metrics_addr, dashboard = ?http_addr, "coordinator listening");
    Ok(Running { addr, metrics_addr, http_addr, handle })
}
