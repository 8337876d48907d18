//! The sweeper: keeps the cache below its watermarks (least recently used, unpinned blobs
//! first), evicts blobs unused for `max_unused`, removes stale temp files and orphans, drops
//! index entries whose file is gone, and re-hashes a slice of the store per pass (scrub).
//!
//! [`run_once`] is one bounded pass, used by the background worker, `POST /api/v1/sweep`,
//! admission control and the offline `upcache gc`.

use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;
use tracing::{info, warn};

use crate::alerts::Kind;
use crate::cache::Cache;
use crate::error::Error;
use crate::index::BlobMeta;
use crate::worker::{State, WorkError, Worker};

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
    /// Milliseconds the scrub took, and the whole pass (scrub included).
    pub scrub_ms: u64,
    pub pass_ms: u64,
    /// Admission: walks of the whole index it took to choose what to evict (0 when the
    /// reserve of candidates of an earlier walk covered it).
    #[serde(skip_serializing_if = "is_zero")]
    pub index_walks: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Temp files untouched this long are leftovers.
const TEMP_MAX_AGE: Duration = Duration::from_secs(3600);
/// Blob files unknown to the index get this long to be recorded before they count as
/// orphans (a commit writes the file a moment before the index).
const ORPHAN_MIN_AGE: Duration = Duration::from_secs(3600);
/// Bytes re-hashed per pass by the online scrub.
const SCRUB_BYTES_PER_PASS: u64 = 256 * 1024 * 1024;
/// Files re-hashed per pass by the online scrub: with many small blobs the byte budget alone
/// would re-hash the whole store every pass (1,000,000 blobs of 256 bytes are 256 MB).
const SCRUB_FILES_PER_PASS: u64 = 10_000;

/// One sweeper pass. Blocking (file system walks, hashing): run it on a blocking thread.
/// Passes never overlap.
///
/// `busy_temps` names the temp files of fills in progress (asked under the sweep lock);
/// `remote_sweep`, with an object store, is its own cleanup (`cache.remote_max_unused`).
pub fn run_once(
    cache: &Cache,
    busy_temps: impl FnOnce() -> HashSet<PathBuf>,
    remote_sweep: RemoteSweep<'_>,
) -> Result<Report, Error> {
    let _one_at_a_time = cache.sweep_lock.lock();
    let started = std::time::Instant::now();
    let mut r = Report::default();
    cache.index.flush_access()?;

    // Leftover temp files (not those of fills in progress).
    for path in cache.store.stale_temp_files(TEMP_MAX_AGE, &busy_temps())? {
        if std::fs::remove_file(&path).is_ok() {
            r.removed_temp += 1;
        }
    }

    // Files without index entries, and index entries without files. One file and one index
    // entry at a time: memory stays flat however many blobs there are.
    let now = cache.clock.system_time();
    cache.store.visit_blob_files(|b3| {
        let old = cache
            .store
            .blob_mtime(b3)
            .is_some_and(|t| now.duration_since(t).unwrap_or_default() >= ORPHAN_MIN_AGE);
        if old && cache.index.blob(b3)?.is_none_or(|m| !m.is_stored()) {
            cache.store.remove(b3)?;
            r.removed_orphans += 1;
        }
        Ok::<_, Error>(())
    })?;
    r.dropped_missing = cache.index.drop_missing(|b3| cache.store.exists(b3))? as u64;

    // Age: blobs not read for `max_unused`, evicted a batch at a time as the walk finds them.
    let max_unused = cache.config.cache.max_unused;
    if !max_unused.is_zero() {
        let cutoff = cache.clock.unix_now() - max_unused.as_secs() as i64;
        evict_unused(cache, cutoff, &mut r)?;
    }

    evict_to_low_watermark(cache, &mut r)?;
    if !cache.config.cache.remote_max_unused.is_zero() {
        // Blocking thread (or the offline command): it waits for the bucket.
        if let Some(swept) = remote_sweep() {
            let (deleted, freed) = swept?;
            r.remote_deleted = deleted;
            r.remote_freed_bytes = freed;
        }
    }
    let scrub_started = std::time::Instant::now();
    scrub(cache, &mut r)?;
    r.scrub_ms = scrub_started.elapsed().as_millis() as u64;
    cache.index.flush_blocking()?;
    let settings = &cache.config.cache;
    let usage = cache.used()?;
    r.used_ratio = usage.used_ratio();
    cache.metrics.disk_used_ratio.set(r.used_ratio);
    if r.used_ratio > settings.high_watermark {
        cache.alerts.raise(
            Kind::DiskHigh,
            &cache.config.storage.data_dir.display().to_string(),
            format!(
                "the cache is {:.1} % full after a sweep (high watermark {:.0} %): nothing \
                 more can be evicted (pinned blobs, or other data on the volume)",
                100.0 * r.used_ratio,
                100.0 * settings.high_watermark
            ),
        );
    }
    r.pass_ms = started.elapsed().as_millis() as u64;
    if r != (Report {
        used_ratio: r.used_ratio,
        scrub_ms: r.scrub_ms,
        pass_ms: r.pass_ms,
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
            scrub_ms = r.scrub_ms,
            pass_ms = r.pass_ms,
            "sweep"
        );
    }
    Ok(r)
}

