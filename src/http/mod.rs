//! HTTP wiring: actix-web routes for the three request forms, checksum lookups, the JSON API
//! and operations endpoints. Business decisions live in `app`; this module only translates.

mod admit;
mod api;
pub mod checksum;
mod error;
mod headcheck;
pub mod intercept;
mod jobs;
mod log;
mod openapi;
mod ops;
mod sendfile;
mod serve;
mod server;
mod targets;
mod tunnel;
mod ui;

/// For the fuzz target `head_check`.
#[doc(hidden)]
pub use headcheck::assert_plain_heads_agree;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use actix_web::http::Method;
use actix_web::http::header::HeaderName;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, guard, web};

use crate::config::MissMode;
use crate::error::Error;
use crate::fill::FillError;
use crate::metrics::Form;
use crate::service::{Resolution, Service};
use crate::store::{Algo, Expected};
use crate::tier::Serving;
use crate::url::{UpstreamUrl, from_mirror_path};

pub use log::ReqInfo;
use serve::{Artifact, HitHead, url_file_name};
pub use serve::{Conditionals, HitOutcome, hit_outcome};
pub use server::Server;
use targets::{Parsed, TargetCache};

/// The address clients reached us on, for links when `server.public_url` is not set.
pub(crate) fn local_base(req: &HttpRequest) -> String {
    match req.app_data::<web::Data<SelfAuthority>>() {
        Some(me) => format!("http://{}", me.addr),
        None => String::new(),
    }
}

/// How this server itself is addressed, so that an absolute-form request naming us (rpm
/// with `_httpproxy` set, fetching a mirror-path URL of ours) is served as a normal request
/// instead of being proxied to ourselves.
struct SelfAuthority {
    addr: SocketAddr,
    public: Option<String>,
}

impl SelfAuthority {
    fn new(addr: SocketAddr, public_url: &str) -> Self {
        let public = ::url::Url::parse(public_url).ok().and_then(|u| {
            let host = u.host_str()?.to_ascii_lowercase();
            Some(format!("{host}:{}", u.port_or_known_default()?))
        });
        SelfAuthority { addr, public }
    }

    fn is_me(&self, uri: &actix_web::http::Uri) -> bool {
        let Some(auth) = uri.authority() else {
            return false;
        };
        let host = auth.host().trim_start_matches('[').trim_end_matches(']');
        let port = auth.port_u16().unwrap_or(match uri.scheme_str() {
            Some("https") => 443,
            Some("ftp") => 21,
            _ => 80,
        });
        let host = host.to_ascii_lowercase();
        if self.public.as_deref() == Some(format!("{host}:{port}").as_str()) {
            return true;
        }
        if port != self.addr.port() {
            return false;
        }
        let mine = self.addr.ip();
        match host.parse::<IpAddr>() {
            Ok(ip) => {
                ip == mine || mine.is_unspecified() || (ip.is_loopback() && mine.is_loopback())
            }
            Err(_) => host == "localhost" && (mine.is_loopback() || mine.is_unspecified()),
        }
    }
}

fn is_absolute_form(ctx: &guard::GuardContext<'_>) -> bool {
    let uri = &ctx.head().uri;
    uri.scheme().is_some()
        && !ctx
            .app_data::<web::Data<SelfAuthority>>()
            .is_some_and(|me| me.is_me(uri))
}

