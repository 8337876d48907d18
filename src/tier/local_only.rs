//! `backend = "fs"`: the data directory is the only tier. Serving opens the local file;
//! everything else has nothing to do.

use std::sync::Arc;
use std::time::Duration;

use super::{Body, BoxFuture, Serving, Tier};
use crate::cache::Cache;
use crate::error::Error;
use crate::index::BlobMeta;
use crate::store::Algo;
use crate::url::UpstreamUrl;

pub struct LocalOnly {
    cache: Arc<Cache>,
}

impl LocalOnly {
    pub fn new(cache: Arc<Cache>) -> LocalOnly {
        LocalOnly { cache }
    }
}

impl Tier for LocalOnly {
    fn start(&self) -> Result<(), Error> {
        Ok(())
    }

    fn stored(&self, _: &str) {}

    fn unpinned(&self, _: &str) {}

    fn delete<'a>(&'a self, _: &'a BlobMeta, _: Vec<String>) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async { Ok(()) })
    }

    fn learn_url<'a>(&'a self, _: &'a UpstreamUrl) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async { Ok(()) })
    }

    fn learn_checksum<'a>(&'a self, _: Algo, _: &'a str) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async { Ok(()) })
    }

    fn open_for_serving<'a>(
        self: Arc<Self>,
        meta: &'a BlobMeta,
    ) -> BoxFuture<'a, Result<Option<Serving>, Error>> {
        Box::pin(async move { Ok(self.cache.open_blob(meta)?.map(Serving::File)) })
    }

    fn read<'a>(
        self: Arc<Self>,
        meta: &'a BlobMeta,
        _: u64,
        _: u64,
    ) -> BoxFuture<'a, Result<Option<Body>, Error>> {
        Box::pin(async move {
            Err(Error::Internal(format!(
                "blob {} has no copy outside the data directory",
                meta.blake3()
            )))
        })
    }

    fn touch(&self, _: Vec<String>) {}

    fn sweep(&self) -> Option<BoxFuture<'_, Result<(u64, u64), Error>>> {
        None
    }

    fn probe(&self) -> Option<crate::remote::BucketProbe> {
        None
    }

    fn absent_size(&self) -> Option<(usize, usize)> {
        None
    }

    fn pending(&self) -> usize {
        0
    }

    fn wait_published(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    fn stop(&self, _: Duration) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}
