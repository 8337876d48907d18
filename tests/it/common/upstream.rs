//! A programmable, request-counting HTTP/1.1 origin server for integration tests.
//!
//! Built on raw tokio TCP rather than an HTTP framework so that tests can produce exactly the
//! misbehaviour real upstreams show: lying `Content-Length`, truncated bodies, slow or stalled
//! transfers, bodies delimited by connection close. Tests script responses per path with
//! [`Route`], observe what arrived with [`Upstream::hits`] / [`Upstream::requests`], and
//! synchronise with in-flight responses through [`Gate`] instead of sleeping.
//!
//! ```ignore
//! let up = Upstream::start().await;
//! let gate = Gate::new();
//! let body = random_bytes(1 << 20, 1);
//! up.route_seq("/a.tar.gz", vec![Route::status(503), Route::ok(body).hold_at(4096, gate.clone())]);
//! // ... point upcache at up.url("/a.tar.gz"), start two downloads ...
//! gate.reached().await;            // the second upstream response is mid-body
//! assert_eq!(up.hits("/a.tar.gz"), 2);
//! gate.open();
//! ```

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// Default size of one body write when neither `chunk_size` nor `rate` says otherwise.
const DEFAULT_CHUNK: usize = 64 * 1024;
/// Upper bound on a request head; anything larger is a broken client, not a test scenario.
const MAX_HEAD: usize = 64 * 1024;
/// Number of writes per second `rate()` aims for: small enough pieces that a client sees a
/// smooth stream, large enough that a 20 MB/s pace is not dominated by syscalls.
const RATE_TICKS_PER_SEC: u64 = 250;

/// A running origin server on `127.0.0.1:<ephemeral>`.
///
/// Cloning is cheap and every clone controls the same server; the server stops (listener
/// closed, live connections aborted) when the last clone is dropped.
#[derive(Clone)]
pub struct Upstream {
    handle: Arc<Handle>,
}

/// Owns the accept task. Connection tasks only reference [`Shared`], never this, so dropping
/// the last [`Upstream`] really drops it (no reference cycle keeps the server alive).
struct Handle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        // The accept task owns the listener and the JoinSet of connection tasks, so aborting
        // it closes the listening socket and aborts (closes) every live connection as well.
        self.accept.abort();
    }
}

/// State shared between the test-facing handle and the connection tasks.
struct Shared {
    state: Mutex<State>,
    connections: AtomicUsize,
}

#[derive(Default)]
struct State {
    scripts: HashMap<String, Script>,
    log: Vec<Entry>,
}

/// The responses configured for one path; `served` counts requests since it was configured,
/// so re-routing a path restarts its sequence.
struct Script {
    routes: Vec<Route>,
    served: usize,
}

struct Entry {
    path: String,
    request: Recorded,
}

/// One request as the server received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// Request method as sent (`GET`, `HEAD`, ...).
    pub method: String,
    /// Full request target, including any query string.
    pub target: String,
    /// Header fields in arrival order, names lowercased, values trimmed.
    pub headers: Vec<(String, String)>,
    /// The request body (first 1 MiB), e.g. a webhook's JSON.
    pub body: Vec<u8>,
}

impl Recorded {
    /// Value of the first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Upstream {
    /// Binds `127.0.0.1:0` and serves on the current tokio runtime (call it inside one) until
    /// the last handle is dropped.
    pub async fn start() -> Upstream {
        Self::start_on(Ipv4Addr::LOCALHOST)
            .await
            .expect("upstream: bind")
    }

    /// Like [`Upstream::start`] on another local address, v4 or v6 (e.g. a public-looking
    /// one added to the `lo` of a test's network namespace, see `netns`); fails if the
    /// address is not configured.
    pub async fn start_on(ip: impl Into<IpAddr>) -> std::io::Result<Upstream> {
        Self::start_at(SocketAddr::new(ip.into(), 0)).await
    }

