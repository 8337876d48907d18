//! The HTML status page for people (readiness, disk against the watermarks, downloads in
//! flight, circuit breakers, recent failures, hit ratio, recent events), which refreshes
//! itself; and a search box leading to a page per blob with its provenance.
//!
//! Every link is relative, so that a page reached through a gateway under a prefix
//! (`/instance/<name>/`, deploy/nginx.conf) keeps talking to the instance that served it.

use std::fmt::Write as _;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};

use crate::error::Error;
use crate::index::BlobMeta;
use crate::service::{Service, rfc3339};
use crate::status::Snapshot;
use crate::store::Algo;
use crate::url::UpstreamUrl;

pub fn routes(cfg: &mut web::ServiceConfig) {
    use super::{get_or_head, resource};
    cfg.service(resource("/").route(get_or_head().to(status)))
        .service(resource("/ui/search").route(get_or_head().to(search)))
        .service(resource("/ui/blob/{blake3}").route(get_or_head().to(blob)))
        .service(resource("/ui/style.css").route(get_or_head().to(style)))
        .service(resource("/ui/status.js").route(get_or_head().to(script)));
}

/// The pages' only style sheet, served from here so that the policy below needs no inline
/// style.
const STYLE: &str = "body{font:15px/1.45 system-ui,sans-serif;margin:2em auto;max-width:70em;\
    padding:0 1em;color:#222}table{border-collapse:collapse}td,th{padding:.2em .8em .2em 0;\
    text-align:left;vertical-align:top}code{font-size:90%;word-break:break-all}\
    input[type=text]{width:40em;max-width:90%}.muted{color:#777}.bad{color:#b00;font-weight:600}\
    .good{color:#070;font-weight:600}meter{width:20em}td.num{text-align:right}td.time{white-space:nowrap}";

/// The status page's refresh: fetches the page again and swaps in its `#live` part, so all
/// markup (and its escaping) stays on the server.
const SCRIPT: &str = include_str!("status.js");

/// Seconds between refreshes, as the page states it (status.js has its own constant).
const REFRESH_SECONDS: u64 = 2;

/// What a page may load: its style sheet and script from us (no inline script or style, so
/// markup smuggled in by an upstream URL or file name could not run even if it escaped
/// escaping), may fetch only from us, may submit forms only to us, and may not be framed.
const CSP: &str = "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; \
    img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// Headers every page and its style sheet carry: the CSP above, no MIME sniffing, no framing.
fn hardened(res: &mut actix_web::HttpResponseBuilder) -> &mut actix_web::HttpResponseBuilder {
    res.insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
}

async fn style() -> HttpResponse {
    hardened(&mut HttpResponse::Ok())
        .insert_header((header::CONTENT_TYPE, "text/css; charset=utf-8"))
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .body(STYLE)
}

async fn script() -> HttpResponse {
    hardened(&mut HttpResponse::Ok())
        .insert_header((header::CONTENT_TYPE, "text/javascript; charset=utf-8"))
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .body(SCRIPT)
}

