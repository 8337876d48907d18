//! The service's background workers (see [`crate::worker`]) and the order they stop in.
//!
//! | worker | group | started by | step |
//! |---|---|---|---|
//! | readiness prober | `prober` | `Service::open` | probe the data volume (and the bucket) every second |
//! | alert sender | inside `Alerter` | `Service::open` (with a webhook) | deliver one alert, retried with backoff |
//! | publication (one per blob) | inside the bucket tier | `Tier::stored` (s3/obs) | upload a blob and its shared records |
//! | sweeper | `sweeper` | [`spawn_background`] (`upcache serve`) | one pass every `cache.sweep_interval` |
//! | access-stat flush | `access` | [`spawn_background`] | write batched reads to the index every 10 s |
//!
//! [`Service::shutdown`] stops them in this order: in-flight fills first (they commit what they
//! downloaded), then the sweeper, publications, the access-stat flush, the prober, and the
//! alert sender last (so that what failed while stopping is still reported).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::service::Service;
use crate::worker::{Group, State, WorkError, Worker};

/// How often batched read statistics are written to the index.
pub const ACCESS_FLUSH_EVERY: Duration = Duration::from_secs(10);

/// The longest a graceful shutdown (`SIGTERM`) waits for downloads in progress (client
/// connections, then fills) and background work before the process exits anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(25);

/// The groups of background workers a running app owns.
pub struct Workers {
    pub sweeper: Group,
    pub access: Group,
    pub prober: Group,
}

impl Default for Workers {
    fn default() -> Workers {
        Workers {
            sweeper: Group::new("sweeper"),
            access: Group::new("access-stat flush"),
            prober: Group::new("readiness prober"),
        }
    }
}

/// Start the workers of a serving instance (the sweeper and the access-stat flush); they
/// run until [`Service::shutdown`].
pub fn spawn_background(app: &Arc<Service>) {
    let rt = app.runtime().clone();
    let interval = app.config.cache.sweep_interval;
    let a = app.clone();
    let pass: crate::sweeper::Pass = Arc::new(move || a.sweep());
    app.workers
        .sweeper
        .spawn(crate::sweeper::SweepWorker::new(interval, pass), &rt);
    app.workers
        .access
        .spawn(AccessFlush { app: app.clone() }, &rt);
}

/// Writes batched read statistics to the index, and (s3/obs) the reads to the bucket.
struct AccessFlush {
    app: Arc<Service>,
}

impl Worker for AccessFlush {
    fn name(&self) -> String {
        "access-stat flush".into()
    }

    async fn work(&mut self) -> Result<State, WorkError> {
        let a = self.app.clone();
        let read = tokio::task::spawn_blocking(move || a.cache.index.flush_access()).await??;
        self.app.tier.touch(read);
        Ok(State::Idle)
    }

    async fn wait_for_work(&mut self) {
        tokio::time::sleep(ACCESS_FLUSH_EVERY).await;
    }
}

impl Service {
    /// Stop everything running in the background, in order (see the module documentation),
    /// within `grace` in all: a fill still running then is cut (its readers get an error,
    /// its temp file goes), a worker still in a step is aborted. The caller then flushes the
    /// index.
    pub async fn shutdown(&self, grace: Duration) {
        let deadline = Instant::now() + grace;
        let left = || {
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(100))
        };
        if !self.flights.is_empty() {
            info!(
                fills = self.flights.len(),
                "waiting for downloads in progress"
            );
        }
        if tokio::time::timeout(left(), self.flights.wait_idle())
            .await
            .is_err()
        {
            warn!(
                fills = self.flights.len(),
                "downloads still running at the shutdown deadline are cut"
            );
        }
        let w = &self.workers;
        w.sweeper.stop(left()).await;
        self.tier.stop(left()).await;
        for group in [&w.access, &w.prober] {
            group.stop(left()).await;
        }
        self.cache.alerts.stop(left()).await;
    }
}
