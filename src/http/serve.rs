//! Artifact responses: hits from the store (ranges, conditionals, checksum headers) and misses
//! that follow a fill.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use actix_web::body::SizedStream;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode, Version};
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder};
use bytes::{Bytes, BytesMut};
use futures::Stream;

use super::sendfile::{ConnSocket, InlineBody, SendfileBody, SentBytes};
use crate::error::Error;
use crate::fill::{Fill, FillError};
use crate::index::BlobMeta;
use crate::service::Service;
use crate::store::Expected;
use crate::url::{UpstreamUrl, content_disposition};

/// Hits are sent in pieces this large: big enough for few wake-ups, small enough that the
/// HTTP layer's per-connection write buffer (which copies each piece) stays small with
/// hundreds of concurrent downloads.
const HIT_CHUNK: usize = 32 * 1024;

/// A stored blob about to be served.
pub struct Artifact<'a> {
    pub meta: &'a BlobMeta,
    pub file_name: String,
    /// Upstream's Content-Type, if it said one.
    pub content_type: Option<String>,
    /// Upstream's Last-Modified, if it said one.
    pub last_modified: Option<String>,
}

/// The headers of a hit that depend only on the blob and the name it is served under, built
/// once per URL and reused: formatting dates and escaping names costs more than the rest of
/// a hit.
pub struct HitHead {
    blake3: String,
    size: u64,
    last_modified: String,
    /// Sent with 200, 206 and 304.
    validators: Vec<(HeaderName, HeaderValue)>,
    /// Sent with 200 and 206.
    content: Vec<(HeaderName, HeaderValue)>,
    /// `validators` (but `X-Cache`, which may be relabelled) and `content` as header lines
    /// (`name: value\r\n`), for a hit's [`InlineBody`] or [`SendfileBody`] to splice into
    /// the head actix wrote: building eleven headers in a header map and encoding them cost a
    /// small hit more than any other step of ours.
    rendered: Bytes,
    /// The whole blob, if it is at most [`INLINE_BODY`] bytes and was served once from
    /// this head (blobs are immutable: their name is their content's hash).
    body: std::sync::OnceLock<Bytes>,
}

impl HitHead {
    pub fn new(art: Artifact<'_>, cache_control: &str) -> HitHead {
        let meta = art.meta;
        let b3 = meta.blake3();
        let last_modified = art
            .last_modified
            .filter(|lm| httpdate::parse_http_date(lm).is_ok())
            .unwrap_or_else(|| httpdate::fmt_http_date(unix_to_system(meta.first_seen)));
        let content_type = art
            .content_type
            .or_else(|| meta.content_type.clone())
            .unwrap_or_else(|| guess_type(&art.file_name));
        let value = |s: &str| {
            HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
        };
        let validators = vec![
            (header::ETAG, value(&format!("\"{b3}\""))),
            (header::LAST_MODIFIED, value(&last_modified)),
            (header::CACHE_CONTROL, value(cache_control)),
            (X_CACHE.clone(), HeaderValue::from_static("HIT")),
        ];
        let content = vec![
            (header::CONTENT_TYPE, value(&content_type)),
            (header::ACCEPT_RANGES, HeaderValue::from_static("bytes")),
            (X_CHECKSUM_MD5.clone(), value(&meta.digests.md5)),
            (X_CHECKSUM_SHA256.clone(), value(&meta.digests.sha256)),
            (X_CHECKSUM_SHA512.clone(), value(&meta.digests.sha512)),
            (X_CHECKSUM_BLAKE3.clone(), value(b3)),
            (header::CONTENT_DISPOSITION, disposition(&art.file_name)),
        ];
        let mut rendered = Vec::with_capacity(512);
        for (name, value) in validators.iter().chain(&content) {
            if name != X_CACHE {
                rendered.extend_from_slice(name.as_str().as_bytes());
                rendered.extend_from_slice(b": ");
                rendered.extend_from_slice(value.as_bytes());
                rendered.extend_from_slice(b"\r\n");
            }
        }
        HitHead {
            blake3: b3.to_owned(),
            size: meta.size,
            last_modified,
            validators,
            content,
            rendered: rendered.into(),
            body: std::sync::OnceLock::new(),
        }
    }

