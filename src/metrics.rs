//! Prometheus metrics (`/metrics`) and the counters `/api/v1/stats` reports.
//!
//! The registry is encoded as OpenMetrics by prometheus-client; [`Exposition::Prometheus`]
//! rewrites that into the Prometheus text format 0.0.4 (what `promtool check metrics` and
//! scrapers that do not ask for OpenMetrics read): counter families named with their
//! `_total`, the info family as a gauge, no `# UNIT` or `# EOF` lines.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
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

/// The `class` label of `upcache_http_requests_total`, by the status's first digit.
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Which text format `/metrics` answers in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposition {
    /// OpenMetrics 1.0.0, for clients whose `Accept` asks for it.
    OpenMetrics,
    /// The Prometheus text format 0.0.4, the default.
    Prometheus,
}

impl Exposition {
    /// The format an `Accept` header asks for: OpenMetrics when it names
    /// `application/openmetrics-text` with a quality above 0 and not below that of
    /// `text/plain` (or `text/*`, `*/*`), else the Prometheus text format.
    pub fn negotiate(accept: &str) -> Exposition {
        let (mut openmetrics, mut text) = (0.0f32, 0.0f32);
        for range in accept.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
                .map_or(1.0, |(_, v)| v.trim().parse::<f32>().unwrap_or(0.0));
            match media.as_str() {
                "application/openmetrics-text" => openmetrics = openmetrics.max(q),
                "text/plain" | "text/*" | "*/*" => text = text.max(q),
                _ => {}
            }
        }
        if openmetrics > 0.0 && openmetrics >= text {
            Exposition::OpenMetrics
        } else {
            Exposition::Prometheus
        }
    }

    /// The `Content-Type` of the answer.
    pub fn content_type(self) -> &'static str {
        match self {
            Exposition::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Exposition::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

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
    /// Responses by status class, indexed like [`STATUS_CLASSES`].
    http_requests: Vec<Counter>,
    /// 1 while `/readyz` would answer 200 (the last probes), else 0.
    pub ready: Gauge,
    pub disk_used_bytes: Gauge,
    pub disk_total_bytes: Gauge,
    pub high_watermark: Gauge<f64, AtomicU64>,
    pub low_watermark: Gauge<f64, AtomicU64>,
    pub upstream_waiting: Gauge,
    pub request_duration: Histogram,
    pub hits: Counter,
    pub misses: Counter,
    /// Hits and misses per minute over the last hour, for the status page.
    pub hit_window: HitWindow,
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
            http_requests: Vec::new(),
            ready: Gauge::default(),
            disk_used_bytes: Gauge::default(),
            disk_total_bytes: Gauge::default(),
            high_watermark: Gauge::default(),
            low_watermark: Gauge::default(),
            upstream_waiting: Gauge::default(),
            request_duration: Histogram::new(exponential_buckets(0.0005, 4.0, 10)),
            hits: Counter::default(),
            misses: Counter::default(),
            hit_window: Default::default(),
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
        let classes = Family::<Labels, Counter>::default();
        for class in STATUS_CLASSES {
            m.http_requests
                .push(classes.get_or_create(&vec![("class", class)]).clone());
        }
        let r = &mut m.registry;
        r.register(
            "build",
            "The running version, as a label; the value is 1",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        r.register(
            "http_requests",
            "Responses by status class (1xx to 5xx), all endpoints",
            classes,
        );
        r.register(
            "ready",
            "1 while the instance is ready (GET /readyz would answer 200), else 0",
            m.ready.clone(),
        );
        r.register(
            "disk_used_bytes",
            "Used bytes of the cache (of max_size, or of the volume holding data_dir)",
            m.disk_used_bytes.clone(),
        );
        r.register(
            "disk_total_bytes",
            "Size of the cache in bytes (max_size, or the volume holding data_dir)",
            m.disk_total_bytes.clone(),
        );
        r.register(
            "disk_high_watermark_ratio",
            "cache.high_watermark: used ratio above which the sweeper evicts",
            m.high_watermark.clone(),
        );
        r.register(
            "disk_low_watermark_ratio",
            "cache.low_watermark: used ratio the sweeper evicts down to",
            m.low_watermark.clone(),
        );
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

    /// Count one response by its status class.
    pub fn http_status(&self, status: u16) {
        if let Some(c) = (status / 100)
            .checked_sub(1)
            .and_then(|i| self.http_requests.get(i as usize))
        {
            c.inc();
        }
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
                self.hit_window.record(true);
            }
            CacheResult::Miss | CacheResult::Bypass => {
                self.misses.inc();
                self.hit_window.record(false);
            }
            _ => {}
        }
    }

    /// The registry in the text exposition format `format`.
    pub fn render(&self, format: Exposition) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        match format {
            Exposition::OpenMetrics => out,
            Exposition::Prometheus => prometheus_text(&out),
        }
    }
}

