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

mod flights;
mod guard;
mod live;

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::Stream;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::app::App;
use crate::error::Error;
use crate::store::{Digests, Expected, StoreError, TempBlob, TempWriter};
use crate::upstream::{Head, Resume, UpstreamError};
use crate::url::UpstreamUrl;
pub use live::InFlight;

pub use flights::{Flight, Flights};

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

/// Run a fill to its end: download (with retries), publish progress, commit or fail.
/// Spawned on the background runtime; never tied to a client connection.
pub fn run(
    app: Arc<App>,
    fill: Arc<Fill>,
    temp: TempBlob,
    who: Requester,
) -> impl Future<Output = ()> + Send + 'static {
    // Made before the task first runs, and dropped however it ends: if the task panics, is
    // cancelled, or is dropped before it was ever polled (a runtime shutting down), the guard
    // fails the readers and frees the URL.
    let guard = guard::FillGuard::new(&app, &fill);
    run_guarded(app, fill, temp, who, guard)
}

async fn run_guarded(
    app: Arc<App>,
    fill: Arc<Fill>,
    temp: TempBlob,
    who: Requester,
    guard: guard::FillGuard,
) {
    let started = std::time::Instant::now();
    let bound = who.revalidating.clone();
    match download(&app, &fill, temp, &who).await {
        Ok(Downloaded {
            head,
            temp,
            served,
            digests,
            size,
            source,
        }) => {
            let unchanged = bound
                .as_ref()
                .is_some_and(|b| b.blob.blake3() == digests.blake3);
            if unchanged {
                // Upstream ignored the conditional and sent the bytes we have: nothing to
                // store (dropping the temp file deletes it; readers hold it open).
                drop(temp);
                app.volatile.validated(&fill.url);
                app.flights.remove(&fill);
                fill.publish(Phase::Complete {
                    head,
                    digests: Arc::new(digests),
                });
            } else {
                // Read your writes (SPEC 9): the blob is committed (index, journal) before any
                // reader gets its last byte, so a client that has the whole file finds it by
                // any checksum, in the audit export, and its URL as a hit. The fill leaves the
                // table first, so that a request arriving now is answered from the index.
                match app
                    .commit_fill(temp, &fill.url, &served, &digests, size, &who, source)
                    .await
                {
                    Ok(()) => {
                        info!(
                            url = %fill.url, blake3 = %digests.blake3, size,
                            ms = started.elapsed().as_millis() as u64, "stored"
                        );
                        app.flights.remove(&fill);
                        fill.publish(Phase::Complete {
                            head,
                            digests: Arc::new(digests),
                        });
                    }
                    Err(e) => {
                        // Nothing was stored: no reader may end cleanly, since what it would
                        // then look up is not there. (The error alerts as a storage failure.)
                        let e = Arc::new(FillError::NotStored {
                            url: fill.url.to_string(),
                            detail: e.to_string(),
                        });
                        app.flights.remove(&fill);
                        fill.publish(Phase::Failed(e.clone()));
                        app.fill_failed(&fill.url, &e, &who).await;
                    }
                }
            }
        }
        Err(e) if bound.is_some() => {
            crate::volatile::not_updated(&app, &fill, &e);
            app.flights.remove(&fill);
            fill.publish(Phase::Failed(Arc::new(e)));
        }
        Err(e) => {
            let e = Arc::new(e);
            // Leave the flight table before anyone can see the failure, so a client that
            // retries after its error starts a fresh download instead of joining this one.
            app.flights.remove(&fill);
            fill.publish(Phase::Failed(e.clone()));
            app.fill_failed(&fill.url, &e, &who).await;
        }
    }
    // Marks the fill ended and counts it finished.
    guard.settle();
}

