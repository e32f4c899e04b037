//! The worker's Prometheus metrics.

use prometheus::{Gauge, Histogram, HistogramOpts, IntCounter, Registry};

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub items_leased: IntCounter,
    pub items_done: IntCounter,
    pub items_failed: IntCounter,
    /// Results the coordinator refused: another worker had taken their entries over.
    pub results_not_held: IntCounter,
    pub samples: IntCounter,
    pub generated_tokens: IntCounter,
    /// Time the coordinator took to store a report.
    pub report_seconds: Histogram,
    pub tokens_per_second: Gauge,
    pub samples_per_second: Gauge,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("verdict_worker".into()), None).unwrap_or_default();
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric name");
            let _ = registry.register(Box::new(c.clone()));
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = Gauge::new(name, help).expect("valid metric name");
            let _ = registry.register(Box::new(g.clone()));
            g
        };
        let report_seconds = Histogram::with_opts(
            HistogramOpts::new("report_seconds", "Time to have a report stored by the coordinator, retries included")
                .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
        )
        .expect("valid metric");
        let _ = registry.register(Box::new(report_seconds.clone()));
        Self {
            items_leased: counter("items_leased_total", "Entries leased (new or reclaimed)"),
            items_done: counter("items_done_total", "Items judged and reported"),
            items_failed: counter("items_failed_total", "Items reported as rejected, dead or cancelled"),
            results_not_held: counter("results_not_held_total", "Results refused because another worker had taken over their entries"),
            samples: counter("samples_total", "Samples generated"),
            generated_tokens: counter("generated_tokens_total", "Tokens generated"),
            tokens_per_second: gauge("tokens_per_second", "Generated tokens per second since the previous report"),
            samples_per_second: gauge("samples_per_second", "Samples per second since the previous report"),
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
