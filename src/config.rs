//! Configuration: defaults, the TOML file, `UPCACHE__SECTION__KEY` environment overrides, validation.
//!
//! Layering is defaults -> file -> environment -> CLI flags. Every struct denies unknown
//! fields so that a typo in a key is an error rather than a silently ignored setting.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The whole validated configuration the rest of the code sees.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub cache: CacheConfig,
    pub upstream: UpstreamConfig,
    pub limits: LimitsConfig,
    pub proxy: ProxyConfig,
    pub auth: AuthConfig,
    pub alerts: AlertsConfig,
    pub log: LogConfig,
}

/// `[server]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on, `host:port`.
    pub listen: String,
    /// Base URL used in links returned to clients; empty means `http://<listen>`.
    pub public_url: String,
    /// CIDRs whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Name recorded in audit events and `X-Served-By`; empty means the hostname.
    pub instance: String,
    /// `Cache-Control` sent on served artifacts.
    pub cache_control: String,
}

/// Which storage backend holds the durable copy of blobs.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Fs,
    S3,
    Obs,
}

/// How hits are served when the durable tier is an object store.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ServeMode {
    Proxy,
    Redirect,
}

/// `[storage]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub data_dir: PathBuf,
    pub backend: Backend,
    pub bucket: String,
    pub endpoint: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub prefix: String,
    pub serve: ServeMode,
    #[serde(with = "humantime_serde")]
    pub presign_ttl: Duration,
}

/// `[cache]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Bytes; 0 means bounded by the disk watermarks only.
    #[serde(with = "size_serde")]
    pub max_size: u64,
    pub high_watermark: f64,
    pub low_watermark: f64,
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
    /// Zero means never evict by age.
    #[serde(with = "humantime_serde")]
    pub max_unused: Duration,
    #[serde(with = "humantime_serde")]
    pub remote_max_unused: Duration,
    pub memory_entries: usize,
    #[serde(with = "humantime_serde")]
    pub index_refresh: Duration,
    #[serde(with = "humantime_serde")]
    pub negative_ttl: Duration,
}

/// What a miss does.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MissMode {
    Stream,
    Redirect,
}

/// `[upstream]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    pub miss: MissMode,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub read_timeout: Duration,
    pub retries: u32,
    #[serde(with = "humantime_serde")]
    pub retry_backoff: Duration,
    pub allow_private: bool,
    pub allowed_schemes: Vec<String>,
    pub allow_hosts: Vec<String>,
    pub deny_extensions: Vec<String>,
    pub deny_content_types: Vec<String>,
    #[serde(with = "size_serde")]
    pub max_object_size: u64,
    pub user_agent: String,
    pub mirrors: Vec<MirrorConfig>,
}

/// `[[upstream.mirrors]]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MirrorConfig {
    pub prefix: String,
    pub alternates: Vec<String>,
}

/// `[limits]`; 0 means unlimited everywhere.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub per_client_rps: u32,
    pub per_client_burst: u32,
    pub per_client_concurrency: u32,
    pub upstream_concurrency: u32,
    #[serde(with = "size_serde")]
    pub max_upload_size: u64,
}

/// What to do with `CONNECT` requests.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ConnectMode {
    Deny,
    Tunnel,
}

/// `[proxy]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    pub connect: ConnectMode,
}

/// `[auth]`
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub tokens: Vec<TokenConfig>,
}

/// `[[auth.tokens]]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    pub name: String,
    /// Hex sha256 of the token; the token itself is never stored.
    pub sha256: String,
    pub scopes: Vec<String>,
}

/// `[alerts]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    pub webhook_url: String,
    #[serde(with = "humantime_serde")]
    pub min_interval: Duration,
}

/// Log output format.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// `[log]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub level: String,
    pub format: LogFormat,
}
