//! Start-up recovery: the index is a rebuildable view of the blob files and the audit
//! journal. Blob files the index does not know (a crash between rename and index update, a
//! deleted or corrupt index) are re-hashed and recorded again, with their URL bindings, pins
//! and origins replayed from the journal.

use std::collections::{HashMap, HashSet};
use std::time::UNIX_EPOCH;

use tracing::{info, warn};

use crate::audit::Event;
use crate::index::{BlobMeta, Index, IndexError, Origin, UrlRecord};
use crate::store::{LocalStore, StoreError};

/// Errors of recovery.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Journal(#[from] crate::audit::JournalError),
}

/// What recovery did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recovered {
    /// Blob files recorded again.
    pub adopted: usize,
    /// URL bindings restored from the journal.
    pub bound: usize,
    /// Files whose bytes did not match their name, moved to quarantine.
    pub quarantined: usize,
    /// Files of blobs the journal says were deleted or evicted, removed.
    pub removed: usize,
}

/// What the journal says about blobs and URLs, replayed in order.
#[derive(Default)]
struct Replay {
    /// url -> the record of its latest binding.
    bindings: HashMap<String, UrlRecord>,
    first_seen: HashMap<String, i64>,
    uploaded: HashSet<String>,
    pinned: HashMap<String, bool>,
    /// Blobs whose last word was `deleted` or `evicted`.
    gone: HashSet<String>,
}

impl Replay {
    fn new(events: &[Event]) -> Replay {
        let mut r = Replay::default();
        for e in events {
            let Some(b3) = e.blake3.clone() else { continue };
            let at = humantime::parse_rfc3339_weak(&e.time)
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs() as i64);
            match e.event.as_str() {
                // `updated`: a volatile URL rebound to the new content upstream sent.
                "fetched" | "uploaded" | "updated" => {
                    r.gone.remove(&b3);
                    r.first_seen.entry(b3.clone()).or_insert(at);
                    if e.event == "uploaded" {
                        r.uploaded.insert(b3.clone());
                        r.pinned.insert(b3.clone(), true);
                    }
                    if let Some(url) = &e.url {
                        let up = e.upstream.clone().unwrap_or_default();
                        r.bindings.insert(
                            url.clone(),
                            UrlRecord {
                                url: url.clone(),
                                blake3: b3.clone(),
                                status: up.status.unwrap_or(200),
                                content_type: None,
                                etag: up.etag,
                                last_modified: up.last_modified,
                                final_url: up.final_url.unwrap_or_else(|| url.clone()),
                                fetched_at: at,
                                instance: e.instance.clone().unwrap_or_default(),
                            },
                        );
                    }
                }
                "pinned" => {
                    r.pinned.insert(b3, true);
                }
                "unpinned" => {
                    r.pinned.insert(b3, false);
                }
                "deleted" | "evicted" => {
                    r.bindings.retain(|_, rec| rec.blake3 != b3);
                    r.gone.insert(b3);
                }
                _ => {}
            }
        }
        r
    }
}

/// The journal's word on blobs, read once, when the walk meets the first file the index does
/// not know (after a clean shutdown there are usually none: the journal is not read at all).
struct Known {
    replay: Replay,
    /// blake3 -> the URLs last bound to it.
    by_blob: HashMap<String, Vec<UrlRecord>>,
}

impl Known {
    fn new(events: &[Event]) -> Known {
        let mut replay = Replay::new(events);
        let mut by_blob: HashMap<String, Vec<UrlRecord>> = HashMap::new();
        for (_, rec) in replay.bindings.drain() {
            by_blob.entry(rec.blake3.clone()).or_default().push(rec);
        }
        Known { replay, by_blob }
    }
}

