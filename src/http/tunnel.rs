//! `CONNECT` tunnels (`proxy.connect = "tunnel"`): a blind relay to port 443 only, through
//! the SSRF guard and the host policy; nothing is cached.
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
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tracing::debug;

use super::{ReqInfo, app_of};
use crate::error::Error;
use crate::metrics::Form;
use crate::upstream::ssrf;

/// The only port a tunnel may reach: HTTPS. Anything else (SMTP, SSH, internal services) is
/// exactly what an open proxy must not relay to.
pub const TUNNEL_PORT: u16 = 443;

/// Answer a `CONNECT host:443` with `200` and relay bytes both ways until either side closes.
pub async fn connect(req: HttpRequest, mut payload: web::Payload) -> Result<HttpResponse, Error> {
    let app = app_of(&req);
    let target = req.uri().to_string();
    req.extensions_mut().insert(ReqInfo {
        form: Form::Proxy,
        url: target.clone(),
    });
    let authority = req
        .uri()
        .authority()
        .ok_or_else(|| Error::BadRequest(format!("CONNECT needs host:port, not {target:?}")))?;
    let port = authority.port_u16().unwrap_or(TUNNEL_PORT);
    if port != TUNNEL_PORT {
        return Err(Error::ForbiddenDestination(format!(
            "CONNECT tunnels go to port {TUNNEL_PORT} only, not {port}"
        )));
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    // The same host policy as fetches: allowed schemes (https), allow_hosts, literal IPs.
    let as_url = ::url::Url::parse(&format!("https://{authority}/"))
        .map_err(|e| Error::InvalidUrl(format!("CONNECT target {target:?}: {e}")))?;
    app.upstream.policy().check_destination(&as_url)?;
    let cfg = &app.config.upstream;
    let resolved: Vec<SocketAddr> = tokio::time::timeout(
        cfg.connect_timeout,
        tokio::net::lookup_host((host.as_str(), port)),
    )
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
    let mut upstream = None;
    let mut last = String::new();
    for addr in allowed {
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
    let (from_upstream, mut to_upstream) = upstream.into_split();
    // Client -> upstream: the request payload is everything the client sends after the head.
    actix_web::rt::spawn(async move {
        while let Some(chunk) = payload.next().await {
            let Ok(chunk) = chunk else { break };
            if to_upstream.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to_upstream.shutdown().await;
    });
    // Upstream -> client: the response body, written unframed.
    let body = tokio_util::io::ReaderStream::with_capacity(from_upstream, 64 * 1024);
    let mut res = HttpResponse::build(StatusCode::OK).streaming(body);
    res.head_mut().no_chunking(true);
    // The body is the tunnel, not a representation.
    res.headers_mut()
        .remove(actix_web::http::header::CONTENT_TYPE);
    Ok(res)
}
