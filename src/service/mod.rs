//! The service: composes the [`Cache`], the flights, the sweeper, the tier, the jobs, the
//! upstream client, limits, readiness, tokens, the negative cache, volatile state and the
//! workers; decides for each request whether it is a hit, a checksum hit, a join or a new
//! fill (`Service::resolve`), with one fetch-with-retries entry point for HTTP and jobs
//! ([`Service::fetch`]). Nothing below it names it: fills reach it through
//! [`crate::fill::Host`], jobs through a closure.

mod fill_host;
mod jobs;
mod status;
mod volatile;
pub mod workers;

use std::sync::Arc;

use crate::alerts::Alerter;
use crate::audit::Event;
use crate::auth::{Principal, Scope, Tokens};
use crate::bounded::Recent;
use crate::cache::Cache;
use crate::config::{Backend, Config, ServeMode};
use crate::error::Error;
use crate::fill::{self, Fill, Flight, Flights, Requester};
use crate::index::{BlobMeta, Origin, UrlEntry, UrlRecord};
use crate::store::{Expected, TempBlob, TempWriter};
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

pub use crate::cache::lifecycle::Actor;

/// Negative-cache entries kept at most, and their bytes (URLs): bounded memory under URL scans
/// however long the URLs are.
pub const NEGATIVE_ENTRIES: usize = 10_000;
pub const NEGATIVE_BYTES: usize = 4 << 20;

/// The running service.
pub struct Service {
    /// The same configuration as `cache.config`.
    pub config: Arc<Config>,
    /// The data directory: index, store, journal, metrics, alerts, clock.
    pub cache: Arc<Cache>,
    pub upstream: Upstream,
    pub flights: Flights,
    /// Per-client and upstream limits (`[limits]`).
    pub limits: crate::limits::Limits,
    /// The last `/readyz` verdict; new downloads are refused while unready.
    pub readiness: Arc<crate::readiness::Readiness>,
    pub tokens: Tokens,
    /// Prefetch and revalidation jobs.
    pub jobs: crate::jobs::Jobs,
    /// Admission control: room for a download, or a pass-through.
    pub admission: Arc<crate::sweeper::Admission>,
    /// URLs upstream recently answered 404/410 for, trusted for `cache.negative_ttl`.
    pub negative: Recent,
    /// Start time and recent failures, for the status page.
    pub status: crate::status::Status,
    /// Repository metadata URLs (`cache.volatile`) and when each was last validated.
    pub volatile: crate::volatile::Volatile,
    /// Where fills and other background work run (not tied to any HTTP worker).
    runtime: tokio::runtime::Handle,
    /// Where blobs live besides the data directory: nowhere (`fs`), or the bucket (`s3`,
    /// `obs`: the durable tier and shared index; `data_dir` is then the local tier).
    pub tier: crate::tier::DynTier,
    /// The background workers, stopped in order by [`Service::shutdown`].
    pub workers: crate::service::workers::Workers,
}

