//! The object-store tier (`backend = "s3" | "obs"`, through OpenDAL): blob bytes and the
//! shared index that several instances read and write, in one bucket.
//!
//! Layout under `storage.prefix`:
//! - `blobs/<b3[0..2]>/<b3>`: the bytes of a blob, named by their BLAKE3.
//! - `meta/<b3>.json`: its metadata and the URLs bound to it ([`SharedBlob`]); rewritten when
//!   an instance reads the blob (at most once per touch interval), so its modification time
//!   is a cheap "last used" for remote cleanup.
//! - `urls/<blake3(normalized url)>.json`: a URL record ([`UrlRecord`]), written only after
//!   the blob and its metadata are in the bucket.
//! - `md5/<hex>`, `sha256/<hex>`, `sha512/<hex>`: `{"blake3": ...}`, for checksum lookups.
//! - `pins/<b3>`: present while the blob is pinned (pins are the one thing instances change
//!   after the fact, so they are their own objects rather than a field someone may overwrite).
//!
//! This module knows keys, records and the operator; `crate::tier::Bucket` wires it to the cache.

use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use opendal::{ErrorKind, Operator};
use serde::{Deserialize, Serialize};

use crate::bounded::Recent;
use crate::config::{Backend, StorageConfig};
use crate::index::{BlobMeta, UrlRecord};
use crate::store::Algo;

/// Errors of the object store; each names the key it is about.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The configuration cannot make an operator (bad endpoint, missing region...).
    #[error("cannot use the {backend} bucket {bucket:?}: {source}")]
    Config {
        backend: &'static str,
        bucket: String,
        #[source]
        source: Box<opendal::Error>,
    },
    /// A request to the bucket failed.
    #[error("object store {op} {key}: {source}")]
    Op {
        op: &'static str,
        key: String,
        #[source]
        source: Box<opendal::Error>,
    },
    /// A shared index object is not what this version writes.
    #[error("object store record {key} is unreadable: {source}")]
    Corrupt {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    /// No answer in time.
    #[error("object store {op} {key}: no answer within {secs} s")]
    Timeout {
        op: &'static str,
        key: String,
        secs: u64,
    },
}

impl RemoteError {
    fn op(op: &'static str, key: &str, source: opendal::Error) -> Self {
        RemoteError::Op {
            op,
            key: key.to_owned(),
            source: Box::new(source),
        }
    }

    /// What failed, for clients: the operation and the kind of failure, without keys,
    /// endpoints or the service's own context (those go to the log).
    pub fn reason(&self) -> String {
        match self {
            RemoteError::Config { backend, .. } => format!("the {backend} bucket is misconfigured"),
            RemoteError::Op { op, source, .. } => format!("{op}: {}", source.kind()),
            RemoteError::Corrupt { .. } => "a shared index record is unreadable".to_owned(),
            RemoteError::Timeout { op, secs, .. } => format!("{op}: no answer within {secs} s"),
        }
    }

    /// The object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, RemoteError::Op { source, .. } if source.kind() == ErrorKind::NotFound)
    }
}

/// What the bucket says about a blob.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SharedBlob {
    #[serde(flatten)]
    pub meta: BlobMeta,
    /// URLs bound to it by any instance (as far as their writes did not race).
    #[serde(default)]
    pub urls: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct ChecksumRecord {
    blake3: String,
}

/// Bucket parts are read and written in pieces this large: above S3's 5 MiB minimum part
/// size, so anything bigger goes up as a multipart upload.
pub const PART_SIZE: usize = 8 * 1024 * 1024;

/// Small requests on a request's path (index lookups, probes) give up after this long.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Remembered "not in the bucket" answers at most, and their bytes (keys are URLs of up to
/// 8 KiB): bounded memory under URL scans.
const ABSENT_ENTRIES: usize = 100_000;
const ABSENT_BYTES: usize = 16 << 20;

/// Probes a bucket: see [`Remote::prober`].
#[derive(Clone)]
pub struct BucketProbe {
    op: Operator,
    name: String,
}