/// Download with retries into `temp`; on success, the temp file and its digests. On failure
/// the temp file is dropped, which deletes it.
async fn download(
    app: &Arc<App>,
    fill: &Fill,
    temp: TempBlob,
    who: &Requester,
) -> Result<Downloaded, FillError> {
    let expected = who.expected.as_ref();
    let cfg = &app.config.upstream;
    // A revalidation asks the primary once: a good copy is at hand, so a client waits for
    // neither retries nor mirrors (whose validators mean nothing for the primary's copy).
    let revalidating = who.revalidating.as_deref();
    let retries = if revalidating.is_some() {
        0
    } else {
        cfg.retries
    };
    // Beyond `upstream_concurrency`, wait for a slot (readers attached to this fill wait with
    // it, still `Connecting`), but no longer than upstream itself may stay silent.
    app.cache.metrics.upstream_waiting.inc();
    let slot = app.limits.upstream_slot(cfg.read_timeout).await;
    app.cache.metrics.upstream_waiting.dec();
    let _slot = slot?;
    let mut progress = Progress {
        writer: TempWriter::new(temp),
        head: None,
        last: None,
    };
    // The primary, then each mirror alternate once the primary failed after its retries.
    let mut sources = vec![fill.url.clone()];
    if revalidating.is_none() {
        sources.extend(app.upstream.alternates(&fill.url));
    }
    let mut primary_error: Option<FillError> = None;
    let mut mirror_errors: Vec<String> = Vec::new();
    let mut served_by = None;
    'sources: for (index, source) in sources.iter().enumerate() {
        if index > 0 {
            if let Err(e) = app.upstream.policy().check_url(source) {
                mirror_errors.push(format!("{source}: {e}"));
                continue;
            }
            warn!(url = %fill.url, mirror = %source, "trying a mirror alternate");
        }
        let mut attempt = 0;
        loop {
            if attempt > 0 {
                tokio::time::sleep(backoff(cfg.retry_backoff, attempt)).await;
                app.cache.metrics.upstream_retries.inc();
            }
            app.cache.metrics.upstream_fetches.inc();
            let result = attempt_once(app, fill, &mut progress, source, index, revalidating).await;
            match result {
                Ok(()) => {
                    served_by = Some(index);
                    break 'sources;
                }
                Err(e) if e.is_retryable() && attempt < retries => {
                    warn!(url = %source, attempt, error = %e, "upstream attempt failed; retrying");
                    attempt += 1;
                }
                // The primary is down: the alternates are next.
                Err(e) if index == 0 && e.is_source_failure() && sources.len() > 1 => {
                    warn!(url = %source, error = %e, "upstream failed; trying mirrors");
                    primary_error = Some(e);
                    continue 'sources;
                }
                Err(e) if index == 0 => return Err(e),
                // Whatever a mirror says, the next one may do better; only local trouble
                // (storage, our own size limit) ends the fill at once.
                Err(e) if e.is_local() => return Err(e),
                Err(e) => {
                    warn!(url = %source, error = %e, "mirror alternate failed");
                    mirror_errors.push(e.to_string());
                    continue 'sources;
                }
            }
        }
    }
    let Some(index) = served_by else {
        return Err(FillError::Mirrors {
            primary: Box::new(primary_error.expect("the primary failed before any mirror")),
            mirrors: mirror_errors,
        });
    };
    let head = progress.head.expect("a successful attempt has a head");
    let (_, last) = progress.last.expect("a successful attempt has a head");
    let (temp, digests, size) = progress.writer.finish();
    if let Some((algo, hex)) = expected.and_then(|exp| exp.mismatch(&digests)) {
        return Err(FillError::Integrity {
            url: fill.url.to_string(),
            expected: Expected::new(algo, hex.to_owned()),
            actual: digests.get(algo).to_owned(),
        });
    }
    let source = (index > 0).then(|| Source {
        url: sources[index].to_string(),
        primary_error: primary_error.map(|e| e.to_string()).unwrap_or_default(),
    });
    Ok(Downloaded {
        head,
        temp,
        served: last,
        digests,
        size,
        source,
    })
}

/// A finished download, verified but not yet committed.
struct Downloaded {
    /// The first answer's headers (what readers were told).
    head: Arc<Head>,
    /// The complete temp file, ready to commit.
    temp: TempBlob,
    /// The headers of the answer that delivered the last bytes (what is recorded).
    served: Arc<Head>,
    digests: Digests,
    size: u64,
    /// Set when a mirror alternate served the bytes.
    source: Option<Source>,
}

/// A mirror alternate that served a download instead of the primary.
#[derive(Debug, Clone)]
pub struct Source {
    pub url: String,
    pub primary_error: String,
}

/// What survives from one attempt to the next.
struct Progress {
    /// The temp file and the hash of its bytes; its length is the fill's `written`.
    writer: TempWriter,
    /// Headers of the first answer, the one readers were told about.
    head: Option<Arc<Head>>,
    /// The latest answer and the index of the source that gave it: a resume must go back to
    /// the same source, whose validators the request quotes.
    last: Option<(usize, Arc<Head>)>,
}

