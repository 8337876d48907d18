//! Talking to origin servers: the reqwest client, the SSRF guard, URL and content policy.
//!
//! One call here is one attempt (HTTP through reqwest, FTP through `ftp`); retries, mirrors
//! and resuming live in `fill`, which knows how many bytes it already has. Errors say whether
//! trying again makes sense. A per-host circuit breaker (`breaker`) fails requests fast while a
//! host cannot be reached; errors from a host that answered (whatever it said) never open it.

pub mod breaker;
pub mod ftp;
pub mod mirrors;
mod policy;
pub mod roots;
pub mod ssrf;

pub use policy::Policy;
pub(crate) use policy::host_matches;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{self, HeaderMap};
use reqwest::redirect;

use crate::config::UpstreamConfig;
use crate::url::UpstreamUrl;

/// Errors of one upstream attempt, or of the policy checks before it.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("scheme {scheme:?} is not allowed")]
    UnsupportedScheme { scheme: String },
    #[error("destination {host} is not allowed: {reason}")]
    ForbiddenDestination { host: String, reason: String },
    #[error("{what} is denied by policy")]
    Denied { what: String },
    #[error("{url} was not found upstream (status {status})")]
    NotFound { url: String, status: u16 },
    #[error("{url} is {size} bytes, more than the allowed {max}")]
    TooLarge { url: String, size: u64, max: u64 },
    #[error("{url}: upstream timed out {phase}")]
    Timeout { url: String, phase: &'static str },
    /// The host could not be reached: refused, unreachable, DNS or TLS handshake failure.
    #[error("{url}: cannot connect: {message}")]
    Connect { url: String, message: String },
    /// The host was reached, but the exchange broke off before an answer: the connection was
    /// closed or reset, or what came back was not the protocol asked for (an FTP banner on an
    /// http URL, a TLS alert to plain HTTP).
    #[error("{url}: the exchange with upstream failed: {message}")]
    Exchange { url: String, message: String },
    #[error("{url}: upstream answered {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: transfer broke after {received} bytes: {message}")]
    Body {
        url: String,
        received: u64,
        message: String,
    },
    #[error("{url}: upstream sent {received} bytes of the {expected} it announced")]
    Truncated {
        url: String,
        received: u64,
        expected: u64,
    },
    #[error("{url}: {message}")]
    Protocol { url: String, message: String },
    /// An FTP server refused a command; `message` is its reply line.
    #[error("{url}: the ftp server answered {message:?}")]
    Ftp {
        url: String,
        code: u16,
        message: String,
    },
    /// The host's circuit breaker is open: recent connections to it all failed.
    #[error(
        "{host} is failing: the last {failures} connections to it failed; not trying it again for {retry_in_secs}s"
    )]
    CircuitOpen {
        host: String,
        failures: u32,
        retry_in_secs: u64,
    },
}

impl UpstreamError {
    /// Whether another attempt may succeed (connect errors, timeouts, 5xx, broken bodies).
    pub fn is_retryable(&self) -> bool {
        match self {
            UpstreamError::Timeout { .. }
            | UpstreamError::Connect { .. }
            | UpstreamError::Exchange { .. }
            | UpstreamError::Body { .. }
            | UpstreamError::Truncated { .. } => true,
            UpstreamError::Status { status, .. } => {
                *status >= 500 || *status == 408 || *status == 429
            }
            // FTP's 4xx replies are the transient ones (421 service not available, 425 cannot
            // open data connection, 426 transfer aborted, 450/451 busy or local error).
            UpstreamError::Ftp { code, .. } => (400..500).contains(code),
            _ => false,
        }
    }

    /// A failure to reach the host at all: these, and only these, open its circuit breaker.
    /// Errors caused by what was asked (a non-HTTP answer on an http URL, an FTP reply to a
    /// bad path) say nothing about whether the host is up: an anonymous client must not be
    /// able to shut a host off for everyone by asking it nonsense.
    pub fn is_connect_failure(&self) -> bool {
        match self {
            UpstreamError::Connect { .. } => true,
            UpstreamError::Timeout { phase, .. } => {
                *phase == "while connecting" || *phase == "while resolving the host"
            }
            _ => false,
        }
    }

