//! Checksum request paths (pure): `/by-<algo>/<hex>[/<name>]` and the dist-git lookaside
//! layout `/repo/pkgs/[<namespace>/]<name>/<file>/<algo>/<hex>/<file>`.

use crate::error::Error;
use crate::store::Algo;

use super::checksum_hex;

/// The blob a checksum path asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChecksumPath {
    pub algo: Algo,
    /// Lowercase hex of the right length for `algo`.
    pub hex: String,
    /// The file name the client asked for, if any (for `Content-Disposition`).
    pub name: Option<String>,
}

/// What `path` (as the router sees it: percent-decoded except `%25`, `%2F` and `%2B`) asks
/// for: `None` when no checksum route matches it, else the request or why it is malformed.
pub fn parse(path: &str) -> Option<Result<ChecksumPath, Error>> {
    if let Some(rest) = path.strip_prefix("/by-") {
        let (algo_name, rest) = rest.split_once('/')?;
        let algo = Algo::from_name(algo_name).filter(|a| a.name() == algo_name)?;
        let (hex, name) = match rest.split_once('/') {
            Some((hex, name)) => (hex, Some(name)),
            None => (rest, None),
        };
        // The routes match one non-empty segment for each.
        if hex.is_empty() || name.is_some_and(|n| n.is_empty() || n.contains('/')) {
            return None;
        }
        return Some(checksum_hex(algo, hex).map(|hex| ChecksumPath {
            algo,
            hex,
            name: name.map(str::to_owned),
        }));
    }
    path.strip_prefix("/repo/pkgs/").map(lookaside)
}

/// `.../<filename>/<algo>/<hex>/<filename>`, or the older `.../<filename>/<md5>/<filename>`;
/// the blob is found by the last segments, the ones before are informational.
fn lookaside(tail: &str) -> Result<ChecksumPath, Error> {
    let segs: Vec<&str> = tail.split('/').filter(|s| !s.is_empty()).collect();
    let bad = || {
        Error::BadRequest(format!(
            "lookaside path /repo/pkgs/{tail} is not <name>/<file>/<md5|sha256|sha512>/<hex>/<file>"
        ))
    };
    let by_algo = match segs.as_slice() {
        [.., algo, hex, name] if segs.len() >= 4 => {
            Algo::from_name(algo).map(|algo| (algo, *hex, *name))
        }
        _ => None,
    };
    let (algo, hex, name) = match (by_algo, segs.as_slice()) {
        (Some(found), _) => found,
        (None, [.., hex, name]) if segs.len() >= 3 && hex.len() == 32 => (Algo::Md5, *hex, *name),
        _ => return Err(bad()),
    };
    let name = percent_encoding::percent_decode_str(name)
        .decode_utf8_lossy()
        .into_owned();
    Ok(ChecksumPath {
        algo,
        hex: checksum_hex(algo, hex)?,
        name: Some(name),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MD5: &str = "0123456789abcdef0123456789abcdef";

    fn ok(path: &str) -> ChecksumPath {
        parse(path).unwrap().unwrap()
    }

    #[test]
    fn by_checksum_paths() {
        let p = ok(&format!("/by-md5/{}", MD5.to_uppercase()));
        assert_eq!((p.algo, p.hex.as_str(), p.name), (Algo::Md5, MD5, None));
        let p = ok(&format!("/by-md5/{MD5}/git-2.43.0.tar.xz"));
        assert_eq!(p.name.as_deref(), Some("git-2.43.0.tar.xz"));
        assert!(matches!(
            parse("/by-md5/xyz"),
            Some(Err(Error::BadRequest(_)))
        ));
        for no_route in [
            "/by-md4/00",
            "/by-MD5/00",
            "/by-md5/",
            "/by-md5",
            &format!("/by-md5/{MD5}/"),
            &format!("/by-md5/{MD5}/a/b"),
            "/api/v1/stats",
        ] {
            assert!(parse(no_route).is_none(), "{no_route}");
        }
    }

    #[test]
    fn lookaside_paths() {
        let sha512 = "ab".repeat(64);
        let p = ok(&format!(
            "/repo/pkgs/rpms/git/git-2.43.0.tar.xz/sha512/{sha512}/git-2.43.0.tar.xz"
        ));
        assert_eq!((p.algo, p.hex.as_str()), (Algo::Sha512, sha512.as_str()));
        let p = ok(&format!("/repo/pkgs/git/a%20b.tgz/{MD5}/a%20b.tgz"));
        assert_eq!((p.algo, p.name.as_deref()), (Algo::Md5, Some("a b.tgz")));
        for bad in ["/repo/pkgs/", "/repo/pkgs/x/y", "/repo/pkgs/a/b/sha1/00/c"] {
            assert!(
                matches!(parse(bad), Some(Err(Error::BadRequest(_)))),
                "{bad}"
            );
        }
    }
}