impl BucketProbe {
    /// Whether the bucket answers (a missing probe key is an answer).
    pub async fn probe(&self) -> Result<(), String> {
        let key = "upcache-probe";
        let asked = tokio::time::timeout(LOOKUP_TIMEOUT, self.op.stat(key)).await;
        match asked {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) if e.kind() == ErrorKind::NotFound => Ok(()),
            Ok(Err(e)) => Err(format!("{} is unreachable: {e}", self.name)),
            Err(_) => Err(format!(
                "{} is unreachable: no answer within {} s",
                self.name,
                LOOKUP_TIMEOUT.as_secs()
            )),
        }
    }
}

/// The bucket, and what this instance remembers about it.
pub struct Remote {
    op: Operator,
    /// Where the bucket is, for messages.
    pub name: String,
    /// Lookups answered "not there": key -> when. Trusted for `cache.index_refresh`.
    pub absent: Recent,
    refresh: Duration,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote").field("name", &self.name).finish()
    }
}

impl Remote {
    /// Build the operator for `storage` (`backend` s3 or obs). No request is made: an
    /// unreachable bucket is a readiness problem, not a reason not to start.
    pub fn new(storage: &StorageConfig, index_refresh: Duration) -> Result<Remote, RemoteError> {
        let cfg = storage;
        let root = format!("/{}", cfg.prefix.trim_matches('/'));
        let (backend, op) = match cfg.backend {
            Backend::Obs => {
                let mut b = opendal::services::Obs::default()
                    .bucket(&cfg.bucket)
                    .endpoint(&cfg.endpoint)
                    .root(&root);
                if let Some(key) = key_or_env(&cfg.access_key_id, "OBS_ACCESS_KEY_ID") {
                    b = b.access_key_id(&key);
                }
                if let Some(key) = key_or_env(&cfg.secret_access_key, "OBS_SECRET_ACCESS_KEY") {
                    b = b.secret_access_key(&key);
                }
                ("obs", Operator::new(b))
            }
            _ => {
                let mut b = opendal::services::S3::default()
                    .bucket(&cfg.bucket)
                    .root(&root)
                    .region(&cfg.region);
                if !cfg.endpoint.is_empty() {
                    b = b.endpoint(&cfg.endpoint);
                }
                if cfg.region.is_empty()
                    && std::env::var_os("AWS_REGION").is_none()
                    && std::env::var_os("AWS_DEFAULT_REGION").is_none()
                {
                    // S3-compatible stores mostly ignore the region, but it is signed.
                    b = b.region("us-east-1");
                }
                // Otherwise the standard chain: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY,
                // profiles, instance metadata.
                if !cfg.access_key_id.is_empty() {
                    b = b.access_key_id(&cfg.access_key_id);
                }
                if !cfg.secret_access_key.is_empty() {
                    b = b.secret_access_key(&cfg.secret_access_key);
                }
                ("s3", Operator::new(b))
            }
        };
        let op = op.map_err(|source| RemoteError::Config {
            backend,
            bucket: cfg.bucket.clone(),
            source: Box::new(source),
        })?;
        let op = op.layer(
            opendal::layers::TimeoutLayer::new()
                .with_timeout(Duration::from_secs(60))
                .with_io_timeout(Duration::from_secs(30)),
        );
        let endpoint = if cfg.endpoint.is_empty() {
            String::new()
        } else {
            format!(" at {}", cfg.endpoint)
        };
        Ok(Remote {
            op,
            name: format!("{backend} bucket {}{endpoint}", cfg.bucket),
            absent: Recent::new(ABSENT_ENTRIES, ABSENT_BYTES),
            refresh: index_refresh,
        })
    }

    /// Remembered answers age by `clock`.
    pub fn with_clock(self, clock: crate::time::Clock) -> Remote {
        Remote {
            absent: Recent::with_clock(ABSENT_ENTRIES, ABSENT_BYTES, clock),
            ..self
        }
    }

    /// Whether the bucket was recently found not to have `key` (a URL or `algo:hex`).
    pub fn recently_absent(&self, key: &str) -> bool {
        self.absent.contains(key, self.refresh)
    }

    fn remember_absent(&self, key: &str) {
        if !self.refresh.is_zero() {
            self.absent.remember(key);
        }
    }

    /// Forget a "not there" answer (this instance just stored it).
    pub fn forget_absent(&self, key: &str) {
        self.absent.forget(key);
    }

