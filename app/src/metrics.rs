//! Prometheus metrics, all named `counter_app_*` with the unit in the name.
//!
//! Why these: the count itself (`stored_visits`) lets a dashboard compare pods without
//! `kubectl exec`; the commit metrics show whether group commit is working (batch size) and
//! whether the disk is the bottleneck (commit duration, failures); the HTTP metrics are per
//! route, so probe and scrape traffic is visibly separate from visits.
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `counter_app_visits_total` | counter | visits recorded durably since start |
//! | `counter_app_stored_visits` | gauge | the count in the visits file (all time) |
//! | `counter_app_commits_total` | counter | successful writes of the count |
//! | `counter_app_commit_failures_total` | counter | failed writes (each answered 503) |
//! | `counter_app_commit_duration_seconds` | histogram | write + fsync + rename + dir fsync |
//! | `counter_app_commit_batch_visits` | histogram | visits made durable per write |
//! | `counter_app_http_requests_total{route,status}` | counter | requests answered |
//! | `counter_app_http_request_duration_seconds{route}` | histogram | time to answer |

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Metrics updated by the commit threads.
#[derive(Debug, Clone)]
pub struct StorageMetrics {
    /// Visits recorded durably since start.
    pub visits: Counter,
    /// The count in the visits file; set when scraped.
    pub stored_visits: Gauge,
    /// Successful writes.
    pub commits: Counter,
    /// Failed writes.
    pub failed_commits: Counter,
    /// Seconds per write, all steps.
    pub commit_duration: Histogram,
    /// Visits per successful write.
    pub batch_visits: Histogram,
}

impl Default for StorageMetrics {
    fn default() -> Self {
        Self {
            visits: Counter::default(),
            stored_visits: Gauge::default(),
            commits: Counter::default(),
            failed_commits: Counter::default(),
            // 100 µs .. ~3.3 s
            commit_duration: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            // 1 .. 4096 visits
            batch_visits: Histogram::new(exponential_buckets(1.0, 2.0, 13)),
        }
    }
}

/// Labels of the HTTP request counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The matched route, or `other`.
    pub route: &'static str,
    /// The response status code.
    pub status: u16,
}

/// Labels of the HTTP duration histogram.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// The matched route, or `other`.
    pub route: &'static str,
}

type DurationFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

/// Every metric the app exports, and the registry that encodes them.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    /// Written by the counter.
    pub storage: StorageMetrics,
    /// Requests answered, by route and status.
    pub http_requests: Family<RequestLabels, Counter>,
    /// Time to answer, by route.
    pub http_duration: DurationFamily,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let storage = StorageMetrics::default();
        let http_requests = Family::<RequestLabels, Counter>::default();
        let http_duration: DurationFamily = Family::new_with_constructor(|| {
            // 50 µs .. ~1.6 s
            Histogram::new(exponential_buckets(0.00005, 2.0, 16))
        });

        let mut registry = Registry::with_prefix("counter_app");
        registry.register(
            "visits",
            "Visits recorded durably since the process started",
            storage.visits.clone(),
        );
        registry.register(
            "stored_visits",
            "The visit count held in the visits file",
            storage.stored_visits.clone(),
        );
        registry.register(
            "commits",
            "Successful writes of the count (one per group of visits)",
            storage.commits.clone(),
        );
        registry.register(
            "commit_failures",
            "Failed writes of the count; their visits were answered 503",
            storage.failed_commits.clone(),
        );
        registry.register_with_unit(
            "commit_duration",
            "Time to write, fsync and rename the count and fsync its directory",
            Unit::Seconds,
            storage.commit_duration.clone(),
        );
        registry.register_with_unit(
            "commit_batch",
            "Visits made durable by one write",
            Unit::Other("visits".to_owned()),
            storage.batch_visits.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests answered, by route and status",
            http_requests.clone(),
        );
        registry.register_with_unit(
            "http_request_duration",
            "Time to answer an HTTP request, by route",
            Unit::Seconds,
            http_duration.clone(),
        );
        Self {
            registry: Arc::new(registry),
            storage,
            http_requests,
            http_duration,
        }
    }

    /// Records one answered request.
    pub fn observe_request(&self, route: &'static str, status: u16, seconds: f64) {
        self.http_requests
            .get_or_create(&RequestLabels { route, status })
            .inc();
        self.http_duration
            .get_or_create(&RouteLabels { route })
            .observe(seconds);
    }

    /// The OpenMetrics text exposition, with the stored count set to `count` first.
    pub fn encode(&self, count: u64) -> String {
        self.storage
            .stored_visits
            .set(i64::try_from(count).unwrap_or(i64::MAX));
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_prefix_and_units() {
        let metrics = Metrics::new();
        metrics.storage.visits.inc_by(3);
        metrics.storage.commit_duration.observe(0.002);
        metrics.storage.batch_visits.observe(3.0);
        metrics.observe_request("/", 200, 0.001);
        let text = metrics.encode(42);
        for line in [
            "counter_app_visits_total 3",
            "counter_app_stored_visits 42",
            "counter_app_commits_total 0",
            "counter_app_commit_failures_total 0",
            "counter_app_commit_duration_seconds_count 1",
            "counter_app_commit_batch_visits_count 1",
            "counter_app_http_requests_total{route=\"/\",status=\"200\"} 1",
            "counter_app_http_request_duration_seconds_count{route=\"/\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
