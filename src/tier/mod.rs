//! Where blob bytes live besides the data directory: the storage tier. Two implementations
//! of one trait, checked by one conformance suite (`tests/it/tier.rs`):
//!
//! - [`LocalOnly`] (`backend = "fs"`): the data directory is all there is;
//! - [`Bucket`] (`backend = "s3" | "obs"`): the bucket is the durable tier and the shared
//!   index, the data directory its local copy (publishing in [`publish`], streaming blobs
//!   back in [`refill`]).
//!
//! The service talks to a `dyn Tier` only: serving a blob ([`Tier::open_for_serving`])
//! never branches on the backend, nor does a commit, a pin, a delete or a sweep.

pub mod bucket;
pub mod local_only;
pub mod publish;
pub mod refill;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;

use crate::error::Error;
use crate::index::BlobMeta;
use crate::store::Algo;
use crate::url::UpstreamUrl;

pub use bucket::Bucket;
pub use local_only::LocalOnly;

/// A future a tier returns (the trait is used as `dyn Tier`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A response body streamed from a tier.
pub type Body = Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>;

/// How a stored blob is served (attic's `Download`).
pub enum Serving {
    /// The local copy.
    File(Arc<std::fs::File>),
    /// A URL the client fetches the bytes from itself (`serve = "redirect"`).
    Redirect(String),
    /// Bytes the tier streams through ([`Streamer::body`], once the range is known).
    Stream(Streamer),
}

/// A blob the tier streams, not yet opened: the HTTP layer first settles conditionals and
/// the range, and a HEAD opens nothing.
pub struct Streamer {
    tier: Arc<dyn Tier>,
    meta: BlobMeta,
}

impl Streamer {
    pub fn new(tier: Arc<dyn Tier>, meta: BlobMeta) -> Streamer {
        Streamer { tier, meta }
    }

    /// `[start, end)` of the blob; `None`: the tier no longer has it (its index entry is
    /// dropped, resolving again finds what is left).
    pub async fn body(self, start: u64, end: u64) -> Result<Option<Body>, Error> {
        self.tier.clone().read(&self.meta, start, end).await
    }
}

/// A storage tier.
pub trait Tier: Send + Sync + 'static {
    /// Start-up: publish what a previous run left unpublished.
    fn start(&self) -> Result<(), Error>;

    /// A blob was committed to the cache (or pinned): publish it, in the background.
    fn stored(&self, blake3: &str);

    /// A blob was unpinned.
    fn unpinned(&self, blake3: &str);

    /// Before an admin delete of `meta` and its `urls` from the cache: delete the tier's
    /// copy and records first (a failure leaves everything as it was).
    fn delete<'a>(
        &'a self,
        meta: &'a BlobMeta,
        urls: Vec<String>,
    ) -> BoxFuture<'a, Result<(), Error>>;

    /// Before deciding hit or miss: record in the cache what the tier knows about `url`.
    fn learn_url<'a>(&'a self, url: &'a UpstreamUrl) -> BoxFuture<'a, Result<(), Error>>;

    /// The same for a checksum lookup.
    fn learn_checksum<'a>(&'a self, algo: Algo, hex: &'a str) -> BoxFuture<'a, Result<(), Error>>;

    /// Open a stored blob for serving; `None`: its bytes are gone (its index entry was
    /// dropped; resolving again finds what is left).
    fn open_for_serving<'a>(
        self: Arc<Self>,
        meta: &'a BlobMeta,
    ) -> BoxFuture<'a, Result<Option<Serving>, Error>>;

    /// `[start, end)` of a blob the tier holds ([`Serving::Stream`]).
    fn read<'a>(
        self: Arc<Self>,
        meta: &'a BlobMeta,
        start: u64,
        end: u64,
    ) -> BoxFuture<'a, Result<Option<Body>, Error>>;

    /// Blobs were read from the cache (their blake3s): keep them alive in the tier.
    fn touch(&self, read: Vec<String>);

    /// The tier's own cleanup (`cache.remote_max_unused`): blobs deleted and their bytes.
    /// `None`: the tier has none.
    fn sweep(&self) -> Option<BoxFuture<'_, Result<(u64, u64), Error>>>;

    /// What the readiness prober probes besides the data volume.
    fn probe(&self) -> Option<crate::remote::BucketProbe>;

    /// Entries and bytes of the tier's bounded memory ("absent" answers), if it has any.
    fn absent_size(&self) -> Option<(usize, usize)>;

    /// Publications not finished yet.
    fn pending(&self) -> usize;

    /// Wait until every publication started so far has finished (tests, shutdown).
    fn wait_published(&self) -> BoxFuture<'_, ()>;

    /// Stop the tier's background work, waiting up to `deadline`.
    fn stop(&self, deadline: Duration) -> BoxFuture<'_, ()>;
}

/// A tier as the service holds it.
pub type DynTier = Arc<dyn Tier>;

/// Open the tier of `cache`'s configuration (nothing is started: see [`Tier::start`]).
pub fn open(
    cache: &Arc<crate::cache::Cache>,
    bucket: Option<crate::remote::Remote>,
    ready: Arc<crate::readiness::Readiness>,
    admission: Arc<crate::sweeper::Admission>,
) -> DynTier {
    match bucket {
        None => Arc::new(LocalOnly::new(cache.clone())),
        Some(remote) => Bucket::new(cache.clone(), remote, ready, admission),
    }
}