/// An OpenMetrics exposition (as prometheus-client writes it: no exemplars, no `_created`)
/// in the Prometheus text format 0.0.4: there a family is named like its samples, so a
/// counter family `x` becomes `x_total` and an info family `x` a gauge `x_info`; 0.0.4 has no
/// `# UNIT` and no `# EOF`.
fn prometheus_text(openmetrics: &str) -> String {
    let renamed: HashMap<&str, (&str, &str)> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.split_once(' '))
        .filter_map(|(name, kind)| match kind {
            "counter" => Some((name, ("_total", "counter"))),
            "info" => Some((name, ("_info", "gauge"))),
            "unknown" => Some((name, ("", "untyped"))),
            _ => None,
        })
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let descriptor = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| Some((p, line.strip_prefix(p)?.split_once(' ')?)));
        match descriptor {
            Some((p, (name, rest))) if renamed.contains_key(name) => {
                let (suffix, kind) = renamed[name];
                let rest = if p == "# TYPE " { kind } else { rest };
                let _ = writeln!(out, "{p}{name}{suffix} {rest}");
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// Minutes the hit ratio covers.
pub const WINDOW_MINUTES: u64 = 60;

/// Hits and misses per minute over the last [`WINDOW_MINUTES`], lock-free: counting a request
/// costs a clock read and two atomic operations. A bucket is reused by the minute an hour
/// later; a request racing with that reset may be lost, which a ratio can afford.
pub struct HitWindow {
    start: Instant,
    buckets: [Bucket; WINDOW_MINUTES as usize],
}

#[derive(Default)]
struct Bucket {
    /// The minute (since `start`) plus one that the counts belong to; 0: never used.
    minute: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl Default for HitWindow {
    fn default() -> Self {
        HitWindow {
            start: Instant::now(),
            buckets: std::array::from_fn(|_| Bucket::default()),
        }
    }
}

impl HitWindow {
    fn now(&self) -> u64 {
        self.start.elapsed().as_secs() / 60
    }

    pub fn record(&self, hit: bool) {
        self.record_at(self.now(), hit);
    }

    fn record_at(&self, minute: u64, hit: bool) {
        let b = &self.buckets[(minute % WINDOW_MINUTES) as usize];
        let tag = minute + 1;
        let seen = b.minute.load(Ordering::Relaxed);
        if seen != tag
            && b.minute
                .compare_exchange(seen, tag, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            b.hits.store(0, Ordering::Relaxed);
            b.misses.store(0, Ordering::Relaxed);
        }
        let counter = if hit { &b.hits } else { &b.misses };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Hits and misses over the last hour (this minute included).
    pub fn totals(&self) -> (u64, u64) {
        self.totals_at(self.now())
    }

    fn totals_at(&self, now: u64) -> (u64, u64) {
        let oldest = (now + 1).saturating_sub(WINDOW_MINUTES);
        self.buckets
            .iter()
            .filter(|b| {
                let tag = b.minute.load(Ordering::Relaxed);
                tag > 0 && (oldest..=now).contains(&(tag - 1))
            })
            .fold((0, 0), |(h, m), b| {
                (
                    h + b.hits.load(Ordering::Relaxed),
                    m + b.misses.load(Ordering::Relaxed),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hit_window_covers_the_last_hour_only() {
        let w = HitWindow::default();
        w.record_at(0, true);
        w.record_at(0, false);
        w.record_at(30, true);
        assert_eq!(w.totals_at(30), (2, 1));
        // Minute 0 leaves the window at minute 60; its bucket is reused then.
        assert_eq!(w.totals_at(59), (2, 1));
        assert_eq!(w.totals_at(60), (1, 0));
        w.record_at(60, false);
        assert_eq!(w.totals_at(60), (1, 1));
        assert_eq!(w.totals_at(200), (0, 0));
    }

    #[test]
    fn accept_negotiation() {
        use Exposition::*;
        for (accept, want) in [
            ("", Prometheus),
            ("*/*", Prometheus),
            ("text/plain; version=0.0.4", Prometheus),
            ("application/json", Prometheus),
            ("application/openmetrics-text", OpenMetrics),
            ("Application/OpenMetrics-Text; version=1.0.0", OpenMetrics),
            // What Prometheus sends.
            (
                "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                 version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
                OpenMetrics,
            ),
            ("application/openmetrics-text;q=0.2, text/plain", Prometheus),
            ("application/openmetrics-text;q=0", Prometheus),
            (
                "text/plain;q=0.5, application/openmetrics-text;q=0.5",
                OpenMetrics,
            ),
        ] {
            assert_eq!(Exposition::negotiate(accept), want, "{accept:?}");
        }
    }

    #[test]
    fn prometheus_text_renames_counter_and_info_families() {
        let m = Metrics::new();
        m.http_status(204);
        m.http_status(99);
        m.http_status(600);
        let om = m.render(Exposition::OpenMetrics);
        assert!(om.ends_with("# EOF\n"), "{om}");
        assert!(
            om.contains("# TYPE upcache_http_requests counter\n"),
            "{om}"
        );
        assert!(om.contains("# TYPE upcache_build info\n"), "{om}");
        let text = m.render(Exposition::Prometheus);
        assert!(!text.contains("# EOF"), "{text}");
        assert!(
            text.contains(
                "# HELP upcache_http_requests_total Responses by status class (1xx to 5xx), \
                 all endpoints.\n# TYPE upcache_http_requests_total counter\n"
            ),
            "{text}"
        );
        assert!(text.contains("upcache_http_requests_total{class=\"2xx\"} 1\n"));
        assert!(text.contains("upcache_http_requests_total{class=\"5xx\"} 0\n"));
        let version = env!("CARGO_PKG_VERSION");
        assert!(text.contains(&format!(
            "# TYPE upcache_build_info gauge\nupcache_build_info{{version=\"{version}\"}} 1\n"
        )));
        assert!(text.contains("# TYPE upcache_ready gauge\n"));
        assert!(text.contains("# TYPE upcache_request_duration_seconds histogram\n"));
        // Everything but the descriptors and the end marker is the same.
        let samples = |s: &str| -> Vec<String> {
            s.lines()
                .filter(|l| !l.starts_with('#'))
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(samples(&om), samples(&text));
    }
}
