//! Start-up and shutdown: connect the store (running migrations) and the queue, serve the
//! three services plus health and reflection, run the sweeper, and drain on shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::task::JoinHandle;
use tonic::service::interceptor::InterceptedService;
use tokio_stream::wrappers::TcpListenerStream;
use verdict_proto::v1::job_service_server::JobServiceServer;
use verdict_proto::v1::verdict_service_server::VerdictServiceServer;
use verdict_proto::v1::worker_service_server::WorkerServiceServer;
use verdict_core::{redact, SpecLimits};
use verdict_queue::{Queue, QueueConfig};
use verdict_store::Store;

use crate::auth::{Auth, Authenticate};
use crate::error::CoordinatorError;
use crate::jobs::Jobs;
use crate::app::App;
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
    /// Who may call: tokens, or open to everyone (allowed on loopback, or with `insecure`).
    pub auth: Auth,
    /// Serve an open coordinator on addresses other machines reach.
    pub insecure: bool,
    /// How long to keep trying Redis and Postgres at start before giving up.
    pub start_timeout: Duration,
    /// Apply the schema's migrations at start (needs the schema owner's rights); when off,
    /// the schema must be current already (`verdict migrate`).
    pub migrate: bool,
    /// Serve gRPC over TLS with this certificate and key.
    pub tls: Option<TlsIdentity>,
}

/// A server certificate chain and its private key, both PEM.
#[derive(Clone)]
pub struct TlsIdentity {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
}

impl std::fmt::Debug for TlsIdentity {
    // The key is a secret: never in a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity").field("cert_bytes", &self.cert.len()).finish_non_exhaustive()
    }
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
            auth: Auth::Open,
            insecure: false,
            start_timeout: Duration::from_secs(60),
            migrate: true,
            tls: None,
        }
    }
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

/// Refuse to serve without authentication where other machines can reach it: anyone who
/// reaches the port could list, cancel and overwrite every job. The dashboard has no login
/// of its own, so it stays on loopback (reach it through a tunnel or an authenticating
/// proxy) whatever the tokens; `/metrics` holds counts only and may be exposed with tokens on.
fn check_exposure(cfg: &CoordinatorConfig) -> Result<(), CoordinatorError> {
    if cfg.insecure {
        return Ok(());
    }
    if let Some(h) = cfg.http_listen.filter(|a| !a.ip().is_loopback()) {
        return Err(CoordinatorError::Precondition(format!(
            "refusing to serve the dashboard on {h}: it has no login; serve it on 127.0.0.1 and reach it through an SSH tunnel or an authenticating proxy, or pass --insecure on a network you trust"
        )));
    }
    if cfg.auth.enabled() {
        return Ok(());
    }
    let exposed: Vec<String> = [Some(cfg.listen), cfg.metrics_listen].into_iter().flatten().filter(|a| !a.ip().is_loopback()).map(|a| a.to_string()).collect();
    if exposed.is_empty() {
        return Ok(());
    }
    Err(CoordinatorError::Precondition(format!(
        "refusing to listen on {} without authentication: give --auth-tokens FILE (see `verdict token new`), listen on 127.0.0.1, or pass --insecure on a network you trust",
        exposed.join(", ")
    )))
}

/// Read the token file again on SIGHUP (token rotation without a restart).
fn reload_on_hangup(auth: Auth) {
    if !auth.enabled() {
        return;
    }
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else { return };
        while hup.recv().await.is_some() {
            match auth.reload() {
                Ok(n) => tracing::info!(tokens = n, "token file read again"),
                Err(e) => tracing::error!(error = %e, "token file not reloaded; the previous tokens stay"),
            }
        }
    });
}

