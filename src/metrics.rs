//! Prometheus metrics (`/metrics`) and the counters `/api/v1/stats` reports.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// How a request named what it wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    Fetch,
    Mirror,
    Proxy,
    Checksum,
}

impl Form {
    pub fn as_str(self) -> &'static str {
        match self {
            Form::Fetch => "fetch",
            Form::Mirror => "mirror",
            Form::Proxy => "proxy",
            Form::Checksum => "checksum",
        }
    }
}

type Labels = Vec<(&'static str, &'static str)>;

/// Every metric the service exports.
pub struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    pub bytes_served: Counter,
    pub upstream_fetches: Counter,
    pub upstream_failures: Counter,
    pub upstream_retries: Counter,
    pub inflight: Gauge,
    pub coalesced_joins: Counter,
    pub evictions: Counter,
    pub store_bytes: Gauge,
    pub disk_used_ratio: Gauge<f64, AtomicU64>,
    pub rate_limited: Counter,
    pub request_duration: Histogram,
    pub hits: Counter,
    pub misses: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut m = Metrics {
            registry: Registry::with_prefix("upcache"),
            requests: Family::default(),
            bytes_served: Counter::default(),
            upstream_fetches: Counter::default(),
            upstream_failures: Counter::default(),
            upstream_retries: Counter::default(),
            inflight: Gauge::default(),
            coalesced_joins: Counter::default(),
            evictions: Counter::default(),
            store_bytes: Gauge::default(),
            disk_used_ratio: Gauge::default(),
            rate_limited: Counter::default(),
            request_duration: Histogram::new(exponential_buckets(0.0005, 4.0, 10)),
            hits: Counter::default(),
            misses: Counter::default(),
        };
        let r = &mut m.registry;
        r.register(
            "requests",
            "Artifact requests by form and result (hit, miss, bypass, error)",
            m.requests.clone(),
        );
        r.register(
            "served_bytes",
            "Body bytes sent to clients",
            m.bytes_served.clone(),
        );
        r.register(
            "upstream_fetches",
            "Upstream download attempts",
            m.upstream_fetches.clone(),
        );
        r.register(
            "upstream_failures",
            "Downloads that failed after all retries",
            m.upstream_failures.clone(),
        );
        r.register(
            "upstream_retries",
            "Upstream attempts that were retries",
            m.upstream_retries.clone(),
        );
        r.register(
            "inflight_downloads",
            "Downloads in progress",
            m.inflight.clone(),
        );
        r.register(
            "coalesced_joins",
            "Requests that joined a download already in progress",
            m.coalesced_joins.clone(),
        );
        r.register(
            "evictions",
            "Blobs evicted by the sweeper",
            m.evictions.clone(),
        );
        r.register(
            "store_bytes",
            "Bytes of stored blobs",
            m.store_bytes.clone(),
        );
        r.register(
            "disk_used_ratio",
            "Used fraction of the cache volume (or of max_size)",
            m.disk_used_ratio.clone(),
        );
        r.register(
            "rate_limited",
            "Requests rejected by rate or concurrency limits",
            m.rate_limited.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Time to the end of the response body",
            m.request_duration.clone(),
        );
        m
    }

    /// Count one artifact request.
    pub fn request(&self, form: Form, result: &'static str) {
        self.requests
            .get_or_create(&vec![("form", form.as_str()), ("result", result)])
            .inc();
        match result {
            "hit" => {
                self.hits.inc();
            }
            "miss" | "bypass" => {
                self.misses.inc();
            }
            _ => {}
        }
    }

    /// The registry in the text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}
