//! Every request head is checked here, on the connection, before actix-http parses it: the
//! size limits of SPEC 5 hold from the first byte (a request target over 8 KiB gets 414, a
//! header section over 16 KiB 431, whatever the request's total size), and anything
//! actix-http's parser would refuse with an empty, non-JSON answer (a malformed head,
//! conflicting framing, more than 96 header fields, a head that does not arrive in time) is
//! refused here with the JSON error body of SPEC 4.5 instead.
//!
//! [`CheckedStream`] wraps the TCP stream actix reads from. A head is held back until it is
//! complete and has passed the checks, with actix-http's own parser run on a copy, so what
//! actix then sees is exactly what it accepts. The plain heads nearly every client sends
//! skip that copy's parse: a stricter check of our own (`plain_head`) takes them, and the fuzz
//! target `head_check` holds it to taking nothing the parser would refuse or frame otherwise. Request bodies pass through as they come (by
//! `Content-Length`, or chunk by chunk, the end found by the same parser), and everything
//! after a `CONNECT` or upgrade head is passed on untouched. A refused head is never shown to
//! actix: it sees the end of the stream instead, finishes the responses it owes, and closes;
//! the refusal is then written, the write side shut down, and what the client still sends is
//! read and dropped for a moment (a lingering close, so that the answer is not lost to a
//! reset while the client is still sending a huge request).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_http::h1::{Codec, Message, MessageType};
use actix_http::{HttpMessage, Request, ServiceConfig, error::ParseError};
use bytes::{Buf, Bytes, BytesMut};
use std::future::Future;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tokio_util::codec::Decoder;

use super::admit::{MAX_HEADER_BYTES, MAX_TARGET};
use crate::error::Error;

/// How long a request head may take to arrive, from its first byte (for the first request
/// of a connection, from the connection's start).
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// Bytes read from the socket at a time while a head or chunked body is examined.
const READ_CHUNK: usize = 16 * 1024;

/// A request line longer than this without its end is over the target limit whatever its
/// method and version.
const MAX_REQUEST_LINE: usize = MAX_TARGET + 64;

/// After a refusal, what the client still sends is read and dropped for at most this long,
/// and at most [`LINGER_BYTES`].
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 16 << 20;

/// What every checked connection of one server shares.
pub struct HeadCheck {
    /// `X-Served-By` on refusals, as on every other answer.
    pub served_by: String,
}

/// Where the stream is between requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// A request head is expected (or partly received).
    Head,
    /// This many bytes of a body remain.
    Body(u64),
    /// A chunked body: the codec that parsed its head finds its end.
    Chunked,
    /// Everything from here on belongs to the current request (a tunnel, an upgrade).
    Opaque,
}

/// The TCP stream actix-http reads requests from, with every head checked first.
pub struct CheckedStream {
    io: Option<TcpStream>,
    peer: Option<SocketAddr>,
    shared: Arc<HeadCheck>,
    /// actix-http's own parser, run on copies of what arrives.
    config: ServiceConfig,
    codec: Codec,
    framing: Framing,
    /// Read from the socket, not yet examined or not yet complete (a head).
    pending: BytesMut,
    /// Examined and accepted, for actix to read.
    ready: BytesMut,
    /// Where actix-http's parser runs on a copy of a head (kept, so that a connection's
    /// requests reuse one allocation).
    scratch: BytesMut,
    /// The current head must be complete by then.
    deadline: Option<Pin<Box<Sleep>>>,
    /// The socket has no more to read.
    eof: bool,
    /// Refused: the answer to write once actix is done with the connection.
    refusal: Option<Bytes>,
    /// Writes held back for a small hit's body (see `sendfile::Held`).
    hold: super::sendfile::Hold,
}

impl CheckedStream {
    pub fn new(io: TcpStream, config: ServiceConfig, shared: Arc<HeadCheck>) -> CheckedStream {
        let peer = io.peer_addr().ok();
        CheckedStream {
            io: Some(io),
            peer,
            shared,
            codec: Codec::new(config.clone()),
            config,
            framing: Framing::Head,
            pending: BytesMut::new(),
            ready: BytesMut::new(),
            scratch: BytesMut::new(),
            deadline: Some(Box::pin(tokio::time::sleep(HEAD_TIMEOUT))),
            eof: false,
            refusal: None,
            hold: super::sendfile::Hold::default(),
        }
    }

