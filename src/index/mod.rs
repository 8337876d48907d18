//! The index: redb tables mapping URLs and checksums to blobs, with an in-memory LRU in front.
//!
//! No redb (or sled) type leaves this module. Values are JSON (small, debuggable, forward-
//! compatible with `#[serde(default)]`); table names carry a version so a future layout can
//! live beside this one. The index is a rebuildable view: the blob files and the audit
//! journal are the durable truth. An index written by an earlier version (sled 0.34) is
//! migrated at the first open (`migrate.rs`).

use std::collections::HashMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use redb::{ReadableTable, ReadableTableMetadata};
use serde::{Deserialize, Serialize};

use crate::bounded::BoundedLru;
use crate::store::Algo;

mod meta;
mod migrate;
mod records;
mod store;

use meta::Reads;
pub use meta::{BlobMeta, Origin, Placement};
pub use records::{UrlEntry, UrlRecord};
use store::{BLOB_URLS, BLOBS, READS, Store, TOTALS_KEY, Tables, URLS, sum_key};

/// Errors of the index.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("index database at {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: Box<redb::DatabaseError>,
    },
    #[error("index database: {0}")]
    Db(#[source] Box<redb::Error>),
    #[error("index record {key} is unreadable: {source}")]
    Corrupt {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("the index of an earlier version at {path}: {source}")]
    Sled {
        path: String,
        #[source]
        source: sled::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

macro_rules! redb_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for IndexError {
            fn from(e: $t) -> IndexError {
                IndexError::Db(Box::new(e.into()))
            }
        }
    )*};
}
redb_errors!(
    redb::Error,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// Bytes of URL entries kept in memory at most, whatever `cache.memory_entries` says: a URL
/// and upstream's header values may be kilobytes long each.
pub const MEMORY_BYTES: usize = 64 << 20;

/// Blob records read per read transaction by the walks over every blob: a short-lived
/// transaction does not hold back the pages writes meanwhile free.
const WALK_CHUNK: usize = 256;

/// A blob record's key and value, copied out of a read transaction, with its unfolded reads.
type Record = (Vec<u8>, Vec<u8>, Option<Reads>);

/// A key and its value, as a table's range yields them.
type Row<'a> = (
    redb::AccessGuard<'a, &'static [u8]>,
    redb::AccessGuard<'a, &'static [u8]>,
);

/// What evicting a stored blob changed: whether its bytes were local, the URLs it was
/// served under, and how many of them were unbound.
struct Unbound {
    was_local: bool,
    urls: Vec<String>,
    n: u64,
}

/// Totals for `/api/v1/stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexStats {
    pub blobs: u64,
    pub bytes: u64,
    pub urls: u64,
}

/// The typed index over redb.
pub struct Index {
    store: Store,
    memory: Mutex<BoundedLru<Arc<UrlEntry>>>,
    /// Reads not yet written to the database, by blake3. Batched so that a hit never costs
    /// an index write.
    access: Mutex<HashMap<String, Reads>>,
    n_blobs: AtomicU64,
    n_bytes: AtomicU64,
    n_urls: AtomicU64,
}

impl IndexError {
    /// Another process holds the index (not a reason to rebuild it).
    pub fn is_locked(&self) -> bool {
        match self {
            IndexError::Open { source, .. } => {
                matches!(**source, redb::DatabaseError::DatabaseAlreadyOpen)
            }
            IndexError::Sled { source, .. } => migrate::is_lock_error(source),
            _ => false,
        }
    }
}

