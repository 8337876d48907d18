//! Client commands that talk to a running server over HTTP: `fetch`, `upload`, `prefetch`
//! and `audit export`, with the error handling `spec check` shares: causes kept, URLs shown
//! as the user gave them, a hint where a token is missing.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use futures::StreamExt;
use sha2::{Digest, Sha256};

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

/// `upcache fetch`: download `url` through the server into a file (atomically) or stdout,
/// checking the sha256 the server announces.
pub async fn fetch(
    server: &str,
    url: &str,
    output: Option<&Path>,
    read_timeout: Duration,
) -> Result<(), ClientError> {
    let endpoint = format!("{}/fetch?url={}", server.trim_end_matches('/'), enc(url));
    let mut resp = http(read_timeout)?
        .get(&endpoint)
        .send()
        .await
        .map_err(|e| ClientError::http(server, &e))?;
    if !resp.status().is_success() {
        return Err(server_error(resp).await);
    }
    let expected_sha256 = resp
        .headers()
        .get("x-checksum-sha256")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let total = resp.content_length();
    let to_stdout = output == Some(Path::new("-"));
    let target: PathBuf = match output {
        Some(p) => p.to_owned(),
        None => {
            let name = crate::url::UpstreamUrl::parse(url)
                .map(|u| u.file_name())
                .unwrap_or_default();
            let name = sanitize_file_name(&name);
            if name.is_empty() {
                return Err(format!("{url} has no file name; give one with -o").into());
            }
            PathBuf::from(name)
        }
    };
    let bar = if to_stdout { None } else { byte_bar(total) };
    let mut hasher = Sha256::new();
    let mut sink: Box<dyn Write> = if to_stdout {
        Box::new(std::io::stdout().lock())
    } else {
        let part = part_path(&target);
        Box::new(std::io::BufWriter::new(
            std::fs::File::create(&part).map_err(|e| format!("{}: {e}", part.display()))?,
        ))
    };
    let mut received = 0u64;
    loop {
        let chunk = resp.chunk().await;
        match chunk {
            Ok(Some(bytes)) => {
                hasher.update(&bytes);
                received += bytes.len() as u64;
                if let Err(e) = sink.write_all(&bytes) {
                    drop(sink);
                    if !to_stdout {
                        let _ = std::fs::remove_file(part_path(&target));
                    }
                    return Err(format!("cannot write the output: {e}").into());
                }
                if let Some(bar) = &bar {
                    bar.set_position(received);
                }
            }
            Ok(None) => break,
            Err(e) => {
                drop(sink);
                if !to_stdout {
                    let _ = std::fs::remove_file(part_path(&target));
                }
                if e.is_timeout() {
                    return Err(format!(
                        "download stalled after {received} bytes: the server sent nothing for {}",
                        humantime::format_duration(read_timeout)
                    )
                    .into());
                }
                return Err(format!("download broke after {received} bytes: {}", cause(&e)).into());
            }
        }
    }
    let flushed = sink.flush();
    drop(sink);
    if let Err(e) = flushed {
        if !to_stdout {
            let _ = std::fs::remove_file(part_path(&target));
        }
        return Err(format!("cannot write the output: {e}").into());
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let got = hex::encode(hasher.finalize());
    if let Some(want) = expected_sha256 {
        if want != got {
            let _ = std::fs::remove_file(part_path(&target));
            return Err(format!("sha256 mismatch: server said {want}, received {got}").into());
        }
    }
    if !to_stdout {
        std::fs::rename(part_path(&target), &target)
            .map_err(|e| format!("{}: {e}", target.display()))?;
        eprintln!("{}  {} bytes  sha256 {got}", target.display(), received);
    }
    Ok(())
}

fn part_path(target: &Path) -> PathBuf {
    let mut p = target.as_os_str().to_owned();
    p.push(".part");
    PathBuf::from(p)
}

/// A file name from a URL must not walk out of the current directory.
fn sanitize_file_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = base
        .chars()
        .filter(|c| !c.is_control() && !crate::url::is_hidden_char(*c))
        .collect();
    match cleaned.as_str() {
        "." | ".." => String::new(),
        _ => cleaned,
    }
}

/// `upcache upload FILE --url URL [--md5 HEX]`: stream the file, print the links.
/// What `upcache upload` asks of `PUT /api/v1/upload`.
#[derive(Debug, Default)]
pub struct Upload {
    /// Upstream URL to bind.
    pub url: Option<String>,
    pub md5: Option<String>,
    pub sha256: Option<String>,
    /// The name in the returned links; default: the file's name.
    pub filename: Option<String>,
    /// Rebind `url` if it is bound to other content (admin scope).
    pub replace: bool,
}

