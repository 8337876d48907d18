//! The interception CA: made by `upcache ca new`, loaded from `proxy.ca_cert` / `proxy.ca_key`
//! at start-up (the key must not be readable by group or others).

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::pki_types::pem::PemObject;

use super::InterceptError;

/// The subject name of the CAs `upcache ca new` makes.
pub const CA_NAME: &str = "upcache interception CA";
/// File names written by `upcache ca new`.
pub const CERT_FILE: &str = "ca.pem";
pub const KEY_FILE: &str = "ca-key.pem";
/// How long a new CA is valid: long, since every build host must install it.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// A loaded CA: what signs leaves, and its certificate.
pub struct Ca {
    pub(super) issuer: Issuer<'static, KeyPair>,
    pub(super) cert: CertificateDer<'static>,
}

impl Ca {
    /// Load `cert` and `key` (PEM). The key file must be mode 0600 or stricter: whoever can
    /// read it can impersonate every HTTPS site to the build hosts that trust the CA.
    pub fn load(cert: &Path, key: &Path) -> Result<Ca, InterceptError> {
        let file_error = |key: &'static str, path: &Path, reason: String| InterceptError::File {
            key,
            path: path.to_owned(),
            reason,
        };
        let meta =
            std::fs::metadata(key).map_err(|e| file_error("proxy.ca_key", key, e.to_string()))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(InterceptError::KeyMode {
                path: key.to_owned(),
                mode,
            });
        }
        let key_pem = std::fs::read_to_string(key)
            .map_err(|e| file_error("proxy.ca_key", key, e.to_string()))?;
        let key_pair = KeyPair::from_pem(&key_pem)
            .map_err(|e| file_error("proxy.ca_key", key, format!("not a PEM private key: {e}")))?;
        let der = CertificateDer::from_pem_file(cert)
            .map_err(|e| file_error("proxy.ca_cert", cert, format!("no PEM certificate: {e}")))?;
        let issuer = Issuer::from_ca_cert_der(&der, key_pair)
            .map_err(|e| file_error("proxy.ca_cert", cert, format!("not a usable CA: {e}")))?;
        Ok(Ca { issuer, cert: der })
    }
}

/// `upcache ca new --out DIR`: write a new CA as `DIR/ca.pem` and `DIR/ca-key.pem` (0600).
/// Refuses to overwrite either file. Returns the paths written.
pub fn create(dir: &Path) -> Result<(PathBuf, PathBuf), InterceptError> {
    let (cert_path, key_path) = (dir.join(CERT_FILE), dir.join(KEY_FILE));
    for path in [&cert_path, &key_path] {
        if path.exists() {
            return Err(InterceptError::Exists(path.clone()));
        }
    }
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source: std::io::Error| InterceptError::Write { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let key = KeyPair::generate().map_err(InterceptError::Mint)?;
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, CA_NAME);
    params.distinguished_name = name;
    // Path length 0: it signs leaves, never other CAs.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + CA_VALIDITY;
    params.serial_number = Some(super::leaf::random_serial());
    let cert = params.self_signed(&key).map_err(InterceptError::Mint)?;
    // The key first, created 0600 from the start (never readable by others, even briefly).
    write_new(&key_path, key.serialize_pem().as_bytes(), 0o600).map_err(io(&key_path))?;
    write_new(&cert_path, cert.pem().as_bytes(), 0o644).map_err(io(&cert_path))?;
    Ok((cert_path, key_path))
}

/// Create `path` (failing if it exists) with `mode`, write `bytes` and sync them.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_ca_loads_and_refuses_overwrite_and_loose_keys() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = create(dir.path()).unwrap();
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(
            std::fs::read_to_string(&cert)
                .unwrap()
                .contains("BEGIN CERTIFICATE")
        );
        Ca::load(&cert, &key).unwrap();
        let again = create(dir.path()).unwrap_err().to_string();
        assert!(
            again.contains("ca.pem") && again.contains("exists"),
            "{again}"
        );
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
        let loose = Ca::load(&cert, &key).err().unwrap().to_string();
        assert!(
            loose.contains("proxy.ca_key") && loose.contains("0640"),
            "{loose}"
        );
    }

    #[test]
    fn a_key_of_another_ca_is_refused() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (cert_a, _) = create(a.path()).unwrap();
        let (_, key_b) = create(b.path()).unwrap();
        // Loading succeeds (rcgen does not compare them); the authority's self-check does.
        let err = super::super::Authority::new(&cert_a, &key_b, Vec::new())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("does not match"), "{err}");
    }
}
