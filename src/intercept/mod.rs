//! HTTPS interception (`proxy.connect = "intercept"`, SPEC 9): the CA, the hosts it applies
//! to, and the leaf certificates it mints. No HTTP here: `http::intercept` serves the
//! decrypted connections.

pub mod ca;
pub mod leaf;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::rustls::RootCertStore;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::client::danger::ServerCertVerifier;
use tokio_rustls::rustls::pki_types::{ServerName, UnixTime};

use crate::config::ProxyConfig;

/// Why interception cannot be set up, or a leaf cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum InterceptError {
    /// The CA key is readable by group or others.
    #[error(
        "proxy.ca_key {} has mode {mode:04o}; it must be 0600 or stricter (chmod 600 {})",
        path.display(), path.display()
    )]
    KeyMode { path: PathBuf, mode: u32 },
    /// A configured file is missing, unreadable or not what it should be.
    #[error("cannot use {key} {}: {reason}", path.display())]
    File {
        key: &'static str,
        path: PathBuf,
        reason: String,
    },
    /// The key does not belong to the certificate, or the certificate cannot sign leaves.
    #[error(
        "proxy.ca_key does not match proxy.ca_cert {}, or that certificate is not a CA: a \
         certificate it signs does not verify ({reason})",
        cert.display()
    )]
    Mismatch { cert: PathBuf, reason: String },
    /// `upcache ca new` would overwrite a file.
    #[error("{} exists; refusing to overwrite it", .0.display())]
    Exists(PathBuf),
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot make a certificate: {0}")]
    Mint(#[source] rcgen::Error),
    /// A CONNECT host no certificate can name.
    #[error("cannot make a certificate for {host:?}: not a DNS name or an IP address")]
    Host { host: String },
    #[error("cannot set up TLS: {0}")]
    Tls(#[source] tokio_rustls::rustls::Error),
}

/// The interception authority: the CA, which hosts are intercepted, and the leaves minted.
pub struct Authority {
    ca: ca::Ca,
    /// `proxy.intercept_hosts`, lowercase; empty: every host.
    hosts: Vec<String>,
    leaves: leaf::Leaves,
}

impl Authority {
    /// From `[proxy]`, when `connect = "intercept"`; `None` otherwise.
    pub fn from_config(cfg: &ProxyConfig) -> Result<Option<Arc<Authority>>, InterceptError> {
        if cfg.connect != crate::config::ConnectMode::Intercept {
            return Ok(None);
        }
        let hosts = cfg.intercept_hosts.clone();
        Authority::new(&cfg.ca_cert, &cfg.ca_key, hosts).map(|a| Some(Arc::new(a)))
    }

    /// Load the CA and check that it can issue leaves that verify against its certificate
    /// (a key of another CA, or a certificate that is not a CA, is found at start-up rather
    /// than by every client's failing handshake).
    pub fn new(cert: &Path, key: &Path, hosts: Vec<String>) -> Result<Authority, InterceptError> {
        let ca = ca::Ca::load(cert, key)?;
        let mismatch = |reason: String| InterceptError::Mismatch {
            cert: cert.to_owned(),
            reason,
        };
        let probe = "upcache-self-check.invalid";
        let (leaf, _) = leaf::mint(&ca, probe)?;
        let mut roots = RootCertStore::empty();
        roots
            .add(ca.cert.clone())
            .map_err(|e| mismatch(e.to_string()))?;
        let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| mismatch(e.to_string()))?;
        let name = ServerName::try_from(probe).expect("a valid DNS name");
        verifier
            .verify_server_cert(&leaf, &[], &name, &[], UnixTime::now())
            .map_err(|e| mismatch(e.to_string()))?;
        Ok(Authority {
            ca,
            hosts: hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
            leaves: leaf::Leaves::new(leaf::MAX_LEAVES),
        })
    }

    /// Whether CONNECTs to `host` (lowercase, IPv6 without brackets) are intercepted; other
    /// hosts are tunneled blind.
    pub fn intercepts(&self, host: &str) -> bool {
        self.hosts.is_empty()
            || self
                .hosts
                .iter()
                .any(|pattern| crate::upstream::host_matches(pattern, host))
    }

    /// The TLS server configuration presenting a leaf for `host`.
    pub fn server_config(&self, host: &str) -> Result<Arc<ServerConfig>, InterceptError> {
        self.leaves.get(&self.ca, host)
    }

    /// Leaves currently kept in memory.
    pub fn leaves_kept(&self) -> usize {
        self.leaves.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authority(hosts: &[&str]) -> (tempfile::TempDir, Authority) {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = ca::create(dir.path()).unwrap();
        let hosts = hosts.iter().map(|h| h.to_string()).collect();
        let authority = Authority::new(&cert, &key, hosts).unwrap();
        (dir, authority)
    }

    #[test]
    fn intercept_hosts_select_exact_hosts_and_domains() {
        let (_dir, all) = authority(&[]);
        assert!(all.intercepts("anything.example"));
        let (_dir, some) = authority(&["Files.Example.org", ".kernel.org"]);
        assert!(some.intercepts("files.example.org"));
        assert!(!some.intercepts("example.org"));
        assert!(some.intercepts("kernel.org"));
        assert!(some.intercepts("cdn.kernel.org"));
        assert!(!some.intercepts("notkernel.org"));
        assert!(!some.intercepts("127.0.0.1"));
    }

    #[test]
    fn leaves_are_minted_once_per_host_and_bounded() {
        let (_dir, a) = authority(&[]);
        let first = a.server_config("files.example.org").unwrap();
        let again = a.server_config("files.example.org").unwrap();
        assert!(Arc::ptr_eq(&first, &again), "the leaf is kept");
        let ip = a.server_config("127.0.0.1").unwrap();
        assert!(!Arc::ptr_eq(&first, &ip));
        assert_eq!(a.leaves_kept(), 2);
        let small = leaf::Leaves::new(2);
        for host in ["a.example", "b.example", "c.example"] {
            small.get(&a.ca, host).unwrap();
        }
        assert_eq!(small.len(), 2, "the cache is bounded");
        assert!(a.server_config("bad host").is_err());
    }
}
