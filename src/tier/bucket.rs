//! `backend = "s3" | "obs"`: the bucket is the durable tier and the shared index; the data
//! directory holds local copies. Committed blobs are published ([`super::publish`]), blobs
//! only the bucket has are streamed through and copied back ([`super::refill`]), reads
//! touch the bucket's "last used", and remote cleanup deletes what nobody read.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroUsize;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use lru::LruCache;
use parking_lot::Mutex;
use tokio::sync::Semaphore;
use tracing::{info, warn};

use super::{Body, BoxFuture, Serving, Streamer, Tier};
use crate::cache::Cache;
use crate::config::ServeMode;
use crate::error::Error;
use crate::index::{BlobMeta, Placement};
use crate::readiness::Readiness;
use crate::remote::{Remote, RemoteError, SharedBlob};
use crate::store::Algo;
use crate::sweeper::Admission;
use crate::url::UpstreamUrl;
use crate::worker::Group;

/// Uploads to the bucket running at once.
const UPLOAD_SLOTS: usize = 4;
/// Touches remembered at most.
const TOUCH_ENTRIES: usize = 100_000;

/// The object-store tier: the bucket plus the background bookkeeping.
pub struct Bucket {
    pub(super) me: Weak<Bucket>,
    pub(super) cache: Arc<Cache>,
    pub remote: Remote,
    /// The bucket's probe verdict (the readiness prober probes it).
    ready: Arc<Readiness>,
    /// Room in the local tier for a copy from the bucket.
    pub(super) admission: Arc<Admission>,
    /// Blobs being published: blake3 -> "publish again when done" (a URL was bound meanwhile).
    pub(super) publishing: Mutex<HashMap<String, bool>>,
    pub(super) slots: Arc<Semaphore>,
    /// When this instance last wrote a blob's "last used" to the bucket.
    touched: Mutex<LruCache<String, Instant>>,
    /// Blobs being copied from the bucket back into the local tier.
    pub(super) refilling: Mutex<HashSet<String>>,
    /// Signalled whenever a publication ends.
    pub(super) published: tokio::sync::Notify,
    /// The publications, one worker per blob.
    pub(super) publications: Group,
}

impl From<RemoteError> for Error {
    fn from(e: RemoteError) -> Self {
        if e.is_not_found() {
            Error::NotFound(e.to_string())
        } else {
            tracing::warn!(error = %e, "object store request failed");
            Error::Unavailable(format!("the object store is unavailable: {}", e.reason()))
        }
    }
}

impl Bucket {
    pub fn new(
        cache: Arc<Cache>,
        remote: Remote,
        ready: Arc<Readiness>,
        admission: Arc<Admission>,
    ) -> Arc<Bucket> {
        Arc::new_cyclic(|me| Bucket {
            me: me.clone(),
            cache,
            remote,
            ready,
            admission,
            publishing: Mutex::new(HashMap::new()),
            slots: Arc::new(Semaphore::new(UPLOAD_SLOTS)),
            touched: Mutex::new(LruCache::new(
                NonZeroUsize::new(TOUCH_ENTRIES).expect("non-zero"),
            )),
            refilling: Mutex::new(HashSet::new()),
            published: tokio::sync::Notify::new(),
            publications: Group::new("publications"),
        })
    }

    /// Whether the bucket answered the last probe.
    pub fn remote_ready(&self) -> bool {
        self.ready.remote_reason().is_none()
    }

    /// Start the object-store work: publish what a previous run left unpublished (the
    /// bucket is probed by the readiness prober).
    fn start_now(&self) -> Result<(), Error> {
        let mut pending = Vec::new();
        self.cache.index.visit_stored_blobs(None, |m| {
            if m.placement == Placement::Local {
                pending.push(m.digests.blake3);
            }
            Ok::<_, Error>(true)
        })?;
        if !pending.is_empty() {
            info!(blobs = pending.len(), bucket = %self.remote.name, "uploading blobs a previous run left local-only");
        }
        for b3 in pending {
            self.publish_later(&b3);
        }
        Ok(())
    }

