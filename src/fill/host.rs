//! What a fill needs from the service that runs it. The service implements [`Host`]; the
//! fill never names it (dependencies point one way: service -> fill -> cache).

use std::future::Future;

use super::{FillError, Flights, Requester, Source};
use crate::cache::Cache;
use crate::error::Error;
use crate::limits::Limits;
use crate::store::{Digests, TempBlob};
use crate::upstream::{Head, Upstream};
use crate::url::UpstreamUrl;
use crate::volatile::Volatile;

/// The service a fill runs in.
pub trait Host: Send + Sync + 'static {
    fn cache(&self) -> &Cache;
    fn upstream(&self) -> &Upstream;
    fn flights(&self) -> &Flights;
    fn limits(&self) -> &Limits;
    fn volatile(&self) -> &Volatile;

    /// Admission control: whether `incoming` more bytes may be stored.
    fn admit(&self, incoming: u64) -> impl Future<Output = bool> + Send;

    /// Store a completed fill: commit the file, journal it, bind the URL, make it durable.
    #[allow(clippy::too_many_arguments)]
    fn commit_fill(
        &self,
        temp: TempBlob,
        url: &UpstreamUrl,
        head: &Head,
        digests: &Digests,
        size: u64,
        who: &Requester,
        source: Option<Source>,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Account for a failed fill: negative cache, metrics, journal, alerts.
    fn fill_failed(
        &self,
        url: &UpstreamUrl,
        e: &FillError,
        who: &Requester,
    ) -> impl Future<Output = ()> + Send;
}
