//! A fill's task: download with retries (resuming where it can, mirrors after the primary),
//! then commit or fail, through the [`Host`] that runs it.

use std::os::unix::fs::FileExt;
use std::sync::Arc;

use tracing::{info, warn};

use super::guard::FillGuard;
use super::{Fill, FillError, Host, Phase, Requester, backoff};
use crate::index::UrlEntry;
use crate::store::{Digests, Expected, TempBlob, TempWriter};
use crate::upstream::{Conditional, Download, Head, Resume, Upstream, Validators};
use crate::url::UpstreamUrl;
use crate::volatile::Volatile;

/// Run a fill to its end: download (with retries), publish progress, commit or fail.
/// Spawned on the background runtime; never tied to a client connection.
pub fn run<H: Host>(
    app: Arc<H>,
    fill: Arc<Fill>,
    temp: TempBlob,
    who: Requester,
) -> impl Future<Output = ()> + Send + 'static {
    // Made before the task first runs, and dropped however it ends: if the task panics, is
    // cancelled, or is dropped before it was ever polled (a runtime shutting down), the guard
    // fails the readers and frees the URL.
    let guard = FillGuard::new(&app, &fill);
    run_guarded(app, fill, temp, who, guard)
}

async fn run_guarded<H: Host>(
    app: Arc<H>,
    fill: Arc<Fill>,
    temp: TempBlob,
    who: Requester,
    guard: FillGuard<H>,
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
                app.volatile().validated(&fill.url);
                app.flights().remove(&fill);
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
                        app.flights().remove(&fill);
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
                        app.flights().remove(&fill);
                        fill.publish(Phase::Failed(e.clone()));
                        app.fill_failed(&fill.url, &e, &who).await;
                    }
                }
            }
        }
        Err(e) if bound.is_some() => {
            not_updated(app.volatile(), &fill, &e);
            app.flights().remove(&fill);
            fill.publish(Phase::Failed(Arc::new(e)));
        }
        Err(e) => {
            let e = Arc::new(e);
            // Leave the flight table before anyone can see the failure, so a client that
            // retries after its error starts a fresh download instead of joining this one.
            app.flights().remove(&fill);
            fill.publish(Phase::Failed(e.clone()));
            app.fill_failed(&fill.url, &e, &who).await;
        }
    }
    // Marks the fill ended and counts it finished.
    guard.settle();
}

/// Download with retries into `temp`; on success, the temp file and its digests. On failure
/// the temp file is dropped, which deletes it.
async fn download<H: Host>(
    app: &Arc<H>,
    fill: &Fill,
    temp: TempBlob,
    who: &Requester,
) -> Result<Downloaded, FillError> {
    let expected = who.expected.as_ref();
    let cfg = &app.cache().config.upstream;
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
    app.cache().metrics.upstream_waiting.inc();
    let slot = app.limits().upstream_slot(cfg.read_timeout).await;
    app.cache().metrics.upstream_waiting.dec();
    let _slot = slot?;
    let mut progress = Progress {
        writer: TempWriter::new(temp),
        head: None,
        last: None,
    };
    // The primary, then each mirror alternate once the primary failed after its retries.
    let mut sources = vec![fill.url.clone()];
    if revalidating.is_none() {
        sources.extend(app.upstream().alternates(&fill.url));
    }
    let mut primary_error: Option<FillError> = None;
    let mut mirror_errors: Vec<String> = Vec::new();
    let mut served_by = None;
    'sources: for (index, source) in sources.iter().enumerate() {
        if index > 0 {
            if let Err(e) = app.upstream().policy().check_url(source) {
                mirror_errors.push(format!("{source}: {e}"));
                continue;
            }
            warn!(url = %fill.url, mirror = %source, "trying a mirror alternate");
        }
        let mut attempt = 0;
        loop {
            if attempt > 0 {
                tokio::time::sleep(backoff(cfg.retry_backoff, attempt)).await;
                app.cache().metrics.upstream_retries.inc();
            }
            app.cache().metrics.upstream_fetches.inc();
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
async fn attempt_once<H: Host>(
    app: &Arc<H>,
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
            conditional_get(app.upstream(), source, bound).await?
        }
        _ => app.upstream().get(source, resume.as_ref()).await?,
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
        app.flights().panic_hook.check(&fill.url, written);
        app.upstream()
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

/// A revalidation's request: a GET quoting the validators upstream gave for `bound`. A 304
/// is [`FillError::NotModified`].
async fn conditional_get(
    upstream: &Upstream,
    source: &UpstreamUrl,
    bound: &UrlEntry,
) -> Result<Download, FillError> {
    let validators = Validators {
        etag: bound.record.etag.clone(),
        last_modified: bound.record.last_modified.clone(),
    };
    match upstream.get_if_modified(source, &validators).await? {
        Conditional::NotModified => Err(FillError::NotModified {
            url: source.as_str().to_owned(),
        }),
        Conditional::Modified(dl) => Ok(*dl),
    }
}

/// A revalidation ended without new bytes. The copy we have stays bound and is served
/// (REVALIDATED after a 304, STALE after a failure): a failure is no download failure to
/// report (it would repeat on every request while upstream is down), only to log.
fn not_updated(volatile: &Volatile, fill: &Fill, e: &FillError) {
    match e {
        FillError::NotModified { .. } => volatile.validated(&fill.url),
        e => warn!(url = %fill.url, error = %e, "revalidation failed; serving the cached copy"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
