//! `CONNECT` with `proxy.connect = "intercept"` (SPEC 9): answer `200`, terminate the client's
//! TLS with a leaf for the CONNECT host (`crate::intercept`), and serve the decrypted HTTP/1.1
//! with the same actix `App` as the listener (same routes, middleware, limits, cache), every
//! request rewritten to the proxy form `https://host:port/path` before it is routed.
//!
//! How the bytes flow: the CONNECT payload (everything the client sends after the request
//! head, see `tunnel`) is written into one end of an in-memory duplex pipe, and what is read
//! from that end is the CONNECT response's unframed body. The other end of the pipe goes
//! through the TLS acceptor into actix-http's HTTP/1 dispatcher (`H1Service`), which serves
//! any `AsyncRead + AsyncWrite` with a peer address: the client's own, so per-client limits
//! and audit records name the real client. Each worker thread builds that service once.
//! Hits are streamed through TLS: no `ConnSocket` is recorded for these connections, so the
//! sendfile fast path (which writes to the TCP socket directly) is never taken.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_http::body::BoxBody;
use actix_http::error::DispatchError;
use actix_http::{HttpServiceBuilder, Request, Response};
use actix_service::boxed::BoxService;
use actix_service::{IntoServiceFactory, Service, ServiceFactory, ServiceFactoryExt};
use actix_web::dev::AppConfig;
use actix_web::http::uri::{Authority, Scheme, Uri};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use futures::future::{Either, Ready, ready};
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tracing::debug;

use super::server::AppParts;
use super::{app_of, client_ip, tunnel};
use crate::error::Error;

/// Bytes buffered in the pipe between the CONNECT and the TLS endpoint, each way: enough
/// for a TLS record or two in flight, small enough that hundreds of slow clients cost little.
const PIPE_BUFFER: usize = 64 * 1024;
/// A client that has not finished its TLS handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Marks the response to an intercepted CONNECT: the requests inside it are admitted (rate
/// and concurrency) one by one, so the CONNECT itself holds no concurrency slot while the
/// connection lasts.
pub struct InnerRequestsCounted;

/// The connection-level mark of an intercepted connection: whose requests these are.
#[derive(Clone)]
struct Intercepted(Authority);

/// Answer an intercepted `CONNECT host:port`: a blind tunnel for hosts outside
/// `intercept_hosts`, else TLS terminated here and the requests inside served like the proxy
/// form.
pub async fn connect(req: HttpRequest, payload: web::Payload) -> Result<HttpResponse, Error> {
    let app = app_of(&req);
    let parts = req
        .app_data::<web::Data<AppParts>>()
        .expect("app parts are registered")
        .get_ref()
        .clone();
    let authority = parts
        .authority
        .clone()
        .ok_or_else(|| Error::Internal("interception is configured but not set up".into()))?;
    let target = tunnel::target(&req, &app)?;
    if !authority.intercepts(&target.host) {
        return tunnel::relay(&app, &target, payload).await;
    }
    // Like the tunnel, refuse a host that resolves only to forbidden addresses now. A host
    // that does not resolve at all is not refused: its cached files are still served, and a
    // fetch reports the failure.
    if !app.config.upstream.allow_private {
        if let Err(e @ Error::ForbiddenDestination(_)) =
            tunnel::allowed_addresses(&app, &target).await
        {
            return Err(e);
        }
    }
    let tls = authority.server_config(&target.host).map_err(|e| match e {
        crate::intercept::InterceptError::Host { .. } => Error::BadRequest(e.to_string()),
        _ => Error::Internal(e.to_string()),
    })?;
    let peer =
        client_ip(&req).map(|ip| SocketAddr::new(ip, req.peer_addr().map_or(0, |a| a.port())));
    let (ours, inner) = tokio::io::duplex(PIPE_BUFFER);
    let (back, forth) = tokio::io::split(ours);
    tunnel::forward_payload(payload, forth);
    let conn = Intercepted(target.authority.clone());
    actix_web::rt::spawn(serve(parts, tls, inner, conn, peer));
    let mut res = tunnel::established(tokio_util::io::ReaderStream::with_capacity(back, 64 * 1024));
    res.extensions_mut().insert(InnerRequestsCounted);
    Ok(res)
}

