//! Leaf certificates for intercepted hosts: minted on first use, signed by the CA, kept in a
//! bounded LRU (as TLS server configurations ready to accept with).

use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lru::LruCache;
use parking_lot::Mutex;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName,
};

use super::InterceptError;
use super::ca::Ca;

/// Leaves kept at most (a build farm talks to a few hundred hosts).
pub const MAX_LEAVES: usize = 1024;
/// A leaf is valid this long after it is minted...
const VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);
/// ... from this long before (clients with a clock slightly behind ours accept it)...
const BACKDATE: Duration = Duration::from_secs(3600);
/// ... and is replaced by a new one once it is this old, long before it expires.
const REUSE_FOR: Duration = Duration::from_secs(24 * 3600);

/// Minted leaves by host.
pub struct Leaves {
    cache: Mutex<LruCache<String, (Instant, Arc<ServerConfig>)>>,
}

impl Leaves {
    pub fn new(capacity: usize) -> Leaves {
        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        Leaves {
            cache: Mutex::new(LruCache::new(capacity)),
        }
    }

    /// The TLS configuration presenting a leaf for `host`, minted now if there is none (or
    /// the one kept is due for renewal).
    pub fn get(&self, ca: &Ca, host: &str) -> Result<Arc<ServerConfig>, InterceptError> {
        if let Some((minted, config)) = self.cache.lock().get(host) {
            if minted.elapsed() < REUSE_FOR {
                return Ok(config.clone());
            }
        }
        // Minted outside the lock: two first requests for a host may both mint, and the
        // second one kept wins; both leaves are valid.
        let (cert, key) = mint(ca, host)?;
        let config = Arc::new(server_config(cert, key)?);
        self.cache
            .lock()
            .put(host.to_owned(), (Instant::now(), config.clone()));
        Ok(config)
    }

    /// Leaves currently kept.
    pub fn len(&self) -> usize {
        self.cache.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A leaf for `host` (a DNS name, or an IP literal, which gets an IP SAN), signed by `ca`.
pub fn mint(
    ca: &Ca,
    host: &str,
) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), InterceptError> {
    // What TLS clients accept as a server name (an IP literal, or a valid DNS name).
    if ServerName::try_from(host).is_err() {
        return Err(InterceptError::Host {
            host: host.to_owned(),
        });
    }
    let key = KeyPair::generate().map_err(InterceptError::Mint)?;
    let mut params = CertificateParams::default();
    let san = match host.parse::<IpAddr>() {
        Ok(ip) => SanType::IpAddress(ip),
        Err(_) => SanType::DnsName(host.try_into().map_err(|_| InterceptError::Host {
            host: host.to_owned(),
        })?),
    };
    params.subject_alt_names = vec![san];
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, host);
    params.distinguished_name = name;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    // Strict verifiers (OpenSSL's X509_STRICT, Python 3.13's default) want the AKI.
    params.use_authority_key_identifier_extension = true;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + VALIDITY;
    params.serial_number = Some(random_serial());
    let cert = params
        .signed_by(&key, &ca.issuer)
        .map_err(InterceptError::Mint)?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    Ok((cert.der().clone(), key))
}

/// A random positive 128-bit serial number (RFC 5280: unique per CA, at most 20 octets).
pub fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

/// A TLS server presenting `cert`, offering HTTP/1.1 only by ALPN (the decrypted stream is
/// served by an HTTP/1 dispatcher).
fn server_config(
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
) -> Result<ServerConfig, InterceptError> {
    let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(InterceptError::Tls)?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .map_err(InterceptError::Tls)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