    /// Like [`Upstream::start`] on a given address and port.
    pub async fn start_at(addr: impl Into<SocketAddr>) -> std::io::Result<Upstream> {
        let addr = addr.into();
        let socket = match addr {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        socket.bind(addr)?;
        // A large backlog: tests open hundreds of connections at once and a full accept queue
        // would show up as mysterious connect delays (SYN retransmits after 1 s).
        let listener = socket.listen(4096)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            connections: AtomicUsize::new(0),
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(Upstream {
            handle: Arc::new(Handle {
                addr,
                shared,
                accept,
            }),
        })
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.handle.addr
    }

    /// `http://127.0.0.1:<port>` without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.handle.addr)
    }

    /// `http://127.0.0.1:<port><path>`; `path` should start with `/` (one is added if not).
    pub fn url(&self, path: &str) -> String {
        if path.starts_with('/') {
            format!("http://{}{}", self.handle.addr, path)
        } else {
            format!("http://{}/{}", self.handle.addr, path)
        }
    }

    /// Every request to `path` (query ignored) gets `route`.
    pub fn route(&self, path: &str, route: Route) {
        self.route_seq(path, vec![route]);
    }

    /// The n-th request to `path` (counted from this call) gets `routes[n]`; the last one
    /// repeats forever. Panics if `routes` is empty.
    pub fn route_seq(&self, path: &str, routes: Vec<Route>) {
        assert!(!routes.is_empty(), "route_seq needs at least one route");
        self.handle
            .shared
            .lock()
            .scripts
            .insert(path.to_string(), Script { routes, served: 0 });
    }

    /// Requests received for `path` (any method, query string ignored).
    pub fn hits(&self, path: &str) -> usize {
        let state = self.handle.shared.lock();
        state.log.iter().filter(|e| e.path == path).count()
    }

    /// Requests whose full target (path plus query) equals `target` exactly.
    pub fn hits_with_query(&self, target: &str) -> usize {
        let state = self.handle.shared.lock();
        state
            .log
            .iter()
            .filter(|e| e.request.target == target)
            .count()
    }

    /// The requests received for `path` (query ignored), oldest first.
    pub fn requests(&self, path: &str) -> Vec<Recorded> {
        let state = self.handle.shared.lock();
        state
            .log
            .iter()
            .filter(|e| e.path == path)
            .map(|e| e.request.clone())
            .collect()
    }

    /// Number of requests received on any path.
    pub fn total_hits(&self) -> usize {
        self.handle.shared.lock().log.len()
    }

    /// Number of TCP connections accepted so far (for keep-alive / pooling assertions).
    pub fn connections(&self) -> usize {
        self.handle.shared.connections.load(Ordering::SeqCst)
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not turn every later assertion into a poison error.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Logs the request and picks its response in one critical section, so `hits()` is
    /// already up to date when the first response byte leaves.
    fn record_and_route(&self, req: &Request) -> Route {
        let path = path_of(&req.target).to_string();
        let mut state = self.lock();
        let route = state.scripts.get_mut(&path).map(|script| {
            let i = script.served.min(script.routes.len() - 1);
            script.served += 1;
            script.routes[i].clone()
        });
        state.log.push(Entry {
            path,
            request: Recorded {
                method: req.method.clone(),
                target: req.target.clone(),
                headers: req.headers.clone(),
                body: req.body.clone(),
            },
        });
        route.unwrap_or_else(|| {
            Route::status(404)
                .header("Content-Type", "text/plain")
                .body("not found\n")
        })
    }
}

/// The path part of a request target: query and fragment removed, absolute-form reduced to
/// its path so a proxy-style request still matches the configured route.
fn path_of(target: &str) -> &str {
    let path = match target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))
    {
        Some(rest) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => target,
    };
    path.split(['?', '#']).next().unwrap_or(path)
}

/// How the end of the response body is signalled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    /// `Content-Length` equal to the body actually sent.
    Length,
    /// `Content-Length: n` whatever the body is.
    Declared(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// No framing header: the body ends when the connection closes.
    Close,
}

