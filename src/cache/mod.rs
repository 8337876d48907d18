//! The cache, the leaf of the service: the data directory (index, store, journal) with the
//! metrics and alerts it reports to. It stores blobs ([`Cache::commit_blob`]), opens them
//! for serving, and runs their lifecycle ([`lifecycle`]). It names nothing above it (fills,
//! tiers, the service, HTTP): what they need from it is here.

pub mod lifecycle;

use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;
use tracing::{info, warn};

use crate::alerts::{Alerter, Kind};
use crate::audit::{Event, Journal};
use crate::config::{Backend, Config};
use crate::error::Error;
use crate::index::{BlobMeta, Index, Placement, UrlRecord};
use crate::metrics::Metrics;
use crate::store::{Committed, Digests, DiskUsage, Expected, LocalStore, TempBlob};
use crate::time::{Clock, unix_now};
use crate::url::UpstreamUrl;

pub use lifecycle::{Actor, Lifecycle};

/// In the data directory after a clean shutdown; removed at start-up.
const CLEAN_MARKER: &str = "clean-shutdown";

/// The data directory and what reports on it.
pub struct Cache {
    pub config: Arc<Config>,
    pub instance: String,
    pub index: Index,
    pub store: LocalStore,
    pub journal: Arc<Journal>,
    pub metrics: Metrics,
    pub alerts: Alerter,
    /// What ages blobs (manual in tests).
    pub clock: Clock,
    /// Sweeper passes (and the background reconciliation) never overlap.
    pub sweep_lock: Mutex<()>,
    /// Where the online scrub continues (last blake3 checked).
    pub scrub_cursor: Mutex<Option<String>>,
    /// Where journal appends that nobody waits for run.
    runtime: tokio::runtime::Handle,
}