    /// The socket (sendfile writes to it directly).
    pub fn tcp(&self) -> Option<&TcpStream> {
        self.io.as_ref()
    }

    /// Where writes are held for a small hit's body (see `sendfile::Held`).
    pub fn hold(&self) -> &super::sendfile::Hold {
        &self.hold
    }

    /// Refuse the request whose head is pending: actix sees the end of the stream.
    fn refuse(&mut self, error: Error) {
        let answer = refusal(&error, &self.shared.served_by);
        tracing::debug!(client = ?self.peer.map(|p| p.ip()), %error, "request head refused");
        if crate::accesslog::enabled() {
            // The access line of a request no handler saw (its target may be megabytes).
            crate::accesslog::write(&crate::accesslog::Record {
                method: "-",
                form: "-",
                url: "-",
                status: error.status_and_code().0.as_u16(),
                x_cache: "-",
                bytes: answer.len() as u64,
                complete: true,
                ms: 0.0,
                client: self.peer.map(|p| p.ip()),
            });
        }
        self.refusal = Some(answer);
        self.pending.clear();
        self.deadline = None;
    }

    /// Examine what is pending, moving what passes to `ready`.
    fn examine(&mut self) {
        loop {
            match self.framing {
                Framing::Head => {
                    if self.pending.is_empty() {
                        return;
                    }
                    match check_head(&self.pending, &mut self.codec, &mut self.scratch) {
                        Ok(None) => {
                            // The clock starts at the head's first byte (for the first request,
                            // at the connection's start): a head that arrives whole, as
                            // nearly all do, never sets a timer.
                            if self.deadline.is_none() {
                                self.deadline = Some(Box::pin(tokio::time::sleep(HEAD_TIMEOUT)));
                            }
                            return;
                        }
                        Ok(Some((len, framing))) => {
                            self.ready.extend_from_slice(&self.pending[..len]);
                            self.pending.advance(len);
                            self.deadline = None;
                            self.framing = framing;
                            if framing != Framing::Chunked {
                                self.codec = Codec::new(self.config.clone());
                            }
                        }
                        Err(e) => return self.refuse(e),
                    }
                }
                Framing::Body(left) => {
                    if self.pending.is_empty() {
                        return;
                    }
                    let n = left.min(self.pending.len() as u64) as usize;
                    self.ready.extend_from_slice(&self.pending[..n]);
                    self.pending.advance(n);
                    self.framing = match left - n as u64 {
                        0 => Framing::Head,
                        more => Framing::Body(more),
                    };
                }
                Framing::Chunked => {
                    if self.pending.is_empty() {
                        return;
                    }
                    let copy = &mut self.scratch;
                    copy.clear();
                    copy.extend_from_slice(&self.pending);
                    let ended = loop {
                        match self.codec.decode(copy) {
                            Ok(Some(Message::Chunk(Some(_)))) => {}
                            Ok(Some(Message::Chunk(None))) => break Some(true),
                            Ok(None) => break Some(false),
                            // Broken chunking: actix finds the same fault in the same bytes
                            // and ends the connection; nothing after it is a request.
                            Ok(Some(Message::Item(_))) | Err(_) => break None,
                        }
                    };
                    let used = self.pending.len() - copy.len();
                    self.ready.extend_from_slice(&self.pending[..used]);
                    self.pending.advance(used);
                    match ended {
                        Some(true) => {
                            self.framing = Framing::Head;
                            self.codec = Codec::new(self.config.clone());
                        }
                        Some(false) => return,
                        None => self.framing = Framing::Opaque,
                    }
                }
                Framing::Opaque => {
                    let all = self.pending.split();
                    self.ready.extend_from_slice(&all);
                    return;
                }
            }
        }
    }
}

