//! The coordinator's Prometheus metrics: counters of what it did, and per judge the gauges
//! an autoscaler reads (items waiting, the oldest one's age, leases in flight, dead letters,
//! live workers), refreshed every few seconds from Redis ([`refresh_queue_gauges`]).

use prometheus::{Gauge, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub items_submitted: IntCounter,
    pub items_queued: IntCounter,
    pub items_deduplicated: IntCounter,
    /// By stage: `submit` (bad input) or `engine` (e.g. too long for the judge).
    pub items_rejected: IntCounterVec,
    pub items_done: IntCounter,
    pub items_dead: IntCounter,
    pub items_requeued: IntCounter,
    /// Results refused because their worker no longer held the entry.
    pub results_not_held: IntCounter,
    pub samples_stored: IntCounter,
    pub generated_tokens: IntCounter,
    pub report_seconds: Histogram,
    /// Reports and heartbeats refused or failed, by gRPC code.
    pub report_failures: IntCounterVec,
    pub heartbeat_failures: IntCounterVec,
    /// Per judge: entries never leased, leased and not acknowledged, dead letters.
    pub queue_waiting: IntGaugeVec,
    pub queue_in_flight: IntGaugeVec,
    pub queue_dead: IntGaugeVec,
    /// Per judge: seconds the oldest waiting entry has waited (0 when none waits).
    pub queue_oldest_waiting_seconds: GaugeVec,
    pub workers_live: IntGaugeVec,
    /// Unix time of the last refresh of the gauges above.
    pub queue_gauges_refreshed: Gauge,
    pub queue_gauge_errors: IntGauge,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("verdict".into()), None).unwrap_or_default();
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric name");
            let _ = registry.register(Box::new(c.clone()));
            c
        };
        let items_rejected = IntCounterVec::new(Opts::new("items_rejected_total", "Items rejected, by stage"), &["stage"]).expect("valid metric");
        let _ = registry.register(Box::new(items_rejected.clone()));
        let report_seconds = Histogram::with_opts(
            HistogramOpts::new("report_seconds", "Time to store a worker report and acknowledge its entries")
                .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]),
        )
        .expect("valid metric");
        let _ = registry.register(Box::new(report_seconds.clone()));
        let by_code = |name: &str, help: &str| {
            let c = IntCounterVec::new(Opts::new(name, help), &["code"]).expect("valid metric");
            let _ = registry.register(Box::new(c.clone()));
            c
        };
        let per_judge = |name: &str, help: &str| {
            let g = IntGaugeVec::new(Opts::new(name, help), &["judge"]).expect("valid metric");
            let _ = registry.register(Box::new(g.clone()));
            g
        };
        let queue_oldest_waiting_seconds =
            GaugeVec::new(Opts::new("queue_oldest_waiting_seconds", "Seconds the judge's oldest never-leased entry has waited (0: none waits)"), &["judge"]).expect("valid metric");
        let _ = registry.register(Box::new(queue_oldest_waiting_seconds.clone()));
        let queue_gauges_refreshed = Gauge::new("queue_gauges_refreshed_timestamp_seconds", "When the per-judge queue gauges were last read from Redis").expect("valid metric");
        let _ = registry.register(Box::new(queue_gauges_refreshed.clone()));
        let queue_gauge_errors = IntGauge::new("queue_gauges_failing", "1 while the per-judge queue gauges cannot be read (Redis or Postgres down)").expect("valid metric");
        let _ = registry.register(Box::new(queue_gauge_errors.clone()));
        Self {
            report_failures: by_code("report_failures_total", "Worker reports refused or failed, by gRPC code"),
            heartbeat_failures: by_code("heartbeat_failures_total", "Worker heartbeats refused or failed, by gRPC code"),
            queue_waiting: per_judge("queue_waiting", "Entries of the judge's stream never leased"),
            queue_in_flight: per_judge("queue_in_flight", "Entries leased to workers and not yet acknowledged"),
            queue_dead: per_judge("queue_dead_letters", "Dead letters of the judge"),
            workers_live: per_judge("workers_live", "Workers of the judge heard from within their TTL"),
            queue_oldest_waiting_seconds,
            queue_gauges_refreshed,
            queue_gauge_errors,
            items_submitted: counter("items_submitted_total", "Items received by SubmitItems"),
            items_queued: counter("items_queued_total", "Items put on the queue"),
            items_deduplicated: counter("items_deduplicated_total", "Items answered from stored verdicts"),
            items_done: counter("items_done_total", "Items whose verdict was stored"),
            items_dead: counter("items_dead_total", "Items moved to the dead letters"),
            items_requeued: counter("items_requeued_total", "Queued items whose lost entry was put back on the queue"),
            results_not_held: counter("results_not_held_total", "Results refused because their worker no longer held the queue entry"),
            samples_stored: counter("samples_stored_total", "Samples stored"),
            generated_tokens: counter("generated_tokens_total", "Tokens generated by the judges, as reported"),
            items_rejected,
            report_seconds,
            registry,
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Read every judge's backlog and live workers into the gauges: every judge bound or named
/// by a job, so a judge with items and no worker yet shows up (the one to scale from zero).
pub async fn refresh_queue_gauges(app: &crate::app::App) -> crate::error::Result<()> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let m = &app.metrics;
    for name in app.store.judge_names().await? {
        let b = app.queue.backlog(&name, now.as_millis() as u64).await?;
        let live = app.live_workers(&name).await.unwrap_or(0);
        let judge = [name.as_str()];
        m.queue_waiting.with_label_values(&judge).set(b.waiting as i64);
        m.queue_in_flight.with_label_values(&judge).set(b.in_flight as i64);
        m.queue_dead.with_label_values(&judge).set(b.dead as i64);
        m.queue_oldest_waiting_seconds.with_label_values(&judge).set(b.oldest_waiting_ms.unwrap_or(0) as f64 / 1000.0);
        m.workers_live.with_label_values(&judge).set(live as i64);
    }
    m.queue_gauges_refreshed.set(now.as_secs_f64());
    Ok(())
}

/// Refresh the gauges every `every` until `shutdown`.
pub async fn run_gauges(app: crate::app::App, every: std::time::Duration, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let failing = refresh_queue_gauges(&app).await.map_err(|e| tracing::debug!(error = %e, "cannot refresh the queue gauges")).is_err();
                app.metrics.queue_gauge_errors.set(failing as i64);
            }
            _ = shutdown.changed() => return,
        }
    }
}
