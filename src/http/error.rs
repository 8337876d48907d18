//! The one place errors become HTTP: status codes and the JSON body of SPEC 4.5.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

use crate::error::Error;

impl Error {
    /// Status and machine-readable code.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Error::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Error::InvalidUrl(_) => (StatusCode::BAD_REQUEST, "invalid_url"),
            Error::UnsupportedScheme(_) => (StatusCode::BAD_REQUEST, "unsupported_scheme"),
            Error::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Error::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Error::ForbiddenDestination(_) => (StatusCode::FORBIDDEN, "forbidden_destination"),
            Error::DeniedByPolicy(_) => (StatusCode::FORBIDDEN, "denied_by_policy"),
            Error::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Error::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Error::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Error::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            // SPEC 4.5 has no codes of their own for these; the size code fits.
            Error::UriTooLong(_) => (StatusCode::URI_TOO_LONG, "too_large"),
            Error::HeadersTooLarge(_) => (StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "too_large"),
            Error::RequestTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "bad_request"),
            Error::RangeNotSatisfiable { .. } => {
                (StatusCode::RANGE_NOT_SATISFIABLE, "range_not_satisfiable")
            }
            Error::IntegrityMismatch { upload: true, .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, "integrity_mismatch")
            }
            Error::IntegrityMismatch { upload: false, .. } => {
                (StatusCode::BAD_GATEWAY, "integrity_mismatch")
            }
            Error::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            Error::UpstreamFailed(_) => (StatusCode::BAD_GATEWAY, "upstream_failed"),
            Error::UpstreamTimeout(_) => (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout"),
            Error::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Error::Internal(_) | Error::Failed { .. } => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
        }
    }
}

impl ResponseError for Error {
    fn status_code(&self) -> StatusCode {
        self.status_and_code().0
    }

    fn error_response(&self) -> HttpResponse {
        let (status, code) = self.status_and_code();
        let message = match self {
            Error::Internal(_) | Error::Failed { .. } => {
                tracing::error!(error = %self.chain(), "internal error");
                "internal error; see the server log".to_owned()
            }
            other => other.to_string(),
        };
        let mut res = HttpResponse::build(status);
        match self {
            Error::RateLimited {
                retry_after_secs, ..
            } => {
                res.insert_header((header::RETRY_AFTER, retry_after_secs.to_string()));
            }
            Error::Unauthorized(_) => {
                res.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            Error::RangeNotSatisfiable { size, .. } => {
                res.insert_header((header::CONTENT_RANGE, format!("bytes */{size}")));
            }
            _ => {}
        }
        res.insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")));
        if let Error::RateLimited { limit, .. } = self {
            return res.json(json!({ "error": code, "message": message, "limit": limit }));
        }
        res.json(json!({ "error": code, "message": message }))
    }
}
