//! The index: sled trees mapping URLs and checksums to blobs, with an in-memory LRU in front.
//!
//! No sled type leaves this module. Values are JSON (small, debuggable, forward-compatible
//! with `#[serde(default)]`); tree names carry a version so a future layout can live beside
//! this one. The index is a rebuildable view: the blob files and the audit journal are the
//! durable truth.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use crate::bounded::BoundedLru;
use crate::store::Algo;

mod meta;
mod records;

pub use meta::{BlobMeta, Origin, Placement};
pub use records::{UrlEntry, UrlRecord};

/// Errors of the index.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("index database at {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: sled::Error,
    },
    #[error("index database: {0}")]
    Db(#[from] sled::Error),
    #[error("index record {key} is unreadable: {source}")]
    Corrupt {
        key: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Bytes of URL entries kept in memory at most, whatever `cache.memory_entries` says: a URL
/// and upstream's header values may be kilobytes long each.
pub const MEMORY_BYTES: usize = 64 << 20;

/// Totals for `/api/v1/stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexStats {
    pub blobs: u64,
    pub bytes: u64,
    pub urls: u64,
}

/// The typed index over sled.
pub struct Index {
    db: sled::Db,
    blobs: sled::Tree,
    urls: sled::Tree,
    md5: sled::Tree,
    sha256: sled::Tree,
    sha512: sled::Tree,
    /// blake3 ++ url -> (), so a blob's URLs are one prefix scan.
    blob_urls: sled::Tree,
    memory: Mutex<BoundedLru<Arc<UrlEntry>>>,
    /// Reads not yet written to sled: blake3 -> (count, last access). Batched so that a hit
    /// never costs an index write.
    access: Mutex<HashMap<String, (u64, i64)>>,
    n_blobs: AtomicU64,
    n_bytes: AtomicU64,
    n_urls: AtomicU64,
    /// Whether [`TOTALS_KEY`] holds the totals: the first change after
    /// [`Index::save_totals`] removes it (before the change is written).
    totals_saved: Mutex<bool>,
}

/// Key (in sled's default tree) of the totals saved at a clean shutdown, so that the next
/// start need not count every blob record (4 s at 1,000,000 blobs). Taken, durably, at
/// open: after a crash there are none and the totals are counted again.
const TOTALS_KEY: &[u8] = b"totals/v1";

/// How long to wait for another process (or a previous instance) to release the index.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl IndexError {
    /// Another process holds the index (not a reason to rebuild it).
    pub fn is_locked(&self) -> bool {
        matches!(self, IndexError::Open { source, .. } if is_lock_error(source))
    }
}

fn is_lock_error(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}

/// sled's page cache; its default (1 GiB) is not a memory bound we want. The LRU of
/// `cache.memory_entries` in front already holds the hot entries, and sled uses about twice
/// this figure beyond its own baseline: with 100,000 blobs, 64 MiB made a process of 135 MiB
/// after start-up, 16 MiB one of 90 MiB (`scripts/bench.sh`, step 6).
const SLED_CACHE_BYTES: u64 = 16 * 1024 * 1024;

impl Index {
    /// Open (or create) the index in `dir`. Fails if another process holds it.
    pub fn open(dir: &Path, memory_entries: usize) -> Result<Index, IndexError> {
        let config = sled::Config::new()
            .path(dir)
            .cache_capacity(SLED_CACHE_BYTES)
            // No background flusher thread: it would keep the database (and its lock) alive
            // after drop, and we flush explicitly after every binding anyway.
            .flush_every_ms(None);
        // A previous owner that is just exiting (a restart) releases the lock shortly; another
        // live process does not, and then the error names the directory.
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        let db = loop {
            match config.open() {
                Ok(db) => break db,
                Err(e) if is_lock_error(&e) && std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(source) => {
                    return Err(IndexError::Open {
                        path: dir.display().to_string(),
                        source,
                    });
                }
            }
        };
        let tree = |name: &str| db.open_tree(name);
        let index = Index {
            blobs: tree("blobs/v1")?,
            urls: tree("urls/v1")?,
            md5: tree("md5/v1")?,
            sha256: tree("sha256/v1")?,
            sha512: tree("sha512/v1")?,
            blob_urls: tree("blob_urls/v1")?,
            db,
            memory: Mutex::new(BoundedLru::new(memory_entries, MEMORY_BYTES)),
            access: Mutex::new(HashMap::new()),
            n_blobs: AtomicU64::new(0),
            n_bytes: AtomicU64::new(0),
            n_urls: AtomicU64::new(0),
            totals_saved: Mutex::new(false),
        };
        let saved = index.db.remove(TOTALS_KEY)?;
        match saved.and_then(|v| serde_json::from_slice::<IndexStats>(&v).ok()) {
            Some(t) => {
                index.n_blobs.store(t.blobs, Ordering::Relaxed);
                index.n_bytes.store(t.bytes, Ordering::Relaxed);
                index.n_urls.store(t.urls, Ordering::Relaxed);
                // Gone for good before anything changes: a crash from here on recounts.
                index.db.flush()?;
            }
            None => index.recount()?,
        }
        Ok(index)
    }