/// What the sweeper keeps in memory per blob while choosing what to evict: not the whole
/// metadata (four digests). Only the blobs chosen are listed, never every blob: a list of
/// all 1,000,000 took 100 MB (issue 14).
struct Candidate {
    blake3: String,
    size: u64,
    /// When it had last been read as it was listed.
    last_access: i64,
}

/// Evict the evictable blobs last read before `cutoff`, [`EVICT_BATCH`] at a time during one
/// walk of the index (the index's walk allows writes meanwhile): memory stays flat however
/// many there are.
fn evict_unused(cache: &Cache, cutoff: i64, r: &mut Report) -> Result<(), Error> {
    let why = "unused longer than cache.max_unused";
    let mut batch = Vec::new();
    cache.index.visit_stored_blobs(None, |m| {
        if m.last_access < cutoff && evictable(cache, &m) {
            batch.push(Candidate {
                size: m.size,
                blake3: m.digests.blake3,
                last_access: m.last_access,
            });
            if batch.len() == EVICT_BATCH {
                evict_batched(cache, &std::mem::take(&mut batch), why, u64::MAX, r)?;
            }
        }
        Ok::<_, Error>(true)
    })?;
    evict_batched(cache, &batch, why, u64::MAX, r)
}

/// Evictions journaled with one fsync.
const EVICT_BATCH: usize = 1000;

/// Evict candidates in order until `to_free` bytes are freed, skipping those no longer
/// evictable (pinned, deleted or read since they were listed), [`EVICT_BATCH`] at a time.
fn evict_batched(
    cache: &Cache,
    candidates: &[Candidate],
    why: &str,
    to_free: u64,
    r: &mut Report,
) -> Result<(), Error> {
    let mut batch = Vec::new();
    let mut chosen = 0u64;
    for c in candidates {
        if chosen >= to_free {
            break;
        }
        let current = cache.index.blob(&c.blake3)?;
        if let Some(meta) =
            current.filter(|m| evictable(cache, m) && m.last_access <= c.last_access)
        {
            chosen = chosen.saturating_add(meta.size);
            batch.push(meta);
            if batch.len() == EVICT_BATCH {
                evict(cache, std::mem::take(&mut batch), why, r)?;
            }
        }
    }
    evict(cache, batch, why, r)
}

/// Above the high watermark: evict the least recently used evictable blobs until below the
/// low one. Only the blobs covering the bytes to free are listed (nothing below the high
/// watermark).
fn evict_to_low_watermark(cache: &Cache, r: &mut Report) -> Result<(), Error> {
    let settings = &cache.config.cache;
    let usage = cache.used()?;
    if usage.used_bytes as f64 <= settings.high_watermark * usage.total_bytes as f64 {
        return Ok(());
    }
    let target = (settings.low_watermark * usage.total_bytes as f64) as u64;
    let to_free = usage.used_bytes.saturating_sub(target);
    let victims = oldest_covering(cache, to_free)?;
    evict_batched(
        cache,
        &victims,
        "cache above its high watermark",
        to_free,
        r,
    )
}

