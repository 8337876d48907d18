//! Configuration: defaults, the TOML file, `UPCACHE__SECTION__KEY` environment overrides, validation.
//!
//! Layering is defaults -> file -> environment -> CLI flags. Every struct denies unknown
//! fields so that a typo in a key is an error rather than a silently ignored setting.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod env;
mod human;

use env::EnvSource;
use human::{duration_serde, size_serde};
pub use human::{parse_duration, parse_size};

/// Environment variables `UPCACHE__<SECTION>__<KEY>` override the file; compared lowercased.
const ENV_PREFIX: &str = "upcache__";
/// Schemes the upstream clients can fetch.
const SCHEMES: [&str; 3] = ["http", "https", "ftp"];
/// Token scopes; `admin` implies `upload`.
const SCOPES: [&str; 2] = ["upload", "admin"];
/// Stands for the crate version in `upstream.user_agent`.
const VERSION_PLACEHOLDER: &str = "<version>";
/// Shown instead of a secret in [`Config::to_toml_string`].
const REDACTED: &str = "<redacted>";

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read (missing, unreadable).
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The config file is not valid TOML.
    #[error("cannot parse config file {}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    /// A key no setting has, usually a typo; `key` is the full dotted path, `suggestion`
    /// the existing key closest to it.
    #[error("unknown key \"{key}\" {origin}{}", did_you_mean(.key, .suggestion.as_deref(), .origin))]
    UnknownKey {
        key: String,
        origin: Origin,
        suggestion: Option<String>,
    },
    /// A value of the wrong type or format, such as `retries = "many"` or `presign_ttl = "5x"`.
    #[error("invalid value for \"{key}\" {origin}: {message}")]
    Value {
        key: String,
        origin: Origin,
        message: String,
    },
    /// An `UPCACHE__...` variable whose name is not `UPCACHE__<SECTION>__<KEY>` (`UPCACHE__`,
    /// `UPCACHE__SERVER__`, `UPCACHE__SERVER____LISTEN`, characters other than letters,
    /// digits and `_`).
    #[error(
        "environment variable {name} names no setting: expected UPCACHE__<SECTION>__<KEY>, such as UPCACHE__SERVER__LISTEN"
    )]
    BadVariable { name: String },
    /// A well-formed value that breaks a rule, such as `low_watermark` above `high_watermark`.
    #[error("invalid {key} = {value}: {reason}")]
    Invalid {
        key: String,
        /// The value as it would be written in TOML.
        value: String,
        reason: String,
    },
}

/// Where a setting came from, so that an error points at the line or variable to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The config file.
    File(PathBuf),
    /// An environment variable, by name.
    Env(String),
    /// Neither; only the built-in defaults were involved.
    Defaults,
}

/// `; did you mean "server.listen"?` after an unknown `key`; when the key came from a
/// variable, also the variable that would set the suggested key.
fn did_you_mean(key: &str, suggestion: Option<&str>, origin: &Origin) -> String {
    let Some(suggestion) = suggestion else {
        return String::new();
    };
    let as_var = |key: &str| {
        format!(
            "{}{}",
            ENV_PREFIX.to_uppercase(),
            key.replace('.', "__").to_uppercase()
        )
    };
    // UPCACHE__LOGGING__LEVEL: the key is "logging", the rest of the name stays.
    let var = match origin {
        Origin::Env(name) if !suggestion.contains('[') => name
            .to_uppercase()
            .strip_prefix(&as_var(key))
            .map(|rest| format!(" ({}{rest})", as_var(suggestion))),
        _ => None,
    };
    format!(
        "; did you mean \"{suggestion}\"{}?",
        var.unwrap_or_default()
    )
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(path) => write!(f, "in {}", path.display()),
            Origin::Env(name) => write!(f, "(from {name})"),
            Origin::Defaults => f.write_str("in the defaults"),
        }
    }
}

/// The whole validated configuration the rest of the code sees.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[server]`: the HTTP listener.
    pub server: ServerConfig,
    /// `[storage]`: where blobs are kept.
    pub storage: StorageConfig,
    /// `[cache]`: eviction and in-memory caching.
    pub cache: CacheConfig,
    /// `[upstream]`: fetching from origin servers.
    pub upstream: UpstreamConfig,
    /// `[limits]`: rate and size limits.
    pub limits: LimitsConfig,
    /// `[proxy]`: forward-proxy behaviour.
    pub proxy: ProxyConfig,
    /// `[auth]`: who may upload or administer.
    pub auth: AuthConfig,
    /// `[alerts]`: webhook alerts.
    pub alerts: AlertsConfig,
    /// `[log]`: logging.
    pub log: LogConfig,
}

/// `[server]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on, `ip:port`.
    pub listen: String,
    /// Base URL used in links returned to clients; empty means `http://<listen>`.
    pub public_url: String,
    /// CIDRs whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Name recorded in audit events and `X-Served-By`, and shown on the status page; empty
    /// means the hostname.
    pub instance: String,
    /// `Cache-Control` sent on served artifacts.
    pub cache_control: String,
}

/// Which storage backend holds the durable copy of blobs.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Blobs live in `data_dir` only.
    Fs,
    /// An S3-compatible object store.
    S3,
    /// Huawei Cloud OBS.
    Obs,
}