    /// Whether another source (a mirror alternate) should be tried after this error: the
    /// retryable ones, and a host whose breaker is open.
    pub fn is_source_failure(&self) -> bool {
        self.is_retryable() || matches!(self, UpstreamError::CircuitOpen { .. })
    }

    /// Whether the request itself was refused by our policy (nothing was sent upstream).
    pub fn is_policy(&self) -> bool {
        matches!(
            self,
            UpstreamError::UnsupportedScheme { .. }
                | UpstreamError::ForbiddenDestination { .. }
                | UpstreamError::Denied { .. }
        )
    }

    /// The upstream HTTP status, when the error is about one.
    pub fn status(&self) -> Option<u16> {
        match self {
            UpstreamError::NotFound { status, .. } | UpstreamError::Status { status, .. } => {
                Some(*status)
            }
            _ => None,
        }
    }
}

/// What upstream said about an object before its body.
#[derive(Debug, Clone, PartialEq)]
pub struct Head {
    pub status: u16,
    pub content_length: Option<u64>,
    pub content_type: Option<String>,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    /// The URL that answered, after redirects.
    pub final_url: String,
}

/// Where a retry of a broken transfer may continue, and how upstream proves it is still the
/// same object (HTTP `Range` + `If-Range`, FTP `REST` after comparing `SIZE` and `MDTM`).
#[derive(Debug, Clone, PartialEq)]
pub struct Resume {
    /// Bytes already stored.
    pub offset: u64,
    /// HTTP: a strong ETag or the Last-Modified date of the first answer; FTP: its `MDTM`.
    pub if_range: Option<String>,
    /// The object's length per the first answer.
    pub length: Option<u64>,
}

/// What a conditional GET quotes of the copy we have (`If-None-Match`, `If-Modified-Since`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Validators {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

/// The answer to a conditional GET.
pub enum Conditional {
    /// 304: the copy we have is current.
    NotModified,
    /// Upstream sent the object (changed, or it ignores conditionals).
    Modified(Box<Download>),
}

impl Resume {
    /// The validator to send in `If-Range`: a strong ETag, else Last-Modified (RFC 9110
    /// 13.1.5 forbids weak ETags there).
    pub fn validator(head: &Head) -> Option<String> {
        head.etag
            .clone()
            .filter(|e| !e.starts_with("W/"))
            .or_else(|| head.last_modified.clone())
    }
}

impl Head {
    fn from_response(resp: &reqwest::Response, content_length: Option<u64>) -> Head {
        let h = resp.headers();
        let text =
            |name: header::HeaderName| h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        Head {
            status: resp.status().as_u16(),
            content_length,
            content_type: text(header::CONTENT_TYPE),
            etag: text(header::ETAG),
            last_modified: text(header::LAST_MODIFIED),
            final_url: crate::url::redacted(resp.url()).into_owned(),
        }
    }
}

/// A response whose body is being received.
pub struct Download {
    /// What upstream said; `content_length` is the whole object's length, also when the
    /// transfer was resumed.
    pub head: Head,
    /// Position in the object of the first body byte: the resume offset when upstream
    /// accepted it, else 0.
    pub offset: u64,
    url: String,
    body: Body,
    /// Position in the object after the last byte received.
    received: u64,
    read_timeout: Duration,
}

enum Body {
    Http(reqwest::Response),
    Ftp(ftp::Transfer),
}