fn routes(cfg: &mut web::ServiceConfig) {
    // Absolute-form targets (`GET http://host/x`, from curl -x, wget, dnf) must be caught
    // before path routing, which would otherwise match their path against our own routes.
    cfg.service(
        resource("/{tail:.*}")
            .guard(guard::fn_guard(is_absolute_form))
            .route(get_or_head().to(proxy_form)),
    )
    .service(resource("/fetch").route(get_or_head().to(fetch_form)));
    for scheme in ["http", "https", "ftp"] {
        cfg.service(
            resource(&format!("/{scheme}/{{tail:.*}}")).route(get_or_head().to(mirror_form)),
        );
    }
    for algo in [Algo::Md5, Algo::Sha256, Algo::Sha512, Algo::Blake3] {
        // The algorithm comes with the route, never from the raw path: the router matches
        // `/by-%6Dd5/...` (an escaped unreserved character) here too.
        let name = algo.name();
        cfg.service(
            web::resource([
                format!("/by-{name}/{{hex}}"),
                format!("/by-{name}/{{hex}}/{{name}}"),
            ])
            .route(get_or_head().to(checksum_route))
            .default_service(web::to(method_not_allowed)),
        );
    }
    cfg.service(resource("/repo/pkgs/{tail:.*}").route(get_or_head().to(checksum_route)));
    ops::routes(cfg);
    openapi::routes(cfg);
    api::routes(cfg);
    jobs::routes(cfg);
    ui::routes(cfg);
    cfg.default_service(web::to(fallback));
}

/// The client's address: the peer, or for trusted proxies the right-most untrusted
/// `X-Forwarded-For` entry (each trusted proxy appends the address it got the request from,
/// so everything left of the first untrusted entry, from the right, is the client's say).
pub fn client_ip(req: &HttpRequest) -> Option<IpAddr> {
    let peer = req.peer_addr()?.ip();
    let app = req.app_data::<web::Data<Service>>()?;
    Some(forwarded_client(
        peer,
        &app.config.server.trusted_proxies,
        req.headers()
            .get_all(&X_FORWARDED_FOR)
            .map(|v| v.to_str().unwrap_or("")),
    ))
}

fn forwarded_client<'a>(
    peer: IpAddr,
    trusted: &[ipnet::IpNet],
    headers: impl DoubleEndedIterator<Item = &'a str>,
) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    let mut client = peer;
    if !is_trusted(&client) {
        return client;
    }
    for entry in headers.rev().flat_map(|v| v.rsplit(',')) {
        let entry = entry.trim();
        if entry.is_empty() {
            continue;
        }
        // Plain addresses, as nginx writes them; tolerate `ip:port` and `[v6]:port`.
        let parsed = entry
            .parse::<IpAddr>()
            .ok()
            .or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()));
        match parsed {
            Some(ip) => {
                client = ip.to_canonical();
                if !is_trusted(&client) {
                    return client;
                }
            }
            // Garbage: the proxy that passed it on is the last address we can vouch for.
            None => return client,
        }
    }
    client
}

/// Validate a checksum given by a client; the error names the value and what was expected.
pub(crate) fn checksum_hex(algo: Algo, hex: &str) -> Result<String, Error> {
    algo.normalize_hex(hex.trim()).ok_or_else(|| {
        Error::BadRequest(format!(
            "{hex:?} is not a valid {} checksum ({} hex digits)",
            algo.name(),
            algo.hex_len()
        ))
    })
}

/// The query parameters `/fetch` takes: any other is refused, so that a typo (`sha1=`,
/// `md5sum=`) never silently turns verification off.
const FETCH_PARAMS: [&str; 5] = ["url", "md5", "sha256", "sha512", "blake3"];

