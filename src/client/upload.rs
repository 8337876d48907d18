//! `upcache upload`: a local file streamed to `PUT /api/v1/upload`.

use super::*;

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