    /// Save the totals for the next start (at a clean shutdown, after the last change; a
    /// later change takes them back). Flushes.
    pub fn save_totals(&self) -> Result<(), IndexError> {
        self.flush_access()?;
        let mut saved = self.totals_saved.lock();
        let totals = serde_json::to_vec(&self.stats()).expect("serializable");
        self.db.insert(TOTALS_KEY, totals)?;
        self.db.flush()?;
        *saved = true;
        Ok(())
    }

    /// Before a change of the totals: forget the saved ones (sled writes in order, so the
    /// removal is durable whenever the change is).
    fn totals_change(&self) -> Result<(), IndexError> {
        let mut saved = self.totals_saved.lock();
        if *saved {
            self.db.remove(TOTALS_KEY)?;
            *saved = false;
        }
        Ok(())
    }

    fn recount(&self) -> Result<(), IndexError> {
        let (mut blobs, mut bytes) = (0, 0);
        for item in self.blobs.iter() {
            let (k, v) = item?;
            let meta: meta::Sizing = decode(&k, &v)?;
            let placement = meta.placement();
            if !placement.is_evicted() {
                blobs += 1;
            }
            if placement.is_local() {
                bytes += meta.size;
            }
        }
        self.n_blobs.store(blobs, Ordering::Relaxed);
        self.n_bytes.store(bytes, Ordering::Relaxed);
        self.n_urls.store(self.urls.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Entries and bytes of the in-memory URL cache.
    pub fn memory_size(&self) -> (usize, usize) {
        let m = self.memory.lock();
        (m.len(), m.bytes())
    }

    /// The blob bound to a normalized URL.
    pub fn url(&self, url: &str) -> Result<Option<Arc<UrlEntry>>, IndexError> {
        if let Some(hit) = self.memory.lock().get(url) {
            return Ok(Some(hit.clone()));
        }
        let Some(v) = self.urls.get(url.as_bytes())? else {
            return Ok(None);
        };
        let record: UrlRecord = decode(url.as_bytes(), &v)?;
        let Some(blob) = self.blob(&record.blake3)? else {
            return Ok(None);
        };
        let entry = Arc::new(UrlEntry { record, blob });
        let bytes = entry.bytes();
        self.memory.lock().put(url.to_owned(), entry.clone(), bytes);
        Ok(Some(entry))
    }

    /// A blob by its BLAKE3 (lowercase hex), with reads not yet flushed folded in.
    pub fn blob(&self, blake3: &str) -> Result<Option<BlobMeta>, IndexError> {
        let Some(key) = hex_key(blake3) else {
            return Ok(None);
        };
        let Some(v) = self.blobs.get(&key)? else {
            return Ok(None);
        };
        let mut meta: BlobMeta = decode(&key, &v)?;
        if let Some(&(count, last)) = self.access.lock().get(blake3) {
            meta.access_count += count;
            meta.last_access = meta.last_access.max(last);
        }
        Ok(Some(meta))
    }

    /// A blob by any of its checksums (lowercase hex).
    pub fn by_checksum(&self, algo: Algo, hex: &str) -> Result<Option<BlobMeta>, IndexError> {
        let tree = match algo {
            Algo::Blake3 => return self.blob(hex),
            Algo::Md5 => &self.md5,
            Algo::Sha256 => &self.sha256,
            Algo::Sha512 => &self.sha512,
        };
        let Some(key) = hex_key(hex) else {
            return Ok(None);
        };
        match tree.get(key)? {
            Some(b3) => self.blob(&hex::encode(b3)),
            None => Ok(None),
        }
    }

    /// Every URL bound to a blob.
    pub fn urls_of(&self, blake3: &str) -> Result<Vec<String>, IndexError> {
        let Some(prefix) = hex_key(blake3) else {
            return Ok(Vec::new());
        };
        let mut urls = Vec::new();
        for item in self.blob_urls.scan_prefix(&prefix) {
            let (k, _) = item?;
            urls.push(String::from_utf8_lossy(&k[prefix.len()..]).into_owned());
        }
        Ok(urls)
    }

    /// Record a blob (if new) and bind `record.url` to it, in one transaction.
    /// An existing blob keeps its metadata (first_seen, origin, pins).
    pub fn bind(&self, blob: &BlobMeta, record: &UrlRecord) -> Result<(), IndexError> {
        debug_assert_eq!(blob.blake3(), record.blake3);
        let b3 = hex_key(blob.blake3()).expect("blob digests are valid hex");
        let rec_json = serde_json::to_vec(record).expect("serializable");
        let url = record.url.as_bytes();
        let link = [b3.as_slice(), url].concat();
        self.totals_change()?;
        let (new_blob, new_url) = (
            &self.blobs,
            &self.urls,
            &self.md5,
            &self.sha256,
            &self.sha512,
            &self.blob_urls,
        )
            .transaction(|(blobs, urls, md5, sha256, sha512, blob_urls)| {
                let new_blob = put_blob(blobs, md5, sha256, sha512, &b3, blob)?;
                let old = urls.insert(url, rec_json.as_slice())?;
                if let Some(old) = &old {
                    // Rebinding: unlink the URL from the blob it pointed to before.
                    let old: UrlRecord =
                        serde_json::from_slice(old).map_err(ConflictableTransactionError::Abort)?;
                    if let Some(old_b3) = hex_key(&old.blake3) {
                        blob_urls.remove([old_b3.as_slice(), url].concat())?;
                    }
                }
                blob_urls.insert(link.as_slice(), &[])?;
                Ok((new_blob, old.is_none()))
            })
            .map_err(|e| tx_error(e, &record.url))?;
        if new_blob {
            self.count_new(blob);
        }
        if new_url {
            self.n_urls.fetch_add(1, Ordering::Relaxed);
        }
        self.memory.lock().pop(&record.url);
        Ok(())
    }

    /// Record a blob without binding any URL to it (an upload without a URL). Returns
    /// whether it is newly stored; an existing blob keeps its metadata.
    pub fn insert_blob(&self, blob: &BlobMeta) -> Result<bool, IndexError> {
        let b3 = hex_key(blob.blake3()).expect("blob digests are valid hex");
        self.totals_change()?;
        let new = (&self.blobs, &self.md5, &self.sha256, &self.sha512)
            .transaction(|(blobs, md5, sha256, sha512)| {
                put_blob(blobs, md5, sha256, sha512, &b3, blob)
            })
            .map_err(|e| tx_error(e, blob.blake3()))?;
        if new {
            self.count_new(blob);
        }
        Ok(new)
    }

    fn count_new(&self, blob: &BlobMeta) {
        self.n_blobs.fetch_add(1, Ordering::Relaxed);
        if blob.is_local() {
            self.n_bytes.fetch_add(blob.size, Ordering::Relaxed);
        }
    }

    /// Mark a blob evicted: its URL bindings go (those URLs are misses again), its metadata
    /// and the list of URLs it was served under stay for lookups and audits.
    pub fn evict(&self, blake3: &str) -> Result<Option<BlobMeta>, IndexError> {
        let Some(mut meta) = self.blob(blake3)? else {
            return Ok(None);
        };
        if !meta.is_stored() {
            return Ok(Some(meta));
        }
        let urls = self.urls_of(blake3)?;
        let b3 = hex_key(blake3).expect("validated by blob()");
        let was_local = meta.is_local();
        meta.placement = Placement::Evicted;
        self.totals_change()?;
        let json = serde_json::to_vec(&meta).expect("serializable");
        let unbound = (&self.blobs, &self.urls)
            .transaction(|(blobs, url_tree)| {
                blobs.insert(b3.as_slice(), json.as_slice())?;
                let mut unbound = 0u64;
                for url in &urls {
                    // Only bindings that still point here (a URL may have been rebound).
                    if let Some(v) = url_tree.get(url.as_bytes())? {
                        let rec: UrlRecord = serde_json::from_slice(&v)
                            .map_err(ConflictableTransactionError::Abort)?;
                        if rec.blake3 == blake3 {
                            url_tree.remove(url.as_bytes())?;
                            unbound += 1;
                        }
                    }
                }
                Ok::<_, ConflictableTransactionError<serde_json::Error>>(unbound)
            })
            .map_err(|e| tx_error(e, blake3))?;
        self.n_blobs.fetch_sub(1, Ordering::Relaxed);
        if was_local {
            self.n_bytes.fetch_sub(meta.size, Ordering::Relaxed);
        }
        self.n_urls.fetch_sub(unbound, Ordering::Relaxed);
        let mut memory = self.memory.lock();
        for url in &urls {
            memory.pop(url);
        }
        drop(memory);
        self.access.lock().remove(blake3);
        Ok(Some(meta))
    }

    /// Visit the stored (not evicted) blobs in blake3 order, starting after `after` (or at
    /// the first); `visit` returns `false` to stop. One at a time: memory stays flat however
    /// many blobs there are.
    pub fn visit_stored_blobs<E: From<IndexError>>(
        &self,
        after: Option<&str>,
        mut visit: impl FnMut(BlobMeta) -> Result<bool, E>,
    ) -> Result<(), E> {
        let iter = match after.and_then(hex_key) {
            Some(key) => self
                .blobs
                .range::<Vec<u8>, _>((std::ops::Bound::Excluded(key), std::ops::Bound::Unbounded)),
            None => self.blobs.iter(),
        };
        for item in iter {
            let (k, v) = item.map_err(IndexError::from)?;
            let meta: BlobMeta = decode(&k, &v)?;
            if meta.is_stored() && !visit(meta)? {
                break;
            }
        }
        Ok(())
    }

    /// Pin or unpin a blob; `None` if there is no such blob.
    pub fn set_pinned(&self, blake3: &str, pinned: bool) -> Result<Option<BlobMeta>, IndexError> {
        let Some(key) = hex_key(blake3) else {
            return Ok(None);
        };
        let updated = self.blobs.update_and_fetch(&key, |old| {
            let mut meta: BlobMeta = serde_json::from_slice(old?).ok()?;
            meta.pinned = pinned;
            Some(serde_json::to_vec(&meta).expect("serializable"))
        })?;
        let Some(v) = updated else {
            return Ok(None);
        };
        // URL entries cached in memory carry the blob's metadata: forget them.
        let urls = self.urls_of(blake3)?;
        let mut memory = self.memory.lock();
        for url in &urls {
            memory.pop(url);
        }
        drop(memory);
        Ok(Some(decode(&key, &v)?))
    }

    /// Move a stored blob between [`Placement::Local`], [`Placement::Replicated`] and
    /// [`Placement::RemoteOnly`]: `change` gets the current placement and returns the new one.
    /// Keeps the byte count of the local tier right. An evicted blob stays evicted (only
    /// [`Index::evict`] evicts, only a new binding revives). `None` if there is no such blob
    /// (or it is evicted). Used by `crate::cache::lifecycle`, which owns the transitions.
    pub fn set_placement(
        &self,
        blake3: &str,
        change: impl Fn(Placement) -> Placement,
    ) -> Result<Option<BlobMeta>, IndexError> {
        let Some(key) = hex_key(blake3) else {
            return Ok(None);
        };
        let mut before = None;
        self.totals_change()?;
        let updated = self.blobs.update_and_fetch(&key, |old| {
            let mut meta: BlobMeta = serde_json::from_slice(old?).ok()?;
            before = Some(meta.placement);
            if meta.is_stored() {
                let next = change(meta.placement);
                debug_assert!(!next.is_evicted(), "only Index::evict evicts");
                if !next.is_evicted() {
                    meta.placement = next;
                }
            }
            Some(serde_json::to_vec(&meta).expect("serializable"))
        })?;
        let (Some(v), Some(before)) = (updated, before) else {
            return Ok(None);
        };
        let after: BlobMeta = decode(&key, &v)?;
        match (before.is_local(), after.is_local()) {
            (true, false) => self.n_bytes.fetch_sub(after.size, Ordering::Relaxed),
            (false, true) if !before.is_evicted() => {
                self.n_bytes.fetch_add(after.size, Ordering::Relaxed)
            }
            _ => 0,
        };
        self.forget_urls_of(blake3)?;
        Ok(after.is_stored().then_some(after))
    }

    /// Drop the in-memory URL entries of a blob (they carry a copy of its metadata).
    fn forget_urls_of(&self, blake3: &str) -> Result<(), IndexError> {
        let urls = self.urls_of(blake3)?;
        let mut memory = self.memory.lock();
        for url in &urls {
            memory.pop(url);
        }
        Ok(())
    }

    /// Remove a blob, its checksum entries and every URL bound to it. Returns its metadata.
    pub fn remove_blob(&self, blake3: &str) -> Result<Option<BlobMeta>, IndexError> {
        let Some(meta) = self.blob(blake3)? else {
            return Ok(None);
        };
        let urls = self.urls_of(blake3)?;
        let b3 = hex_key(blake3).expect("validated by blob()");
        self.totals_change()?;
        (
            &self.blobs,
            &self.urls,
            &self.md5,
            &self.sha256,
            &self.sha512,
            &self.blob_urls,
        )
            .transaction(|(blobs, url_tree, md5, sha256, sha512, blob_urls)| {
                blobs.remove(b3.as_slice())?;
                md5.remove(hex_key(&meta.digests.md5).unwrap())?;
                sha256.remove(hex_key(&meta.digests.sha256).unwrap())?;
                sha512.remove(hex_key(&meta.digests.sha512).unwrap())?;
                for url in &urls {
                    url_tree.remove(url.as_bytes())?;
                    blob_urls.remove([b3.as_slice(), url.as_bytes()].concat())?;
                }
                Ok::<_, ConflictableTransactionError<serde_json::Error>>(())
            })
            .map_err(|e| tx_error(e, blake3))?;
        if meta.is_stored() {
            self.n_blobs.fetch_sub(1, Ordering::Relaxed);
            self.n_urls.fetch_sub(urls.len() as u64, Ordering::Relaxed);
        }
        if meta.is_local() {
            self.n_bytes.fetch_sub(meta.size, Ordering::Relaxed);
        }
        let mut memory = self.memory.lock();
        for url in &urls {
            memory.pop(url);
        }
        drop(memory);
        self.access.lock().remove(blake3);
        Ok(Some(meta))
    }

    /// Note one read of a blob; written to sled by [`Index::flush_access`].
    pub fn record_access(&self, blake3: &str, now: i64) {
        let mut access = self.access.lock();
        match access.get_mut(blake3) {
            Some(e) => {
                e.0 += 1;
                e.1 = e.1.max(now);
            }
            None => {
                access.insert(blake3.to_owned(), (1, now));
            }
        }
    }

    /// Write batched reads to sled. Called periodically and at shutdown. Returns the blobs
    /// read since the last call.
    pub fn flush_access(&self) -> Result<Vec<String>, IndexError> {
        let pending = std::mem::take(&mut *self.access.lock());
        let read: Vec<String> = pending.keys().cloned().collect();
        for (b3, (count, last)) in pending {
            let Some(key) = hex_key(&b3) else { continue };
            self.blobs.update_and_fetch(&key, |old| {
                let mut meta: BlobMeta = serde_json::from_slice(old?).ok()?;
                meta.access_count += count;
                meta.last_access = meta.last_access.max(last);
                Some(serde_json::to_vec(&meta).expect("serializable"))
            })?;
        }
        self.db.flush()?;
        Ok(read)
    }

    /// Drop blobs whose file is gone (with their URLs). Returns how many. A blob the bucket
    /// holds stays (its URLs are still hits), marked as no longer in the local tier.
    pub fn drop_missing(&self, exists: impl Fn(&str) -> bool) -> Result<usize, IndexError> {
        let mut gone = Vec::new();
        let mut remote_only = Vec::new();
        for item in self.blobs.iter() {
            let (k, v) = item?;
            let b3 = hex::encode(&k);
            let meta = decode::<BlobMeta>(&k, &v)?;
            if meta.is_local() && !exists(&b3) {
                if meta.placement.in_bucket() {
                    remote_only.push(b3);
                } else {
                    gone.push(b3);
                }
            }
        }
        for b3 in &remote_only {
            self.set_placement(b3, |_| Placement::RemoteOnly)?;
        }
        for b3 in &gone {
            self.remove_blob(b3)?;
        }
        Ok(gone.len())
    }

    pub fn stats(&self) -> IndexStats {
        IndexStats {
            blobs: self.n_blobs.load(Ordering::Relaxed),
            bytes: self.n_bytes.load(Ordering::Relaxed),
            urls: self.n_urls.load(Ordering::Relaxed),
        }
    }

    /// A cheap read that proves the database answers (`/readyz`).
    pub fn ping(&self) -> Result<(), IndexError> {
        self.urls.first()?;
        Ok(())
    }

    /// Make everything written so far durable. sled 0.34's `flush_async` deadlocks when
    /// called concurrently (spacejam/sled#1308, fixed only on its unreleased main branch), so
    /// this runs the blocking `flush` on tokio's blocking pool.
    pub async fn flush(&self) -> Result<(), IndexError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|e| IndexError::Db(sled::Error::Io(std::io::Error::other(e))))??;
        Ok(())
    }

