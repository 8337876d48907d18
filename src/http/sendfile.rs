//! Zero-copy hit bodies: `sendfile(2)` from a blob straight into the client's socket, as
//! nginx does, instead of reading the file into memory and having the HTTP layer copy it
//! into its write buffer.
//!
//! This is sound only because the server runs with an HTTP/1 write buffer limit of one byte
//! (`h1_write_buffer_size(1)` in `http::Server`): actix-http then polls a response body only
//! when everything it wrote before (the response head included) has been handed to the
//! socket, so bytes written here directly can never overtake bytes still queued in actix.
//! It is never used on HTTP/2 connections, whose framing we would corrupt.
//!
//! Small bodies held in memory go out with their response head in one `writev`
//! ([`InlineBody`]): the connection's stream holds back what actix writes until the body
//! sends it. Larger ones hold the head back the same way and send it with `MSG_MORE` right
//! before their `sendfile`, so that head and body share TCP segments (the hint covers that
//! one `send` only: nothing is ever corked across responses).

use std::cell::RefCell;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};

use actix_web::body::{BodySize, MessageBody};
use bytes::Bytes;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// The raw socket of a plain-TCP connection, recorded by `on_connect`, with a lazily made
/// writability registration shared by every response on the connection (one `dup` and one
/// epoll registration per connection, not per response).
#[derive(Clone)]
pub struct ConnSocket {
    fd: RawFd,
    waiter: Rc<RefCell<Option<AsyncFd<OwnedFd>>>>,
    /// Shared with the connection's stream (`headcheck::CheckedStream`), see [`Held`].
    hold: Hold,
}

/// What actix wrote to a connection while a small hit held its writes back: the response
/// head (and anything queued before it), for the hit's [`InlineBody`] to send together with
/// the body in one `writev`: one system call and one TCP segment instead of a `sendto` for
/// the head and a `sendfile` for the body.
#[derive(Debug, Default)]
pub struct Held {
    /// Writes are being held (from the handler's answer until its body is first polled).
    armed: bool,
    bytes: Vec<u8>,
}

pub type Hold = Rc<RefCell<Held>>;

impl Held {
    pub fn is_armed(&self) -> bool {
        self.armed
    }
}

/// A write on the connection's stream: `true` if it was held (the caller reports it written).
pub fn hold_write(hold: &Hold, data: &[u8]) -> bool {
    let mut held = hold.borrow_mut();
    if held.armed {
        held.bytes.extend_from_slice(data);
    }
    held.armed
}

impl ConnSocket {
    /// Wait until the socket is writable. The registration (a duplicate of the socket) is
    /// made only the first time a send would block, so small bodies cost no extra syscalls.
    fn poll_writable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut slot = self.waiter.borrow_mut();
        if slot.is_none() {
            // SAFETY: the socket is open for as long as actix polls a body of its connection.
            let borrowed = unsafe { BorrowedFd::borrow_raw(self.fd) };
            let dup = borrowed.try_clone_to_owned()?;
            // SAFETY: `dup` is an open descriptor we own; the AsyncFd owns it from here on and
            // it is never replaced.
            let waiter = unsafe { AsyncFd::register_with_interest(dup, Interest::WRITABLE) }
                .map_err(|e| e.into_parts().1)?;
            *slot = Some(waiter);
        }
        let waiter = slot.as_mut().expect("just set");
        match waiter.poll_write_ready(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            // Writable again, or a stale readiness: clear it and let the caller try once
            // more; the next WouldBlock re-arms the wake-up.
            Poll::Ready(Ok(mut guard)) => {
                guard.clear_ready();
                Poll::Ready(Ok(()))
            }
        }
    }
}

/// What a [`SendfileBody`] did, for the access log and metrics.
#[derive(Debug, Clone, Default)]
pub struct SentBytes(pub Arc<SendState>);

#[derive(Debug, Default)]
pub struct SendState {
    /// Bytes the kernel accepted.
    pub bytes: AtomicU64,
    /// The client went away before the end.
    pub aborted: AtomicBool,
}

/// `[offset, offset + remaining)` of `file`, written to `socket` by the kernel, after the
/// response head actix wrote meanwhile (see [`Held`]).
pub struct SendfileBody {
    socket: ConnSocket,
    /// Header lines to add to the held head (`name: value\r\n` each).
    lines: Bytes,
    file: Arc<File>,
    offset: i64,
    remaining: u64,
    sent: SentBytes,
    /// The held head, once taken (first poll); sent with `MSG_MORE` before the body.
    head: Vec<u8>,
    head_sent: usize,
    started: bool,
}

impl SendfileBody {
    /// `socket` must be the connection's descriptor (it stays open while actix polls us).
    /// From here until this body is first polled, what actix writes to the connection is
    /// held back for it. `lines` are header lines the head actix writes lacks.
    pub fn new(
        socket: ConnSocket,
        lines: Bytes,
        file: Arc<File>,
        offset: u64,
        len: u64,
        sent: SentBytes,
    ) -> Self {
        socket.hold.borrow_mut().armed = true;
        SendfileBody {
            socket,
            lines,
            file,
            offset: offset as i64,
            remaining: len,
            sent,
            head: Vec::new(),
            head_sent: 0,
            started: false,
        }
    }

