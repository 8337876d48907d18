//! Publishing a committed blob to the bucket: its bytes (unless the bucket has them), then
//! the shared records that point at them; retried with backoff until done.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tracing::{info, warn};

use super::Bucket;
use crate::error::Error;
use crate::index::{BlobMeta, Placement, UrlRecord};
use crate::remote::SharedBlob;
use crate::worker::{State, WorkError, Worker};

impl Bucket {
    /// Publish a blob to the bucket in the background: upload its bytes unless the bucket has
    /// them, then its shared records. Retried with backoff until it succeeds (or the tier
    /// closes; the next start publishes what is left). The local copy is never trimmed before.
    pub fn publish_later(&self, blake3: &str) {
        {
            let mut publishing = self.publishing.lock();
            if let Some(again) = publishing.get_mut(blake3) {
                *again = true;
                return;
            }
            publishing.insert(blake3.to_owned(), false);
        }
        let publication = Publication {
            bucket: self.me.clone(),
            slots: self.slots.clone(),
            blake3: blake3.to_owned(),
        };
        self.publications.spawn(publication, self.cache.runtime());
    }

    /// One publication of a blob (idempotent).
    async fn publish_once(&self, b3: &str) -> Result<(), Error> {
        let Some(local) = self.cache.index.blob(b3)? else {
            return Ok(());
        };
        if !local.is_stored() {
            return Ok(());
        }
        if !local.placement.in_bucket() && !self.remote.has_blob(b3, local.size).await? {
            let path = self.cache.store.blob_path(b3);
            if !path.exists() {
                warn!(blake3 = b3, "cannot upload: the local copy is gone");
                return Ok(());
            }
            let started = Instant::now();
            self.remote.upload_blob(b3, &path).await?;
            info!(
                blake3 = b3,
                size = local.size,
                ms = started.elapsed().as_millis() as u64,
                "uploaded to the object store"
            );
        }
        let mut records: Vec<UrlRecord> = Vec::new();
        for url in self.cache.index.urls_of(b3)? {
            if let Some(entry) = self.cache.index.url(&url)? {
                if entry.record.blake3 == b3 {
                    records.push(entry.record.clone());
                }
            }
        }
        let mut shared = SharedBlob {
            meta: BlobMeta {
                placement: Placement::Replicated,
                ..local.clone()
            },
            urls: records.iter().map(|r| r.url.clone()).collect(),
        };
        if let Some(old) = self.remote.get_meta(b3).await? {
            let m = &mut shared.meta;
            m.first_seen = m.first_seen.min(old.meta.first_seen);
            m.last_access = m.last_access.max(old.meta.last_access);
            m.access_count = m.access_count.max(old.meta.access_count);
            m.origin = old.meta.origin;
            for url in old.urls {
                if !shared.urls.contains(&url) {
                    shared.urls.push(url);
                }
            }
        }
        self.remote.publish(&shared, &records).await?;
        // An index write may be the durable commit (an fsync): off the async workers.
        let (cache, b3) = (self.cache.clone(), b3.to_owned());
        tokio::task::spawn_blocking(move || cache.lifecycle().replicated(&b3)).await??;
        Ok(())
    }
}

/// One blob's publication ([`Bucket::publish_later`]): a worker that retries with backoff
/// until it succeeds, the tier is dropped, or the instance shuts down (the next start
/// publishes what is left).
struct Publication {
    bucket: Weak<Bucket>,
    slots: Arc<Semaphore>,
    blake3: String,
}

impl Worker for Publication {
    fn name(&self) -> String {
        format!("publication of {}", self.blake3)
    }

    async fn work(&mut self) -> Result<State, WorkError> {
        let Ok(permit) = self.slots.clone().acquire_owned().await else {
            return Ok(State::Done);
        };
        let Some(bucket) = self.bucket.upgrade() else {
            return Ok(State::Done);
        };
        let b3 = &self.blake3;
        // A failure is logged by the runner; the local copy stays.
        bucket.publish_once(b3).await?;
        drop(permit);
        let mut publishing = bucket.publishing.lock();
        if publishing.get(b3) == Some(&true) {
            // A URL was bound meanwhile: publish again.
            publishing.insert(b3.clone(), false);
            return Ok(State::Busy);
        }
        publishing.remove(b3);
        drop(publishing);
        bucket.published.notify_waiters();
        Ok(State::Done)
    }

    async fn wait_for_work(&mut self) {}

    /// One second, doubling up to about two minutes.
    fn retry_after(&self, errors: u32) -> Duration {
        crate::worker::jittered(Duration::from_secs(1), errors.min(7))
    }
}