    /// Take over `old`'s loaded body if it is the same blob (a URL's entry re-read from the
    /// index), so that it is neither read nor held twice.
    pub fn keep_body_of(&self, old: &HitHead) {
        if old.blake3 == self.blake3 {
            if let Some(body) = old.body.get() {
                let _ = self.body.set(body.clone());
            }
        }
    }

    /// The blob's bytes from memory, read from `file` the first time.
    fn small_body(&self, file: &File) -> io::Result<Bytes> {
        if let Some(body) = self.body.get() {
            return Ok(body.clone());
        }
        let mut buf = BytesMut::zeroed(self.size as usize);
        file.read_exact_at(&mut buf, 0)?;
        Ok(self.body.get_or_init(|| buf.freeze()).clone())
    }

    /// Bytes held (for caches that keep heads: names, values and their bookkeeping).
    pub fn bytes(&self) -> usize {
        let headers = self.validators.iter().chain(&self.content);
        self.blake3.len()
            + self.last_modified.len()
            + self.rendered.len()
            // The body counts once it may be loaded, so the bound holds whenever it is.
            + if self.size <= INLINE_BODY { self.size as usize } else { 0 }
            + headers
                .map(|(n, v)| n.as_str().len() + v.len() + 48)
                .sum::<usize>()
    }
}

pub(super) static X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// Replace a stored copy's `X-Cache: HIT` with `REVALIDATED` or `STALE` (volatile URLs).
pub fn relabel(res: &mut HttpResponse, x_cache: &'static str) {
    res.headers_mut()
        .insert(X_CACHE.clone(), HeaderValue::from_static(x_cache));
}
static X_CHECKSUM_MD5: HeaderName = HeaderName::from_static("x-checksum-md5");
static X_CHECKSUM_SHA256: HeaderName = HeaderName::from_static("x-checksum-sha256");
static X_CHECKSUM_SHA512: HeaderName = HeaderName::from_static("x-checksum-sha512");
static X_CHECKSUM_BLAKE3: HeaderName = HeaderName::from_static("x-checksum-blake3");

/// A hit's answer up to its body: either complete (304, or an error), or the headers of a
/// 200/206 for `[start, end)` of the blob.
pub enum Prepared {
    Done(HttpResponse),
    Body {
        res: HttpResponseBuilder,
        start: u64,
        end: u64,
    },
}

/// Headers, conditionals and ranges of a HIT (200, 206, 304 or 416, with all checksum
/// headers), wherever its bytes come from. Counts the read. With `rendered`, a 200 or 206
/// carries only `X-Cache` (and `Content-Range`) in its header map: the caller sends the rest
/// as [`HitHead::rendered`] lines.
pub fn prepare(
    req: &HttpRequest,
    app: &Service,
    head: &HitHead,
    rendered: bool,
) -> Result<Prepared, Error> {
    let b3 = head.blake3.as_str();
    let mut res = HttpResponse::Ok();
    let size = head.size;
    let outcome = hit_outcome(
        &Conditionals {
            range: header_str(req, header::RANGE),
            if_range: header_str(req, header::IF_RANGE),
            if_none_match: header_str(req, header::IF_NONE_MATCH),
        },
        b3,
        &head.last_modified,
        size,
    );
    let (start, end) = match outcome {
        HitOutcome::NotModified => {
            for (name, value) in &head.validators {
                res.insert_header((name.clone(), value.clone()));
            }
            res.status(StatusCode::NOT_MODIFIED);
            return Ok(Prepared::Done(res.finish()));
        }
        HitOutcome::Full => (0, size),
        HitOutcome::Partial(s, e) => (s, e),
        HitOutcome::Unsatisfiable(r) => {
            return Err(Error::RangeNotSatisfiable {
                range: r.to_owned(),
                size,
            });
        }
    };

    app.cache
        .index
        .record_access(b3, app.cache.clock.unix_now());

    if rendered {
        res.insert_header((X_CACHE.clone(), HeaderValue::from_static("HIT")));
    } else {
        for (name, value) in head.validators.iter().chain(&head.content) {
            res.insert_header((name.clone(), value.clone()));
        }
    }
    if let HitOutcome::Partial(..) = outcome {
        res.status(StatusCode::PARTIAL_CONTENT).insert_header((
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{size}", end - 1),
        ));
    }
    Ok(Prepared::Body { res, start, end })
}

