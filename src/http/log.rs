//! One log line and the metrics of each request, written when its body is finished or dropped.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, web};
use bytes::Bytes;

use crate::app::App;
use crate::metrics::Form;

/// What a handler tells the log about an artifact request.
#[derive(Debug, Clone)]
pub struct ReqInfo {
    pub form: Form,
    pub url: String,
}

/// Middleware: wraps every response body so the request is logged once its last byte is
/// sent (or the transfer is aborted).
pub async fn log_requests(
    req: ServiceRequest,
    next: Next<BoxBody>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let start = Instant::now();
    let method = req.method().to_string();
    let target = req.uri().to_string();
    let client = super::client_ip(req.request());
    let app = req
        .app_data::<web::Data<App>>()
        .map(|d| d.clone().into_inner());
    let res = next.call(req).await?;
    let info = res.request().extensions().get::<ReqInfo>().cloned();
    let status = res.status().as_u16();
    let sent = res
        .response()
        .extensions()
        .get::<super::sendfile::SentBytes>()
        .cloned();
    let x_cache = res
        .headers()
        .get("x-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    Ok(res.map_body(move |_, body| {
        BoxBody::new(LoggedBody {
            inner: body,
            bytes: 0,
            finished: false,
            sent,
            line: Line {
                start,
                method,
                target,
                client,
                status,
                x_cache,
                info,
                app,
            },
        })
    }))
}

struct Line {
    start: Instant,
    method: String,
    target: String,
    client: Option<String>,
    status: u16,
    x_cache: String,
    info: Option<ReqInfo>,
    app: Option<Arc<App>>,
}

struct LoggedBody {
    inner: BoxBody,
    /// Bytes that went through actix as chunks.
    bytes: u64,
    /// Bytes a sendfile body wrote past actix.
    sent: Option<super::sendfile::SentBytes>,
    finished: bool,
    line: Line,
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
        let bytes = self.bytes
            + self
                .sent
                .as_ref()
                .map_or(0, |s| s.0.load(std::sync::atomic::Ordering::Relaxed));
        // A body that never reported its end was cut short (aborted by us or the client);
        // an empty body may be dropped without ever being polled.
        let complete =
            self.finished || matches!(self.inner.size(), BodySize::None | BodySize::Sized(0));
        let form = l.info.as_ref().map_or("-", |i| i.form.as_str());
        let url = l.info.as_ref().map_or("-", |i| i.url.as_str());
        tracing::info!(
            target: "upcache::access",
            method = %l.method,
            target_uri = %l.target,
            form,
            url,
            status = l.status,
            x_cache = %l.x_cache,
            bytes,
            complete,
            ms = elapsed.as_secs_f64() * 1000.0,
            client = l.client.as_deref().unwrap_or("-"),
            "request"
        );
        if let Some(app) = &l.app {
            let m = &app.metrics;
            m.bytes_served.inc_by(bytes);
            m.request_duration.observe(elapsed.as_secs_f64());
            if let Some(info) = &l.info {
                let result = match (l.status, l.x_cache.as_str()) {
                    (s, _) if s >= 400 => "error",
                    (_, "HIT") => "hit",
                    (_, "MISS") => "miss",
                    (_, "BYPASS") => "bypass",
                    _ => "other",
                };
                m.request(info.form, result);
            }
        }
    }
}
