//! `verdict coordinator` and `verdict worker`: the two long-running processes of the
//! distributed mode. Both stop gracefully on SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use verdict_coordinator::CoordinatorConfig;
use verdict_engine::{device, EngineOptions, Judge};
use verdict_queue::QueueConfig;
use verdict_worker::WorkerConfig;

use crate::client::CoordinatorAddr;
use crate::model_cmd::digest_cache;
use crate::say::note;

#[derive(Args, Clone, Debug)]
pub struct QueueArgs {
    /// Redis URL of the queue.
    #[arg(long, env = "VERDICT_REDIS_URL", default_value = "redis://127.0.0.1:6379/", hide_env_values = true)]
    pub redis_url: String,
    /// Prefix of the queue's Redis keys (one Redis can host several Verdict installations).
    #[arg(long, env = "VERDICT_QUEUE_PREFIX", default_value = "verdict")]
    pub queue_prefix: String,
    /// Seconds a leased item may go without a heartbeat before another worker takes it.
    #[arg(long, env = "VERDICT_LEASE_TIMEOUT", default_value_t = 300)]
    pub lease_timeout: u64,
    /// Deliveries after which an item goes to the dead letters.
    #[arg(long, env = "VERDICT_MAX_DELIVERIES", default_value_t = 5)]
    pub max_deliveries: u64,
    /// The CA certificate (PEM) of a rediss:// Redis (default: the system's roots).
    #[arg(long, env = "VERDICT_REDIS_TLS_CA")]
    pub redis_tls_ca: Option<PathBuf>,
}

impl QueueArgs {
    fn config(&self) -> QueueConfig {
        QueueConfig {
            prefix: self.queue_prefix.clone(),
            lease_timeout: Duration::from_secs(self.lease_timeout),
            max_deliveries: self.max_deliveries,
            tls_ca: self.redis_tls_ca.clone(),
            ..QueueConfig::default()
        }
    }
}

#[derive(Args)]
pub struct CoordinatorArgs {
    /// gRPC listen address. Other than loopback it needs --auth-tokens (or --insecure).
    #[arg(long, env = "VERDICT_LISTEN", default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    /// Token file: one `ROLE NAME sha256:HEX` line per token (`verdict token new` makes them). Without it every caller is admin.
    #[arg(long, env = "VERDICT_AUTH_TOKENS")]
    auth_tokens: Option<PathBuf>,
    /// Serve without tokens on addresses other machines can reach (a network you trust).
    #[arg(long, env = "VERDICT_INSECURE")]
    insecure: bool,
    /// Serve gRPC over TLS with this certificate chain (PEM); clients then use https://.
    #[arg(long, env = "VERDICT_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "VERDICT_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Prometheus /metrics listen address.
    #[arg(long, env = "VERDICT_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Serve the read-only dashboard here (jobs, throughput, workers, each judge's telemetry, job reports).
    #[arg(long, env = "VERDICT_HTTP_LISTEN")]
    http_listen: Option<SocketAddr>,
    /// Seconds between the dashboard's reads of the stores.
    #[arg(long, env = "VERDICT_DASHBOARD_REFRESH", default_value_t = 5.0)]
    dashboard_refresh: f64,
    /// Postgres URL of the store.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    #[command(flatten)]
    queue: QueueArgs,
    /// Database connections in the pool.
    #[arg(long, env = "VERDICT_DB_CONNECTIONS", default_value_t = 16)]
    db_connections: u32,
    /// Seconds a queued item may sit untouched before the sweeper checks that its queue entry still exists.
    #[arg(long, env = "VERDICT_REQUEUE_AFTER", default_value_t = 60)]
    requeue_after: u64,
    /// Seconds in-flight requests may run after a shutdown signal.
    #[arg(long, env = "VERDICT_DRAIN_TIMEOUT", default_value_t = 30)]
    drain_timeout: u64,
    /// Most samples per item a job may ask for.
    #[arg(long, env = "VERDICT_MAX_K", default_value_t = 64)]
    max_k: u32,
    /// Seconds an open job may go without new items before it is sealed (a submission that broke off).
    #[arg(long, env = "VERDICT_OPEN_JOB_TIMEOUT", default_value_t = 900)]
    open_job_timeout: u64,
    /// Seconds between sweeps for lost queue entries and idle open jobs.
    #[arg(long, env = "VERDICT_SWEEP_EVERY", default_value_t = 10)]
    sweep_every: u64,
    /// Seconds to keep trying Redis and Postgres at start (they may be starting too).
    #[arg(long, env = "VERDICT_START_TIMEOUT", default_value_t = 60)]
    start_timeout: u64,
    /// Do not migrate the schema at start: the database role may then lack DDL rights (run `verdict migrate` as the owner first).
    #[arg(long, env = "VERDICT_NO_MIGRATE")]
    no_migrate: bool,
}