    /// Send the held head with `MSG_MORE`: the kernel keeps it back (even with
    /// `TCP_NODELAY`) until the `sendfile` that follows, whose last piece pushes head and
    /// body out together. `None` once it is all sent.
    fn send_head(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Option<Poll<Option<Result<Bytes, io::Error>>>> {
        if !self.started {
            self.started = true;
            self.head = take_held(&self.socket);
            if let Err(e) = add_lines(&mut self.head, &self.lines, &self.sent) {
                return Some(Poll::Ready(Some(Err(e))));
            }
        }
        while self.head_sent < self.head.len() {
            let head = &self.head[self.head_sent..];
            // SAFETY: a valid descriptor and a valid buffer that outlives the call.
            let n = unsafe {
                libc::send(
                    self.socket.fd,
                    head.as_ptr().cast(),
                    head.len(),
                    libc::MSG_MORE | libc::MSG_NOSIGNAL,
                )
            };
            if n >= 0 {
                self.head_sent += n as usize;
            } else if let Some(answer) = write_failed(&self.socket, &self.sent, cx) {
                return Some(answer);
            }
        }
        if !self.head.is_empty() {
            self.head_sent = 0;
            give_back(&self.socket, &mut self.head);
        }
        None
    }
}

/// Complete the held `head` with header `lines` (`name: value\r\n` each; none: nothing to
/// do). The held bytes end with this response's head, as actix wrote all of it before
/// polling the body: its blank line goes after the added lines. Anything else is a broken
/// invariant, and the response is cut rather than sent without its headers.
fn add_lines(head: &mut Vec<u8>, lines: &[u8], sent: &SentBytes) -> io::Result<()> {
    if lines.is_empty() {
        return Ok(());
    }
    if !head.ends_with(b"\r\n\r\n") {
        sent.0.aborted.store(true, Ordering::Relaxed);
        return Err(io::Error::other(
            "the response head was not held before its body",
        ));
    }
    head.truncate(head.len() - 2);
    head.extend_from_slice(lines);
    head.extend_from_slice(b"\r\n");
    Ok(())
}

/// Stop holding the connection's writes and take what was held.
fn take_held(socket: &ConnSocket) -> Vec<u8> {
    let mut held = socket.hold.borrow_mut();
    held.armed = false;
    std::mem::take(&mut held.bytes)
}

/// Empty a sent head's buffer and give it back for the connection's next hit.
fn give_back(socket: &ConnSocket, buf: &mut Vec<u8>) {
    buf.clear();
    let mut held = socket.hold.borrow_mut();
    if held.bytes.capacity() == 0 {
        held.bytes = std::mem::take(buf);
    }
}

/// A body that held the connection's writes but was never polled (the connection is
/// failing): stop holding, or later writes would vanish, and forget what was held, which
/// must never precede a later answer.
fn release_unpolled(socket: &ConnSocket, started: bool) {
    if !started {
        let mut held = socket.hold.borrow_mut();
        held.armed = false;
        held.bytes.clear();
    }
}

impl Drop for SendfileBody {
    fn drop(&mut self) {
        release_unpolled(&self.socket, self.started);
    }
}

/// Linux sends at most this much per `sendfile` call.
const MAX_PER_CALL: u64 = 0x7fff_f000;

impl MessageBody for SendfileBody {
    type Error = io::Error;

    /// Unknown to actix, which then neither frames nor counts the body: the handler sets
    /// `Content-Length` itself, and these bytes bypass actix entirely.
    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, io::Error>>> {
        let this = &mut *self;
        if let Some(answer) = this.send_head(cx) {
            return answer;
        }
        while this.remaining > 0 {
            let count = this.remaining.min(MAX_PER_CALL) as usize;
            // SAFETY: valid descriptors and a valid offset pointer; the kernel advances it.
            let n = unsafe {
                libc::sendfile(
                    this.socket.fd,
                    this.file.as_raw_fd(),
                    &mut this.offset,
                    count,
                )
            };
            if n > 0 {
                this.remaining -= n as u64;
                this.sent.0.bytes.fetch_add(n as u64, Ordering::Relaxed);
                continue;
            }
            if n == 0 {
                // The file is shorter than the index says: never end the body cleanly.
                return Poll::Ready(Some(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "blob file shorter than its recorded size",
                ))));
            }
            if let Some(answer) = write_failed(&this.socket, &this.sent, cx) {
                return answer;
            }
        }
        Poll::Ready(None)
    }
}

