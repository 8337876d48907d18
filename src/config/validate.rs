//! The rules a type cannot express, checked after loading and after CLI flags.

use std::fmt;
use std::net::SocketAddr;

use super::{Backend, Config, ConfigError, ConnectMode, SCHEMES, SCOPES};

impl Config {
    /// Checks the rules a type cannot express; the first broken one is the error.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let (server, cache, upstream) = (&self.server, &self.cache, &self.upstream);
        check(
            server.listen.parse::<SocketAddr>().is_ok(),
            "server.listen",
            &server.listen,
            "expected an ip:port address such as 127.0.0.1:8080",
        )?;
        check_http_url("server.public_url", &server.public_url)?;
        check(
            self.storage.backend == Backend::Fs || !self.storage.bucket.is_empty(),
            "storage.bucket",
            &self.storage.bucket,
            "required when storage.backend is s3 or obs",
        )?;
        check(
            self.storage.backend != Backend::Obs || !self.storage.endpoint.is_empty(),
            "storage.endpoint",
            &self.storage.endpoint,
            "required when storage.backend is obs (e.g. https://obs.cn-north-4.myhuaweicloud.com)",
        )?;
        check_http_url("storage.endpoint", &self.storage.endpoint)?;
        let high = cache.high_watermark;
        check(
            high > 0.0 && high <= 1.0,
            "cache.high_watermark",
            high,
            "must be above 0 and at most 1",
        )?;
        check(
            cache.low_watermark > 0.0 && cache.low_watermark < high,
            "cache.low_watermark",
            cache.low_watermark,
            format!("must be above 0 and below cache.high_watermark ({high})"),
        )?;
        check(
            cache.memory_entries > 0,
            "cache.memory_entries",
            cache.memory_entries,
            "must be above 0",
        )?;
        for glob in &cache.volatile {
            check(
                glob.starts_with(['/', '*']),
                "cache.volatile",
                glob,
                "expected a glob of URL paths starting with / or *, such as \"*/repodata/repomd.xml*\"",
            )?;
        }
        check(
            !upstream.allowed_schemes.is_empty(),
            "upstream.allowed_schemes",
            &upstream.allowed_schemes,
            "must not be empty",
        )?;
        for scheme in &upstream.allowed_schemes {
            check(
                SCHEMES.contains(&scheme.as_str()),
                "upstream.allowed_schemes",
                scheme,
                "expected http, https or ftp",
            )?;
        }
        for ext in &upstream.deny_extensions {
            check(
                !ext.is_empty() && !ext.starts_with('.') && *ext == ext.to_lowercase(),
                "upstream.deny_extensions",
                ext,
                "expected a lowercase extension without the leading dot, such as \"mp3\"",
            )?;
        }
        for (i, mirror) in upstream.mirrors.iter().enumerate() {
            let key = format!("upstream.mirrors[{i}]");
            check_absolute_url(&format!("{key}.prefix"), &mirror.prefix)?;
            for alternate in &mirror.alternates {
                check_absolute_url(&format!("{key}.alternates"), alternate)?;
            }
        }
        for (i, token) in self.auth.tokens.iter().enumerate() {
            let key = format!("auth.tokens[{i}]");
            let first = self.auth.tokens.iter().position(|t| t.name == token.name);
            check(
                !token.name.is_empty() && first == Some(i),
                &format!("{key}.name"),
                &token.name,
                "token names must be non-empty and unique",
            )?;
            check(
                token.sha256.len() == 64
                    && token
                        .sha256
                        .bytes()
                        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
                &format!("{key}.sha256"),
                &token.sha256,
                "expected 64 hex digits (the sha256 of the token, see `upcache token new`)",
            )?;
            for scope in &token.scopes {
                check(
                    SCOPES.contains(&scope.as_str()),
                    &format!("{key}.scopes"),
                    scope,
                    "expected upload or admin",
                )?;
            }
        }
        self.validate_proxy()?;
        check_http_url("alerts.webhook_url", &self.alerts.webhook_url)?;
        let level = &self.log.level;
        // EnvFilter takes a lone word as a target name, which would hide a typo like "warning".
        let level_ok = match level.contains([',', '=']) {
            true => tracing_subscriber::EnvFilter::try_new(level).is_ok(),
            false => level.parse::<tracing::level_filters::LevelFilter>().is_ok(),
        };
        check(
            level_ok,
            "log.level",
            level,
            "expected trace, debug, info, warn, error, off or directives like \"info,upcache=debug\"",
        )?;
        Ok(())
    }

    /// `[proxy]`: the ports and, for interception, the CA files (whose contents and mode are
    /// checked when the server starts).
    fn validate_proxy(&self) -> Result<(), ConfigError> {
        let proxy = &self.proxy;
        check(
            !proxy.connect_ports.is_empty() && !proxy.connect_ports.contains(&0),
            "proxy.connect_ports",
            &proxy.connect_ports,
            "expected a non-empty list of ports 1-65535, such as [443]",
        )?;
        for host in &proxy.intercept_hosts {
            check(
                !host.trim_start_matches('.').is_empty() && !host.contains(['/', ':', ' ']),
                "proxy.intercept_hosts",
                host,
                "expected host names such as \"files.example.org\" or \".example.org\"",
            )?;
        }
        if proxy.connect == ConnectMode::Intercept {
            let advice = "required when proxy.connect is \"intercept\" (`upcache ca new --out DIR` makes one)";
            check(
                !proxy.ca_cert.as_os_str().is_empty(),
                "proxy.ca_cert",
                &proxy.ca_cert,
                advice,
            )?;
            check(
                !proxy.ca_key.as_os_str().is_empty(),
                "proxy.ca_key",
                &proxy.ca_key,
                advice,
            )?;
        }
        Ok(())
    }
}

/// `Err(Invalid)` naming `key` and `value` unless `ok`.
fn check(
    ok: bool,
    key: &str,
    value: impl fmt::Debug,
    reason: impl fmt::Display,
) -> Result<(), ConfigError> {
    if ok {
        return Ok(());
    }
    Err(ConfigError::Invalid {
        key: key.into(),
        value: format!("{value:?}"),
        reason: reason.to_string(),
    })
}

/// Empty (meaning "not set") or an absolute http(s) URL.
fn check_http_url(key: &str, value: &str) -> Result<(), ConfigError> {
    let ok = value.is_empty()
        || ::url::Url::parse(value)
            .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host());
    check(ok, key, value, "expected empty or an absolute http(s) url")
}

/// An absolute URL with a host, such as `https://ftp.gnu.org/gnu/`.
fn check_absolute_url(key: &str, value: &str) -> Result<(), ConfigError> {
    let ok = ::url::Url::parse(value).is_ok_and(|u| u.has_host());
    check(ok, key, value, "expected an absolute url")
}
