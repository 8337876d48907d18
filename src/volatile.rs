//! Volatile URLs (SPEC 9): repository metadata such as `repodata/repomd.xml` or apt's
//! `InRelease`, which upstream changes in place. Which URLs are volatile (`cache.volatile`),
//! and when each was last validated with upstream.
//!
//! Every other URL is immutable once bound. A volatile URL is served from the cache for
//! `cache.volatile_ttl` after its last validation; the next request after that revalidates it
//! (a conditional fill, see `fill`).

use std::time::Duration;

use crate::bounded::Recent;
use crate::config::CacheConfig;
use crate::index::UrlRecord;
use crate::url::UpstreamUrl;

/// `Cache-Control` of volatile answers: clients and caches in front of us may keep the bytes
/// but must ask again (a cheap 304: the ETag is the blake3) before using them.
pub const CACHE_CONTROL: &str = "no-cache";

/// Validation times kept at most (older ones fall back to the binding's `fetched_at`).
const VALIDATED_ENTRIES: usize = 10_000;
const VALIDATED_BYTES: usize = 4 << 20;

/// The volatile globs and the validation times of volatile URLs.
pub struct Volatile {
    globs: Vec<Glob>,
    ttl: Duration,
    /// URLs validated (304, or stored from a 200) since this process started.
    validated: Recent,
}

impl Volatile {
    pub fn new(cfg: &CacheConfig) -> Volatile {
        Volatile {
            globs: cfg.volatile.iter().map(|g| Glob::new(g)).collect(),
            ttl: cfg.volatile_ttl,
            validated: Recent::new(VALIDATED_ENTRIES, VALIDATED_BYTES),
        }
    }

    /// Whether `url`'s path matches a `cache.volatile` glob.
    pub fn matches(&self, url: &UpstreamUrl) -> bool {
        let path = url.as_url().path();
        self.globs.iter().any(|g| g.matches(path))
    }

    /// Whether the bound copy of volatile `url` was validated less than `volatile_ttl` ago:
    /// since this process validated it, or, if it has not, since it was fetched.
    pub fn is_fresh(&self, url: &UpstreamUrl, record: &UrlRecord, now: i64) -> bool {
        if self.validated.contains(url.as_str(), self.ttl) {
            return true;
        }
        let age = now.saturating_sub(record.fetched_at);
        age >= 0 && (age as u128) * 1000 < self.ttl.as_millis()
    }

    /// Upstream has just confirmed (or sent) the bound copy of `url`.
    pub fn validated(&self, url: &UpstreamUrl) {
        self.validated.remember(url.as_str());
    }
}

/// A glob, with its longest literal run: a path without it cannot match, and looking for it
/// is much cheaper than matching (every hit asks).
struct Glob {
    pattern: String,
    needle: String,
}

impl Glob {
    fn new(pattern: &str) -> Glob {
        let needle = pattern
            .split(['*', '?'])
            .max_by_key(|run| run.len())
            .unwrap_or_default()
            .to_owned();
        Glob {
            pattern: pattern.to_owned(),
            needle,
        }
    }

    fn matches(&self, path: &str) -> bool {
        path.contains(self.needle.as_str()) && glob_match(&self.pattern, path)
    }
}

/// Shell-like glob over a whole string: `*` matches any run of characters (`/` included, so
/// `*/repodata/repomd.xml` matches at any depth), `?` one byte, anything else itself. On bytes,
/// without allocating: it runs for every hit (URL paths are percent-encoded ASCII anyway).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    // The last `*` seen and the text position it is currently assumed to stretch to.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == b'?' || c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                // Let the last `*` swallow one more character and try again.
                Some((sp, st)) => {
                    star = Some((sp, st + 1));
                    pi = sp + 1;
                    ti = st + 1;
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        let g = |p, t| glob_match(p, t);
        assert!(g(
            "*/repodata/repomd.xml*",
            "/fedora/40/x86_64/repodata/repomd.xml"
        ));
        assert!(g("*/repodata/repomd.xml*", "/r/repodata/repomd.xml.asc"));
        assert!(!g("*/repodata/repomd.xml*", "/r/repodata/primary.xml.gz"));
        assert!(!g("*/repodata/repomd.xml*", "/repomd.xml"));
        assert!(g("*/dists/*/InRelease", "/debian/dists/bookworm/InRelease"));
        assert!(g(
            "*/dists/*/InRelease",
            "/debian/dists/bookworm-updates/main/InRelease"
        ));
        assert!(g("*/dists/*/Release*", "/debian/dists/sid/Release.gpg"));
        assert!(!g("*/dists/*/Release*", "/debian/pool/main/Release"));
        assert!(g("*/metalink*", "/metalink"));
        assert!(g("/a?c", "/abc"));
        assert!(!g("/a?c", "/ac"));
        assert!(g("*", ""));
        assert!(!g("/x", "/x/"));
        assert!(g("**a", "aaa"));
        assert!(!g("*a*b", "bbba"));
    }

    #[test]
    fn a_glob_looks_for_its_longest_literal_run_first() {
        let g = Glob::new("*/dists/*/InRelease");
        assert_eq!(g.needle, "/InRelease");
        assert!(g.matches("/d/dists/x/InRelease"));
        assert!(!g.matches("/d/InRelease"));
        let g = Glob::new("*");
        assert_eq!(g.needle, "");
        assert!(g.matches("/anything"));
    }

    #[test]
    fn defaults_cover_dnf_and_apt() {
        let v = Volatile::new(&CacheConfig::default());
        let url = |s: &str| UpstreamUrl::parse(s).unwrap();
        for volatile in [
            "https://dl.example.org/pub/fedora/40/Everything/x86_64/os/repodata/repomd.xml",
            "https://mirrors.example.org/metalink?repo=fedora-40&arch=x86_64",
            "http://mirror.example.org/mirrorlist/?release=9",
            "http://deb.example.org/debian/dists/bookworm/InRelease",
            "http://deb.example.org/debian/dists/bookworm/Release",
            "http://deb.example.org/debian/dists/bookworm/Release.gpg",
        ] {
            assert!(v.matches(&url(volatile)), "{volatile}");
        }
        for immutable in [
            "https://dl.example.org/os/repodata/0123-primary.xml.gz",
            "https://ftp.gnu.org/gnu/hello/hello-2.12.tar.gz",
            "http://deb.example.org/debian/pool/main/h/hello/hello_2.10.orig.tar.gz",
        ] {
            assert!(!v.matches(&url(immutable)), "{immutable}");
        }
    }
}