/// Record every blob file the index does not know (with `all`, every file: a rebuild).
/// One file at a time, as the walk meets it: memory stays flat however many files there are
/// (a list of 1,000,000 names would take ~100 MB). Blocking: before the server starts, or in
/// the background while it serves — each file is looked up in the index again just before
/// it is acted on, so a blob a fill stored meanwhile is left alone.
pub fn reconcile(
    index: &Index,
    store: &LocalStore,
    events: impl FnOnce() -> Result<Vec<Event>, crate::audit::JournalError>,
    all: bool,
) -> Result<Recovered, RecoveryError> {
    let mut done = Recovered::default();
    let mut events = Some(events);
    let mut known: Option<Known> = None;
    let indexed = |b3: &str| Ok::<_, IndexError>(index.blob(b3)?.is_some_and(|m| m.is_stored()));
    store.visit_blob_files(|b3| {
        if !all && indexed(b3)? {
            return Ok(());
        }
        if known.is_none() {
            info!("re-hashing blob files the index does not know");
            let read = events.take().expect("read once");
            known = Some(Known::new(&read()?));
        }
        let known = known.as_ref().expect("just read");
        // Reading the journal takes a while: a fill may have stored this blob meanwhile.
        if !all && indexed(b3)? {
            return Ok(());
        }
        adopt(index, store, known, b3, &mut done)
    })?;
    if known.is_some() {
        index.flush_blocking()?;
    }
    Ok(done)
}

/// Record one blob file the index does not know, remove it (the journal says it went), or
/// quarantine it (its bytes do not match its name).
fn adopt(
    index: &Index,
    store: &LocalStore,
    known: &Known,
    b3: &str,
    done: &mut Recovered,
) -> Result<(), RecoveryError> {
    let replay = &known.replay;
    if replay.gone.contains(b3) {
        // A crash between journaling a deletion or eviction and unlinking the file.
        store.remove(b3)?;
        done.removed += 1;
        return Ok(());
    }
    let (digests, size) = store.hash_blob(b3)?;
    if digests.blake3 != b3 {
        let path = store.quarantine(b3)?;
        warn!(blake3 = %b3, actual = %digests.blake3, path = %path.display(), "blob file does not match its name; quarantined");
        done.quarantined += 1;
        return Ok(());
    }
    let mtime = store
        .blob_mtime(b3)
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs() as i64);
    let first_seen = replay.first_seen.get(b3).copied().unwrap_or(mtime);
    let origin = if replay.uploaded.contains(b3) {
        Origin::Upload
    } else {
        Origin::Upstream
    };
    let meta = BlobMeta {
        last_access: first_seen.max(mtime),
        ..BlobMeta::new(digests, size, origin, first_seen)
            .with_pinned(replay.pinned.get(b3).copied().unwrap_or(false))
    };
    index.insert_blob(&meta)?;
    for rec in known.by_blob.get(b3).into_iter().flatten() {
        index.bind(&meta, rec)?;
        done.bound += 1;
    }
    done.adopted += 1;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::UpstreamInfo;

    fn ev(kind: &str, b3: &str, url: Option<&str>, seq: u64) -> Event {
        Event {
            seq,
            time: format!("2026-01-01T00:00:{seq:02}Z"),
            event: kind.into(),
            url: url.map(str::to_owned),
            blake3: Some(b3.into()),
            upstream: Some(UpstreamInfo {
                status: Some(200),
                etag: Some("\"e\"".into()),
                ..UpstreamInfo::default()
            }),
            ..Event::default()
        }
    }

    #[test]
    fn replay_follows_the_journal() {
        let events = [
            ev("fetched", "a", Some("http://h/1"), 1),
            ev("fetched", "b", Some("http://h/2"), 2),
            ev("uploaded", "c", Some("http://h/1"), 3), // rebinds /1
            ev("pinned", "b", None, 4),
            ev("unpinned", "b", None, 5),
            ev("deleted", "c", None, 6),
            ev("evicted", "b", None, 7),
            ev("fetched", "b", Some("http://h/3"), 8),
        ];
        let r = Replay::new(&events);
        assert!(!r.bindings.contains_key("http://h/1"), "deleted with c");
        assert!(!r.bindings.contains_key("http://h/2"), "evicted with b");
        assert_eq!(r.bindings["http://h/3"].blake3, "b");
        assert_eq!(r.bindings["http://h/3"].etag.as_deref(), Some("\"e\""));
        assert!(r.gone.contains("c") && !r.gone.contains("b"));
        assert_eq!(r.pinned.get("b"), Some(&false));
        assert!(r.uploaded.contains("c"));
        assert_eq!(r.first_seen["b"], r.first_seen["b"].min(1_767_225_602));
    }
}