pub async fn upload(
    server: &str,
    token: Option<&str>,
    file: &Path,
    opts: &Upload,
) -> Result<(), ClientError> {
    let token = require_token(token, "upload")?;
    let f = tokio::fs::File::open(file)
        .await
        .map_err(|e| format!("{}: {e}", file.display()))?;
    let len = f
        .metadata()
        .await
        .map_err(|e| format!("{}: {e}", file.display()))?
        .len();
    let name = match &opts.filename {
        Some(n) => n.clone(),
        None => file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    let mut query = vec![format!("filename={}", enc(&name))];
    for (key, value) in [
        ("url", &opts.url),
        ("md5", &opts.md5),
        ("sha256", &opts.sha256),
    ] {
        if let Some(v) = value {
            query.push(format!("{key}={}", enc(v)));
        }
    }
    if opts.replace {
        query.push("replace=true".to_owned());
    }
    let endpoint = format!(
        "{}/api/v1/upload?{}",
        server.trim_end_matches('/'),
        query.join("&")
    );
    let bar = byte_bar(Some(len));
    let progress = bar.clone();
    let stream = tokio_util::io::ReaderStream::with_capacity(f, 256 * 1024).inspect(move |chunk| {
        if let (Some(bar), Ok(c)) = (&progress, chunk) {
            bar.inc(c.len() as u64);
        }
    });
    let resp = http(READ_TIMEOUT)?
        .put(&endpoint)
        .header(reqwest::header::CONTENT_LENGTH, len)
        .bearer_auth(token)
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .map_err(|e| ClientError::http(server, &e))?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if resp.status() == reqwest::StatusCode::CONFLICT && !opts.replace {
        let e = server_error(resp).await;
        return Err(ClientError::Server(format!(
            "{e} (upcache upload: add --replace)"
        )));
    }
    if !resp.status().is_success() {
        return Err(server_error(resp).await);
    }
    let created = resp.status() == reqwest::StatusCode::CREATED;
    let v: serde_json::Value = resp
        .json()
        .await
        .map_err(|e| ClientError::http(server, &e))?;
    eprintln!(
        "{} {}  md5 {}  sha256 {}",
        if created { "stored" } else { "already stored" },
        file.display(),
        v["md5"].as_str().unwrap_or("?"),
        v["sha256"].as_str().unwrap_or("?"),
    );
    for link in v["links"].as_array().into_iter().flatten() {
        println!("{}", link.as_str().unwrap_or_default());
    }
    Ok(())
}

/// `upcache audit export`: stream the journal export to stdout.
pub async fn audit_export(
    server: &str,
    token: Option<&str>,
    since: Option<&str>,
    until: Option<&str>,
    format: &str,
) -> Result<(), ClientError> {
    let token = require_token(token, "audit export")?;
    let mut endpoint = format!(
        "{}/api/v1/audit?format={}",
        server.trim_end_matches('/'),
        enc(format)
    );
    for (key, value) in [("since", since), ("until", until)] {
        if let Some(v) = value {
            endpoint.push_str(&format!("&{key}={}", enc(v)));
        }
    }
    let resp = http(READ_TIMEOUT)?
        .get(&endpoint)
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| ClientError::http(server, &e))?;
    if !resp.status().is_success() {
        return Err(server_error(resp).await);
    }
    let mut out = std::io::stdout().lock();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| format!("the export broke off: {}", cause(&e)))?;
        out.write_all(&chunk)
            .map_err(|e| format!("cannot write the export: {e}"))?;
    }
    out.flush()
        .map_err(|e| ClientError::Failed(format!("cannot write the export: {e}")))
}

/// How often `upcache prefetch` asks the server how its job is doing.
const PREFETCH_POLL: Duration = Duration::from_millis(250);