/// A HIT served from the bucket: `body` is `[start, end)` as it arrives (nothing for HEAD).
pub fn stream_hit<S>(
    req: &HttpRequest,
    res: HttpResponseBuilder,
    start: u64,
    end: u64,
    body: S,
) -> HttpResponse
where
    S: Stream<Item = Result<Bytes, io::Error>> + 'static,
{
    sized_body(req, res, end - start, body)
}

/// A HIT answered with a redirect to a presigned object-store URL (`serve = "redirect"`);
/// a client that already has the bytes (`If-None-Match`) gets its 304 here.
pub fn redirect_hit(
    req: &HttpRequest,
    app: &Service,
    head: &HitHead,
    location: &str,
) -> HttpResponse {
    if let Some(inm) = header_str(req, header::IF_NONE_MATCH) {
        if etag_list_matches(inm, &head.blake3) {
            let mut res = HttpResponse::NotModified();
            for (name, value) in &head.validators {
                res.insert_header((name.clone(), value.clone()));
            }
            return res.finish();
        }
    }
    app.cache
        .index
        .record_access(&head.blake3, app.cache.clock.unix_now());
    let mut res = HttpResponse::Found();
    res.insert_header((header::LOCATION, location))
        .insert_header((X_CACHE.clone(), HeaderValue::from_static("HIT")))
        .insert_header((header::ETAG, format!("\"{}\"", head.blake3)))
        // The URL expires: nobody may keep this answer.
        .insert_header((header::CACHE_CONTROL, "no-store"));
    res.finish()
}

/// A HIT from the local tier. `file` is the open blob.
pub fn hit(
    req: &HttpRequest,
    app: &Service,
    head: &HitHead,
    file: Arc<File>,
) -> Result<HttpResponse, Error> {
    let b3 = head.blake3.as_str();
    // HTTP/1 over plain TCP (a GET): the kernel moves the bytes (see `sendfile.rs`).
    let socket = (req.method() != Method::HEAD && req.version() <= Version::HTTP_11)
        .then(|| req.conn_data::<ConnSocket>().cloned())
        .flatten();
    // Most headers go pre-rendered; small bodies from memory, in one write with the head.
    let inline = socket.is_some() && head.size <= INLINE_BODY;
    let (mut res, start, end) = match prepare(req, app, head, socket.is_some())? {
        Prepared::Done(done) => return Ok(done),
        Prepared::Body { res, start, end } => (res, start, end),
    };
    let len = end - start;
    if req.method() == Method::HEAD {
        return Ok(sized_body(req, res, len, futures::stream::empty()));
    }
    if let Some(socket) = socket {
        let sent = SentBytes::default();
        res.no_chunking(len);
        if inline {
            let body = head
                .small_body(&file)
                .map_err(|e| Error::Internal(format!("reading blob {b3}: {e}")))?
                .slice(start as usize..end as usize);
            let body = InlineBody::new(socket, head.rendered.clone(), body, sent.clone());
            let mut res = res.body(body);
            res.extensions_mut().insert(sent);
            return Ok(res);
        }
        let lines = head.rendered.clone();
        let mut res = res.body(SendfileBody::new(
            socket,
            lines,
            file,
            start,
            len,
            sent.clone(),
        ));
        res.extensions_mut().insert(sent);
        return Ok(res);
    }
    if len <= INLINE_READ {
        // Small bodies: one read from the page cache right here beats any machinery.
        let mut buf = BytesMut::zeroed(len as usize);
        file.read_exact_at(&mut buf, start)
            .map_err(|e| Error::Internal(format!("reading blob {b3}: {e}")))?;
        return Ok(res.body(SizedStream::new(len, slices(buf.freeze()))));
    }
    let body = file_stream(&file, start, end)
        .map_err(|e| Error::Internal(format!("mapping blob {b3}: {e}")))?;
    Ok(res.body(SizedStream::new(len, body)))
}

