//! The service core: owns the index, store, upstream client, journal and flights, and decides
//! for each request whether it is a hit, a checksum hit, a join or a new fill.

use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use tracing::{info, warn};

use crate::alerts::{Alerter, Kind};
use crate::audit::{Event, Journal, UpstreamInfo};
use crate::auth::{Principal, Scope, Tokens};
use crate::bounded::Recent;
use crate::config::{Backend, Config, ServeMode};
use crate::error::Error;
use crate::fill::{self, Fill, FillError, Flight, Flights, Requester};
use crate::index::{BlobMeta, Index, Origin, Placement, UrlEntry, UrlRecord};
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::store::{Committed, Digests, DiskUsage, Expected, LocalStore, TempBlob, TempWriter};
use crate::time::Clock;
use crate::upstream::{Head, Upstream, UpstreamError};
use crate::url::UpstreamUrl;

pub use crate::time::{rfc3339, unix_now};

/// How a request for an upstream URL will be answered.
pub enum Resolution {
    /// The URL is bound to a stored blob.
    Hit(Arc<UrlEntry>),
    /// A stored blob has the checksum the client expects (no upstream contact).
    Checksum(BlobMeta),
    /// Not stored: follow this fill (`joined`: it was already running).
    Miss { fill: Arc<Fill>, joined: bool },
    /// Not stored, and the caller asked not to start a fill (HEAD).
    NotStored,
    /// A volatile URL due for revalidation: follow this conditional fill. When it ends
    /// without new bytes, serve `stored`: `X-Cache: REVALIDATED` after a 304, `STALE` after
    /// a failure.
    Revalidate {
        fill: Arc<Fill>,
        stored: Arc<UrlEntry>,
    },
    /// A volatile URL due for revalidation that cannot be revalidated now (the instance is
    /// not ready for downloads): its cached copy, `X-Cache: STALE`.
    Stale(Arc<UrlEntry>),
}

/// An upload, as the HTTP layer understood it.
pub struct UploadRequest {
    pub url: Option<UpstreamUrl>,
    /// Checksums the uploader says the content has (`md5=`, `sha256=`).
    pub expected: Vec<Expected>,
    pub filename: Option<String>,
    /// Rebind `url` even if it is bound to other content (admin only).
    pub replace: bool,
    pub actor: Principal,
    pub client: Option<String>,
    pub content_type: Option<String>,
}

pub use crate::lifecycle::Actor;

/// After an admission attempt that could not free enough space, further attempts wait this
/// long (misses that do not fit meanwhile are passed through).
const ROOM_SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// In the data directory after a clean shutdown; removed at start-up.
const CLEAN_MARKER: &str = "clean-shutdown";

/// Whether the last run shut down cleanly; the marker is removed durably either way.
fn take_clean_marker(data_dir: &std::path::Path) -> bool {
    std::fs::remove_file(data_dir.join(CLEAN_MARKER)).is_ok()
        && std::fs::File::open(data_dir)
            .and_then(|d| d.sync_all())
            .is_ok()
}

/// Negative-cache entries kept at most, and their bytes (URLs): bounded memory under URL scans
/// however long the URLs are.
pub const NEGATIVE_ENTRIES: usize = 10_000;
pub const NEGATIVE_BYTES: usize = 4 << 20;

