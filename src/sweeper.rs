//! The sweeper: keeps the cache below its watermarks (least recently used, unpinned blobs
//! first), evicts blobs unused for `max_unused`, removes stale temp files and orphans, drops
//! index entries whose file is gone, and re-hashes a slice of the store per pass (scrub).
//!
//! [`run_once`] is one bounded pass, used by the background worker, `POST /api/v1/sweep`,
//! admission control and the offline `upcache gc`.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tracing::{info, warn};

use crate::alerts::Kind;
use crate::app::{App, unix_now};
use crate::audit::Event;
use crate::error::Error;
use crate::index::BlobMeta;

/// What one pass did (the JSON of `POST /api/v1/sweep`).
#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct Report {
    pub evicted: u64,
    pub freed_bytes: u64,
    pub removed_temp: u64,
    pub removed_orphans: u64,
    pub dropped_missing: u64,
    pub scrubbed: u64,
    pub quarantined: u64,
    /// s3/obs: blobs deleted from the bucket by `cache.remote_max_unused`.
    pub remote_deleted: u64,
    pub remote_freed_bytes: u64,
    pub used_ratio: f64,
}

/// Temp files untouched this long are leftovers.
const TEMP_MAX_AGE: Duration = Duration::from_secs(3600);
/// Blob files unknown to the index get this long to be recorded before they count as
/// orphans (a commit writes the file a moment before the index).
const ORPHAN_MIN_AGE: Duration = Duration::from_secs(3600);
/// Bytes re-hashed per pass by the online scrub.
const SCRUB_BYTES_PER_PASS: u64 = 256 * 1024 * 1024;

/// One sweeper pass. Blocking (file system walks, hashing): run it on a blocking thread.
/// Passes never overlap.
pub fn run_once(app: &App) -> Result<Report, Error> {
    let _one_at_a_time = app.sweep_lock.lock();
    let mut r = Report::default();
    app.index.flush_access()?;

    // Leftover temp files (not those of fills in progress).
    for path in app
        .store
        .stale_temp_files(TEMP_MAX_AGE, &app.flights.temp_paths())?
    {
        if std::fs::remove_file(&path).is_ok() {
            r.removed_temp += 1;
        }
    }

    // Files without index entries, and index entries without files.
    let stored = app.index.stored_blobs()?;
    let known: std::collections::HashSet<&str> = stored.iter().map(|m| m.blake3()).collect();
    let now = std::time::SystemTime::now();
    for b3 in app.store.list_blobs()? {
        let old = app
            .store
            .blob_mtime(&b3)
            .is_some_and(|t| now.duration_since(t).unwrap_or_default() >= ORPHAN_MIN_AGE);
        if !known.contains(b3.as_str()) && old && app.index.blob(&b3)?.is_none_or(|m| m.evicted) {
            app.store.remove(&b3)?;
            r.removed_orphans += 1;
        }
    }
    r.dropped_missing = app.index.drop_missing(|b3| app.store.exists(b3))? as u64;

    // Age: blobs not read for `max_unused`.
    let max_unused = app.config.cache.max_unused;
    let mut candidates: Vec<BlobMeta> = stored.into_iter().filter(|m| evictable(app, m)).collect();
    if !max_unused.is_zero() {
        let cutoff = unix_now() - max_unused.as_secs() as i64;
        let (old, keep): (Vec<_>, Vec<_>) =
            candidates.into_iter().partition(|m| m.last_access < cutoff);
        for m in old {
            evict(app, &m, "unused longer than cache.max_unused", &mut r)?;
        }
        candidates = keep;
    }

    evict_to_low_watermark(app, candidates, 0, &mut r)?;
    if app.tier.is_some() && !app.config.cache.remote_max_unused.is_zero() {
        // Blocking thread (or the offline command): wait for the bucket here.
        let (deleted, freed) = app.runtime().block_on(app.remote_sweep())?;
        r.remote_deleted = deleted;
        r.remote_freed_bytes = freed;
    }
    scrub(app, &mut r)?;
    app.index.flush_blocking()?;
    let cache = &app.config.cache;
    let usage = app.used()?;
    r.used_ratio = usage.used_ratio();
    app.metrics.disk_used_ratio.set(r.used_ratio);
    if r.used_ratio > cache.high_watermark {
        app.alerts.raise(
            Kind::DiskHigh,
            &app.config.storage.data_dir.display().to_string(),
            format!(
                "the cache is {:.1} % full after a sweep (high watermark {:.0} %): nothing \
                 more can be evicted (pinned blobs, or other data on the volume)",
                100.0 * r.used_ratio,
                100.0 * cache.high_watermark
            ),
        );
    }
    if r != (Report {
        used_ratio: r.used_ratio,
        ..Report::default()
    }) {
        info!(
            evicted = r.evicted,
            freed_bytes = r.freed_bytes,
            removed_temp = r.removed_temp,
            removed_orphans = r.removed_orphans,
            dropped_missing = r.dropped_missing,
            remote_deleted = r.remote_deleted,
            scrubbed = r.scrubbed,
            quarantined = r.quarantined,
            used_ratio = r.used_ratio,
            "sweep"
        );
    }
    Ok(r)
}

/// Above the high watermark (counting `incoming` bytes about to be stored): evict least
/// recently used candidates until below the low one.
fn evict_to_low_watermark(
    app: &App,
    mut candidates: Vec<BlobMeta>,
    incoming: u64,
    r: &mut Report,
) -> Result<(), Error> {
    let cache = &app.config.cache;
    let usage = app.used()?;
    let used = usage.used_bytes.saturating_add(incoming);
    if used as f64 <= cache.high_watermark * usage.total_bytes as f64 {
        return Ok(());
    }
    let target = (cache.low_watermark * usage.total_bytes as f64) as u64;
    let mut to_free = used.saturating_sub(target);
    candidates.sort_by_key(|m| m.last_access);
    for m in &candidates {
        if to_free == 0 {
            break;
        }
        evict(app, m, "cache above its high watermark", r)?;
        to_free = to_free.saturating_sub(m.size);
    }
    Ok(())
}