/// A scripted response: a constructor picks status and body, builder methods add headers and
/// misbehaviour. Cheap to clone (the body is [`Bytes`]).
#[derive(Clone, Debug)]
pub struct Route {
    status: u16,
    headers: Vec<(String, String)>,
    body: Bytes,
    framing: Framing,
    chunk_size: usize,
    delay_headers: Option<Duration>,
    delay_chunks: Option<Duration>,
    rate: Option<u64>,
    truncate_after: Option<usize>,
    hang: bool,
    hold_at: Option<(usize, Gate)>,
    hold_headers: Option<Gate>,
    ranges: bool,
    conditional: bool,
}

impl Route {
    /// 200 with `body`, `Content-Length` and `Content-Type: application/octet-stream`.
    pub fn ok(body: impl Into<Bytes>) -> Route {
        Route::status(200)
            .header("Content-Type", "application/octet-stream")
            .body(body)
    }

    /// `code` with an empty body (e.g. 404, 410, 500, 503).
    pub fn status(code: u16) -> Route {
        Route {
            status: code,
            headers: Vec::new(),
            body: Bytes::new(),
            framing: Framing::Length,
            chunk_size: DEFAULT_CHUNK,
            delay_headers: None,
            delay_chunks: None,
            rate: None,
            truncate_after: None,
            hang: false,
            hold_at: None,
            hold_headers: None,
            ranges: false,
            conditional: false,
        }
    }

    /// `code` (301, 302, 303, 307, 308) with a `Location` header and an empty body.
    pub fn redirect(code: u16, location: &str) -> Route {
        Route::status(code).header("Location", location)
    }

    /// Replaces the body, keeping everything else.
    pub fn body(mut self, body: impl Into<Bytes>) -> Route {
        self.body = body.into();
        self
    }

