//! What may be fetched: the URL and content policy of `upstream.*` (schemes, hosts, private
//! destinations, extensions, content types, sizes), checked before the cache is consulted, on
//! every redirect hop, and on what upstream says about the object.

use crate::config::UpstreamConfig;
use crate::url::UpstreamUrl;

use super::{Head, UpstreamError, ssrf};

/// What may be fetched: schemes, hosts, destinations, extensions, content types, sizes.
#[derive(Debug, Clone)]
pub struct Policy {
    allowed_schemes: Vec<String>,
    allow_hosts: Vec<String>,
    deny_extensions: Vec<String>,
    deny_content_types: Vec<String>,
    allow_private: bool,
    pub max_object_size: u64,
}

impl Policy {
    pub fn new(cfg: &UpstreamConfig) -> Policy {
        let lower = |v: &Vec<String>| v.iter().map(|s| s.to_ascii_lowercase()).collect();
        Policy {
            allowed_schemes: lower(&cfg.allowed_schemes),
            allow_hosts: lower(&cfg.allow_hosts),
            deny_extensions: cfg
                .deny_extensions
                .iter()
                .map(|e| e.trim_start_matches('.').to_ascii_lowercase())
                .collect(),
            deny_content_types: lower(&cfg.deny_content_types),
            allow_private: cfg.allow_private,
            max_object_size: cfg.max_object_size,
        }
    }

    /// Checks on a requested URL, before the cache is even consulted.
    pub fn check_url(&self, url: &UpstreamUrl) -> Result<(), UpstreamError> {
        self.check_destination(url.as_url())?;
        if let Some(ext) = url.extension_in(&self.deny_extensions) {
            return Err(UpstreamError::Denied {
                what: format!("extension .{ext}"),
            });
        }
        Ok(())
    }

    /// Checks on every URL we are about to connect to, including redirect hops. Hosts given
    /// by name are checked again on their resolved addresses by [`ssrf::GuardedResolver`].
    pub fn check_destination(&self, url: &::url::Url) -> Result<(), UpstreamError> {
        let scheme = url.scheme();
        if !self.allowed_schemes.iter().any(|s| s == scheme) {
            return Err(UpstreamError::UnsupportedScheme {
                scheme: scheme.to_owned(),
            });
        }
        let host = url.host_str().unwrap_or_default();
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if !self.allow_hosts.is_empty() && !self.allow_hosts.iter().any(|h| host_matches(h, bare)) {
            return Err(UpstreamError::ForbiddenDestination {
                host: bare.to_owned(),
                reason: "the host is not in upstream.allow_hosts".into(),
            });
        }
        if !self.allow_private {
            let ip = match url.host() {
                Some(::url::Host::Ipv4(ip)) => Some(std::net::IpAddr::V4(ip)),
                Some(::url::Host::Ipv6(ip)) => Some(std::net::IpAddr::V6(ip)),
                _ => None,
            };
            if let Some(ip) = ip.filter(|ip| ssrf::is_forbidden(*ip)) {
                return Err(UpstreamError::ForbiddenDestination {
                    host: bare.to_owned(),
                    reason: format!("{ip} is a private or internal address"),
                });
            }
        }
        Ok(())
    }

    /// Checks on what upstream says about the object.
    pub fn check_head(&self, url: &str, head: &Head) -> Result<(), UpstreamError> {
        if let Some(ct) = &head.content_type {
            let ct = ct.to_ascii_lowercase();
            if self
                .deny_content_types
                .iter()
                .any(|d| ct.starts_with(d.as_str()))
            {
                return Err(UpstreamError::Denied {
                    what: format!("content type {ct}"),
                });
            }
        }
        match head.content_length {
            Some(n) => self.check_size(url, n),
            None => Ok(()),
        }
    }

    pub fn check_size(&self, url: &str, size: u64) -> Result<(), UpstreamError> {
        if self.max_object_size > 0 && size > self.max_object_size {
            return Err(UpstreamError::TooLarge {
                url: crate::url::redact_str(url),
                size,
                max: self.max_object_size,
            });
        }
        Ok(())
    }
}

/// `allow_hosts` entry semantics: exact host, or with a leading "." the domain and its subdomains.
pub(crate) fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix('.') {
        Some(domain) => {
            host == domain || host.strip_suffix(domain).is_some_and(|p| p.ends_with('.'))
        }
        None => host == pattern,
    }
}