/// `upcache prefetch`: start a prefetch (or, with `revalidate`, a revalidation) job for
/// `urls` and follow it: a progress bar on a terminal, else one line per finished URL on
/// stdout. Fails (exit 1) listing the URLs that failed, and, for a revalidation, those whose
/// upstream content drifted.
pub async fn prefetch(
    server: &str,
    token: Option<&str>,
    urls: Vec<String>,
    revalidate: bool,
) -> Result<(), ClientError> {
    let token = match revalidate {
        true => Some(require_token(token, "prefetch --revalidate")?),
        false => token,
    };
    let base = server.trim_end_matches('/');
    let path = if revalidate {
        "/api/v1/revalidate"
    } else {
        "/api/v1/prefetch"
    };
    let client = http(READ_TIMEOUT)?;
    let with_token = |req: reqwest::RequestBuilder| match token {
        Some(t) => req.bearer_auth(t),
        None => req,
    };
    let resp = with_token(client.post(format!("{base}{path}")))
        .json(&serde_json::json!({ "urls": urls }))
        .send()
        .await
        .map_err(|e| ClientError::http(server, &e))?;
    if !resp.status().is_success() {
        return Err(server_error(resp).await);
    }
    let started: serde_json::Value = resp
        .json()
        .await
        .map_err(|e| ClientError::http(server, &e))?;
    let status_url = started["status_url"]
        .as_str()
        .ok_or("the server's answer has no status_url")?
        .to_owned();
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(urls.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{pos}/{len} {wide_bar} {elapsed} {msg}")
                .expect("valid template"),
        );
        bar
    });
    let mut reported = Vec::<bool>::new();
    let status = loop {
        let resp = with_token(client.get(format!("{base}{status_url}")))
            .send()
            .await
            .map_err(|e| ClientError::http(server, &e))?;
        if !resp.status().is_success() {
            return Err(server_error(resp).await);
        }
        let status: serde_json::Value = resp
            .json()
            .await
            .map_err(|e| ClientError::http(server, &e))?;
        let items = status["items"].as_array().cloned().unwrap_or_default();
        reported.resize(items.len(), false);
        for (item, seen) in items.iter().zip(reported.iter_mut()) {
            let state = item["state"].as_str().unwrap_or_default();
            if *seen || matches!(state, "queued" | "fetching") {
                continue;
            }
            *seen = true;
            let line = item_line(item);
            match &bar {
                Some(bar) => {
                    bar.inc(1);
                    bar.set_message(item["url"].as_str().unwrap_or_default().to_owned());
                    if matches!(state, "failed" | "drift") {
                        bar.println(line);
                    }
                }
                None => println!("{line}"),
            }
        }
        let total = status["total"].as_u64().unwrap_or_default();
        let finished = status["done"].as_u64().unwrap_or_default()
            + status["failed"].as_u64().unwrap_or_default();
        if finished >= total {
            break status;
        }
        tokio::time::sleep(PREFETCH_POLL).await;
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let items = status["items"].as_array().cloned().unwrap_or_default();
    // A job the server has summarized lists only some items; its counts cover all of them.
    let count = |state: &str| match status["counts"][state].as_u64() {
        Some(n) => n as usize,
        None => items.iter().filter(|i| i["state"] == state).count(),
    };
    let total = status["total"].as_u64().map_or(items.len(), |n| n as usize);
    let (failed, drift) = (count("failed"), count("drift"));
    let mut summary = format!("{} cached", count("cached"));
    if revalidate {
        summary.push_str(&format!(
            ", {} unchanged, {drift} drifted",
            count("unchanged")
        ));
    }
    summary.push_str(&format!(", {failed} failed"));
    eprintln!("{summary}");
    if failed + drift == 0 {
        return Ok(());
    }
    for item in items
        .iter()
        .filter(|i| i["state"] == "failed" || i["state"] == "drift")
    {
        eprintln!("  {}", item_line(item));
    }
    Err(ClientError::Failed(match (failed, drift) {
        (0, d) => format!("{d} of {total} urls drifted upstream"),
        (f, 0) => format!("{f} of {total} urls failed"),
        (f, d) => format!("{f} of {total} urls failed, {d} drifted upstream"),
    }))
}

/// One line about a finished job item.
fn item_line(item: &serde_json::Value) -> String {
    let url = item["url"].as_str().unwrap_or_default();
    let sha = |v: &serde_json::Value| v["sha256"].as_str().unwrap_or("?").to_owned();
    match item["state"].as_str().unwrap_or_default() {
        "failed" => format!(
            "failed     {url}: {}",
            item["error"].as_str().unwrap_or("unknown error")
        ),
        "drift" => format!(
            "drift      {url}: bound sha256 {}, upstream now sends sha256 {} (still serving the bound bytes)",
            sha(item),
            sha(&item["drift"])
        ),
        state => format!(
            "{state:<10} {url}  {} bytes  sha256 {}",
            item["size"].as_u64().unwrap_or_default(),
            sha(item)
        ),
    }
}
