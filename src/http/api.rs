//! The authenticated JSON API: uploads, pins, deletions and the audit export.

use std::time::SystemTime;

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use serde_json::json;

use super::{app_of, checksum_hex, client_ip, query_pairs};
use crate::audit::{CSV_HEADER, Event};
use crate::auth::{Principal, Scope};
use crate::error::Error;
use crate::service::{Actor, Service, UploadRequest};
use crate::store::{Algo, Expected, TempWriter};
use crate::url::UpstreamUrl;

pub fn routes(cfg: &mut web::ServiceConfig) {
    use super::resource;
    cfg.service(resource("/api/v1/upload").route(web::put().to(upload)))
        .service(
            resource("/api/v1/pin/{blake3}")
                .route(web::post().to(pin))
                .route(web::delete().to(unpin)),
        )
        .service(resource("/api/v1/blobs/{blake3}").route(web::delete().to(delete_blob)))
        .service(resource("/api/v1/audit").route(web::get().to(audit)))
        .service(resource("/api/v1/sweep").route(web::post().to(sweep)));
}

/// The caller, if its bearer token has `scope` (401 without a valid token, 403 without the
/// scope). Tokens are read from the `Authorization` header only, never from the query.
pub(super) fn authorize(
    req: &HttpRequest,
    app: &Service,
    scope: Scope,
) -> Result<Principal, Error> {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    Ok(app.tokens.authorize(header, scope)?)
}

fn actor(req: &HttpRequest, who: &Principal) -> Actor {
    Actor {
        name: Some(who.name.clone()),
        client: client_ip(req).map(|ip| ip.to_string()),
    }
}

/// What must be escaped in one path segment of a link (RFC 3986 `pchar` aside from `%`).
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'\\')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// Bytes gathered before handing them to a blocking write (few, large writes).
const UPLOAD_BATCH: usize = 1024 * 1024;

/// `PUT /api/v1/upload?url=&md5=&sha256=&filename=&replace=`: the body streamed to a temp
/// file through the same one-pass hashing writer as fills; never held in memory.
async fn upload(req: HttpRequest, mut body: web::Payload) -> Result<HttpResponse, Error> {
    let app = app_of(&req);
    let who = authorize(&req, &app, Scope::Upload)?;
    let query = query_pairs(&req);
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    };
    let url = param("url").map(UpstreamUrl::parse).transpose()?;
    let mut expected = Vec::new();
    for algo in [Algo::Md5, Algo::Sha256] {
        if let Some(v) = param(algo.name()) {
            expected.push(Expected::new(algo, checksum_hex(algo, v)?));
        }
    }
    let replace = match param("replace") {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") => true,
        Some(v) => {
            return Err(Error::BadRequest(format!(
                "replace={v:?} is not true or false"
            )));
        }
    };
    if replace && !who.may(Scope::Admin) {
        return Err(Error::Forbidden(format!(
            "token {:?} lacks the admin scope needed for replace=true",
            who.name
        )));
    }
    let filename = param("filename").map(str::to_owned).or_else(|| {
        url.as_ref()
            .map(|u| u.file_name())
            .filter(|n| !n.is_empty())
    });
    let max = app.config.limits.max_upload_size;
    let too_large = || {
        Error::TooLarge(format!(
            "the upload is larger than max_upload_size ({max} bytes)"
        ))
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if max > 0 && declared.is_some_and(|n| n > max) {
        return Err(too_large());
    }

    let mut writer = TempWriter::new(app.cache.store.create_temp()?);
    let mut batch = BytesMut::with_capacity(UPLOAD_BATCH);
    let mut received = 0u64;
    loop {
        let chunk = body.next().await;
        let done = chunk.is_none();
        if let Some(chunk) = chunk {
            let chunk = chunk.map_err(|e| Error::BadRequest(format!("reading the upload: {e}")))?;
            received += chunk.len() as u64;
            if max > 0 && received > max {
                return Err(too_large());
            }
            batch.extend_from_slice(&chunk);
        }
        if batch.len() >= UPLOAD_BATCH || (done && !batch.is_empty()) {
            let data = batch.split().freeze();
            writer = match write_batch(writer, data).await {
                Ok(w) => w,
                Err((e, Some(store_error))) => {
                    app.cache.storage_failed(&store_error);
                    return Err(e);
                }
                Err((e, None)) => return Err(e),
            };
        }
        if done {
            break;
        }
    }
    if declared.is_some_and(|n| n != received) {
        return Err(Error::BadRequest(format!(
            "the body has {received} bytes, Content-Length said {}",
            declared.unwrap_or(0)
        )));
    }
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .filter(|ct| !ct.is_empty() && *ct != "application/octet-stream")
        .map(str::to_owned)
        .or_else(|| filename.as_deref().map(super::serve::guess_type));
    let request = UploadRequest {
        url: url.clone(),
        expected,
        filename: filename.clone(),
        replace,
        actor: who.clone(),
        client: client_ip(&req).map(|ip| ip.to_string()),
        content_type,
    };
    let (meta, created) = app.upload(writer, request).await?;
    let mut body = super::ops::blob_json(&app, &meta)?;
    let base = match app.config.server.public_url.as_str() {
        // Not configured: the address this client reached us on.
        "" => super::local_base(&req),
        configured => configured.trim_end_matches('/').to_owned(),
    };
    let name = filename
        .as_deref()
        .map(|n| {
            format!(
                "/{}",
                percent_encoding::utf8_percent_encode(n, PATH_SEGMENT)
            )
        })
        .unwrap_or_default();
    let mut links = vec![format!("{base}/by-md5/{}{name}", meta.digests.md5)];
    if let Some(url) = &url {
        links.push(format!("{base}{}", url.mirror_path()));
    }
    body["links"] = json!(links);
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(HttpResponse::build(status).json(body))
}

