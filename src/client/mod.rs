//! Client commands that talk to a running server over HTTP: `fetch`, `upload`, `prefetch`
//! and `audit export`, with the error handling `spec check` shares: causes kept, URLs shown
//! as the user gave them, a hint where a token is missing.
//!
//! One file a command (`fetch.rs`, `upload.rs`, `prefetch.rs`, `audit.rs`); `cli` parses the
//! arguments and calls them.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use futures::StreamExt;
use sha2::{Digest, Sha256};

mod audit;
mod fetch;
mod prefetch;
mod upload;

pub use audit::audit_export;
pub use fetch::fetch;
pub use prefetch::{prefetch, read_url_list};
pub use upload::{Upload, upload};

/// Why a client command failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The command needs a token and none was given: a usage error (exit 2).
    #[error("{command} needs a token: set UPCACHE_TOKEN or --token")]
    NoToken {
        /// What needs it, such as "upload" or "audit export".
        command: &'static str,
    },
    /// No HTTP answer from the server; `server` is the URL as the user gave it.
    #[error("cannot reach {server}: {cause}")]
    Unreachable { server: String, cause: String },
    /// The server answered with an error: `<status>: <its message>`.
    #[error("{0}")]
    Server(String),
    /// Anything else: local files, broken transfers, unexpected answers.
    #[error("{0}")]
    Failed(String),
}

impl From<String> for ClientError {
    fn from(message: String) -> Self {
        ClientError::Failed(message)
    }
}

impl From<&str> for ClientError {
    fn from(message: &str) -> Self {
        ClientError::Failed(message.to_owned())
    }
}

impl ClientError {
    /// The process exit code: 2 for a usage error, 1 for an operational failure.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            ClientError::NoToken { .. } => ExitCode::from(2),
            _ => ExitCode::from(1),
        }
    }

    /// An error of `reqwest` while talking to `server`: `Unreachable` with the underlying
    /// cause when no answer came, else the error's own words (without the request URL, which
    /// is the encoded form of what the user typed).
    pub fn http(server: &str, e: &reqwest::Error) -> ClientError {
        if e.is_connect() || e.is_timeout() || e.is_request() {
            ClientError::Unreachable {
                server: server.to_owned(),
                cause: cause(e),
            }
        } else {
            ClientError::Failed(format!("talking to {server}: {}", cause(e)))
        }
    }
}

/// The innermost useful words of a `reqwest` error: "tcp connect error: connection refused"
/// rather than "error sending request for url (http://...%2F...)".
pub fn cause(e: &reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut source = std::error::Error::source(e);
    while let Some(err) = source {
        let text = match err.downcast_ref::<std::io::Error>() {
            Some(io) => io_words(io),
            None => err.to_string(),
        };
        // hyper's "client error (Connect)" only repeats what its sources say better.
        let generic = text.starts_with("client error (") || text.is_empty();
        if !generic && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = err.source();
    }
    if e.is_timeout() && !parts.iter().any(|p| p.contains("timed out")) {
        parts.push("timed out".into());
    }
    if parts.is_empty() {
        // Its own words, without the (encoded) request URL.
        let text = e.to_string();
        return match e.url() {
            Some(url) => text.replace(&format!(" for url ({url})"), ""),
            None => text,
        };
    }
    parts.join(": ")
}

/// "connection refused" rather than "Connection refused (os error 111)".
fn io_words(e: &std::io::Error) -> String {
    let text = e.to_string();
    let text = match e.raw_os_error() {
        Some(code) => text
            .trim_end_matches(&format!(" (os error {code})"))
            .to_owned(),
        None => text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text,
    }
}

/// An HTTP client for talking to our server; `read_timeout` bounds silence, not total time
/// (a 4 GiB tarball may take long, a stalled server must not hang a build forever).
pub fn http(read_timeout: Duration) -> Result<reqwest::Client, ClientError> {
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(read_timeout)
        .build()
        .map_err(|e| ClientError::Failed(format!("cannot set up the http client: {e}")))
}

/// Default silence allowed from the server in upload, prefetch and audit export.
const READ_TIMEOUT: Duration = Duration::from_secs(300);

/// `<status>: <message>` from the server's JSON error body (or the body as text).
pub async fn server_error(resp: reqwest::Response) -> ClientError {
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    let msg = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_owned))
        .unwrap_or(body);
    ClientError::Server(format!("{status}: {msg}"))
}

/// Characters left as they are in a query value: RFC 3986's unreserved ones, so that
/// `https://x/a-1.tar.gz` travels as `https%3A%2F%2Fx%2Fa-1.tar.gz`.
const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `s` percent-encoded as a query value.
pub fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, QUERY_VALUE).to_string()
}

/// `token`, or the hint to give one.
fn require_token<'a>(
    token: Option<&'a str>,
    command: &'static str,
) -> Result<&'a str, ClientError> {
    token.ok_or(ClientError::NoToken { command })
}

/// A progress bar for `len` bytes (a spinner when unknown), on a terminal only.
fn byte_bar(len: Option<u64>) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = match len {
        Some(n) => indicatif::ProgressBar::new(n),
        None => indicatif::ProgressBar::new_spinner(),
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bytes}/{total_bytes} {wide_bar} {bytes_per_sec} {eta}",
        )
        .expect("valid template"),
    );
    Some(bar)
}

/// Exit code of a client command; its error goes to stderr, once.
pub fn exit(result: Result<(), ClientError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("upcache: {e}");
            e.exit_code()
        }
    }
}
