//! Revalidation and drift detection: download a cached URL from upstream again, without
//! serving it, and compare the bytes with the blob the URL is bound to.
//!
//! URLs are immutable once bound (SPEC 1): when upstream now serves other bytes (a tarball
//! regenerated or replaced under the same URL), the binding does not change and the original
//! bytes keep being served. The new bytes are stored as an unbound, pinned blob for
//! inspection, a `drift` audit event records both sets of digests, and a `drift` alert is
//! sent. Rebinding stays an explicit admin action (an upload with `replace=true`).

use std::sync::Arc;

use super::Submitter;
use crate::alerts::Kind;
use crate::audit::{Event, UpstreamInfo};
use crate::cache::Cache;
use crate::error::Error;
use crate::fill::FillError;
use crate::index::{BlobMeta, Origin};
use crate::store::{Digests, TempBlob, TempWriter};
use crate::tier::DynTier;
use crate::upstream::{Head, Upstream};
use crate::url::UpstreamUrl;

/// What a revalidation found.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Upstream serves the bound bytes.
    Unchanged,
    /// Upstream serves other bytes, now stored unbound: this blob.
    Drift(BlobMeta),
}

/// The blob `url` is bound to, if it is bound and its bytes are here.
pub fn bound_blob(cache: &Cache, url: &UpstreamUrl) -> Result<Option<BlobMeta>, Error> {
    let Some(entry) = cache.index.url(url.as_str())? else {
        return Ok(None);
    };
    Ok(cache.open_blob(&entry.blob)?.map(|_| entry.blob.clone()))
}

/// Download `url` again (with the usual retries) and compare it with `bound`. New bytes are
/// committed to `cache` and handed to `tier`.
pub async fn revalidate(
    cache: &Arc<Cache>,
    upstream: &Upstream,
    tier: &DynTier,
    url: &UpstreamUrl,
    bound: &BlobMeta,
    who: &Submitter,
) -> Result<Outcome, Error> {
    let cfg = &cache.config.upstream;
    let mut attempt = 0;
    let (temp, digests, size, head) = loop {
        if attempt > 0 {
            tokio::time::sleep(crate::fill::backoff(cfg.retry_backoff, attempt)).await;
        }
        match download(cache, upstream, url).await {
            Ok(done) => break done,
            Err(e) if e.is_retryable() && attempt < cfg.retries => attempt += 1,
            Err(e) => return Err(Error::from(&e)),
        }
    };
    if digests.blake3 == bound.digests.blake3 {
        // Dropping the temp file deletes it.
        drop(temp);
        return Ok(Outcome::Unchanged);
    }
    let now = cache.clock.unix_now();
    // Pinned: kept for inspection until an admin unpins or deletes it.
    let meta = BlobMeta::new(digests.clone(), size, Origin::Upstream, now)
        .with_content_type(head.content_type.clone())
        .with_pinned(true);
    let describe = |d: &Digests, size: u64| {
        format!(
            "blake3 {} sha256 {} md5 {} size {size}",
            d.blake3, d.sha256, d.md5
        )
    };
    let detail = format!(
        "upstream content changed; still serving the bound blob ({}); upstream now sends ({}), kept unbound",
        describe(&bound.digests, bound.size),
        describe(&digests, size)
    );
    let mut event = Event::new("drift").with_digests(&digests, size);
    event.url = Some(url.to_string());
    event.client = who.client.clone();
    event.actor = who.actor.clone();
    event.upstream = Some(UpstreamInfo {
        status: Some(head.status),
        etag: head.etag.clone(),
        last_modified: head.last_modified.clone(),
        final_url: Some(head.final_url.clone()),
    });
    event.detail = Some(detail.clone());
    let (stored, _) = cache.commit_blob(temp, meta, None, event).await?;
    tier.stored(stored.blake3());
    tracing::warn!(url = %url, bound = %bound.digests.blake3, upstream = %digests.blake3, "drift: upstream content changed");
    send_drift_alert(cache, url, detail);
    Ok(Outcome::Drift(stored))
}

/// The `drift` webhook alert (SPEC 6), de-duplicated per URL.
fn send_drift_alert(cache: &Cache, url: &UpstreamUrl, message: String) {
    cache
        .alerts
        .raise(Kind::Drift, &url.to_string(), format!("{url}: {message}"));
}

/// One download into a temp file, hashed on the way; nothing is served or bound.
async fn download(
    cache: &Cache,
    upstream: &Upstream,
    url: &UpstreamUrl,
) -> Result<(TempBlob, Digests, u64, Head), FillError> {
    let mut dl = upstream.get(url, None).await?;
    let mut writer = TempWriter::new(cache.store.create_temp()?);
    while let Some(chunk) = dl.chunk().await? {
        upstream
            .policy()
            .check_size(url.as_str(), writer.len() + chunk.len() as u64)?;
        writer.append(&chunk)?;
    }
    let (temp, digests, size) = writer.finish();
    Ok((temp, digests, size, dl.head))
}