    /// Adds a response header, replacing any header of the same name (case-insensitive).
    ///
    /// `Content-Length` and `Transfer-Encoding: chunked` are framing, not plain headers: they
    /// are mapped to [`Route::declared_length`] and [`Route::chunked`] so the body is still
    /// written consistently with what was announced.
    pub fn header(mut self, name: &str, value: &str) -> Route {
        if name.eq_ignore_ascii_case("content-length") {
            let n = value
                .trim()
                .parse()
                .expect("Content-Length header must be a number");
            return self.declared_length(n);
        }
        if name.eq_ignore_ascii_case("transfer-encoding")
            && value.trim().eq_ignore_ascii_case("chunked")
        {
            return self.chunked();
        }
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// `Transfer-Encoding: chunked` instead of `Content-Length`; each body piece is one chunk.
    pub fn chunked(mut self) -> Route {
        self.framing = Framing::Chunked;
        self
    }

    /// Neither `Content-Length` nor chunked: the body ends when the server closes the
    /// connection (announced with `Connection: close`).
    pub fn no_length(mut self) -> Route {
        self.framing = Framing::Close;
        self
    }

    /// Announces `Content-Length: n` whatever the body is. When `n` differs from the body
    /// length the connection is closed after the body, so a short body is seen as truncated
    /// rather than hanging the client.
    pub fn declared_length(mut self, n: u64) -> Route {
        self.framing = Framing::Declared(n);
        self
    }

    /// Writes the body in pieces of at most `n` bytes (default 64 KiB). With `chunked()` each
    /// piece is one chunk.
    pub fn chunk_size(mut self, n: usize) -> Route {
        assert!(n > 0, "chunk_size must be positive");
        self.chunk_size = n;
        self
    }

    /// Waits `d` after reading the request before sending the status line.
    pub fn delay_headers(mut self, d: Duration) -> Route {
        self.delay_headers = Some(d);
        self
    }

    /// Waits `d` between body pieces (a slow upstream).
    pub fn delay_chunks(mut self, d: Duration) -> Route {
        self.delay_chunks = Some(d);
        self
    }

    /// Paces the body at `bytes_per_sec`: piece k is sent when a link of that rate would have
    /// delivered its last byte, measured from the end of the headers, so the whole body takes
    /// `len / rate` regardless of timer jitter on individual pieces.
    pub fn rate(mut self, bytes_per_sec: u64) -> Route {
        assert!(bytes_per_sec > 0, "rate must be positive");
        self.rate = Some(bytes_per_sec);
        self
    }

    /// Sends only the first `n` body bytes, then closes the connection (the announced length
    /// is still the full one, so the client sees an incomplete body). With `chunked()` the
    /// terminating zero-length chunk is never sent, even if `n` covers the whole body.
    pub fn truncate_after(mut self, n: usize) -> Route {
        self.truncate_after = Some(n);
        self
    }

    /// Reads the request and never answers; the connection stays open until the client
    /// closes it or the server is dropped.
    pub fn hang(mut self) -> Route {
        self.hang = true;
        self
    }

    /// Sends `n` body bytes (after the headers), then waits until `gate` is opened, then
    /// sends the rest. `n = 0` stalls right after the headers.
    pub fn hold_at(mut self, n: usize, gate: Gate) -> Route {
        self.hold_at = Some((n, gate));
        self
    }

    /// Waits for `gate` before sending the status line (after any `delay_headers`).
    pub fn hold_headers(mut self, gate: Gate) -> Route {
        self.hold_headers = Some(gate);
        self
    }

    /// Honours a single `Range: bytes=a-b`, `bytes=a-` or `bytes=-n` on a 200 route with 206
    /// and `Content-Range` (416 if unsatisfiable), and advertises `Accept-Ranges: bytes`.
    /// An `If-Range` that does not equal the route's `ETag` (strong) or `Last-Modified`
    /// yields the full 200. Multiple ranges or malformed values are ignored (full 200).
    pub fn ranges(mut self) -> Route {
        self.ranges = true;
        self
    }

    /// Answers 304 (no body) on a 200 route when `If-None-Match` matches the route's `ETag`
    /// (weak comparison, `*` matches), or, without `If-None-Match`, when `If-Modified-Since`
    /// is not older than the route's `Last-Modified`.
    pub fn conditional(mut self) -> Route {
        self.conditional = true;
        self
    }

    fn get_header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A one-shot latch that tests use instead of sleeps.
///
/// A route holding at a gate first counts itself as *arrived* (see [`Gate::reached`]) and
/// then waits; [`Gate::open`] releases every current and future waiter.
#[derive(Clone)]
pub struct Gate {
    inner: Arc<GateInner>,
}

struct GateInner {
    // watch channels keep the latest value, so a waiter that subscribes after the change
    // still sees it: no lost wake-ups between "check" and "wait".
    open: watch::Sender<bool>,
    arrived: watch::Sender<usize>,
}

impl Gate {
    /// A closed gate nobody has reached yet.
    pub fn new() -> Gate {
        Gate {
            inner: Arc::new(GateInner {
                open: watch::channel(false).0,
                arrived: watch::channel(0).0,
            }),
        }
    }

    /// Opens the gate for good: every current and future waiter passes.
    pub fn open(&self) {
        self.inner.open.send_replace(true);
    }

    /// Whether [`Gate::open`] has been called.
    pub fn is_open(&self) -> bool {
        *self.inner.open.borrow()
    }

    /// Resolves once at least one request has arrived at the gate (even if it is open).
    pub async fn reached(&self) {
        self.reached_n(1).await;
    }

    /// Resolves once at least `n` requests have arrived at the gate.
    pub async fn reached_n(&self, n: usize) {
        let mut rx = self.inner.arrived.subscribe();
        // Err only if the sender is gone, which cannot happen while `self` holds it.
        let _ = rx.wait_for(|count| *count >= n).await;
    }

    /// How many requests have arrived at the gate so far.
    pub fn arrivals(&self) -> usize {
        *self.inner.arrived.borrow()
    }

    /// Registers an arrival, then waits until the gate is open.
    async fn pass(&self) {
        let mut rx = self.inner.open.subscribe();
        self.inner.arrived.send_modify(|count| *count += 1);
        let _ = rx.wait_for(|open| *open).await;
    }
}

impl Default for Gate {
    fn default() -> Gate {
        Gate::new()
    }
}

impl fmt::Debug for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gate")
            .field("open", &self.is_open())
            .field("arrivals", &self.arrivals())
            .finish()
    }
}

