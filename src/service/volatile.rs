//! Volatile URLs (SPEC 9) as the service resolves them: fresh copies are hits, stale ones
//! are revalidated by a conditional fill that every request meanwhile joins.

use std::sync::Arc;

use super::{Resolution, Service};
use crate::error::Error;
use crate::fill::{FillError, Flight, Phase, Requester};
use crate::index::{BlobMeta, UrlEntry};
use crate::time::unix_now;
use crate::url::UpstreamUrl;

impl Service {
    /// A stored volatile URL: its copy while fresh, else the revalidation to follow (one per URL:
    /// a fill in the flight table, joined by every request meanwhile).
    pub(crate) fn resolve_volatile(
        self: &Arc<Self>,
        url: &UpstreamUrl,
        entry: Arc<UrlEntry>,
        client: Option<String>,
    ) -> Result<Resolution, Error> {
        let app = self;
        let fresh = |entry: &UrlEntry| app.volatile.is_fresh(url, &entry.record, unix_now());
        if fresh(&entry) {
            return Ok(Resolution::Hit(entry));
        }
        if app.readiness.unready_reason().is_some() {
            return Ok(Resolution::Stale(entry));
        }
        // Under the flight lock: a revalidation that ended while we looked made it fresh.
        let check = || -> Result<Option<Arc<UrlEntry>>, Error> {
            Ok(app.cache.index.url(url.as_str())?.filter(|e| fresh(e)))
        };
        let who = Requester {
            client,
            expected: None,
            revalidating: Some(entry.clone()),
        };
        Ok(match app.join_or_spawn(url, check, who)? {
            Flight::Joined(fill) | Flight::Started(fill, ()) => Resolution::Revalidate {
                fill,
                stored: entry,
            },
            Flight::Stored(entry) => Resolution::Hit(entry),
        })
    }

    /// Revalidate volatile `url` now, however recently it was validated (the admin's revalidate
    /// job): the blob it is bound to afterwards when that changed, `None` when upstream confirmed
    /// the copy (or sent the same bytes).
    pub(crate) async fn revalidate_now(
        self: &Arc<Self>,
        url: &UpstreamUrl,
        bound: Arc<UrlEntry>,
        client: Option<String>,
    ) -> Result<Option<BlobMeta>, Error> {
        let app = self;
        let who = Requester {
            client,
            expected: None,
            revalidating: Some(bound.clone()),
        };
        let fill = match app.join_or_spawn(url, || Ok(None), who)? {
            Flight::Joined(fill) | Flight::Started(fill, ()) => fill,
            Flight::Stored(_) => return Ok(None),
        };
        if let Phase::Failed(e) = fill.ended().await.phase {
            return match &*e {
                FillError::NotModified { .. } => Ok(None),
                e => Err(Error::from(e)),
            };
        }
        let now = app.cache.index.url(url.as_str())?;
        Ok(now
            .filter(|e| e.blob.blake3() != bound.blob.blake3())
            .map(|e| e.blob.clone()))
    }
}
