//! The one error type requests end with; `http::error` alone maps it to a status and code.

use crate::audit::JournalError;
use crate::index::IndexError;
use crate::store::StoreError;
use crate::upstream::UpstreamError;
use crate::url::UrlError;

/// What went wrong, in terms a client can act on. Messages are lower-case sentences that name
/// the offending value; internal details stay in the logs (`Internal` carries them for logging
/// only).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    InvalidUrl(String),
    #[error("{0}")]
    UnsupportedScheme(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    ForbiddenDestination(String),
    #[error("{0}")]
    DeniedByPolicy(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("range {range:?} is not satisfiable for {size} bytes")]
    RangeNotSatisfiable { range: String, size: u64 },
    /// Content did not match an expected checksum; `upload` decides 422 vs 502.
    #[error("{message}")]
    IntegrityMismatch { message: String, upload: bool },
    /// Over a limit; `Retry-After: retry_after_secs`. `limit` names it in the body: its
    /// configuration key (`limits.per_client_rps`), or a built-in bound's name.
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after_secs: u64,
        limit: &'static str,
    },
    /// Request target over 8 KiB (414).
    #[error("{0}")]
    UriTooLong(String),
    /// Request headers over 16 KiB in total (431).
    #[error("{0}")]
    HeadersTooLarge(String),
    /// A request head that did not arrive in time (408).
    #[error("{0}")]
    RequestTimeout(String),
    #[error("{0}")]
    UpstreamFailed(String),
    #[error("{0}")]
    UpstreamTimeout(String),
    #[error("{0}")]
    Unavailable(String),
    /// A bug or an unexpected failure of ours; the client sees a generic message.
    #[error("{0}")]
    Internal(String),
}

impl From<crate::auth::AuthError> for Error {
    fn from(e: crate::auth::AuthError) -> Self {
        match e {
            crate::auth::AuthError::Scope { .. } => Error::Forbidden(e.to_string()),
            _ => Error::Unauthorized(e.to_string()),
        }
    }
}

impl From<UrlError> for Error {
    fn from(e: UrlError) -> Self {
        match e {
            UrlError::UnsupportedScheme { .. } => Error::UnsupportedScheme(e.to_string()),
            _ => Error::InvalidUrl(e.to_string()),
        }
    }
}

impl From<&UpstreamError> for Error {
    fn from(e: &UpstreamError) -> Self {
        let msg = e.to_string();
        match e {
            UpstreamError::UnsupportedScheme { .. } => Error::UnsupportedScheme(msg),
            UpstreamError::ForbiddenDestination { .. } => Error::ForbiddenDestination(msg),
            UpstreamError::Denied { .. } => Error::DeniedByPolicy(msg),
            UpstreamError::NotFound { .. } => Error::NotFound(msg),
            UpstreamError::TooLarge { .. } => Error::TooLarge(msg),
            UpstreamError::Timeout { .. } => Error::UpstreamTimeout(msg),
            UpstreamError::Connect { .. }
            | UpstreamError::Exchange { .. }
            | UpstreamError::Status { .. }
            | UpstreamError::Body { .. }
            | UpstreamError::Truncated { .. }
            | UpstreamError::Protocol { .. }
            | UpstreamError::Ftp { .. }
            | UpstreamError::CircuitOpen { .. } => Error::UpstreamFailed(msg),
        }
    }
}

impl From<UpstreamError> for Error {
    fn from(e: UpstreamError) -> Self {
        Error::from(&e)
    }
}

impl From<&StoreError> for Error {
    fn from(e: &StoreError) -> Self {
        if e.is_out_of_space() {
            Error::Unavailable(format!("storage is unavailable: {e}"))
        } else {
            Error::Internal(e.to_string())
        }
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        Error::from(&e)
    }
}

impl From<IndexError> for Error {
    fn from(e: IndexError) -> Self {
        Error::Internal(e.to_string())
    }
}

impl From<JournalError> for Error {
    fn from(e: JournalError) -> Self {
        Error::Internal(e.to_string())
    }
}