/// Accept the client's TLS on `io` and serve the HTTP/1.1 inside until either side closes.
async fn serve(
    parts: AppParts,
    tls: Arc<tokio_rustls::rustls::ServerConfig>,
    io: DuplexStream,
    conn: Intercepted,
    peer: Option<SocketAddr>,
) {
    let Intercepted(authority) = &conn;
    let service = match worker_service(&parts).await {
        Ok(s) => s,
        Err(()) => return,
    };
    let accepted = tokio::time::timeout(HANDSHAKE_TIMEOUT, TlsAcceptor::from(tls).accept(io));
    let tls = match accepted.await {
        Ok(Ok(tls)) => tls,
        // A client that does not trust the CA aborts here: nothing is served to it.
        Ok(Err(e)) => {
            debug!(%authority, error = %e, "intercepted TLS handshake failed");
            return;
        }
        Err(_) => {
            debug!(%authority, "intercepted TLS handshake timed out");
            return;
        }
    };
    let io = InterceptedIo {
        tls,
        conn: conn.clone(),
    };
    if let Err(e) = service.call((io, peer)).await {
        debug!(%authority, error = ?e, "intercepted connection ended with an error");
    }
}

/// The HTTP/1 service of intercepted connections on this worker thread.
type Handler = BoxService<(InterceptedIo, Option<SocketAddr>), (), DispatchError>;

thread_local! {
    /// Built on a worker's first intercepted connection. Keyed by the server's `Service`
    /// (tests run several servers in one process, each on worker threads of its own).
    static HANDLER: RefCell<Option<(usize, Rc<Handler>)>> = const { RefCell::new(None) };
}

/// This worker's service for intercepted connections: the server's actix `App`, with every
/// request rewritten to the proxy form first.
async fn worker_service(parts: &AppParts) -> Result<Rc<Handler>, ()> {
    let key = Arc::as_ptr(&parts.app.clone().into_inner()) as usize;
    let cached = HANDLER.with(|h| {
        h.borrow()
            .as_ref()
            .filter(|(k, _)| *k == key)
            .map(|(_, s)| s.clone())
    });
    if let Some(service) = cached {
        return Ok(service);
    }
    let app = parts
        .build()
        .into_factory()
        .map(Response::<BoxBody>::from)
        .map_err(Response::<BoxBody>::from);
    // The connection config only feeds URL generation (`url_for`), which we do not use.
    let app = actix_service::map_config(app, |()| AppConfig::default());
    let factory = h1(actix_service::apply_fn_factory(app, to_proxy_form));
    let handler = factory.new_service(()).await?;
    let handler: Rc<Handler> = Rc::new(actix_service::boxed::service(handler));
    HANDLER.with(|h| *h.borrow_mut() = Some((key, handler.clone())));
    Ok(handler)
}

/// The HTTP/1 dispatcher over intercepted connections, each marked with its CONNECT target.
fn h1<S>(service: S) -> actix_http::h1::H1Service<InterceptedIo, S, BoxBody>
where
    S: ServiceFactory<Request, Config = (), Response = Response<BoxBody>, InitError = ()>,
    S::Error: Into<Response<BoxBody>> + 'static,
    S::Future: 'static,
    <S::Service as Service<Request>>::Future: 'static,
{
    HttpServiceBuilder::default()
        .secure()
        .on_connect_ext(|io: &InterceptedIo, ext| {
            ext.insert(io.conn.clone());
        })
        .h1(service)
}

/// A request answered without reaching the app.
type Refused<E> = Ready<Result<Response<BoxBody>, E>>;

/// Turn a request inside an intercepted connection into the proxy form for
/// `https://<CONNECT host:port><path>` (whatever its Host header says: the client's TLS was
/// made for the CONNECT host), then hand it to the app.
fn to_proxy_form<S>(mut req: Request, app: &S) -> Either<S::Future, Refused<S::Error>>
where
    S: Service<Request, Response = Response<BoxBody>>,
{
    let authority = match req.conn_data::<Intercepted>() {
        Some(Intercepted(a)) => a.clone(),
        None => return Either::Right(ready(Ok(refuse("not an intercepted connection")))),
    };
    let mut parts = req.uri().clone().into_parts();
    parts.scheme = Some(Scheme::HTTPS);
    parts.authority = Some(authority);
    match Uri::from_parts(parts) {
        Ok(uri) => {
            req.head_mut().uri = uri;
            Either::Left(app.call(req))
        }
        Err(_) => Either::Right(ready(Ok(refuse(
            "the request target is not a path (origin form) or an absolute URL",
        )))),
    }
}

/// A JSON 400 for a request that cannot be turned into the proxy form.
fn refuse(message: &str) -> Response<BoxBody> {
    Error::BadRequest(message.to_owned())
        .error_response()
        .into()
}

/// An intercepted connection: the decrypted stream, and which CONNECT it belongs to.
struct InterceptedIo {
    tls: TlsStream<DuplexStream>,
    conn: Intercepted,
}

impl AsyncRead for InterceptedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tls).poll_read(cx, buf)
    }
}

impl AsyncWrite for InterceptedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tls).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tls).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tls).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tls).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tls.is_write_vectored()
    }
}
