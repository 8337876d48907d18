//! One-pass digests: BLAKE3 (the blob name), SHA-256, SHA-512 and MD5 of the same bytes.

use md5::Md5;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256, Sha512};

/// The four digests of a blob, lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digests {
    pub blake3: String,
    pub sha256: String,
    pub sha512: String,
    pub md5: String,
}

/// A checksum algorithm clients may look blobs up by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algo {
    Md5,
    Sha256,
    Sha512,
    Blake3,
}

impl Algo {
    /// Parse the name used in URLs and query parameters (`md5`, `sha256`, ...).
    pub fn from_name(name: &str) -> Option<Algo> {
        match name.to_ascii_lowercase().as_str() {
            "md5" => Some(Algo::Md5),
            "sha256" => Some(Algo::Sha256),
            "sha512" => Some(Algo::Sha512),
            "blake3" => Some(Algo::Blake3),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Algo::Md5 => "md5",
            Algo::Sha256 => "sha256",
            Algo::Sha512 => "sha512",
            Algo::Blake3 => "blake3",
        }
    }

    /// Length of the hex form.
    pub fn hex_len(self) -> usize {
        match self {
            Algo::Md5 => 32,
            Algo::Sha256 | Algo::Blake3 => 64,
            Algo::Sha512 => 128,
        }
    }

    /// Lowercase `hex` if it is a well-formed digest of this algorithm.
    pub fn normalize_hex(self, hex: &str) -> Option<String> {
        (hex.len() == self.hex_len() && hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| hex.to_ascii_lowercase())
    }
}

impl Digests {
    /// The digest of this algorithm.
    pub fn get(&self, algo: Algo) -> &str {
        match algo {
            Algo::Md5 => &self.md5,
            Algo::Sha256 => &self.sha256,
            Algo::Sha512 => &self.sha512,
            Algo::Blake3 => &self.blake3,
        }
    }
}

/// The checksums a client expects (`md5=` / `sha256=` / `X-Upcache-Expect-*` ...): the first
/// one given, used to look stored blobs up, and any others given with it. Content must match
/// every one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub algo: Algo,
    pub hex: String,
    /// Further checksums given along with the first, of other algorithms.
    pub also: Vec<(Algo, String)>,
}

impl Expected {
    pub fn new(algo: Algo, hex: String) -> Self {
        Expected {
            algo,
            hex,
            also: Vec::new(),
        }
    }

    /// Every expected checksum, the first one first.
    pub fn all(&self) -> impl Iterator<Item = (Algo, &str)> {
        std::iter::once((self.algo, self.hex.as_str()))
            .chain(self.also.iter().map(|(a, h)| (*a, h.as_str())))
    }

    pub fn matches(&self, digests: &Digests) -> bool {
        self.mismatch(digests).is_none()
    }

    /// The first expected checksum `digests` does not have, as (algorithm, expected hex).
    pub fn mismatch(&self, digests: &Digests) -> Option<(Algo, &str)> {
        self.all().find(|(algo, hex)| digests.get(*algo) != *hex)
    }
}

impl std::fmt::Display for Expected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (algo, hex)) in self.all().enumerate() {
            if i > 0 {
                f.write_str(" and ")?;
            }
            write!(f, "{} {hex}", algo.name())?;
        }
        Ok(())
    }
}

/// Hashes a byte stream with all four algorithms as it passes.
#[derive(Clone, Default)]
pub struct Digester {
    blake3: blake3::Hasher,
    sha256: Sha256,
    sha512: Sha512,
    md5: Md5,
    len: u64,
}

impl Digester {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn update(&mut self, data: &[u8]) {
        self.blake3.update(data);
        self.sha256.update(data);
        self.sha512.update(data);
        self.md5.update(data);
        self.len += data.len() as u64;
    }

    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn finish(self) -> Digests {
        Digests {
            blake3: self.blake3.finalize().to_hex().to_string(),
            sha256: hex::encode(self.sha256.finalize()),
            sha512: hex::encode(self.sha512.finalize()),
            md5: hex::encode(self.md5.finalize()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        let mut d = Digester::new();
        d.update(b"hello ");
        d.update(b"world");
        assert_eq!(d.len(), 11);
        let d = d.finish();
        assert_eq!(d.md5, "5eb63bbbe01eeed093cb22bb8f5acdc3");
        assert_eq!(
            d.sha256,
            "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
        );
        assert_eq!(
            d.blake3,
            "d74981efa70a0c880b8d8c1985d075dbcbf679b99a5f9914e5aaf96b831a9e24"
        );
        assert!(d.sha512.starts_with("309ecc489c12d6eb4cc40f50c902f2b4"));
    }

    #[test]
    fn every_expected_checksum_must_match() {
        let mut d = Digester::new();
        d.update(b"hello world");
        let d = d.finish();
        let mut exp = Expected::new(Algo::Md5, d.md5.clone());
        assert!(exp.matches(&d));
        exp.also.push((Algo::Sha512, "0".repeat(128)));
        assert!(!exp.matches(&d));
        assert_eq!(
            exp.mismatch(&d),
            Some((Algo::Sha512, "0".repeat(128).as_str()))
        );
        assert_eq!(
            exp.to_string(),
            format!("md5 {} and sha512 {}", d.md5, "0".repeat(128))
        );
        exp.also[0].1 = d.sha512.clone();
        assert!(exp.matches(&d));
    }

    #[test]
    fn hex_validation() {
        assert_eq!(
            Algo::Md5
                .normalize_hex("5EB63BBBE01EEED093CB22BB8F5ACDC3")
                .as_deref(),
            Some("5eb63bbbe01eeed093cb22bb8f5acdc3")
        );
        assert!(Algo::Md5.normalize_hex("5eb6").is_none());
        assert!(Algo::Sha256.normalize_hex(&"g".repeat(64)).is_none());
    }
}