/// Only the watermark eviction, for admission control of `incoming` bytes: no walks, no
/// scrub.
pub fn make_room(app: &App, incoming: u64) -> Result<Report, Error> {
    let _one_at_a_time = app.sweep_lock.lock();
    app.index.flush_access()?;
    let candidates = app
        .index
        .stored_blobs()?
        .into_iter()
        .filter(|m| evictable(app, m))
        .collect();
    let mut r = Report::default();
    evict_to_low_watermark(app, candidates, incoming, &mut r)?;
    app.index.flush_blocking()?;
    r.used_ratio = app.used()?.used_ratio();
    Ok(r)
}

/// Whether the sweeper may remove a blob's local copy: not pinned, here, and with an object
/// store, already safe in the bucket.
fn evictable(app: &App, meta: &BlobMeta) -> bool {
    !meta.pinned && meta.is_local() && (app.tier.is_none() || meta.remote)
}

/// Evict one blob: journal first, then the index (its URLs become misses, its history stays),
/// then the file. Readers that have it open finish normally (unlink keeps open files).
/// A blob the bucket holds only leaves the local tier: still a hit, served from the bucket.
fn evict(app: &App, meta: &BlobMeta, why: &str, r: &mut Report) -> Result<(), Error> {
    let b3 = meta.blake3();
    if meta.remote {
        app.index.set_tier(b3, true, true)?;
        app.store.remove(b3)?;
        app.metrics.evictions.inc();
        r.evicted += 1;
        r.freed_bytes += meta.size;
        return Ok(());
    }
    let mut event = Event::new("evicted").with_digests(&meta.digests, meta.size);
    event.detail = Some(why.to_owned());
    app.journal.append(event)?;
    app.index.evict(b3)?;
    app.store.remove(b3)?;
    app.metrics.evictions.inc();
    r.evicted += 1;
    r.freed_bytes += meta.size;
    Ok(())
}

/// Re-hash up to [`SCRUB_BYTES_PER_PASS`] of blobs, continuing where the last pass stopped.
fn scrub(app: &App, r: &mut Report) -> Result<(), Error> {
    let mut budget = SCRUB_BYTES_PER_PASS;
    let mut stored = app.index.stored_blobs()?;
    stored.sort_by(|a, b| a.blake3().cmp(b.blake3()));
    let mut cursor = app.scrub_cursor.lock();
    let start = stored.partition_point(|m| Some(m.blake3()) <= cursor.as_deref());
    let order = stored[start..].iter().chain(stored[..start].iter());
    for meta in order.filter(|m| m.is_local()) {
        if budget == 0 {
            break;
        }
        budget = budget.saturating_sub(meta.size.max(1));
        *cursor = Some(meta.blake3().to_owned());
        if check_blob(app, meta)? {
            r.quarantined += 1;
        }
        r.scrubbed += 1;
    }
    Ok(())
}

/// Re-hash one blob; a mismatch is quarantined, dropped from the index, journaled and
/// alerted (the next request refetches it). Returns whether it was corrupt.
pub fn check_blob(app: &App, meta: &BlobMeta) -> Result<bool, Error> {
    let b3 = meta.blake3();
    let (digests, size) = match app.store.hash_blob(b3) {
        Ok(d) => d,
        // Gone meanwhile (deleted, evicted): nothing to check.
        Err(_) if !app.store.exists(b3) => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    if digests.blake3 == b3 && size == meta.size {
        return Ok(false);
    }
    let path = app.store.quarantine(b3)?;
    warn!(blake3 = b3, actual = %digests.blake3, size, path = %path.display(), "corrupt blob quarantined");
    let mut event = Event::new("integrity_failed").with_digests(&meta.digests, meta.size);
    event.detail = Some(format!(
        "stored bytes hash to blake3 {} ({size} bytes); moved to {}",
        digests.blake3,
        path.display()
    ));
    app.journal.append(event)?;
    app.index.remove_blob(b3)?;
    app.alerts.raise(
        Kind::IntegrityFailed,
        b3,
        format!(
            "blob {b3} is corrupt on disk; quarantined at {}",
            path.display()
        ),
    );
    Ok(true)
}

/// Re-hash every stored blob (`upcache verify`). Blocking.
pub fn verify_all(app: &App) -> Result<(u64, u64), Error> {
    let mut checked = 0;
    let mut corrupt = 0;
    for meta in app
        .index
        .stored_blobs()?
        .into_iter()
        .filter(|m| m.is_local())
    {
        checked += 1;
        if check_blob(app, &meta)? {
            corrupt += 1;
        }
    }
    app.index.flush_blocking()?;
    Ok((checked, corrupt))
}

/// The background worker: a pass every `cache.sweep_interval`, backing off after errors.
pub async fn worker(app: Arc<App>) {
    let interval = app.config.cache.sweep_interval.max(Duration::from_secs(1));
    let mut delay = interval;
    loop {
        tokio::time::sleep(delay).await;
        let a = app.clone();
        match tokio::task::spawn_blocking(move || run_once(&a)).await {
            Ok(Ok(_)) => delay = interval,
            Ok(Err(e)) => {
                warn!(error = %e, "sweep failed; retrying sooner");
                delay = (interval / 10).max(Duration::from_secs(10)).min(interval);
            }
            Err(e) => warn!(error = %e, "sweep task failed"),
        }
    }
}