    /// Before deciding hit or miss: if the local index does not know `url`, ask the shared
    /// index (unless it said "no" less than `index_refresh` ago) and remember its answer.
    async fn learn_url_now(&self, url: &UpstreamUrl) -> Result<(), Error> {
        let key = url.as_str();
        // While the bucket is down, asking it would only delay the 503 of a new download.
        if self.cache.index.url(key)?.is_some()
            || self.remote.recently_absent(key)
            || !self.remote_ready()
        {
            return Ok(());
        }
        match self.remote.lookup_url(key).await {
            Ok(Some((record, shared))) => {
                let meta = self.learned(shared.meta);
                // A write may be the durable commit (an fsync): off the async workers.
                let cache = self.cache.clone();
                tokio::task::spawn_blocking(move || cache.index.bind(&meta, &record)).await??;
            }
            Ok(None) => {}
            // Unknown, as far as we can tell: the fill path decides (and refuses while the
            // bucket is unreachable, see readiness).
            Err(e) => warn!(url = %url, error = %e, "shared index lookup failed"),
        }
        Ok(())
    }

    /// The same for a checksum lookup.
    async fn learn_checksum_now(&self, algo: Algo, hex: &str) -> Result<(), Error> {
        if self
            .cache
            .index
            .by_checksum(algo, hex)?
            .is_some_and(|m| m.is_stored())
            || self.remote.checksum_recently_absent(algo, hex)
        {
            return Ok(());
        }
        match self.remote.lookup_checksum(algo, hex).await {
            Ok(Some(shared)) => {
                let meta = self.learned(shared.meta);
                let cache = self.cache.clone();
                tokio::task::spawn_blocking(move || cache.index.insert_blob(&meta)).await??;
            }
            Ok(None) => {}
            Err(e) => warn!(algo = algo.name(), hex, error = %e, "shared index lookup failed"),
        }
        Ok(())
    }

    /// A blob as the shared index describes it, recorded locally: in the bucket, local only
    /// if a file happens to be here; pins are the bucket's business (`pins/`).
    fn learned(&self, meta: BlobMeta) -> BlobMeta {
        let here = self.cache.store.exists(meta.blake3());
        BlobMeta {
            placement: if here {
                Placement::Replicated
            } else {
                Placement::RemoteOnly
            },
            pinned: false,
            access_count: 0,
            ..meta
        }
    }

    /// Remote cleanup (`cache.remote_max_unused`): delete blobs nobody read for that long,
    /// unless pinned, with their shared records; journal each as evicted here.
    async fn remote_sweep(&self) -> Result<(u64, u64), Error> {
        let cache = &self.cache;
        let max_unused = cache.config.cache.remote_max_unused;
        if max_unused.is_zero() {
            return Ok((0, 0));
        }
        let cutoff = cache.clock.unix_now() - max_unused.as_secs() as i64;
        let (mut deleted, mut freed) = (0, 0);
        for (b3, written) in self.remote.list_meta().await? {
            if written >= cutoff {
                continue;
            }
            let Some(shared) = self.remote.get_meta(&b3).await? else {
                continue;
            };
            let local = cache.index.blob(&b3)?;
            if local.as_ref().is_some_and(|m| m.pinned) || self.remote.is_pinned(&b3).await? {
                continue;
            }
            let last = local.as_ref().map_or(shared.meta.last_access, |m| {
                m.last_access.max(shared.meta.last_access)
            });
            if last >= cutoff {
                continue;
            }
            self.remote.delete_blob(&shared).await?;
            cache.lifecycle().evict(
                &shared.meta.digests,
                shared.meta.size,
                format!(
                    "deleted from the object store: unused longer than cache.remote_max_unused; urls: {}",
                    shared.urls.join(" ")
                ),
            )?;
            deleted += 1;
            freed += shared.meta.size;
        }
        Ok((deleted, freed))
    }

    /// Admin delete: the bucket's copy and records first (a failure leaves everything as
    /// it was), then the local ones.
    async fn delete_now(&self, meta: &BlobMeta, urls: Vec<String>) -> Result<(), Error> {
        let mut shared = self
            .remote
            .get_meta(meta.blake3())
            .await?
            .unwrap_or_else(|| SharedBlob {
                meta: meta.clone(),
                urls: Vec::new(),
            });
        for url in urls {
            if !shared.urls.contains(&url) {
                shared.urls.push(url);
            }
        }
        self.remote.delete_blob(&shared).await?;
        Ok(())
    }