/// Blobs up to this size are kept in memory with their hit head (within the target cache's
/// byte bound) and sent with the response head in one `writev` over plain HTTP/1.
const INLINE_BODY: u64 = 32 * 1024;

/// Bodies up to this size are read with one `pread` in the request handler; a memory map
/// costs more than it saves for them.
const INLINE_READ: u64 = 128 * 1024;

/// A MISS: headers as soon as upstream's are known, then the bytes as they arrive.
pub async fn miss(
    req: &HttpRequest,
    app: &Arc<Service>,
    fill: Arc<Fill>,
    expected: Option<Expected>,
    client: Option<String>,
) -> Result<HttpResponse, Error> {
    let head = match fill.head().await {
        Ok(head) => head,
        Err(e) if matches!(*e, FillError::Bypass) => {
            return bypass(req, app, &fill.url, expected).await;
        }
        Err(e) => return Err(Error::from(&*e)),
    };
    let file_name = fill.url.file_name();
    let content_type = head
        .content_type
        .clone()
        .unwrap_or_else(|| guess_type(&file_name));
    let mut res = HttpResponse::Ok();
    res.insert_header((header::CONTENT_TYPE, content_type.as_str()))
        .insert_header(("X-Cache", "MISS"))
        .insert_header((header::CONTENT_DISPOSITION, disposition(&file_name)));
    if let Some(lm) = &head.last_modified {
        res.insert_header((header::LAST_MODIFIED, lm.as_str()));
    }

    let on_mismatch = {
        let (app, url) = (app.clone(), fill.url.clone());
        let exp = expected.clone();
        move |d: &crate::store::Digests| {
            if let Some(exp) = exp {
                app.cache.integrity_failed(&url, d, &exp, client);
            }
        }
    };
    let Some(total) = head.content_length else {
        // Unknown length: chunked, and the body ends only once the fill is verified.
        let body = fill.body(0, None, expected, on_mismatch);
        if req.method() == Method::HEAD {
            return Ok(res.finish());
        }
        return Ok(res.streaming(body));
    };
    res.insert_header((header::ACCEPT_RANGES, "bytes"));
    let range = match header_str(req, header::RANGE) {
        // If-Range cannot match: no ETag is known before the content is.
        Some(r) if header_str(req, header::IF_RANGE).is_none() => parse_range(r, total),
        _ => RangeSpec::Full,
    };
    let (start, end) = match range {
        RangeSpec::Full => (0, total),
        RangeSpec::Part(s, e) => {
            res.status(StatusCode::PARTIAL_CONTENT).insert_header((
                header::CONTENT_RANGE,
                format!("bytes {s}-{}/{total}", e - 1),
            ));
            (s, e)
        }
        RangeSpec::Unsatisfiable(r) => {
            return Err(Error::RangeNotSatisfiable {
                range: r.to_owned(),
                size: total,
            });
        }
    };
    let body = fill.body(start, Some(end), expected, on_mismatch);
    Ok(sized_body(req, res, end - start, body))
}