/// Errors opening the data directory.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Index(#[from] crate::index::IndexError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Journal(#[from] crate::audit::JournalError),
    #[error(transparent)]
    Recovery(#[from] crate::recovery::RecoveryError),
    #[error("cannot move the unreadable index {path} aside: {source}")]
    MoveIndex {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// A [`Cache`] just opened.
pub struct Opened {
    pub cache: Arc<Cache>,
    /// The start-up reconciliation was skipped (the index was not rebuilt), and is owed in
    /// the background ([`Cache::reconcile_in_background`]).
    pub background: bool,
}

/// Whether the last run shut down cleanly; the marker is removed durably either way.
fn take_clean_marker(data_dir: &Path) -> bool {
    std::fs::remove_file(data_dir.join(CLEAN_MARKER)).is_ok()
        && std::fs::File::open(data_dir)
            .and_then(|d| d.sync_all())
            .is_ok()
}

/// Open the index, or, if it is missing or unreadable, a fresh one to rebuild (`true`). An
/// index held by another process is an error, never a reason to rebuild.
fn open_index(dir: &Path, memory: usize) -> Result<(Index, bool), OpenError> {
    let missing = !dir.exists();
    // The database may panic rather than fail on some corruptions.
    let opened = std::panic::catch_unwind(|| Index::open(dir, memory));
    match opened {
        Ok(Ok(index)) => Ok((index, missing)),
        Ok(Err(e)) if e.is_locked() => Err(e.into()),
        failed => {
            let reason = match failed {
                Ok(Err(e)) => e.to_string(),
                _ => "the index database panicked while opening".to_owned(),
            };
            // Unique even when an index broke twice within a second.
            let now = unix_now();
            let aside = std::iter::once(dir.with_extension(format!("broken-{now}")))
                .chain((1..).map(|n| dir.with_extension(format!("broken-{now}-{n}"))))
                .find(|p| !p.exists())
                .expect("an unused name");
            warn!(index = %dir.display(), moved_to = %aside.display(), %reason, "index unreadable; rebuilding it from the blob files and the journal");
            std::fs::rename(dir, &aside).map_err(|source| OpenError::MoveIndex {
                path: dir.display().to_string(),
                source,
            })?;
            Ok((Index::open(dir, memory)?, true))
        }
    }
}

impl Cache {
    /// Open the data directory: index (which locks it), store, journal; remove leftovers of a
    /// crash and drop index entries whose file is gone. `alerts` is where alerts go (the
    /// offline commands pass [`Alerter::off`]).
    pub fn open(
        config: Arc<Config>,
        runtime: tokio::runtime::Handle,
        clock: Clock,
        alerts: Alerter,
    ) -> Result<Opened, OpenError> {
        let data_dir = config.storage.data_dir.clone();
        let store = LocalStore::open(&data_dir)?;
        let instance = config.instance_name();
        let journal = Arc::new(Journal::open(&data_dir.join("journal.jsonl"), &instance)?);
        let (index, rebuild) = open_index(&data_dir.join("index"), config.cache.memory_entries)?;
        // The index lock is ours now: no other process owns these temp files.
        let removed = store.remove_temp_files()?;
        // The full walk (which does not scale to millions of blobs) runs in the background,
        // the service is ready at once: after a clean shutdown the index and the files agree,
        // and after a crash what the walk repairs is safe to serve meanwhile (a URL whose
        // blob file is not recorded yet is a miss, one whose file is gone is dropped when
        // read; docs/DECISIONS.md). Only a rebuilt index is filled before serving. The
        // marker goes now (durably), so a crash from here on is seen as one.
        let clean = !rebuild && take_clean_marker(&data_dir);
        let background = !rebuild;
        let (dropped, recovered) = if background {
            if clean {
                info!("clean shutdown: start-up reconciliation runs in the background");
            } else {
                info!("unclean shutdown: start-up reconciliation runs in the background");
            }
            (0, Default::default())
        } else {
            (
                index.drop_missing(|b3| store.exists(b3))?,
                crate::recovery::reconcile(&index, &store, || journal.read_all(), rebuild)?,
            )
        };
        if removed + dropped > 0 || recovered != Default::default() {
            info!(
                temp_files = removed,
                missing_blobs = dropped,
                adopted_blobs = recovered.adopted,
                restored_bindings = recovered.bound,
                quarantined = recovered.quarantined,
                removed_blobs = recovered.removed,
                rebuilt = rebuild,
                "start-up reconciliation"
            );
        }
        let cache = Arc::new(Cache {
            instance,
            index,
            store,
            journal,
            metrics: Metrics::new(),
            alerts,
            clock,
            sweep_lock: Mutex::new(()),
            scrub_cursor: Mutex::new(None),
            runtime,
            config,
        });
        Ok(Opened { cache, background })
    }

    /// The lifecycle operations (evict, delete, pin, ...) over this data directory.
    pub fn lifecycle(&self) -> Lifecycle<'_> {
        Lifecycle {
            journal: &self.journal,
            index: &self.index,
            store: &self.store,
        }
    }

    /// Whether an object store (`backend = "s3" | "obs"`) holds blobs besides the data
    /// directory (which is then the local tier).
    pub fn tiered(&self) -> bool {
        self.config.storage.backend != Backend::Fs
    }

    /// The runtime background work runs on.
    pub fn runtime(&self) -> &tokio::runtime::Handle {
        &self.runtime
    }

    /// Start-up reconciliation while serving: under the sweep lock (no eviction meanwhile).
    /// Fills commit the file before the index, so a blob being stored is never taken for a
    /// missing one, and reconciliation looks each file up again before acting on it.
    pub fn reconcile_in_background(&self) {
        let _no_sweep = self.sweep_lock.lock();
        let (index, store) = (&self.index, &self.store);
        let done = index
            .drop_missing(|b3| store.exists(b3))
            .map_err(Error::from)
            .and_then(|dropped| {
                let recovered =
                    crate::recovery::reconcile(index, store, || self.journal.read_all(), false)
                        .map_err(|e| Error::Internal(e.to_string()))?;
                Ok((dropped, recovered))
            });
        match done {
            Ok((dropped, r)) => info!(
                missing_blobs = dropped,
                adopted_blobs = r.adopted,
                restored_bindings = r.bound,
                quarantined = r.quarantined,
                removed_blobs = r.removed,
                "background reconciliation done"
            ),
            Err(e) => warn!(error = %e, "background reconciliation failed"),
        }
    }

    /// Leave the clean-shutdown marker (after the index is flushed, at the end of `serve`),
    /// and the index's totals, so that the next start need not count them.
    pub fn mark_clean_shutdown(&self) -> std::io::Result<()> {
        self.index.save_totals().map_err(std::io::Error::other)?;
        let dir = &self.config.storage.data_dir;
        let f = std::fs::File::create(dir.join(CLEAN_MARKER))?;
        f.sync_all()?;
        std::fs::File::open(dir)?.sync_all()
    }

    /// Make a fully written temp file a stored blob: commit the file (fsync, rename), append
    /// and fsync the journal event, then record the blob (and bind `record.url`, if any) in
    /// the index and flush it. A pinned `meta` pins an already stored blob too. Returns the
    /// blob as now stored and whether its bytes are new. (Publishing it to a bucket tier is
    /// the caller's next step.)
    pub async fn commit_blob(
        self: &Arc<Self>,
        temp: TempBlob,
        meta: BlobMeta,
        record: Option<UrlRecord>,
        event: Event,
    ) -> Result<(BlobMeta, bool), Error> {
        let cache = self.clone();
        let stored = tokio::task::spawn_blocking(move || -> Result<(BlobMeta, bool), Error> {
            let b3 = meta.blake3().to_owned();
            let known = cache.index.blob(&b3)?.is_some();
            let committed = cache.store.commit(temp, &b3)?;
            // Journal first: it is the durable record the index can be rebuilt from.
            cache.journal.append(event)?;
            match &record {
                Some(record) => cache.index.bind(&meta, record)?,
                None => {
                    cache.index.insert_blob(&meta)?;
                }
            }
            if meta.pinned {
                cache.index.set_pinned(&b3, true)?;
            }
            let now = cache.index.blob(&b3)?.unwrap_or(meta);
            Ok((now, !known || committed == Committed::New))
        })
        .await
        .map_err(|e| Error::failed("the commit task ended early", e))??;
        self.index.flush().await?;
        Ok(stored)
    }

    /// Open a stored blob's local file. A file that vanished (deleted behind our back) drops
    /// its index entry, so the next resolution treats its URLs as misses. With an object
    /// store, a blob it holds only loses its local copy: its URLs stay hits, served from the
    /// bucket.
    pub fn open_blob(&self, meta: &BlobMeta) -> Result<Option<Arc<std::fs::File>>, Error> {
        let b3 = meta.blake3();
        match self.store.open_blob(b3)? {
            Some((file, len)) if len == meta.size => {
                if meta.placement == Placement::RemoteOnly {
                    // Copied back into the local tier since this entry was read.
                    self.lifecycle().restore_local(b3)?;
                }
                Ok(Some(file))
            }
            None if meta.placement.in_bucket() => {
                if meta.placement != Placement::RemoteOnly {
                    // The local copy is gone (the bucket still holds the bytes).
                    self.lifecycle().drop_local(b3)?;
                }
                Ok(None)
            }
            Some((_, len)) => Err(Error::Internal(format!(
                "blob {b3} is {len} bytes on disk, {} in the index",
                meta.size
            ))),
            None => {
                warn!(blake3 = b3, "blob file missing; dropping its index entry");
                self.lifecycle().forget(b3)?;
                Ok(None)
            }
        }
    }

    /// How full the cache is: stored bytes against `max_size` when set, else the volume.
    pub fn used(&self) -> Result<DiskUsage, Error> {
        let max = self.config.cache.max_size;
        if max > 0 {
            return Ok(DiskUsage {
                used_bytes: self.index.stats().bytes,
                total_bytes: max,
            });
        }
        Ok(self.store.disk_usage()?)
    }

    /// A write to the data volume failed: alert (the volume being full or read-only is what
    /// `/readyz` reports too).
    pub fn storage_failed(&self, e: &crate::store::StoreError) {
        warn!(error = %e, "storage write failed");
        self.alerts.raise(
            Kind::StorageUnavailable,
            &self.config.storage.data_dir.display().to_string(),
            format!("cannot write to the data directory: {e}"),
        );
    }

    /// A reader's expected checksum did not match the content.
    pub fn integrity_failed(
        &self,
        url: &UpstreamUrl,
        digests: &Digests,
        expected: &Expected,
        client: Option<String>,
    ) {
        let mut event = Event::new("integrity_failed");
        event.url = Some(url.to_string());
        event.blake3 = Some(digests.blake3.clone());
        event.sha256 = Some(digests.sha256.clone());
        event.md5 = Some(digests.md5.clone());
        event.client = client;
        event.detail = Some(format!("expected {expected}"));
        self.journal_later(event);
    }

    /// Append an event without making the caller wait for the fsync.
    pub fn journal_later(&self, event: Event) {
        let journal = self.journal.clone();
        self.runtime.spawn_blocking(move || {
            if let Err(e) = journal.append(event) {
                warn!(error = %e, "cannot write audit event");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two unreadable indexes in a row (within one second, so the same timestamp): each is
    /// kept aside under its own name and a fresh index opens both times.
    #[test]
    fn unreadable_indexes_within_one_second_are_kept_aside_apart() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("index");
        for _ in 0..2 {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("index.redb"), b"this is not a redb database").unwrap();
            let (index, rebuild) = open_index(&dir, 10).unwrap();
            assert!(rebuild);
            drop(index);
            std::fs::remove_dir_all(&dir).unwrap();
        }
        let aside = std::fs::read_dir(tmp.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("index.broken-"))
            .count();
        assert_eq!(aside, 2);
    }
}