/// The expected-checksum headers, in the order they are looked at. Header names are
/// constants here: a lookup by `&str` parses the name on every request.
static EXPECT_HEADERS: [(HeaderName, Algo); 4] = [
    (HeaderName::from_static("x-upcache-expect-md5"), Algo::Md5),
    (
        HeaderName::from_static("x-upcache-expect-sha256"),
        Algo::Sha256,
    ),
    (
        HeaderName::from_static("x-upcache-expect-sha512"),
        Algo::Sha512,
    ),
    (
        HeaderName::from_static("x-upcache-expect-blake3"),
        Algo::Blake3,
    ),
];
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The expected checksums from `md5=`/`sha256=`/`sha512=`/`blake3=` (fetch form) and the
/// `X-Upcache-Expect-<Algo>` headers (every form): the content must match all of them. A
/// header `X-Upcache-Expect-<other>` is refused like an unknown parameter, and so are two
/// different values for one algorithm.
fn expected_checksum(
    req: &HttpRequest,
    query: &[(String, String)],
) -> Result<Option<Expected>, Error> {
    let mut given = Vec::new();
    for (k, v) in query {
        if let Some(algo) = Algo::from_name(k).filter(|a| a.name() == k) {
            given.push((algo, v.clone()));
        }
    }
    if let Some(name) = req.headers().keys().find(|name| {
        name.as_str()
            .strip_prefix("x-upcache-expect-")
            .is_some_and(|algo| Algo::from_name(algo).is_none())
    }) {
        return Err(Error::BadRequest(format!(
            "unknown header {name}: the expected checksum headers are X-Upcache-Expect-Md5, \
             -Sha256, -Sha512 and -Blake3"
        )));
    }
    for (name, algo) in &EXPECT_HEADERS {
        if let Some(v) = req.headers().get(name) {
            given.push((*algo, v.to_str().unwrap_or("").to_owned()));
        }
    }
    let mut found: Option<Expected> = None;
    for (algo, value) in given {
        let hex = checksum_hex(algo, &value)?;
        let Some(exp) = &mut found else {
            found = Some(Expected::new(algo, hex));
            continue;
        };
        // The first one is looked up by; the content must match every one.
        let earlier = exp
            .all()
            .find(|(a, _)| *a == algo)
            .map(|(_, h)| h.to_owned());
        match earlier {
            Some(same) if same == hex => {}
            Some(other) => {
                return Err(Error::BadRequest(format!(
                    "two different {} checksums are expected: {other} and {hex}",
                    algo.name()
                )));
            }
            None => exp.also.push((algo, hex)),
        }
    }
    Ok(found)
}

pub(crate) fn query_pairs(req: &HttpRequest) -> Vec<(String, String)> {
    crate::url::query_pairs(req.query_string())
}

async fn fetch_form(req: HttpRequest) -> Result<HttpResponse, Error> {
    let query = query_pairs(&req);
    if let Some((unknown, _)) = query
        .iter()
        .find(|(k, _)| !FETCH_PARAMS.contains(&k.as_str()))
    {
        return Err(Error::BadRequest(format!(
            "unknown query parameter {unknown:?} on /fetch: it takes url, md5, sha256, sha512 \
             and blake3 (a URL's own query must be percent-encoded: & as %26)"
        )));
    }
    let raw = query
        .iter()
        .find(|(k, _)| k == "url")
        .map(|(_, v)| v.as_str())
        .ok_or_else(|| Error::BadRequest("missing query parameter url".into()))?;
    let target = Parsed::uncached(UpstreamUrl::parse(raw)?);
    let expected = expected_checksum(&req, &query)?;
    artifact(&req, Form::Fetch, target, expected).await
}

async fn mirror_form(req: HttpRequest) -> Result<HttpResponse, Error> {
    let raw = req
        .uri()
        .path_and_query()
        .map_or(req.uri().path(), |pq| pq.as_str());
    let target = TargetCache::parse(&req, raw, from_mirror_path)?;
    let expected = expected_checksum(&req, &[])?;
    artifact(&req, Form::Mirror, target, expected).await
}

async fn proxy_form(req: HttpRequest) -> Result<HttpResponse, Error> {
    let target = TargetCache::parse(&req, &req.uri().to_string(), UpstreamUrl::parse)?;
    let expected = expected_checksum(&req, &[])?;
    artifact(&req, Form::Proxy, target, expected).await
}

/// The mirror form in origin form (`GET`/`HEAD /http/...`, `/https/...`, `/ftp/...`), the
/// bulk of the traffic, which [`mirror_direct`] serves without asking actix's router: the
/// router tries regular expressions with captures for `/{tail:.*}` (absolute form) and the
/// mirror resources on every request. It would pick `mirror_form` for these anyway: the
/// absolute-form resource needs a scheme, `/fetch` is matched exactly, and the mirror
/// resources come next. Other methods and escaped spellings (`/%68ttp/...`) still go through
/// the router, which answers them as before.
pub(crate) fn mirror_fast_path(req: &actix_web::dev::ServiceRequest) -> bool {
    let method = req.method();
    (method == Method::GET || method == Method::HEAD)
        && req.uri().scheme().is_none()
        && ["/http/", "/https/", "/ftp/"]
            .iter()
            .any(|prefix| req.path().starts_with(prefix))
}

