//! The configuration's types: one struct per `[section]`, with the built-in defaults and
//! the values other modules derive from it.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::human::{duration_serde, size_serde};
use super::{SCHEMES, VERSION_PLACEHOLDER};

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
}