/// After a failed write to the socket (`errno` still set): `None` to try again
/// (interrupted, or writable again), else what the body's `poll_next` answers.
fn write_failed(
    socket: &ConnSocket,
    sent: &SentBytes,
    cx: &mut Context<'_>,
) -> Option<Poll<Option<Result<Bytes, io::Error>>>> {
    let err = io::Error::last_os_error();
    match err.kind() {
        io::ErrorKind::Interrupted => None,
        io::ErrorKind::WouldBlock => match socket.poll_writable(cx) {
            Poll::Pending => Some(Poll::Pending),
            Poll::Ready(Err(e)) => Some(Poll::Ready(Some(Err(e)))),
            Poll::Ready(Ok(())) => None,
        },
        // The client went away: nothing to report to actix (which would log an error for
        // every impatient client); the access log shows the transfer incomplete.
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => {
            sent.0.aborted.store(true, Ordering::Relaxed);
            Some(Poll::Ready(None))
        }
        _ => Some(Poll::Ready(Some(Err(err)))),
    }
}

/// Record the socket of plain-TCP connections (not TLS, whose bytes we must not bypass),
/// with the hold of the stream actix writes to.
pub fn on_connect(conn: &dyn std::any::Any, hold: &Hold, ext: &mut actix_web::dev::Extensions) {
    if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
        ext.insert(ConnSocket {
            fd: tcp.as_raw_fd(),
            waiter: Rc::default(),
            hold: hold.clone(),
        });
    }
}

/// A small body from memory, sent in one `writev` together with the response head actix
/// wrote meanwhile (see [`Held`]). Sound for the same reason as [`SendfileBody`]: actix polls
/// it only once everything before it was handed to the stream, which held it for us.
pub struct InlineBody {
    socket: ConnSocket,
    /// Header lines to add to the held head (`name: value\r\n` each).
    lines: Bytes,
    /// The held head, once taken (first poll) and completed with `lines`; sent before `body`.
    head: Vec<u8>,
    head_sent: usize,
    body: Bytes,
    body_sent: usize,
    started: bool,
    sent: SentBytes,
}

impl InlineBody {
    /// The body `body` of the response being returned: from here until this body is first
    /// polled, what actix writes to the connection is held back for it.
    /// `lines` are header lines the head actix writes lacks: they go in before its end.
    pub fn new(socket: ConnSocket, lines: Bytes, body: Bytes, sent: SentBytes) -> Self {
        socket.hold.borrow_mut().armed = true;
        InlineBody {
            socket,
            lines,
            head: Vec::new(),
            head_sent: 0,
            body,
            body_sent: 0,
            started: false,
            sent,
        }
    }
}

impl MessageBody for InlineBody {
    type Error = io::Error;

    /// As for [`SendfileBody`]: the handler sets `Content-Length`, actix never sees the bytes.
    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, io::Error>>> {
        let this = &mut *self;
        if !this.started {
            this.started = true;
            this.head = take_held(&this.socket);
            if let Err(e) = add_lines(&mut this.head, &this.lines, &this.sent) {
                return Poll::Ready(Some(Err(e)));
            }
        }
        loop {
            let head = &this.head[this.head_sent..];
            let body = &this.body[this.body_sent..];
            if head.is_empty() && body.is_empty() {
                give_back(&this.socket, &mut this.head);
                return Poll::Ready(None);
            }
            let iov = [
                libc::iovec {
                    iov_base: head.as_ptr() as *mut libc::c_void,
                    iov_len: head.len(),
                },
                libc::iovec {
                    iov_base: body.as_ptr() as *mut libc::c_void,
                    iov_len: body.len(),
                },
            ];
            // SAFETY: a valid descriptor and two valid buffers that outlive the call.
            let n = unsafe { libc::writev(this.socket.fd, iov.as_ptr(), 2) };
            if n >= 0 {
                let n = n as usize;
                let from_head = n.min(head.len());
                this.head_sent += from_head;
                this.body_sent += n - from_head;
                let body_bytes = (n - from_head) as u64;
                this.sent.0.bytes.fetch_add(body_bytes, Ordering::Relaxed);
                continue;
            }
            if let Some(answer) = write_failed(&this.socket, &this.sent, cx) {
                return answer;
            }
        }
    }
}

impl Drop for InlineBody {
    fn drop(&mut self) {
        release_unpolled(&self.socket, self.started);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_go_in_before_the_blank_line_that_ends_the_held_head() {
        let sent = SentBytes::default();
        let mut head = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n".to_vec();
        add_lines(&mut head, b"etag: \"x\"\r\nx-a: b\r\n", &sent).unwrap();
        assert_eq!(
            head,
            b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\netag: \"x\"\r\nx-a: b\r\n\r\n"
        );
        // Nothing to add: the head is left as it is, whatever it holds.
        let mut other = b"partial".to_vec();
        add_lines(&mut other, b"", &sent).unwrap();
        assert_eq!(other, b"partial");
        assert!(!sent.0.aborted.load(Ordering::Relaxed));
    }

    /// Held bytes that do not end like a head (the invariant of `h1_write_buffer_size(1)`
    /// broken): the response is cut, never sent without its headers.
    #[test]
    fn a_held_head_without_its_end_cuts_the_response() {
        for held in [&b""[..], b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n"] {
            let sent = SentBytes::default();
            let mut head = held.to_vec();
            assert!(add_lines(&mut head, b"etag: \"x\"\r\n", &sent).is_err());
            assert!(
                sent.0.aborted.load(Ordering::Relaxed),
                "counted as cut short"
            );
        }
    }
}