/// Serve a request [`mirror_fast_path`] accepted, as the router's handler would (errors
/// rendered the same way).
pub(crate) async fn mirror_direct(
    req: actix_web::dev::ServiceRequest,
) -> actix_web::dev::ServiceResponse {
    let (req, _payload) = req.into_parts();
    let res = match mirror_form(req.clone()).await {
        Ok(res) => res,
        Err(e) => HttpResponse::from_error(e),
    };
    actix_web::dev::ServiceResponse::new(req, res)
}

/// Any of the three forms, once the upstream URL is known.
async fn artifact(
    req: &HttpRequest,
    form: Form,
    parsed: Parsed,
    expected: Option<Expected>,
) -> Result<HttpResponse, Error> {
    let target = &parsed.target;
    let url = &target.url;
    req.extensions_mut().insert(ReqInfo {
        form,
        url: url.to_string(),
    });
    let app = app_of(req);
    let client = client_ip(req).map(crate::accesslog::ip_text);
    let start_fill = req.method() != Method::HEAD;
    let stored = |meta: &crate::index::BlobMeta, record: Option<&crate::index::UrlRecord>| {
        // Repository metadata changes upstream: never `immutable` (SPEC 9).
        let cache_control = match app.volatile.matches(url) {
            true => crate::volatile::CACHE_CONTROL,
            false => app.config.server.cache_control.as_str(),
        };
        let art = Artifact {
            meta,
            file_name: url_file_name(url),
            content_type: record.and_then(|r| r.content_type.clone()),
            last_modified: record.and_then(|r| r.last_modified.clone()),
        };
        HitHead::new(art, cache_control)
    };
    // One entry point with prefetch ([`Service::fetch`]): a blob whose bytes vanished
    // (`serve_blob` answers `None`) is resolved again.
    let (app, stored, expected, client, parsed) = (&app, &stored, &expected, &client, &parsed);
    let serve = |resolution| async move {
        Ok(match resolution {
            Resolution::Hit(entry) => {
                let head = target.hit_head(&entry, || stored(&entry.blob, Some(&entry.record)));
                let res = serve_blob(req, app, &head, &entry.blob).await?;
                if res.is_some() {
                    parsed.hit(req);
                }
                res
            }
            Resolution::Checksum(meta) => serve_blob(req, app, &stored(&meta, None), &meta).await?,
            Resolution::NotStored => Some(head_miss(app, url).await?),
            Resolution::Revalidate {
                fill,
                stored: entry,
            } => {
                let x_cache = match fill.head().await {
                    // New content (or upstream ignored the conditional): follow it.
                    Ok(_) => {
                        let (exp, who) = (expected.clone(), client.clone());
                        return serve::miss(req, app, fill, exp, who).await.map(Some);
                    }
                    Err(e) if matches!(*e, FillError::NotModified { .. }) => "REVALIDATED",
                    Err(_) => "STALE",
                };
                let head = target.hit_head(&entry, || stored(&entry.blob, Some(&entry.record)));
                let mut res = serve_blob(req, app, &head, &entry.blob).await?;
                if let Some(res) = &mut res {
                    serve::relabel(res, x_cache);
                }
                res
            }
            Resolution::Stale(entry) => {
                let head = target.hit_head(&entry, || stored(&entry.blob, Some(&entry.record)));
                let mut res = serve_blob(req, app, &head, &entry.blob).await?;
                if let Some(res) = &mut res {
                    serve::relabel(res, "STALE");
                }
                res
            }
            Resolution::Miss { fill, joined } if app.config.upstream.miss == MissMode::Redirect => {
                if !joined {
                    admit::hold_for_fill(req, app, fill);
                }
                // The fill runs in the background; the client gets the bytes from upstream.
                Some(
                    HttpResponse::Found()
                        .insert_header(("Location", url.as_str()))
                        .insert_header(("X-Cache", "MISS"))
                        .finish(),
                )
            }
            Resolution::Miss { fill, joined } => {
                if !joined {
                    admit::hold_for_fill(req, app, fill.clone());
                }
                let (exp, who) = (expected.clone(), client.clone());
                Some(serve::miss(req, app, fill, exp, who).await?)
            }
        })
    };
    app.fetch(url, expected.as_ref(), client.clone(), start_fill, serve)
        .await
}

