//! Client commands that talk to a running server over HTTP: `upload` and `audit export`.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Duration;

use futures::StreamExt;

fn http() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(10))
        // A stalled server must not hang a build script forever.
        .read_timeout(Duration::from_secs(300))
        .build()
        .map_err(|e| e.to_string())
}

/// The server's JSON error message, or the body as text.
async fn failure(resp: reqwest::Response) -> String {
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    let msg = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_owned))
        .unwrap_or(body);
    format!("{status}: {msg}")
}

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// `upcache upload FILE --url URL [--md5 HEX]`: stream the file, print the links.
pub async fn upload(
    server: &str,
    token: Option<&str>,
    file: &Path,
    url: Option<&str>,
    md5: Option<&str>,
) -> Result<(), String> {
    let f = tokio::fs::File::open(file)
        .await
        .map_err(|e| format!("{}: {e}", file.display()))?;
    let len = f
        .metadata()
        .await
        .map_err(|e| format!("{}: {e}", file.display()))?
        .len();
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut query = vec![format!("filename={}", enc(&name))];
    if let Some(u) = url {
        query.push(format!("url={}", enc(u)));
    }
    if let Some(m) = md5 {
        query.push(format!("md5={}", enc(m)));
    }
    let endpoint = format!(
        "{}/api/v1/upload?{}",
        server.trim_end_matches('/'),
        query.join("&")
    );
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(len);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bytes}/{total_bytes} {wide_bar} {bytes_per_sec} {eta}",
            )
            .expect("valid template"),
        );
        bar
    });
    let progress = bar.clone();
    let stream = tokio_util::io::ReaderStream::with_capacity(f, 256 * 1024).inspect(move |chunk| {
        if let (Some(bar), Ok(c)) = (&progress, chunk) {
            bar.inc(c.len() as u64);
        }
    });
    let mut req = http()?
        .put(&endpoint)
        .header(reqwest::header::CONTENT_LENGTH, len)
        .body(reqwest::Body::wrap_stream(stream));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| format!("cannot upload to {server}: {e}"))?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if !resp.status().is_success() {
        return Err(failure(resp).await);
    }
    let created = resp.status() == reqwest::StatusCode::CREATED;
    let v: serde_json::Value = resp.json().await.map_err(|e| e.to_string())?;
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
    format: &str,
) -> Result<(), String> {
    let mut endpoint = format!(
        "{}/api/v1/audit?format={}",
        server.trim_end_matches('/'),
        enc(format)
    );
    if let Some(s) = since {
        endpoint.push_str(&format!("&since={}", enc(s)));
    }
    let mut req = http()?.get(&endpoint);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| format!("cannot reach {server}: {e}"))?;
    if !resp.status().is_success() {
        return Err(failure(resp).await);
    }
    let mut out = std::io::stdout().lock();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| format!("the export broke off: {e}"))?;
        out.write_all(&chunk).map_err(|e| e.to_string())?;
    }
    out.flush().map_err(|e| e.to_string())
}
