//! `upcache fetch`: a download through the server, checked against the sha256 it announces.

use super::*;

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