/// Errors opening the service.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Cache(#[from] crate::cache::OpenError),
    #[error("cannot build the upstream client: {0}")]
    Client(#[from] crate::upstream::roots::ClientError),
    #[error("{0}")]
    Unsupported(&'static str),
    #[error(transparent)]
    Remote(#[from] crate::remote::RemoteError),
    #[error("cannot start the object store tier: {0}")]
    Tier(String),
}

impl Service {
    /// Open the data directory ([`Cache::open`]) and start the service's machinery: the
    /// readiness prober, the alert sender, the object-store tier.
    pub fn open(
        config: Config,
        runtime: tokio::runtime::Handle,
    ) -> Result<Arc<Service>, OpenError> {
        Service::open_with_clock(config, runtime, Clock::system())
    }

    /// [`Service::open`] keeping time with `clock` (what ages blobs, negative answers and rate
    /// limits; manual in tests).
    pub fn open_with_clock(
        config: Config,
        runtime: tokio::runtime::Handle,
        clock: Clock,
    ) -> Result<Arc<Service>, OpenError> {
        // Presigned URLs exist only for object stores.
        if config.storage.backend == Backend::Fs && config.storage.serve == ServeMode::Redirect {
            return Err(OpenError::Unsupported(
                "storage.serve = \"redirect\" needs storage.backend = \"s3\" or \"obs\" \
                 (a local directory has no presigned URLs)",
            ));
        }
        let bucket = match config.storage.backend {
            Backend::Fs => None,
            Backend::S3 | Backend::Obs => Some(
                crate::remote::Remote::new(&config.storage, config.cache.index_refresh)?
                    .with_clock(clock.clone()),
            ),
        };
        let config = Arc::new(config);
        let opened = Cache::open(config.clone(), runtime.clone(), clock.clone(), {
            Alerter::new(&config.alerts, &config.instance_name(), &runtime)
        })?;
        let cache = opened.cache;
        let upstream = Upstream::new(&config.upstream, &config.user_agent())?;
        let readiness = Arc::new(crate::readiness::Readiness::default());
        let admission = Arc::new(crate::sweeper::Admission::default());
        let tier = crate::tier::open(&cache, bucket, readiness.clone(), admission.clone());
        let workers = crate::service::workers::Workers::default();
        workers.prober.spawn(
            crate::readiness::Prober::new(
                Arc::downgrade(&readiness),
                cache.store.temp_dir().to_owned(),
                tier.probe(),
            ),
            &runtime,
        );
        let app = Arc::new(Service {
            tier,
            workers,
            limits: crate::limits::Limits::with_clock(&config.limits, clock.clone()),
            readiness,
            upstream,
            flights: Flights::default(),
            tokens: Tokens::new(&config.auth),
            jobs: crate::jobs::Jobs::new(&config.limits),
            admission,
            negative: Recent::with_clock(NEGATIVE_ENTRIES, NEGATIVE_BYTES, clock),
            status: Default::default(),
            volatile: crate::volatile::Volatile::new(&config.cache),
            runtime,
            cache,
            config,
        });
        app.tier
            .start()
            .map_err(|e| OpenError::Tier(e.to_string()))?;
        if opened.background {
            let cache = app.cache.clone();
            app.runtime
                .spawn_blocking(move || cache.reconcile_in_background());
        }
        Ok(app)
    }

    /// One sweeper pass ([`crate::sweeper::run_once`]) over this service's cache: fills in
    /// progress keep their temp files, and the bucket, if any, runs its own cleanup.
    /// Blocking: run it on a blocking thread.
    pub fn sweep(&self) -> Result<crate::sweeper::Report, Error> {
        crate::sweeper::run_once(&self.cache, || self.flights.temp_paths(), &|| {
            self.tier.sweep().map(|f| self.runtime.block_on(f))
        })
    }

    /// Before deciding hit or miss: what the tier knows about `url` (s3/obs: the shared
    /// index), unless a fill of it is running here.
    pub async fn learn_url(&self, url: &UpstreamUrl) -> Result<(), Error> {
        if self.flights.contains(url) {
            return Ok(());
        }
        self.tier.learn_url(url).await
    }

    /// The same for a checksum lookup.
    pub async fn learn_checksum(&self, algo: crate::store::Algo, hex: &str) -> Result<(), Error> {
        self.tier.learn_checksum(algo, hex).await
    }

    /// Open a stored blob for serving ([`crate::tier::Tier::open_for_serving`]).
    pub async fn open_for_serving(
        &self,
        meta: &BlobMeta,
    ) -> Result<Option<crate::tier::Serving>, Error> {
        self.tier.clone().open_for_serving(meta).await
    }

    /// The runtime background work (fills, jobs) runs on.
    pub(crate) fn runtime(&self) -> &tokio::runtime::Handle {
        &self.runtime
    }

    /// Decide how to answer a request for `url`, starting a fill if needed and `start_fill`.
    /// Only through [`Service::fetch`], which has checked the URL against the policy (once
    /// per request, not once per try: the check parses and lower-cases the URL).
    fn resolve(
        self: &Arc<Self>,
        url: &UpstreamUrl,
        expected: Option<&Expected>,
        client: Option<String>,
        start_fill: bool,
    ) -> Result<Resolution, Error> {
        if let Some(exp) = expected {
            if let Some(blob) = self.cache.index.by_checksum(exp.algo, &exp.hex)? {
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
                self.cache
                    .integrity_failed(url, &entry.blob.digests, exp, client);
                return Err(Error::IntegrityMismatch {
                    message,
                    upload: false,
                });
            }
            if start_fill && expected.is_none() && self.volatile.matches(url) {
                return self.resolve_volatile(url, entry, client);
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
            .join_or_start(url, check, || self.cache.store.create_temp())?;
        Ok(match flight {
            Flight::Joined(fill) => {
                self.cache.metrics.coalesced_joins.inc();
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
    /// [`Service::open_for_serving`] when it is served (one `open` instead of a `stat` and
    /// an `open`).
    fn stored(&self, url: &UpstreamUrl) -> Result<Option<Arc<UrlEntry>>, Error> {
        Ok(self.cache.index.url(url.as_str())?)
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

    /// Store a blob ([`Cache::commit_blob`]), then hand it to the tier (bytes, then the
    /// shared records that point at them).
    pub(crate) async fn store_blob(
        &self,
        temp: TempBlob,
        meta: BlobMeta,
        record: Option<UrlRecord>,
        event: Event,
    ) -> Result<(BlobMeta, bool), Error> {
        let stored = self.cache.commit_blob(temp, meta, record, event).await?;
        self.tier.stored(stored.0.blake3());
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
            if let Some(bound) = self.cache.index.url(url.as_str())? {
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
        let now = self.cache.clock.unix_now();
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
            instance: self.cache.instance.clone(),
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
        self.store_blob(temp, meta, record, event).await
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
            app.cache
                .lifecycle()
                .pin(&b3, pinned, &who)?
                .ok_or_else(|| Error::NotFound(format!("no stored blob has blake3 {b3}")))
        })
        .await
        .map_err(|e| Error::failed("the pin task ended early", e))??;
        if pinned {
            self.tier.stored(blake3);
        } else {
            self.tier.unpinned(blake3);
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
        if let Some(meta) = self.cache.index.blob(blake3)? {
            self.tier
                .delete(&meta, self.cache.index.urls_of(blake3)?)
                .await?;
        }
        let app = self.clone();
        let b3 = blake3.to_owned();
        let meta = tokio::task::spawn_blocking(move || -> Result<BlobMeta, Error> {
            app.cache
                .lifecycle()
                .delete(&b3, &who)?
                .ok_or_else(|| Error::NotFound(format!("no stored blob has blake3 {b3}")))
        })
        .await
        .map_err(|e| Error::failed("the delete task ended early", e))??;
        self.cache.index.flush().await?;
        Ok(meta)
    }

    /// Admission control ([`crate::sweeper::Admission::admit`]).
    pub async fn admit(&self, incoming: u64) -> bool {
        self.admission.admit(&self.cache, incoming).await
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
}
