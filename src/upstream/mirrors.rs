//! `[[upstream.mirrors]]`: alternate sources for URLs under a prefix, tried in order when the
//! primary fails after its retries. An alternate replaces the matching prefix and keeps the
//! rest of the URL (SPEC 8).

use tracing::warn;

use crate::config::MirrorConfig;
use crate::url::UpstreamUrl;

/// Mirror entries with their prefixes normalized like request URLs, so that
/// `HTTPS://FTP.gnu.org:443/gnu/` in the configuration matches `https://ftp.gnu.org/gnu/x`.
#[derive(Debug, Clone, Default)]
pub struct Mirrors {
    entries: Vec<(String, Vec<String>)>,
}

impl Mirrors {
    pub fn new(cfg: &[MirrorConfig]) -> Mirrors {
        let norm = |s: &str| match UpstreamUrl::parse(s) {
            Ok(u) => Some(u.as_str().to_owned()),
            Err(e) => {
                warn!(prefix = s, error = %e, "ignoring an invalid mirror prefix");
                None
            }
        };
        let entries = cfg
            .iter()
            .filter_map(|m| {
                let prefix = norm(&m.prefix)?;
                let alternates = m.alternates.iter().filter_map(|a| norm(a)).collect();
                Some((prefix, alternates))
            })
            .collect();
        Mirrors { entries }
    }

    /// The alternates for `url`, in configuration order (entries first, then their
    /// alternates), without duplicates and without `url` itself.
    pub fn alternates(&self, url: &UpstreamUrl) -> Vec<UpstreamUrl> {
        let mut out: Vec<UpstreamUrl> = Vec::new();
        for (prefix, alternates) in &self.entries {
            let Some(rest) = url.as_str().strip_prefix(prefix.as_str()) else {
                continue;
            };
            for alt in alternates {
                match UpstreamUrl::parse(&format!("{alt}{rest}")) {
                    Ok(u) if u != *url && !out.contains(&u) => out.push(u),
                    Ok(_) => {}
                    Err(e) => {
                        warn!(url = %url, alternate = alt, error = %e, "cannot build a mirror url")
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mirror(prefix: &str, alternates: &[&str]) -> MirrorConfig {
        MirrorConfig {
            prefix: prefix.into(),
            alternates: alternates.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn prefix_is_replaced_and_the_rest_kept() {
        let m = Mirrors::new(&[
            mirror(
                "HTTPS://FTP.gnu.org:443/gnu/",
                &[
                    "https://ftpmirror.gnu.org/gnu/",
                    "ftp://ftp.example.org/pub/gnu/",
                ],
            ),
            mirror("https://other.org/", &["https://x.org/"]),
        ]);
        let u = UpstreamUrl::parse("https://ftp.gnu.org/gnu/hello/hello-2.12.tar.gz?x=1").unwrap();
        let alts: Vec<String> = m.alternates(&u).iter().map(|u| u.to_string()).collect();
        assert_eq!(
            alts,
            [
                "https://ftpmirror.gnu.org/gnu/hello/hello-2.12.tar.gz?x=1",
                "ftp://ftp.example.org/pub/gnu/hello/hello-2.12.tar.gz?x=1"
            ]
        );
        let elsewhere = UpstreamUrl::parse("https://ftp.gnu.org/other/x").unwrap();
        assert!(m.alternates(&elsewhere).is_empty());
    }
}