/// How hits are served when the durable tier is an object store.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ServeMode {
    /// Stream the bytes through upcache.
    Proxy,
    /// 302 to a presigned object-store URL.
    Redirect,
}

/// `[storage]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Index, local blobs (the L1 tier) and temp files.
    pub data_dir: PathBuf,
    /// Durable tier: the local disk, or an object store with `data_dir` as L1 cache.
    pub backend: Backend,
    /// s3/obs bucket; required for those backends.
    pub bucket: String,
    /// s3/obs endpoint URL; empty means the provider's default.
    pub endpoint: String,
    /// s3/obs region.
    pub region: String,
    /// s3/obs access key; empty means `AWS_ACCESS_KEY_ID`.
    pub access_key_id: String,
    /// s3/obs secret key; empty means `AWS_SECRET_ACCESS_KEY`. Redacted when printed.
    pub secret_access_key: String,
    /// Key prefix inside the bucket.
    pub prefix: String,
    /// How hits are served with s3/obs.
    pub serve: ServeMode,
    /// Lifetime of presigned URLs for `serve = "redirect"`.
    #[serde(with = "duration_serde")]
    pub presign_ttl: Duration,
}

/// `[cache]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Bytes; 0 means bounded by the disk watermarks only.
    #[serde(with = "size_serde")]
    pub max_size: u64,
    /// Sweep when the cache volume (or `max_size`) is fuller than this fraction.
    pub high_watermark: f64,
    /// ... down to this fraction.
    pub low_watermark: f64,
    /// How often the sweeper runs.
    #[serde(with = "duration_serde")]
    pub sweep_interval: Duration,
    /// Zero means never evict by age.
    #[serde(with = "duration_serde")]
    pub max_unused: Duration,
    /// s3/obs: delete remote blobs not read for this long; zero means never.
    #[serde(with = "duration_serde")]
    pub remote_max_unused: Duration,
    /// Entries of the in-memory presence/metadata cache in front of the index.
    pub memory_entries: usize,
    /// s3/obs: how long a remembered "not cached" answer is trusted.
    #[serde(with = "duration_serde")]
    pub index_refresh: Duration,
    /// How long an upstream 404/410 is remembered.
    #[serde(with = "duration_serde")]
    pub negative_ttl: Duration,
    /// Globs (`*` any characters, `/` included; `?` one) of URL paths that are repository
    /// metadata: revalidated with upstream once `volatile_ttl` has passed, never immutable.
    pub volatile: Vec<String>,
    /// How long a volatile URL is served from the cache after its last validation.
    #[serde(with = "duration_serde")]
    pub volatile_ttl: Duration,
}

/// `cache.volatile` by default: dnf/yum and apt repository metadata.
pub const DEFAULT_VOLATILE: [&str; 5] = [
    "*/repodata/repomd.xml*",
    "*/metalink*",
    "*/mirrorlist*",
    "*/dists/*/Release*",
    "*/dists/*/InRelease",
];

/// What a miss does.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MissMode {
    /// Stream to the client while storing.
    Stream,
    /// 302 to upstream and fill in the background.
    Redirect,
}

/// `[upstream]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// What a miss does.
    pub miss: MissMode,
    /// Time allowed to connect to upstream.
    #[serde(with = "duration_serde")]
    pub connect_timeout: Duration,
    /// Maximum silence while receiving.
    #[serde(with = "duration_serde")]
    pub read_timeout: Duration,
    /// Extra attempts after the first, on connect errors, timeouts, 5xx, truncated bodies.
    pub retries: u32,
    /// Wait before the first retry, doubled each attempt, with jitter.
    #[serde(with = "duration_serde")]
    pub retry_backoff: Duration,
    /// Allow upstream hosts resolving to loopback/private/link-local addresses.
    pub allow_private: bool,
    /// Schemes that may be fetched, lowercase; a non-empty subset of http, https, ftp.
    pub allowed_schemes: Vec<String>,
    /// Empty: any host; else only these hosts (and subdomains of entries starting with `.`).
    pub allow_hosts: Vec<String>,
    /// Refused file extensions, lowercase, without the leading dot.
    pub deny_extensions: Vec<String>,
    /// Refused upstream `Content-Type` prefixes.
    pub deny_content_types: Vec<String>,
    /// Largest object fetched from upstream, in bytes.
    #[serde(with = "size_serde")]
    pub max_object_size: u64,
    /// Raw `User-Agent` template; use [`Config::user_agent`] for the header value.
    pub user_agent: String,
    /// Extra PEM roots trusted for upstream TLS, besides the system's; empty: none.
    pub ca_file: PathBuf,
    /// Alternate sources tried, in order, when the primary fails.
    pub mirrors: Vec<MirrorConfig>,
}

/// `[[upstream.mirrors]]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MirrorConfig {
    /// Absolute URL prefix this entry applies to.
    pub prefix: String,
    /// Prefixes substituted for `prefix`, tried in order.
    pub alternates: Vec<String>,
}

/// `[limits]`; 0 means unlimited everywhere.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Requests per second per client IP (token bucket).
    pub per_client_rps: u32,
    /// Burst of the per-client token bucket.
    pub per_client_burst: u32,
    /// Simultaneous requests per client IP.
    pub per_client_concurrency: u32,
    /// Simultaneous upstream downloads, whole instance.
    pub upstream_concurrency: u32,
    /// Largest upload accepted, in bytes.
    #[serde(with = "size_serde")]
    pub max_upload_size: u64,
    /// CIDRs of clients without per-client limits (build hosts, a farm's NAT gateways).
    pub exempt: Vec<ipnet::IpNet>,
}

