//! Single-flight downloads: one `Fill` per URL owns the upstream transfer, tees it into the
//! hasher and a temp file, and every client of that URL follows the temp file as it grows.
//!
//! A fill is an explicit state machine observed through a `watch` channel:
//! `Connecting -> Streaming(head) -> Complete(digests)` or `-> Failed(error)`. Readers send
//! bytes as soon as they are written, but never end a response cleanly before the fill is
//! `Complete` (all bytes received, lengths and checksums verified, the blob committed): the
//! last byte of an object is held back until then, so a broken or mismatching transfer always
//! ends in an aborted connection, never a short or wrong "successful" body, and a client that
//! has the whole file finds it stored. A fill does not depend on any client staying
//! connected, and a fill task that dies (panic, cancellation) still fails its readers and
//! frees its URL (`guard`).

mod download;
mod flights;
mod guard;
mod host;
mod live;

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::Stream;
use tokio::sync::watch;

use crate::error::Error;
use crate::store::{Digests, Expected, StoreError};
use crate::upstream::{Head, UpstreamError};
use crate::url::UpstreamUrl;
pub use live::InFlight;

pub use download::{Source, run};
pub use flights::{Flight, Flights};
pub use host::Host;

/// Why a fill failed.
#[derive(Debug, thiserror::Error)]
pub enum FillError {
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{url}: content has {algo} {actual}, expected {expected}", algo = expected.algo.name(), expected = expected.hex)]
    Integrity {
        url: String,
        expected: Expected,
        actual: String,
    },
    #[error("{url}: upstream content changed while retrying ({detail})")]
    Changed { url: String, detail: String },
    /// The primary failed, and so did every mirror alternate.
    #[error("{primary}; mirrors failed too: {}", mirrors.join("; "))]
    Mirrors {
        primary: Box<FillError>,
        mirrors: Vec<String>,
    },
    /// Waited `read_timeout` for an upstream slot (`limits.upstream_concurrency`).
    #[error(transparent)]
    Busy(#[from] crate::limits::UpstreamBusy),
    /// Not stored: the cache volume cannot take it even after a sweep. Each client then
    /// streams it from upstream itself (`X-Cache: BYPASS`).
    #[error("the cache is full; the download is passed through without being stored")]
    Bypass,
    /// Every byte arrived and matched, but committing the blob failed.
    #[error("{url}: downloaded but not stored: {detail}")]
    NotStored { url: String, detail: String },
    /// The fill task ended without an outcome (it panicked or was cancelled).
    #[error("the download of {url} was aborted")]
    Aborted { url: String },
    /// A revalidation's answer: upstream says the copy we have is current (304).
    #[error("{url}: not modified upstream")]
    NotModified { url: String },
}

impl FillError {
    pub(crate) fn is_retryable(&self) -> bool {
        matches!(self, FillError::Upstream(e) if e.is_retryable())
    }

    /// Whether the primary source is unusable, so that mirrors are worth trying.
    fn is_source_failure(&self) -> bool {
        matches!(self, FillError::Upstream(e) if e.is_source_failure())
    }

    /// Trouble on our side (storage, our size limit): no other source would help.
    fn is_local(&self) -> bool {
        matches!(
            self,
            FillError::Store(_)
                | FillError::NotStored { .. }
                | FillError::Bypass
                | FillError::Upstream(UpstreamError::TooLarge { .. })
        )
    }

    /// The error that decides how a failure is reported (the primary's, for `Mirrors`).
    pub fn cause(&self) -> &FillError {
        match self {
            FillError::Mirrors { primary, .. } => primary.cause(),
            other => other,
        }
    }
}

impl From<&FillError> for Error {
    fn from(e: &FillError) -> Self {
        match e {
            FillError::Upstream(u) => Error::from(u),
            FillError::Store(s) => Error::from(s),
            FillError::Integrity { .. } => Error::IntegrityMismatch {
                message: e.to_string(),
                upload: false,
            },
            FillError::Changed { .. } => Error::UpstreamFailed(e.to_string()),
            FillError::Mirrors { primary, .. } => match Error::from(&**primary) {
                Error::UpstreamTimeout(_) => Error::UpstreamTimeout(e.to_string()),
                _ => Error::UpstreamFailed(e.to_string()),
            },
            FillError::Busy(_) => Error::UpstreamTimeout(e.to_string()),
            FillError::Bypass | FillError::NotStored { .. } => Error::Unavailable(e.to_string()),
            FillError::Aborted { .. } | FillError::NotModified { .. } => {
                Error::Internal(e.to_string())
            }
        }
    }
}

/// Where a fill is.
#[derive(Debug, Clone)]
pub enum Phase {
    /// Waiting for upstream's headers (possibly retrying).
    Connecting,
    /// Headers known, bytes arriving.
    Streaming(Arc<Head>),
    /// Every byte received and verified, and the blob committed: in the index, the journal,
    /// and bound to the URL.
    Complete {
        head: Arc<Head>,
        digests: Arc<Digests>,
    },
    Failed(Arc<FillError>),
}

/// What readers observe.
#[derive(Debug, Clone)]
pub struct FillState {
    pub phase: Phase,
    /// Bytes written to the temp file so far (a prefix of the object).
    pub written: u64,
    /// The fill task has done everything it will do: committed (the URL is bound) or failed,
    /// bookkeeping included.
    pub ended: bool,
}

/// One download in progress.
pub struct Fill {
    pub url: UpstreamUrl,
    state: watch::Sender<FillState>,
    file: Arc<File>,
    /// The temp file being written (the sweeper must leave it alone).
    temp_path: std::path::PathBuf,
    /// Progress for the status page, read without touching `state`'s lock.
    live: live::Live,
}

impl Fill {
    fn publish(&self, phase: Phase) {
        self.live.phase(&phase);
        self.state.send_modify(|s| s.phase = phase);
    }

