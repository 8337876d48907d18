//! The app and the bucket: publishing committed blobs (upload, then shared records), learning
//! what other instances stored, streaming blobs back into the local tier, presigned
//! redirects, last-use touches and remote cleanup.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use lru::LruCache;
use parking_lot::Mutex;
use tokio::sync::Semaphore;
use tracing::{info, warn};

use super::{Remote, RemoteError, SharedBlob};
use crate::alerts::Kind;
use crate::app::App;
use crate::cache::Cache;
use crate::error::Error;
use crate::index::{BlobMeta, Placement, UrlRecord};
use crate::store::Algo;
use crate::url::UpstreamUrl;
use crate::worker::{State, WorkError, Worker};

/// A response body streamed from the bucket.
pub type RemoteBody = Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>;

/// Uploads to the bucket running at once.
const UPLOAD_SLOTS: usize = 4;
/// Touches remembered at most.
const TOUCH_ENTRIES: usize = 100_000;

/// The object-store tier of a running app: the bucket plus the background bookkeeping.
pub struct Tier {
    pub bucket: Remote,
    /// Blobs being published: blake3 -> "publish again when done" (a URL was bound meanwhile).
    publishing: Mutex<HashMap<String, bool>>,
    slots: Arc<Semaphore>,
    /// When this instance last wrote a blob's "last used" to the bucket.
    touched: Mutex<LruCache<String, Instant>>,
    /// Blobs being copied from the bucket back into the local tier.
    refilling: Mutex<HashSet<String>>,
    /// Signalled whenever a publication ends.
    published: tokio::sync::Notify,
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

impl Tier {
    pub fn new(bucket: Remote) -> Tier {
        Tier {
            bucket,
            publishing: Mutex::new(HashMap::new()),
            slots: Arc::new(Semaphore::new(UPLOAD_SLOTS)),
            touched: Mutex::new(LruCache::new(
                NonZeroUsize::new(TOUCH_ENTRIES).expect("non-zero"),
            )),
            refilling: Mutex::new(HashSet::new()),
            published: tokio::sync::Notify::new(),
        }
    }

    /// Blobs whose publication has not finished yet.
    pub fn pending(&self) -> usize {
        self.publishing.lock().len()
    }