/// No room to store it: this client gets the bytes straight from upstream (`X-Cache: BYPASS`).
async fn bypass(
    req: &HttpRequest,
    app: &Arc<Service>,
    url: &UpstreamUrl,
    expected: Option<Expected>,
) -> Result<HttpResponse, Error> {
    let (head, mut rx) = app.pass_through(url, expected).await?;
    let file_name = url_file_name(url);
    let mut res = HttpResponse::Ok();
    res.insert_header((
        header::CONTENT_TYPE,
        head.content_type
            .clone()
            .unwrap_or_else(|| guess_type(&file_name)),
    ))
    .insert_header((X_CACHE.clone(), HeaderValue::from_static("BYPASS")))
    .insert_header((header::CONTENT_DISPOSITION, disposition(&file_name)));
    if let Some(lm) = &head.last_modified {
        res.insert_header((header::LAST_MODIFIED, lm.as_str()));
    }
    let body = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    Ok(match head.content_length {
        Some(len) => sized_body(req, res, len, body),
        None => res.streaming(body),
    })
}

/// A body of known length (none for HEAD, but the same Content-Length).
fn sized_body<S>(req: &HttpRequest, mut res: HttpResponseBuilder, len: u64, body: S) -> HttpResponse
where
    S: Stream<Item = Result<Bytes, io::Error>> + 'static,
{
    if req.method() == Method::HEAD {
        return res.body(SizedStream::new(
            len,
            futures::stream::empty::<Result<Bytes, io::Error>>(),
        ));
    }
    res.body(SizedStream::new(len, body))
}

/// `[start, end)` of a blob as slices of a memory map: no copy and no allocation per chunk,
/// pages come straight from the page cache. Pages that are not resident are faulted in on
/// the blocking pool first, so a cold file never stalls an HTTP worker.
fn file_stream(
    file: &File,
    start: u64,
    end: u64,
) -> io::Result<impl Stream<Item = Result<Bytes, io::Error>> + 'static> {
    // SAFETY: committed blobs are never written or truncated in place: they are created by
    // rename and removed by unlink, both of which leave an existing mapping intact. (A file
    // truncated behind our back by another program would fault; the README warns about
    // editing the data directory.)
    let map = unsafe { memmap2::Mmap::map(file)? };
    let _ = map.advise(memmap2::Advice::Sequential);
    let bytes = Bytes::from_owner(map);
    let (start, end) = (start as usize, end as usize);
    Ok(futures::stream::try_unfold(start, move |pos| {
        let bytes = bytes.clone();
        async move {
            if pos >= end {
                return Ok(None);
            }
            let chunk = bytes.slice(pos..end.min(pos + HIT_CHUNK));
            if !resident(&chunk) {
                let cold = chunk.clone();
                tokio::task::spawn_blocking(move || fault_in(&cold))
                    .await
                    .map_err(io::Error::other)?;
            }
            let next = pos + chunk.len();
            Ok(Some((chunk, next)))
        }
    }))
}

/// One buffer as a stream of `HIT_CHUNK` slices (no copies): the HTTP layer copies each
/// piece into its write buffer, which then stays small and is reused across requests
/// instead of growing (and being freshly allocated and faulted in) for every large body.
fn slices(all: Bytes) -> impl Stream<Item = Result<Bytes, io::Error>> + 'static {
    let n = all.len().div_ceil(HIT_CHUNK);
    futures::stream::iter(
        (0..n).map(move |i| Ok(all.slice(i * HIT_CHUNK..all.len().min((i + 1) * HIT_CHUNK)))),
    )
}

const PAGE: usize = 4096;

/// Whether every page under `data` is in memory (`mincore`).
fn resident(data: &[u8]) -> bool {
    let addr = data.as_ptr() as usize;
    let aligned = addr & !(PAGE - 1);
    let len = addr + data.len() - aligned;
    let mut vec = [0u8; HIT_CHUNK / PAGE + 2];
    let pages = len.div_ceil(PAGE).min(vec.len());
    // SAFETY: the range lies within a live mapping (aligned down to its page), and `vec` has
    // one byte per page of it.
    let rc = unsafe { libc::mincore(aligned as *mut libc::c_void, len, vec.as_mut_ptr()) };
    rc == 0 && vec[..pages].iter().all(|v| v & 1 == 1)
}