    /// Record that the temp file now holds `written` bytes.
    fn wrote(&self, written: u64) {
        self.live.wrote(written);
        self.state.send_modify(|s| s.written = written);
    }

    /// Its progress, for the status page.
    pub fn progress(&self) -> InFlight {
        self.live.progress(self.url.to_string())
    }

    /// Wait for upstream's headers, or the failure that came instead.
    pub async fn head(&self) -> Result<Arc<Head>, Arc<FillError>> {
        let mut rx = self.state.subscribe();
        loop {
            match &rx.borrow_and_update().phase {
                Phase::Connecting => {}
                Phase::Streaming(head) | Phase::Complete { head, .. } => return Ok(head.clone()),
                Phase::Failed(e) => return Err(e.clone()),
            }
            if rx.changed().await.is_err() {
                unreachable!("the sender lives in the fill we hold");
            }
        }
    }

    pub fn state(&self) -> FillState {
        self.state.borrow().clone()
    }

    /// Wait until the fill task has ended; returns its last state (`Complete` with the URL
    /// bound, unless storing failed; or `Failed`).
    pub async fn ended(&self) -> FillState {
        let mut rx = self.state.subscribe();
        loop {
            if rx.borrow_and_update().ended {
                return rx.borrow().clone();
            }
            if rx.changed().await.is_err() {
                unreachable!("the sender lives in the fill we hold");
            }
        }
    }

    /// The body from `start` to `end` (exclusive; `None`: to the end of the object), as it
    /// arrives. `expected` is the reader's own checksum expectation, checked before the last
    /// byte is released.
    pub fn body(
        self: &Arc<Self>,
        start: u64,
        end: Option<u64>,
        expected: Option<Expected>,
        on_mismatch: impl FnOnce(&Digests) + Send + 'static,
    ) -> impl Stream<Item = Result<Bytes, io::Error>> + Send + 'static {
        let fill = self.clone();
        let reader = live::Reader::new(self.clone());
        let mut rx = self.state.subscribe();
        async_stream::try_stream! {
            // Counted as a client of this download until the response is dropped.
            let _reader = reader;
            let mut pos = start;
            let mut on_mismatch = Some(on_mismatch);
            loop {
                let state = rx.borrow_and_update().clone();
                let (head, digests) = match &state.phase {
                    Phase::Connecting => (None, None),
                    Phase::Streaming(h) => (Some(h.clone()), None),
                    Phase::Complete { head, digests } => (Some(head.clone()), Some(digests.clone())),
                    Phase::Failed(e) => Err(io::Error::other(e.to_string()))?,
                };
                let total = head.as_ref().and_then(|h| h.content_length);
                let end = end.or(total);
                // Verdict on this reader's own expectation, once the digests are known.
                let verified = match (&digests, &expected) {
                    (None, _) => false,
                    (Some(_), None) => true,
                    (Some(d), Some(exp)) if exp.matches(d) => true,
                    (Some(d), Some(exp)) => {
                        if let Some(f) = on_mismatch.take() {
                            f(d);
                        }
                        Err(io::Error::other(format!(
                            "content does not match the expected {exp}"
                        )))?;
                        unreachable!()
                    }
                };
                let holds_last_byte = end.is_some() && (end == total || expected.is_some());
                let mut limit = state.written;
                if let Some(end) = end {
                    limit = limit.min(end);
                    if holds_last_byte && !verified {
                        limit = limit.min(end.saturating_sub(1));
                    }
                }
                if pos < limit {
                    let n = (limit - pos).min(READ_CHUNK as u64) as usize;
                    yield read_at(&fill.file, pos, n)?;
                    pos += n as u64;
                    continue;
                }
                let done = match end {
                    Some(end) => pos >= end && (verified || !holds_last_byte),
                    None => verified && pos >= state.written,
                };
                if done {
                    break;
                }
                if rx.changed().await.is_err() {
                    Err(io::Error::other("download ended unexpectedly"))?;
                }
            }
        }
    }
}

/// Largest piece a reader sends at once: small, because with hundreds of clients following
/// one download every reader holds its own copy of a piece until the socket takes it.
const READ_CHUNK: usize = 32 * 1024;

fn read_at(file: &File, pos: u64, n: usize) -> io::Result<Bytes> {
    // The bytes were just written, so this is a page-cache copy, not disk I/O.
    let mut buf = BytesMut::zeroed(n);
    file.read_exact_at(&mut buf, pos)?;
    Ok(buf.freeze())
}

/// Who asked for a fill, and why, for the audit trail.
#[derive(Debug, Clone, Default)]
pub struct Requester {
    pub client: Option<String>,
    pub expected: Option<Expected>,
    /// Set when the fill revalidates a volatile URL (SPEC 9): the binding it may replace.
    /// The request is conditional, a 304 ends it with [`FillError::NotModified`], and new
    /// bytes rebind the URL (audit `updated`).
    pub revalidating: Option<Arc<crate::index::UrlEntry>>,
}

pub(crate) use crate::worker::jittered as backoff;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn backoff_grows_with_jitter() {
        let base = Duration::from_millis(100);
        for attempt in 1..5 {
            let d = backoff(base, attempt);
            let nominal = base * (1 << (attempt - 1));
            assert!(
                d >= nominal / 2 && d <= nominal * 3 / 2,
                "{d:?} for {attempt}"
            );
        }
        assert!(backoff(Duration::from_secs(10), 30) <= Duration::from_secs(60));
    }
}
