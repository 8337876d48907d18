//! What the index knows about one blob: [`BlobMeta`], its [`Origin`] and [`Placement`], and
//! the form it is stored in (unchanged since 0.1).

use serde::{Deserialize, Serialize};

use crate::store::Digests;

/// Where a blob's bytes came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    Upstream,
    Upload,
}

/// Where a blob's bytes are: the one word the lifecycle (`crate::cache::lifecycle`) changes.
///
/// ```text
///   Local --publish--> Replicated --drop_local--> RemoteOnly
///     ^                  |    ^                       |
///     |                  |    +------restore_local----+
///     +------------------+--------(any)--evict--> Evicted --bind again--> Local
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Placement {
    /// In the local store only (with an object store: not yet safe in the bucket, so the
    /// sweeper never trims it).
    #[default]
    Local,
    /// s3/obs: in the local store and in the bucket (uploaded and confirmed).
    Replicated,
    /// s3/obs: in the bucket only, not in the local L1 tier (trimmed by the sweeper, or
    /// learned from the shared index). The URLs stay bound: it is still a hit.
    RemoteOnly,
    /// Evicted by the sweeper: the bytes are gone, the metadata and history stay (lookups
    /// answer `present: false`), and the blob's URLs are misses again.
    Evicted,
}

impl Placement {
    /// Whether the bytes are in the local store (they count against its size).
    pub fn is_local(self) -> bool {
        matches!(self, Placement::Local | Placement::Replicated)
    }

    /// Whether the bucket holds the bytes.
    pub fn in_bucket(self) -> bool {
        matches!(self, Placement::Replicated | Placement::RemoteOnly)
    }

    pub fn is_evicted(self) -> bool {
        self == Placement::Evicted
    }

    /// The three booleans of the stored form (`evicted`, `remote`, `remote_only`).
    pub(super) fn to_flags(self) -> (bool, bool, bool) {
        match self {
            Placement::Local => (false, false, false),
            Placement::Replicated => (false, true, false),
            Placement::RemoteOnly => (false, true, true),
            Placement::Evicted => (true, false, false),
        }
    }

    /// Read the stored booleans. `remote_only` without `remote` was never written (the old
    /// `set_tier` cleared it): taken as local.
    pub(super) fn from_flags(evicted: bool, remote: bool, remote_only: bool) -> Placement {
        match (evicted, remote, remote_only) {
            (true, _, _) => Placement::Evicted,
            (false, true, true) => Placement::RemoteOnly,
            (false, true, false) => Placement::Replicated,
            (false, false, _) => Placement::Local,
        }
    }
}

/// Everything known about one stored blob.
///
/// Stored (in the index and in the bucket's shared records) as `StoredBlobMeta`: the
/// placement as the three booleans it has always been written as, so data directories and
/// buckets written by earlier versions open, and instances of both versions share a bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "StoredBlobMeta", into = "StoredBlobMeta")]
pub struct BlobMeta {
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
    pub placement: Placement,
}

/// The serialized form of [`BlobMeta`] (unchanged since the first release).
#[derive(Serialize, Deserialize)]
struct StoredBlobMeta {
    #[serde(flatten)]
    digests: Digests,
    size: u64,
    content_type: Option<String>,
    first_seen: i64,
    last_access: i64,
    access_count: u64,
    origin: Origin,
    pinned: bool,
    #[serde(default)]
    evicted: bool,
    #[serde(default)]
    remote: bool,
    #[serde(default)]
    remote_only: bool,
}

/// What counting the totals needs of a stored blob record: its size and placement. The
/// digests and the rest are skipped, not decoded (a full decode, with its flattened digests,
/// is most of the count's time at a million blobs).
#[derive(Deserialize)]
pub(super) struct Sizing {
    pub size: u64,
    #[serde(default)]
    evicted: bool,
    #[serde(default)]
    remote: bool,
    #[serde(default)]
    remote_only: bool,
}

impl Sizing {
    pub fn placement(&self) -> Placement {
        Placement::from_flags(self.evicted, self.remote, self.remote_only)
    }
}

impl From<StoredBlobMeta> for BlobMeta {
    fn from(s: StoredBlobMeta) -> BlobMeta {
        BlobMeta {
            digests: s.digests,
            size: s.size,
            content_type: s.content_type,
            first_seen: s.first_seen,
            last_access: s.last_access,
            access_count: s.access_count,
            origin: s.origin,
            pinned: s.pinned,
            placement: Placement::from_flags(s.evicted, s.remote, s.remote_only),
        }
    }
}

impl From<BlobMeta> for StoredBlobMeta {
    fn from(m: BlobMeta) -> StoredBlobMeta {
        let (evicted, remote, remote_only) = m.placement.to_flags();
        StoredBlobMeta {
            digests: m.digests,
            size: m.size,
            content_type: m.content_type,
            first_seen: m.first_seen,
            last_access: m.last_access,
            access_count: m.access_count,
            origin: m.origin,
            pinned: m.pinned,
            evicted,
            remote,
            remote_only,
        }
    }
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
            placement: Placement::Local,
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
        self.placement.is_local()
    }

    /// Whether the blob is stored anywhere (not evicted).
    pub fn is_stored(&self) -> bool {
        !self.placement.is_evicted()
    }
}

/// Reads of a blob not yet folded into its record: kept apart (the `reads` table) so that
/// the periodic access flush writes 16 bytes per blob read, not its whole record. The blob's
/// read count is its record's plus `count`; its last access, the later of the two.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Reads {
    pub count: u64,
    pub last: i64,
}

impl Reads {
    pub const LEN: usize = 16;

    /// Little-endian count, then last access.
    pub fn encode(self) -> [u8; Reads::LEN] {
        let mut out = [0u8; Reads::LEN];
        out[..8].copy_from_slice(&self.count.to_le_bytes());
        out[8..].copy_from_slice(&self.last.to_le_bytes());
        out
    }

    /// `None` for a value of another length.
    pub fn decode(v: &[u8]) -> Option<Reads> {
        let v: &[u8; Reads::LEN] = v.try_into().ok()?;
        let (count, last) = v.split_at(8);
        Some(Reads {
            count: u64::from_le_bytes(count.try_into().ok()?),
            last: i64::from_le_bytes(last.try_into().ok()?),
        })
    }

    /// These reads and `more`.
    pub fn add(self, more: Reads) -> Reads {
        Reads {
            count: self.count + more.count,
            last: self.last.max(more.last),
        }
    }

    pub fn fold_into(self, meta: &mut BlobMeta) {
        meta.access_count += self.count;
        meta.last_access = meta.last_access.max(self.last);
    }
}