#[derive(Args)]
pub struct MigrateArgs {
    /// Postgres URL of the store, as the schema's owner.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
}

#[derive(Args)]
pub struct WorkerArgs {
    /// Judge model folder (Hugging Face layout).
    #[arg(long, env = "VERDICT_MODEL", required_unless_present = "synthetic")]
    model: Option<PathBuf>,
    /// Load no model: write each item's k samples at once, with judgements of this many bytes and random scores, to measure the coordinator, Redis and Postgres (bench/control-plane). Its verdicts mean nothing.
    #[arg(long, value_name = "BYTES", conflicts_with_all = ["model", "meta_rm"])]
    synthetic: Option<usize>,
    /// With --synthetic: judge at most this many items a second (0: no limit), as a GPU's pace would.
    #[arg(long, value_name = "ITEMS", default_value_t = 0.0, requires = "synthetic")]
    synthetic_rate: f64,
    /// The judge name this worker serves (jobs name it in their spec); default: the folder's name.
    #[arg(long, env = "VERDICT_JUDGE")]
    judge: Option<String>,
    /// Meta reward model folder, for jobs that use meta-RM voting.
    #[arg(long, env = "VERDICT_META_RM")]
    meta_rm: Option<PathBuf>,
    /// Unique worker name (its queue consumer name); default: host-pid-random.
    #[arg(long, env = "VERDICT_WORKER_ID")]
    worker_id: Option<String>,
    /// Most sequences decoded together: a number, or auto (from free GPU memory on CUDA; 32 on the CPU).
    #[arg(long, env = "VERDICT_BATCH", default_value = "auto", value_parser = crate::spec_args::parse_batch)]
    batch: usize,
    /// Samples per item to plan leases for (items in flight = batch rows / this, and half again).
    #[arg(long, env = "VERDICT_K_HINT", default_value_t = 8)]
    k_hint: usize,
    /// The longest rendered prompt to size the KV cache for, in tokens (default 1,024 or the longest seen; a longer one drains the batch and resizes it).
    #[arg(long, env = "VERDICT_PROMPT_TOKENS")]
    prompt_tokens: Option<usize>,
    /// cpu, cuda or cuda:N.
    #[arg(long, env = "VERDICT_DEVICE", default_value = "cpu")]
    device: String,
    /// Prometheus /metrics listen address.
    #[arg(long, env = "VERDICT_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Seconds to finish and report the batch in hand after a shutdown signal.
    #[arg(long, env = "VERDICT_DRAIN_TIMEOUT", default_value_t = 120)]
    drain_timeout: u64,
    /// Seconds to keep trying Redis at start.
    #[arg(long, env = "VERDICT_START_TIMEOUT", default_value_t = 60)]
    start_timeout: u64,
    /// Seconds without reaching the coordinator after which the worker hands its leases back (default: a third of the lease timeout).
    #[arg(long, env = "VERDICT_ORPHAN_AFTER")]
    orphan_after: Option<f64>,
    #[command(flatten)]
    queue: QueueArgs,
    #[command(flatten)]
    addr: CoordinatorAddr,
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
    tracing::info!("shutdown signal received");
}

pub async fn coordinator(args: CoordinatorArgs) -> anyhow::Result<()> {
    let mut cfg = CoordinatorConfig::new(args.listen, args.queue.redis_url.clone(), args.database_url.clone());
    cfg.metrics_listen = args.metrics_listen;
    cfg.http_listen = args.http_listen;
    anyhow::ensure!(args.dashboard_refresh.is_finite() && args.dashboard_refresh >= 0.1, "--dashboard-refresh must be at least 0.1 (seconds), not {}", args.dashboard_refresh);
    cfg.dashboard_refresh = Duration::from_secs_f64(args.dashboard_refresh);
    cfg.queue = args.queue.config();
    cfg.db_connections = args.db_connections;
    cfg.requeue_after = Duration::from_secs(args.requeue_after);
    cfg.drain_timeout = Duration::from_secs(args.drain_timeout);
    cfg.spec_limits = verdict_core::SpecLimits { max_k: args.max_k };
    cfg.open_job_timeout = Duration::from_secs(args.open_job_timeout);
    cfg.sweep_every = Duration::from_secs(args.sweep_every.max(1));
    cfg.insecure = args.insecure;
    cfg.start_timeout = Duration::from_secs(args.start_timeout);
    cfg.migrate = !args.no_migrate;
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        let read = |p: &PathBuf| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
        cfg.tls = Some(verdict_coordinator::server::TlsIdentity { cert: read(cert)?, key: read(key)? });
    }
    if let Some(path) = &args.auth_tokens {
        cfg.auth = verdict_coordinator::auth::Auth::from_file(path)?;
    }
    let tokens = cfg.auth.enabled();
    let running = verdict_coordinator::run(cfg, shutdown_signal()).await.context("starting the coordinator")?;
    note(format!("coordinator listening on {}{}", running.addr, if tokens { " (tokens required)" } else { " (no authentication)" }));
    if let Some(m) = running.metrics_addr {
        note(format!("metrics on http://{m}/metrics"));
    }
    if let Some(h) = running.http_addr {
        note(format!("dashboard on http://{h}/"));
    }
    running.wait().await?;
    note("coordinator stopped");
    Ok(())
}