impl Download {
    /// The next piece of the body; `None` at its end. A body shorter than its
    /// Content-Length is an error, never a clean end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, UpstreamError> {
        let next = match &mut self.body {
            Body::Http(response) => {
                match tokio::time::timeout(self.read_timeout, response.chunk()).await {
                    Err(_) => Err(UpstreamError::Timeout {
                        url: self.url.clone(),
                        phase: "while sending the body",
                    }),
                    Ok(Err(e)) => Err(if e.is_timeout() {
                        UpstreamError::Timeout {
                            url: self.url.clone(),
                            phase: "while sending the body",
                        }
                    } else {
                        UpstreamError::Body {
                            url: self.url.clone(),
                            received: self.received,
                            message: error_chain(&e.without_url()),
                        }
                    }),
                    Ok(Ok(next)) => Ok(next),
                }
            }
            Body::Ftp(transfer) => {
                transfer
                    .chunk(&self.url, self.received, self.read_timeout)
                    .await
            }
        };
        match next? {
            Some(bytes) => {
                self.received += bytes.len() as u64;
                Ok(Some(bytes))
            }
            None => match self.head.content_length {
                Some(expected) if expected != self.received => Err(UpstreamError::Truncated {
                    url: self.url.clone(),
                    received: self.received,
                    expected,
                }),
                _ => Ok(None),
            },
        }
    }
}

/// The upstream client.
pub struct Upstream {
    client: reqwest::Client,
    ftp: ftp::FtpClient,
    policy: Arc<Policy>,
    breaker: breaker::Breaker,
    mirrors: mirrors::Mirrors,
    read_timeout: Duration,
}

/// Redirects followed at most (SPEC 4.1).
const MAX_REDIRECTS: usize = 10;

