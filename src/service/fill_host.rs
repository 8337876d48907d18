//! The service as the host of its fills ([`fill::Host`]): what a fill stores and what its
//! failure is accounted as.

use tracing::warn;

use super::Service;
use crate::alerts::Kind;
use crate::audit::{Event, UpstreamInfo};
use crate::cache::Cache;
use crate::error::Error;
use crate::fill::{self, FillError, Flights, Requester};
use crate::index::{BlobMeta, Origin, UrlRecord};
use crate::limits::Limits;
use crate::store::{Digests, TempBlob};
use crate::upstream::{Head, Upstream, UpstreamError};
use crate::url::UpstreamUrl;
use crate::volatile::Volatile;

impl fill::Host for Service {
    fn cache(&self) -> &Cache {
        &self.cache
    }

    fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    fn flights(&self) -> &Flights {
        &self.flights
    }

    fn limits(&self) -> &Limits {
        &self.limits
    }

    fn volatile(&self) -> &Volatile {
        &self.volatile
    }

    async fn admit(&self, incoming: u64) -> bool {
        Service::admit(self, incoming).await
    }

    /// Store a completed fill: commit the file, journal it, bind the URL, make it durable.
    async fn commit_fill(
        &self,
        temp: TempBlob,
        url: &UpstreamUrl,
        head: &Head,
        digests: &Digests,
        size: u64,
        who: &Requester,
        source: Option<fill::Source>,
    ) -> Result<(), Error> {
        let now = self.cache.clock.unix_now();
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
            instance: self.cache.instance.clone(),
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
        self.store_blob(temp, meta, Some(record), event).await?;
        // Validated now: the binding (and its `fetched_at`) is brand new.
        if self.volatile.matches(url) {
            self.volatile.validated(url);
        }
        Ok(())
    }

    /// Account for a failed fill: negative cache, metrics, journal, alerts.
    async fn fill_failed(&self, url: &UpstreamUrl, e: &FillError, who: &Requester) {
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
                self.cache.alerts.raise(
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
            FillError::Store(s) => self.cache.storage_failed(s),
            FillError::Integrity { .. } => {
                // The shown form of the URL: alerts leave the machine, passwords must not.
                self.cache
                    .alerts
                    .raise(Kind::IntegrityFailed, &url.to_string(), e.to_string())
            }
            _ => {
                self.cache.metrics.upstream_failures.inc();
                self.cache
                    .alerts
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
        let journal = self.cache.journal.clone();
        let written = tokio::task::spawn_blocking(move || journal.append(event)).await;
        if let Ok(Err(e)) = written {
            warn!(error = %e, "cannot write audit event");
        }
    }
}
