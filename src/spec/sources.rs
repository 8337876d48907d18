//! dist-git `sources` files: which lookaside blob (by checksum) each file name stands for.

use crate::store::Algo;

use super::SpecError;

/// One line of a `sources` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcesLine {
    /// 1-based line number.
    pub line: usize,
    /// The file name the checksum is for.
    pub file: String,
    pub algo: Algo,
    /// Lowercase hex.
    pub hex: String,
}

/// Parse a dist-git `sources` file: `SHA512 (name) = hex` lines (also `SHA256` and `MD5` in
/// that BSD format, as `fedpkg`/`centpkg` write them) and the older `<md5>  <name>` lines.
/// Blank lines are skipped; anything else is an error naming the line.
pub fn parse_sources(text: &str) -> Result<Vec<SourcesLine>, SpecError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let t = raw.trim();
        if t.is_empty() {
            continue;
        }
        let bad = |reason: &str| SpecError::SourcesLine {
            line,
            text: t.to_owned(),
            reason: reason.to_owned(),
        };
        let (algo, file, hex) = if let Some((head, hex)) = t.rsplit_once(") = ") {
            let (name, file) = head
                .split_once(" (")
                .ok_or_else(|| bad("expected ALGO (file) = hex"))?;
            let algo = match name.to_ascii_uppercase().as_str() {
                "SHA512" => Algo::Sha512,
                "SHA256" => Algo::Sha256,
                "MD5" => Algo::Md5,
                _ => return Err(bad(&format!("unsupported checksum type {name:?}"))),
            };
            (algo, file.to_owned(), hex.trim())
        } else {
            let (hex, file) = t
                .split_once(char::is_whitespace)
                .ok_or_else(|| bad("expected \"<md5>  <file>\" or \"ALGO (file) = hex\""))?;
            (Algo::Md5, file.trim().to_owned(), hex)
        };
        if file.is_empty() {
            return Err(bad("no file name"));
        }
        let hex = algo
            .normalize_hex(hex)
            .ok_or_else(|| bad(&format!("{hex:?} is not a {} checksum", algo.name())))?;
        out.push(SourcesLine {
            line,
            file,
            algo,
            hex,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_formats() {
        let sha512 = "a".repeat(128);
        let text = format!(
            "SHA512 (git-2.43.0.tar.xz) = {sha512}\n\
             \n\
             SHA256 (name with (parens).tgz) = {}\n\
             md5 (x.zip) = {}\n\
             0123456789ABCDEF0123456789abcdef  old-style.tar.gz\n",
            "b".repeat(64),
            "c".repeat(32)
        );
        let lines = parse_sources(&text).unwrap();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0].file, "git-2.43.0.tar.xz");
        assert_eq!(lines[0].algo, Algo::Sha512);
        assert_eq!(lines[0].hex, sha512);
        assert_eq!(lines[1].line, 3);
        assert_eq!(lines[1].file, "name with (parens).tgz");
        assert_eq!(lines[1].algo, Algo::Sha256);
        assert_eq!(lines[2].algo, Algo::Md5);
        assert_eq!(lines[3].file, "old-style.tar.gz");
        assert_eq!(lines[3].algo, Algo::Md5);
        assert_eq!(
            lines[3].hex, "0123456789abcdef0123456789abcdef",
            "lowercased"
        );
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse_sources("SHA1 (a.tgz) = abcd\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "sources line 1: unsupported checksum type \"SHA1\": \"SHA1 (a.tgz) = abcd\""
        );
        let e = parse_sources("\nSHA512 (a.tgz) = abcd\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("sources line 2: \"abcd\" is not a sha512 checksum")
        );
        assert!(parse_sources("justoneword\n").is_err());
        assert!(parse_sources("nothex  file.tgz\n").is_err());
        assert!(parse_sources("SHA512 a.tgz) = x\n").is_err());
    }
}
