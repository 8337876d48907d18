//! One log line and the metrics of each request, written when its body is finished or dropped;
//! also admits requests (hygiene and per-client limits, see `admit`) and stamps
//! `X-Served-By` on every response.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Instant;

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::{Method, Uri};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, web};
use bytes::Bytes;

use super::sendfile::SentBytes;
use crate::accesslog;
use crate::metrics::{CacheResult, Form};
use crate::service::Service;

/// What a handler tells the log about an artifact request.
#[derive(Debug, Clone)]
pub struct ReqInfo {
    pub form: Form,
    pub url: String,
}

/// The `X-Served-By` value, built once.
#[derive(Clone)]
pub struct ServedBy(pub HeaderValue);

static X_SERVED_BY: HeaderName = HeaderName::from_static("x-served-by");

/// Middleware: wraps every response body so the request is logged once its last byte is
/// sent (or the transfer is aborted).
pub async fn log_requests(
    req: ServiceRequest,
    next: Next<BoxBody>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let start = Instant::now();
    let method = req.method().clone();
    let target = req.uri().clone();
    let client = super::client_ip(req.request());
    let app = req
        .app_data::<web::Data<Service>>()
        .map(|d| d.clone().into_inner());
    let served_by = req.app_data::<web::Data<ServedBy>>().map(|s| s.0.clone());
    let admitted = match &app {
        Some(app) => super::admit::admit(&req, app, client),
        None => Ok(None),
    };
    let (mut res, mut permit) = match admitted {
        Ok(permit) => {
            let permit = permit.map(super::admit::RequestPermit::new);
            if let Some(p) = &permit {
                req.extensions_mut().insert(p.clone());
            }
            let res = if super::mirror_fast_path(&req) {
                super::mirror_direct(req).await
            } else {
                next.call(req).await?
            };
            (res, permit)
        }
        Err(e) => (req.error_response(e), None),
    };
    // An intercepted CONNECT: the requests inside hold slots of their own.
    if res
        .response()
        .extensions()
        .contains::<super::intercept::InnerRequestsCounted>()
    {
        permit = None;
        res.request()
            .extensions_mut()
            .remove::<super::admit::RequestPermit>();
    }
    if let Some(v) = served_by {
        res.headers_mut().insert(X_SERVED_BY.clone(), v);
    }
    let info = res.request().extensions_mut().remove::<ReqInfo>();
    // The body holds the slot from here on (pooled requests must not keep it).
    res.request()
        .extensions_mut()
        .remove::<super::admit::RequestPermit>();
    let sent = res.response().extensions().get::<SentBytes>().cloned();
    let cache = CacheResult::of(
        res.status().as_u16(),
        res.headers()
            .get(&super::serve::X_CACHE)
            .map(|v| v.as_bytes()),
    );
    let line = Line {
        start,
        method,
        target,
        client,
        status: res.status().as_u16(),
        cache,
        info,
        app,
    };
    Ok(res.map_body(move |_, body| {
        BoxBody::new(LoggedBody {
            inner: body,
            bytes: 0,
            finished: false,
            sent,
            line,
            _permit: permit,
        })
    }))
}

struct Line {
    start: Instant,
    method: Method,
    target: Uri,
    client: Option<IpAddr>,
    status: u16,
    cache: CacheResult,
    info: Option<ReqInfo>,
    app: Option<Arc<Service>>,
}

struct LoggedBody {
    inner: BoxBody,
    /// Bytes that went through actix as chunks.
    bytes: u64,
    /// Bytes a sendfile body wrote past actix.
    sent: Option<SentBytes>,
    finished: bool,
    line: Line,
    /// The client's concurrency slot, released when the body is finished or dropped (and
    /// any download the request started has ended, see `admit::hold_for_fill`).
    _permit: Option<super::admit::RequestPermit>,
}

impl MessageBody for LoggedBody {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        self.inner.size()
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_next(cx);
        match &polled {
            Poll::Ready(Some(Ok(b))) => this.bytes += b.len() as u64,
            Poll::Ready(None) => this.finished = true,
            _ => {}
        }
        polled
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        let l = &self.line;
        let elapsed = l.start.elapsed();
        let sent = self.sent.as_ref().map(|s| &s.0);
        let bytes = self.bytes + sent.map_or(0, |s| s.bytes.load(Ordering::Relaxed));
        // A body that never reported its end was cut short (aborted by us or the client);
        // an empty body may be dropped without ever being polled.
        let complete = (self.finished
            || matches!(self.inner.size(), BodySize::None | BodySize::Sized(0)))
            && !sent.is_some_and(|s| s.aborted.load(Ordering::Relaxed));
        let (form, url) = match &l.info {
            Some(i) => (i.form.as_str(), i.url.as_str()),
            None => ("-", l.target.path()),
        };
        if accesslog::enabled() {
            accesslog::write(&accesslog::Record {
                method: l.method.as_str(),
                form,
                url,
                status: l.status,
                x_cache: l.cache.header(),
                bytes,
                complete,
                ms: elapsed.as_secs_f64() * 1000.0,
                client: l.client,
            });
        }
        if let Some(app) = &l.app {
            let m = &app.cache.metrics;
            m.bytes_served.inc_by(bytes);
            m.request_duration.observe(elapsed.as_secs_f64());
            m.http_status(l.status);
            if let Some(info) = &l.info {
                m.request(info.form, l.cache);
            }
        }
    }
}