impl Upstream {
    pub fn new(cfg: &UpstreamConfig, user_agent: &str) -> Result<Upstream, roots::ClientError> {
        let policy = Arc::new(Policy::new(cfg));
        let hop_policy = policy.clone();
        let redirects = redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > MAX_REDIRECTS {
                return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
            }
            match hop_policy.check_destination(attempt.url()) {
                Ok(()) => attempt.follow(),
                Err(e) => attempt.error(e),
            }
        });
        let mut headers = HeaderMap::new();
        // Archives must arrive byte for byte as published: never let a transfer encoding
        // or a decompressing client change them.
        headers.insert(header::ACCEPT_ENCODING, "identity".parse().unwrap());
        let mut builder = reqwest::Client::builder()
            .user_agent(user_agent)
            .default_headers(headers)
            .connect_timeout(cfg.connect_timeout)
            .read_timeout(cfg.read_timeout)
            .redirect(redirects)
            // An HTTP_PROXY in the environment must not loop requests back to us.
            .no_proxy()
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(30))
            // Added to the system's roots, never instead of verification.
            .tls_certs_merge(roots::load(&cfg.ca_file)?);
        if !cfg.allow_private {
            builder = builder
                .dns_resolver(Arc::new(ssrf::GuardedResolver) as Arc<dyn reqwest::dns::Resolve>);
        }
        Ok(Upstream {
            client: builder.build()?,
            ftp: ftp::FtpClient {
                connect_timeout: cfg.connect_timeout,
                read_timeout: cfg.read_timeout,
                allow_private: cfg.allow_private,
            },
            policy,
            breaker: breaker::Breaker::default(),
            mirrors: mirrors::Mirrors::new(&cfg.mirrors),
            read_timeout: cfg.read_timeout,
        })
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Circuit-breaker states of hosts with recent connect failures (at most `limit`).
    pub fn breakers(&self, limit: usize) -> Vec<breaker::HostState> {
        self.breaker.states(Instant::now(), limit)
    }

    /// Mirror alternates of `url` (`[[upstream.mirrors]]`), in the order to try them.
    pub fn alternates(&self, url: &UpstreamUrl) -> Vec<UpstreamUrl> {
        self.mirrors.alternates(url)
    }

    /// Start downloading `url`: one attempt, checked against the policy before and after the
    /// headers. Statuses other than 2xx are errors (404/410 are `NotFound`). With `resume`,
    /// upstream is asked to continue from `resume.offset` (HTTP `Range` + `If-Range`, FTP
    /// `REST`); `Download::offset` says whether it did (otherwise the body starts at 0).
    pub async fn get(
        &self,
        url: &UpstreamUrl,
        resume: Option<&Resume>,
    ) -> Result<Download, UpstreamError> {
        self.policy.check_url(url)?;
        let result = self.guarded(url, self.get_unguarded(url, resume)).await;
        let dl = result?;
        self.policy.check_head(url.as_str(), &dl.head)?;
        Ok(dl)
    }

    /// A GET that quotes `validators`: `NotModified` for a 304. FTP has no conditional
    /// requests: it always sends the object.
    pub async fn get_if_modified(
        &self,
        url: &UpstreamUrl,
        validators: &Validators,
    ) -> Result<Conditional, UpstreamError> {
        if url.scheme() == "ftp" {
            return Ok(Conditional::Modified(Box::new(self.get(url, None).await?)));
        }
        self.policy.check_url(url)?;
        let response = self
            .guarded(
                url,
                self.send(reqwest::Method::GET, url, None, Some(validators)),
            )
            .await?;
        if response.status() == reqwest::StatusCode::NOT_MODIFIED {
            return Ok(Conditional::NotModified);
        }
        let head = Head::from_response(&response, response.content_length());
        self.policy.check_head(url.as_str(), &head)?;
        Ok(Conditional::Modified(Box::new(Download {
            head,
            offset: 0,
            url: url.to_string(),
            body: Body::Http(response),
            received: 0,
            read_timeout: self.read_timeout,
        })))
    }

    async fn get_unguarded(
        &self,
        url: &UpstreamUrl,
        resume: Option<&Resume>,
    ) -> Result<Download, UpstreamError> {
        if url.scheme() == "ftp" {
            let (head, offset, transfer) = self.ftp.get(url, resume).await?;
            return Ok(Download {
                head,
                offset,
                url: url.to_string(),
                body: Body::Ftp(transfer),
                received: offset,
                read_timeout: self.read_timeout,
            });
        }
        let range = resume.and_then(|r| {
            let validator = r.if_range.clone()?;
            (r.offset > 0).then_some((r.offset, validator))
        });
        let response = self
            .send(reqwest::Method::GET, url, range.clone(), None)
            .await?;
        let (offset, content_length) = match (&range, response.status().as_u16()) {
            (Some((offset, _)), 206) => {
                match content_range(response.headers()).filter(|(start, _)| start == offset) {
                    Some((start, total)) => (start, Some(total)),
                    // A partial answer we cannot place: ask for the whole object instead.
                    None => {
                        drop(response);
                        return Box::pin(self.get_unguarded(url, None)).await;
                    }
                }
            }
            _ => (0, response.content_length()),
        };
        let mut head = Head::from_response(&response, content_length);
        // The object's status, not this transfer's.
        head.status = if offset > 0 { 200 } else { head.status };
        Ok(Download {
            head,
            offset,
            url: url.to_string(),
            body: Body::Http(response),
            received: offset,
            read_timeout: self.read_timeout,
        })
    }

    /// Run one attempt through the host's circuit breaker: refused at once while it is open,
    /// and its outcome recorded. The breaker is keyed by scheme, host and port: an `http://`
    /// URL pointed at an FTP port is another service than the `ftp://` one there.
    async fn guarded<T>(
        &self,
        url: &UpstreamUrl,
        attempt: impl Future<Output = Result<T, UpstreamError>>,
    ) -> Result<T, UpstreamError> {
        let key = breaker_key(url);
        if let Err(open) = self.breaker.check(&key, Instant::now()) {
            return Err(UpstreamError::CircuitOpen {
                host: key,
                failures: open.failures,
                retry_in_secs: open.retry_in.as_secs_f64().ceil() as u64,
            });
        }
        let result = attempt.await;
        match &result {
            Err(e) if e.is_connect_failure() => self.breaker.failure(&key, Instant::now()),
            // Refused by our own policy before connecting: says nothing about the host.
            Err(e) if e.is_policy() => {}
            _ => self.breaker.success(&key),
        }
        result
    }

    /// An upstream HEAD: its status and headers, nothing stored.
    pub async fn head(&self, url: &UpstreamUrl) -> Result<Head, UpstreamError> {
        self.policy.check_url(url)?;
        let head = self.guarded(url, self.head_unguarded(url)).await?;
        self.policy.check_head(url.as_str(), &head)?;
        Ok(head)
    }

    async fn head_unguarded(&self, url: &UpstreamUrl) -> Result<Head, UpstreamError> {
        if url.scheme() == "ftp" {
            return self.ftp.head(url).await;
        }
        let response = self.send(reqwest::Method::HEAD, url, None, None).await?;
        // reqwest reports 0 for a bodiless HEAD response; the header is what upstream meant.
        let content_length = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        Ok(Head::from_response(&response, content_length))
    }

    /// One HTTP request; `range` asks for the object from an offset, if still the same;
    /// `conditional` asks for it only if it changed (a 304 is then an answer, not an error).
    async fn send(
        &self,
        method: reqwest::Method,
        url: &UpstreamUrl,
        range: Option<(u64, String)>,
        conditional: Option<&Validators>,
    ) -> Result<reqwest::Response, UpstreamError> {
        let mut request = self.client.request(method, url.as_url().clone());
        if let Some((offset, validator)) = &range {
            request = request
                .header(header::RANGE, format!("bytes={offset}-"))
                .header(header::IF_RANGE, validator.as_str());
        }
        if let Some(v) = conditional {
            if let Some(etag) = &v.etag {
                request = request.header(header::IF_NONE_MATCH, etag.as_str());
            }
            if let Some(lm) = &v.last_modified {
                request = request.header(header::IF_MODIFIED_SINCE, lm.as_str());
            }
        }
        let result = request.send().await;
        let response = result.map_err(|e| classify(&url.to_string(), e))?;
        let status = response.status().as_u16();
        match status {
            206 if range.is_some() => Ok(response),
            304 if conditional.is_some() => Ok(response),
            200..=299 if status != 206 => Ok(response),
            404 | 410 => Err(UpstreamError::NotFound {
                url: url.to_string(),
                status,
            }),
            _ => Err(UpstreamError::Status {
                url: url.to_string(),
                status,
            }),
        }
    }
}