/// Check the head at the start of `buf`: `None` while it is incomplete (and within limits),
/// else its length and the framing of what follows it. `scratch` holds the parser's copy.
fn check_head(
    buf: &[u8],
    codec: &mut Codec,
    scratch: &mut BytesMut,
) -> Result<Option<(usize, Framing)>, Error> {
    if let Some(len) = plain_head(buf) {
        return Ok(Some((len, Framing::Head)));
    }
    parse_head(buf, codec, scratch)
}

/// Heads [`plain_head`] looks at: at most this long...
const PLAIN_MAX_HEAD: usize = 4096;
/// ...with at most this many header fields, ...
const PLAIN_MAX_FIELDS: usize = 32;
/// ...none of these (they change the framing or what follows the head; `host` is counted,
/// and `connection` may only say `keep-alive` or `close`).
const PLAIN_DENIED_FIELDS: [&[u8]; 4] = [
    b"content-length",
    b"transfer-encoding",
    b"upgrade",
    b"expect",
];

/// The length of a complete head at the start of `buf` that actix-http's parser certainly
/// accepts as a request without a body, or `None`; then [`parse_head`] runs that parser on a
/// copy, as for every head before. Only heads shaped the way nearly every client writes them
/// qualify: `GET` or `HEAD` of an origin-form target (`/`, then letters, digits,
/// `-._~/=&+,;:@`, `%` with two hex digits, one `?`), `HTTP/1.1` with exactly one `Host`
/// (or `HTTP/1.0` with at most one), every line ended by CRLF, at most [`PLAIN_MAX_FIELDS`]
/// fields named by letters, digits and `-` with printable ASCII values, none of
/// [`PLAIN_DENIED_FIELDS`] and a `Connection` only of `keep-alive` or `close`,
/// [`PLAIN_MAX_HEAD`] bytes in all. This spares those heads a
/// second parse (actix parses what passes here once more) and never widens what is accepted:
/// the fuzz target `head_check` holds it to that ([`assert_plain_heads_agree`]).
fn plain_head(buf: &[u8]) -> Option<usize> {
    let buf = &buf[..buf.len().min(PLAIN_MAX_HEAD)];
    let mut at = if buf.starts_with(b"GET /") {
        4
    } else if buf.starts_with(b"HEAD /") {
        5
    } else {
        return None;
    };
    // "//x" reads as an authority to some parsers.
    if buf.get(at + 1) == Some(&b'/') {
        return None;
    }
    let mut query = false;
    loop {
        match *buf.get(at)? {
            b' ' => break,
            b'?' if !query => query = true,
            b'%' => {
                if !buf.get(at + 1..at + 3)?.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                at += 2;
            }
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => {}
            b'-' | b'.' | b'_' | b'~' | b'/' | b'=' | b'&' | b'+' | b',' | b';' | b':' | b'@' => {}
            _ => return None,
        }
        at += 1;
    }
    let http11 = match buf.get(at + 1..at + 11)? {
        b"HTTP/1.1\r\n" => true,
        b"HTTP/1.0\r\n" => false,
        _ => return None,
    };
    at += 11;
    let mut hosts = 0;
    for _ in 0..=PLAIN_MAX_FIELDS {
        if buf.get(at..at + 2)? == b"\r\n" {
            let hosts_ok = hosts == 1 || (!http11 && hosts == 0);
            return hosts_ok.then_some(at + 2);
        }
        let name = &buf[at..at + buf[at..].iter().position(|&b| b == b':')?];
        let token = |b: &u8| b.is_ascii_alphanumeric() || *b == b'-';
        if name.is_empty() || name.len() > 64 || !name.iter().all(token) {
            return None;
        }
        if PLAIN_DENIED_FIELDS
            .iter()
            .any(|d| name.eq_ignore_ascii_case(d))
        {
            return None;
        }
        hosts += usize::from(name.eq_ignore_ascii_case(b"host"));
        at += name.len() + 1;
        let value = &buf[at..at + buf[at..].iter().position(|&b| b == b'\r')?];
        if !value
            .iter()
            .all(|&b| (b' '..=b'~').contains(&b) || b == b'\t')
        {
            return None;
        }
        if name.eq_ignore_ascii_case(b"connection") {
            let v = value.trim_ascii();
            if !v.eq_ignore_ascii_case(b"keep-alive") && !v.eq_ignore_ascii_case(b"close") {
                return None;
            }
        }
        at += value.len();
        if *buf.get(at + 1)? != b'\n' {
            return None;
        }
        at += 2;
    }
    None
}