    /// The blob a URL is bound to in the shared index, with its metadata. `None`: not there
    /// (remembered for `index_refresh`), or bound to a blob that is gone.
    pub async fn lookup_url(
        &self,
        url: &str,
    ) -> Result<Option<(UrlRecord, SharedBlob)>, RemoteError> {
        let Some(record) = self.get_json::<UrlRecord>(&url_key(url)).await? else {
            self.remember_absent(url);
            return Ok(None);
        };
        let Some(blob) = self.get_meta(&record.blake3).await? else {
            self.remember_absent(url);
            return Ok(None);
        };
        Ok(Some((record, blob)))
    }

    /// The blob with a checksum, per the shared index.
    pub async fn lookup_checksum(
        &self,
        algo: Algo,
        hex: &str,
    ) -> Result<Option<SharedBlob>, RemoteError> {
        let absent_key = format!("{}:{hex}", algo.name());
        let b3 = match algo {
            Algo::Blake3 => Some(hex.to_owned()),
            _ => self
                .get_json::<ChecksumRecord>(&checksum_key(algo, hex))
                .await?
                .map(|r| r.blake3),
        };
        let found = match b3 {
            Some(b3) => self.get_meta(&b3).await?,
            None => None,
        };
        if found.is_none() {
            self.remember_absent(&absent_key);
        }
        Ok(found)
    }

    /// Whether `algo:hex` was recently found absent.
    pub fn checksum_recently_absent(&self, algo: Algo, hex: &str) -> bool {
        self.recently_absent(&format!("{}:{hex}", algo.name()))
    }

    /// A blob's shared metadata.
    pub async fn get_meta(&self, blake3: &str) -> Result<Option<SharedBlob>, RemoteError> {
        self.get_json(&meta_key(blake3)).await
    }

    /// Whether the bucket holds the bytes of a blob of `size` bytes.
    pub async fn has_blob(&self, blake3: &str, size: u64) -> Result<bool, RemoteError> {
        let key = blob_key(blake3);
        match self.op.stat(&key).await {
            Ok(m) => Ok(m.content_length() == size),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(RemoteError::op("stat", &key, e)),
        }
    }

    /// Upload a local blob file, streamed in [`PART_SIZE`] pieces (multipart when larger).
    /// A failed upload is aborted, leaving nothing visible under the key.
    pub async fn upload_blob(
        &self,
        blake3: &str,
        path: &std::path::Path,
    ) -> Result<(), RemoteError> {
        use tokio::io::AsyncReadExt;
        let key = blob_key(blake3);
        let io_err = |e: std::io::Error| {
            RemoteError::op(
                "read local copy for",
                &key,
                opendal::Error::new(ErrorKind::Unexpected, e.to_string()),
            )
        };
        let mut file = tokio::fs::File::open(path).await.map_err(io_err)?;
        let mut w = self
            .op
            .writer_with(&key)
            .chunk(PART_SIZE)
            .content_type("application/octet-stream")
            .await
            .map_err(|e| RemoteError::op("upload", &key, e))?;
        let result = async {
            loop {
                let mut buf = Vec::with_capacity(PART_SIZE);
                let n = (&mut file)
                    .take(PART_SIZE as u64)
                    .read_to_end(&mut buf)
                    .await
                    .map_err(io_err)?;
                if n == 0 {
                    break;
                }
                w.write(Bytes::from(buf))
                    .await
                    .map_err(|e| RemoteError::op("upload", &key, e))?;
            }
            w.close()
                .await
                .map_err(|e| RemoteError::op("upload", &key, e))?;
            Ok(())
        }
        .await;
        if result.is_err() {
            let _ = w.abort().await;
        }
        result
    }

