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
    /// A failure of one of our parts (index, journal, store, a task): 500 with a generic
    /// message; the log gets `what` and the whole source chain.
    #[error("{what}")]
    Failed {
        what: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl Error {
    /// A failure of ours that keeps its cause for the log.
    pub fn failed(
        what: &'static str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error::Failed {
            what,
            source: Box::new(source),
        }
    }

    /// `self` and its sources, `: `-separated (for the log).
    pub fn chain(&self) -> String {
        let mut text = self.to_string();
        let mut next = std::error::Error::source(self);
        while let Some(e) = next {
            text.push_str(": ");
            text.push_str(&e.to_string());
            next = e.source();
        }
        text
    }
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

/// A shared store failure (one fill's, seen by all its clients). The client learns what
/// failed, never a server path.
impl From<&StoreError> for Error {
    fn from(e: &StoreError) -> Self {
        if e.is_out_of_space() {
            Error::Unavailable(format!("storage is unavailable: {}", e.reason()))
        } else {
            Error::Internal(e.to_string())
        }
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        if e.is_out_of_space() {
            Error::from(&e)
        } else {
            Error::failed("storage failed", e)
        }
    }
}

impl From<IndexError> for Error {
    fn from(e: IndexError) -> Self {
        Error::failed("the index failed", e)
    }
}

impl From<JournalError> for Error {
    fn from(e: JournalError) -> Self {
        Error::failed("the audit journal failed", e)
    }
}

impl From<tokio::task::JoinError> for Error {
    fn from(e: tokio::task::JoinError) -> Self {
        Error::failed("a background task ended early", e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(path: &str) -> StoreError {
        StoreError::io(
            "write",
            std::path::Path::new(path),
            std::io::Error::from_raw_os_error(libc::ENOSPC),
        )
    }

    #[test]
    fn a_full_disk_tells_the_client_what_failed_but_not_where() {
        let e = Error::from(full("/srv/upcache/tmp/abc"));
        assert!(matches!(e, Error::Unavailable(_)));
        let text = e.to_string();
        assert!(text.contains("No space left"), "{text}");
        assert!(!text.contains("/srv/upcache"), "{text}");
    }

    #[test]
    fn failures_of_ours_keep_their_source_for_the_log() {
        let io = StoreError::io(
            "rename",
            std::path::Path::new("/srv/upcache/blobs/x"),
            std::io::Error::from_raw_os_error(libc::EIO),
        );
        let e = Error::from(io);
        assert_eq!(e.to_string(), "storage failed");
        assert!(std::error::Error::source(&e).is_some());
        let chain = e.chain();
        assert!(
            chain.starts_with("storage failed: rename /srv/upcache/blobs/x"),
            "{chain}"
        );
    }
}
