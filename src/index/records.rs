//! The records the index keeps: a blob's metadata (`BlobMeta`) and a bound URL
//! (`UrlRecord`), stored as JSON, and the pair the hit path reads (`UrlEntry`).

use serde::{Deserialize, Serialize};

use crate::store::Digests;

/// Where a blob's bytes came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    Upstream,
    Upload,
}

/// Everything known about one stored blob.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlobMeta {
    #[serde(flatten)]
    pub digests: Digests,
    pub size: u64,
    pub content_type: Option<String>,
    /// Unix seconds.
    pub first_seen: i64,
    /// Unix seconds.
    pub last_access: i64,
    pub access_count: u64,
    pub origin: Origin,
    pub pinned: bool,
    /// Evicted by the sweeper: the bytes are gone, the metadata and history stay (lookups
    /// answer `present: false`), and the blob's URLs are misses again.
    #[serde(default)]
    pub evicted: bool,
    /// s3/obs: the bucket holds the bytes (uploaded and confirmed). Until then the local copy
    /// is the only one, and the sweeper never trims it.
    #[serde(default)]
    pub remote: bool,
    /// s3/obs: the bytes are in the bucket only, not in the local L1 tier (trimmed by the
    /// sweeper, or learned from the shared index). The URLs stay bound: it is still a hit.
    #[serde(default)]
    pub remote_only: bool,
}

impl BlobMeta {
    /// A blob first stored at `now` (Unix seconds): not accessed yet, not pinned, and in the
    /// local store only. The `with_` methods set the rest.
    pub fn new(digests: Digests, size: u64, origin: Origin, now: i64) -> BlobMeta {
        BlobMeta {
            digests,
            size,
            content_type: None,
            first_seen: now,
            last_access: now,
            access_count: 0,
            origin,
            pinned: false,
            evicted: false,
            remote: false,
            remote_only: false,
        }
    }

    /// With the content type upstream or the uploader gave.
    pub fn with_content_type(self, content_type: Option<String>) -> BlobMeta {
        BlobMeta {
            content_type,
            ..self
        }
    }

    /// Pinned or not: the sweeper never evicts a pinned blob.
    pub fn with_pinned(self, pinned: bool) -> BlobMeta {
        BlobMeta { pinned, ..self }
    }

    pub fn blake3(&self) -> &str {
        &self.digests.blake3
    }

    /// Whether the bytes are in the local store (they count against its size).
    pub fn is_local(&self) -> bool {
        !self.evicted && !self.remote_only
    }
}

/// One bound URL and what upstream said about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UrlRecord {
    pub url: String,
    pub blake3: String,
    pub status: u16,
    pub content_type: Option<String>,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    pub final_url: String,
    /// Unix seconds.
    pub fetched_at: i64,
    pub instance: String,
}

/// A bound URL with its blob, as the hit path needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct UrlEntry {
    pub record: UrlRecord,
    pub blob: BlobMeta,
}

impl UrlEntry {
    /// Bytes held beyond the struct: its strings (URLs and upstream's header values can be
    /// long), plus the blob's digests and content type.
    pub(super) fn bytes(&self) -> usize {
        let r = &self.record;
        let opt = |s: &Option<String>| s.as_ref().map_or(0, String::len);
        let b = &self.blob;
        r.url.len()
            + r.blake3.len()
            + r.final_url.len()
            + r.instance.len()
            + opt(&r.content_type)
            + opt(&r.etag)
            + opt(&r.last_modified)
            + opt(&b.content_type)
            + b.digests.md5.len()
            + b.digests.sha256.len()
            + b.digests.sha512.len()
            + b.digests.blake3.len()
            + std::mem::size_of::<UrlEntry>()
    }
}