/// The circuit breaker's key of a URL: `scheme://host:port`.
fn breaker_key(url: &UpstreamUrl) -> String {
    match url.ip_literal() {
        Some(std::net::IpAddr::V6(ip)) => format!("{}://[{ip}]:{}", url.scheme(), url.port()),
        _ => format!("{}://{}:{}", url.scheme(), url.host(), url.port()),
    }
}

/// `Content-Range: bytes <start>-<end>/<total>` as (start, total).
fn content_range(headers: &HeaderMap) -> Option<(u64, u64)> {
    let v = headers.get(header::CONTENT_RANGE)?.to_str().ok()?;
    let (range, total) = v.trim().strip_prefix("bytes ")?.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let (start, end, total): (u64, u64, u64) =
        (start.parse().ok()?, end.parse().ok()?, total.parse().ok()?);
    (start <= end && end + 1 == total).then_some((start, total))
}

/// Map a reqwest error to ours, finding our own policy errors in its source chain. reqwest's
/// own text would repeat the URL, credentials included: it is left out.
fn classify(url: &str, e: reqwest::Error) -> UpstreamError {
    let e = e.without_url();
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(s) = source {
        if let Some(f) = s.downcast_ref::<ssrf::ForbiddenAddress>() {
            return UpstreamError::ForbiddenDestination {
                host: f.host.clone(),
                reason: format!("{} is a private or internal address", f.addr),
            };
        }
        if let Some(p) = s.downcast_ref::<UpstreamError>() {
            // Raised by the redirect policy for a hop; rebuild it (errors are not Clone).
            return match p {
                UpstreamError::UnsupportedScheme { scheme } => UpstreamError::UnsupportedScheme {
                    scheme: scheme.clone(),
                },
                UpstreamError::ForbiddenDestination { host, reason } => {
                    UpstreamError::ForbiddenDestination {
                        host: host.clone(),
                        reason: format!("{reason} (redirect)"),
                    }
                }
                other => UpstreamError::Protocol {
                    url: url.to_owned(),
                    message: other.to_string(),
                },
            };
        }
        source = s.source();
    }
    let url = url.to_owned();
    if e.is_timeout() {
        UpstreamError::Timeout {
            url,
            phase: if e.is_connect() {
                "while connecting"
            } else {
                "before sending headers"
            },
        }
    } else if e.is_redirect() {
        UpstreamError::Protocol {
            url,
            message: error_chain(&e),
        }
    } else if e.is_connect() {
        // The connector failed: TCP connect, DNS or the TLS handshake.
        UpstreamError::Connect {
            url,
            message: error_chain(&e),
        }
    } else if e.is_request() {
        // Connected, then the request or its answer failed.
        UpstreamError::Exchange {
            url,
            message: error_chain(&e),
        }
    } else {
        UpstreamError::Protocol {
            url,
            message: error_chain(&e),
        }
    }
}

