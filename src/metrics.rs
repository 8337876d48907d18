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

/// How an artifact request ended, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheResult {
    Hit,
    Miss,
    Bypass,
    /// A volatile URL's cached copy, confirmed by upstream (304).
    Revalidated,
    /// A volatile URL's cached copy, served because upstream failed.
    Stale,
    Error,
    /// Not an artifact answer (e.g. a 304, a redirect without X-Cache).
    Other,
}

impl CacheResult {
    const ALL: [CacheResult; 7] = [
        CacheResult::Hit,
        CacheResult::Miss,
        CacheResult::Bypass,
        CacheResult::Revalidated,
        CacheResult::Stale,
        CacheResult::Error,
        CacheResult::Other,
    ];

    /// From a response status and its `X-Cache` header.
    pub fn of(status: u16, x_cache: Option<&[u8]>) -> CacheResult {
        match (status, x_cache) {
            (400.., _) => CacheResult::Error,
            (_, Some(b"HIT")) => CacheResult::Hit,
            (_, Some(b"MISS")) => CacheResult::Miss,
            (_, Some(b"BYPASS")) => CacheResult::Bypass,
            (_, Some(b"REVALIDATED")) => CacheResult::Revalidated,
            (_, Some(b"STALE")) => CacheResult::Stale,
            _ => CacheResult::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CacheResult::Hit => "hit",
            CacheResult::Miss => "miss",
            CacheResult::Bypass => "bypass",
            CacheResult::Revalidated => "revalidated",
            CacheResult::Stale => "stale",
            CacheResult::Error => "error",
            CacheResult::Other => "other",
        }
    }

    /// The `X-Cache` value it came from, for the access log.
    pub fn header(self) -> &'static str {
        match self {
            CacheResult::Hit => "HIT",
            CacheResult::Miss => "MISS",
            CacheResult::Bypass => "BYPASS",
            CacheResult::Revalidated => "REVALIDATED",
            CacheResult::Stale => "STALE",
            CacheResult::Error | CacheResult::Other => "-",
        }
    }
}

impl Form {
    const ALL: [Form; 4] = [Form::Fetch, Form::Mirror, Form::Proxy, Form::Checksum];
}

type Labels = Vec<(&'static str, &'static str)>;

/// Every metric the service exports.
pub struct Metrics {
    registry: Registry,
    /// `requests_total` counters per (form, result), looked up once: no hashing per request.
    requests: Vec<Counter>,
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
    pub upstream_waiting: Gauge,
    pub request_duration: Histogram,
    pub hits: Counter,
    pub misses: Counter,
    /// Entries and bytes of the bounded in-memory state kept from requests, by `state`.
    memory_entries: Family<Labels, Gauge>,
    memory_bytes: Family<Labels, Gauge>,
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
            requests: Vec::new(),
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
            upstream_waiting: Gauge::default(),
            request_duration: Histogram::new(exponential_buckets(0.0005, 4.0, 10)),
            hits: Counter::default(),
            misses: Counter::default(),
            memory_entries: Family::default(),
            memory_bytes: Family::default(),
        };
        let family = Family::<Labels, Counter>::default();
        for form in Form::ALL {
            for result in CacheResult::ALL {
                m.requests.push(
                    family
                        .get_or_create(&vec![("form", form.as_str()), ("result", result.as_str())])
                        .clone(),
                );
            }
        }
        let r = &mut m.registry;
        r.register(
            "requests",
            "Artifact requests by form and result (hit, miss, bypass, error, other)",
            family,
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
            "upstream_waiting_downloads",
            "Downloads waiting for an upstream slot (limits.upstream_concurrency)",
            m.upstream_waiting.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Time to the end of the response body",
            m.request_duration.clone(),
        );
        r.register(
            "memory_entries",
            "Entries of bounded in-memory state kept from requests, by state",
            m.memory_entries.clone(),
        );
        r.register(
            "memory_bytes",
            "Bytes of bounded in-memory state kept from requests, by state",
            m.memory_bytes.clone(),
        );
        m
    }

    /// Record the size of one kind of bounded state (`targets`, `negative`, ...).
    pub fn bounded_state(&self, state: &'static str, (entries, bytes): (usize, usize)) {
        let labels = vec![("state", state)];
        self.memory_entries
            .get_or_create(&labels)
            .set(entries as i64);
        self.memory_bytes.get_or_create(&labels).set(bytes as i64);
    }

    /// Count one artifact request.
    pub fn request(&self, form: Form, result: CacheResult) {
        let i = Form::ALL.iter().position(|f| *f == form).expect("listed") * CacheResult::ALL.len()
            + CacheResult::ALL
                .iter()
                .position(|r| *r == result)
                .expect("listed");
        self.requests[i].inc();
        match result {
            CacheResult::Hit => {
                self.hits.inc();
            }
            CacheResult::Miss | CacheResult::Bypass => {
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