/// What to do with `CONNECT` requests.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ConnectMode {
    /// Refuse `CONNECT`.
    Deny,
    /// Blind relay to a port of `connect_ports`; nothing is cached.
    Tunnel,
    /// Terminate TLS with a leaf signed by `ca_cert` and serve the requests inside like the
    /// proxy form (cached); hosts outside `intercept_hosts` are tunneled.
    Intercept,
}

/// `[proxy]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// What to do with `CONNECT` requests.
    pub connect: ConnectMode,
    /// intercept: PEM CA certificate that clients trust (`upcache ca new`).
    pub ca_cert: PathBuf,
    /// intercept: its PEM private key; mode 0600 or stricter, else the server refuses to start.
    pub ca_key: PathBuf,
    /// intercept: empty = every host; else only these (".suffix" = the domain and its
    /// subdomains); CONNECTs to other hosts are tunneled, never cached.
    pub intercept_hosts: Vec<String>,
    /// Ports a CONNECT may reach (tunnel and intercept); others get 403.
    pub connect_ports: Vec<u16>,
}

/// `[auth]`
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Upload/admin tokens; none means uploads and admin are refused.
    pub tokens: Vec<TokenConfig>,
}

/// `[[auth.tokens]]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Unique, non-empty name, recorded in audit events.
    pub name: String,
    /// Hex sha256 of the token; the token itself is never stored.
    pub sha256: String,
    /// `upload` and/or `admin` (admin implies upload).
    pub scopes: Vec<String>,
}

/// `[alerts]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// URL POSTed a JSON alert; empty means no alerts.
    pub webhook_url: String,
    /// The same alert kind and key are not repeated more often than this.
    #[serde(with = "duration_serde")]
    pub min_interval: Duration,
}

/// Log output format.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A level or `tracing` EnvFilter directives, such as `info,upcache=debug`.
    pub level: String,
    /// Log line format.
    pub format: LogFormat,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            public_url: String::new(),
            trusted_proxies: Vec::new(),
            instance: String::new(),
            cache_control: "public, max-age=31536000, immutable".into(),
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            data_dir: "./upcache-data".into(),
            backend: Backend::Fs,
            bucket: String::new(),
            endpoint: String::new(),
            region: String::new(),
            access_key_id: String::new(),
            secret_access_key: String::new(),
            prefix: String::new(),
            serve: ServeMode::Proxy,
            presign_ttl: Duration::from_secs(15 * 60),
        }
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_size: 0,
            high_watermark: 0.80,
            low_watermark: 0.75,
            sweep_interval: Duration::from_secs(3600),
            max_unused: Duration::ZERO,
            remote_max_unused: Duration::ZERO,
            memory_entries: 100_000,
            index_refresh: Duration::from_secs(5 * 60),
            negative_ttl: Duration::from_secs(60),
            volatile: DEFAULT_VOLATILE.iter().map(|s| s.to_string()).collect(),
            volatile_ttl: Duration::from_secs(60),
        }
    }
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        let strings = |list: &[&str]| list.iter().map(|s| s.to_string()).collect();
        Self {
            miss: MissMode::Stream,
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
            retries: 3,
            retry_backoff: Duration::from_millis(500),
            allow_private: false,
            allowed_schemes: strings(&SCHEMES),
            allow_hosts: Vec::new(),
            deny_extensions: strings(&[
                "mp3", "mp4", "m4a", "avi", "mkv", "mov", "wmv", "flv", "webm", "flac", "wav",
                "ogg",
            ]),
            deny_content_types: strings(&["audio/", "video/"]),
            max_object_size: 20 << 30,
            user_agent: format!("upcache/{VERSION_PLACEHOLDER}"),
            ca_file: PathBuf::new(),
            mirrors: Vec::new(),
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            per_client_rps: 50,
            per_client_burst: 200,
            per_client_concurrency: 32,
            upstream_concurrency: 64,
            max_upload_size: 20 << 30,
            exempt: Vec::new(),
        }
    }
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            connect: ConnectMode::Deny,
            ca_cert: PathBuf::new(),
            ca_key: PathBuf::new(),
            intercept_hosts: Vec::new(),
            connect_ports: vec![443],
        }
    }
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            webhook_url: String::new(),
            min_interval: Duration::from_secs(5 * 60),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

