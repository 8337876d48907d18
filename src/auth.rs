//! Bearer tokens: only their SHA-256 is configured, compared in constant time; scopes
//! `upload` and `admin` (admin implies upload).

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::AuthConfig;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Upload,
    Admin,
}

impl Scope {
    pub fn name(self) -> &'static str {
        match self {
            Scope::Upload => "upload",
            Scope::Admin => "admin",
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's configured name, recorded as the audit `actor`.
    pub name: String,
    admin: bool,
    upload: bool,
}

impl Principal {
    pub fn may(&self, scope: Scope) -> bool {
        match scope {
            Scope::Admin => self.admin,
            Scope::Upload => self.upload || self.admin,
        }
    }
}

/// Why a request is not allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("this endpoint needs an `Authorization: Bearer <token>` header")]
    Missing,
    #[error("the bearer token is not valid")]
    Unknown,
    #[error("token {name:?} lacks the {scope} scope")]
    Scope { name: String, scope: &'static str },
}

struct Entry {
    name: String,
    sha256: [u8; 32],
    admin: bool,
    upload: bool,
}

/// The configured tokens.
pub struct Tokens(Vec<Entry>);

impl Tokens {
    /// From validated configuration (hex sha256, known scopes).
    pub fn new(cfg: &AuthConfig) -> Tokens {
        Tokens(
            cfg.tokens
                .iter()
                .filter_map(|t| {
                    let mut sha256 = [0u8; 32];
                    hex::decode_to_slice(&t.sha256, &mut sha256).ok()?;
                    Some(Entry {
                        name: t.name.clone(),
                        sha256,
                        admin: t.scopes.iter().any(|s| s == "admin"),
                        upload: t.scopes.iter().any(|s| s == "upload"),
                    })
                })
                .collect(),
        )
    }

    /// Check an `Authorization` header value against `scope`.
    pub fn authorize(&self, header: Option<&str>, scope: Scope) -> Result<Principal, AuthError> {
        let token = header
            .and_then(|h| {
                let (kind, rest) = h.trim().split_once(' ')?;
                kind.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            })
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Missing)?;
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Compare against every entry, always, so timing says nothing about which matched.
        let mut found: Option<&Entry> = None;
        for e in &self.0 {
            if bool::from(e.sha256.ct_eq(&digest)) {
                found = Some(e);
            }
        }
        let e = found.ok_or(AuthError::Unknown)?;
        let p = Principal {
            name: e.name.clone(),
            admin: e.admin,
            upload: e.upload,
        };
        if p.may(scope) {
            Ok(p)
        } else {
            Err(AuthError::Scope {
                name: p.name,
                scope: scope.name(),
            })
        }
    }
}

/// A fresh random token and its hex sha256 (for `upcache token new`).
pub fn new_token() -> (String, String) {
    let bytes: [u8; 32] = rand::random();
    let token = format!("upc_{}", hex::encode(bytes));
    let sha = hex::encode(Sha256::digest(token.as_bytes()));
    (token, sha)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TokenConfig;

    fn tokens() -> (Tokens, String, String) {
        let (up, up_sha) = new_token();
        let (adm, adm_sha) = new_token();
        let cfg = AuthConfig {
            tokens: vec![
                TokenConfig {
                    name: "ci".into(),
                    sha256: up_sha,
                    scopes: vec!["upload".into()],
                },
                TokenConfig {
                    name: "ops".into(),
                    sha256: adm_sha,
                    scopes: vec!["admin".into()],
                },
            ],
        };
        (Tokens::new(&cfg), up, adm)
    }

    #[test]
    fn scopes_and_errors() {
        let (t, up, adm) = tokens();
        let bearer = |s: &str| format!("Bearer {s}");
        assert_eq!(
            t.authorize(Some(&bearer(&up)), Scope::Upload).unwrap().name,
            "ci"
        );
        assert!(matches!(
            t.authorize(Some(&bearer(&up)), Scope::Admin),
            Err(AuthError::Scope { .. })
        ));
        // admin implies upload
        assert!(t.authorize(Some(&bearer(&adm)), Scope::Upload).is_ok());
        assert!(
            t.authorize(Some(&format!("bearer  {adm} ")), Scope::Admin)
                .is_ok()
        );
        assert_eq!(t.authorize(None, Scope::Upload), Err(AuthError::Missing));
        assert_eq!(
            t.authorize(Some("Basic abc"), Scope::Upload),
            Err(AuthError::Missing)
        );
        assert_eq!(
            t.authorize(Some("Bearer nope"), Scope::Upload),
            Err(AuthError::Unknown)
        );
    }
}
