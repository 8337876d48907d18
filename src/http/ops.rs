//! Operations and read-only JSON API: health, readiness, metrics, lookup, stats.

use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Value, json};

use crate::error::Error;
use crate::index::BlobMeta;
use crate::metrics::Exposition;
use crate::service::{Service, rfc3339};
use crate::store::Algo;
use crate::url::UpstreamUrl;

pub fn routes(cfg: &mut web::ServiceConfig) {
    use super::{get_or_head, resource};
    cfg.service(resource("/healthz").route(get_or_head().to(healthz)))
        .service(resource("/readyz").route(get_or_head().to(readyz)))
        .service(resource("/metrics").route(get_or_head().to(metrics)))
        .service(resource("/api/v1/lookup").route(get_or_head().to(lookup)))
        .service(resource("/api/v1/stats").route(get_or_head().to(stats)))
        .service(resource("/api/v1/status").route(get_or_head().to(status)));
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Ready when the index answers and the data volume accepts a write. The verdict is also
/// remembered: while unready, new downloads are refused (see `readiness`).
async fn readyz(app: web::Data<Service>) -> HttpResponse {
    let app = app.into_inner();
    match crate::readiness::probe(&app.readiness, app.cache.clone(), app.tier.probe()).await {
        Ok(()) => HttpResponse::Ok().json(json!({"status": "ready"})),
        Err(reason) => {
            app.cache.alerts.raise(
                crate::alerts::Kind::StorageUnavailable,
                &app.config.storage.data_dir.display().to_string(),
                format!("not ready: {reason}"),
            );
            HttpResponse::ServiceUnavailable().json(json!({
                "status": "unavailable",
                "reason": reason,
                "error": "unavailable",
                "message": format!("not ready: {reason}"),
            }))
        }
    }
}

/// Prometheus text 0.0.4, or OpenMetrics when `Accept` asks for it (SPEC 9).
async fn metrics(req: HttpRequest, app: web::Data<Service>) -> HttpResponse {
    let stats = app.cache.index.stats();
    let m = &app.cache.metrics;
    m.store_bytes.set(stats.bytes as i64);
    if let Ok(du) = app.cache.used() {
        m.disk_used_ratio.set(du.used_ratio());
        m.disk_used_bytes.set(du.used_bytes as i64);
        m.disk_total_bytes.set(du.total_bytes as i64);
    }
    m.high_watermark.set(app.config.cache.high_watermark);
    m.low_watermark.set(app.config.cache.low_watermark);
    m.ready
        .set(i64::from(app.readiness.unready_reason().is_none()));
    if let Some(targets) = req.app_data::<web::Data<super::targets::TargetCache>>() {
        m.bounded_state("targets", targets.size());
    }
    m.bounded_state("negative", app.negative.size());
    if let Some(size) = app.tier.absent_size() {
        m.bounded_state("absent", size);
    }
    m.bounded_state("alerts", app.cache.alerts.size());
    m.bounded_state("prefetch_jobs", app.jobs.retained());
    m.bounded_state("index_urls", app.cache.index.memory_size());
    let accept: Vec<&str> = req
        .headers()
        .get_all(actix_web::http::header::ACCEPT)
        .filter_map(|v| v.to_str().ok())
        .collect();
    let format = Exposition::negotiate(&accept.join(","));
    HttpResponse::Ok()
        .content_type(format.content_type())
        .insert_header((actix_web::http::header::VARY, "Accept"))
        .body(m.render(format))
}

/// What the status page shows, as JSON (`status::Snapshot`).
async fn status(app: web::Data<Service>) -> Result<HttpResponse, Error> {
    Ok(HttpResponse::Ok()
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(app.snapshot()?))
}

async fn stats(app: web::Data<Service>) -> Result<HttpResponse, Error> {
    let s = app.cache.index.stats();
    let du = app.cache.used()?;
    let m = &app.cache.metrics;
    Ok(HttpResponse::Ok().json(json!({
        "blobs": s.blobs,
        "bytes": s.bytes,
        "urls": s.urls,
        "hits": m.hits.get(),
        "misses": m.misses.get(),
        "upstream_fetches": m.upstream_fetches.get(),
        "upstream_failures": m.upstream_failures.get(),
        "inflight": app.flights.len(),
        "disk": {
            "used_bytes": du.used_bytes,
            "total_bytes": du.total_bytes,
            "used_ratio": du.used_ratio(),
        },
    })))
}

/// `GET /api/v1/lookup?url=|md5=|sha256=|sha512=|blake3=`
async fn lookup(req: HttpRequest, app: web::Data<Service>) -> Result<HttpResponse, Error> {
    let pairs = super::query_pairs(&req);
    let Some((key, value)) = pairs.first() else {
        return Err(Error::BadRequest(
            "give one of url=, md5=, sha256=, sha512=, blake3=".into(),
        ));
    };
    let meta = if key == "url" {
        let url = UpstreamUrl::parse(value)?;
        app.learn_url(&url).await?;
        app.cache
            .index
            .url(url.as_str())?
            .map(|e| e.blob.clone())
            .ok_or_else(|| Error::NotFound(format!("{url} is not cached")))?
    } else {
        let algo = Algo::from_name(key)
            .ok_or_else(|| Error::BadRequest(format!("unknown lookup key {key:?}")))?;
        let hex = super::checksum_hex(algo, value)?;
        app.learn_checksum(algo, &hex).await?;
        app.cache
            .index
            .by_checksum(algo, &hex)?
            .ok_or_else(|| Error::NotFound(format!("no stored blob has {key} {hex}")))?
    };
    Ok(HttpResponse::Ok().json(blob_json(&app, &meta)?))
}

/// The lookup JSON of a blob (SPEC 4.3), shared with the upload API.
pub fn blob_json(app: &Service, meta: &BlobMeta) -> Result<Value, Error> {
    // Fold in reads not yet flushed to the index.
    let meta = app
        .cache
        .index
        .blob(meta.blake3())?
        .unwrap_or_else(|| meta.clone());
    Ok(json!({
        "blake3": meta.digests.blake3,
        "sha256": meta.digests.sha256,
        "sha512": meta.digests.sha512,
        "md5": meta.digests.md5,
        "size": meta.size,
        "content_type": meta.content_type,
        "origin": meta.origin,
        "pinned": meta.pinned,
        "first_seen": rfc3339(meta.first_seen),
        "last_access": rfc3339(meta.last_access),
        "access_count": meta.access_count,
        "present": meta.is_stored()
            && (meta.placement.in_bucket() || app.cache.store.exists(meta.blake3())),
        // s3/obs: whether the bucket holds it yet (uploads run in the background).
        "remote": meta.placement.in_bucket(),
        "urls": app.cache
            .index
            .urls_of(meta.blake3())?
            .iter()
            .map(|u| crate::url::redact_str(u))
            .collect::<Vec<_>>(),
    }))
}