/// Touch one byte per page so the kernel reads them in (on a blocking thread).
fn fault_in(data: &[u8]) {
    let mut sum = 0u8;
    for i in (0..data.len()).step_by(PAGE) {
        // SAFETY: `i` is in bounds; the volatile read keeps the access from being optimized out.
        sum ^= unsafe { std::ptr::read_volatile(data.as_ptr().add(i)) };
    }
    std::hint::black_box(sum);
}

pub fn guess_type(file_name: &str) -> String {
    mime_guess::from_path(file_name)
        .first_raw()
        .unwrap_or("application/octet-stream")
        .to_owned()
}

pub fn disposition(file_name: &str) -> HeaderValue {
    HeaderValue::from_str(&content_disposition(file_name))
        .unwrap_or_else(|_| HeaderValue::from_static("attachment"))
}

fn header_str(req: &HttpRequest, name: header::HeaderName) -> Option<&str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// `If-None-Match`: `*` or a list of (possibly weak) entity tags.
fn etag_list_matches(value: &str, b3: &str) -> bool {
    value
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.trim_start_matches("W/").trim_matches('"') == b3)
}

/// `If-Range`: the range applies only if the validator still matches (strong comparison).
fn if_range_allows(if_range: Option<&str>, b3: &str, last_modified: &str) -> bool {
    match if_range {
        None => true,
        Some(v) if v.starts_with('"') => v.trim_matches('"') == b3,
        Some(v) if v.starts_with("W/") => false,
        Some(v) => v == last_modified,
    }
}

/// The conditional and range headers of a request, as far as a HIT looks at them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Conditionals<'a> {
    pub range: Option<&'a str>,
    pub if_range: Option<&'a str>,
    pub if_none_match: Option<&'a str>,
}

/// What a HIT answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HitOutcome<'a> {
    /// 304: `If-None-Match` names the blob.
    NotModified,
    /// 200 with the whole blob.
    Full,
    /// 206 with bytes `[start, end)`.
    Partial(u64, u64),
    /// 416: the range (quoted here) starts beyond the blob.
    Unsatisfiable(&'a str),
}

/// How a HIT on a blob of `size` bytes (ETag `"<blake3>"`, `Last-Modified` as given) answers
/// `headers`: `If-None-Match` first, then `Range` unless `If-Range` no longer matches. Pure;
/// a `Partial` range is never empty and never ends beyond `size`.
pub fn hit_outcome<'a>(
    headers: &Conditionals<'a>,
    blake3: &str,
    last_modified: &str,
    size: u64,
) -> HitOutcome<'a> {
    if headers
        .if_none_match
        .is_some_and(|inm| etag_list_matches(inm, blake3))
    {
        return HitOutcome::NotModified;
    }
    let range = match headers.range {
        Some(r) if if_range_allows(headers.if_range, blake3, last_modified) => parse_range(r, size),
        _ => RangeSpec::Full,
    };
    match range {
        RangeSpec::Full => HitOutcome::Full,
        RangeSpec::Part(s, e) => HitOutcome::Partial(s, e),
        RangeSpec::Unsatisfiable(r) => HitOutcome::Unsatisfiable(r),
    }
}

/// A parsed `Range` header.
#[derive(Debug, PartialEq)]
pub enum RangeSpec<'a> {
    /// No usable single range: serve everything (RFC 9110 allows ignoring Range).
    Full,
    /// `[start, end)`.
    Part(u64, u64),
    Unsatisfiable(&'a str),
}

