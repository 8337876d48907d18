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
) -> Result<(), String> {
    let base = server.trim_end_matches('/');
    let path = if revalidate {
        "/api/v1/revalidate"
    } else {
        "/api/v1/prefetch"
    };
    let client = http()?;
    let with_token = |req: reqwest::RequestBuilder| match token {
        Some(t) => req.bearer_auth(t),
        None => req,
    };
    let resp = with_token(client.post(format!("{base}{path}")))
        .json(&serde_json::json!({ "urls": urls }))
        .send()
        .await
        .map_err(|e| format!("cannot reach {server}: {e}"))?;
    if !resp.status().is_success() {
        return Err(failure(resp).await);
    }
    let started: serde_json::Value = resp.json().await.map_err(|e| e.to_string())?;
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
            .map_err(|e| format!("cannot reach {server}: {e}"))?;
        if !resp.status().is_success() {
            return Err(failure(resp).await);
        }
        let status: serde_json::Value = resp.json().await.map_err(|e| e.to_string())?;
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
    Err(match (failed, drift) {
        (0, d) => format!("{d} of {total} urls drifted upstream"),
        (f, 0) => format!("{f} of {total} urls failed"),
        (f, d) => format!("{f} of {total} urls failed, {d} drifted upstream"),
    })
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
