//! The service core: owns the index, store, upstream client, journal and flights, and decides
//! for each request whether it is a hit, a checksum hit, a join or a new fill.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use lru::LruCache;
use parking_lot::Mutex;
use tracing::{info, warn};

use crate::audit::{Event, Journal, UpstreamInfo};
use crate::config::{Backend, Config, ServeMode};
use crate::error::Error;
use crate::fill::{self, Fill, FillError, Flight, Flights, Requester};
use crate::index::{BlobMeta, Index, Origin, UrlEntry, UrlRecord};
use crate::metrics::Metrics;
use crate::store::{Digests, DiskUsage, Expected, LocalStore, TempBlob};
use crate::upstream::{Head, Upstream, UpstreamError};
use crate::url::UpstreamUrl;

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
}

/// Negative-cache entries kept at most (bounded memory under URL scans).
const NEGATIVE_ENTRIES: usize = 10_000;

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
    negative: Mutex<LruCache<String, Instant>>,
    /// Where fills and other background work run (not tied to any HTTP worker).
    runtime: tokio::runtime::Handle,
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
    Client(#[from] reqwest::Error),
    #[error("{0} is not available in this version")]
    Unsupported(&'static str),
}

impl App {
    /// Open the data directory: index (which locks it), store, journal; remove leftovers of a
    /// crash and drop index entries whose file is gone.
    pub fn open(config: Config, runtime: tokio::runtime::Handle) -> Result<Arc<App>, OpenError> {
        // Refuse rather than silently ignore settings whose behaviour is not built yet.
        match (config.storage.backend, config.storage.serve) {
            (Backend::S3, _) => return Err(OpenError::Unsupported("storage.backend = \"s3\"")),
            (Backend::Obs, _) => return Err(OpenError::Unsupported("storage.backend = \"obs\"")),
            (_, ServeMode::Redirect) => {
                return Err(OpenError::Unsupported("storage.serve = \"redirect\""));
            }
            _ => {}
        }
        let data_dir = config.storage.data_dir.clone();
        let store = LocalStore::open(&data_dir)?;
        let index = Index::open(&data_dir.join("index"), config.cache.memory_entries)?;
        let removed = store.remove_temp_files()?;
        let dropped = index.drop_missing(|b3| store.exists(b3))?;
        if removed + dropped > 0 {
            info!(
                temp_files = removed,
                missing_blobs = dropped,
                "start-up cleanup"
            );
        }
        let instance = config.instance_name();
        let journal = Arc::new(Journal::open(&data_dir.join("journal.jsonl"), &instance)?);
        let upstream = Upstream::new(&config.upstream, &config.user_agent())?;
        let metrics = Metrics::new();
        let readiness = Arc::new(crate::readiness::Readiness::default());
        crate::readiness::spawn_prober(
            Arc::downgrade(&readiness),
            store.temp_dir().to_owned(),
            &runtime,
        );
        Ok(Arc::new(App {
            limits: crate::limits::Limits::new(&config.limits),
            readiness,
            instance,
            index,
            store,
            upstream,
            journal,
            metrics,
            flights: Flights::default(),
            negative: Mutex::new(LruCache::new(
                NonZeroUsize::new(NEGATIVE_ENTRIES).expect("non-zero"),
            )),
            runtime,
            config: Arc::new(config),
        }))
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
                return Ok(Resolution::Checksum(blob));
            }
        }
        if let Some(entry) = self.stored(url)? {
            if let Some(exp) = expected {
                if !exp.matches(&entry.blob.digests) {
                    self.integrity_failed(url, &entry.blob.digests, exp, client);
                    return Err(Error::IntegrityMismatch {
                        message: format!(
                            "{url} is cached with {} {}, expected {}",
                            exp.algo.name(),
                            entry.blob.digests.get(exp.algo),
                            exp.hex
                        ),
                        upload: false,
                    });
                }
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
        let flight = self
            .flights
            .join_or_start(url, check, || self.store.create_temp())?;
        Ok(match flight {
            Flight::Joined(fill) => {
                self.metrics.coalesced_joins.inc();
                Resolution::Miss { fill, joined: true }
            }
            Flight::Stored(entry) => Resolution::Hit(entry),
            Flight::Started(fill, temp) => {
                let who = Requester {
                    client,
                    expected: expected.cloned(),
                };
                self.runtime
                    .spawn(fill::run(self.clone(), fill.clone(), temp, who));
                Resolution::Miss {
                    fill,
                    joined: false,
                }
            }
        })
    }

    /// The URL's bound blob, per the index. Whether its file still exists is found out by
    /// [`App::open_blob`] when it is served (one `open` instead of a `stat` and an `open`).
    fn stored(&self, url: &UpstreamUrl) -> Result<Option<Arc<UrlEntry>>, Error> {
        Ok(self.index.url(url.as_str())?)
    }

    /// Open a stored blob for serving. A file that vanished (deleted behind our back) drops
    /// its index entry, so the next resolution treats its URLs as misses.
    pub fn open_blob(&self, meta: &BlobMeta) -> Result<Option<Arc<std::fs::File>>, Error> {
        let b3 = meta.blake3();
        match self.store.open_blob(b3)? {
            Some((file, len)) if len == meta.size => Ok(Some(file)),
            Some((_, len)) => Err(Error::Internal(format!(
                "blob {b3} is {len} bytes on disk, {} in the index",
                meta.size
            ))),
            None => {
                warn!(blake3 = b3, "blob file missing; dropping its index entry");
                self.index.remove_blob(b3)?;
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
            .map_err(|e| Error::Internal(format!("upstream HEAD task: {e}")))?;
        if let Err(UpstreamError::NotFound { .. }) = &head {
            self.remember_not_found(url);
        }
        Ok(head?)
    }

    fn recently_not_found(&self, url: &UpstreamUrl) -> bool {
        let mut neg = self.negative.lock();
        match neg.get(url.as_str()) {
            Some(at) if at.elapsed() < self.config.cache.negative_ttl => true,
            Some(_) => {
                neg.pop(url.as_str());
                false
            }
            None => false,
        }
    }

    fn remember_not_found(&self, url: &UpstreamUrl) {
        if !self.config.cache.negative_ttl.is_zero() {
            self.negative
                .lock()
                .put(url.as_str().to_owned(), Instant::now());
        }
    }

    /// Store a completed fill: commit the file, journal it, bind the URL, make it durable.
    pub(crate) async fn commit_fill(
        self: &Arc<Self>,
        temp: TempBlob,
        url: &UpstreamUrl,
        head: &Head,
        digests: &Digests,
        size: u64,
        who: &Requester,
    ) -> Result<(), Error> {
        let now = unix_now();
        let meta = BlobMeta {
            digests: digests.clone(),
            size,
            content_type: head.content_type.clone(),
            first_seen: now,
            last_access: now,
            access_count: 0,
            origin: Origin::Upstream,
            pinned: false,
        };
        let record = UrlRecord {
            url: url.to_string(),
            blake3: digests.blake3.clone(),
            status: head.status,
            content_type: head.content_type.clone(),
            etag: head.etag.clone(),
            last_modified: head.last_modified.clone(),
            final_url: head.final_url.clone(),
            fetched_at: now,
            instance: self.instance.clone(),
        };
        let mut event = Event::new("fetched").with_digests(digests, size);
        event.url = Some(url.to_string());
        event.client = who.client.clone();
        event.upstream = Some(UpstreamInfo {
            status: Some(head.status),
            etag: head.etag.clone(),
            last_modified: head.last_modified.clone(),
            final_url: Some(head.final_url.clone()),
        });
        let app = self.clone();
        let b3 = digests.blake3.clone();
        tokio::task::spawn_blocking(move || -> Result<(), Error> {
            app.store.commit(temp, &b3)?;
            // Journal first: it is the durable record the index can be rebuilt from.
            app.journal.append(event)?;
            app.index.bind(&meta, &record)?;
            Ok(())
        })
        .await
        .map_err(|e| Error::Internal(format!("commit task: {e}")))??;
        self.index.flush().await?;
        Ok(())
    }

    /// Account for a failed fill: negative cache, metrics, journal.
    pub(crate) async fn fill_failed(&self, url: &UpstreamUrl, e: &FillError, who: &Requester) {
        let kind = match e {
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
            FillError::Integrity { .. } => "integrity_failed",
            _ => "upstream_failed",
        };
        warn!(url = %url, error = %e, "download failed");
        self.metrics.upstream_failures.inc();
        let mut event = Event::new(kind);
        event.url = Some(url.to_string());
        event.client = who.client.clone();
        event.detail = Some(e.to_string());
        if let FillError::Upstream(u) = e {
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

/// Unix seconds as RFC 3339 UTC, the format of every time in the API.
pub fn rfc3339(unix_secs: i64) -> String {
    let t = UNIX_EPOCH + std::time::Duration::from_secs(unix_secs.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