/// Single byte ranges only; syntactically invalid or multi-range headers are ignored.
pub fn parse_range(value: &str, size: u64) -> RangeSpec<'_> {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeSpec::Full;
    };
    if spec.contains(',') {
        return RangeSpec::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeSpec::Full;
    };
    let parse = |s: &str| s.trim().parse::<u64>().ok();
    match (a.trim().is_empty(), b.trim().is_empty()) {
        // bytes=-N: the last N bytes
        (true, false) => match parse(b) {
            Some(0) => RangeSpec::Unsatisfiable(value),
            Some(_) if size == 0 => RangeSpec::Unsatisfiable(value),
            Some(n) => RangeSpec::Part(size.saturating_sub(n), size),
            None => RangeSpec::Full,
        },
        // bytes=A-
        (false, true) => match parse(a) {
            Some(s) if s < size => RangeSpec::Part(s, size),
            Some(_) => RangeSpec::Unsatisfiable(value),
            None => RangeSpec::Full,
        },
        (false, false) => match (parse(a), parse(b)) {
            (Some(s), Some(e)) if s > e => RangeSpec::Full,
            (Some(s), Some(_)) if s >= size => RangeSpec::Unsatisfiable(value),
            (Some(s), Some(e)) => RangeSpec::Part(s, e.min(size - 1) + 1),
            _ => RangeSpec::Full,
        },
        (true, true) => RangeSpec::Full,
    }
}

fn unix_to_system(secs: i64) -> std::time::SystemTime {
    std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0) as u64)
}

/// The file name shown for a URL (its last path segment), never empty.
pub fn url_file_name(url: &UpstreamUrl) -> String {
    let name = url.file_name();
    if name.is_empty() {
        "index.html".to_owned()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use RangeSpec::*;
        assert_eq!(parse_range("bytes=0-9", 100), Part(0, 10));
        assert_eq!(parse_range("bytes=90-200", 100), Part(90, 100));
        assert_eq!(parse_range("bytes=95-", 100), Part(95, 100));
        assert_eq!(parse_range("bytes=-10", 100), Part(90, 100));
        assert_eq!(parse_range("bytes=-1000", 100), Part(0, 100));
        assert_eq!(parse_range("bytes=100-", 100), Unsatisfiable("bytes=100-"));
        assert_eq!(
            parse_range("bytes=100-200", 100),
            Unsatisfiable("bytes=100-200")
        );
        assert_eq!(parse_range("bytes=-0", 100), Unsatisfiable("bytes=-0"));
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Full);
        assert_eq!(parse_range("items=0-1", 100), Full);
        assert_eq!(parse_range("bytes=5-1", 100), Full);
        assert_eq!(parse_range("bytes=x-1", 100), Full);
    }

    #[test]
    fn hit_outcomes() {
        use HitOutcome::*;
        let h = |range, if_range, if_none_match| Conditionals {
            range,
            if_range,
            if_none_match,
        };
        let lm = "Tue, 01 Dec 2026 10:00:00 GMT";
        let o = |c: Conditionals<'static>| hit_outcome(&c, "abc", lm, 100);
        assert_eq!(o(h(None, None, None)), Full);
        assert_eq!(o(h(Some("bytes=0-9"), None, None)), Partial(0, 10));
        assert_eq!(o(h(Some("bytes=0-9"), None, Some("\"abc\""))), NotModified);
        assert_eq!(
            o(h(Some("bytes=0-9"), Some("\"abc\""), None)),
            Partial(0, 10)
        );
        assert_eq!(o(h(Some("bytes=0-9"), Some("\"old\""), None)), Full);
        assert_eq!(o(h(Some("bytes=0-9"), Some("W/\"abc\""), None)), Full);
        assert_eq!(o(h(Some("bytes=0-9"), Some(lm), None)), Partial(0, 10));
        assert_eq!(
            o(h(Some("bytes=200-"), None, None)),
            Unsatisfiable("bytes=200-")
        );
        assert_eq!(o(h(None, None, Some("\"other\""))), Full);
        assert_eq!(
            hit_outcome(&h(Some("bytes=0-0"), None, None), "abc", lm, 0),
            Unsatisfiable("bytes=0-0")
        );
    }

    #[test]
    fn etags() {
        assert!(etag_list_matches("\"abc\"", "abc"));
        assert!(etag_list_matches("W/\"abc\", \"x\"", "abc"));
        assert!(etag_list_matches("*", "abc"));
        assert!(!etag_list_matches("\"abd\"", "abc"));
    }
}