/// `verdict migrate`: bring the store's schema up to date, then exit.
pub async fn migrate(args: MigrateArgs) -> anyhow::Result<()> {
    verdict_store::Store::migrate(&args.database_url)
        .await
        .with_context(|| format!("migrating the store at {}", verdict_core::redact::url(&args.database_url)))?;
    note("the store's schema is up to date");
    Ok(())
}

fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "host".into());
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{host}-{}-{:06x}", std::process::id(), nanos & 0xff_ffff)
}

pub async fn worker(args: WorkerArgs) -> anyhow::Result<()> {
    let judge_name = match (&args.judge, &args.model) {
        (Some(j), _) => j.clone(),
        (None, Some(model)) => model
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .context("cannot name the judge after the model folder; pass --judge")?,
        (None, None) => "synthetic".into(),
    };
    anyhow::ensure!(verdict_queue::valid_judge_name(&judge_name), "--judge {judge_name:?}: use letters, digits and . _ - @ / : (at most 128)");
    let (engine, fingerprints, context_length): (verdict_worker::Engine, _, _) = match (&args.model, args.synthetic) {
        (_, Some(bytes)) => {
            anyhow::ensure!(args.synthetic_rate.is_finite() && args.synthetic_rate >= 0.0, "--synthetic-rate must be a number of items a second, not {}", args.synthetic_rate);
            // No device to size a batch from: hold what an H200's batch of a small judge would
            // (512 rows), as items of k_hint samples.
            let rows = if args.batch == usize::MAX { 512 } else { args.batch };
            let judge = verdict_worker::SyntheticJudge::new(bytes, args.synthetic_rate, rows / args.k_hint.max(1));
            let fingerprints = judge.fingerprints.clone();
            (judge.into(), fingerprints, 32_768)
        }
        (Some(model), None) => {
            let (dev, dtype) = device::pick(&args.device)?;
            let options = EngineOptions { max_batch: args.batch, device: dev, dtype, digest_cache: digest_cache(), cuda_graphs: true };
            let (path, meta) = (model.clone(), args.meta_rm.clone());
            let judge = tokio::task::spawn_blocking(move || Judge::load(&path, meta.as_deref(), options))
                .await?
                .with_context(|| format!("loading the judge from {}", model.display()))?;
            let (fingerprints, context) = (judge.fingerprints().clone(), judge.config().max_position_embeddings as u32);
            (Arc::new(judge).into(), fingerprints, context)
        }
        (None, None) => anyhow::bail!("--model is required (or --synthetic BYTES, to measure the control plane without a model)"),
    };
    let mut cfg = WorkerConfig::new(
        args.worker_id.clone().unwrap_or_else(default_worker_id),
        judge_name.clone(),
        args.addr.coordinator.clone(),
        args.queue.redis_url.clone(),
    );
    cfg.queue = args.queue.config();
    // Refresh leases well within the lease timeout.
    cfg.heartbeat_every = Duration::from_secs(5).min(cfg.queue.lease_timeout / 3);
    cfg.device = args.device.clone();
    cfg.metrics_listen = args.metrics_listen;
    cfg.drain_timeout = Duration::from_secs(args.drain_timeout);
    cfg.fingerprints = fingerprints;
    cfg.context_length = context_length;
    cfg.prompt_tokens = args.prompt_tokens;
    cfg.token = args.addr.token()?;
    cfg.tls_ca = args.addr.tls_ca.clone();
    cfg.start_timeout = Duration::from_secs(args.start_timeout);
    if let Some(s) = args.orphan_after {
        anyhow::ensure!(s.is_finite() && s > 0.0, "--orphan-after must be a positive number of seconds, not {s}");
        cfg.orphan_after = Some(Duration::from_secs_f64(s));
    }
    let meta = cfg.fingerprints.meta_rm.as_deref().map(|m| format!(", meta RM {m}")).unwrap_or_default();
    note(format!("worker {} serving judge {judge_name} (weights {}{meta}) on {}", cfg.worker_id, cfg.fingerprints.judge, args.device));
    let stats = verdict_worker::run(cfg, engine, args.k_hint, shutdown_signal()).await?;
    note(format!("worker stopped: {} item(s) reported, {} released", stats.items_reported, stats.released));
    Ok(())
}
