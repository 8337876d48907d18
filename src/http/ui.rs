//! The HTML status page for people: totals, hit ratio, disk use, recent events, a search box
//! leading to a page per blob with its provenance.

use std::fmt::Write as _;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};

use crate::app::{App, rfc3339};
use crate::error::Error;
use crate::index::BlobMeta;
use crate::store::Algo;
use crate::url::UpstreamUrl;

pub fn routes(cfg: &mut web::ServiceConfig) {
    use super::{get_or_head, resource};
    cfg.service(resource("/").route(get_or_head().to(status)))
        .service(resource("/ui/search").route(get_or_head().to(search)))
        .service(resource("/ui/blob/{blake3}").route(get_or_head().to(blob)))
        .service(resource("/ui/style.css").route(get_or_head().to(style)));
}

/// The pages' only style sheet, served from here so that the policy below needs no inline
/// style.
const STYLE: &str = "body{font:15px/1.45 system-ui,sans-serif;margin:2em auto;max-width:70em;\
    padding:0 1em;color:#222}table{border-collapse:collapse}td,th{padding:.2em .8em .2em 0;\
    text-align:left;vertical-align:top}code{font-size:90%;word-break:break-all}\
    input[type=text]{width:40em;max-width:90%}.muted{color:#777}";

/// What a page may load: its style sheet and nothing else (no script at all), may submit
/// forms only to us, and may not be framed. Whatever an upstream URL or file name smuggles
/// into a page can then neither run nor exfiltrate anything.
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
    base-uri 'none'; frame-ancestors 'none'";

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

fn page(title: &str, body: &str) -> HttpResponse {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>{t}</title>\
         <link rel=\"stylesheet\" href=\"/ui/style.css\"></head><body><h1>{t}</h1>{body}\
         <p class=\"muted\">upcache {v}</p></body></html>",
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

const SEARCH_FORM: &str = "<form action=\"/ui/search\"><input type=\"text\" name=\"q\" \
    placeholder=\"upstream URL, md5, sha256, sha512 or blake3\" autofocus> \
    <button>Find</button></form>";

async fn status(app: web::Data<App>) -> Result<HttpResponse, Error> {
    let s = app.index.stats();
    let (hits, misses) = (app.metrics.hits.get(), app.metrics.misses.get());
    let ratio = if hits + misses == 0 {
        "–".to_owned()
    } else {
        format!("{:.1} %", 100.0 * hits as f64 / (hits + misses) as f64)
    };
    let du = app.used()?;
    let mut b = String::new();
    b.push_str(SEARCH_FORM);
    let _ = write!(
        b,
        "<h2>Totals</h2><table>\
         <tr><th>Instance</th><td>{}</td></tr>\
         <tr><th>Blobs</th><td>{} ({})</td></tr><tr><th>URLs</th><td>{}</td></tr>\
         <tr><th>Hits / misses</th><td>{hits} / {misses} (hit ratio {ratio})</td></tr>\
         <tr><th>Downloads in progress</th><td>{}</td></tr>\
         <tr><th>Upstream fetches / failures</th><td>{} / {}</td></tr>\
         <tr><th>Disk</th><td>{} of {} used ({:.1} %)</td></tr></table>",
        esc(&app.instance),
        s.blobs,
        human(s.bytes),
        s.urls,
        app.flights.len(),
        app.metrics.upstream_fetches.get(),
        app.metrics.upstream_failures.get(),
        human(du.used_bytes),
        human(du.total_bytes),
        100.0 * du.used_ratio(),
    );
    b.push_str("<h2>Recent events</h2><table><tr><th>Time</th><th>Event</th><th>URL / blob</th><th>Size</th><th>Client</th></tr>");
    for e in app.journal.recent() {
        let what = match (&e.url, &e.blake3) {
            (Some(u), Some(b3)) => format!("<a href=\"/ui/blob/{b3}\">{}</a>", esc(u)),
            (Some(u), None) => esc(u),
            (None, Some(b3)) => format!("<a href=\"/ui/blob/{b3}\"><code>{b3}</code></a>"),
            (None, None) => String::new(),
        };
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{what}</td><td>{}</td><td>{}</td></tr>",
            esc(&e.time),
            esc(&e.event),
            e.size.map(human).unwrap_or_default(),
            esc(e.client.as_deref().unwrap_or("")),
        );
    }
    b.push_str("</table>");
    Ok(page("upcache", &b))
}