    /// Blocking variant of [`Index::flush`], for shutdown and offline commands.
    pub fn flush_blocking(&self) -> Result<(), IndexError> {
        self.flush_access()?;
        self.db.flush()?;
        Ok(())
    }
}

/// Inside a transaction: store `blob` if absent, or revive it if it was evicted (keeping
/// its history: first seen, reads, pin). Returns whether it is newly stored.
fn put_blob(
    blobs: &sled::transaction::TransactionalTree,
    md5: &sled::transaction::TransactionalTree,
    sha256: &sled::transaction::TransactionalTree,
    sha512: &sled::transaction::TransactionalTree,
    b3: &[u8],
    blob: &BlobMeta,
) -> Result<bool, ConflictableTransactionError<serde_json::Error>> {
    let stored = match blobs.get(b3)? {
        None => blob.clone(),
        Some(old) => {
            let old: BlobMeta =
                serde_json::from_slice(&old).map_err(ConflictableTransactionError::Abort)?;
            if old.is_stored() {
                return Ok(false);
            }
            BlobMeta {
                first_seen: old.first_seen,
                access_count: old.access_count,
                pinned: old.pinned || blob.pinned,
                origin: old.origin,
                placement: Placement::Local,
                ..blob.clone()
            }
        }
    };
    blobs.insert(b3, serde_json::to_vec(&stored).expect("serializable"))?;
    md5.insert(hex_key(&blob.digests.md5).unwrap(), b3)?;
    sha256.insert(hex_key(&blob.digests.sha256).unwrap(), b3)?;
    sha512.insert(hex_key(&blob.digests.sha512).unwrap(), b3)?;
    Ok(true)
}