/// Admission control of `incoming` bytes: evict just enough least recently used, unpinned
/// blobs to bring the cache with them under the high watermark; no file walk, no scrub. The
/// periodic pass still evicts down to the low watermark.
///
/// Choosing the oldest blobs is a walk of every blob record (seconds at a million), so a walk
/// lists more of the oldest than this download needs (see [`Reserve`]) and later admissions
/// take theirs from that list, each candidate looked at again before it goes.
pub fn make_room(cache: &Cache, incoming: u64, reserve: &Mutex<Reserve>) -> Result<Report, Error> {
    let _one_at_a_time = cache.sweep_lock.lock();
    cache.index.flush_access()?;
    let mut r = Report::default();
    let usage = cache.used()?;
    let high = (cache.config.cache.high_watermark * usage.total_bytes as f64) as u64;
    let to_free = usage
        .used_bytes
        .saturating_add(incoming)
        .saturating_sub(high);
    // Evict nothing for what cannot fit even in an empty cache, or when every evictable
    // blob together would not be enough.
    if to_free > 0 && incoming <= high {
        let mut reserve = reserve.lock();
        let now = cache.clock.now();
        let extra = usage.total_bytes / 100;
        if reserve.listed < to_free || reserve.stale(now) {
            // Not enough listed (or listed too long ago): the whole index decides, both
            // what goes and whether enough can go at all.
            *reserve = Reserve::walk(cache, to_free, extra, now)?;
            r.index_walks += 1;
        }
        if reserve.listed >= to_free {
            // Candidates read, pinned or removed since they were listed are skipped (and
            // dropped); if that empties the reserve, one more walk decides.
            let mut walks_left = 1;
            while r.freed_bytes < to_free {
                let need = to_free - r.freed_bytes;
                let victims = reserve.take_covering(need);
                if !victims.is_empty() {
                    evict_batched(cache, &victims, "room for a download", need, &mut r)?;
                    continue;
                }
                if walks_left == 0 {
                    break;
                }
                walks_left -= 1;
                *reserve = Reserve::walk(cache, need, extra, now)?;
                r.index_walks += 1;
                if reserve.listed < need {
                    break;
                }
            }
        }
        cache.index.flush_blocking()?;
    }
    r.used_ratio = cache.used()?.used_ratio();
    Ok(r)
}

/// The oldest evictable blobs of the last admission walk, oldest first, for the admissions
/// after it: one walk of a million blob records takes seconds (2.2–3 s measured), and a full
/// cache admits every miss. A walk lists the blobs the download needs plus 1 % of the cache
/// (at least `RESERVE_MIN` blobs, at most `RESERVE_MAX` beyond what the download needs);
/// a candidate is evicted only if it is still evictable and not read since it was listed, so
/// the list stays the least recently used blobs in order (the others were newer when it was
/// made and reads only make them newer). Blobs that become evictable later (unpinned, or
/// copied to the bucket) are not on it, so it is made again after `RESERVE_TTL`.
#[derive(Default)]
pub struct Reserve {
    oldest: VecDeque<Candidate>,
    /// The sizes of `oldest` together.
    listed: u64,
    made: Option<Instant>,
}

/// Blobs a reserve walk lists beyond what the download needs, at least and at most.
const RESERVE_MIN: usize = 64;
const RESERVE_MAX: usize = 4096;
/// A reserve older than this is walked again.
const RESERVE_TTL: Duration = Duration::from_secs(60);