/// The running service.
pub struct App {
    pub config: Arc<Config>,
    pub instance: String,
    pub index: Index,
    pub store: LocalStore,
    pub upstream: Upstream,
    pub journal: Arc<Journal>,
    pub metrics: Metrics,
    pub flights: Flights,
    /// Per-client and upstream limits (`[limits]`).
    pub limits: crate::limits::Limits,
    /// The last `/readyz` verdict; new downloads are refused while unready.
    pub readiness: Arc<crate::readiness::Readiness>,
    pub tokens: Tokens,
    pub alerts: Alerter,
    /// Prefetch and revalidation jobs.
    pub jobs: crate::prefetch::Jobs,
    /// Sweeper passes never overlap.
    pub sweep_lock: Mutex<()>,
    /// When an admission attempt last failed to make room.
    last_room_sweep: Mutex<Option<Instant>>,
    /// Where the online scrub continues (last blake3 checked).
    pub scrub_cursor: Mutex<Option<String>>,
    /// URLs upstream recently answered 404/410 for, trusted for `cache.negative_ttl`.
    pub negative: Recent,
    /// Start time and recent failures, for the status page.
    pub status: crate::status::Status,
    /// Repository metadata URLs (`cache.volatile`) and when each was last validated.
    pub volatile: crate::volatile::Volatile,
    /// Where fills and other background work run (not tied to any HTTP worker).
    runtime: tokio::runtime::Handle,
    /// `backend = "s3" | "obs"`: the bucket (durable tier and shared index); `data_dir` is
    /// then the L1 tier.
    pub tier: Option<crate::remote::sync::Tier>,
    /// What ages blobs, negative answers and rate limits (manual in tests).
    pub clock: Clock,
    /// The background workers, stopped in order by [`App::shutdown`].
    pub workers: crate::background::Workers,
}

