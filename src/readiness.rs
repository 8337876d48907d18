//! Whether this instance can take new work: the `/readyz` verdict, refreshed every second and
//! on every `/readyz` call, and consulted (without I/O) before a request starts a download.
//!
//! While unready (index not answering, data volume full or read-only, bucket unreachable),
//! requests that would need to store get 503 `unavailable`, so a gateway retries them on
//! another instance (nginx `proxy_next_upstream http_503`) and, after `max_fails`, takes this
//! one out of rotation. Hits, checksum hits and joins of running downloads are still served
//! from what is here.

use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::RwLock;

use crate::cache::Cache;
use crate::worker::{State, WorkError, Worker};

/// How often the probe runs by itself.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);

/// The last verdicts, `None` when fine: the index is probed by `/readyz`, the data volume by
/// `/readyz` and every [`PROBE_EVERY`].
#[derive(Default)]
pub struct Readiness {
    index: RwLock<Option<String>>,
    volume: RwLock<Option<String>>,
    /// s3/obs: the bucket (probed every [`PROBE_EVERY`] and by `/readyz`).
    remote: RwLock<Option<String>>,
}

impl Readiness {
    /// Why the instance is not ready, per the last probes.
    pub fn unready_reason(&self) -> Option<String> {
        let index = self.index.read().clone();
        index
            .or_else(|| self.volume.read().clone())
            .or_else(|| self.remote_reason())
    }

    /// Why the bucket is unusable, per the last probe.
    pub fn remote_reason(&self) -> Option<String> {
        self.remote.read().clone()
    }

    /// Record a probe of the bucket.
    pub fn record_remote(&self, verdict: &Result<(), String>) {
        self.update(|| *self.remote.write() = verdict.as_ref().err().cloned());
    }

    fn record(&self, index: Option<&Result<(), String>>, volume: &Result<(), String>) {
        self.update(|| {
            if let Some(v) = index {
                *self.index.write() = v.as_ref().err().cloned();
            }
            *self.volume.write() = volume.as_ref().err().cloned();
        });
    }

    fn update(&self, change: impl FnOnce()) {
        let before = self.unready_reason();
        change();
        let after = self.unready_reason();
        if before != after {
            match &after {
                Some(r) => tracing::warn!(reason = %r, "not ready: new downloads are refused"),
                None => tracing::info!("ready again"),
            }
        }
    }
}

/// Why the data volume is unusable, as `/readyz` and clients see it: what failed, without the
/// server's path (the debug log has the whole error).
fn volume_reason(e: &crate::store::StoreError) -> String {
    tracing::debug!(error = %e, "write probe failed");
    e.reason()
}

/// Probe the index and the data volume now (on the blocking pool), remember the verdict and
/// return it: what `/readyz` answers.
pub async fn probe(
    readiness: &Readiness,
    cache: Arc<Cache>,
    bucket: Option<crate::remote::BucketProbe>,
) -> Result<(), String> {
    let a = cache;
    let (index, volume) = tokio::task::spawn_blocking(move || {
        (
            a.index.ping().map_err(|e| e.to_string()),
            a.store.write_probe().map_err(|e| volume_reason(&e)),
        )
    })
    .await
    .unwrap_or_else(|e| {
        let failed = Err(format!("probe task failed: {e}"));
        (failed.clone(), failed)
    });
    readiness.record(Some(&index), &volume);
    let remote = match bucket {
        Some(bucket) => {
            let verdict = bucket.probe().await;
            readiness.record_remote(&verdict);
            verdict
        }
        None => Ok(()),
    };
    index.and(volume).and(remote)
}

/// Probes the data volume (and, s3/obs, the bucket) every [`PROBE_EVERY`] while
/// `readiness` is alive (the service owns it): the one prober of an instance. Only the temp
/// directory and the bucket's operator are held, not the service: a probe in progress must
/// never keep a closed service (and its index lock) alive.
///
/// The bucket is probed at once, the volume first after [`PROBE_EVERY`] (start-up has just
/// written to it, and a probe file must not look like a leftover of the previous run).
pub struct Prober {
    readiness: Weak<Readiness>,
    temp_dir: PathBuf,
    bucket: Option<crate::remote::BucketProbe>,
    started: bool,
}

impl Prober {
    pub fn new(
        readiness: Weak<Readiness>,
        temp_dir: PathBuf,
        bucket: Option<crate::remote::BucketProbe>,
    ) -> Prober {
        Prober {
            readiness,
            temp_dir,
            bucket,
            started: false,
        }
    }
}

impl Worker for Prober {
    fn name(&self) -> String {
        "readiness prober".into()
    }

    async fn work(&mut self) -> Result<State, WorkError> {
        if self.readiness.strong_count() == 0 {
            return Ok(State::Done);
        }
        let volume = if std::mem::replace(&mut self.started, true) {
            let dir = self.temp_dir.clone();
            let probed = tokio::task::spawn_blocking(move || {
                crate::store::write_probe_in(&dir).map_err(|e| volume_reason(&e))
            })
            .await
            .unwrap_or_else(|e| Err(format!("probe task failed: {e}")));
            Some(probed)
        } else {
            None
        };
        let remote = match &self.bucket {
            Some(bucket) => Some(bucket.probe().await),
            None => None,
        };
        let Some(r) = self.readiness.upgrade() else {
            return Ok(State::Done);
        };
        if let Some(volume) = &volume {
            r.record(None, volume);
        }
        if let Some(remote) = &remote {
            r.record_remote(remote);
        }
        Ok(State::Idle)
    }

    async fn wait_for_work(&mut self) {
        tokio::time::sleep(PROBE_EVERY).await;
    }
}
