//! `upcache prefetch`: a prefetch or revalidation job started and followed to its end.

use super::*;

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

/// A list of URLs, one per line; blank lines and `#` comments are skipped. `-` is stdin.
pub fn read_url_list(path: &Path) -> Result<Vec<String>, String> {
    let text = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).map_err(|e| format!("standard input: {e}"))?
    } else {
        std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?
    };
    let urls: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    if urls.is_empty() {
        return Err(format!("{}: no urls", path.display()));
    }
    Ok(urls)
}