    /// Write the shared records of a blob: metadata, checksum records, the pin marker when
    /// pinned, then each URL record (they point at the blob, so they come last).
    pub async fn publish(
        &self,
        blob: &SharedBlob,
        records: &[UrlRecord],
    ) -> Result<(), RemoteError> {
        let b3 = blob.meta.blake3();
        self.put_json(&meta_key(b3), blob).await?;
        let d = &blob.meta.digests;
        for (algo, hex) in [
            (Algo::Md5, &d.md5),
            (Algo::Sha256, &d.sha256),
            (Algo::Sha512, &d.sha512),
        ] {
            self.put_json(
                &checksum_key(algo, hex),
                &ChecksumRecord {
                    blake3: b3.to_owned(),
                },
            )
            .await?;
            self.forget_absent(&format!("{}:{hex}", algo.name()));
        }
        if blob.meta.pinned {
            self.set_pin(b3, true).await?;
        }
        for record in records {
            self.put_json(&url_key(&record.url), record).await?;
            self.forget_absent(&record.url);
        }
        Ok(())
    }

    /// Create or remove the pin marker of a blob.
    pub async fn set_pin(&self, blake3: &str, pinned: bool) -> Result<(), RemoteError> {
        let key = pin_key(blake3);
        let done = if pinned {
            self.op
                .write(&key, Bytes::from_static(b"pinned"))
                .await
                .map(|_| ())
        } else {
            self.op.delete(&key).await
        };
        done.map_err(|e| RemoteError::op(if pinned { "pin" } else { "unpin" }, &key, e))
    }

    /// Whether a blob is pinned, per the bucket.
    pub async fn is_pinned(&self, blake3: &str) -> Result<bool, RemoteError> {
        let key = pin_key(blake3);
        match self.op.stat(&key).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(RemoteError::op("stat", &key, e)),
        }
    }

    /// Delete a blob and everything of the shared index that points at it. Missing objects
    /// are fine (another instance may be cleaning up too).
    pub async fn delete_blob(&self, blob: &SharedBlob) -> Result<(), RemoteError> {
        let b3 = blob.meta.blake3();
        let d = &blob.meta.digests;
        // References first, bytes last: a reader never finds a record whose blob is gone
        // for longer than the cleanup takes.
        let mut keys: Vec<String> = blob.urls.iter().map(|u| url_key(u)).collect();
        keys.extend([
            checksum_key(Algo::Md5, &d.md5),
            checksum_key(Algo::Sha256, &d.sha256),
            checksum_key(Algo::Sha512, &d.sha512),
            meta_key(b3),
            pin_key(b3),
            blob_key(b3),
        ]);
        for key in keys {
            match self.op.delete(&key).await {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(RemoteError::op("delete", &key, e)),
            }
        }
        for url in &blob.urls {
            self.remember_absent(url);
        }
        Ok(())
    }

    /// Every blob with shared metadata, and when that metadata was last written (unix
    /// seconds): one listing, for remote cleanup only (serving never lists).
    pub async fn list_meta(&self) -> Result<Vec<(String, i64)>, RemoteError> {
        use futures::TryStreamExt;
        let mut lister = self
            .op
            .lister_with("meta/")
            .await
            .map_err(|e| RemoteError::op("list", "meta/", e))?;
        let mut out = Vec::new();
        while let Some(entry) = lister
            .try_next()
            .await
            .map_err(|e| RemoteError::op("list", "meta/", e))?
        {
            let Some(b3) = entry
                .name()
                .strip_suffix(".json")
                .filter(|n| Algo::Blake3.normalize_hex(n).as_deref() == Some(*n))
            else {
                continue;
            };
            let modified = match entry.metadata().last_modified() {
                Some(t) => t.into_inner().as_second(),
                None => match self.op.stat(entry.path()).await {
                    Ok(m) => m.last_modified().map_or(0, |t| t.into_inner().as_second()),
                    Err(e) => return Err(RemoteError::op("stat", entry.path(), e)),
                },
            };
            out.push((b3.to_owned(), modified));
        }
        Ok(out)
    }

    /// `[start, end)` of a blob, as it arrives from the bucket. The first request is made
    /// before this returns, so a missing blob is an error here, not in the middle of a body.
    pub async fn read_blob(
        &self,
        blake3: &str,
        start: u64,
        end: u64,
    ) -> Result<
        impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static + use<>,
        RemoteError,
    > {
        let key = blob_key(blake3);
        let reader = self
            .op
            .reader_with(&key)
            .chunk(PART_SIZE)
            .await
            .map_err(|e| RemoteError::op("read", &key, e))?;
        reader
            .into_bytes_stream(start..end)
            .await
            .map_err(|e| RemoteError::op("read", &key, e))
    }

    /// A presigned GET of a blob, valid for `ttl`.
    pub async fn presign(&self, blake3: &str, ttl: Duration) -> Result<String, RemoteError> {
        let key = blob_key(blake3);
        let req = self
            .op
            .presign_read(&key, ttl)
            .await
            .map_err(|e| RemoteError::op("presign", &key, e))?;
        Ok(req.uri().to_string())
    }

    /// Whether the bucket answers (a HEAD of a key that need not exist): `/readyz`.
    pub async fn probe(&self) -> Result<(), String> {
        self.prober().probe().await
    }

    /// What probes the bucket, without the rest of this instance's state (for the
    /// readiness prober, which must not keep the service alive).
    pub fn prober(&self) -> BucketProbe {
        BucketProbe {
            op: self.op.clone(),
            name: self.name.clone(),
        }
    }

    async fn get_json<T: for<'de> Deserialize<'de>>(
        &self,
        key: &str,
    ) -> Result<Option<T>, RemoteError> {
        let read = tokio::time::timeout(LOOKUP_TIMEOUT, self.op.read(key))
            .await
            .map_err(|_| RemoteError::Timeout {
                op: "read",
                key: key.to_owned(),
                secs: LOOKUP_TIMEOUT.as_secs(),
            })?;
        match read {
            Ok(buf) => serde_json::from_slice(&buf.to_bytes())
                .map(Some)
                .map_err(|source| RemoteError::Corrupt {
                    key: key.to_owned(),
                    source,
                }),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(RemoteError::op("read", key, e)),
        }
    }

    async fn put_json<T: Serialize>(&self, key: &str, value: &T) -> Result<(), RemoteError> {
        let body = serde_json::to_vec(value).expect("serializable");
        self.op
            .write_with(key, body)
            .content_type("application/json")
            .await
            .map(|_| ())
            .map_err(|e| RemoteError::op("write", key, e))
    }
}