/// For the fuzz target `head_check` and the tests: whatever [`plain_head`] accepts,
/// actix-http's parser accepts, as a request without a body of the same length. Panics
/// otherwise.
#[doc(hidden)]
pub fn assert_plain_heads_agree(buf: &[u8]) {
    let Some(len) = plain_head(buf) else {
        return;
    };
    // actix-http's parser needs a local task set (its date service spawns a local task).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let parsed = tokio::task::LocalSet::new().block_on(&rt, async {
        let config = ServiceConfig::new(
            actix_http::KeepAlive::Timeout(HEAD_TIMEOUT),
            Duration::ZERO,
            Duration::ZERO,
            false,
            None,
        );
        parse_head(buf, &mut Codec::new(config), &mut BytesMut::new())
    });
    match parsed {
        Ok(Some((n, Framing::Head))) if n == len => {}
        other => panic!(
            "plain_head took {len} bytes of {:?} as a head without a body; actix-http's \
             parser: {other:?}",
            String::from_utf8_lossy(buf)
        ),
    }
}

/// [`check_head`] by actix-http's own parser, run on a copy in `scratch`.
fn parse_head(
    buf: &[u8],
    codec: &mut Codec,
    scratch: &mut BytesMut,
) -> Result<Option<(usize, Framing)>, Error> {
    // Empty lines before a request line are skipped (as httparse does).
    let start = buf
        .iter()
        .position(|b| !matches!(b, b'\r' | b'\n'))
        .unwrap_or(buf.len());
    let line_end = buf[start..].iter().position(|&b| b == b'\n');
    match line_end {
        None if buf.len() - start > MAX_REQUEST_LINE => {
            let line = &buf[start..];
            // A method is a short token; without one this is not an over-long target.
            return Err(if line.iter().take(32).any(|&b| b == b' ') {
                too_long_target(line.len())
            } else {
                Error::BadRequest("the request line is malformed".into())
            });
        }
        None => {}
        Some(end) => {
            let line = &buf[start..start + end];
            let target = line.split(|&b| b == b' ').nth(1).map_or(0, <[u8]>::len);
            if target > MAX_TARGET {
                return Err(too_long_target(target));
            }
        }
    }
    // actix-http's parser, on a copy: what it refuses is refused here, and what it accepts
    // is handed to it unchanged.
    let copy = scratch;
    copy.clear();
    copy.extend_from_slice(buf);
    let parsed = codec.decode(copy).map_err(parse_error)?;
    let headers_start = line_end.map(|e| start + e + 1);
    let (len, req) = match parsed {
        Some(Message::Item(req)) => (buf.len() - copy.len(), Some(req)),
        Some(Message::Chunk(_)) => {
            return Err(Error::BadRequest("the request head is malformed".into()));
        }
        None => (buf.len(), None),
    };
    if let Some(from) = headers_start {
        // The header section without the empty line that ends it.
        let blank = match req {
            Some(_) if buf[..len].ends_with(b"\r\n\r\n") => 2,
            Some(_) => 1,
            None => 0,
        };
        let headers = len.saturating_sub(from).saturating_sub(blank);
        if headers > MAX_HEADER_BYTES {
            return Err(Error::HeadersTooLarge(format!(
                "the request headers are more than {MAX_HEADER_BYTES} bytes"
            )));
        }
    }
    Ok(req.map(|req| (len, framing(&req, codec.message_type()))))
}

