//! The service's one way to fetch a URL ([`Service::fetch`], for HTTP and for jobs), and
//! the work of one prefetch or revalidation job item.

use std::future::Future;
use std::sync::Arc;

use serde_json::json;

use super::{Resolution, Service};
use crate::error::Error;
use crate::index::BlobMeta;
use crate::jobs::revalidate::{self, Outcome};
use crate::jobs::{Job, Kind, State, Submitter};
use crate::store::Expected;
use crate::url::UpstreamUrl;

/// Resolutions tried for one request before giving up: a stored blob whose bytes vanished
/// is dropped from the index when it is opened, and resolving again finds the next source
/// (another checksum match, or upstream).
const RESOLVE_TRIES: usize = 3;

impl Service {
    /// Fetch `url`: learn what the tier knows of it (s3/obs: what another instance stored
    /// is a hit here too), resolve it, and hand the [`Resolution`] to `take`. `take`
    /// answering `None` means the stored bytes vanished: resolve again, a few times at most.
    /// Policy first: a refused URL costs no lookup and leaves nothing remembered.
    pub async fn fetch<T, Taken>(
        self: &Arc<Self>,
        url: &UpstreamUrl,
        expected: Option<&Expected>,
        client: Option<String>,
        start_fill: bool,
        mut take: impl FnMut(Resolution) -> Taken,
    ) -> Result<T, Error>
    where
        Taken: Future<Output = Result<Option<T>, Error>>,
    {
        self.upstream.policy().check_url(url)?;
        self.learn_url(url).await?;
        if let Some(exp) = expected {
            self.learn_checksum(exp.algo, &exp.hex).await?;
        }
        for _ in 0..RESOLVE_TRIES {
            let resolution = self.resolve(url, expected, client.clone(), start_fill)?;
            if let Some(done) = take(resolution).await? {
                return Ok(done);
            }
        }
        Err(Error::Unavailable(format!(
            "the stored copy of {url} keeps vanishing; try again"
        )))
    }

    /// Make sure `url` is cached, joining or starting its fill; the blob it is bound to.
    /// A blob only the bucket holds counts as cached.
    pub async fn prefetch(
        self: &Arc<Self>,
        url: &UpstreamUrl,
        who: &Submitter,
    ) -> Result<BlobMeta, Error> {
        let taken = |resolution| self.clone().prefetched(url.clone(), resolution);
        self.fetch(url, None, who.client.clone(), true, taken).await
    }

    /// What a prefetch makes of a resolution (`None`: resolve again).
    async fn prefetched(
        self: Arc<Self>,
        url: UpstreamUrl,
        resolution: Resolution,
    ) -> Result<Option<BlobMeta>, Error> {
        Ok(match resolution {
            Resolution::Hit(entry) => {
                let here = self.cache.open_blob(&entry.blob)?.is_some();
                (here || entry.blob.placement.in_bucket()).then(|| entry.blob.clone())
            }
            Resolution::Stale(entry) => Some(entry.blob.clone()),
            Resolution::Miss { fill, .. } | Resolution::Revalidate { fill, .. } => {
                let state = fill.ended().await;
                if let Some(entry) = self.cache.index.url(url.as_str())? {
                    return Ok(Some(entry.blob.clone()));
                }
                return Err(match &state.phase {
                    crate::fill::Phase::Failed(e) => Error::from(&**e),
                    _ => Error::Internal(format!("{url} was downloaded but could not be stored")),
                });
            }
            Resolution::Checksum(_) | Resolution::NotStored => {
                return Err(Error::Internal(
                    "unexpected resolution for a prefetch".into(),
                ));
            }
        })
    }

    /// Start a prefetch or revalidation job over `urls` ([`crate::jobs::submit`]).
    pub fn submit_job(
        self: &Arc<Self>,
        kind: Kind,
        urls: Vec<String>,
        who: Submitter,
    ) -> Result<Arc<Job>, Error> {
        let app = self.clone();
        let run: crate::jobs::RunItem = Arc::new(move |job, index, url, who| {
            let app = app.clone();
            Box::pin(async move { app.run_item(&job, index, &url, &who).await })
        });
        crate::jobs::submit(
            &self.jobs,
            self.upstream.policy(),
            self.runtime(),
            kind,
            urls,
            who,
            run,
        )
    }

    async fn run_item(
        self: &Arc<Self>,
        job: &Job,
        index: usize,
        url: &UpstreamUrl,
        who: &Submitter,
    ) {
        let app = self;
        if job.kind == Kind::Revalidate && app.volatile.matches(url) {
            // Repository metadata is expected to change: new content is rebound (`updated`),
            // never reported as drift.
            if let Ok(Some(entry)) = app.cache.index.url(url.as_str()) {
                let outcome = app
                    .revalidate_now(url, entry.clone(), who.client.clone())
                    .await;
                job.update(index, |item| match outcome {
                    Ok(None) => item.bound(State::Unchanged, &entry.blob),
                    Ok(Some(new)) => item.bound(State::Cached, &new),
                    Err(e) => item.failed(e),
                });
                return;
            }
        }
        if job.kind == Kind::Revalidate {
            match revalidate::bound_blob(&app.cache, url) {
                Ok(Some(bound)) => {
                    let outcome = revalidate::revalidate(
                        &app.cache,
                        &app.upstream,
                        &app.tier,
                        url,
                        &bound,
                        who,
                    )
                    .await;
                    job.update(index, |item| match outcome {
                        Ok(Outcome::Unchanged) => item.bound(State::Unchanged, &bound),
                        Ok(Outcome::Drift(new)) => {
                            item.bound(State::Drift, &bound);
                            item.drift = Some(json!({
                                "blake3": new.digests.blake3,
                                "sha256": new.digests.sha256,
                                "md5": new.digests.md5,
                                "size": new.size,
                            }));
                        }
                        Err(e) => item.failed(e),
                    });
                    return;
                }
                Ok(None) => {}
                Err(e) => {
                    job.update(index, |item| item.failed(e));
                    return;
                }
            }
        }
        let result = app.prefetch(url, who).await;
        job.update(index, |item| match result {
            Ok(meta) => item.bound(State::Cached, &meta),
            Err(e) => item.failed(e),
        });
    }
}