    /// Remote cleanup (`cache.remote_max_unused`): delete blobs nobody read for that long,
    /// unless pinned, with their shared records; journal each as evicted here.
    pub async fn remote_sweep(&self, cache: &Cache) -> Result<(u64, u64), Error> {
        let tier = self;
        let max_unused = cache.config.cache.remote_max_unused;
        if max_unused.is_zero() {
            return Ok((0, 0));
        }
        let cutoff = cache.clock.unix_now() - max_unused.as_secs() as i64;
        let (mut deleted, mut freed) = (0, 0);
        for (b3, written) in tier.bucket.list_meta().await? {
            if written >= cutoff {
                continue;
            }
            let Some(shared) = tier.bucket.get_meta(&b3).await? else {
                continue;
            };
            let local = cache.index.blob(&b3)?;
            if local.as_ref().is_some_and(|m| m.pinned) || tier.bucket.is_pinned(&b3).await? {
                continue;
            }
            let last = local.as_ref().map_or(shared.meta.last_access, |m| {
                m.last_access.max(shared.meta.last_access)
            });
            if last >= cutoff {
                continue;
            }
            tier.bucket.delete_blob(&shared).await?;
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

    /// Wait until every publication started so far has finished (tests, shutdown).
    pub async fn wait_published(&self) {
        loop {
            let ended = self.published.notified();
            if self.pending() == 0 {
                return;
            }
            ended.await;
        }
    }
}

impl App {
    /// Start the object-store work: publish what a previous run left unpublished (the
    /// bucket is probed by the readiness prober).
    pub(crate) fn start_tier(self: &Arc<Self>) -> Result<(), Error> {
        let Some(tier) = &self.tier else {
            return Ok(());
        };
        let mut pending = Vec::new();
        self.cache.index.visit_stored_blobs(None, |m| {
            if m.placement == Placement::Local {
                pending.push(m.digests.blake3);
            }
            Ok::<_, Error>(true)
        })?;
        if !pending.is_empty() {
            info!(blobs = pending.len(), bucket = %tier.bucket.name, "uploading blobs a previous run left local-only");
        }
        for b3 in pending {
            self.publish_later(&b3);
        }
        Ok(())
    }

    /// Whether the bucket answered the last probe.
    pub fn remote_ready(&self) -> bool {
        self.readiness.remote_reason().is_none()
    }

    /// Publish a blob to the bucket in the background: upload its bytes unless the bucket has
    /// them, then its shared records. Retried with backoff until it succeeds (or the app
    /// closes; the next start publishes what is left). The local copy is never trimmed before.
    pub fn publish_later(self: &Arc<Self>, blake3: &str) {
        let Some(tier) = &self.tier else { return };
        {
            let mut publishing = tier.publishing.lock();
            if let Some(again) = publishing.get_mut(blake3) {
                *again = true;
                return;
            }
            publishing.insert(blake3.to_owned(), false);
        }
        let publication = Publication {
            app: Arc::downgrade(self),
            slots: tier.slots.clone(),
            blake3: blake3.to_owned(),
        };
        self.workers.publish.spawn(publication, self.runtime());
    }

    /// One publication of a blob (idempotent).
    async fn publish_once(self: &Arc<Self>, b3: &str) -> Result<(), Error> {
        let tier = self.tier.as_ref().expect("publishing needs a tier");
        let Some(local) = self.cache.index.blob(b3)? else {
            return Ok(());
        };
        if !local.is_stored() {
            return Ok(());
        }
        if !local.placement.in_bucket() && !tier.bucket.has_blob(b3, local.size).await? {
            let path = self.cache.store.blob_path(b3);
            if !path.exists() {
                warn!(blake3 = b3, "cannot upload: the local copy is gone");
                return Ok(());
            }
            let started = Instant::now();
            tier.bucket.upload_blob(b3, &path).await?;
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
        if let Some(old) = tier.bucket.get_meta(b3).await? {
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
        tier.bucket.publish(&shared, &records).await?;
        self.cache.lifecycle().replicated(b3)?;
        Ok(())
    }

    /// Before deciding hit or miss: if the local index does not know `url`, ask the shared
    /// index (unless it said "no" less than `index_refresh` ago) and remember its answer.
    pub async fn learn_url(&self, url: &UpstreamUrl) -> Result<(), Error> {
        let Some(tier) = &self.tier else {
            return Ok(());
        };
        let key = url.as_str();
        // While the bucket is down, asking it would only delay the 503 of a new download.
        if self.cache.index.url(key)?.is_some()
            || self.flights.contains(url)
            || tier.bucket.recently_absent(key)
            || !self.remote_ready()
        {
            return Ok(());
        }
        match tier.bucket.lookup_url(key).await {
            Ok(Some((record, shared))) => {
                let meta = self.learned(shared.meta);
                self.cache.index.bind(&meta, &record)?;
            }
            Ok(None) => {}
            // Unknown, as far as we can tell: the fill path decides (and refuses while the
            // bucket is unreachable, see readiness).
            Err(e) => warn!(url = %url, error = %e, "shared index lookup failed"),
        }
        Ok(())
    }

    /// The same for a checksum lookup.
    pub async fn learn_checksum(&self, algo: Algo, hex: &str) -> Result<(), Error> {
        let Some(tier) = &self.tier else {
            return Ok(());
        };
        if self
            .cache
            .index
            .by_checksum(algo, hex)?
            .is_some_and(|m| m.is_stored())
            || tier.bucket.checksum_recently_absent(algo, hex)
        {
            return Ok(());
        }
        match tier.bucket.lookup_checksum(algo, hex).await {
            Ok(Some(shared)) => {
                let meta = self.learned(shared.meta);
                self.cache.index.insert_blob(&meta)?;
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

    /// A presigned URL for a blob in the bucket (`serve = "redirect"`).
    pub async fn presign_blob(&self, meta: &BlobMeta) -> Result<String, Error> {
        let tier = self.tier.as_ref().expect("only remote blobs are presigned");
        Ok(tier
            .bucket
            .presign(meta.blake3(), self.config.storage.presign_ttl)
            .await?)
    }

    /// `[start, end)` of a blob from the bucket; `None` if the bucket no longer has it (its
    /// index entry is dropped: the next request is a miss). A whole-blob read is verified
    /// against its BLAKE3 before its last byte is released (a mismatch aborts the
    /// connection) and, when the local tier has room, copied into it on the way.
    pub async fn remote_body(
        self: &Arc<Self>,
        meta: &BlobMeta,
        start: u64,
        end: u64,
    ) -> Result<Option<RemoteBody>, Error> {
        let tier = self
            .tier
            .as_ref()
            .expect("only remote blobs are read remotely");
        let b3 = meta.blake3().to_owned();
        let mut stream = Box::pin(match tier.bucket.read_blob(&b3, start, end).await {
            Ok(s) => s,
            Err(e) if e.is_not_found() => return self.remote_gone(&b3).map(|_| None),
            Err(e) => return Err(e.into()),
        });
        // The first piece (or the error) arrives before any header is sent.
        let first = if start < end {
            match stream.next().await {
                Some(Ok(b)) => Some(b),
                Some(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                    return self.remote_gone(&b3).map(|_| None);
                }
                Some(Err(e)) => {
                    return Err(Error::Unavailable(format!(
                        "cannot read blob {b3} from the object store: {e}"
                    )));
                }
                None => None,
            }
        } else {
            None
        };
        let rest = futures::stream::iter(first.map(Ok)).chain(stream);
        if start != 0 || end != meta.size {
            // A range: passed through as it comes (it cannot be verified on its own).
            return Ok(Some(Box::pin(rest)));
        }
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let app = self.clone();
        let size = meta.size;
        self.runtime()
            .spawn(async move { app.copy_from_bucket(b3, size, Box::pin(rest), tx).await });
        let mut rx = rx;
        Ok(Some(Box::pin(futures::stream::poll_fn(move |cx| {
            rx.poll_recv(cx)
        }))))
    }

    /// The bucket lost a blob this instance believed it had (remote cleanup by another
    /// instance, or a manual delete): forget it here.
    fn remote_gone(&self, b3: &str) -> Result<(), Error> {
        warn!(
            blake3 = b3,
            "blob is gone from the object store; dropping its index entry"
        );
        self.cache.lifecycle().forget(b3)?;
        Ok(())
    }

    /// Relay a whole blob from the bucket to one client, hashing it, and, if nobody else
    /// is doing it and there is room, writing it to the local tier; the last piece goes out
    /// only once the BLAKE3 matches.
    async fn copy_from_bucket(
        self: Arc<Self>,
        b3: String,
        size: u64,
        mut stream: RemoteBody,
        tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    ) {
        let tier = self
            .tier
            .as_ref()
            .expect("only remote blobs are read remotely");
        let claimed = tier.refilling.lock().insert(b3.clone());
        let _release = claimed.then(|| Release(self.clone(), b3.clone()));
        let mut temp = None;
        if claimed && self.admit(size).await {
            temp = self.cache.store.create_temp().ok();
        }
        let mut hasher = blake3::Hasher::new();
        let mut pos = 0u64;
        let mut held: Option<Bytes> = None;
        let mut client = true;
        while let Some(piece) = stream.next().await {
            let piece = match piece {
                Ok(p) => p,
                Err(e) => {
                    warn!(blake3 = %b3, error = %e, "reading a blob from the object store failed");
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            hasher.update(&piece);
            if let Some(t) = &temp {
                if let Err(e) = t.write_at(pos, &piece) {
                    warn!(blake3 = %b3, error = %e, "cannot copy a blob into the local tier");
                    temp = None;
                }
            }
            pos += piece.len() as u64;
            if let Some(prev) = held.replace(piece) {
                if client && tx.send(Ok(prev)).await.is_err() {
                    client = false;
                    if temp.is_none() {
                        return;
                    }
                }
            }
        }
        let actual = hasher.finalize().to_hex().to_string();
        if actual != b3 || pos != size {
            let msg = format!(
                "blob {b3} from the object store is corrupt: {pos} bytes with blake3 {actual}, \
                 expected {size} bytes"
            );
            warn!("{msg}");
            self.cache
                .alerts
                .raise(Kind::IntegrityFailed, &b3, msg.clone());
            let _ = tx.send(Err(std::io::Error::other(msg))).await;
            return;
        }
        if let Some(last) = held {
            if client {
                let _ = tx.send(Ok(last)).await;
            }
        }
        drop(tx);
        let Some(temp) = temp else { return };
        let app = self.clone();
        let stored = tokio::task::spawn_blocking(move || -> Result<(), Error> {
            app.cache.store.commit(temp, &b3)?;
            app.cache.lifecycle().restore_local(&b3)?;
            Ok(())
        })
        .await;
        match stored {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "cannot keep a blob read from the object store"),
            Err(e) => warn!(error = %e, "local copy task failed"),
        }
    }

    /// After blobs were read: write their "last used" to the bucket, at most once per touch
    /// interval per blob (a quarter of `remote_max_unused`, between 1 s and a day), so that
    /// remote cleanup by any instance sees reads on every instance.
    pub fn touch_remote(self: &Arc<Self>, read: Vec<String>) {
        let Some(tier) = &self.tier else { return };
        let max_unused = self.config.cache.remote_max_unused;
        if max_unused.is_zero() {
            return;
        }
        let every = (max_unused / 4).clamp(Duration::from_secs(1), Duration::from_secs(86_400));
        for b3 in read {
            let due = {
                let mut touched = tier.touched.lock();
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

    /// Admin delete: the bucket's copy and records first (a failure leaves everything as
    /// it was), then the local ones.
    pub(crate) async fn delete_remote(
        &self,
        meta: &BlobMeta,
        urls: Vec<String>,
    ) -> Result<(), Error> {
        let Some(tier) = &self.tier else {
            return Ok(());
        };
        let mut shared = tier
            .bucket
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
        tier.bucket.delete_blob(&shared).await?;
        Ok(())
    }

    /// Unpin in the bucket too (pinning goes through [`App::publish_later`]).
    pub(crate) fn unpin_remote(self: &Arc<Self>, blake3: &str) {
        if self.tier.is_none() {
            return;
        }
        let app = self.clone();
        let b3 = blake3.to_owned();
        self.runtime().spawn(async move {
            let tier = app.tier.as_ref().expect("checked");
            if let Err(e) = tier.bucket.set_pin(&b3, false).await {
                warn!(blake3 = %b3, error = %e, "cannot unpin in the object store");
            }
        });
    }
}

/// One blob's publication ([`App::publish_later`]): a worker that retries with backoff
/// until it succeeds, the app closes, or the instance shuts down (the next start publishes
/// what is left).
struct Publication {
    app: std::sync::Weak<App>,
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
        let Some(app) = self.app.upgrade() else {
            return Ok(State::Done);
        };
        let b3 = &self.blake3;
        // A failure is logged by the runner; the local copy stays.
        app.publish_once(b3).await?;
        drop(permit);
        let tier = app.tier.as_ref().expect("publishing needs a tier");
        let mut publishing = tier.publishing.lock();
        if publishing.get(b3) == Some(&true) {
            // A URL was bound meanwhile: publish again.
            publishing.insert(b3.clone(), false);
            return Ok(State::Busy);
        }
        publishing.remove(b3);
        drop(publishing);
        tier.published.notify_waiters();
        Ok(State::Done)
    }

    async fn wait_for_work(&mut self) {}

    /// One second, doubling up to about two minutes.
    fn retry_after(&self, errors: u32) -> Duration {
        crate::fill::backoff(Duration::from_secs(1), errors.min(7))
    }
}

/// Ends a refill claim however the copy ends.
struct Release(Arc<App>, String);

impl Drop for Release {
    fn drop(&mut self) {
        if let Some(tier) = &self.0.tier {
            tier.refilling.lock().remove(&self.1);
        }
    }
}
