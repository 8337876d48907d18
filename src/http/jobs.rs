//! Prefetch and revalidation jobs over HTTP: `POST /api/v1/prefetch` (anonymous) and
//! `POST /api/v1/revalidate` (admin) start a job and answer 202 with its status path;
//! `GET` on that path reports progress.

use actix_web::{HttpRequest, HttpResponse, web};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::json;

use super::{app_of, client_ip};
use crate::auth::Scope;
use crate::error::Error;
use crate::jobs::{Kind, Submitter};

/// Largest job body: 10 000 URLs of a few hundred bytes each. What a job may keep in memory
/// is bounded in `prefetch` (per job, per client and in total).
pub const MAX_BODY: usize = 4 * 1024 * 1024;

pub fn routes(cfg: &mut web::ServiceConfig) {
    let resource = |path: &str| {
        web::resource(path.to_owned()).default_service(web::to(super::method_not_allowed))
    };
    cfg.service(resource("/api/v1/prefetch").route(web::post().to(start_prefetch)))
        .service(resource("/api/v1/prefetch/{id}").route(web::get().to(prefetch_status)))
        .service(resource("/api/v1/revalidate").route(web::post().to(start_revalidate)))
        .service(resource("/api/v1/revalidate/{id}").route(web::get().to(revalidate_status)));
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JobRequest {
    urls: Vec<String>,
}

fn parse(body: &[u8]) -> Result<Vec<String>, Error> {
    serde_json::from_slice::<JobRequest>(body)
        .map(|r| r.urls)
        .map_err(|e| Error::BadRequest(format!("expected {{\"urls\": [\"...\"]}}: {e}")))
}

/// The request body, refused past [`MAX_BODY`] with a JSON error like every other (at once
/// when its declared length says so).
async fn read_body(req: &HttpRequest, mut payload: web::Payload) -> Result<Vec<u8>, Error> {
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(Error::TooLarge(format!(
            "job bodies are limited to {MAX_BODY} bytes"
        )));
    }
    let mut body = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| Error::BadRequest(format!("cannot read the body: {e}")))?;
        if body.len() + chunk.len() > MAX_BODY {
            return Err(Error::TooLarge(format!(
                "job bodies are limited to {MAX_BODY} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

async fn start(req: HttpRequest, payload: web::Payload, kind: Kind) -> Result<HttpResponse, Error> {
    let app = app_of(&req);
    let actor = match kind {
        Kind::Revalidate => Some(super::api::authorize(&req, &app, Scope::Admin)?.name),
        Kind::Prefetch => None,
    };
    let urls = parse(&read_body(&req, payload).await?)?;
    let client = client_ip(&req);
    let who = Submitter {
        client: client.map(|ip| ip.to_string()),
        key: client.map(crate::limits::client_key),
        actor,
    };
    let job = app.submit_job(kind, urls, who)?;
    let status_url = format!("{}/{}", kind.path(), job.id);
    Ok(HttpResponse::Accepted()
        .insert_header(("Location", status_url.as_str()))
        .json(json!({ "id": job.id, "status_url": status_url })))
}

async fn status(req: HttpRequest, kind: Kind) -> Result<HttpResponse, Error> {
    let app = app_of(&req);
    if kind == Kind::Revalidate {
        super::api::authorize(&req, &app, Scope::Admin)?;
    }
    let id = req.match_info().get("id").unwrap_or_default();
    let job = app.jobs.get(kind, id).ok_or_else(|| {
        Error::NotFound(format!(
            "no job {id:?} (finished jobs are kept for an hour)"
        ))
    })?;
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(job.status()))
}

async fn start_prefetch(req: HttpRequest, body: web::Payload) -> Result<HttpResponse, Error> {
    start(req, body, Kind::Prefetch).await
}

async fn start_revalidate(req: HttpRequest, body: web::Payload) -> Result<HttpResponse, Error> {
    start(req, body, Kind::Revalidate).await
}

async fn prefetch_status(req: HttpRequest) -> Result<HttpResponse, Error> {
    status(req, Kind::Prefetch).await
}

async fn revalidate_status(req: HttpRequest) -> Result<HttpResponse, Error> {
    status(req, Kind::Revalidate).await
}