/// Escape text for HTML element content and quoted attributes.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A page at `root` (the relative path from it to `/`: `""`, `"../"`, `"../../"`), with the
/// refresh script if `live`.
fn page(title: &str, root: &str, body: &str, live: bool) -> HttpResponse {
    let script = if live {
        format!("<script src=\"{root}ui/status.js\" defer></script>")
    } else {
        String::new()
    };
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>{t}</title>\
         <link rel=\"stylesheet\" href=\"{root}ui/style.css\">{script}</head><body>\
         <h1>{t}</h1>{body}<p class=\"muted\">upcache {v}</p></body></html>",
        t = esc(title),
        v = env!("CARGO_PKG_VERSION"),
    );
    hardened(&mut HttpResponse::Ok())
        .insert_header((header::CONTENT_TYPE, "text/html; charset=utf-8"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(html)
}

fn human(bytes: u64) -> String {
    bytesize::ByteSize(bytes).display().iec().to_string()
}

fn search_form(root: &str) -> String {
    format!(
        "<form action=\"{root}ui/search\"><input type=\"text\" name=\"q\" \
         placeholder=\"upstream URL, md5, sha256, sha512 or blake3\"> \
         <button>Find</button></form>"
    )
}

async fn status(app: web::Data<Service>) -> Result<HttpResponse, Error> {
    let s = app.snapshot()?;
    let mut b = search_form("");
    // The part status.js replaces with the same part of a fresh copy of this page.
    b.push_str("<div id=\"live\">");
    overview(&mut b, &s);
    downloads(&mut b, &s.downloads);
    breakers(&mut b, &s.breakers);
    failures(&mut b, &s.failures);
    events(&mut b, &app);
    b.push_str("</div>");
    let _ = write!(
        b,
        "<p id=\"refreshed\" class=\"muted\">The page refreshes itself every {REFRESH_SECONDS} s \
         (with JavaScript). The same data as JSON: <a href=\"api/v1/status\">api/v1/status</a>.</p>"
    );
    Ok(page(&format!("upcache {}", s.instance), "", &b, true))
}

fn percent(ratio: f64) -> String {
    format!("{:.1} %", 100.0 * ratio)
}

fn overview(b: &mut String, s: &Snapshot) {
    let ready = match &s.reason {
        None => "<span class=\"good\">ready</span>".to_owned(),
        Some(r) => format!(
            "<span class=\"bad\">not ready</span>: {} (new downloads are refused)",
            esc(r)
        ),
    };
    let d = &s.disk;
    let limit = if d.max_size > 0 {
        format!("<code>max_size</code> {}", human(d.max_size))
    } else {
        "no <code>max_size</code>: the volume".to_owned()
    };
    let h = &s.hit_ratio;
    let ratio = h.ratio.map_or_else(|| "–".to_owned(), percent);
    let t = &s.totals;
    let total_ratio = if t.hits + t.misses == 0 {
        "–".to_owned()
    } else {
        percent(t.hits as f64 / (t.hits + t.misses) as f64)
    };
    let _ = write!(
        b,
        "<table id=\"overview\">\
         <tr><th>Instance</th><td id=\"instance\">{}</td></tr>\
         <tr><th>Readiness</th><td id=\"ready\">{ready}</td></tr>\
         <tr><th>Version</th><td>{} (up {}, since {})</td></tr>\
         <tr><th>Disk</th><td><meter min=\"0\" max=\"1\" low=\"{low}\" high=\"{high}\" \
         optimum=\"0\" value=\"{used:.4}\"></meter> {} of {} used ({}; {limit})<br>\
         <span class=\"muted\">The sweeper starts above the high watermark ({}) and evicts \
         down to the low one ({}).</span></td></tr>\
         <tr><th>Blobs</th><td>{} ({}) for {} URLs</td></tr>\
         <tr><th>Hit ratio, last hour</th><td id=\"hit-ratio\">{ratio} ({} hits, {} misses)</td></tr>\
         <tr><th>Since start-up</th><td>{} hits, {} misses (hit ratio {}); {} upstream fetches, \
         {} failed downloads</td></tr></table>",
        esc(&s.instance),
        esc(s.version),
        humantime::format_duration(std::time::Duration::from_secs(s.uptime_seconds)),
        esc(&s.started_at),
        human(d.used_bytes),
        human(d.total_bytes),
        percent(d.used_ratio),
        percent(d.high_watermark),
        percent(d.low_watermark),
        s.store.blobs,
        human(s.store.bytes),
        s.store.urls,
        h.hits,
        h.misses,
        t.hits,
        t.misses,
        total_ratio,
        t.upstream_fetches,
        t.upstream_failures,
        low = d.low_watermark,
        high = d.high_watermark,
        used = d.used_ratio,
    );
}

fn downloads(b: &mut String, list: &[crate::fill::InFlight]) {
    b.push_str(
        "<h2>Downloads in flight</h2><table id=\"downloads\"><tr><th>URL</th><th>Phase</th>\
         <th>Received</th><th>Clients</th><th>Running</th></tr>",
    );
    for f in list {
        let received = match f.total {
            Some(t) if t > 0 => format!(
                "{} of {} ({})",
                human(f.bytes),
                human(t),
                percent(f.bytes as f64 / t as f64)
            ),
            Some(t) => format!("{} of {}", human(f.bytes), human(t)),
            None => format!("{} of unknown size", human(f.bytes)),
        };
        let _ = write!(
            b,
            "<tr class=\"download\"><td><code>{}</code></td><td>{}</td><td>{received}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{} s</td></tr>",
            esc(&f.url),
            f.phase,
            f.clients,
            f.seconds,
        );
    }
    if list.is_empty() {
        b.push_str("<tr><td colspan=\"5\" class=\"muted\">None.</td></tr>");
    }
    b.push_str("</table>");
}

fn breakers(b: &mut String, list: &[crate::upstream::breaker::HostState]) {
    b.push_str(
        "<h2>Circuit breakers</h2><table id=\"breakers\"><tr><th>Host</th><th>State</th>\
         <th>Connect failures in a row</th><th>Next probe</th></tr>",
    );
    for h in list {
        let class = if h.state == "closed" {
            ""
        } else {
            " class=\"bad\""
        };
        let _ = write!(
            b,
            "<tr class=\"breaker\"><td><code>{}</code></td><td{class}>{}</td>\
             <td class=\"num\">{}</td><td>{}</td></tr>",
            esc(&h.host),
            h.state.replace('_', "-"),
            h.failures,
            h.retry_in_seconds
                .map(|s| format!("in {s} s"))
                .unwrap_or_default(),
        );
    }
    if list.is_empty() {
        b.push_str(
            "<tr><td colspan=\"4\" class=\"muted\">No recent connect failures: every \
             breaker is closed.</td></tr>",
        );
    }
    b.push_str("</table>");
}

fn failures(b: &mut String, list: &[crate::status::Failure]) {
    b.push_str(
        "<h2>Recent failures</h2><table id=\"failures\"><tr><th>Time</th><th>URL</th>\
         <th>Error</th><th>Reason</th></tr>",
    );
    for f in list {
        let _ = write!(
            b,
            "<tr class=\"failure\"><td class=\"time\">{}</td><td><code>{}</code></td><td>{}</td>\
             <td>{}</td></tr>",
            esc(&f.time),
            esc(&f.url),
            f.error,
            esc(&f.reason),
        );
    }
    if list.is_empty() {
        b.push_str("<tr><td colspan=\"4\" class=\"muted\">None since start-up.</td></tr>");
    }
    b.push_str("</table>");
}

fn events(b: &mut String, app: &Service) {
    b.push_str(
        "<h2>Recent events</h2><table id=\"events\"><tr><th>Time</th><th>Event</th>\
         <th>URL / blob</th><th>Size</th><th>Client</th></tr>",
    );
    for e in app.cache.journal.recent() {
        let b3 = e.blake3.as_deref().map(esc);
        let what = match (&e.url, &b3) {
            (Some(u), Some(b3)) => format!("<a href=\"ui/blob/{b3}\">{}</a>", esc(u)),
            (Some(u), None) => esc(u),
            (None, Some(b3)) => format!("<a href=\"ui/blob/{b3}\"><code>{b3}</code></a>"),
            (None, None) => String::new(),
        };
        let _ = write!(
            b,
            "<tr><td class=\"time\">{}</td><td>{}</td><td>{what}</td><td>{}</td><td>{}</td></tr>",
            esc(&e.time),
            esc(&e.event),
            e.size.map(human).unwrap_or_default(),
            esc(e.client.as_deref().unwrap_or("")),
        );
    }
    b.push_str("</table>");
}

/// `/ui/search?q=`: a checksum of any supported kind, or an upstream URL.
async fn search(req: HttpRequest, app: web::Data<Service>) -> Result<HttpResponse, Error> {
    let q = super::query_pairs(&req)
        .into_iter()
        .find(|(k, _)| k == "q")
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default();
    let found = find(&app, &q)?;
    Ok(match found {
        Some(meta) => HttpResponse::SeeOther()
            // Relative to /ui/search: right under a gateway's prefix too.
            .insert_header((header::LOCATION, format!("blob/{}", meta.blake3())))
            .finish(),
        None => {
            let body = format!(
                "{}<p>Nothing stored matches <code>{}</code>.</p>",
                search_form("../"),
                esc(&q)
            );
            let mut res = page("Not found", "../", &body, false);
            *res.status_mut() = actix_web::http::StatusCode::NOT_FOUND;
            res
        }
    })
}

fn find(app: &Service, q: &str) -> Result<Option<BlobMeta>, Error> {
    if q.contains("://") {
        let Ok(url) = UpstreamUrl::parse(q) else {
            return Ok(None);
        };
        return Ok(app.cache.index.url(url.as_str())?.map(|e| e.blob.clone()));
    }
    for algo in [Algo::Md5, Algo::Sha256, Algo::Sha512] {
        if let Some(hex) = algo.normalize_hex(q) {
            if let Some(meta) = app.cache.index.by_checksum(algo, &hex)? {
                return Ok(Some(meta));
            }
        }
    }
    // 64 hex digits may be a sha256 (tried above) or a blake3.
    match Algo::Blake3.normalize_hex(q) {
        Some(hex) => Ok(app.cache.index.blob(&hex)?),
        None => Ok(None),
    }
}

async fn blob(path: web::Path<String>, app: web::Data<Service>) -> Result<HttpResponse, Error> {
    let b3 = Algo::Blake3
        .normalize_hex(&path)
        .ok_or_else(|| Error::BadRequest(format!("{:?} is not a blake3 digest", &*path)))?;
    let meta = app
        .cache
        .index
        .blob(&b3)?
        .ok_or_else(|| Error::NotFound(format!("no stored blob has blake3 {b3}")))?;
    let d = &meta.digests;
    let mut b = String::new();
    let _ = write!(
        b,
        "{}<table>\
         <tr><th>Size</th><td>{} ({} bytes)</td></tr>\
         <tr><th>BLAKE3</th><td><code>{}</code></td></tr>\
         <tr><th>SHA-256</th><td><code>{}</code></td></tr>\
         <tr><th>SHA-512</th><td><code>{}</code></td></tr>\
         <tr><th>MD5</th><td><code>{}</code></td></tr>\
         <tr><th>Content type</th><td>{}</td></tr>\
         <tr><th>Origin</th><td>{:?}</td></tr><tr><th>Pinned</th><td>{}</td></tr>\
         <tr><th>First seen</th><td>{}</td></tr><tr><th>Last access</th><td>{}</td></tr>\
         <tr><th>Accesses</th><td>{}</td></tr><tr><th>Stored here</th><td>{}</td></tr>\
         <tr><th>Download</th><td><a href=\"../../by-blake3/{b3}\">/by-blake3/{b3}</a></td></tr></table>",
        search_form("../../"),
        human(meta.size),
        meta.size,
        d.blake3,
        d.sha256,
        d.sha512,
        d.md5,
        esc(meta.content_type.as_deref().unwrap_or("")),
        meta.origin,
        meta.pinned,
        rfc3339(meta.first_seen),
        rfc3339(meta.last_access),
        meta.access_count,
        if app.cache.store.exists(&b3) {
            "yes"
        } else {
            "no"
        },
    );
    b.push_str("<h2>Provenance</h2><table><tr><th>URL</th><th>Fetched</th><th>Final URL</th><th>Upstream ETag / Last-Modified</th><th>Instance</th></tr>");
    for url in app.cache.index.urls_of(&b3)? {
        let rec = app.cache.index.url(&url)?.map(|e| e.record.clone());
        match rec {
            Some(r) => {
                let _ = write!(
                    b,
                    "<tr><td><code>{}</code></td><td>{}</td><td><code>{}</code></td><td>{} {}</td><td>{}</td></tr>",
                    esc(&crate::url::redact_str(&r.url)),
                    rfc3339(r.fetched_at),
                    esc(&r.final_url),
                    esc(r.etag.as_deref().unwrap_or("")),
                    esc(r.last_modified.as_deref().unwrap_or("")),
                    esc(&r.instance),
                );
            }
            None => {
                let _ = write!(
                    b,
                    "<tr><td><code>{}</code></td></tr>",
                    esc(&crate::url::redact_str(&url))
                );
            }
        }
    }
    b.push_str("</table>");
    let title = format!("Blob {}", b3.get(..16).unwrap_or(&b3));
    Ok(page(&title, "../../", &b, false))
}

#[cfg(test)]
mod tests {
    /// Every text of the status page that comes from outside is escaped, whatever the URL
    /// parser would have let through.
    #[test]
    fn status_parts_escape_what_they_show() {
        let evil = "http://h/<script>alert(1)</script>\"'&";
        let mut b = String::new();
        super::downloads(
            &mut b,
            &[crate::fill::InFlight {
                url: evil.into(),
                phase: "streaming",
                bytes: 1,
                total: Some(2),
                clients: 1,
                seconds: 0,
            }],
        );
        super::breakers(
            &mut b,
            &[crate::upstream::breaker::HostState {
                host: evil.into(),
                state: "open",
                failures: 5,
                retry_in_seconds: Some(3),
            }],
        );
        super::failures(
            &mut b,
            &[crate::status::Failure {
                time: "<t>".into(),
                url: evil.into(),
                error: "upstream_failed",
                reason: evil.into(),
            }],
        );
        assert!(!b.contains("<script") && !b.contains("<t>"), "{b}");
        assert_eq!(
            b.matches("http://h/&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;")
                .count(),
            4,
            "{b}"
        );
    }

    #[test]
    fn escaping() {
        assert_eq!(
            super::esc("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