/// Deterministic pseudo-random bytes (SplitMix64), so tests get incompressible bodies that
/// can be regenerated for comparison without a `rand` dependency.
pub fn random_bytes(n: usize, seed: u64) -> Bytes {
    let mut state = seed;
    let mut out = vec![0u8; n];
    for piece in out.chunks_mut(8) {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        piece.copy_from_slice(&z.to_le_bytes()[..piece.len()]);
    }
    Bytes::from(out)
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    // Connection tasks live in this JoinSet so that aborting the accept task (on drop of the
    // last handle) drops the set, which aborts them and closes their sockets.
    let mut conns = JoinSet::new();
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                shared.connections.fetch_add(1, Ordering::SeqCst);
                let shared = shared.clone();
                conns.spawn(async move {
                    // I/O errors just end the connection, as a real server would.
                    let _ = serve_connection(shared, stream).await;
                });
            }
            // EMFILE and friends: back off instead of spinning; the test decides if it fails.
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
        // Reap finished connections so the set does not grow over a long test.
        while conns.try_join_next().is_some() {}
    }
}

/// A parsed request head.
struct Request {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// The client asked to close (or spoke HTTP/1.0, or sent a body we cannot frame).
    close: bool,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

type Conn = BufReader<TcpStream>;

async fn serve_connection(shared: Arc<Shared>, stream: TcpStream) -> io::Result<()> {
    // Without NODELAY, a small write after the headers (hold_at, tiny chunks) can sit in
    // Nagle's buffer until the client's delayed ACK fires, ~40 ms later.
    stream.set_nodelay(true)?;
    let mut conn = BufReader::new(stream);
    loop {
        let Some(req) = read_request(&mut conn).await? else {
            return Ok(());
        };
        let route = shared.record_and_route(&req);
        if !respond(&mut conn, &req, &route).await? {
            // Orderly FIN after the (possibly incomplete) body; errors are irrelevant here.
            let _ = conn.get_mut().shutdown().await;
            return Ok(());
        }
    }
}

/// Reads one request head and discards its body. `None` on a clean EOF between requests.
async fn read_request(conn: &mut Conn) -> io::Result<Option<Request>> {
    let bad = |msg: &str| io::Error::new(io::ErrorKind::InvalidData, msg.to_string());
    let mut line = Vec::new();
    let mut total = 0;
    // Request line; RFC 9112 asks servers to ignore empty lines before it.
    let request_line = loop {
        line.clear();
        if conn.read_until(b'\n', &mut line).await? == 0 {
            return Ok(None);
        }
        total += line.len();
        let text = String::from_utf8_lossy(&line).trim().to_string();
        if !text.is_empty() {
            break text;
        }
        if total > MAX_HEAD {
            return Err(bad("request head too large"));
        }
    };
    let mut parts = request_line.split_ascii_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("malformed request line"));
    };
    let (method, target, version) = (method.to_string(), target.to_string(), version.to_string());

    let mut headers = Vec::new();
    loop {
        line.clear();
        if conn.read_until(b'\n', &mut line).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        total += line.len();
        if total > MAX_HEAD {
            return Err(bad("request head too large"));
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\r', '\n']);
        if text.is_empty() {
            break;
        }
        let Some((name, value)) = text.split_once(':') else {
            return Err(bad("malformed header line"));
        };
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }

    let mut req = Request {
        method,
        target,
        headers,
        body: Vec::new(),
        close: false,
    };
    let connection = req.header("connection").unwrap_or("").to_ascii_lowercase();
    req.close = if version == "HTTP/1.0" {
        !connection.contains("keep-alive")
    } else {
        connection.split(',').any(|t| t.trim() == "close")
    };

    if req.header("transfer-encoding").is_some() {
        // Clients under test never send chunked bodies; rather than parse one, answer and
        // close so an unread body cannot be mistaken for the next request.
        req.close = true;
    } else if let Some(len) = req.header("content-length") {
        let len: u64 = len.parse().map_err(|_| bad("bad Content-Length"))?;
        let mut body = (&mut *conn).take(len);
        let kept = (&mut body).take(1 << 20).read_to_end(&mut req.body).await? as u64;
        let rest = tokio::io::copy(&mut body, &mut tokio::io::sink()).await?;
        if kept + rest != len {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(Some(req))
}

/// Writes the response for `req`. Returns whether the connection may serve another request.
async fn respond(conn: &mut Conn, req: &Request, route: &Route) -> io::Result<bool> {
    if route.hang {
        // Never answer, but notice when the client gives up so the task does not linger.
        tokio::io::copy(conn, &mut tokio::io::sink()).await?;
        return Ok(false);
    }
    if let Some(d) = route.delay_headers {
        tokio::time::sleep(d).await;
    }
    if let Some(gate) = &route.hold_headers {
        gate.pass().await;
    }

    let mut status = route.status;
    let mut headers = route.headers.clone();
    let mut body = route.body.clone();
    if route.conditional && status == 200 && not_modified(req, route) {
        status = 304;
        body = Bytes::new();
    } else if route.ranges && status == 200 {
        if route.get_header("accept-ranges").is_none() {
            headers.push(("Accept-Ranges".into(), "bytes".into()));
        }
        let full = body.len() as u64;
        if let Some(range) = req.header("range")
            && if_range_matches(req, route)
        {
            match parse_range(range, full) {
                Some(Ok((first, last))) => {
                    status = 206;
                    body = body.slice(first as usize..=last as usize);
                    headers.push((
                        "Content-Range".into(),
                        format!("bytes {first}-{last}/{full}"),
                    ));
                }
                Some(Err(())) => {
                    status = 416;
                    body = Bytes::new();
                    headers.push(("Content-Range".into(), format!("bytes */{full}")));
                }
                None => {}
            }
        }
    }

    // 1xx, 204 and 304 never carry a body, so they get no framing header either.
    let bodyless = status < 200 || status == 204 || status == 304;
    let send_body = !bodyless && req.method != "HEAD";
    let mut close = req.close || route.truncate_after.is_some();
    let mut announce_close = req.close;
    if !bodyless {
        match route.framing {
            Framing::Length => {
                headers.push(("Content-Length".into(), body.len().to_string()));
            }
            Framing::Declared(n) => {
                headers.push(("Content-Length".into(), n.to_string()));
                // The stream is out of sync after a lie; closing makes a short body visible
                // as an early EOF instead of a client waiting forever.
                close |= n != body.len() as u64;
            }
            Framing::Chunked => {
                headers.push(("Transfer-Encoding".into(), "chunked".into()));
            }
            Framing::Close => {
                close = true;
                announce_close = true;
            }
        }
    }
    if announce_close {
        headers.push(("Connection".into(), "close".into()));
    }

    let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (name, value) in &headers {
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    let stream = conn.get_mut();
    stream.write_all(head.as_bytes()).await?;

    if send_body {
        let complete = write_body(stream, &body, route).await?;
        close |= !complete;
    }
    stream.flush().await?;
    Ok(!close)
}

/// Writes the body according to the route's pacing, hold and truncation options. Returns
/// whether the body was sent completely (including the final chunk when chunked).
async fn write_body(stream: &mut TcpStream, body: &Bytes, route: &Route) -> io::Result<bool> {
    let chunked = route.framing == Framing::Chunked;
    let end = route
        .truncate_after
        .map_or(body.len(), |n| n.min(body.len()));
    let mut piece_max = route.chunk_size;
    if let Some(rate) = route.rate {
        piece_max = piece_max.min((rate / RATE_TICKS_PER_SEC).max(1) as usize);
    }
    let mut hold = route.hold_at.as_ref().map(|(n, gate)| (*n, gate));
    let start = Instant::now();
    let mut pos = 0;
    let mut buf = Vec::new();
    loop {
        if let Some((at, gate)) = hold
            && pos >= at.min(end)
        {
            gate.pass().await;
            hold = None;
        }
        if pos >= end {
            break;
        }
        let mut len = piece_max.min(end - pos);
        if let Some((at, _)) = hold {
            // Stop exactly at the hold point so the client holds exactly `at` bytes.
            len = len.min(at - pos);
        }
        if pos > 0
            && let Some(d) = route.delay_chunks
        {
            tokio::time::sleep(d).await;
        }
        if let Some(rate) = route.rate {
            // Absolute deadlines: timer lateness on one piece is made up by the next ones
            // instead of accumulating into a slower overall rate.
            let due = Duration::from_secs_f64((pos + len) as f64 / rate as f64);
            tokio::time::sleep_until(start + due).await;
        }
        let data = &body[pos..pos + len];
        if chunked {
            buf.clear();
            buf.extend_from_slice(format!("{len:x}\r\n").as_bytes());
            buf.extend_from_slice(data);
            buf.extend_from_slice(b"\r\n");
            stream.write_all(&buf).await?;
        } else {
            stream.write_all(data).await?;
        }
        pos += len;
    }
    if route.truncate_after.is_some() {
        return Ok(false);
    }
    if chunked {
        stream.write_all(b"0\r\n\r\n").await?;
    }
    Ok(true)
}

/// `If-Range` absent, or equal to the route's strong `ETag` or its `Last-Modified`.
fn if_range_matches(req: &Request, route: &Route) -> bool {
    let Some(cond) = req.header("if-range") else {
        return true;
    };
    if cond.starts_with("W/") {
        return false;
    }
    route
        .get_header("etag")
        .is_some_and(|e| e == cond && !e.starts_with("W/"))
        || route.get_header("last-modified") == Some(cond)
}

/// Parses a single byte range against a body of `len` bytes. `None`: ignore the header
/// (malformed or multiple ranges); `Some(Err)`: unsatisfiable; `Some(Ok((first, last)))`.
fn parse_range(value: &str, len: u64) -> Option<Result<(u64, u64), ()>> {
    let spec = value.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.trim().split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        if n == 0 || len == 0 {
            return Some(Err(()));
        }
        return Some(Ok((len.saturating_sub(n), len - 1)));
    }
    let first: u64 = a.parse().ok()?;
    let last = if b.is_empty() {
        u64::MAX
    } else {
        b.parse().ok()?
    };
    if last < first {
        return None;
    }
    if first >= len {
        return Some(Err(()));
    }
    Some(Ok((first, last.min(len - 1))))
}

/// Whether a conditional request may be answered with 304 (see [`Route::conditional`]).
fn not_modified(req: &Request, route: &Route) -> bool {
    if let Some(inm) = req.header("if-none-match") {
        let Some(etag) = route.get_header("etag") else {
            return inm.trim() == "*";
        };
        let opaque = |t: &str| t.trim().trim_start_matches("W/").to_string();
        return inm
            .split(',')
            .any(|t| t.trim() == "*" || opaque(t) == opaque(etag));
    }
    let (Some(ims), Some(lm)) = (
        req.header("if-modified-since"),
        route.get_header("last-modified"),
    ) else {
        return false;
    };
    match (
        httpdate::parse_http_date(ims),
        httpdate::parse_http_date(lm),
    ) {
        (Ok(ims), Ok(lm)) => lm <= ims,
        _ => false,
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        206 => "Partial Content",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        410 => "Gone",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}