impl Config {
    /// Loads defaults, then `file` (if given), then the process's `UPCACHE__*` variables,
    /// and validates the result.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        // Lossy rather than `std::env::vars()`, which panics on a non-UTF-8 variable.
        let env = std::env::vars_os().map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        });
        Self::load_from(file, env)
    }

    /// [`Config::load`] with the environment given as `(name, value)` pairs, for tests.
    /// Variables not starting with `UPCACHE__` are ignored.
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let text = match file {
            Some(path) => {
                Some(
                    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                        path: path.into(),
                        source,
                    })?,
                )
            }
            None => None,
        };
        Self::from_parts(text.as_deref().zip(file), env)
    }

    /// [`Config::load`] from the text of a config file (called `path` in messages) and the
    /// environment as `(name, value)` pairs. Pure: reads nothing.
    pub fn from_toml(
        toml: &str,
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        Self::from_parts(Some((toml, path)), env)
    }

    fn from_parts(
        toml: Option<(&str, &Path)>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let file = toml.map(|(_, path)| path);
        let env = EnvSource::new(env)?;
        let mut builder = config::Config::builder();
        if let Some((text, _)) = toml {
            builder = builder.add_source(config::File::from_str(text, config::FileFormat::Toml));
        }
        // The merged tree goes through JSON because the config crate's own deserializer is
        // lenient: it would round `retries = 1.5` to 2 and read `"yes"` as 1. Only the file
        // can fail here: the environment source never errors.
        let merged: serde_json::Value = builder
            .add_source(env.clone())
            .build()
            .and_then(|merged| merged.try_deserialize())
            .map_err(|e| ConfigError::Parse {
                path: file.map(Path::to_path_buf).unwrap_or_default(),
                message: e.to_string(),
            })?;
        // Missing keys come from `Default` through `#[serde(default)]` on every struct.
        let mut config: Config = serde_path_to_error::deserialize(&merged)
            .map_err(|e| env.describe(e, &merged, file))?;
        config.normalize();
        config.validate()?;
        Ok(config)
    }

    /// Lowercases what is case-insensitive and strips the leading dot users tend to write
    /// in extensions, so that the rest of the code compares plain strings.
    fn normalize(&mut self) {
        let upstream = &mut self.upstream;
        for ext in &mut upstream.deny_extensions {
            *ext = ext.trim().trim_start_matches('.').to_lowercase();
        }
        for scheme in &mut upstream.allowed_schemes {
            *scheme = scheme.to_lowercase();
        }
        for token in &mut self.auth.tokens {
            token.sha256 = token.sha256.to_lowercase();
        }
    }

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

    /// Base URL for links given to clients: `server.public_url` or `http://<listen>`,
    /// without a trailing slash.
    pub fn public_url(&self) -> String {
        match self.server.public_url.trim_end_matches('/') {
            "" => format!("http://{}", self.server.listen),
            url => url.to_string(),
        }
    }

    /// Name for audit events and `X-Served-By`: `server.instance`, else the hostname,
    /// else `upcache`.
    pub fn instance_name(&self) -> String {
        if !self.server.instance.is_empty() {
            return self.server.instance.clone();
        }
        hostname::get()
            .ok()
            .and_then(|name| name.into_string().ok())
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "upcache".into())
    }

    /// `upstream.user_agent` with `<version>` replaced by this build's version.
    pub fn user_agent(&self) -> String {
        self.upstream
            .user_agent
            .replace(VERSION_PLACEHOLDER, env!("CARGO_PKG_VERSION"))
    }

    /// The effective configuration as TOML, for `upcache config check`; secrets are redacted.
    /// Loading the output gives back this configuration.
    pub fn to_toml_string(&self) -> String {
        let mut shown = self.clone();
        if !shown.storage.secret_access_key.is_empty() {
            shown.storage.secret_access_key = REDACTED.into();
        }
        // Only a non-UTF-8 data_dir can fail here, and it cannot come from a file or variable.
        toml::to_string(&shown)
            .unwrap_or_else(|e| format!("# cannot show the configuration: {e}\n"))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Environment variables as `(name, value)`.
    type Env = [(&'static str, &'static str)];

    /// Loads `toml` (if any) from a temp file with the variables `env`; in error messages
    /// the file's path reads `FILE`.
    fn load(toml: Option<&str>, env: &Env) -> Result<Config, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("upcache.toml");
        if let Some(text) = toml {
            std::fs::write(&path, text).unwrap();
        }
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Config::load_from(toml.map(|_| path.as_path()), env)
            .map_err(|e| e.to_string().replace(&path.display().to_string(), "FILE"))
    }

    fn example_path() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml")
    }

    #[test]
    fn defaults_match_the_spec() {
        let c = load(None, &[]).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.server.listen, "127.0.0.1:8080");
        assert_eq!(c.storage.data_dir, Path::new("./upcache-data"));
        assert_eq!(c.storage.presign_ttl, Duration::from_secs(900));
        assert_eq!(
            (c.cache.high_watermark, c.cache.low_watermark),
            (0.80, 0.75)
        );
        assert_eq!(c.upstream.allowed_schemes, ["http", "https", "ftp"]);
        assert_eq!(c.upstream.deny_extensions.len(), 12);
        assert_eq!(c.upstream.max_object_size, 20 * 1024 * 1024 * 1024);
        assert_eq!(c.upstream.user_agent, "upcache/<version>");
        assert_eq!(
            c.user_agent(),
            format!("upcache/{}", env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(c.public_url(), "http://127.0.0.1:8080");
        assert!(!c.instance_name().is_empty());
        c.validate().unwrap();
    }

    #[test]
    fn file_overrides_defaults() {
        let c = load(
            Some(
                r#"
                [server]
                listen = "0.0.0.0:9000"
                public_url = "https://cache.example.org/"
                trusted_proxies = ["10.0.0.0/8"]
                instance = "007"
                [storage]
                backend = "s3"
                bucket = "sources"
                [cache]
                max_size = "512MiB"
                max_unused = 0
                sweep_interval = "1h 30m"
                [limits]
                max_upload_size = 1024
                [[upstream.mirrors]]
                prefix = "https://ftp.gnu.org/gnu/"
                alternates = ["https://ftpmirror.gnu.org/gnu/"]
                [[auth.tokens]]
                name = "ci"
                sha256 = "ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef0123456789"
                scopes = ["upload"]
                "#,
            ),
            &[],
        )
        .unwrap();
        assert_eq!(c.server.listen, "0.0.0.0:9000");
        assert_eq!(c.public_url(), "https://cache.example.org");
        assert_eq!(c.server.trusted_proxies, ["10.0.0.0/8".parse().unwrap()]);
        assert_eq!(c.instance_name(), "007");
        assert_eq!(c.storage.backend, Backend::S3);
        assert_eq!(c.cache.max_size, 512 << 20);
        assert_eq!(c.cache.max_unused, Duration::ZERO);
        assert_eq!(c.cache.sweep_interval, Duration::from_secs(5400));
        assert_eq!(c.limits.max_upload_size, 1024);
        assert_eq!(c.upstream.mirrors[0].alternates.len(), 1);
        assert_eq!(c.auth.tokens[0].sha256, "abcdef0123456789".repeat(4));
        // Untouched keys keep their defaults, in touched sections and others.
        assert_eq!(
            c.server.cache_control,
            ServerConfig::default().cache_control
        );
        assert_eq!(
            c.upstream,
            UpstreamConfig {
                mirrors: c.upstream.mirrors.clone(),
                ..Default::default()
            }
        );
    }

    #[test]
    fn env_overrides_every_kind_of_value() {
        let c = load(
            None,
            &[
                ("UPCACHE__SERVER__LISTEN", "0.0.0.0:8080"),
                (
                    "UPCACHE__SERVER__PUBLIC_URL",
                    "https://Cache.Example.org/Path",
                ),
                ("UPCACHE__SERVER__INSTANCE", "007"),
                ("UPCACHE__UPSTREAM__RETRIES", "5"),
                ("UPCACHE__CACHE__HIGH_WATERMARK", "0.9"),
                ("UPCACHE__UPSTREAM__ALLOW_PRIVATE", "true"),
                ("UPCACHE__UPSTREAM__ALLOWED_SCHEMES", "http, https"),
                ("UPCACHE__UPSTREAM__DENY_EXTENSIONS", ".MP3,ogg"),
                ("UPCACHE__UPSTREAM__ALLOW_HOSTS", ""),
                ("UPCACHE__UPSTREAM__CONNECT_TIMEOUT", "90s"),
                ("UPCACHE__UPSTREAM__MAX_OBJECT_SIZE", "1GiB"),
                ("UPCACHE__CACHE__MAX_SIZE", "1048576"),
                ("UPCACHE__STORAGE__SERVE", "redirect"),
                // Not ours: one underscore, or no prefix at all.
                ("UPCACHE_SERVER", "http://elsewhere:1"),
                ("UPCACHE_TOKEN", "secret"),
                ("UPCACHE_CONFIG", "/nonexistent.toml"),
                ("HOME", "/root"),
            ],
        )
        .unwrap();
        assert_eq!(c.server.listen, "0.0.0.0:8080");
        assert_eq!(c.public_url(), "https://Cache.Example.org/Path");
        assert_eq!(c.server.instance, "007");
        assert_eq!(c.upstream.retries, 5);
        assert_eq!(c.cache.high_watermark, 0.9);
        assert!(c.upstream.allow_private);
        assert_eq!(c.upstream.allowed_schemes, ["http", "https"]);
        assert_eq!(c.upstream.deny_extensions, ["mp3", "ogg"]);
        assert!(c.upstream.allow_hosts.is_empty());
        assert_eq!(c.upstream.connect_timeout, Duration::from_secs(90));
        assert_eq!(c.upstream.max_object_size, 1 << 30);
        assert_eq!(c.cache.max_size, 1 << 20);
        assert_eq!(c.storage.serve, ServeMode::Redirect);
    }

    #[test]
    fn proxy_interception_settings_load_from_file_and_env() {
        let c = load(
            Some(
                "[proxy]\nconnect = \"intercept\"\nca_cert = \"/etc/upcache/ca.pem\"\n\
                 ca_key = \"/etc/upcache/ca-key.pem\"\nintercept_hosts = [\".kernel.org\"]\n\
                 [upstream]\nca_file = \"/etc/pki/corp.pem\"",
            ),
            &[("UPCACHE__PROXY__CONNECT_PORTS", "443, 8443")],
        )
        .unwrap();
        assert_eq!(c.proxy.connect, ConnectMode::Intercept);
        assert_eq!(c.proxy.ca_cert, Path::new("/etc/upcache/ca.pem"));
        assert_eq!(c.proxy.ca_key, Path::new("/etc/upcache/ca-key.pem"));
        assert_eq!(c.proxy.intercept_hosts, [".kernel.org"]);
        assert_eq!(c.proxy.connect_ports, [443, 8443]);
        assert_eq!(c.upstream.ca_file, Path::new("/etc/pki/corp.pem"));
        assert_eq!(Config::default().proxy.connect_ports, [443]);
    }

    #[test]
    fn env_wins_over_file_and_replaces_lists() {
        let file = "[server]\nlisten = \"127.0.0.1:1\"\n[upstream]\nretries = 1\n\
                    allowed_schemes = [\"http\", \"https\", \"ftp\"]\n";
        let env = [
            ("UPCACHE__SERVER__LISTEN", "[::1]:2"),
            ("UPCACHE__UPSTREAM__ALLOWED_SCHEMES", "https"),
        ];
        let c = load(Some(file), &env).unwrap();
        assert_eq!(c.server.listen, "[::1]:2");
        assert_eq!(c.upstream.retries, 1);
        assert_eq!(c.upstream.allowed_schemes, ["https"]);
    }

    #[test]
    fn unknown_keys_name_the_key_and_where_it_was_set() {
        let err = |toml, env: &Env| load(toml, env).unwrap_err();
        assert_eq!(
            err(Some("[server]\nlistn = \"x\""), &[]),
            r#"unknown key "server.listn" in FILE; did you mean "server.listen"?"#
        );
        assert_eq!(
            err(Some("[servr]\nlisten = \"x\""), &[]),
            r#"unknown key "servr" in FILE; did you mean "server"?"#
        );
        assert_eq!(
            err(
                Some("[[upstream.mirrors]]\nprefix = \"http://a/\"\nalternates = []\nalt = 1"),
                &[]
            ),
            r#"unknown key "upstream.mirrors[0].alt" in FILE; did you mean "upstream.mirrors[0].alternates"?"#
        );
        assert_eq!(
            err(Some(""), &[("UPCACHE__SERVER__LISTN", "x")]),
            r#"unknown key "server.listn" (from UPCACHE__SERVER__LISTN); did you mean "server.listen" (UPCACHE__SERVER__LISTEN)?"#
        );
        assert_eq!(
            err(None, &[("UPCACHE__LOGGING__LEVEL", "x")]),
            r#"unknown key "logging" (from UPCACHE__LOGGING__LEVEL); did you mean "log" (UPCACHE__LOG__LEVEL)?"#
        );
        // Nothing close: no guess.
        assert_eq!(
            err(Some("[cache]\nzzz = 1"), &[]),
            r#"unknown key "cache.zzz" in FILE"#
        );
    }

    /// Found by the `config_load` fuzz target (fuzz/corpus/config_load/finding-*): a variable
    /// named `UPCACHE__` was reported as the unknown key "".
    #[test]
    fn malformed_variable_names_are_named() {
        for name in [
            "UPCACHE__",
            "UPCACHE__SERVER__",
            "UPCACHE____SERVER",
            "UPCACHE__SERVER____LISTEN",
            "UPCACHE__SERVER__LIS.TEN",
            "UPCACHE__SERVER__LISTEN[0]",
            "UPCACHE__SERVER__LIS-TEN",
        ] {
            assert_eq!(
                load(None, &[(name, "x")]).unwrap_err(),
                format!(
                    "environment variable {name} names no setting: expected \
                     UPCACHE__<SECTION>__<KEY>, such as UPCACHE__SERVER__LISTEN"
                ),
                "{name}"
            );
        }
    }

    #[test]
    fn bad_values_name_the_key_and_value() {
        let err = |toml: &str, env: &Env| load(Some(toml), env).unwrap_err();
        let cases: &[(&str, &Env, &str)] = &[
            (
                "[storage]\npresign_ttl = \"5x\"",
                &[],
                r#"invalid value for "storage.presign_ttl" in FILE: invalid duration "5x": "#,
            ),
            (
                "[cache]\nmax_size = \"MiB\"",
                &[],
                r#"invalid value for "cache.max_size" in FILE: invalid size "MiB": it does not start with a number; expected a number of bytes, or a number and a unit, such as "512MiB" or "20GiB""#,
            ),
            (
                "",
                &[("UPCACHE__CACHE__MAX_SIZE", "")],
                r#"invalid value for "cache.max_size" (from UPCACHE__CACHE__MAX_SIZE): invalid size "": empty; expected a number of bytes"#,
            ),
            (
                "",
                &[("UPCACHE__UPSTREAM__READ_TIMEOUT", "")],
                r#"invalid value for "upstream.read_timeout" (from UPCACHE__UPSTREAM__READ_TIMEOUT): invalid duration "": empty; expected a number and a unit, such as "500ms", "90s", "15m", "1h" or "30d""#,
            ),
            (
                "[cache]\nmax_unused = 90",
                &[],
                r#"invalid value for "cache.max_unused" in FILE: invalid duration 90: a unit is needed"#,
            ),
            (
                "",
                &[("UPCACHE__CACHE__MAX_SIZE", "12 parsecs")],
                r#"invalid value for "cache.max_size" (from UPCACHE__CACHE__MAX_SIZE): invalid size "12 parsecs": "#,
            ),
            (
                "",
                &[("UPCACHE__UPSTREAM__RETRIES", "many")],
                r#"invalid value for "upstream.retries" (from UPCACHE__UPSTREAM__RETRIES): invalid type: string "many""#,
            ),
            (
                "[storage]\nbackend = \"s4\"",
                &[],
                r#"invalid value for "storage.backend" in FILE: unknown variant `s4`, expected one of `fs`, `s3`, `obs`"#,
            ),
            (
                "[[auth.tokens]]\nname = \"ci\"\nscopes = []",
                &[],
                r#"invalid value for "auth.tokens[0]" in FILE: missing field `sha256`"#,
            ),
            (
                "[server]\nlisten = \"localhost\"",
                &[],
                r#"invalid server.listen = "localhost": "#,
            ),
            (
                "[cache]\nlow_watermark = 0.9",
                &[],
                "invalid cache.low_watermark = 0.9: must be above 0 and below cache.high_watermark (0.8)",
            ),
            (
                "[cache]\nhigh_watermark = 1.5",
                &[],
                "invalid cache.high_watermark = 1.5: ",
            ),
            (
                "[upstream]\nallowed_schemes = [\"http\", \"gopher\"]",
                &[],
                r#"invalid upstream.allowed_schemes = "gopher": expected http, https or ftp"#,
            ),
            (
                "[upstream]\nallowed_schemes = []",
                &[],
                "invalid upstream.allowed_schemes = []: ",
            ),
            (
                "[[auth.tokens]]\nname = \"ci\"\nsha256 = \"abc\"\nscopes = [\"upload\"]",
                &[],
                r#"invalid auth.tokens[0].sha256 = "abc": expected 64 hex digits"#,
            ),
            (
                &format!(
                    "[[auth.tokens]]\nname = \"ci\"\nsha256 = \"{}\"\nscopes = [\"root\"]",
                    "0".repeat(64)
                ),
                &[],
                r#"invalid auth.tokens[0].scopes = "root": "#,
            ),
            (
                &format!(
                    "[[auth.tokens]]\nname = \"ci\"\nsha256 = \"{0}\"\nscopes = []\n\
                     [[auth.tokens]]\nname = \"ci\"\nsha256 = \"{0}\"\nscopes = []",
                    "0".repeat(64)
                ),
                &[],
                r#"invalid auth.tokens[1].name = "ci": "#,
            ),
            (
                "[storage]\nbackend = \"obs\"",
                &[],
                r#"invalid storage.bucket = "": required"#,
            ),
            (
                "[storage]\nbackend = \"obs\"\nbucket = \"b\"",
                &[],
                r#"invalid storage.endpoint = "": required when storage.backend is obs"#,
            ),
            (
                "[storage]\nbackend = \"s3\"\nbucket = \"b\"\nendpoint = \"minio:9000\"",
                &[],
                r#"invalid storage.endpoint = "minio:9000": expected empty or an absolute http(s) url"#,
            ),
            (
                "[[upstream.mirrors]]\nprefix = \"ftp.gnu.org/gnu/\"\nalternates = []",
                &[],
                r#"invalid upstream.mirrors[0].prefix = "ftp.gnu.org/gnu/": expected an absolute url"#,
            ),
            (
                "[server]\npublic_url = \"ftp://x/\"",
                &[],
                r#"invalid server.public_url = "ftp://x/": "#,
            ),
            (
                "[alerts]\nwebhook_url = \"hooks\"",
                &[],
                r#"invalid alerts.webhook_url = "hooks": "#,
            ),
            (
                "[log]\nlevel = \"info,=x=\"",
                &[],
                r#"invalid log.level = "info,=x=": "#,
            ),
            (
                "[log]\nlevel = \"warning\"",
                &[],
                r#"invalid log.level = "warning": "#,
            ),
            (
                "[server]\ntrusted_proxies = [\"10.0.0.0/33\"]",
                &[],
                r#"invalid value for "server.trusted_proxies[0]" in FILE: "10.0.0.0/33": "#,
            ),
            (
                "[upstream]\nretries = 1.5",
                &[],
                r#"invalid value for "upstream.retries" in FILE: invalid type: floating point `1.5`"#,
            ),
            (
                "",
                &[("UPCACHE__UPSTREAM__ALLOW_PRIVATE", "maybe")],
                r#"invalid value for "upstream.allow_private" (from UPCACHE__UPSTREAM__ALLOW_PRIVATE): invalid type: string "maybe""#,
            ),
            (
                "[cache]\nmemory_entries = 0",
                &[],
                "invalid cache.memory_entries = 0: must be above 0",
            ),
            (
                "[proxy]\nconnect = \"intercept\"",
                &[],
                r#"invalid proxy.ca_cert = "": required when proxy.connect is "intercept""#,
            ),
            (
                "[proxy]\nconnect = \"intercept\"\nca_cert = \"ca.pem\"",
                &[],
                r#"invalid proxy.ca_key = "": required when proxy.connect is "intercept""#,
            ),
            (
                "[proxy]\nconnect_ports = []",
                &[],
                "invalid proxy.connect_ports = []: expected a non-empty list",
            ),
            (
                "",
                &[("UPCACHE__PROXY__CONNECT_PORTS", "443,0")],
                "invalid proxy.connect_ports = [443, 0]: ",
            ),
            (
                "[proxy]\nconnect_ports = [70000]",
                &[],
                r#"invalid value for "proxy.connect_ports[0]" in FILE: "#,
            ),
            (
                "[proxy]\nintercept_hosts = [\"https://example.org/\"]",
                &[],
                r#"invalid proxy.intercept_hosts = "https://example.org/": expected host names"#,
            ),
            (
                "[proxy]\nconnect = \"bump\"",
                &[],
                r#"invalid value for "proxy.connect" in FILE: unknown variant `bump`"#,
            ),
            (
                "[server\nlisten = 1",
                &[],
                "cannot parse config file FILE: ",
            ),
        ];
        for (toml, env, want) in cases {
            let got = err(toml, env);
            assert!(
                got.starts_with(want),
                "{toml:?} {env:?}:\n got: {got}\nwant: {want}"
            );
        }
    }

    #[test]
    fn missing_file_is_an_error_naming_it() {
        let err = Config::load_from(Some(Path::new("/nonexistent/upcache.toml")), []).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }));
        assert!(
            err.to_string()
                .starts_with("cannot read config file /nonexistent/upcache.toml: ")
        );
    }

    #[test]
    fn sizes_and_durations_print_as_human_strings() {
        let mut c = Config::default();
        c.cache.max_size = 1536 << 10;
        c.limits.max_upload_size = 1000;
        c.cache.max_unused = Duration::from_secs(30 * 86400);
        let toml = c.to_toml_string();
        for line in [
            "max_size = \"1536KiB\"",
            "max_upload_size = \"1000\"",
            "max_object_size = \"20GiB\"",
            "max_unused = \"30days\"",
            "remote_max_unused = \"0s\"",
            "retry_backoff = \"500ms\"",
            "presign_ttl = \"15m\"",
        ] {
            assert!(toml.contains(line), "{line} not in\n{toml}");
        }
    }

    #[test]
    fn printed_config_loads_back_equal_with_the_secret_redacted() {
        let mut c = load(Some(&std::fs::read_to_string(example_path()).unwrap()), &[]).unwrap();
        c.server.trusted_proxies = vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
        c.storage.secret_access_key = "hunter2".into();
        c.cache.high_watermark = 0.9;
        c.cache.max_size = 3 << 40;
        c.upstream.retry_backoff = Duration::from_millis(1500);
        c.upstream.mirrors = vec![MirrorConfig {
            prefix: "https://ftp.gnu.org/gnu/".into(),
            alternates: vec!["https://ftpmirror.gnu.org/gnu/".into()],
        }];
        c.auth.tokens = vec![TokenConfig {
            name: "ci".into(),
            sha256: "0".repeat(64),
            scopes: vec!["upload".into(), "admin".into()],
        }];
        let toml = c.to_toml_string();
        assert!(!toml.contains("hunter2"));
        let mut back = load(Some(&toml), &[]).unwrap();
        assert_eq!(back.storage.secret_access_key, REDACTED);
        back.storage.secret_access_key = c.storage.secret_access_key.clone();
        assert_eq!(back, c);
    }

    #[test]
    fn example_file_is_the_defaults() {
        let c = Config::load_from(Some(&example_path()), []).unwrap();
        assert_eq!(c, Config::default());
    }

    /// What the JSON Schema finds wrong with the TOML `text`, one line per error.
    fn schema_errors(text: &str) -> Vec<String> {
        let schema = include_str!("../schema/config.schema.json");
        let schema: serde_json::Value = serde_json::from_str(schema).unwrap();
        jsonschema::meta::validate(&schema).unwrap();
        let validator = jsonschema::draft202012::new(&schema).unwrap();
        let instance: serde_json::Value = toml::from_str(text).unwrap();
        let errors = validator.iter_errors(&instance);
        errors
            .map(|e| format!("{}: {e}", e.instance_path()))
            .collect()
    }

    #[test]
    fn schema_accepts_the_example_and_the_printed_config() {
        let example = std::fs::read_to_string(example_path()).unwrap();
        assert_eq!(schema_errors(&example), Vec::<String>::new());
        assert_eq!(
            schema_errors(&Config::default().to_toml_string()),
            Vec::<String>::new()
        );
        let mut c = Config::default();
        c.server.trusted_proxies = vec!["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()];
        c.cache.max_size = 1000;
        c.cache.sweep_interval = Duration::from_millis(90_500);
        c.upstream.mirrors = vec![MirrorConfig {
            prefix: "https://ftp.gnu.org/gnu/".into(),
            alternates: vec!["https://ftpmirror.gnu.org/gnu/".into()],
        }];
        c.auth.tokens = vec![TokenConfig {
            name: "ci".into(),
            sha256: "0".repeat(64),
            scopes: vec!["upload".into()],
        }];
        c.upstream.ca_file = "/etc/pki/corp.pem".into();
        c.proxy = ProxyConfig {
            connect: ConnectMode::Intercept,
            ca_cert: "/etc/upcache/ca.pem".into(),
            ca_key: "/etc/upcache/ca-key.pem".into(),
            intercept_hosts: vec![".kernel.org".into()],
            connect_ports: vec![443, 8443],
        };
        assert_eq!(schema_errors(&c.to_toml_string()), Vec::<String>::new());
    }

    #[test]
    fn schema_rejects_what_loading_rejects() {
        for bad in [
            "[server]\nlistn = \"x\"",
            "[servr]",
            "[[upstream.mirrors]]\nprefix = \"http://a/\"\nalternates = []\nalt = 1",
            "[storage]\npresign_ttl = \"5x\"",
            "[cache]\nmax_size = \"12 parsecs\"",
            "[upstream]\nallowed_schemes = [\"gopher\"]",
            "[upstream]\nretries = 1.5",
            "[log]\nformat = \"xml\"",
            "[proxy]\nconnect = \"intercept\"",
            "[proxy]\nconnect_ports = []",
            "[proxy]\nconnect_ports = [0]",
        ] {
            assert!(!schema_errors(bad).is_empty(), "schema accepts {bad:?}");
            assert!(load(Some(bad), &[]).is_err(), "loading accepts {bad:?}");
        }
    }
}