impl Reserve {
    /// The least recently used evictable blobs covering `need` bytes plus `extra` (at least
    /// `RESERVE_MIN` blobs, and at most `RESERVE_MAX` beyond those covering `need`), or
    /// all of them if they cover less. One walk of the index; memory bounded by the list.
    fn walk(cache: &Cache, need: u64, extra: u64, now: Instant) -> Result<Reserve, Error> {
        use std::collections::BinaryHeap;
        let want = need.saturating_add(extra);
        // A max-heap on last access: the newest candidate is on top, and leaves as soon as
        // the others cover what is wanted without it, or (past the count bound) the need.
        let mut heap: BinaryHeap<(i64, u64, String)> = BinaryHeap::new();
        let mut kept = 0u64;
        cache.index.visit_stored_blobs(None, |m| {
            if evictable(cache, &m) {
                kept += m.size;
                heap.push((m.last_access, m.size, m.digests.blake3));
                while let Some(&(_, newest, _)) = heap.peek() {
                    let rest = kept - newest;
                    let enough = rest >= want && heap.len() > RESERVE_MIN;
                    let too_many = heap.len() > RESERVE_MAX && rest >= need;
                    if !enough && !too_many {
                        break;
                    }
                    kept -= newest;
                    heap.pop();
                }
            }
            Ok::<_, Error>(true)
        })?;
        Ok(Reserve {
            oldest: heap
                .into_sorted_vec()
                .into_iter()
                .map(|(last_access, size, blake3)| Candidate {
                    blake3,
                    size,
                    last_access,
                })
                .collect(),
            listed: kept,
            made: Some(now),
        })
    }

    /// The oldest candidates covering `bytes` (fewer if the reserve runs out).
    fn take_covering(&mut self, bytes: u64) -> Vec<Candidate> {
        let mut taken = Vec::new();
        let mut covered = 0;
        while covered < bytes {
            let Some(c) = self.oldest.pop_front() else {
                break;
            };
            self.listed -= c.size;
            covered += c.size;
            taken.push(c);
        }
        taken
    }

    fn stale(&self, now: Instant) -> bool {
        self.made
            .is_none_or(|made| now.saturating_duration_since(made) >= RESERVE_TTL)
    }
}

/// The least recently used evictable blobs whose sizes add up to at least `bytes` (all of
/// them if they do not), oldest first.
fn oldest_covering(cache: &Cache, bytes: u64) -> Result<Vec<Candidate>, Error> {
    let now = cache.clock.now();
    Ok(Reserve::walk(cache, bytes, 0, now)?.oldest.into())
}

/// Whether the sweeper may remove a blob's local copy: not pinned, here, and with an object
/// store, already safe in the bucket.
fn evictable(cache: &Cache, meta: &BlobMeta) -> bool {
    !meta.pinned && meta.is_local() && (!cache.tiered() || meta.placement.in_bucket())
}

/// Evict a batch of blobs (see [`crate::lifecycle::Lifecycle::trim_batch`]): the journal first
/// (one fsync for the whole batch), then the index, then the files. A blob the bucket holds
/// only leaves the local tier (still a hit, served from the bucket). A crash in between leaves
/// journaled evictions whose blobs are still indexed and stored: served as before, and a
/// rebuild replaying the journal treats them as evicted (misses, fetched again), the same
/// window one eviction at a time had.
fn evict(cache: &Cache, metas: Vec<BlobMeta>, why: &str, r: &mut Report) -> Result<(), Error> {
    // Looked at again just before the journal (one may have been pinned since it was chosen):
    // the window is the batch's fsync, as it was one eviction's.
    let mut current = Vec::with_capacity(metas.len());
    for m in metas {
        if let Some(m) = cache
            .index
            .blob(m.blake3())?
            .filter(|m| evictable(cache, m))
        {
            current.push(m);
        }
    }
    cache.lifecycle().trim_batch(&current, why)?;
    for meta in &current {
        cache.metrics.evictions.inc();
        r.evicted += 1;
        r.freed_bytes += meta.size;
    }
    Ok(())
}

/// Re-hash up to [`SCRUB_BYTES_PER_PASS`] and [`SCRUB_FILES_PER_PASS`] of blobs, whichever
/// comes first, continuing where the last pass stopped (blake3 order, wrapping around once).
/// Walks the index one entry at a time.
fn scrub(cache: &Cache, r: &mut Report) -> Result<(), Error> {
    scrub_bytes(cache, SCRUB_BYTES_PER_PASS, SCRUB_FILES_PER_PASS, r)
}

