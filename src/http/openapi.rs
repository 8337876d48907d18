//! The OpenAPI document of this API (`schema/openapi.json`) and the audit-event JSON Schema it
//! refers to, served from the binary so that every instance describes itself.

use actix_web::http::header;
use actix_web::{HttpResponse, web};

/// `schema/openapi.json`, the machine-readable description of every route.
pub const OPENAPI: &str = include_str!("../../schema/openapi.json");

/// `schema/audit-event.schema.json`. The document refers to it by the relative reference
/// `audit-event.schema.json`, which resolves to this route next to the document's own, as it
/// resolves to the file next to it in the source tree.
pub const AUDIT_EVENT_SCHEMA: &str = include_str!("../../schema/audit-event.schema.json");

/// Anonymous and, like every endpoint but health, readiness and metrics, rate-limited: it is
/// for tools and people, not for monitoring.
pub fn routes(cfg: &mut web::ServiceConfig) {
    use super::{get_or_head, resource};
    cfg.service(resource("/api/v1/openapi.json").route(get_or_head().to(|| json(OPENAPI))))
        .service(
            resource("/api/v1/audit-event.schema.json")
                .route(get_or_head().to(|| json(AUDIT_EVENT_SCHEMA))),
        );
}

async fn json(body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "application/json"))
        // Changes only with the binary; a client may keep it for a while.
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .body(body)
}
