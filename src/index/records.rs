//! The URL records the index keeps: a bound URL (`UrlRecord`), stored as JSON, and the pair
//! the hit path reads (`UrlEntry`). A blob's metadata is in `meta.rs`.

use serde::{Deserialize, Serialize};

use super::BlobMeta;

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

/// A bound URL with its blob, as the hit path needs it. The blob's read counts are those of
/// its record, without the reads flushed since (`Index::blob` has those).
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
