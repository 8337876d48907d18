//! What the status page and `GET /api/v1/status` show: one [`Snapshot`] of this instance,
//! assembled from state kept cheaply elsewhere (fills' atomics, breakers, readiness) and the
//! bounded record kept here, the most recent failed downloads ([`Failures`]); the hit ratio per
//! minute over the last hour is the metrics' [`HitWindow`].

use std::collections::VecDeque;
use std::time::Instant;

use parking_lot::Mutex;
use serde::Serialize;

use crate::fill::InFlight;
pub use crate::metrics::{HitWindow, WINDOW_MINUTES};
use crate::time::{rfc3339, unix_now};
use crate::upstream::breaker::HostState;
use crate::url::UpstreamUrl;

/// Failed downloads remembered, and the longest URL or reason kept of each (in bytes): at
/// most 100 × 2 KiB, whatever the URLs.
pub const FAILURES_KEPT: usize = 100;
const TEXT_MAX: usize = 1024;

/// Breaker states shown at most (up to 10,000 hosts are remembered).
pub const BREAKERS_SHOWN: usize = 50;

/// A download that failed, with why.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    /// RFC 3339 UTC.
    pub time: String,
    /// The upstream URL, as shown (credentials redacted).
    pub url: String,
    /// The error code a client got (docs/errors.md).
    pub error: &'static str,
    /// What went wrong, in words.
    pub reason: String,
}

/// The last [`FAILURES_KEPT`] failed downloads, newest first.
#[derive(Default)]
pub struct Failures(Mutex<VecDeque<Failure>>);

impl Failures {
    /// Remember a failed download of `url`. The page is anonymous: the URL is kept in its
    /// shown form (a password redacted), also where the reason quotes it.
    pub fn record(&self, url: &UpstreamUrl, error: &'static str, reason: &str) {
        let shown = url.to_string();
        let failure = Failure {
            time: rfc3339(unix_now()),
            url: truncate(&shown),
            error,
            reason: truncate(&reason.replace(url.as_str(), &shown)),
        };
        let mut ring = self.0.lock();
        if ring.len() == FAILURES_KEPT {
            ring.pop_back();
        }
        ring.push_front(failure);
    }

    pub fn recent(&self) -> Vec<Failure> {
        self.0.lock().iter().cloned().collect()
    }
}

fn truncate(s: &str) -> String {
    crate::url::cut(s, TEXT_MAX)
}

/// Everything the status page shows, as `GET /api/v1/status` returns it.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// `server.instance`, else the host name.
    pub instance: String,
    pub version: &'static str,
    /// When this process started (RFC 3339 UTC), and how long ago.
    pub started_at: String,
    pub uptime_seconds: u64,
    /// Whether new downloads are accepted (`/readyz`'s last verdict), and if not, why.
    pub ready: bool,
    pub reason: Option<String>,
    pub disk: Disk,
    pub store: Store,
    pub hit_ratio: HitRatio,
    pub totals: Totals,
    pub downloads: Vec<InFlight>,
    pub breakers: Vec<HostState>,
    pub failures: Vec<Failure>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Disk {
    /// Use as the sweeper sees it: of `cache.max_size` when set, else of the volume.
    pub used_bytes: u64,
    pub total_bytes: u64,
    pub used_ratio: f64,
    /// `cache.high_watermark` and `cache.low_watermark` (fractions of `total_bytes`).
    pub high_watermark: f64,
    pub low_watermark: f64,
    /// `cache.max_size` (0: the volume's size is the limit).
    pub max_size: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Store {
    pub blobs: u64,
    pub bytes: u64,
    pub urls: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct HitRatio {
    pub window_seconds: u64,
    pub hits: u64,
    pub misses: u64,
    /// `hits / (hits + misses)`; absent without requests in the window.
    pub ratio: Option<f64>,
}

/// Counters since start-up (as in `/metrics`).
#[derive(Debug, Clone, Serialize)]
pub struct Totals {
    pub hits: u64,
    pub misses: u64,
    pub upstream_fetches: u64,
    pub upstream_failures: u64,
}

/// Kept by the service for the status page.
pub struct Status {
    pub started: Instant,
    pub started_at: i64,
    pub failures: Failures,
}

impl Default for Status {
    fn default() -> Self {
        Status {
            started: Instant::now(),
            started_at: unix_now(),
            failures: Failures::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_bounded_newest_first() {
        let url = |s: &str| UpstreamUrl::parse(s).unwrap();
        let f = Failures::default();
        for i in 0..FAILURES_KEPT + 5 {
            f.record(&url(&format!("http://h/{i}")), "upstream_failed", "boom");
        }
        let recent = f.recent();
        assert_eq!(recent.len(), FAILURES_KEPT);
        assert_eq!(recent[0].url, format!("http://h/{}", FAILURES_KEPT + 4));
        let long = url(&format!("http://h/{}", "a".repeat(5000)));
        // Cut at a character boundary.
        f.record(&long, "upstream_failed", &"é".repeat(3000));
        let last = &f.recent()[0];
        assert!(last.url.len() <= TEXT_MAX + 3 && last.url.ends_with("..."));
        assert!(last.reason.len() <= TEXT_MAX + 3);
    }

    #[test]
    fn failures_show_no_password() {
        let f = Failures::default();
        let u = UpstreamUrl::parse("ftp://user:s3cret@h/pub/a.tar.gz").unwrap();
        f.record(
            &u,
            "upstream_failed",
            &format!("{}: 550 no such file", u.as_str()),
        );
        let last = &f.recent()[0];
        assert!(
            !last.url.contains("s3cret") && !last.reason.contains("s3cret"),
            "{last:?}"
        );
        assert!(last.reason.starts_with(&u.to_string()), "{last:?}");
    }
}