fn hex_key(hex: &str) -> Option<Vec<u8>> {
    hex::decode(hex).ok()
}

fn decode<T: for<'de> Deserialize<'de>>(key: &[u8], v: &[u8]) -> Result<T, IndexError> {
    serde_json::from_slice(v).map_err(|source| IndexError::Corrupt {
        key: String::from_utf8(key.to_vec()).unwrap_or_else(|_| hex::encode(key)),
        source,
    })
}

fn tx_error(e: TransactionError<serde_json::Error>, key: &str) -> IndexError {
    match e {
        TransactionError::Storage(e) => IndexError::Db(e),
        TransactionError::Abort(source) => IndexError::Corrupt {
            key: key.to_owned(),
            source,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Digester;

    fn meta(data: &[u8]) -> BlobMeta {
        let mut d = Digester::new();
        d.update(data);
        BlobMeta::new(d.finish(), data.len() as u64, Origin::Upstream, 1)
    }

    fn record(url: &str, b: &BlobMeta) -> UrlRecord {
        UrlRecord {
            url: url.into(),
            blake3: b.blake3().into(),
            status: 200,
            content_type: None,
            etag: None,
            last_modified: None,
            final_url: url.into(),
            fetched_at: 1,
            instance: "t".into(),
        }
    }

    /// The blake3s `visit_stored_blobs` yields after `after`.
    fn stored(idx: &Index, after: Option<&str>) -> Vec<String> {
        let mut out = Vec::new();
        idx.visit_stored_blobs(after, |m| {
            out.push(m.digests.blake3);
            Ok::<_, IndexError>(true)
        })
        .unwrap();
        out
    }

    /// sled 0.34's `flush_async` deadlocks when called concurrently on one database
    /// (spacejam/sled#1308); every commit flushes, so fills finishing together did exactly
    /// that. On the old code this test hangs (nextest's slow-timeout ends it).
    #[test]
    fn concurrent_flushes_after_concurrent_binds_all_finish() {
        let dir = tempfile::tempdir().unwrap();
        let idx = std::sync::Arc::new(Index::open(dir.path(), 10).unwrap());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            for round in 0..20u32 {
                let tasks: Vec<_> = (0..64u32)
                    .map(|i| {
                        let idx = idx.clone();
                        tokio::spawn(async move {
                            let b = meta(format!("{round}-{i}").as_bytes());
                            idx.bind(&b, &record(&format!("http://a/{round}/{i}"), &b))
                                .unwrap();
                            idx.flush().await.unwrap();
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.unwrap();
                }
            }
        });
        assert_eq!(idx.stats().blobs, 20 * 64);
    }

    #[test]
    fn visiting_stored_blobs_in_order_from_a_cursor_and_stopping() {
        let dir = tempfile::tempdir().unwrap();
        let idx = Index::open(dir.path(), 10).unwrap();
        let mut all: Vec<String> = (0..5u8)
            .map(|i| {
                let b = meta(&[i; 3]);
                idx.bind(&b, &record(&format!("http://a/{i}"), &b)).unwrap();
                b.digests.blake3
            })
            .collect();
        all.sort();
        assert_eq!(stored(&idx, None), all, "blake3 order");
        assert_eq!(
            stored(&idx, Some(&all[1])),
            all[2..],
            "strictly after the cursor"
        );
        assert!(stored(&idx, Some(&all[4])).is_empty());
        idx.evict(&all[3]).unwrap();
        assert_eq!(
            stored(&idx, Some(&all[1])),
            [all[2].clone(), all[4].clone()],
            "evicted blobs are skipped"
        );
        let mut seen = 0;
        idx.visit_stored_blobs(None, |_| {
            seen += 1;
            Ok::<_, IndexError>(seen < 2)
        })
        .unwrap();
        assert_eq!(seen, 2, "false stops the walk");
    }

    #[test]
    fn bind_lookup_remove() {
        let dir = tempfile::tempdir().unwrap();
        let idx = Index::open(dir.path(), 10).unwrap();
        let b = meta(b"abc");
        idx.bind(&b, &record("http://a/x", &b)).unwrap();
        idx.bind(&b, &record("http://a/y", &b)).unwrap();
        assert_eq!(
            idx.stats(),
            IndexStats {
                blobs: 1,
                bytes: 3,
                urls: 2
            }
        );
        assert_eq!(idx.url("http://a/x").unwrap().unwrap().blob, b);
        let by_md5 = idx.by_checksum(Algo::Md5, &b.digests.md5).unwrap().unwrap();
        assert_eq!(by_md5.blake3(), b.blake3());
        let mut urls = idx.urls_of(b.blake3()).unwrap();
        urls.sort();
        assert_eq!(urls, ["http://a/x", "http://a/y"]);

        idx.record_access(b.blake3(), 50);
        idx.record_access(b.blake3(), 40);
        assert_eq!(idx.blob(b.blake3()).unwrap().unwrap().access_count, 2);
        idx.flush_access().unwrap();
        let m = idx.blob(b.blake3()).unwrap().unwrap();
        assert_eq!((m.access_count, m.last_access), (2, 50));

        idx.remove_blob(b.blake3()).unwrap();
        assert!(idx.url("http://a/x").unwrap().is_none());
        assert!(
            idx.by_checksum(Algo::Md5, &b.digests.md5)
                .unwrap()
                .is_none()
        );
        assert_eq!(idx.stats(), IndexStats::default());
    }

    #[test]
    fn rebind_moves_url_and_counts_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (meta(b"a"), meta(b"bb"));
        {
            let idx = Index::open(dir.path(), 10).unwrap();
            idx.bind(&a, &record("http://h/u", &a)).unwrap();
            idx.bind(&b, &record("http://h/u", &b)).unwrap();
            assert!(idx.urls_of(a.blake3()).unwrap().is_empty());
            assert_eq!(idx.url("http://h/u").unwrap().unwrap().blob, b);
            idx.flush_blocking().unwrap();
        }
        let idx = Index::open(dir.path(), 10).unwrap();
        assert_eq!(
            idx.stats(),
            IndexStats {
                blobs: 2,
                bytes: 3,
                urls: 1
            }
        );
        assert_eq!(idx.drop_missing(|h| h == b.blake3()).unwrap(), 1);
        assert_eq!(
            idx.stats(),
            IndexStats {
                blobs: 1,
                bytes: 2,
                urls: 1
            }
        );
    }

    #[test]
    fn evicted_blobs_keep_history_and_revive_when_bound_again() {
        let dir = tempfile::tempdir().unwrap();
        let idx = Index::open(dir.path(), 10).unwrap();
        let b = meta(b"abc");
        idx.bind(&b, &record("http://a/x", &b)).unwrap();
        idx.record_access(b.blake3(), 99);
        idx.flush_access().unwrap();
        let evicted = idx.evict(b.blake3()).unwrap().unwrap();
        assert_eq!(evicted.placement, Placement::Evicted);
        assert!(
            idx.url("http://a/x").unwrap().is_none(),
            "the URL is a miss again"
        );
        assert_eq!(
            idx.urls_of(b.blake3()).unwrap(),
            ["http://a/x"],
            "history stays"
        );
        assert_eq!(idx.stats(), IndexStats::default());
        assert!(stored(&idx, None).is_empty());
        assert_eq!(
            idx.drop_missing(|_| false).unwrap(),
            0,
            "evicted blobs have no file"
        );
        // Fetched again: revived with its history.
        let mut again = meta(b"abc");
        again.first_seen = 500;
        idx.bind(&again, &record("http://a/x", &again)).unwrap();
        let m = idx.blob(b.blake3()).unwrap().unwrap();
        assert_eq!(m.placement, Placement::Local);
        assert_eq!((m.first_seen, m.access_count), (1, 1));
        assert_eq!(
            idx.stats(),
            IndexStats {
                blobs: 1,
                bytes: 3,
                urls: 1
            }
        );
    }

    #[test]
    fn blob_records_of_earlier_versions_read_as_placements_and_are_written_the_same_way() {
        let b = meta(b"abc");
        let d = &b.digests;
        let old = |flags: &str| {
            format!(
                r#"{{"md5":"{}","sha256":"{}","sha512":"{}","blake3":"{}","size":3,"content_type":null,"first_seen":1,"last_access":1,"access_count":0,"origin":"upstream","pinned":false{flags}}}"#,
                d.md5, d.sha256, d.sha512, d.blake3
            )
        };
        for (flags, placement) in [
            // The first release wrote no placement at all.
            ("", Placement::Local),
            (
                r#","evicted":false,"remote":false,"remote_only":false"#,
                Placement::Local,
            ),
            (
                r#","evicted":false,"remote":true,"remote_only":false"#,
                Placement::Replicated,
            ),
            (
                r#","evicted":false,"remote":true,"remote_only":true"#,
                Placement::RemoteOnly,
            ),
            (
                r#","evicted":true,"remote":false,"remote_only":false"#,
                Placement::Evicted,
            ),
            (r#","evicted":true"#, Placement::Evicted),
        ] {
            let read: BlobMeta = serde_json::from_str(&old(flags)).unwrap();
            assert_eq!(read.placement, placement, "{flags}");
            assert_eq!(read.digests, b.digests);
            // Written back as the earlier versions wrote it (they share buckets with us).
            let written: serde_json::Value = serde_json::to_value(&read).unwrap();
            let (evicted, remote, remote_only) = placement.to_flags();
            assert_eq!(written["evicted"], evicted);
            assert_eq!(written["remote"], remote);
            assert_eq!(written["remote_only"], remote_only);
            assert_eq!(written["blake3"], d.blake3.as_str());
            assert!(written.get("placement").is_none());
            let again: BlobMeta = serde_json::from_value(written).unwrap();
            assert_eq!(again, read);
        }
    }

    #[test]
    fn placement_changes_keep_the_local_byte_count() {
        let dir = tempfile::tempdir().unwrap();
        let idx = Index::open(dir.path(), 10).unwrap();
        let b = meta(b"abcd");
        idx.bind(&b, &record("http://a/x", &b)).unwrap();
        let bytes = |idx: &Index| idx.stats().bytes;
        assert_eq!(bytes(&idx), 4);
        idx.set_placement(b.blake3(), |_| Placement::Replicated)
            .unwrap();
        assert_eq!(bytes(&idx), 4);
        let m = idx
            .set_placement(b.blake3(), |_| Placement::RemoteOnly)
            .unwrap()
            .unwrap();
        assert_eq!((m.placement, bytes(&idx)), (Placement::RemoteOnly, 0));
        assert_eq!(
            idx.url("http://a/x").unwrap().unwrap().blob.placement,
            Placement::RemoteOnly,
            "the cached URL entry follows"
        );
        idx.set_placement(b.blake3(), |_| Placement::Replicated)
            .unwrap();
        assert_eq!(bytes(&idx), 4);
        idx.evict(b.blake3()).unwrap();
        assert_eq!(bytes(&idx), 0);
        assert!(
            idx.set_placement(b.blake3(), |_| Placement::Local)
                .unwrap()
                .is_none(),
            "an evicted blob stays evicted"
        );
        assert_eq!(bytes(&idx), 0);
        assert!(
            idx.set_placement(&"0".repeat(64), |_| Placement::Local)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn totals_saved_at_a_clean_shutdown_are_used_once_and_a_later_change_drops_them() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (meta(b"a"), meta(b"bb"));
        let one = |blobs, bytes| IndexStats {
            blobs,
            bytes,
            urls: blobs,
        };
        {
            let idx = Index::open(dir.path(), 10).unwrap();
            idx.bind(&a, &record("http://h/a", &a)).unwrap();
            idx.save_totals().unwrap();
            // Saved totals are taken as they are, without counting: made recognizable.
            idx.db
                .insert(TOTALS_KEY, br#"{"blobs":7,"bytes":70,"urls":7}"#.to_vec())
                .unwrap();
            idx.db.flush().unwrap();
        }
        let idx = Index::open(dir.path(), 10).unwrap();
        assert_eq!(idx.stats(), one(7, 70), "saved totals are used");
        drop(idx); // as a crash: no totals saved
        let idx = Index::open(dir.path(), 10).unwrap();
        assert_eq!(idx.stats(), one(1, 1), "taken at open: counted again");
        idx.save_totals().unwrap();
        // A change after the save (a late fill), then a crash: the totals must not be used.
        idx.bind(&b, &record("http://h/b", &b)).unwrap();
        idx.flush_blocking().unwrap();
        drop(idx);
        let idx = Index::open(dir.path(), 10).unwrap();
        assert_eq!(idx.stats(), one(2, 3));
        idx.save_totals().unwrap();
        drop(idx);
        let idx = Index::open(dir.path(), 10).unwrap();
        assert_eq!(idx.stats(), one(2, 3), "saved after the last change");
    }

    #[test]
    fn counting_at_open_follows_every_placement() {
        let dir = tempfile::tempdir().unwrap();
        let before = {
            let idx = Index::open(dir.path(), 10).unwrap();
            let blobs: Vec<_> = (1..=4u8).map(|i| meta(&vec![i; i as usize])).collect();
            for (i, b) in blobs.iter().enumerate() {
                idx.bind(b, &record(&format!("http://h/{i}"), b)).unwrap();
            }
            idx.set_placement(blobs[1].blake3(), |_| Placement::Replicated)
                .unwrap();
            idx.set_placement(blobs[2].blake3(), |_| Placement::RemoteOnly)
                .unwrap();
            idx.evict(blobs[3].blake3()).unwrap();
            idx.flush_blocking().unwrap();
            idx.stats()
        };
        assert_eq!(
            before,
            IndexStats {
                blobs: 3,
                bytes: 3,
                urls: 3
            }
        );
        let idx = Index::open(dir.path(), 10).unwrap();
        assert_eq!(idx.stats(), before, "counted again, the same");
    }

    #[test]
    fn second_open_of_same_dir_fails() {
        let dir = tempfile::tempdir().unwrap();
        let _idx = Index::open(dir.path(), 10).unwrap();
        assert!(matches!(
            Index::open(dir.path(), 10),
            Err(IndexError::Open { .. })
        ));
    }
}