/// Append on a blocking thread; a storage failure comes back with its cause for alerting.
async fn write_batch(
    mut writer: TempWriter,
    data: Bytes,
) -> Result<TempWriter, (Error, Option<crate::store::StoreError>)> {
    match tokio::task::spawn_blocking(move || writer.append(&data).map(|()| writer)).await {
        Ok(Ok(w)) => Ok(w),
        Ok(Err(e)) => Err((Error::from(&e), Some(e))),
        Err(e) => Err((Error::failed("the upload write task ended early", e), None)),
    }
}

/// `POST /api/v1/sweep`: one sweeper pass now.
async fn sweep(req: HttpRequest) -> Result<HttpResponse, Error> {
    let app = app_of(&req);
    authorize(&req, &app, Scope::Admin)?;
    let a = app.clone();
    let report = tokio::task::spawn_blocking(move || a.sweep())
        .await
        .map_err(|e| Error::failed("the sweep task ended early", e))??;
    Ok(HttpResponse::Ok().json(report))
}

fn blake3_param(path: &web::Path<String>) -> Result<String, Error> {
    checksum_hex(Algo::Blake3, path)
}

async fn pin(req: HttpRequest, path: web::Path<String>) -> Result<HttpResponse, Error> {
    set_pinned(req, path, true).await
}

async fn unpin(req: HttpRequest, path: web::Path<String>) -> Result<HttpResponse, Error> {
    set_pinned(req, path, false).await
}

async fn set_pinned(
    req: HttpRequest,
    path: web::Path<String>,
    pinned: bool,
) -> Result<HttpResponse, Error> {
    let app = app_of(&req);
    let who = authorize(&req, &app, Scope::Admin)?;
    let b3 = blake3_param(&path)?;
    let meta = app.set_pinned(&b3, pinned, actor(&req, &who)).await?;
    Ok(HttpResponse::Ok().json(super::ops::blob_json(&app, &meta)?))
}

async fn delete_blob(req: HttpRequest, path: web::Path<String>) -> Result<HttpResponse, Error> {
    let app = app_of(&req);
    let who = authorize(&req, &app, Scope::Admin)?;
    let b3 = blake3_param(&path)?;
    let meta = app.delete_blob(&b3, actor(&req, &who)).await?;
    Ok(HttpResponse::Ok().json(json!({
        "deleted": meta.blake3(),
        "size": meta.size,
    })))
}

/// `GET /api/v1/audit?since=&until=&format=jsonl|csv`: the journal, oldest first, streamed
/// from the file (never loaded whole).
async fn audit(req: HttpRequest) -> Result<HttpResponse, Error> {
    let app = app_of(&req);
    authorize(&req, &app, Scope::Admin)?;
    let query = query_pairs(&req);
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let time = |name: &str| -> Result<Option<SystemTime>, Error> {
        param(name)
            .filter(|v| !v.is_empty())
            .map(|v| {
                humantime::parse_rfc3339_weak(&v).map_err(|e| {
                    Error::BadRequest(format!("{name}={v:?} is not an RFC 3339 time: {e}"))
                })
            })
            .transpose()
    };
    let (since, until) = (time("since")?, time("until")?);
    let csv = match param("format").as_deref() {
        None | Some("") | Some("jsonl") => false,
        Some("csv") => true,
        Some(f) => {
            return Err(Error::BadRequest(format!(
                "format={f:?} is not jsonl or csv"
            )));
        }
    };
    let path = app.cache.journal.path().to_owned();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    tokio::task::spawn_blocking(move || export(&path, since, until, csv, &tx));
    let body = tokio_stream_from(rx);
    let content_type = if csv {
        "text/csv; charset=utf-8"
    } else {
        "application/x-ndjson"
    };
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, content_type))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .streaming(body))
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Read the journal line by line, keep events within `[since, until]`, send them in batches.
fn export(
    path: &std::path::Path,
    since: Option<SystemTime>,
    until: Option<SystemTime>,
    csv: bool,
    tx: &tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
) {
    use std::io::BufRead;
    let send = |b: Vec<u8>| tx.blocking_send(Ok(Bytes::from(b))).is_ok();
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => {
            let _ = tx.blocking_send(Err(e));
            return;
        }
    };
    let mut out = Vec::with_capacity(64 * 1024);
    if csv {
        out.extend_from_slice(CSV_HEADER.join(",").as_bytes());
        out.push(b'\n');
    }
    for line in std::io::BufReader::new(file).lines() {
        let Ok(line) = line else { break };
        // Torn lines (a crash mid-append) are not events.
        let Ok(event) = serde_json::from_str::<Event>(&line) else {
            continue;
        };
        let at = humantime::parse_rfc3339_weak(&event.time).ok();
        if since.is_some_and(|s| at.is_some_and(|t| t < s))
            || until.is_some_and(|u| at.is_some_and(|t| t > u))
        {
            continue;
        }
        if csv {
            let mut w = csv::Writer::from_writer(&mut out);
            let _ = w.write_record(event.csv_row());
            let _ = w.flush();
        } else {
            out.extend_from_slice(line.as_bytes());
            out.push(b'\n');
        }
        if out.len() >= 64 * 1024 && !send(std::mem::take(&mut out)) {
            return; // the client went away
        }
    }
    if !out.is_empty() {
        send(out);
    }
}