/// Serve a stored blob as its tier opens it ([`crate::tier::Serving`]): a redirect, the
/// local copy, or a stream. `None`: the bytes are gone
/// (its index entry was dropped; resolving again finds what is left).
async fn serve_blob(
    req: &HttpRequest,
    app: &Arc<Service>,
    head: &HitHead,
    meta: &crate::index::BlobMeta,
) -> Result<Option<HttpResponse>, Error> {
    let streamer = match app.open_for_serving(meta).await? {
        None => return Ok(None),
        Some(Serving::Redirect(location)) => {
            return Ok(Some(serve::redirect_hit(req, app, head, &location)));
        }
        Some(Serving::File(file)) => return serve::hit(req, app, head, file).map(Some),
        Some(Serving::Stream(streamer)) => streamer,
    };
    let (res, start, end) = match serve::prepare(req, app, head, false)? {
        serve::Prepared::Done(done) => return Ok(Some(done)),
        serve::Prepared::Body { res, start, end } => (res, start, end),
    };
    if req.method() == Method::HEAD {
        let empty = futures::stream::empty::<Result<bytes::Bytes, std::io::Error>>();
        return Ok(Some(serve::stream_hit(req, res, start, end, empty)));
    }
    Ok(streamer
        .body(start, end)
        .await?
        .map(|body| serve::stream_hit(req, res, start, end, body)))
}

/// HEAD on a miss: upstream's status and headers, nothing stored.
async fn head_miss(app: &Arc<Service>, url: &UpstreamUrl) -> Result<HttpResponse, Error> {
    let head = app.head_upstream(url).await?;
    let file_name = url_file_name(url);
    let mut res = HttpResponse::Ok();
    res.insert_header((
        "Content-Type",
        head.content_type
            .clone()
            .unwrap_or_else(|| serve::guess_type(&file_name)),
    ))
    .insert_header(("X-Cache", "MISS"))
    .insert_header(("Content-Disposition", serve::disposition(&file_name)));
    if let Some(lm) = &head.last_modified {
        res.insert_header(("Last-Modified", lm.as_str()));
    }
    Ok(match head.content_length {
        Some(len) => res.body(actix_web::body::SizedStream::new(
            len,
            futures::stream::empty::<Result<bytes::Bytes, std::io::Error>>(),
        )),
        None => res.finish(),
    })
}

/// `/by-<algo>/...` and `/repo/pkgs/...`, parsed by [`checksum::parse`] from the path the
/// router matched.
async fn checksum_route(req: HttpRequest) -> Result<HttpResponse, Error> {
    let path = req.match_info().as_str().to_owned();
    let asked = checksum::parse(&path)
        .ok_or_else(|| Error::NotFound(format!("no checksum route for {path}")))??;
    serve_checksum(&req, asked.algo, &asked.hex, asked.name).await
}