impl Index {
    /// Open (or create) the index in `dir`, migrating an index of an earlier version first.
    /// Fails if another process holds it.
    pub fn open(dir: &Path, memory_entries: usize) -> Result<Index, IndexError> {
        std::fs::create_dir_all(dir).map_err(|source| IndexError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        migrate::from_sled_if_any(dir)?;
        let store = Store::open(dir)?;
        migrate::remove_sled_leftovers(dir);
        let index = Index {
            store,
            memory: Mutex::new(BoundedLru::new(memory_entries, MEMORY_BYTES)),
            access: Mutex::new(HashMap::new()),
            n_blobs: AtomicU64::new(0),
            n_bytes: AtomicU64::new(0),
            n_urls: AtomicU64::new(0),
        };
        let saved = {
            let tx = index.store.db.begin_read()?;
            let meta = tx.open_table(store::META)?;
            meta.get(TOTALS_KEY)?.map(|v| v.value().to_vec())
        };
        match saved.and_then(|v| serde_json::from_slice::<IndexStats>(&v).ok()) {
            Some(t) => {
                index.n_blobs.store(t.blobs, Ordering::Relaxed);
                index.n_bytes.store(t.bytes, Ordering::Relaxed);
                index.n_urls.store(t.urls, Ordering::Relaxed);
                // Gone for good before anything changes: a crash from here on recounts.
                index.store.put_meta_durably(TOTALS_KEY, None)?;
            }
            None => index.recount()?,
        }
        Ok(index)
    }

    /// Save the totals for the next start (at a clean shutdown, after the last change; a
    /// later change takes them back). Durable, with everything before.
    pub fn save_totals(&self) -> Result<(), IndexError> {
        self.flush_access()?;
        let totals = serde_json::to_vec(&self.stats()).expect("serializable");
        self.store.put_meta_durably(TOTALS_KEY, Some(&totals))
    }

    /// A write transaction that changes about `changes` records ([`Store::write`]); one that
    /// changes the totals first removes the saved ones (in the same transaction, so the
    /// removal is durable whenever the change is).
    fn write<T>(
        &self,
        changes_totals: bool,
        changes: usize,
        f: impl FnOnce(&mut Tables<'_>) -> Result<T, IndexError>,
    ) -> Result<T, IndexError> {
        self.store.write(changes as u64, |w, t| {
            if changes_totals && w.totals_saved {
                t.meta.remove(TOTALS_KEY)?;
                w.totals_saved = false;
            }
            f(t)
        })
    }

    fn recount(&self) -> Result<(), IndexError> {
        let (mut blobs, mut bytes) = (0, 0);
        let tx = self.store.db.begin_read()?;
        for item in tx.open_table(BLOBS)?.iter()? {
            let (k, v) = item?;
            let meta: meta::Sizing = decode(k.value(), v.value())?;
            let placement = meta.placement();
            if !placement.is_evicted() {
                blobs += 1;
            }
            if placement.is_local() {
                bytes += meta.size;
            }
        }
        let urls = tx.open_table(URLS)?.len()?;
        self.n_blobs.store(blobs, Ordering::Relaxed);
        self.n_bytes.store(bytes, Ordering::Relaxed);
        self.n_urls.store(urls, Ordering::Relaxed);
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
        let tx = self.store.db.begin_read()?;
        let Some(v) = tx.open_table(URLS)?.get(url.as_bytes())? else {
            return Ok(None);
        };
        let record: UrlRecord = decode(url.as_bytes(), v.value())?;
        // The hit path needs no read counts: the entry's are its record's (see UrlEntry).
        let Some(blob) = self.blob_in(
            &tx.open_table(BLOBS)?,
            None::<&redb::ReadOnlyTable<_, _>>,
            &record.blake3,
        )?
        else {
            return Ok(None);
        };
        let entry = Arc::new(UrlEntry { record, blob });
        let bytes = entry.bytes();
        self.memory.lock().put(url.to_owned(), entry.clone(), bytes);
        Ok(Some(entry))
    }

    /// A blob by its BLAKE3 (lowercase hex), with reads not yet flushed folded in.
    pub fn blob(&self, blake3: &str) -> Result<Option<BlobMeta>, IndexError> {
        let tx = self.store.db.begin_read()?;
        self.blob_in(&tx.open_table(BLOBS)?, Some(&tx.open_table(READS)?), blake3)
    }

    /// A blob record, with its reads (those in `reads`, when given, and those not yet
    /// flushed) folded in.
    fn blob_in(
        &self,
        blobs: &impl ReadableTable<&'static [u8], &'static [u8]>,
        reads: Option<&impl ReadableTable<&'static [u8], &'static [u8]>>,
        blake3: &str,
    ) -> Result<Option<BlobMeta>, IndexError> {
        let Some(key) = hex_key(blake3) else {
            return Ok(None);
        };
        let Some(v) = blobs.get(key.as_slice())? else {
            return Ok(None);
        };
        let mut meta: BlobMeta = decode(&key, v.value())?;
        if let Some(reads) = reads {
            if let Some(r) = reads_in(reads, &key)? {
                r.fold_into(&mut meta);
            }
            self.fold_access(blake3, &mut meta);
        }
        Ok(Some(meta))
    }

    /// Add the reads of a blob not yet flushed to its stored metadata.
    fn fold_access(&self, blake3: &str, meta: &mut BlobMeta) {
        if let Some(r) = self.access.lock().get(blake3) {
            r.fold_into(meta);
        }
    }

    /// A blob by any of its checksums (lowercase hex).
    pub fn by_checksum(&self, algo: Algo, hex: &str) -> Result<Option<BlobMeta>, IndexError> {
        if algo == Algo::Blake3 {
            return self.blob(hex);
        }
        let Some(digest) = hex_key(hex) else {
            return Ok(None);
        };
        let tx = self.store.db.begin_read()?;
        let Some(b3) = tx
            .open_table(store::SUMS)?
            .get(sum_key(algo, &digest).as_slice())?
        else {
            return Ok(None);
        };
        let reads = tx.open_table(READS)?;
        self.blob_in(
            &tx.open_table(BLOBS)?,
            Some(&reads),
            &hex::encode(b3.value()),
        )
    }

    /// Every URL bound to a blob.
    pub fn urls_of(&self, blake3: &str) -> Result<Vec<String>, IndexError> {
        let tx = self.store.db.begin_read()?;
        urls_of_in(&tx.open_table(BLOB_URLS)?, blake3)
    }

    /// Record a blob (if new) and bind `record.url` to it, in one transaction.
    /// An existing blob keeps its metadata (first_seen, origin, pins).
    pub fn bind(&self, blob: &BlobMeta, record: &UrlRecord) -> Result<(), IndexError> {
        self.bind_all(&[(blob, record)])
    }

    /// [`Index::bind`] for many blobs and URLs, in one write transaction (loading a data
    /// set in bulk: one commit per batch instead of one per blob).
    pub fn bind_all(&self, pairs: &[(&BlobMeta, &UrlRecord)]) -> Result<(), IndexError> {
        // A bind writes the blob, its three checksums, the URL and its link.
        let done = self.write(true, pairs.len() * 6, |t| {
            pairs
                .iter()
                .map(|(blob, record)| bind_in(t, blob, record))
                .collect::<Result<Vec<_>, _>>()
        })?;
        let mut memory = self.memory.lock();
        for ((blob, record), (new_blob, new_url)) in pairs.iter().zip(done) {
            if new_blob {
                self.count_new(blob);
            }
            if new_url {
                self.n_urls.fetch_add(1, Ordering::Relaxed);
            }
            memory.pop(&record.url);
        }
        Ok(())
    }

    /// Record a blob without binding any URL to it (an upload without a URL). Returns
    /// whether it is newly stored; an existing blob keeps its metadata.
    pub fn insert_blob(&self, blob: &BlobMeta) -> Result<bool, IndexError> {
        let b3 = hex_key(blob.blake3()).expect("blob digests are valid hex");
        let new = self.write(true, 4, |t| put_blob(t, &b3, blob))?;
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
        Ok(self.evict_all(&[blake3])?.pop().flatten())
    }

    /// [`Index::evict`] for many blobs, in one write transaction (the sweeper evicts a batch
    /// at a time). Returns each blob's metadata, in order (`None` for an unknown blob).
    pub fn evict_all(&self, blake3s: &[&str]) -> Result<Vec<Option<BlobMeta>>, IndexError> {
        // The blob and (usually) one URL binding.
        let done = self.write(true, blake3s.len() * 2, |t| {
            blake3s
                .iter()
                .map(|b3| self.evict_in(t, b3))
                .collect::<Result<Vec<_>, _>>()
        })?;
        let mut out = Vec::with_capacity(done.len());
        for (blake3, evicted) in blake3s.iter().zip(done) {
            let Some((meta, change)) = evicted else {
                out.push(None);
                continue;
            };
            if let Some(Unbound { was_local, urls, n }) = change {
                self.n_blobs.fetch_sub(1, Ordering::Relaxed);
                if was_local {
                    self.n_bytes.fetch_sub(meta.size, Ordering::Relaxed);
                }
                self.n_urls.fetch_sub(n, Ordering::Relaxed);
                self.forget_urls(&urls);
                self.access.lock().remove(*blake3);
            }
            out.push(Some(meta));
        }
        Ok(out)
    }

    /// Inside a write transaction: mark one blob evicted (with the reads not yet flushed)
    /// and unbind the URLs that still point to it. `None` if there is no such blob; no
    /// [`Unbound`] if it was not stored.
    fn evict_in(
        &self,
        t: &mut Tables<'_>,
        blake3: &str,
    ) -> Result<Option<(BlobMeta, Option<Unbound>)>, IndexError> {
        let Some(key) = hex_key(blake3) else {
            return Ok(None);
        };
        let Some(old) = t.blobs.get(key.as_slice())?.map(|v| v.value().to_vec()) else {
            return Ok(None);
        };
        let mut meta: BlobMeta = decode(&key, &old)?;
        if !meta.is_stored() {
            take_reads(t, &key, &mut meta)?;
            self.fold_access(blake3, &mut meta);
            return Ok(Some((meta, None)));
        }
        let urls = urls_of_in(&t.blob_urls, blake3)?;
        let was_local = meta.is_local();
        meta.placement = Placement::Evicted;
        // The record keeps its reads (the unflushed ones too: the caller drops those).
        take_reads(t, &key, &mut meta)?;
        self.fold_access(blake3, &mut meta);
        let json = serde_json::to_vec(&meta).expect("serializable");
        t.blobs.insert(key.as_slice(), json.as_slice())?;
        let mut n = 0u64;
        for url in &urls {
            // Only bindings that still point here (a URL may have been rebound).
            let rec = match t.urls.get(url.as_bytes())? {
                Some(v) => decode::<UrlRecord>(url.as_bytes(), v.value())?,
                None => continue,
            };
            if rec.blake3 == blake3 {
                t.urls.remove(url.as_bytes())?;
                n += 1;
            }
        }
        Ok(Some((meta, Some(Unbound { was_local, urls, n }))))
    }

    /// Up to [`WALK_CHUNK`] blob records after `after` (or from the first), in one short
    /// read transaction.
    fn blob_chunk(&self, after: Option<&[u8]>) -> Result<Vec<Record>, IndexError> {
        let tx = self.store.db.begin_read()?;
        let blobs = tx.open_table(BLOBS)?;
        let reads = tx.open_table(READS)?;
        let start = || match after {
            Some(key) => (Bound::Excluded(key), Bound::Unbounded),
            None => (Bound::Unbounded, Bound::Unbounded),
        };
        // Both tables are in blake3 order: one pass over each, side by side.
        let mut reads = reads.range::<&[u8]>(start())?.peekable();
        let mut chunk = Vec::with_capacity(WALK_CHUNK);
        for item in blobs.range::<&[u8]>(start())?.take(WALK_CHUNK) {
            let (k, v) = item?;
            let key = k.value().to_vec();
            let mut folded = None;
            // Rows before this key are orphans (their blob is gone): skipped.
            let at_or_before = |r: &Result<Row<'_>, redb::StorageError>| {
                r.as_ref()
                    .map_or(true, |(rk, _)| rk.value() <= key.as_slice())
            };
            while let Some(item) = reads.next_if(at_or_before) {
                let (rk, rv) = item?;
                if rk.value() == key.as_slice() {
                    folded = Some(decode_reads(&key, rv.value())?);
                }
            }
            chunk.push((key, v.value().to_vec(), folded));
        }
        Ok(chunk)
    }

    /// Every blob record (with its flushed reads) in blake3 order after `after` (or from the
    /// first), a chunk at a time; `visit` returns `false` to stop.
    fn walk<E: From<IndexError>>(
        &self,
        after: Option<Vec<u8>>,
        mut visit: impl FnMut(BlobMeta) -> Result<bool, E>,
    ) -> Result<(), E> {
        let mut cursor = after;
        loop {
            let chunk = self.blob_chunk(cursor.as_deref())?;
            let Some((last, _, _)) = chunk.last() else {
                return Ok(());
            };
            let last = last.clone();
            for (k, v, reads) in &chunk {
                let mut meta: BlobMeta = decode(k, v)?;
                if let Some(r) = reads {
                    r.fold_into(&mut meta);
                }
                if !visit(meta)? {
                    return Ok(());
                }
            }
            cursor = Some(last);
        }
    }

    /// Visit the stored (not evicted) blobs in blake3 order, starting after `after` (or at
    /// the first); `visit` returns `false` to stop. A few hundred at a time: memory stays
    /// flat however many blobs there are, and `visit` may change the index.
    pub fn visit_stored_blobs<E: From<IndexError>>(
        &self,
        after: Option<&str>,
        mut visit: impl FnMut(BlobMeta) -> Result<bool, E>,
    ) -> Result<(), E> {
        self.walk(after.and_then(hex_key), |meta| {
            if meta.is_stored() {
                return visit(meta);
            }
            Ok(true)
        })
    }

    /// Read a blob record in a write transaction, let `change` update it, write it back.
    /// `None` if there is no such blob.
    fn update_blob(
        &self,
        blake3: &str,
        changes_totals: bool,
        change: impl FnOnce(&mut BlobMeta),
    ) -> Result<Option<(BlobMeta, BlobMeta)>, IndexError> {
        let Some(key) = hex_key(blake3) else {
            return Ok(None);
        };
        self.write(changes_totals, 1, |t| {
            let Some(before) = t.blobs.get(key.as_slice())?.map(|v| v.value().to_vec()) else {
                return Ok(None);
            };
            let mut before: BlobMeta = decode(&key, &before)?;
            // The record is rewritten anyway: its reads go into it.
            let folded = take_reads(t, &key, &mut before)?;
            let mut after = before.clone();
            change(&mut after);
            if after != before || folded {
                let json = serde_json::to_vec(&after).expect("serializable");
                t.blobs.insert(key.as_slice(), json.as_slice())?;
            }
            Ok(Some((before, after)))
        })
    }

    /// Pin or unpin a blob; `None` if there is no such blob.
    pub fn set_pinned(&self, blake3: &str, pinned: bool) -> Result<Option<BlobMeta>, IndexError> {
        let Some((_, after)) = self.update_blob(blake3, false, |m| m.pinned = pinned)? else {
            return Ok(None);
        };
        // URL entries cached in memory carry the blob's metadata: forget them.
        self.forget_urls_of(blake3)?;
        Ok(Some(after))
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
        let updated = self.update_blob(blake3, true, |meta| {
            if meta.is_stored() {
                let next = change(meta.placement);
                debug_assert!(!next.is_evicted(), "only Index::evict evicts");
                if !next.is_evicted() {
                    meta.placement = next;
                }
            }
        })?;
        let Some((before, after)) = updated else {
            return Ok(None);
        };
        match (before.is_local(), after.is_local()) {
            (true, false) => self.n_bytes.fetch_sub(after.size, Ordering::Relaxed),
            (false, true) if before.is_stored() => {
                self.n_bytes.fetch_add(after.size, Ordering::Relaxed)
            }
            _ => 0,
        };
        self.forget_urls_of(blake3)?;
        Ok(after.is_stored().then_some(after))
    }

    /// Drop the in-memory URL entries of a blob (they carry a copy of its metadata).
    fn forget_urls_of(&self, blake3: &str) -> Result<(), IndexError> {
        self.forget_urls(&self.urls_of(blake3)?);
        Ok(())
    }

    fn forget_urls(&self, urls: &[String]) {
        let mut memory = self.memory.lock();
        for url in urls {
            memory.pop(url);
        }
    }

    /// Remove a blob, its checksum entries and every URL bound to it. Returns its metadata.
    pub fn remove_blob(&self, blake3: &str) -> Result<Option<BlobMeta>, IndexError> {
        let Some(meta) = self.blob(blake3)? else {
            return Ok(None);
        };
        let urls = self.urls_of(blake3)?;
        let b3 = hex_key(blake3).expect("validated by blob()");
        self.write(true, 4 + 2 * urls.len(), |t| {
            t.blobs.remove(b3.as_slice())?;
            t.reads.remove(b3.as_slice())?;
            for (algo, hex) in [
                (Algo::Md5, &meta.digests.md5),
                (Algo::Sha256, &meta.digests.sha256),
                (Algo::Sha512, &meta.digests.sha512),
            ] {
                t.sums
                    .remove(sum_key(algo, &hex_key(hex).unwrap_or_default()).as_slice())?;
            }
            for url in &urls {
                t.urls.remove(url.as_bytes())?;
                t.blob_urls
                    .remove([b3.as_slice(), url.as_bytes()].concat().as_slice())?;
            }
            Ok(())
        })?;
        if meta.is_stored() {
            self.n_blobs.fetch_sub(1, Ordering::Relaxed);
            self.n_urls.fetch_sub(urls.len() as u64, Ordering::Relaxed);
        }
        if meta.is_local() {
            self.n_bytes.fetch_sub(meta.size, Ordering::Relaxed);
        }
        self.forget_urls(&urls);
        self.access.lock().remove(blake3);
        Ok(Some(meta))
    }

    /// Note one read of a blob; written to the database by [`Index::flush_access`].
    pub fn record_access(&self, blake3: &str, now: i64) {
        let read = Reads {
            count: 1,
            last: now,
        };
        let mut access = self.access.lock();
        match access.get_mut(blake3) {
            Some(r) => *r = r.add(read),
            None => {
                access.insert(blake3.to_owned(), read);
            }
        }
    }

    /// Write batched reads to the database (the `reads` table, 16 bytes a blob, in blake3
    /// order), in one transaction, durably. Called periodically and at shutdown. Returns the
    /// blobs read since the last call.
    pub fn flush_access(&self) -> Result<Vec<String>, IndexError> {
        let pending = std::mem::take(&mut *self.access.lock());
        let read: Vec<String> = pending.keys().cloned().collect();
        let mut pending: Vec<(Vec<u8>, Reads)> = pending
            .into_iter()
            .filter_map(|(b3, r)| Some((hex_key(&b3)?, r)))
            .collect();
        pending.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        if !pending.is_empty() {
            self.write(false, pending.len(), |t| {
                for (key, r) in &pending {
                    // Reads of a blob removed meanwhile are dropped.
                    if t.blobs.get(key.as_slice())?.is_none() {
                        continue;
                    }
                    let total = match t.reads.get(key.as_slice())? {
                        Some(v) => decode_reads(key, v.value())?.add(*r),
                        None => *r,
                    };
                    t.reads.insert(key.as_slice(), total.encode().as_slice())?;
                }
                Ok(())
            })?;
        }
        self.store.durable()?;
        Ok(read)
    }

    /// Drop blobs whose file is gone (with their URLs). Returns how many. A blob the bucket
    /// holds stays (its URLs are still hits), marked as no longer in the local tier.
    pub fn drop_missing(&self, exists: impl Fn(&str) -> bool) -> Result<usize, IndexError> {
        let mut gone = Vec::new();
        let mut remote_only = Vec::new();
        self.walk(None, |meta| {
            let b3 = meta.digests.blake3.clone();
            if meta.is_local() && !exists(&b3) {
                if meta.placement.in_bucket() {
                    remote_only.push(b3);
                } else {
                    gone.push(b3);
                }
            }
            Ok::<_, IndexError>(true)
        })?;
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
        let tx = self.store.db.begin_read()?;
        tx.open_table(URLS)?.first()?;
        Ok(())
    }

    /// Make everything written so far durable (one durable commit on tokio's blocking pool;
    /// nothing to do if no write happened since the last one). Concurrent flushes take turns.
    pub async fn flush(&self) -> Result<(), IndexError> {
        self.store.durable_async().await
    }

    /// Blocking variant of [`Index::flush`] that writes the batched reads too, for shutdown
    /// and offline commands.
    pub fn flush_blocking(&self) -> Result<(), IndexError> {
        self.flush_access()?;
        Ok(())
    }
}

/// Every URL bound to a blob, from the `blob_urls` table.
fn urls_of_in(
    blob_urls: &impl ReadableTable<&'static [u8], &'static [u8]>,
    blake3: &str,
) -> Result<Vec<String>, IndexError> {
    let Some(prefix) = hex_key(blake3) else {
        return Ok(Vec::new());
    };
    let mut urls = Vec::new();
    for item in blob_urls.range::<&[u8]>(prefix.as_slice()..)? {
        let (k, _) = item?;
        let Some(url) = k.value().strip_prefix(prefix.as_slice()) else {
            break;
        };
        urls.push(String::from_utf8_lossy(url).into_owned());
    }
    Ok(urls)
}

/// Inside a transaction: store `blob` if absent, or revive it if it was evicted (keeping
/// its history: first seen, reads, pin). Returns whether it is newly stored.
/// Inside a write transaction: [`Index::bind`]. Returns whether the blob and the URL are
/// new.
fn bind_in(
    t: &mut Tables<'_>,
    blob: &BlobMeta,
    record: &UrlRecord,
) -> Result<(bool, bool), IndexError> {
    debug_assert_eq!(blob.blake3(), record.blake3);
    let b3 = hex_key(blob.blake3()).expect("blob digests are valid hex");
    let rec_json = serde_json::to_vec(record).expect("serializable");
    let url = record.url.as_bytes();
    let new_blob = put_blob(t, &b3, blob)?;
    let old = t
        .urls
        .insert(url, rec_json.as_slice())?
        .map(|v| v.value().to_vec());
    if let Some(old) = &old {
        // Rebinding: unlink the URL from the blob it pointed to before.
        let old: UrlRecord = decode(url, old)?;
        if let Some(old_b3) = hex_key(&old.blake3) {
            t.blob_urls
                .remove([old_b3.as_slice(), url].concat().as_slice())?;
        }
    }
    t.blob_urls
        .insert([b3.as_slice(), url].concat().as_slice(), [].as_slice())?;
    Ok((new_blob, old.is_none()))
}

fn put_blob(t: &mut Tables<'_>, b3: &[u8], blob: &BlobMeta) -> Result<bool, IndexError> {
    let old = t.blobs.get(b3)?.map(|v| v.value().to_vec());
    let stored = match old {
        None => blob.clone(),
        Some(old) => {
            let mut old: BlobMeta = decode(b3, &old)?;
            if old.is_stored() {
                return Ok(false);
            }
            take_reads(t, b3, &mut old)?;
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
    let json = serde_json::to_vec(&stored).expect("serializable");
    t.blobs.insert(b3, json.as_slice())?;
    for (algo, hex) in [
        (Algo::Md5, &blob.digests.md5),
        (Algo::Sha256, &blob.digests.sha256),
        (Algo::Sha512, &blob.digests.sha512),
    ] {
        let digest = hex_key(hex).expect("blob digests are valid hex");
        t.sums.insert(sum_key(algo, &digest).as_slice(), b3)?;
    }
    Ok(true)
}

/// The flushed reads of a blob (by its key) in `reads`.
fn reads_in(
    reads: &impl ReadableTable<&'static [u8], &'static [u8]>,
    key: &[u8],
) -> Result<Option<Reads>, IndexError> {
    match reads.get(key)? {
        Some(v) => Ok(Some(decode_reads(key, v.value())?)),
        None => Ok(None),
    }
}

/// Inside a write transaction: move a blob's flushed reads into `meta`, which the caller
/// then writes as its record. Returns whether there were any.
fn take_reads(t: &mut Tables<'_>, key: &[u8], meta: &mut BlobMeta) -> Result<bool, IndexError> {
    let Some(v) = t.reads.remove(key)? else {
        return Ok(false);
    };
    decode_reads(key, v.value())?.fold_into(meta);
    Ok(true)
}

fn decode_reads(key: &[u8], v: &[u8]) -> Result<Reads, IndexError> {
    Reads::decode(v).ok_or_else(|| IndexError::Corrupt {
        key: hex::encode(key),
        source: serde::de::Error::custom(format!(
            "a read count of {} bytes, not {}",
            v.len(),
            Reads::LEN
        )),
    })
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

    /// sled 0.34's `flush_async` deadlocked when called concurrently on one database
    /// (spacejam/sled#1308); every commit flushes, so fills finishing together did exactly
    /// that. Kept for redb: concurrent binds and durable commits take turns, none hangs.
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
    fn bind_all_binds_a_batch_in_order_and_drops_stale_memory_entries() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (meta(b"aaa"), meta(b"bbbb"));
        {
            let idx = Index::open(dir.path(), 10).unwrap();
            idx.bind(&a, &record("http://a/x", &a)).unwrap();
            // Now in the memory tier: the batch below must not leave it stale.
            assert_eq!(idx.url("http://a/x").unwrap().unwrap().blob, a);
            let (ry, rx) = (record("http://a/y", &b), record("http://a/x", &b));
            idx.bind_all(&[(&b, &ry), (&a, &record("http://a/z", &a)), (&b, &rx)])
                .unwrap();
            assert_eq!(idx.url("http://a/x").unwrap().unwrap().blob, b);
            assert_eq!(
                idx.stats(),
                IndexStats {
                    blobs: 2,
                    bytes: 7,
                    urls: 3
                }
            );
            idx.flush_blocking().unwrap();
        }
        let idx = Index::open(dir.path(), 10).unwrap();
        assert_eq!(idx.stats().urls, 3);
        assert_eq!(idx.urls_of(a.blake3()).unwrap(), ["http://a/z"]);
        let mut urls = idx.urls_of(b.blake3()).unwrap();
        urls.sort();
        assert_eq!(urls, ["http://a/x", "http://a/y"]);
    }

    /// Batched binds without any flush: the non-durable commits' old pages cannot be reused
    /// before a durable commit, so the file stays small only if durable ones come often
    /// enough (counting commits alone let 100 batches grow it to hundreds of MB).
    #[test]
    fn bulk_binds_without_a_flush_keep_the_file_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let idx = Index::open(dir.path(), 10).unwrap();
        for batch in 0..100u32 {
            let metas: Vec<BlobMeta> = (0..100u32)
                .map(|i| meta(&(batch * 100 + i).to_le_bytes()))
                .collect();
            let records: Vec<UrlRecord> = metas
                .iter()
                .enumerate()
                .map(|(i, m)| record(&format!("http://h/{batch}/{i}"), m))
                .collect();
            let pairs: Vec<_> = metas.iter().zip(&records).collect();
            idx.bind_all(&pairs).unwrap();
        }
        assert_eq!(idx.stats().blobs, 10_000);
        let size = std::fs::metadata(dir.path().join(store::FILE))
            .unwrap()
            .len();
        assert!(size < 48 << 20, "index file {size} bytes for 10,000 blobs");
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

    /// The raw record of a blob and its row in the reads table.
    fn raw(idx: &Index, b: &BlobMeta) -> (Vec<u8>, Option<Reads>) {
        let key = hex_key(b.blake3()).unwrap();
        let tx = idx.store.db.begin_read().unwrap();
        let record = tx.open_table(BLOBS).unwrap().get(key.as_slice()).unwrap();
        let reads = tx.open_table(READS).unwrap().get(key.as_slice()).unwrap();
        (
            record.unwrap().value().to_vec(),
            reads.map(|v| Reads::decode(v.value()).unwrap()),
        )
    }

    /// The access flush writes 16 bytes per blob read (the reads table), never the blob's
    /// record; whatever rewrites the record folds them in; every reader sees the sum.
    #[test]
    fn flushed_reads_go_to_their_own_table_and_into_the_record_when_it_is_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let idx = Index::open(dir.path(), 10).unwrap();
        let (a, b) = (meta(b"abc"), meta(b"def"));
        idx.bind(&a, &record("http://a/a", &a)).unwrap();
        idx.bind(&b, &record("http://a/b", &b)).unwrap();
        let record_before = raw(&idx, &a).0;
        for t in [70, 90, 80] {
            idx.record_access(a.blake3(), t);
        }
        idx.flush_access().unwrap();
        idx.record_access(a.blake3(), 95);
        idx.flush_access().unwrap();
        let read = Reads { count: 4, last: 95 };
        assert_eq!(
            raw(&idx, &a),
            (record_before, Some(read)),
            "the record is untouched"
        );
        let counts = |m: BlobMeta| (m.access_count, m.last_access);
        assert_eq!(counts(idx.blob(a.blake3()).unwrap().unwrap()), (4, 95));
        let by_md5 = idx.by_checksum(Algo::Md5, &a.digests.md5).unwrap().unwrap();
        assert_eq!(counts(by_md5), (4, 95));
        let mut walked = Vec::new();
        idx.visit_stored_blobs(None, |m| {
            walked.push((m.digests.blake3.clone(), counts(m)));
            Ok::<_, IndexError>(true)
        })
        .unwrap();
        walked.sort();
        let mut want = vec![
            (a.blake3().to_owned(), (4, 95)),
            (b.blake3().to_owned(), (0, 1)),
        ];
        want.sort();
        assert_eq!(
            walked, want,
            "the walk folds each blob's reads, and only its own"
        );

        // Pinning rewrites the record: the reads go into it.
        idx.set_pinned(a.blake3(), true).unwrap();
        let (bytes, reads) = raw(&idx, &a);
        let stored: BlobMeta = decode(b"", &bytes).unwrap();
        assert_eq!((counts(stored), reads), ((4, 95), None));
        assert_eq!(counts(idx.blob(a.blake3()).unwrap().unwrap()), (4, 95));

        // Evicting too; reviving keeps them; removing drops the row with the record.
        idx.set_pinned(a.blake3(), false).unwrap();
        idx.record_access(a.blake3(), 100);
        idx.flush_access().unwrap();
        assert_eq!(counts(idx.evict(a.blake3()).unwrap().unwrap()), (5, 100));
        assert_eq!(raw(&idx, &a).1, None);
        idx.bind(&a, &record("http://a/a", &a)).unwrap();
        let revived = idx.blob(a.blake3()).unwrap().unwrap();
        assert_eq!(revived.access_count, 5, "last access is the new fetch's");
        idx.record_access(a.blake3(), 110);
        idx.flush_access().unwrap();
        idx.remove_blob(a.blake3()).unwrap();
        let key = hex_key(a.blake3()).unwrap();
        let tx = idx.store.db.begin_read().unwrap();
        assert!(
            tx.open_table(READS)
                .unwrap()
                .get(key.as_slice())
                .unwrap()
                .is_none()
        );
        drop(tx);

        // Reads of a blob removed before the flush are dropped, not kept as an orphan row.
        idx.record_access(b.blake3(), 120);
        idx.remove_blob(b.blake3()).unwrap();
        idx.flush_access().unwrap();
        let tx = idx.store.db.begin_read().unwrap();
        assert_eq!(tx.open_table(READS).unwrap().len().unwrap(), 0);
    }

    /// A row of the reads table that is not 16 bytes is reported as corrupt, naming the blob.
    #[test]
    fn a_damaged_reads_row_is_an_unreadable_record() {
        let dir = tempfile::tempdir().unwrap();
        let idx = Index::open(dir.path(), 10).unwrap();
        let a = meta(b"abc");
        idx.bind(&a, &record("http://a/a", &a)).unwrap();
        let key = hex_key(a.blake3()).unwrap();
        idx.write(false, 1, |t| {
            t.reads.insert(key.as_slice(), [1u8, 2, 3].as_slice())?;
            Ok(())
        })
        .unwrap();
        let err = idx.blob(a.blake3()).unwrap_err().to_string();
        assert!(err.contains(a.blake3()) && err.contains("3 bytes"), "{err}");
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
            idx.store
                .put_meta_durably(TOTALS_KEY, Some(br#"{"blobs":7,"bytes":70,"urls":7}"#))
                .unwrap();
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
        let second = Index::open(dir.path(), 10);
        assert!(
            matches!(&second, Err(e @ IndexError::Open { .. }) if e.is_locked()),
            "{:?}",
            second.err()
        );
    }

    /// An index written by sled (the trees and JSON values of the earlier versions) opens
    /// as redb with the same answers, once: the sled files are gone afterwards.
    #[test]
    fn a_sled_index_is_migrated_at_the_first_open_with_the_same_answers() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (meta(b"a"), meta(b"bb"), meta(b"ccc"));
        let mut evicted = c.clone();
        evicted.placement = Placement::Evicted;
        {
            let db = sled::open(dir.path()).unwrap();
            let tree = |n: &str| db.open_tree(n).unwrap();
            let key = |h: &str| hex::decode(h).unwrap();
            for m in [&a, &b, &evicted] {
                let b3 = key(m.blake3());
                tree("blobs/v1")
                    .insert(&b3, serde_json::to_vec(m).unwrap())
                    .unwrap();
                tree("md5/v1")
                    .insert(key(&m.digests.md5), b3.clone())
                    .unwrap();
                tree("sha256/v1")
                    .insert(key(&m.digests.sha256), b3.clone())
                    .unwrap();
                tree("sha512/v1")
                    .insert(key(&m.digests.sha512), b3.clone())
                    .unwrap();
            }
            for (url, m, bound) in [
                ("http://h/a", &a, true),
                ("http://h/a2", &a, true),
                ("http://h/b", &b, true),
                ("http://h/c", &evicted, false),
            ] {
                if bound {
                    tree("urls/v1")
                        .insert(url, serde_json::to_vec(&record(url, m)).unwrap())
                        .unwrap();
                }
                tree("blob_urls/v1")
                    .insert([key(m.blake3()), url.as_bytes().to_vec()].concat(), &[])
                    .unwrap();
            }
            db.insert(b"totals/v1", br#"{"blobs":9,"bytes":9,"urls":9}"#.to_vec())
                .unwrap();
            db.flush().unwrap();
        }
        assert!(dir.path().join("db").exists());
        let check = |idx: &Index| {
            assert_eq!(
                idx.stats(),
                IndexStats {
                    blobs: 2,
                    bytes: 3,
                    urls: 3
                },
                "counted, not the sled index's totals"
            );
            assert_eq!(idx.url("http://h/a2").unwrap().unwrap().blob, a);
            assert_eq!(
                idx.url("http://h/b").unwrap().unwrap().record,
                record("http://h/b", &b)
            );
            assert!(idx.url("http://h/c").unwrap().is_none());
            for (algo, hex) in [
                (Algo::Md5, &b.digests.md5),
                (Algo::Sha256, &b.digests.sha256),
                (Algo::Sha512, &b.digests.sha512),
            ] {
                assert_eq!(idx.by_checksum(algo, hex).unwrap().unwrap(), b);
            }
            assert_eq!(
                idx.by_checksum(Algo::Sha256, &c.digests.sha256)
                    .unwrap()
                    .unwrap(),
                evicted
            );
            let mut urls = idx.urls_of(a.blake3()).unwrap();
            urls.sort();
            assert_eq!(urls, ["http://h/a", "http://h/a2"]);
            assert_eq!(idx.urls_of(c.blake3()).unwrap(), ["http://h/c"]);
        };
        {
            let idx = Index::open(dir.path(), 10).unwrap();
            check(&idx);
            // Written to after the migration: the next open must not migrate again.
            idx.remove_blob(b.blake3()).unwrap();
        }
        for gone in ["db", "conf", "index.redb.migrating"] {
            assert!(!dir.path().join(gone).exists(), "{gone}");
        }
        let idx = Index::open(dir.path(), 10).unwrap();
        assert!(
            idx.blob(b.blake3()).unwrap().is_none(),
            "not migrated again"
        );
        assert_eq!(idx.url("http://h/a").unwrap().unwrap().blob, a);
    }

    /// A migration that did not finish (its temp file is there, no `index.redb`) leaves the
    /// sled index in place, and the next open migrates it from the start.
    #[test]
    fn an_unfinished_migration_is_done_again_from_the_sled_index() {
        let dir = tempfile::tempdir().unwrap();
        let a = meta(b"a");
        {
            let db = sled::open(dir.path()).unwrap();
            db.open_tree("blobs/v1")
                .unwrap()
                .insert(
                    hex::decode(a.blake3()).unwrap(),
                    serde_json::to_vec(&a).unwrap(),
                )
                .unwrap();
            db.flush().unwrap();
        }
        std::fs::write(dir.path().join("index.redb.migrating"), b"half a database").unwrap();
        let idx = Index::open(dir.path(), 10).unwrap();
        assert_eq!(idx.blob(a.blake3()).unwrap().unwrap(), a);
        assert_eq!(idx.stats().blobs, 1);
        assert!(!dir.path().join("index.redb.migrating").exists());
    }

    /// A sled index held by a running earlier version is not migrated under it: the open
    /// fails as locked (not a reason to rebuild), and the sled files stay.
    #[test]
    fn a_sled_index_held_by_another_process_is_locked_not_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let held = sled::open(dir.path()).unwrap();
        held.flush().unwrap();
        let opened = Index::open(dir.path(), 10);
        assert!(
            matches!(&opened, Err(e @ IndexError::Sled { .. }) if e.is_locked()),
            "{:?}",
            opened.err()
        );
        assert!(!dir.path().join("index.redb").exists());
        assert!(dir.path().join("db").exists());
    }

    /// Evicting a batch in one transaction: the same answers as one at a time, unknown and
    /// already evicted blobs included, and a URL rebound elsewhere stays bound.
    #[test]
    fn evicting_a_batch_counts_and_unbinds_as_one_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let idx = Index::open(dir.path(), 10).unwrap();
        let (a, b, c) = (meta(b"a"), meta(b"bb"), meta(b"ccc"));
        idx.bind(&a, &record("http://h/a", &a)).unwrap();
        idx.bind(&b, &record("http://h/b", &b)).unwrap();
        idx.bind(&b, &record("http://h/moved", &b)).unwrap();
        idx.bind(&c, &record("http://h/moved", &c)).unwrap(); // rebound to c
        idx.bind(&c, &record("http://h/c", &c)).unwrap();
        idx.evict(c.blake3()).unwrap();
        idx.record_access(a.blake3(), 77);
        let unknown = "0".repeat(64);
        let out = idx
            .evict_all(&[a.blake3(), &unknown, c.blake3(), b.blake3(), a.blake3()])
            .unwrap();
        let placements: Vec<_> = out
            .iter()
            .map(|m| m.as_ref().map(|m| m.placement))
            .collect();
        assert_eq!(
            placements,
            [
                Some(Placement::Evicted),
                None,
                Some(Placement::Evicted),
                Some(Placement::Evicted),
                Some(Placement::Evicted)
            ]
        );
        assert_eq!(
            out[0].as_ref().unwrap().last_access,
            77,
            "unflushed reads kept"
        );
        assert_eq!(idx.blob(a.blake3()).unwrap().unwrap().access_count, 1);
        assert_eq!(idx.stats(), IndexStats::default());
        for url in ["http://h/a", "http://h/b", "http://h/moved", "http://h/c"] {
            assert!(idx.url(url).unwrap().is_none(), "{url}");
        }
        drop(idx);
        let idx = Index::open(dir.path(), 10).unwrap();
        assert_eq!(
            idx.stats(),
            IndexStats::default(),
            "counted again, the same"
        );
    }
}