/// What follows an accepted head, as actix-http will read it.
fn framing(req: &Request, kind: MessageType) -> Framing {
    match kind {
        MessageType::None => Framing::Head,
        MessageType::Stream => Framing::Opaque,
        MessageType::Payload if req.chunked().unwrap_or(false) => Framing::Chunked,
        MessageType::Payload => req
            .headers()
            .get(actix_http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map_or(Framing::Opaque, Framing::Body),
    }
}

fn head_timeout() -> Error {
    Error::RequestTimeout(format!(
        "the request head did not arrive within {}s",
        HEAD_TIMEOUT.as_secs()
    ))
}

fn too_long_target(len: usize) -> Error {
    Error::UriTooLong(format!(
        "the request target is {len} bytes or more, more than the {MAX_TARGET} accepted"
    ))
}

/// actix-http's reasons, as our errors.
fn parse_error(e: ParseError) -> Error {
    match e {
        ParseError::TooLarge => Error::HeadersTooLarge(
            "the request head has too many header fields (at most 96)".into(),
        ),
        ParseError::Uri(_) => Error::BadRequest("the request target is not a valid uri".into()),
        ParseError::Method => Error::BadRequest("the request method is not a valid token".into()),
        ParseError::Version => {
            Error::BadRequest("the request's http version is not supported".into())
        }
        ParseError::Header => Error::BadRequest(
            "a request header is malformed, repeated or in conflict with another (Host, \
             Content-Length and Transfer-Encoding must each appear once, and not the last \
             two together; HTTP/1.1 needs Host)"
                .into(),
        ),
        _ => Error::BadRequest("the request head is malformed".into()),
    }
}

/// The complete HTTP/1.1 answer to a refused head.
fn refusal(error: &Error, served_by: &str) -> Bytes {
    let (status, code) = error.status_and_code();
    let body = serde_json::json!({ "error": code, "message": error.to_string() }).to_string();
    let served_by = served_by
        .chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .collect::<String>();
    let head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         cache-control: no-store\r\nconnection: close\r\ndate: {}\r\nx-served-by: {served_by}\
         \r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len(),
        httpdate::fmt_http_date(std::time::SystemTime::now()),
    );
    Bytes::from([head.into_bytes(), body.into_bytes()].concat())
}

