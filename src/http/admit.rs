//! Admission of every request before routing: the HTTP hygiene limits that actix-http does
//! not enforce itself (SPEC 5: a target over 8 KiB gets 414, headers over 16 KiB in total
//! 431), then the per-client rate and concurrency limits (429 `rate_limited`, its body's
//! `limit` naming the key). A request that starts a download lends its concurrency slot to
//! that download until it ends. Clients in `limits.exempt` and requests carrying a valid
//! admin token are not limited (SPEC 9).
//!
//! What actix-http already does, and tests check: a request with both `Content-Length` and
//! `Transfer-Encoding`, or more than one `Content-Length`, gets 400 and the connection is
//! closed; a request body left unread when the response is sent closes the connection (a
//! chunked one is drained), so nothing in it is taken for a next request; a request head
//! that has not arrived whole within 5 s (`client_request_timeout`) gets 408 and the
//! connection is closed; heads over 128 KiB or with more than 96 headers get 431.

use std::net::IpAddr;
use std::sync::Arc;

use actix_web::dev::ServiceRequest;
use actix_web::{HttpMessage, HttpRequest};

use crate::error::Error;
use crate::fill::Fill;
use crate::limits::{ClientPermit, Rejection};
use crate::service::Service;

/// Longest request target accepted.
pub const MAX_TARGET: usize = 8 * 1024;
/// Most bytes of request header fields accepted (names, values, `": "` and CRLF).
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Never rate-limited (SPEC 8): health checks and scrapes must get through a flood.
const UNLIMITED_PATHS: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// Check `req`; the permit, if any, must be kept until the response body is finished.
pub fn admit(
    req: &ServiceRequest,
    app: &Service,
    client: Option<IpAddr>,
) -> Result<Option<ClientPermit>, Error> {
    let uri = req.uri();
    let target = uri.path_and_query().map_or(0, |pq| pq.as_str().len())
        + uri.scheme_str().map_or(0, |s| s.len() + 3)
        + uri.authority().map_or(0, |a| a.as_str().len());
    if target > MAX_TARGET {
        return Err(Error::UriTooLong(format!(
            "the request target is {target} bytes, more than the {MAX_TARGET} accepted"
        )));
    }
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if header_bytes > MAX_HEADER_BYTES {
        return Err(Error::HeadersTooLarge(format!(
            "the request headers are {header_bytes} bytes, more than the {MAX_HEADER_BYTES} accepted"
        )));
    }
    // An absolute-form target naming /healthz is a proxied download, not our health check.
    if uri.scheme().is_none() && UNLIMITED_PATHS.contains(&uri.path()) {
        return Ok(None);
    }
    let Some(ip) = client else {
        return Ok(None);
    };
    if is_admin(req, app) {
        return Ok(None);
    }
    app.limits.admit(ip).map_err(|rejection| {
        app.cache.metrics.rate_limited.inc();
        let ip = crate::limits::describe_client(ip);
        let limits = &app.config.limits;
        let message = match rejection {
            Rejection::Rate { .. } => format!(
                "too many requests from {ip}: over limits.per_client_rps = {} with \
                 limits.per_client_burst = {}",
                limits.per_client_rps, limits.per_client_burst
            ),
            Rejection::Concurrency { limit } => format!(
                "too many simultaneous requests and downloads started by {ip}: over \
                 limits.per_client_concurrency = {limit}"
            ),
            Rejection::TooManyClients => format!(
                "too many clients have requests in progress (at most {} are tracked); try \
                 again shortly",
                crate::limits::MAX_CLIENTS
            ),
        };
        Error::RateLimited {
            message,
            retry_after_secs: rejection.retry_after_secs(),
            limit: rejection.limit(),
        }
    })
}

/// Whether `req` carries a valid token with the admin scope: such requests are never
/// limited. An invalid or upload-only token is limited like no token (guessing tokens does
/// not get around the limits).
fn is_admin(req: &ServiceRequest, app: &Service) -> bool {
    req.headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|h| {
            app.tokens
                .authorize(Some(h), crate::auth::Scope::Admin)
                .is_ok()
        })
}

/// An admitted request's concurrency slot, in the request's extensions: shared by its
/// response body and, if the request started a download, by that download.
#[derive(Clone)]
pub struct RequestPermit {
    /// Released when the last holder drops it.
    _slot: Arc<ClientPermit>,
}

impl RequestPermit {
    pub fn new(permit: ClientPermit) -> RequestPermit {
        RequestPermit {
            _slot: Arc::new(permit),
        }
    }
}

/// The request started `fill`: its client's concurrency slot stays taken until the fill
/// ends, also after the response is over (the 302 of `miss = "redirect"`, a client that went
/// away), so that no client keeps more than `per_client_concurrency` downloads (and temp
/// files) going.
pub fn hold_for_fill(req: &HttpRequest, app: &Service, fill: Arc<Fill>) {
    let Some(permit) = req.extensions().get::<RequestPermit>().cloned() else {
        return;
    };
    app.runtime().spawn(async move {
        fill.ended().await;
        drop(permit);
    });
}