/// `/ui/search?q=`: a checksum of any supported kind, or an upstream URL.
async fn search(req: HttpRequest, app: web::Data<App>) -> Result<HttpResponse, Error> {
    let q = super::query_pairs(&req)
        .into_iter()
        .find(|(k, _)| k == "q")
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default();
    let found = find(&app, &q)?;
    Ok(match found {
        Some(meta) => HttpResponse::SeeOther()
            .insert_header((header::LOCATION, format!("/ui/blob/{}", meta.blake3())))
            .finish(),
        None => {
            let body = format!(
                "{SEARCH_FORM}<p>Nothing stored matches <code>{}</code>.</p>",
                esc(&q)
            );
            let mut res = page("Not found", &body);
            *res.status_mut() = actix_web::http::StatusCode::NOT_FOUND;
            res
        }
    })
}

fn find(app: &App, q: &str) -> Result<Option<BlobMeta>, Error> {
    if q.contains("://") {
        let Ok(url) = UpstreamUrl::parse(q) else {
            return Ok(None);
        };
        return Ok(app.index.url(url.as_str())?.map(|e| e.blob.clone()));
    }
    for algo in [Algo::Md5, Algo::Sha256, Algo::Sha512] {
        if let Some(hex) = algo.normalize_hex(q) {
            if let Some(meta) = app.index.by_checksum(algo, &hex)? {
                return Ok(Some(meta));
            }
        }
    }
    // 64 hex digits may be a sha256 (tried above) or a blake3.
    match Algo::Blake3.normalize_hex(q) {
        Some(hex) => Ok(app.index.blob(&hex)?),
        None => Ok(None),
    }
}

async fn blob(path: web::Path<String>, app: web::Data<App>) -> Result<HttpResponse, Error> {
    let b3 = Algo::Blake3
        .normalize_hex(&path)
        .ok_or_else(|| Error::BadRequest(format!("{:?} is not a blake3 digest", &*path)))?;
    let meta = app
        .index
        .blob(&b3)?
        .ok_or_else(|| Error::NotFound(format!("no stored blob has blake3 {b3}")))?;
    let d = &meta.digests;
    let mut b = String::new();
    let _ = write!(
        b,
        "{SEARCH_FORM}<table>\
         <tr><th>Size</th><td>{} ({} bytes)</td></tr>\
         <tr><th>BLAKE3</th><td><code>{}</code></td></tr>\
         <tr><th>SHA-256</th><td><code>{}</code></td></tr>\
         <tr><th>SHA-512</th><td><code>{}</code></td></tr>\
         <tr><th>MD5</th><td><code>{}</code></td></tr>\
         <tr><th>Content type</th><td>{}</td></tr>\
         <tr><th>Origin</th><td>{:?}</td></tr><tr><th>Pinned</th><td>{}</td></tr>\
         <tr><th>First seen</th><td>{}</td></tr><tr><th>Last access</th><td>{}</td></tr>\
         <tr><th>Accesses</th><td>{}</td></tr><tr><th>Stored here</th><td>{}</td></tr>\
         <tr><th>Download</th><td><a href=\"/by-blake3/{b3}\">/by-blake3/{b3}</a></td></tr></table>",
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
        if app.store.exists(&b3) { "yes" } else { "no" },
    );
    b.push_str("<h2>Provenance</h2><table><tr><th>URL</th><th>Fetched</th><th>Final URL</th><th>Upstream ETag / Last-Modified</th><th>Instance</th></tr>");
    for url in app.index.urls_of(&b3)? {
        let rec = app.index.url(&url)?.map(|e| e.record.clone());
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
    Ok(page(&format!("Blob {}", b3.get(..16).unwrap_or(&b3)), &b))
}

#[cfg(test)]
mod tests {
    #[test]
    fn escaping() {
        assert_eq!(
            super::esc("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