fn scrub_bytes(
    cache: &Cache,
    mut budget: u64,
    mut files: u64,
    r: &mut Report,
) -> Result<(), Error> {
    let mut cursor = cache.scrub_cursor.lock();
    let start = cursor.clone();
    let mut step = |meta: BlobMeta, cursor: &mut Option<String>| -> Result<bool, Error> {
        if budget == 0 || files == 0 {
            return Ok(false);
        }
        if !meta.is_local() {
            return Ok(true);
        }
        budget = budget.saturating_sub(meta.size.max(1));
        files -= 1;
        *cursor = Some(meta.blake3().to_owned());
        if check_blob(cache, &meta)? {
            r.quarantined += 1;
        }
        r.scrubbed += 1;
        Ok(true)
    };
    // From the cursor to the end, then from the start up to the cursor.
    cache
        .index
        .visit_stored_blobs(start.as_deref(), |m| step(m, &mut cursor))?;
    if let Some(start) = start {
        cache.index.visit_stored_blobs(None, |m| {
            if m.blake3() > start.as_str() {
                return Ok(false);
            }
            step(m, &mut cursor)
        })?;
    }
    Ok(())
}

/// Re-hash one blob; a mismatch is quarantined, dropped from the index, journaled and
/// alerted (the next request refetches it). Returns whether it was corrupt.
pub fn check_blob(cache: &Cache, meta: &BlobMeta) -> Result<bool, Error> {
    let b3 = meta.blake3();
    let (digests, size) = match cache.store.hash_blob(b3) {
        Ok(d) => d,
        // Gone meanwhile (deleted, evicted): nothing to check.
        Err(_) if !cache.store.exists(b3) => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    if digests.blake3 == b3 && size == meta.size {
        return Ok(false);
    }
    let path = cache.lifecycle().quarantine(meta, &digests, size)?;
    warn!(blake3 = b3, actual = %digests.blake3, size, path = %path.display(), "corrupt blob quarantined");
    cache.alerts.raise(
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
pub fn verify_all(cache: &Cache) -> Result<(u64, u64), Error> {
    let mut checked = 0;
    let mut corrupt = 0;
    cache.index.visit_stored_blobs(None, |meta| {
        if meta.is_local() {
            checked += 1;
            if check_blob(cache, &meta)? {
                corrupt += 1;
            }
        }
        Ok::<_, Error>(true)
    })?;
    cache.index.flush_blocking()?;
    Ok((checked, corrupt))
}

/// After an admission attempt that could not free enough space, further attempts wait this
/// long (misses that do not fit meanwhile are passed through).
const ROOM_SWEEP_EVERY: Duration = Duration::from_secs(5);

/// Admission control for downloads (and copies from a bucket into the local tier).
#[derive(Default)]
pub struct Admission {
    /// When an admission attempt last failed to make room.
    last_room_sweep: Mutex<Option<Instant>>,
    /// The oldest blobs of the last walk, for the next admissions.
    reserve: Arc<Mutex<Reserve>>,
}

impl Admission {
    /// Whether `incoming` more bytes fit under the high watermark; if not, evict just enough
    /// least recently used, unpinned blobs for them ([`make_room`]: one pass over the index,
    /// no file walk, no scrub) and look again. Only after an attempt that could not free the
    /// space are further attempts refused for a few seconds.
    pub async fn admit(&self, cache: &Arc<Cache>, incoming: u64) -> bool {
        let fits = |cache: &Cache| {
            cache.used().is_ok_and(|u| {
                (u.used_bytes.saturating_add(incoming)) as f64
                    <= cache.config.cache.high_watermark * u.total_bytes as f64
            })
        };
        if fits(cache) {
            return true;
        }
        // While nothing more can be evicted (pinned blobs, other data on the volume), every
        // miss would scan the index again: one failed attempt every few seconds is enough.
        if self
            .last_room_sweep
            .lock()
            .is_some_and(|t| t.elapsed() < ROOM_SWEEP_EVERY)
        {
            return false;
        }
        let (c, reserve) = (cache.clone(), self.reserve.clone());
        let swept = tokio::task::spawn_blocking(move || make_room(&c, incoming, &reserve)).await;
        if let Ok(Err(e)) = swept {
            warn!(error = %e, "admission eviction failed");
        }
        let admitted = fits(cache);
        if !admitted {
            *self.last_room_sweep.lock() = Some(Instant::now());
            warn!(
                bytes = incoming,
                "no room for a download even after evicting; passing it through unstored"
            );
        }
        admitted
    }
}

/// The background sweeper: a pass every `cache.sweep_interval` (the first one interval
/// after the start). After a failed pass it waits longer, not shorter: twice the interval,
/// doubling with each consecutive failure up to eight times (a failing pass would likely
/// fail again; admission control still sweeps when a download needs room).
pub struct SweepWorker {
    pass: Pass,
    interval: Duration,
    started: bool,
}

/// One whole pass, as the service runs it (with its fills and its tier).
pub type Pass = Arc<dyn Fn() -> Result<Report, Error> + Send + Sync>;

/// A tier's own cleanup: blobs deleted from it and their bytes (`None`: it has none).
pub type RemoteSweep<'a> = &'a dyn Fn() -> Option<Result<(u64, u64), Error>>;

impl SweepWorker {
    pub fn new(interval: Duration, pass: Pass) -> SweepWorker {
        SweepWorker {
            interval: interval.max(Duration::from_secs(1)),
            pass,
            started: false,
        }
    }
}

impl Worker for SweepWorker {
    fn name(&self) -> String {
        "sweeper".into()
    }

    async fn work(&mut self) -> Result<State, WorkError> {
        if !std::mem::replace(&mut self.started, true) {
            return Ok(State::Idle);
        }
        let pass = self.pass.clone();
        tokio::task::spawn_blocking(move || pass()).await??;
        Ok(State::Idle)
    }

    async fn wait_for_work(&mut self) {
        tokio::time::sleep(self.interval).await;
    }

    fn retry_after(&self, errors: u32) -> Duration {
        crate::worker::backoff(self.interval * 2, errors, self.interval * 8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Event;
    use crate::index::{Origin, UrlRecord};
    use crate::store::{Digester, TempWriter};

    fn open(cfg: crate::Config, rt: &tokio::runtime::Runtime) -> Arc<Cache> {
        let (clock, alerts) = (crate::time::Clock::system(), crate::alerts::Alerter::off());
        Cache::open(Arc::new(cfg), rt.handle().clone(), clock, alerts)
            .unwrap()
            .cache
    }

    /// An app over a temp dir with `n` blobs of 100 bytes; their blake3s, sorted.
    fn app_with_blobs(
        dir: &std::path::Path,
        rt: &tokio::runtime::Runtime,
        n: u8,
    ) -> (Arc<Cache>, Vec<String>) {
        let mut cfg = crate::Config::default();
        cfg.storage.data_dir = dir.to_owned();
        blobs_in(open(cfg, rt), n)
    }

    /// `n` blobs of 100 bytes stored in `app`; their blake3s, sorted.
    fn blobs_in(app: Arc<Cache>, n: u8) -> (Arc<Cache>, Vec<String>) {
        let mut all = Vec::new();
        for i in 0..n {
            let content = [i; 100];
            let mut d = Digester::new();
            d.update(&content);
            let digests = d.finish();
            let mut w = TempWriter::new(app.store.create_temp().unwrap());
            w.append(&content).unwrap();
            let (temp, _, _) = w.finish();
            app.store.commit(temp, &digests.blake3).unwrap();
            let meta = BlobMeta::new(digests.clone(), 100, Origin::Upstream, 1);
            let url = format!("http://h/{i}");
            let record = UrlRecord {
                url: url.clone(),
                blake3: digests.blake3.clone(),
                status: 200,
                content_type: None,
                etag: None,
                last_modified: None,
                final_url: url,
                fetched_at: 1,
                instance: "t".into(),
            };
            app.index.bind(&meta, &record).unwrap();
            all.push(digests.blake3);
        }
        all.sort();
        (app, all)
    }

    #[test]
    fn after_a_failed_pass_the_sweeper_waits_longer_never_shorter() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = crate::Config::default();
        cfg.storage.data_dir = dir.path().to_owned();
        cfg.cache.sweep_interval = Duration::from_secs(600);
        let interval = cfg.cache.sweep_interval;
        let app = open(cfg, &rt);
        let w = SweepWorker::new(
            interval,
            Arc::new(move || run_once(&app, Default::default, &|| None)),
        );
        let m = Duration::from_secs(60);
        let pauses: Vec<_> = (1..=5).map(|n| w.retry_after(n)).collect();
        assert_eq!(pauses, [m * 20, m * 40, m * 80, m * 80, m * 80]);
        assert!(pauses.iter().all(|p| *p > w.interval));
    }

    #[test]
    fn scrub_continues_where_it_stopped_and_wraps_around() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (app, all) = app_with_blobs(dir.path(), &rt, 5);
        let pass_files = |budget, files| {
            let mut r = Report::default();
            scrub_bytes(&app, budget, files, &mut r).unwrap();
            (r.scrubbed, app.scrub_cursor.lock().clone())
        };
        let pass = |budget| pass_files(budget, u64::MAX);
        assert_eq!(pass(200), (2, Some(all[1].clone())));
        assert_eq!(pass(200), (2, Some(all[3].clone())));
        // One left before the end, then around to the start.
        assert_eq!(pass(200), (2, Some(all[0].clone())));
        // A budget larger than everything checks each blob once, ending where it began.
        assert_eq!(pass(10_000), (5, Some(all[0].clone())));
        // The file budget bounds a pass however small the blobs.
        assert_eq!(pass_files(10_000, 3), (3, Some(all[3].clone())));
        assert_eq!(pass_files(10_000, 3), (3, Some(all[1].clone())));
        assert_eq!(pass_files(10_000, 0), (0, Some(all[1].clone())));
        *app.scrub_cursor.lock() = Some(all[0].clone());

        // A corrupt blob is found on its turn and quarantined.
        std::fs::write(app.store.blob_path(&all[2]), [0xffu8; 100]).unwrap();
        let mut r = Report::default();
        scrub_bytes(&app, 10_000, u64::MAX, &mut r).unwrap();
        assert_eq!((r.scrubbed, r.quarantined), (5, 1));
        assert!(app.index.blob(&all[2]).unwrap().is_none());
    }

    #[test]
    fn unused_blobs_are_evicted_in_one_walk_and_recent_or_pinned_ones_stay() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (app, all) = app_with_blobs(dir.path(), &rt, 6);
        app.index.record_access(&all[1], 1000);
        app.index.flush_access().unwrap();
        app.index.set_pinned(&all[2], true).unwrap();
        let mut r = Report::default();
        evict_unused(&app, 500, &mut r).unwrap();
        assert_eq!((r.evicted, r.freed_bytes), (4, 400));
        for (i, b3) in all.iter().enumerate() {
            let evicted = app.index.blob(b3).unwrap().unwrap().placement.is_evicted();
            assert_eq!(evicted, i != 1 && i != 2, "blob {i}");
            assert_eq!(app.store.exists(b3), !evicted, "blob {i}");
        }
    }

    #[test]
    fn admission_takes_the_oldest_from_the_reserve_of_its_last_walk() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = crate::Config::default();
        cfg.storage.data_dir = dir.path().to_owned();
        cfg.cache.max_size = 3000;
        cfg.cache.high_watermark = 0.9;
        cfg.cache.low_watermark = 0.5;
        let clock = crate::time::Clock::manual();
        let alerts = crate::alerts::Alerter::off();
        let app = Cache::open(Arc::new(cfg), rt.handle().clone(), clock.clone(), alerts)
            .unwrap()
            .cache;
        // 30 blobs of 100 bytes, all[0] the least recently read.
        let (app, all) = blobs_in(app, 30);
        for (i, b3) in all.iter().enumerate() {
            app.index.record_access(b3, 1000 + i as i64);
        }
        let reserve = Mutex::new(Reserve::default());
        let room = |incoming| make_room(&app, incoming, &reserve).unwrap();
        let left = || -> Vec<usize> { (0..30).filter(|&i| app.store.exists(&all[i])).collect() };

        // 3000 + 100 over the 2700 of the high watermark: the four oldest go, chosen by a
        // walk that also lists the others.
        let r = room(100);
        assert_eq!((r.evicted, r.freed_bytes, r.index_walks), (4, 400, 1));
        // 2600 + 250: the next two, from the reserve.
        let r = room(250);
        assert_eq!((r.evicted, r.freed_bytes, r.index_walks), (2, 200, 0));
        // all[6] read since it was listed and all[7] pinned: both skipped, all[8] goes.
        app.index.record_access(&all[6], 5000);
        app.index.set_pinned(&all[7], true).unwrap();
        let r = room(400);
        assert_eq!((r.evicted, r.index_walks), (1, 0));
        assert_eq!(left(), [6, 7].into_iter().chain(9..30).collect::<Vec<_>>());
        // A reserve a minute old is walked again: the oldest is all[9].
        clock.advance(RESERVE_TTL);
        let r = room(500);
        assert_eq!((r.evicted, r.index_walks), (1, 1));
        assert!(!app.store.exists(&all[9]));
        // 2200 + 2700 needs 2200 freed, more than the reserve lists (2100): a walk, which
        // finds no more either (all[7] pinned), so nothing goes.
        let r = room(2700);
        assert_eq!((r.evicted, r.index_walks), (0, 1));
        assert_eq!(left().len(), 22);
        // 2100 freed: everything evictable, from that walk's reserve, oldest first (all[6],
        // read last, among them).
        let r = room(2600);
        assert_eq!((r.evicted, r.freed_bytes, r.index_walks), (21, 2100, 0));
        assert_eq!(left(), [7]);
    }

    #[test]
    fn a_batch_of_evictions_is_journaled_in_order_before_the_index_and_files_change() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (app, all) = app_with_blobs(dir.path(), &rt, 5);
        app.index.set_pinned(&all[4], true).unwrap();
        let before = app.journal.read_all().unwrap().len();
        let candidates: Vec<_> = all
            .iter()
            .map(|b3| Candidate {
                blake3: b3.clone(),
                size: 100,
                last_access: app.index.blob(b3).unwrap().unwrap().last_access,
            })
            .collect();
        let mut r = Report::default();
        // Enough for three blobs: the first three go, the pinned one never.
        evict_batched(&app, &candidates, "test", 250, &mut r).unwrap();
        assert_eq!((r.evicted, r.freed_bytes), (3, 300));
        let events = app.journal.read_all().unwrap();
        let evicted: Vec<_> = events[before..].iter().collect();
        assert_eq!(evicted.len(), 3);
        for (e, b3) in evicted.iter().zip(&all) {
            assert_eq!(
                (e.event.as_str(), e.blake3.as_deref()),
                ("evicted", Some(b3.as_str()))
            );
        }
        assert!(evicted.windows(2).all(|w| w[1].seq == w[0].seq + 1));
        for b3 in &all[..3] {
            assert!(app.index.blob(b3).unwrap().unwrap().placement.is_evicted());
            assert!(!app.store.exists(b3));
        }
        // A pin taken after the choice is honoured: looked at again just before the journal.
        let meta = app.index.blob(&all[3]).unwrap().unwrap();
        app.index.set_pinned(&all[3], true).unwrap();
        let mut r = Report::default();
        evict(&app, vec![meta], "test", &mut r).unwrap();
        assert_eq!(r.evicted, 0);
        assert!(app.store.exists(&all[3]) && app.store.exists(&all[4]));
        // The journal reopens after the batch: the next event follows the last sequence.
        let journal = crate::audit::Journal::open(app.journal.path(), "t").unwrap();
        let next = journal.append(Event::new("pinned")).unwrap();
        assert_eq!(next.seq, evicted[2].seq + 1);
    }
}
