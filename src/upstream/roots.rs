//! `upstream.ca_file`: extra PEM roots trusted for upstream TLS, on top of the system's (a
//! corporate CA, a test origin's CA). Verification itself is never relaxed.

use std::path::{Path, PathBuf};

/// Why the upstream client cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Client(#[from] reqwest::Error),
    /// `upstream.ca_file` is unreadable or holds no PEM certificate.
    #[error("cannot use upstream.ca_file {}: {reason}", path.display())]
    CaFile { path: PathBuf, reason: String },
}

/// The certificates of `path`; none when it is empty (not configured).
pub fn load(path: &Path) -> Result<Vec<reqwest::Certificate>, ClientError> {
    if path.as_os_str().is_empty() {
        return Ok(Vec::new());
    }
    let fail = |reason: String| ClientError::CaFile {
        path: path.to_owned(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| fail(e.to_string()))?;
    if certs.is_empty() {
        return Err(fail("no PEM certificate in it".into()));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_path_means_none_and_bad_files_are_named() {
        assert!(load(Path::new("")).unwrap().is_empty());
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let err = load(&missing).unwrap_err().to_string();
        assert!(
            err.contains("upstream.ca_file") && err.contains("missing.pem"),
            "{err}"
        );
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let err = load(&junk).unwrap_err().to_string();
        assert!(err.contains("no PEM certificate"), "{err}");
    }
}