    /// After blobs were read: write their "last used" to the bucket, at most once per touch
    /// interval per blob (a quarter of `remote_max_unused`, between 1 s and a day), so that
    /// remote cleanup by any instance sees reads on every instance.
    fn touch_now(&self, read: Vec<String>) {
        let max_unused = self.cache.config.cache.remote_max_unused;
        if max_unused.is_zero() {
            return;
        }
        let every = (max_unused / 4).clamp(Duration::from_secs(1), Duration::from_secs(86_400));
        for b3 in read {
            let due = {
                let mut touched = self.touched.lock();
                let due = touched.get(&b3).is_none_or(|t| t.elapsed() >= every);
                if due {
                    touched.put(b3.clone(), Instant::now());
                }
                due
            };
            if due
                && self
                    .cache
                    .index
                    .blob(&b3)
                    .ok()
                    .flatten()
                    .is_some_and(|m| m.placement.in_bucket())
            {
                self.publish_later(&b3);
            }
        }
    }

    /// Unpin in the bucket too (pinning goes through [`Bucket::publish_later`]).
    fn unpin_now(&self, blake3: &str) {
        let Some(bucket) = self.me.upgrade() else {
            return;
        };
        let b3 = blake3.to_owned();
        self.cache.runtime().spawn(async move {
            if let Err(e) = bucket.remote.set_pin(&b3, false).await {
                warn!(blake3 = %b3, error = %e, "cannot unpin in the object store");
            }
        });
    }
}

impl Tier for Bucket {
    fn start(&self) -> Result<(), Error> {
        self.start_now()
    }

    fn stored(&self, blake3: &str) {
        self.publish_later(blake3);
    }

    fn unpinned(&self, blake3: &str) {
        self.unpin_now(blake3);
    }

    fn delete<'a>(
        &'a self,
        meta: &'a BlobMeta,
        urls: Vec<String>,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(self.delete_now(meta, urls))
    }

    fn learn_url<'a>(&'a self, url: &'a UpstreamUrl) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(self.learn_url_now(url))
    }

    fn learn_checksum<'a>(&'a self, algo: Algo, hex: &'a str) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(self.learn_checksum_now(algo, hex))
    }

    /// A redirect to the bucket (`serve = "redirect"`, while the bucket answers), the local
    /// copy, or the bucket's copy streamed through.
    fn open_for_serving<'a>(
        self: Arc<Self>,
        meta: &'a BlobMeta,
    ) -> BoxFuture<'a, Result<Option<Serving>, Error>> {
        Box::pin(async move {
            if meta.placement.in_bucket()
                && self.cache.config.storage.serve == ServeMode::Redirect
                && self.remote_ready()
            {
                let ttl = self.cache.config.storage.presign_ttl;
                let url = self.remote.presign(meta.blake3(), ttl).await?;
                return Ok(Some(Serving::Redirect(url)));
            }
            if let Some(file) = self.cache.open_blob(meta)? {
                return Ok(Some(Serving::File(file)));
            }
            if !meta.placement.in_bucket() {
                return Ok(None);
            }
            Ok(Some(Serving::Stream(Streamer::new(self, meta.clone()))))
        })
    }

    fn read<'a>(
        self: Arc<Self>,
        meta: &'a BlobMeta,
        start: u64,
        end: u64,
    ) -> BoxFuture<'a, Result<Option<Body>, Error>> {
        Box::pin(async move { self.remote_body(meta, start, end).await })
    }

    fn touch(&self, read: Vec<String>) {
        self.touch_now(read);
    }

    fn sweep(&self) -> Option<BoxFuture<'_, Result<(u64, u64), Error>>> {
        Some(Box::pin(self.remote_sweep()))
    }

    fn probe(&self) -> Option<crate::remote::BucketProbe> {
        Some(self.remote.prober())
    }

    fn absent_size(&self) -> Option<(usize, usize)> {
        Some(self.remote.absent.size())
    }

    fn pending(&self) -> usize {
        self.publishing.lock().len()
    }

    fn wait_published(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            loop {
                let ended = self.published.notified();
                if self.pending() == 0 {
                    return;
                }
                ended.await;
            }
        })
    }

    fn stop(&self, deadline: Duration) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.publications.stop(deadline).await;
        })
    }
}