/// A configured key, else the environment variable `env` (OBS has no standard chain).
fn key_or_env(configured: &str, env: &str) -> Option<String> {
    if !configured.is_empty() {
        return Some(configured.to_owned());
    }
    std::env::var(env).ok().filter(|v| !v.is_empty())
}

/// Where a blob's bytes live in the bucket.
pub fn blob_key(blake3: &str) -> String {
    format!("blobs/{}/{blake3}", &blake3[..2])
}

/// Where a blob's shared metadata lives.
pub fn meta_key(blake3: &str) -> String {
    format!("meta/{blake3}.json")
}

/// Where a URL's shared record lives: named by the BLAKE3 of the normalized URL, so any
/// instance finds it and nothing derived from a URL becomes part of a path.
pub fn url_key(url: &str) -> String {
    format!("urls/{}.json", blake3::hash(url.as_bytes()).to_hex())
}

fn checksum_key(algo: Algo, hex: &str) -> String {
    format!("{}/{hex}", algo.name())
}

fn pin_key(blake3: &str) -> String {
    format!("pins/{blake3}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_fixed_width_and_url_free() {
        let b3 = "ab".repeat(32);
        assert_eq!(blob_key(&b3), format!("blobs/ab/{b3}"));
        let k = url_key("https://example.org/../etc/passwd");
        assert!(k.starts_with("urls/") && k.len() == "urls/".len() + 64 + ".json".len());
        assert!(!k.contains("etc"));
    }

    #[test]
    fn operators_build_for_both_backends() {
        let mut cfg = crate::config::Config::default().storage;
        cfg.bucket = "sources".into();
        cfg.endpoint = "http://127.0.0.1:9".into();
        cfg.backend = Backend::S3;
        cfg.region = "eu-west-1".into();
        let r = Remote::new(&cfg, Duration::from_secs(1)).unwrap();
        assert!(r.name.contains("s3 bucket sources"), "{}", r.name);
        cfg.backend = Backend::Obs;
        cfg.endpoint = "https://obs.cn-north-4.myhuaweicloud.com".into();
        let r = Remote::new(&cfg, Duration::from_secs(1)).unwrap();
        assert!(r.name.starts_with("obs bucket sources"), "{}", r.name);
    }
}