/// Errors opening the service.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Index(#[from] crate::index::IndexError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Journal(#[from] crate::audit::JournalError),
    #[error("cannot build the upstream client: {0}")]
    Client(#[from] crate::upstream::roots::ClientError),
    #[error("{0}")]
    Unsupported(&'static str),
    #[error(transparent)]
    Remote(#[from] crate::remote::RemoteError),
    #[error("cannot start the object store tier: {0}")]
    Tier(String),
    #[error(transparent)]
    Recovery(#[from] crate::recovery::RecoveryError),
    #[error("cannot move the unreadable index {path} aside: {source}")]
    MoveIndex {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Open the index, or, if it is missing or unreadable, a fresh one to rebuild (`true`). An
/// index held by another process is an error, never a reason to rebuild.
fn open_index(dir: &std::path::Path, memory: usize) -> Result<(Index, bool), OpenError> {
    let missing = !dir.exists();
    // sled may panic rather than fail on some corruptions.
    let opened = std::panic::catch_unwind(|| Index::open(dir, memory));
    match opened {
        Ok(Ok(index)) => Ok((index, missing)),
        Ok(Err(e)) if e.is_locked() => Err(e.into()),
        failed => {
            let reason = match failed {
                Ok(Err(e)) => e.to_string(),
                _ => "the index database panicked while opening".to_owned(),
            };
            let aside = dir.with_extension(format!("broken-{}", unix_now()));
            warn!(index = %dir.display(), moved_to = %aside.display(), %reason, "index unreadable; rebuilding it from the blob files and the journal");
            std::fs::rename(dir, &aside).map_err(|source| OpenError::MoveIndex {
                path: dir.display().to_string(),
                source,
            })?;
            Ok((Index::open(dir, memory)?, true))
        }
    }
}

impl App {
    /// Open the data directory: index (which locks it), store, journal; remove leftovers of a
    /// crash and drop index entries whose file is gone.
    pub fn open(config: Config, runtime: tokio::runtime::Handle) -> Result<Arc<App>, OpenError> {
        App::open_with_clock(config, runtime, Clock::system())
    }

    /// [`App::open`] keeping time with `clock`.
    pub fn open_with_clock(
        config: Config,
        runtime: tokio::runtime::Handle,
        clock: Clock,
    ) -> Result<Arc<App>, OpenError> {
        // Presigned URLs exist only for object stores.
        if config.storage.backend == Backend::Fs && config.storage.serve == ServeMode::Redirect {
            return Err(OpenError::Unsupported(
                "storage.serve = \"redirect\" needs storage.backend = \"s3\" or \"obs\" \
                 (a local directory has no presigned URLs)",
            ));
        }
        let tier = match config.storage.backend {
            Backend::Fs => None,
            Backend::S3 | Backend::Obs => Some(crate::remote::sync::Tier::new(
                crate::remote::Remote::new(&config.storage, config.cache.index_refresh)?
                    .with_clock(clock.clone()),
            )),
        };
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
        let upstream = Upstream::new(&config.upstream, &config.user_agent())?;
        let metrics = Metrics::new();
        let readiness = Arc::new(crate::readiness::Readiness::default());
        let workers = crate::background::Workers::default();
        workers.prober.spawn(
            crate::readiness::Prober::new(
                Arc::downgrade(&readiness),
                store.temp_dir().to_owned(),
                tier.as_ref().map(|t| t.bucket.prober()),
            ),
            &runtime,
        );
        let app = Arc::new(App {
            tier,
            workers,
            limits: crate::limits::Limits::with_clock(&config.limits, clock.clone()),
            readiness,
            instance,
            index,
            store,
            upstream,
            journal,
            metrics,
            flights: Flights::default(),
            tokens: Tokens::new(&config.auth),
            alerts: Alerter::new(&config.alerts, &config.instance_name(), &runtime),
            jobs: crate::prefetch::Jobs::new(&config.limits),
            sweep_lock: Mutex::new(()),
            scrub_cursor: Mutex::new(None),
            last_room_sweep: Mutex::new(None),
            negative: Recent::with_clock(NEGATIVE_ENTRIES, NEGATIVE_BYTES, clock.clone()),
            status: Default::default(),
            volatile: crate::volatile::Volatile::new(&config.cache),
            clock,
            runtime,
            config: Arc::new(config),
        });
        app.start_tier()
            .map_err(|e| OpenError::Tier(e.to_string()))?;
        if background {
            let app = app.clone();
            app.runtime
                .clone()
                .spawn_blocking(move || app.reconcile_in_background());
        }
        Ok(app)
    }

    /// The lifecycle operations (evict, delete, pin, ...) over this data directory.
    pub fn lifecycle(&self) -> Lifecycle<'_> {
        Lifecycle {
            journal: &self.journal,
            index: &self.index,
            store: &self.store,
        }
    }

    /// Start-up reconciliation while serving: under the sweep lock (no eviction meanwhile).
    /// Fills commit the file before the index, so a blob being stored is never taken for a
    /// missing one, and reconciliation looks each file up again before acting on it.
    fn reconcile_in_background(&self) {
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

    /// The runtime background work (fills, jobs) runs on.
    pub(crate) fn runtime(&self) -> &tokio::runtime::Handle {
        &self.runtime
    }

    /// Decide how to answer a request for `url`, starting a fill if needed and `start_fill`.
    pub fn resolve(
        self: &Arc<Self>,
        url: &UpstreamUrl,
        expected: Option<&Expected>,
        client: Option<String>,
        start_fill: bool,
    ) -> Result<Resolution, Error> {
        self.upstream.policy().check_url(url)?;
        if let Some(exp) = expected {
            if let Some(blob) = self.index.by_checksum(exp.algo, &exp.hex)? {
                // Found by the first checksum, it must have the others too.
                if blob.is_stored() && exp.matches(&blob.digests) {
                    return Ok(Resolution::Checksum(blob));
                }
            }
        }
        if let Some(entry) = self.stored(url)? {
            if let Some((algo, hex)) = expected.and_then(|exp| exp.mismatch(&entry.blob.digests)) {
                let message = format!(
                    "{url} is cached with {} {}, expected {hex}",
                    algo.name(),
                    entry.blob.digests.get(algo),
                );
                let exp = expected.expect("a mismatch has an expectation");
                self.integrity_failed(url, &entry.blob.digests, exp, client);
                return Err(Error::IntegrityMismatch {
                    message,
                    upload: false,
                });
            }
            if start_fill && expected.is_none() && self.volatile.matches(url) {
                return crate::volatile::resolve(self, url, entry, client);
            }
            return Ok(Resolution::Hit(entry));
        }
        if !start_fill {
            return Ok(Resolution::NotStored);
        }
        if self.recently_not_found(url) {
            return Err(Error::NotFound(format!(
                "{url} was not found upstream (remembered for {})",
                humantime::format_duration(self.config.cache.negative_ttl)
            )));
        }
        // Only a new download needs the data volume: while unready, refuse it (503, so a
        // gateway retries on another instance) but still serve what is stored or running.
        let check = || {
            let stored = self.stored(url)?;
            match self.readiness.unready_reason() {
                Some(reason) if stored.is_none() => Err(Error::Unavailable(format!(
                    "this instance cannot store new downloads right now ({reason}); try again \
                     or another instance"
                ))),
                _ => Ok(stored),
            }
        };
        let who = Requester {
            client,
            expected: expected.cloned(),
            revalidating: None,
        };
        Ok(match self.join_or_spawn(url, check, who)? {
            Flight::Joined(fill) => Resolution::Miss { fill, joined: true },
            Flight::Started(fill, ()) => Resolution::Miss {
                fill,
                joined: false,
            },
            Flight::Stored(entry) => Resolution::Hit(entry),
        })
    }

    /// Join the fill of `url`, or, unless `check` (run under the flight lock) finds it
    /// stored, start one for `who` on the background runtime.
    pub(crate) fn join_or_spawn(
        self: &Arc<Self>,
        url: &UpstreamUrl,
        check: impl FnOnce() -> Result<Option<Arc<UrlEntry>>, Error>,
        who: Requester,
    ) -> Result<Flight<Arc<UrlEntry>, ()>, Error> {
        let flight = self
            .flights
            .join_or_start(url, check, || self.store.create_temp())?;
        Ok(match flight {
            Flight::Joined(fill) => {
                self.metrics.coalesced_joins.inc();
                Flight::Joined(fill)
            }
            Flight::Started(fill, temp) => {
                self.runtime
                    .spawn(fill::run(self.clone(), fill.clone(), temp, who));
                Flight::Started(fill, ())
            }
            Flight::Stored(entry) => Flight::Stored(entry),
        })
    }

    /// The URL's bound blob, per the index. Whether its file still exists is found out by
    /// [`App::open_blob`] when it is served (one `open` instead of a `stat` and an `open`).
    fn stored(&self, url: &UpstreamUrl) -> Result<Option<Arc<UrlEntry>>, Error> {
        Ok(self.index.url(url.as_str())?)
    }

    /// Open a stored blob for serving. A file that vanished (deleted behind our back) drops
    /// its index entry, so the next resolution treats its URLs as misses.
    /// With an object store, a blob it holds only loses its local copy: its URLs stay hits,
    /// served from the bucket.
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

    /// An upstream HEAD for a miss.
    pub async fn head_upstream(self: &Arc<Self>, url: &UpstreamUrl) -> Result<Head, Error> {
        self.upstream.policy().check_url(url)?;
        if self.recently_not_found(url) {
            return Err(Error::NotFound(format!("{url} was not found upstream")));
        }
        let app = self.clone();
        let url2 = url.clone();
        // Upstream connections live on the background runtime, whatever thread asks.
        let head = self
            .runtime
            .spawn(async move { app.upstream.head(&url2).await })
            .await
            .map_err(|e| Error::failed("the upstream HEAD task ended early", e))?;
        if let Err(UpstreamError::NotFound { .. }) = &head {
            self.remember_not_found(url);
        }
        Ok(head?)
    }

    fn recently_not_found(&self, url: &UpstreamUrl) -> bool {
        self.negative
            .contains(url.as_str(), self.config.cache.negative_ttl)
    }

    fn remember_not_found(&self, url: &UpstreamUrl) {
        if !self.config.cache.negative_ttl.is_zero() {
            self.negative.remember(url.as_str());
        }
    }

    /// Store a completed fill: commit the file, journal it, bind the URL, make it durable.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn commit_fill(
        self: &Arc<Self>,
        temp: TempBlob,
        url: &UpstreamUrl,
        head: &Head,
        digests: &Digests,
        size: u64,
        who: &Requester,
        source: Option<fill::Source>,
    ) -> Result<(), Error> {
        let now = self.clock.unix_now();
        let meta = BlobMeta::new(digests.clone(), size, Origin::Upstream, now)
            .with_content_type(head.content_type.clone());
        let record = UrlRecord {
            // The exact URL: it is the index key. Shown URLs are redacted where they are shown.
            url: url.as_str().to_owned(),
            blake3: digests.blake3.clone(),
            status: head.status,
            content_type: head.content_type.clone(),
            etag: head.etag.clone(),
            last_modified: head.last_modified.clone(),
            final_url: head.final_url.clone(),
            fetched_at: now,
            instance: self.instance.clone(),
        };
        // A volatile URL's new content (SPEC 9): expected, so `updated`, never `drift`.
        let kind = match who.revalidating {
            Some(_) => "updated",
            None => "fetched",
        };
        let mut event = Event::new(kind).with_digests(digests, size);
        event.url = Some(url.to_string());
        event.client = who.client.clone();
        event.upstream = Some(UpstreamInfo {
            status: Some(head.status),
            etag: head.etag.clone(),
            last_modified: head.last_modified.clone(),
            final_url: Some(head.final_url.clone()),
        });
        // Which source served the bytes: `upstream.final_url` names it; the detail says why
        // it was not the URL itself.
        event.detail = source.map(|s| {
            format!(
                "served by mirror {} because the primary failed: {}",
                s.url, s.primary_error
            )
        });
        if let Some(old) = &who.revalidating {
            event.detail = Some(format!(
                "repository metadata changed upstream; rebound from blake3 {}",
                old.blob.blake3()
            ));
        }
        self.commit_blob(temp, meta, Some(record), event).await?;
        // Validated now: the binding (and its `fetched_at`) is brand new.
        if self.volatile.matches(url) {
            self.volatile.validated(url);
        }
        Ok(())
    }

    /// Make a fully written temp file a stored blob: commit the file (fsync, rename), append
    /// and fsync the journal event, then record the blob (and bind `record.url`, if any) in
    /// the index and flush it. A pinned `meta` pins an already stored blob too. Returns the
    /// blob as now stored and whether its bytes are new.
    pub(crate) async fn commit_blob(
        self: &Arc<Self>,
        temp: TempBlob,
        meta: BlobMeta,
        record: Option<UrlRecord>,
        event: Event,
    ) -> Result<(BlobMeta, bool), Error> {
        let app = self.clone();
        let stored = tokio::task::spawn_blocking(move || -> Result<(BlobMeta, bool), Error> {
            let b3 = meta.blake3().to_owned();
            let known = app.index.blob(&b3)?.is_some();
            let committed = app.store.commit(temp, &b3)?;
            // Journal first: it is the durable record the index can be rebuilt from.
            app.journal.append(event)?;
            match &record {
                Some(record) => app.index.bind(&meta, record)?,
                None => {
                    app.index.insert_blob(&meta)?;
                }
            }
            if meta.pinned {
                app.index.set_pinned(&b3, true)?;
            }
            let now = app.index.blob(&b3)?.unwrap_or(meta);
            Ok((now, !known || committed == Committed::New))
        })
        .await
        .map_err(|e| Error::failed("the commit task ended early", e))??;
        self.index.flush().await?;
        // The bucket gets it next (bytes, then the shared records that point at them).
        self.publish_later(stored.0.blake3());
        Ok(stored)
    }

    /// Store an uploaded file (SPEC 4.3 `PUT /api/v1/upload`): verify the given checksums,
    /// refuse to rebind a URL to other content unless asked by an admin, pin the blob.
    pub async fn upload(
        self: &Arc<Self>,
        writer: TempWriter,
        req: UploadRequest,
    ) -> Result<(BlobMeta, bool), Error> {
        let (temp, digests, size) = writer.finish();
        for exp in &req.expected {
            if !exp.matches(&digests) {
                return Err(Error::IntegrityMismatch {
                    message: format!(
                        "the uploaded content has {} {}, expected {}; nothing was stored",
                        exp.algo.name(),
                        digests.get(exp.algo),
                        exp.hex
                    ),
                    upload: true,
                });
            }
        }
        let mut replaced = None;
        if let Some(url) = &req.url {
            if let Some(bound) = self.index.url(url.as_str())? {
                if bound.blob.blake3() != digests.blake3 {
                    if !req.replace {
                        return Err(Error::Conflict(format!(
                            "{url} is bound to other content (blake3 {}); add replace=true \
                             with an admin token to rebind it",
                            bound.blob.blake3()
                        )));
                    }
                    if !req.actor.may(Scope::Admin) {
                        return Err(Error::Forbidden(format!(
                            "token {:?} lacks the admin scope needed for replace=true",
                            req.actor.name
                        )));
                    }
                    replaced = Some(bound.blob.blake3().to_owned());
                }
            }
        }
        let now = self.clock.unix_now();
        let meta = BlobMeta::new(digests.clone(), size, Origin::Upload, now)
            .with_content_type(req.content_type.clone())
            .with_pinned(true);
        let record = req.url.as_ref().map(|url| UrlRecord {
            // The exact URL (the index key); `to_string` would hide a password.
            url: url.as_str().to_owned(),
            blake3: digests.blake3.clone(),
            status: 200,
            content_type: req.content_type.clone(),
            etag: None,
            last_modified: None,
            final_url: url.to_string(),
            fetched_at: now,
            instance: self.instance.clone(),
        });
        let mut event = Event::new("uploaded").with_digests(&digests, size);
        event.url = req.url.as_ref().map(|u| u.to_string());
        event.client = req.client.clone();
        event.actor = Some(req.actor.name.clone());
        let mut detail = Vec::new();
        if let Some(name) = &req.filename {
            detail.push(format!("filename {name}"));
        }
        if let Some(old) = &replaced {
            detail.push(format!("rebound from blake3 {old}"));
        }
        event.detail = (!detail.is_empty()).then(|| detail.join("; "));
        self.commit_blob(temp, meta, record, event).await
    }

    /// Pin or unpin a stored blob (admin), with an audit event.
    pub async fn set_pinned(
        self: &Arc<Self>,
        blake3: &str,
        pinned: bool,
        who: Actor,
    ) -> Result<BlobMeta, Error> {
        let app = self.clone();
        let b3 = blake3.to_owned();
        let meta = tokio::task::spawn_blocking(move || -> Result<BlobMeta, Error> {
            app.lifecycle()
                .pin(&b3, pinned, &who)?
                .ok_or_else(|| Error::NotFound(format!("no stored blob has blake3 {b3}")))
        })
        .await
        .map_err(|e| Error::failed("the pin task ended early", e))??;
        if pinned {
            self.publish_later(blake3);
        } else {
            self.unpin_remote(blake3);
        }
        Ok(meta)
    }

    /// Delete a blob and its URL bindings (admin), with an audit event. Readers that have the
    /// file open finish normally; the bytes are gone for everyone else.
    pub async fn delete_blob(
        self: &Arc<Self>,
        blake3: &str,
        who: Actor,
    ) -> Result<BlobMeta, Error> {
        if let Some(meta) = self.index.blob(blake3)? {
            self.delete_remote(&meta, self.index.urls_of(blake3)?)
                .await?;
        }
        let app = self.clone();
        let b3 = blake3.to_owned();
        let meta = tokio::task::spawn_blocking(move || -> Result<BlobMeta, Error> {
            app.lifecycle()
                .delete(&b3, &who)?
                .ok_or_else(|| Error::NotFound(format!("no stored blob has blake3 {b3}")))
        })
        .await
        .map_err(|e| Error::failed("the delete task ended early", e))??;
        self.index.flush().await?;
        Ok(meta)
    }

    /// Account for a failed fill: negative cache, metrics, journal, alerts.
    pub(crate) async fn fill_failed(&self, url: &UpstreamUrl, e: &FillError, who: &Requester) {
        let (_, code) = Error::from(e).status_and_code();
        self.status.failures.record(url, code, &e.to_string());
        let kind = match e.cause() {
            FillError::Upstream(UpstreamError::NotFound { .. }) => {
                self.remember_not_found(url);
                return;
            }
            FillError::Upstream(u) if u.is_policy() => return,
            // Our own capacity, not upstream's failure: nothing to remember or journal.
            FillError::Busy(busy) => {
                warn!(url = %url, error = %busy, "download not started");
                return;
            }
            FillError::Bypass => return,
            // Upstream did its part; our storage did not.
            FillError::NotStored { .. } => {
                warn!(url = %url, error = %e, "download complete but not stored");
                self.alerts.raise(
                    Kind::StorageUnavailable,
                    &self.config.storage.data_dir.display().to_string(),
                    e.to_string(),
                );
                return;
            }
            FillError::Integrity { .. } => "integrity_failed",
            _ => "upstream_failed",
        };
        warn!(url = %url, error = %e, "download failed");
        match e {
            FillError::Store(s) => self.storage_failed(s),
            FillError::Integrity { .. } => {
                // The shown form of the URL: alerts leave the machine, passwords must not.
                self.alerts
                    .raise(Kind::IntegrityFailed, &url.to_string(), e.to_string())
            }
            _ => {
                self.metrics.upstream_failures.inc();
                self.alerts
                    .raise(Kind::UpstreamFailed, url.host(), e.to_string());
            }
        }
        let mut event = Event::new(kind);
        event.url = Some(url.to_string());
        event.client = who.client.clone();
        event.detail = Some(e.to_string());
        if let FillError::Upstream(u) = e.cause() {
            event.upstream = u.status().map(|s| UpstreamInfo {
                status: Some(s),
                ..UpstreamInfo::default()
            });
        }
        let journal = self.journal.clone();
        let written = tokio::task::spawn_blocking(move || journal.append(event)).await;
        if let Ok(Err(e)) = written {
            warn!(error = %e, "cannot write audit event");
        }
    }

    /// Whether `incoming` more bytes fit under the high watermark; if not, evict just enough
    /// least recently used, unpinned blobs for them ([`crate::sweeper::make_room`]: one pass
    /// over the index, no file walk, no scrub) and look again. Only after an attempt that
    /// could not free the space are further attempts refused for a few seconds.
    pub async fn admit(self: &Arc<Self>, incoming: u64) -> bool {
        let fits = |app: &App| {
            app.used().is_ok_and(|u| {
                (u.used_bytes.saturating_add(incoming)) as f64
                    <= app.config.cache.high_watermark * u.total_bytes as f64
            })
        };
        if fits(self) {
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
        let app = self.clone();
        let swept =
            tokio::task::spawn_blocking(move || crate::sweeper::make_room(&app, incoming)).await;
        if let Ok(Err(e)) = swept {
            warn!(error = %e, "admission eviction failed");
        }
        let admitted = fits(self);
        if !admitted {
            *self.last_room_sweep.lock() = Some(Instant::now());
            warn!(
                bytes = incoming,
                "no room for a download even after evicting; passing it through unstored"
            );
        }
        admitted
    }

    /// Stream `url` from upstream to one client without storing it (`X-Cache: BYPASS`),
    /// through a small channel: never more than a few pieces in memory. With `expected`, the
    /// last piece is held back until the content is verified.
    pub async fn pass_through(
        self: &Arc<Self>,
        url: &UpstreamUrl,
        expected: Option<Expected>,
    ) -> Result<
        (
            Head,
            tokio::sync::mpsc::Receiver<Result<bytes::Bytes, std::io::Error>>,
        ),
        Error,
    > {
        let (head_tx, head_rx) = tokio::sync::oneshot::channel();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let app = self.clone();
        let url = url.clone();
        self.runtime.spawn(async move {
            let mut dl = match app.upstream.get(&url, None).await {
                Ok(dl) => dl,
                Err(e) => {
                    let _ = head_tx.send(Err(Error::from(e)));
                    return;
                }
            };
            if head_tx.send(Ok(dl.head.clone())).is_err() {
                return;
            }
            let mut digester = crate::store::Digester::new();
            let mut held: Option<bytes::Bytes> = None;
            loop {
                match dl.chunk().await {
                    Ok(Some(chunk)) => {
                        if expected.is_some() {
                            digester.update(&chunk);
                        }
                        if let Some(prev) = held.replace(chunk) {
                            if tx.send(Ok(prev)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                        return;
                    }
                }
            }
            if let Some(exp) = &expected {
                if !exp.matches(&digester.finish()) {
                    let msg = format!("content does not match the expected {exp}");
                    let _ = tx.send(Err(std::io::Error::other(msg))).await;
                    return;
                }
            }
            if let Some(last) = held {
                let _ = tx.send(Ok(last)).await;
            }
        });
        let head = head_rx
            .await
            .map_err(|_| Error::Internal("pass-through task ended early".into()))??;
        Ok((head, rx))
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
    fn journal_later(&self, event: Event) {
        let journal = self.journal.clone();
        self.runtime.spawn_blocking(move || {
            if let Err(e) = journal.append(event) {
                warn!(error = %e, "cannot write audit event");
            }
        });
    }
}

impl App {
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
}