/// One upstream attempt at `source` (index `index` in the fill's list of sources). A retry
/// after bytes were already stored asks the same source to continue after them (HTTP `Range`
/// with `If-Range`, FTP `REST`); when it cannot or will not, it reads the object from the
/// start again, checks that the bytes we have are the bytes it sends, and continues after them.
async fn attempt_once(
    app: &Arc<App>,
    fill: &Fill,
    progress: &mut Progress,
    source: &UpstreamUrl,
    index: usize,
    revalidating: Option<&crate::index::UrlEntry>,
) -> Result<(), FillError> {
    // As errors show it: without a password.
    let shown = fill.url.to_string();
    let url = shown.as_str();
    let have = progress.writer.len();
    let resume = match &progress.last {
        Some((i, last)) if *i == index && have > 0 => Some(Resume {
            offset: have,
            if_range: Resume::validator(last),
            length: last.content_length,
        }),
        _ => None,
    };
    let mut dl = match revalidating {
        Some(bound) if progress.head.is_none() => {
            crate::volatile::conditional_get(app, source, bound).await?
        }
        _ => app.upstream.get(source, resume.as_ref()).await?,
    };
    let head = Arc::new(dl.head.clone());
    match &progress.head {
        None => {
            // Admission: an object that would push the cache over its high watermark first
            // triggers a sweep; if there is still no room, it is not stored at all.
            if let Some(len) = head.content_length {
                if !app.admit(len).await {
                    return Err(FillError::Bypass);
                }
            }
            progress.head = Some(head.clone());
            fill.publish(Phase::Streaming(head.clone()));
        }
        // Validators mean something only between answers of one server.
        Some(first) => same_object(
            url,
            first,
            &head,
            progress.last.as_ref().is_some_and(|(i, _)| *i == index),
        )?,
    }
    progress.last = Some((index, head));
    let mut pos = dl.offset;
    if pos > have {
        return Err(FillError::Changed {
            url: url.to_owned(),
            detail: format!("upstream resumed at {pos}, after the {have} bytes stored"),
        });
    }
    if pos > 0 {
        info!(url = %fill.url, offset = pos, "upstream resumed the transfer");
    }
    while let Some(chunk) = dl.chunk().await? {
        let mut data = &chunk[..];
        if pos < have {
            let n = ((have - pos) as usize).min(data.len());
            verify_prefix(url, progress.writer.temp(), pos, &data[..n])?;
            pos += n as u64;
            data = &data[n..];
        }
        if data.is_empty() {
            continue;
        }
        let written = progress.writer.len();
        #[cfg(debug_assertions)]
        app.flights.panic_hook.check(&fill.url, written);
        app.upstream
            .policy()
            .check_size(url, written + data.len() as u64)?;
        progress.writer.append(data)?;
        pos += data.len() as u64;
        fill.wrote(progress.writer.len());
    }
    if pos < have {
        return Err(FillError::Changed {
            url: url.to_owned(),
            detail: format!("the new answer has {pos} bytes, fewer than the {have} already stored"),
        });
    }
    Ok(())
}

/// A retry must be the same object as the first answer: same length, and, when both answers
/// come from the same server (`validators`), the same ETag and Last-Modified.
fn same_object(url: &str, first: &Head, again: &Head, validators: bool) -> Result<(), FillError> {
    let differs = |what: &str, a: &Option<String>, b: &Option<String>| {
        (validators && a.is_some() && b.is_some() && a != b)
            .then(|| format!("{what} {a:?} became {b:?}"))
    };
    let length = (first.content_length != again.content_length).then(|| {
        format!(
            "length {:?} became {:?}",
            first.content_length, again.content_length
        )
    });
    match length
        .or_else(|| differs("ETag", &first.etag, &again.etag))
        .or_else(|| differs("Last-Modified", &first.last_modified, &again.last_modified))
    {
        Some(detail) => Err(FillError::Changed {
            url: url.to_owned(),
            detail,
        }),
        None => Ok(()),
    }
}

fn verify_prefix(url: &str, temp: &TempBlob, pos: u64, data: &[u8]) -> Result<(), FillError> {
    let mut have = vec![0u8; data.len()];
    temp.file()
        .read_exact_at(&mut have, pos)
        .map_err(|e| FillError::Changed {
            url: url.to_owned(),
            detail: format!("cannot read back stored bytes: {e}"),
        })?;
    if have != data {
        return Err(FillError::Changed {
            url: url.to_owned(),
            detail: format!("bytes differ from offset {pos}"),
        });
    }
    Ok(())
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

    #[test]
    fn retry_must_be_same_object() {
        let h = |len, etag: Option<&str>| Head {
            status: 200,
            content_length: len,
            content_type: None,
            etag: etag.map(str::to_owned),
            last_modified: None,
            final_url: "u".into(),
        };
        assert!(same_object("u", &h(Some(3), Some("a")), &h(Some(3), Some("a")), true).is_ok());
        assert!(same_object("u", &h(Some(3), None), &h(Some(3), Some("a")), true).is_ok());
        assert!(same_object("u", &h(Some(3), Some("a")), &h(Some(3), Some("b")), true).is_err());
        assert!(same_object("u", &h(Some(3), None), &h(Some(4), None), true).is_err());
        // Another server (a mirror) has its own validators; the length must still agree.
        assert!(same_object("u", &h(Some(3), Some("a")), &h(Some(3), Some("b")), false).is_ok());
        assert!(same_object("u", &h(Some(3), Some("a")), &h(Some(4), Some("a")), false).is_err());
    }
}
