//! `CONNECT` tunnels (`proxy.connect = "tunnel"`, and hosts that `intercept` leaves alone): a
//! blind relay to a port of `proxy.connect_ports`, through the SSRF guard and the host policy;
//! nothing is cached.
//!
//! actix-web hands a plain handler no raw socket, but it does not need to: actix-http reads
//! everything after a `CONNECT` request head as that request's payload (a stream ending at
//! EOF), and writes the body of a response to it unframed once chunking is turned off. The
//! handler therefore relays the payload to the upstream socket and streams the upstream
//! socket back as the response body. The access log and the per-request middleware (rate
//! limits included) see the tunnel as one request.

use std::net::SocketAddr;

use actix_web::http::StatusCode;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use futures::StreamExt;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::debug;

use super::{ReqInfo, app_of};
use crate::error::Error;
use crate::metrics::Form;
use crate::service::Service;
use crate::upstream::ssrf;

/// Where a CONNECT goes, once its port and host passed the policy.
pub struct Target {
    /// Lowercase; IPv6 without brackets.
    pub host: String,
    pub port: u16,
    /// `host:port` as the client wrote it.
    pub authority: actix_web::http::uri::Authority,
}

/// Answer a `CONNECT host:port` with `200` and relay bytes both ways until either side closes.
pub async fn connect(req: HttpRequest, payload: web::Payload) -> Result<HttpResponse, Error> {
    let app = app_of(&req);
    let target = target(&req, &app)?;
    relay(&app, &target, payload).await
}

/// Check a CONNECT request's target: a port of `proxy.connect_ports` (anything else, SMTP,
/// SSH, internal services, is exactly what an open proxy must not reach) and a host the
/// fetch policy allows (allowed schemes, `allow_hosts`, literal IPs).
pub fn target(req: &HttpRequest, app: &Service) -> Result<Target, Error> {
    let raw = req.uri().to_string();
    req.extensions_mut().insert(ReqInfo {
        form: Form::Proxy,
        url: raw.clone(),
    });
    let authority = req
        .uri()
        .authority()
        .ok_or_else(|| Error::BadRequest(format!("CONNECT needs host:port, not {raw:?}")))?
        .clone();
    let ports = &app.config.proxy.connect_ports;
    let port = authority.port_u16().unwrap_or(443);
    if !ports.contains(&port) {
        let list: Vec<String> = ports.iter().map(u16::to_string).collect();
        let plural = if ports.len() == 1 { "" } else { "s" };
        return Err(Error::ForbiddenDestination(format!(
            "CONNECT tunnels go to port{plural} {} only, not {port} (proxy.connect_ports)",
            list.join(", ")
        )));
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    let as_url = ::url::Url::parse(&format!("https://{authority}/"))
        .map_err(|e| Error::InvalidUrl(format!("CONNECT target {raw:?}: {e}")))?;
    app.upstream.policy().check_destination(&as_url)?;
    Ok(Target {
        host,
        port,
        authority,
    })
}

/// The addresses of `target` that the SSRF guard lets us connect to; 403 when it resolves
/// only to forbidden ones.
pub async fn allowed_addresses(app: &Service, target: &Target) -> Result<Vec<SocketAddr>, Error> {
    let (host, port) = (target.host.as_str(), target.port);
    let cfg = &app.config.upstream;
    let resolved: Vec<SocketAddr> =
        tokio::time::timeout(cfg.connect_timeout, tokio::net::lookup_host((host, port)))
            .await
            .map_err(|_| Error::UpstreamTimeout(format!("{host}: resolving timed out")))?
            .map_err(|e| Error::UpstreamFailed(format!("cannot resolve {host}: {e}")))?
            .collect();
    // The address connected to is the address checked (no DNS-rebinding gap).
    let allowed: Vec<SocketAddr> = resolved
        .iter()
        .copied()
        .filter(|a| cfg.allow_private || !ssrf::is_forbidden(a.ip()))
        .collect();
    if allowed.is_empty() {
        return Err(match resolved.first() {
            Some(a) => Error::ForbiddenDestination(format!(
                "{host} resolves to {}, a private or internal address",
                a.ip()
            )),
            None => Error::UpstreamFailed(format!("{host} has no addresses")),
        });
    }
    Ok(allowed)
}

/// Connect to `target` and relay the CONNECT payload to it and its bytes back.
pub async fn relay(
    app: &Service,
    target: &Target,
    payload: web::Payload,
) -> Result<HttpResponse, Error> {
    let (host, port) = (target.host.as_str(), target.port);
    let cfg = &app.config.upstream;
    let mut upstream = None;
    let mut last = String::new();
    for addr in allowed_addresses(app, target).await? {
        match tokio::time::timeout(cfg.connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                upstream = Some(s);
                break;
            }
            Ok(Err(e)) => last = format!("{addr}: {e}"),
            Err(_) => last = format!("{addr}: connect timed out"),
        }
    }
    let upstream = upstream.ok_or_else(|| {
        Error::UpstreamFailed(format!("CONNECT {host}:{port}: cannot connect: {last}"))
    })?;
    let _ = upstream.set_nodelay(true);
    debug!(%host, port, "tunnel open");
    let (from_upstream, to_upstream) = upstream.into_split();
    forward_payload(payload, to_upstream);
    Ok(established(tokio_util::io::ReaderStream::with_capacity(
        from_upstream,
        64 * 1024,
    )))
}

/// Client -> `to`: the request payload is everything the client sends after the head.
pub fn forward_payload(mut payload: web::Payload, mut to: impl AsyncWrite + Unpin + 'static) {
    actix_web::rt::spawn(async move {
        while let Some(chunk) = payload.next().await {
            let Ok(chunk) = chunk else { break };
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    });
}

/// The `200` answer to a CONNECT, whose body (written unframed) is the tunnel's way back.
pub fn established<S, E>(back: S) -> HttpResponse
where
    S: futures::Stream<Item = Result<bytes::Bytes, E>> + 'static,
    E: Into<Box<dyn std::error::Error>> + 'static,
{
    let mut res = HttpResponse::build(StatusCode::OK).streaming(back);
    res.head_mut().no_chunking(true);
    // The body is the tunnel, not a representation.
    res.headers_mut()
        .remove(actix_web::http::header::CONTENT_TYPE);
    res
}