/// "outer: inner: innermost", since reqwest's Display shows only the outermost layer.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_msg = s.to_string();
        if !msg.contains(&s_msg) {
            msg.push_str(": ");
            msg.push_str(&s_msg);
        }
        source = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_hosts_patterns() {
        assert!(host_matches("ftp.gnu.org", "ftp.gnu.org"));
        assert!(!host_matches("ftp.gnu.org", "gnu.org"));
        assert!(host_matches(".gnu.org", "ftp.gnu.org"));
        assert!(host_matches(".gnu.org", "gnu.org"));
        assert!(!host_matches(".gnu.org", "evilgnu.org"));
    }

    #[test]
    fn breaker_keys_name_the_scheme() {
        let k = |u: &str| breaker_key(&UpstreamUrl::parse(u).unwrap());
        assert_eq!(k("http://h/x"), "http://h:80");
        assert_eq!(k("ftp://h/x"), "ftp://h:21");
        assert_eq!(k("http://h:21/x"), "http://h:21");
        assert_eq!(k("https://[::1]:8443/x"), "https://[::1]:8443");
        assert_ne!(k("http://h:21/x"), k("ftp://h/x"));
    }

    #[test]
    fn only_unreachable_hosts_are_connect_failures() {
        let url = || "u".to_owned();
        let message = || "m".to_owned();
        assert!(
            UpstreamError::Connect {
                url: url(),
                message: message()
            }
            .is_connect_failure()
        );
        for phase in ["while connecting", "while resolving the host"] {
            assert!(UpstreamError::Timeout { url: url(), phase }.is_connect_failure());
        }
        for e in [
            UpstreamError::Exchange {
                url: url(),
                message: message(),
            },
            UpstreamError::Protocol {
                url: url(),
                message: message(),
            },
            UpstreamError::Ftp {
                url: url(),
                code: 500,
                message: message(),
            },
            UpstreamError::Timeout {
                url: url(),
                phase: "before sending headers",
            },
            UpstreamError::Status {
                url: url(),
                status: 503,
            },
        ] {
            assert!(!e.is_connect_failure(), "{e}");
        }
        // A broken exchange is still worth a retry (a pooled connection closed by the server).
        assert!(
            UpstreamError::Exchange {
                url: url(),
                message: message()
            }
            .is_retryable()
        );
    }

    #[test]
    fn retryable_classification() {
        let s = |status| UpstreamError::Status {
            url: "u".into(),
            status,
        };
        assert!(s(500).is_retryable() && s(503).is_retryable() && s(429).is_retryable());
        assert!(!s(403).is_retryable());
        assert!(
            !UpstreamError::NotFound {
                url: "u".into(),
                status: 404
            }
            .is_retryable()
        );
    }
}