async fn serve_checksum(
    req: &HttpRequest,
    algo: Algo,
    hex: &str,
    name: Option<String>,
) -> Result<HttpResponse, Error> {
    let hex = checksum_hex(algo, hex)?;
    req.extensions_mut().insert(ReqInfo {
        form: Form::Checksum,
        url: format!("{}:{hex}", algo.name()),
    });
    let app = app_of(req);
    let not_found = || Error::NotFound(format!("no stored blob has {} {hex}", algo.name()));
    app.learn_checksum(algo, &hex).await?;
    let meta = app
        .cache
        .index
        .by_checksum(algo, &hex)?
        .filter(|m| m.is_stored())
        .ok_or_else(not_found)?;
    let file_name = match name {
        Some(n) => n,
        None => app
            .cache
            .index
            .urls_of(meta.blake3())?
            .first()
            .and_then(|u| UpstreamUrl::parse(u).ok())
            .map(|u| url_file_name(&u))
            .unwrap_or_else(|| hex.clone()),
    };
    let art = Artifact {
        meta: &meta,
        file_name,
        content_type: None,
        last_modified: None,
    };
    let head = HitHead::new(art, &app.config.server.cache_control);
    serve_blob(req, &app, &head, &meta)
        .await?
        .ok_or_else(not_found)
}

/// A resource whose unsupported methods get our JSON 405, not actix's empty one.
pub(crate) fn resource(path: &str) -> actix_web::Resource {
    web::resource(path.to_owned()).default_service(web::to(method_not_allowed))
}

/// GET and HEAD.
pub(crate) fn get_or_head() -> actix_web::Route {
    web::route().guard(guard::Any(guard::Get()).or(guard::Head()))
}

pub(crate) async fn method_not_allowed(req: HttpRequest) -> Result<HttpResponse, Error> {
    Err(Error::MethodNotAllowed(format!(
        "{} is not allowed on {}",
        req.method(),
        req.path()
    )))
}

async fn fallback(req: HttpRequest, payload: web::Payload) -> Result<HttpResponse, Error> {
    if req.method() == Method::CONNECT {
        match app_of(&req).config.proxy.connect {
            crate::config::ConnectMode::Tunnel => return tunnel::connect(req, payload).await,
            crate::config::ConnectMode::Intercept => {
                return intercept::connect(req, payload).await;
            }
            crate::config::ConnectMode::Deny => {}
        }
        return Err(Error::MethodNotAllowed(
            "CONNECT tunnels are disabled (proxy.connect = \"deny\"); request the mirror path \
             form instead, e.g. http://<this server>/https/<host>/<path>"
                .into(),
        ));
    }
    Err(Error::NotFound(format!("no such endpoint: {}", req.path())))
}

fn app_of(req: &HttpRequest) -> Arc<Service> {
    req.app_data::<web::Data<Service>>()
        .expect("app data is registered")
        .clone()
        .into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_behind_trusted_proxies() {
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let f = |peer: &str, xff: &[&str]| {
            forwarded_client(ip(peer), &trusted, xff.iter().copied()).to_string()
        };
        // An untrusted peer's header is ignored.
        assert_eq!(f("192.0.2.1", &["198.51.100.9"]), "192.0.2.1");
        // The right-most untrusted entry; what the client wrote left of it is ignored.
        assert_eq!(f("10.0.0.2", &["1.1.1.1, 198.51.100.9"]), "198.51.100.9");
        assert_eq!(
            f("10.0.0.2", &["1.1.1.1, 198.51.100.9, 10.0.0.5"]),
            "198.51.100.9"
        );
        assert_eq!(f("10.0.0.2", &["1.1.1.1", "198.51.100.9"]), "198.51.100.9");
        assert_eq!(f("10.0.0.2", &["198.51.100.9:4711"]), "198.51.100.9");
        assert_eq!(f("10.0.0.2", &["[2001:db8::1]:80"]), "2001:db8::1");
        // No header, or nothing but trusted hops: the left-most address known.
        assert_eq!(f("10.0.0.2", &[]), "10.0.0.2");
        assert_eq!(f("10.0.0.2", &["10.0.0.7, 10.0.0.8"]), "10.0.0.7");
        // Garbage stops the walk at the proxy that passed it on.
        assert_eq!(f("10.0.0.2", &["1.1.1.1, unknown"]), "10.0.0.2");
        assert_eq!(f("10.0.0.2", &["1.1.1.1, bogus, 10.0.0.9"]), "10.0.0.9");
    }
}
