//! The status page's [`Snapshot`] of this instance, assembled from the service's parts.

use crate::error::Error;
use crate::status::*;
use crate::time::rfc3339;

use super::Service;

impl Service {
    /// This instance now. Reads no file but the index's counters and the volume's `statvfs`.
    pub fn snapshot(&self) -> Result<Snapshot, Error> {
        let app = self;
        let du = app.cache.used()?;
        let stats = app.cache.index.stats();
        let m = &app.cache.metrics;
        let (hits, misses) = m.hit_window.totals();
        let reason = app.readiness.unready_reason();
        let cache = &app.config.cache;
        Ok(Snapshot {
            instance: app.cache.instance.clone(),
            version: env!("CARGO_PKG_VERSION"),
            started_at: rfc3339(app.status.started_at),
            uptime_seconds: app.status.started.elapsed().as_secs(),
            ready: reason.is_none(),
            reason,
            disk: Disk {
                used_bytes: du.used_bytes,
                total_bytes: du.total_bytes,
                used_ratio: du.used_ratio(),
                high_watermark: cache.high_watermark,
                low_watermark: cache.low_watermark,
                max_size: cache.max_size,
            },
            store: Store {
                blobs: stats.blobs,
                bytes: stats.bytes,
                urls: stats.urls,
            },
            hit_ratio: HitRatio {
                window_seconds: WINDOW_MINUTES * 60,
                hits,
                misses,
                ratio: (hits + misses > 0).then(|| hits as f64 / (hits + misses) as f64),
            },
            totals: Totals {
                hits: m.hits.get(),
                misses: m.misses.get(),
                upstream_fetches: m.upstream_fetches.get(),
                upstream_failures: m.upstream_failures.get(),
            },
            downloads: app.flights.in_flight(),
            breakers: app.upstream.breakers(BREAKERS_SHOWN),
            failures: app.status.failures.recent(),
        })
    }
}