/// Connect to a service, retrying with backoff until `deadline`: at start, Redis or Postgres
/// may still be starting too. Every failure names the address (without its password).
/// Errors that waiting cannot cure (a schema to migrate) end it at once.
async fn patiently<T, E: std::fmt::Display, F: Future<Output = Result<T, E>>>(
    what: &str,
    url: &str,
    deadline: tokio::time::Instant,
    curable: impl Fn(&E) -> bool,
    mut connect: impl FnMut() -> F,
) -> Result<T, CoordinatorError> {
    let mut wait = Duration::from_millis(250);
    loop {
        match connect().await {
            Ok(t) => return Ok(t),
            Err(e) => {
                let message = format!("cannot reach {what} at {}: {e}", redact::url(url));
                if !curable(&e) || tokio::time::Instant::now() + wait > deadline {
                    return Err(CoordinatorError::Precondition(message));
                }
                tracing::warn!("{message}; retrying in {:.1} s", wait.as_secs_f64());
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Every service's health: `SERVING` only while Redis and Postgres answer.
async fn set_health(health: &tonic_health::server::HealthReporter, up: bool) {
    use tonic_health::ServingStatus::{NotServing, Serving};
    let status = if up { Serving } else { NotServing };
    health.set_service_status("", status).await;
    health.set_service_status(<JobServiceServer<Jobs> as tonic::server::NamedService>::NAME, status).await;
    health.set_service_status(<WorkerServiceServer<Workers> as tonic::server::NamedService>::NAME, status).await;
    health.set_service_status(<VerdictServiceServer<Verdicts> as tonic::server::NamedService>::NAME, status).await;
}

/// Ask Redis and Postgres every two seconds; report `NOT_SERVING` while either is down, so a
/// load balancer sends callers to a coordinator that can serve them.
async fn watch_dependencies(app: App, health: tonic_health::server::HealthReporter, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut up = true;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = stop.changed() => return,
        }
        let limit = Duration::from_secs(2);
        let store = tokio::time::timeout(limit, app.store.ping()).await;
        let queue = tokio::time::timeout(limit, app.queue.ping()).await;
        let now_up = matches!(store, Ok(Ok(()))) && matches!(queue, Ok(Ok(())));
        if now_up != up {
            if now_up {
                tracing::info!("Redis and Postgres answer again: serving");
            } else {
                tracing::warn!(postgres = store.is_ok_and(|r| r.is_ok()), redis = queue.is_ok_and(|r| r.is_ok()), "a dependency does not answer: health is NOT_SERVING");
            }
            set_health(&health, now_up).await;
            up = now_up;
        }
    }
}

/// Connect, bind and start serving; returns once the server listens.
pub async fn run(cfg: CoordinatorConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<Running, CoordinatorError> {
    check_exposure(&cfg)?;
    // Name what could not be reached (without its password): "pool timed out" alone says
    // nothing about which service, or where.
    let deadline = tokio::time::Instant::now() + cfg.start_timeout;
    let store = patiently("Postgres", &cfg.database_url, deadline, |e| matches!(e, verdict_store::StoreError::Db(_)), || async {
        match cfg.migrate {
            true => Store::connect(&cfg.database_url, cfg.db_connections).await,
            false => Store::connect_current(&cfg.database_url, cfg.db_connections).await,
        }
    })
    .await?;
    let queue = patiently("Redis", &cfg.redis_url, deadline, |_| true, || Queue::connect(&cfg.redis_url, cfg.queue.clone())).await?;
    let metrics = Metrics::new();
    let app = App { store, queue, metrics: metrics.clone(), limits: cfg.spec_limits };

    let (health, health_service) = tonic_health::server::health_reporter();
    set_health(&health, true).await;
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
            crate::dashboard::serve(h, cfg.dashboard_refresh, app.clone(), stop_rx.clone())
                .await
                .map_err(|e| CoordinatorError::Precondition(format!("cannot serve the dashboard on {h}: {e}")))?,
        ),
        None => None,
    };
    tokio::spawn(watch_dependencies(app.clone(), health.clone(), stop_rx.clone()));
    if cfg.metrics_listen.is_some() {
        tokio::spawn(crate::metrics::run_gauges(app.clone(), Duration::from_secs(5), stop_rx.clone()));
    }
    let sweeper = tokio::spawn(crate::sweeper::run(
        app.clone(),
        crate::sweeper::Every { tick: cfg.sweep_every, requeue_after: cfg.requeue_after, open_job_timeout: cfg.open_job_timeout },
        stop_rx.clone(),
    ));

    // Every service but health answers only callers with a token (when tokens are on).
    reload_on_hangup(cfg.auth.clone());
    let mut builder = tonic::transport::Server::builder();
    if let Some(id) = &cfg.tls {
        let tls = tonic::transport::ServerTlsConfig::new().identity(tonic::transport::Identity::from_pem(&id.cert, &id.key));
        builder = builder.tls_config(tls).map_err(|e| CoordinatorError::Precondition(format!("TLS certificate or key: {e}")))?;
    }
    let router = builder
        .add_service(health_service)
        .add_service(InterceptedService::new(reflection_v1, Authenticate(cfg.auth.clone())))
        .add_service(InterceptedService::new(reflection_v1alpha, Authenticate(cfg.auth.clone())))
        .add_service(InterceptedService::new(
            JobServiceServer::new(Jobs { app: app.clone() }).max_decoding_message_size(MAX_MESSAGE).max_encoding_message_size(MAX_MESSAGE),
            Authenticate(cfg.auth.clone()),
        ))
        .add_service(InterceptedService::new(WorkerServiceServer::new(Workers { app: app.clone() }).max_decoding_message_size(MAX_MESSAGE), Authenticate(cfg.auth.clone())))
        .add_service(InterceptedService::new(VerdictServiceServer::new(Verdicts { app }).max_encoding_message_size(MAX_MESSAGE), Authenticate(cfg.auth.clone())));

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
                set_health(&health, false).await;
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
