//! Request targets of the mirror and proxy forms, normalized once: normalization (IDNA,
//! escapes, dot segments) is a pure function of the target and costs more than the rest of a
//! hit's bookkeeping, while builds ask for the same targets over and over.
//!
//! Only targets that turned out to be hits are cached, with their prepared hit headers, in a
//! cache bounded in entries and bytes: a target refused by policy, failing upstream or never
//! stored takes no room, however many of them a client sends.

use std::sync::Arc;

use actix_web::{HttpRequest, web};
use parking_lot::Mutex;

use super::serve::HitHead;
use crate::bounded::BoundedLru;
use crate::error::Error;
use crate::index::UrlEntry;
use crate::url::{UpstreamUrl, UrlError};

/// Targets cached at most.
pub const MAX_TARGETS: usize = 16_384;
/// Bytes of cached targets at most (raw target, normalized URL, hit headers and, for blobs
/// of at most 32 KiB, the body each).
pub const MAX_TARGET_BYTES: usize = 32 << 20;

/// Raw request targets that were hits -> their normalized URL and hit headers.
pub struct TargetCache(Mutex<BoundedLru<Arc<Target>>>);

/// A request target's URL, and the prepared hit headers of the blob it was last bound to.
pub struct Target {
    pub url: UpstreamUrl,
    head: Mutex<Option<(Arc<UrlEntry>, Arc<HitHead>)>>,
}

impl Target {
    pub fn new(url: UpstreamUrl) -> Arc<Target> {
        Arc::new(Target {
            url,
            head: Mutex::new(None),
        })
    }

    /// The hit headers for `entry`, reused while the URL stays bound to the same entry.
    pub fn hit_head(&self, entry: &Arc<UrlEntry>, make: impl FnOnce() -> HitHead) -> Arc<HitHead> {
        let mut slot = self.head.lock();
        if let Some((e, h)) = &*slot {
            if Arc::ptr_eq(e, entry) {
                return h.clone();
            }
        }
        let h = make();
        if let Some((_, old)) = &*slot {
            h.keep_body_of(old);
        }
        let h = Arc::new(h);
        *slot = Some((entry.clone(), h.clone()));
        h
    }

    /// Bytes this target holds beyond its own size.
    fn bytes(&self) -> usize {
        self.url.as_str().len() + self.head.lock().as_ref().map_or(0, |(_, h)| h.bytes())
    }
}

/// A parsed target and, unless it came from the cache, the raw target to cache it under
/// once it proves to be a hit.
pub struct Parsed {
    pub target: Arc<Target>,
    uncached: Option<String>,
}

impl Parsed {
    /// A target that is never cached (the fetch form).
    pub fn uncached(url: UpstreamUrl) -> Parsed {
        Parsed {
            target: Target::new(url),
            uncached: None,
        }
    }

    /// The target was served as a hit: cache it (once).
    pub fn hit(&self, req: &HttpRequest) {
        let (Some(raw), Some(cache)) = (&self.uncached, req.app_data::<web::Data<TargetCache>>())
        else {
            return;
        };
        let bytes = self.target.bytes();
        cache.0.lock().put(raw.clone(), self.target.clone(), bytes);
    }
}

impl TargetCache {
    pub fn new() -> Self {
        TargetCache(Mutex::new(BoundedLru::new(MAX_TARGETS, MAX_TARGET_BYTES)))
    }

    /// Entries and bytes cached.
    pub fn size(&self) -> (usize, usize) {
        let c = self.0.lock();
        (c.len(), c.bytes())
    }

    /// The target `raw`, from the cache or parsed with `parse`.
    pub fn parse(
        req: &HttpRequest,
        raw: &str,
        parse: impl FnOnce(&str) -> Result<UpstreamUrl, UrlError>,
    ) -> Result<Parsed, Error> {
        let cache = req.app_data::<web::Data<TargetCache>>();
        if let Some(target) = cache.and_then(|c| c.0.lock().get(raw).cloned()) {
            return Ok(Parsed {
                target,
                uncached: None,
            });
        }
        Ok(Parsed {
            target: Target::new(parse(raw)?),
            uncached: Some(raw.to_owned()),
        })
    }
}
