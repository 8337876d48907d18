//! `upcache audit export`: the journal export streamed to stdout.

use super::*;

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