impl AsyncRead for CheckedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.ready.is_empty() {
                let n = this.ready.len().min(buf.remaining());
                buf.put_slice(&this.ready[..n]);
                this.ready.advance(n);
                return Poll::Ready(Ok(()));
            }
            // Refused, or the client is done: actix sees the end of the stream.
            if this.refusal.is_some() || this.eof {
                return Poll::Ready(Ok(()));
            }
            let Some(io) = this.io.as_mut() else {
                return Poll::Ready(Ok(()));
            };
            // Bodies and tunnels go straight into actix's buffer (no copy), as far as they
            // belong to the current request.
            let direct = match this.framing {
                Framing::Opaque if this.pending.is_empty() => Some(buf.remaining()),
                Framing::Body(left) if this.pending.is_empty() => Some(
                    buf.remaining()
                        .min(usize::try_from(left).unwrap_or(usize::MAX)),
                ),
                _ => None,
            };
            if let Some(limit) = direct {
                let mut part = buf.take(limit);
                std::task::ready!(Pin::new(io).poll_read(cx, &mut part))?;
                let n = part.filled().len();
                // SAFETY: `part` is the start of `buf`'s unfilled part, and `n` bytes of it
                // were just initialized by the read.
                unsafe { buf.assume_init(n) };
                buf.advance(n);
                if let Framing::Body(left) = this.framing {
                    this.framing = match left - n as u64 {
                        0 => Framing::Head,
                        more => Framing::Body(more),
                    };
                }
                return Poll::Ready(Ok(()));
            }
            this.pending.reserve(READ_CHUNK);
            match tokio_util::io::poll_read_buf(Pin::new(io), cx, &mut this.pending) {
                Poll::Ready(Ok(0)) => {
                    // A head cut short is no request; whatever else was pending is examined.
                    this.eof = true;
                    if this.framing == Framing::Head {
                        this.pending.clear();
                    }
                }
                Poll::Ready(Ok(_)) => this.examine(),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    let waiting_for_head = this.framing == Framing::Head;
                    if let Some(deadline) = this.deadline.as_mut().filter(|_| waiting_for_head) {
                        if deadline.as_mut().poll(cx).is_ready() {
                            this.refuse(head_timeout());
                            continue;
                        }
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

impl AsyncWrite for CheckedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if super::sendfile::hold_write(&self.hold, data) {
            return Poll::Ready(Ok(data.len()));
        }
        match self.io.as_mut() {
            Some(io) => Pin::new(io).poll_write(cx, data),
            None => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.hold.borrow().is_armed() {
            let mut n = 0;
            for buf in bufs {
                super::sendfile::hold_write(&self.hold, buf);
                n += buf.len();
            }
            return Poll::Ready(Ok(n));
        }
        match self.io.as_mut() {
            Some(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            None => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.io.as_mut() {
            Some(io) => Pin::new(io).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // actix closes a kept-alive connection that it saw idle for its keep-alive time (as
        // long as the head timeout), and it does not see a head held here: a head begun but
        // not complete by then gets the same 408 as one that outlasts its own clock.
        if self.refusal.is_none() && self.framing == Framing::Head && !self.pending.is_empty() {
            self.refuse(head_timeout());
        }
        // A refusal still has to be written: the stream is closed when it is dropped.
        if self.refusal.is_some() {
            return Poll::Ready(Ok(()));
        }
        match self.io.as_mut() {
            Some(io) => Pin::new(io).poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}

impl Drop for CheckedStream {
    fn drop(&mut self) {
        let (Some(answer), Some(io)) = (self.refusal.take(), self.io.take()) else {
            return;
        };
        // actix is done with the connection: answer, then close gently.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(answer_and_close(io, answer));
        }
    }
}

/// Write a refusal, shut the write side, and drain what the client still sends for a
/// moment, so that closing does not reset the connection before the client read the answer.
async fn answer_and_close(mut io: TcpStream, answer: Bytes) {
    let deadline = Instant::now() + LINGER_TIME;
    let wrote = tokio::time::timeout_at(deadline, io.write_all(&answer)).await;
    if !matches!(wrote, Ok(Ok(()))) {
        return;
    }
    let _ = io.shutdown().await;
    let mut drained = 0;
    let mut sink = vec![0u8; 64 * 1024];
    while drained < LINGER_BYTES {
        match tokio::time::timeout_at(deadline, io.read(&mut sink)).await {
            Ok(Ok(n)) if n > 0 => drained += n,
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(head: &str) -> Result<Option<(usize, Framing)>, Error> {
        let config = ServiceConfig::new(
            actix_http::KeepAlive::default(),
            Duration::ZERO,
            Duration::ZERO,
            false,
            None,
        );
        check_head(
            head.as_bytes(),
            &mut Codec::new(config),
            &mut BytesMut::new(),
        )
    }

    fn status(r: Result<Option<(usize, Framing)>, Error>) -> u16 {
        r.err().map_or(0, |e| e.status_and_code().0.as_u16())
    }

    #[test]
    fn the_heads_clients_send_skip_the_second_parse_and_nothing_else_does() {
        let plain = [
            "GET /https/www.kernel.org/pub/git-2.39.1.tar.xz HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\
             User-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n",
            "GET /fetch?url=https%3A%2F%2Fexample.org%2Fa.tar.gz&md5=0123 HTTP/1.1\r\n\
             Host: cache:8080\r\nUser-Agent: Wget/1.21.3\r\nAccept: */*\r\n\
             Accept-Encoding: identity\r\nConnection: Keep-Alive\r\n\r\n",
            "GET /http/h/a.rpm HTTP/1.1\r\nHost: h\r\nUser-Agent: libdnf (Debian 12)\r\n\
             Accept: */*\r\nCache-Control: no-cache\r\nPragma: no-cache\r\n\r\n",
            "GET /https/files.pythonhosted.org/p/y.whl HTTP/1.1\r\nHost: localhost\r\n\
             User-Agent: pip/23.0.1 {\"ci\":null}\r\nAccept-Encoding: gzip, deflate\r\n\
             Range: bytes=0-99\r\nIf-None-Match: \"abc\"\r\nConnection: close\r\n\r\n",
            "HEAD /http/h/a.rpm HTTP/1.0\r\n\r\n",
            "GET / HTTP/1.1\r\nhost: x\r\nX-Empty:\r\nX-Tab:\tv\r\n\r\n",
        ];
        for head in plain {
            assert_eq!(plain_head(head.as_bytes()), Some(head.len()), "{head}");
            // Followed by the next request, or cut short.
            let two = format!("{head}GET / HTTP/1.1\r\nHost: x\r\n\r\n");
            assert_eq!(plain_head(two.as_bytes()), Some(head.len()), "{head}");
            assert_eq!(
                plain_head(&head.as_bytes()[..head.len() - 1]),
                None,
                "{head}"
            );
            assert_plain_heads_agree(head.as_bytes());
            assert_plain_heads_agree(two.as_bytes());
        }
        let others = [
            "POST /api/v1/prefetch HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n{}",
            "GET / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: t\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: t\r\nConnection: keep-alive, x\r\n\r\n",
            "get / HTTP/1.1\r\nHost: t\r\n\r\n",
            "GET http://h/a HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET //h/a HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET /a?b?c HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET /a%zz HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET /a\"b HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET / HTTP/1.1\nHost: a\n\n",
            "GET / HTTP/1.1\r\nHost : a\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nX: caf\u{e9}\r\n\r\n",
            "GET / HTTP/2.0\r\nHost: a\r\n\r\n",
            "\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        ];
        for head in others {
            assert_eq!(plain_head(head.as_bytes()), None, "{head}");
        }
        let many = format!("GET / HTTP/1.1\r\nHost: a\r\n{}\r\n", "X: y\r\n".repeat(32));
        assert_eq!(plain_head(many.as_bytes()), None);
        let long = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(4096));
        assert_eq!(plain_head(long.as_bytes()), None);
    }

    /// actix-http's parser needs a local task set (its date service spawns a local task).
    fn local<F: std::future::Future>(f: F) -> F::Output {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        tokio::task::LocalSet::new().block_on(&rt, f)
    }

    #[test]
    fn heads_are_measured_from_the_first_byte() {
        local(heads_are_measured())
    }

    async fn heads_are_measured() {
        let get = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(check(get).unwrap(), Some((get.len(), Framing::Head)));
        assert_eq!(check("GET / HTTP/1.1\r\nHost: x\r\n").unwrap(), None);
        let post = "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(
            check(post).unwrap(),
            Some((post.len() - 5, Framing::Body(5)))
        );
        let chunked = "PUT /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(check(chunked).unwrap().unwrap().1, Framing::Chunked);
        let connect = "CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n";
        assert_eq!(check(connect).unwrap().unwrap().1, Framing::Opaque);
        // A target over the limit: 414 before its line (let alone its head) is complete.
        let long = format!("GET /{}", "a".repeat(MAX_REQUEST_LINE));
        assert_eq!(status(check(&long)), 414);
        assert_eq!(
            status(check(&format!(
                "GET /{} HTTP/1.1\r\n",
                "a".repeat(MAX_TARGET)
            ))),
            414
        );
        // Headers over the limit: 431 before the head is complete.
        let fat = format!(
            "GET / HTTP/1.1\r\nHost: x\r\nx: {}",
            "v".repeat(MAX_HEADER_BYTES)
        );
        assert_eq!(status(check(&fat)), 431);
        // What actix-http refuses: the JSON status of each.
        for (head, want) in [
            ("GET / HTTP/1.1\r\n\r\n", 400),
            (
                "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                400,
            ),
            (
                "GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n",
                400,
            ),
            ("G@T / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            ("GET / HTTP/9.1\r\nHost: x\r\n\r\n", 400),
            ("\x16\x03\x01\x02\x00\x01\x00\x01", 400),
        ] {
            assert_eq!(status(check(head)), want, "{head:?}");
        }
        let many: String = (0..100).map(|i| format!("x{i}: y\r\n")).collect();
        assert_eq!(
            status(check(&format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n"))),
            431
        );
        let garbage = "x".repeat(MAX_REQUEST_LINE + 1);
        assert_eq!(status(check(&garbage)), 400);
    }
}
