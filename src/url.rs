//! Upstream URLs: normalization and the three request forms (pure, no network).

use std::fmt;
use std::net::IpAddr;

use ::url::{Host, Position, Url};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Schemes upcache can fetch; `config.upstream.allowed_schemes` narrows them further.
const SCHEMES: [&str; 3] = ["http", "https", "ftp"];

/// Longest URL accepted, before and after normalization (the request-target limit of SPEC 5).
pub const MAX_URL_LEN: usize = 8192;

/// Errors name at most this many bytes of the offending input, so a hostile URL cannot flood logs.
const MAX_ERROR_INPUT: usize = 256;

/// RFC 5987 `attr-char`: what may stay unescaped in `filename*`.
const ATTR_CHAR: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// Errors, each naming the offending input.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Not an absolute URL, no host, bad port, etc. (`invalid_url`).
    #[error("invalid url {url:?}: {reason}")]
    Invalid { url: String, reason: String },
    /// A scheme other than http/https/ftp (`unsupported_scheme`).
    #[error("unsupported scheme {scheme:?}: only http, https and ftp urls can be fetched")]
    UnsupportedScheme { scheme: String },
}

impl UrlError {
    fn invalid(url: &str, reason: impl Into<String>) -> Self {
        UrlError::Invalid {
            url: excerpt(&redact_str(url)),
            reason: reason.into(),
        }
    }
}

/// A normalized absolute upstream URL (http, https or ftp).
///
/// Normalization is WHATWG parsing (`url` crate) made stricter and completed with RFC 3986
/// section 6.2.2: see [`UpstreamUrl::parse`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UpstreamUrl {
    url: Url,
}

impl UpstreamUrl {
    /// Parse and normalize an absolute URL string.
    ///
    /// Scheme and host are lowercased (IDN hosts become punycode, IPv4 shorthands such as
    /// `0x7f.1` become dotted quads), the default port, the fragment and dot-segments are
    /// dropped, percent-escapes of unreserved characters are decoded in the userinfo and path,
    /// the hex digits of the others uppercased and a '%' that starts no escape written "%25".
    /// The query is kept as the `url` crate serializes it: existing escapes untouched, only
    /// characters that cannot appear in a URL (`"`, `<`, `>`, `'`, non-ASCII) escaped, and `?`
    /// with an empty query stays distinct from no query. Userinfo is kept: FTP needs it.
    ///
    /// Inputs that WHATWG repairs but other parsers (curl, wget, rpm) read differently are
    /// rejected, so the cache and the build tool never disagree on what a URL names:
    /// backslashes before the query, a missing `//` (`http:example.com`), tabs and newlines
    /// (which WHATWG silently deletes).
    pub fn parse(s: &str) -> Result<UpstreamUrl, UrlError> {
        let s = s.trim();
        if s.len() > MAX_URL_LEN {
            return Err(UrlError::invalid(
                s,
                format!("longer than {MAX_URL_LEN} bytes"),
            ));
        }
        let Some((scheme, rest)) = split_scheme(s) else {
            return Err(UrlError::invalid(s, "not an absolute url"));
        };
        if !SCHEMES.iter().any(|k| k.eq_ignore_ascii_case(scheme)) {
            return Err(UrlError::UnsupportedScheme {
                scheme: excerpt(&scheme.to_ascii_lowercase()),
            });
        }
        if s.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return Err(UrlError::invalid(
                s,
                "contains whitespace or a control character",
            ));
        }
        let Some(after_slashes) = rest.strip_prefix("//") else {
            return Err(UrlError::invalid(s, "expected \"//\" after the scheme"));
        };
        if after_slashes.starts_with('/') {
            return Err(UrlError::invalid(s, "empty host"));
        }
        if s.split(['?', '#'])
            .next()
            .unwrap_or_default()
            .contains('\\')
        {
            return Err(UrlError::invalid(s, "backslash before the query"));
        }

        let mut url = Url::parse(s).map_err(|e| UrlError::invalid(s, e.to_string()))?;
        match url.host() {
            Some(Host::Domain(d))
                if d.strip_suffix('.')
                    .unwrap_or(d)
                    .split('.')
                    .any(str::is_empty) =>
            {
                return Err(UrlError::invalid(s, "empty label in host"));
            }
            None => return Err(UrlError::invalid(s, "no host")),
            _ => {}
        }
        if url.port() == Some(0) {
            return Err(UrlError::invalid(s, "port 0"));
        }

        url.set_fragment(None);
        let path = normalize_escapes(url.path());
        url.set_path(&path);
        // Only fails for URLs that cannot have userinfo, and http/https/ftp always can.
        let no_userinfo = |()| UrlError::invalid(s, "cannot carry a user name or password");
        let user = normalize_escapes(url.username());
        url.set_username(&user).map_err(no_userinfo)?;
        let password = url.password().map(normalize_escapes);
        url.set_password(password.as_deref()).map_err(no_userinfo)?;
        // FTP sends the decoded path and userinfo as command arguments: a CR or LF would end
        // the command and start another one (command injection), a NUL would cut it short.
        // Such a URL names nothing an FTP server can serve.
        if url.scheme() == "ftp" {
            let parts = [
                url.path(),
                url.username(),
                url.password().unwrap_or_default(),
            ];
            if parts
                .iter()
                .any(|p| ["%0D", "%0A", "%00"].iter().any(|e| p.contains(e)))
            {
                return Err(UrlError::invalid(
                    s,
                    "an ftp url cannot contain CR, LF or NUL (%0D, %0A, %00): ftp would read \
                     them as the end of a command",
                ));
            }
        }

        // Escaping can grow a URL; checking the result keeps `parse(u.as_str())` infallible.
        if url.as_str().len() > MAX_URL_LEN {
            return Err(UrlError::invalid(
                s,
                format!("longer than {MAX_URL_LEN} bytes once normalized"),
            ));
        }
        Ok(UpstreamUrl { url })
    }

    /// Normalized form, the cache key.
    pub fn as_str(&self) -> &str {
        self.url.as_str()
    }

    pub fn as_url(&self) -> &Url {
        &self.url
    }

    pub fn scheme(&self) -> &str {
        self.url.scheme()
    }

    /// Host as in the URL (lowercased; IPv6 literal without brackets).
    pub fn host(&self) -> &str {
        let host = self.url.host_str().unwrap_or_default();
        host.strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host)
    }

    /// Port or the scheme's default.
    pub fn port(&self) -> u16 {
        self.url.port_or_known_default().unwrap_or_default()
    }

    /// The host parsed as an IP literal, if it is one. An IPv4-mapped IPv6 literal
    /// (`[::ffff:127.0.0.1]`) is reported as its IPv4 address, so that address checks such as
    /// `is_loopback()` see what will actually be connected to.
    pub fn ip_literal(&self) -> Option<IpAddr> {
        match self.url.host()? {
            Host::Ipv4(a) => Some(IpAddr::V4(a)),
            Host::Ipv6(a) => Some(IpAddr::V6(a).to_canonical()),
            Host::Domain(_) => None,
        }
    }

    /// Last path segment, percent-decoded (lossy UTF-8); empty if the path ends in "/".
    pub fn file_name(&self) -> String {
        let last = self.url.path().rsplit('/').next().unwrap_or_default();
        percent_encoding::percent_decode_str(last)
            .decode_utf8_lossy()
            .into_owned()
    }

    /// Lowercased extension of the last path segment without the dot (e.g. "xz" for
    /// "a.tar.xz"), if any. Taken from the decoded name, so `a.mp%33` cannot hide an "mp3";
    /// a leading dot alone (".bashrc") is not an extension.
    pub fn extension(&self) -> Option<String> {
        // Checked on every request: decode (an allocation) only a name that has escapes.
        let last = self.url.path().rsplit('/').next().unwrap_or_default();
        let decoded;
        let name = if last.contains('%') {
            decoded = self.file_name();
            decoded.as_str()
        } else {
            last
        };
        let (stem, ext) = name.rsplit_once('.')?;
        (!stem.is_empty() && !ext.is_empty()).then(|| ext.to_lowercase())
    }

    /// The entry of `list` (lowercase extensions) that [`Self::extension`] is, if any; for a
    /// name without escapes (nearly every request: this runs on each) without allocating.
    pub fn extension_in<'a>(&self, list: &'a [String]) -> Option<&'a str> {
        // A URL's path is ASCII (the parser percent-encodes the rest).
        let last = self.url.path().rsplit('/').next().unwrap_or_default();
        if last.contains('%') {
            let ext = self.extension()?;
            return list.iter().find(|d| **d == ext).map(String::as_str);
        }
        let (stem, ext) = last.rsplit_once('.')?;
        if stem.is_empty() || ext.is_empty() {
            return None;
        }
        list.iter()
            .find(|d| d.eq_ignore_ascii_case(ext))
            .map(String::as_str)
    }

    /// The mirror path form of this URL: `/<scheme>/<host[:port]>/<path>[?query]` (port only
    /// when non-default; IPv6 hosts in brackets; userinfo is not included).
    pub fn mirror_path(&self) -> String {
        let u = &self.url;
        format!(
            "/{}/{}{}",
            u.scheme(),
            &u[Position::BeforeHost..Position::AfterPort],
            &u[Position::BeforePath..Position::AfterQuery]
        )
    }
}

/// Shows the URL with its password replaced by `***`: this is what logs, error messages, the
/// audit journal and API answers see. [`UpstreamUrl::as_str`] is the exact URL (the cache key).
impl fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redacted(&self.url))
    }
}

/// What replaces a password in URLs that are shown.
pub const REDACTED_PASSWORD: &str = "***";

/// `url` with its password, if any, replaced by [`REDACTED_PASSWORD`].
pub fn redacted(url: &Url) -> std::borrow::Cow<'_, str> {
    if url.password().is_none() {
        return url.as_str().into();
    }
    let mut shown = url.clone();
    // Only fails for URLs that cannot have userinfo, and those have no password.
    let _ = shown.set_password(Some(REDACTED_PASSWORD));
    String::from(shown).into()
}

/// A URL string (possibly invalid, e.g. input that did not parse) with any `user:password@`
/// password replaced by [`REDACTED_PASSWORD`].
pub fn redact_str(s: &str) -> String {
    let Some(start) = s.find("://").map(|i| i + 3) else {
        return s.to_owned();
    };
    let end = s[start..]
        .find(['/', '?', '#'])
        .map_or(s.len(), |i| start + i);
    let authority = &s[start..end];
    match (authority.rfind('@'), authority.find(':')) {
        (Some(at), Some(colon)) if colon < at => format!(
            "{}{}:{REDACTED_PASSWORD}{}",
            &s[..start],
            &authority[..colon],
            &s[start + at..]
        ),
        _ => s.to_owned(),
    }
}

/// Parse the mirror path form: `raw` is the request's raw (still percent-encoded) path and
/// query, e.g. "/https/www.kernel.org/pub/git-2.39.1.tar.xz?x=1". The first segment is the
/// scheme (http|https|ftp), the second `host[:port]`, the rest the path; the query string (if
/// any) is kept as is.
///
/// The host segment may not carry userinfo (`evil.com@good.com`): the authority must be
/// exactly what the segment shows.
pub fn from_mirror_path(raw: &str) -> Result<UpstreamUrl, UrlError> {
    let invalid = |reason: &str| UrlError::invalid(raw, reason);
    let (path, query) = match raw.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (raw, None),
    };
    let mut parts = path
        .strip_prefix('/')
        .ok_or_else(|| invalid("mirror path must start with \"/\""))?
        .splitn(3, '/');
    let scheme = parts.next().unwrap_or_default();
    if scheme.is_empty() {
        return Err(invalid("missing scheme"));
    }
    if !SCHEMES.iter().any(|k| k.eq_ignore_ascii_case(scheme)) {
        return Err(UrlError::UnsupportedScheme {
            scheme: excerpt(&scheme.to_ascii_lowercase()),
        });
    }
    let authority = parts.next().unwrap_or_default();
    if authority.is_empty() {
        return Err(invalid("missing host"));
    }
    if authority.contains(['@', '\\']) {
        return Err(invalid("host segment must be host[:port]"));
    }
    if raw.contains('#') {
        return Err(invalid("\"#\" in a request target"));
    }
    let mut url = format!(
        "{scheme}://{authority}/{}",
        parts.next().unwrap_or_default()
    );
    if let Some(query) = query {
        url.push('?');
        url.push_str(query);
    }
    let parsed = UpstreamUrl::parse(&url)?;
    // Defence in depth: percent-decoding inside the host must never yield userinfo.
    if !parsed.url.username().is_empty() || parsed.url.password().is_some() {
        return Err(invalid("host segment must be host[:port]"));
    }
    Ok(parsed)
}

/// A `Content-Disposition` header value: `attachment; filename="<sanitized>"` plus
/// `; filename*=UTF-8''<pct-encoded>` (RFC 6266) when the name is not plain ASCII.
///
/// Sanitizing keeps only the part after the last '/' or '\\', drops control characters
/// (CR and LF included), bidi controls and line/paragraph separators ([`is_hidden_char`]) and
/// surrounding whitespace, and escapes `"` and `\`; an empty name, "." or ".." becomes
/// "download". The ASCII fallback replaces non-ASCII characters with '_'.
pub fn content_disposition(file_name: &str) -> String {
    let base = file_name.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = base
        .chars()
        .filter(|c| !c.is_control() && !is_hidden_char(*c))
        .collect();
    let name = match cleaned.trim() {
        "" | "." | ".." => "download",
        name => name,
    };
    let mut header = String::from("attachment; filename=\"");
    for c in name.chars() {
        match c {
            '"' | '\\' => {
                header.push('\\');
                header.push(c);
            }
            c if c.is_ascii() => header.push(c),
            _ => header.push('_'),
        }
    }
    header.push('"');
    if !name.is_ascii() {
        header.push_str("; filename*=UTF-8''");
        header.extend(utf8_percent_encode(name, ATTR_CHAR));
    }
    header
}

/// Characters that change how a name is displayed without being seen: the Unicode
/// `Bidi_Control` set (U+061C, U+200E, U+200F, U+202A-U+202E, U+2066-U+2069), with which
/// "evil\u{202E}zg.rat.exe" shows as "evilexe.tar.gz", and the line and paragraph separators
/// U+2028 and U+2029, which break a name over lines.
pub fn is_hidden_char(c: char) -> bool {
    matches!(
        c,
        '\u{061C}'
            | '\u{200E}'
            | '\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2066}'..='\u{2069}'
            | '\u{2028}'
            | '\u{2029}'
    )
}

/// The three request forms of SPEC 4.1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestForm {
    /// `/fetch?url=<percent-encoded absolute URL>`.
    Fetch,
    /// `/<scheme>/<host[:port]>/<path>[?query]`.
    Mirror,
    /// An absolute URI as the request target (`GET http://host/path`, from proxies' clients).
    Proxy,
}

/// The upstream URL a raw request target (`/fetch?url=...`, `/https/host/x`, `http://host/x`)
/// names, and its form; `None` for a target in none of the three forms (the API, checksum
/// paths, ...). The HTTP routes take the same steps on the same parts of the request.
pub fn parse_request_target(target: &str) -> Option<(RequestForm, Result<UpstreamUrl, UrlError>)> {
    if !target.starts_with('/') {
        return split_scheme(target).map(|_| (RequestForm::Proxy, UpstreamUrl::parse(target)));
    }
    let path = target.split('?').next().unwrap_or_default();
    if path == "/fetch" {
        let query = target.split_once('?').map_or("", |(_, q)| q);
        let url = query_pairs(query).into_iter().find(|(k, _)| k == "url");
        let parsed = match url {
            Some((_, url)) => UpstreamUrl::parse(&url),
            None => Err(UrlError::invalid(target, "missing query parameter url")),
        };
        return Some((RequestForm::Fetch, parsed));
    }
    let scheme = path.strip_prefix('/')?.split('/').next()?;
    let is_route = SCHEMES.contains(&scheme) && path.len() > scheme.len() + 1;
    is_route.then(|| (RequestForm::Mirror, from_mirror_path(target)))
}

/// The `name=value` pairs of a query string, percent-decoded (lossy UTF-8). A `+` stays a
/// plus: in a URL given as a parameter it is part of the URL, not a space.
pub fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let dec = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (dec(k), dec(v))
        })
        .collect()
}

/// Splits off an RFC 3986 scheme (`ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) ":"`).
fn split_scheme(s: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = s.split_once(':')?;
    let mut chars = scheme.chars();
    let valid = chars.next()?.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then_some((scheme, rest))
}

/// RFC 3986 6.2.2: decodes escapes of unreserved characters, uppercases the hex digits of the
/// others. A '%' that starts no escape becomes "%25": left bare, decoding its neighbours could
/// assemble a new escape ("%%61%30" would become "%a0"), and normalizing would not be idempotent.
fn normalize_escapes(s: &str) -> String {
    let hex = |b: &u8| (*b as char).to_digit(16);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        match (
            bytes.get(i + 1).and_then(hex),
            bytes.get(i + 2).and_then(hex),
        ) {
            (Some(hi), Some(lo)) => {
                let b = (hi * 16 + lo) as u8;
                if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                    out.push(b);
                } else {
                    out.extend_from_slice(format!("%{b:02X}").as_bytes());
                }
                i += 3;
            }
            _ => {
                out.extend_from_slice(b"%25");
                i += 1;
            }
        }
    }
    // Only whole escapes were replaced, by ASCII, so UTF-8 is preserved (the lossy
    // conversion never replaces anything; it only keeps this free of panics).
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Bounds what an error repeats of its input.
fn excerpt(s: &str) -> String {
    cut(s, MAX_ERROR_INPUT)
}

/// `s`, or its first `max` bytes (at a character boundary) and `...` if it is longer.
pub(crate) fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn norm(s: &str) -> String {
        match UpstreamUrl::parse(s) {
            Ok(u) => u.to_string(),
            Err(e) => panic!("{s:?} rejected: {e}"),
        }
    }

    fn reason(s: &str) -> String {
        match UpstreamUrl::parse(s) {
            Err(UrlError::Invalid { reason, .. }) => reason,
            other => panic!("{s:?}: expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn normalizes_like_rfc_3986() {
        let cases = [
            (
                "http://EXAMPLE.com:80/a/./b/../c%7E%41?Q=%41#frag",
                "http://example.com/a/c~A?Q=%41",
            ),
            ("HTTPS://Example.COM:443", "https://example.com/"),
            ("https://example.com:8443/x", "https://example.com:8443/x"),
            ("ftp://FTP.gnu.org:21/gnu/", "ftp://ftp.gnu.org/gnu/"),
            ("http://example.com:443/", "http://example.com:443/"),
            ("http://example.com:/x", "http://example.com/x"),
            ("http://a/%2e%2E/x/%2E/y/.%2e/z", "http://a/x/z"),
            ("http://a/../../../etc/passwd", "http://a/etc/passwd"),
            (
                "http://a/%7e%2f%2F%3f%25%c3%bc",
                "http://a/~%2F%2F%3F%25%C3%BC",
            ),
            // `%25` stays an escape, so the "2e" after it is literal text, not a dot.
            ("http://a/%252e%252E", "http://a/%252e%252E"),
            ("http://a/x%2E/%2E%2Ex", "http://a/x./..x"),
            ("http://a/%zz/%4/%", "http://a/%25zz/%254/%25"),
            ("http://a/%%61%30", "http://a/%25a0"),
            ("http://a//b;type=i", "http://a//b;type=i"),
            ("http://a/ü", "http://a/%C3%BC"),
            ("http://a/\"<>{}", "http://a/%22%3C%3E%7B%7D"),
            ("  http://a/b \r\n", "http://a/b"),
            ("http://a/b#", "http://a/b"),
            ("http://a/b?x#f?g", "http://a/b?x"),
        ];
        for (input, want) in cases {
            assert_eq!(norm(input), want, "{input}");
        }
    }

    #[test]
    fn query_is_kept_except_for_characters_invalid_in_urls() {
        assert_eq!(
            norm("http://a/?Q=%41&b=%2f&c=%zz&&"),
            "http://a/?Q=%41&b=%2f&c=%zz&&"
        );
        assert_eq!(norm("http://a/x?a\\b/../c"), "http://a/x?a\\b/../c");
        // An empty query is not the same key as no query.
        assert_eq!(norm("http://a/b?"), "http://a/b?");
        assert_eq!(norm("http://a/b?#"), "http://a/b?");
        assert_ne!(
            UpstreamUrl::parse("http://a/b?").unwrap(),
            UpstreamUrl::parse("http://a/b").unwrap()
        );
        // WHATWG escapes these in queries of special schemes.
        assert_eq!(norm("http://a/?'\"<>ü"), "http://a/?%27%22%3C%3E%C3%BC");
    }

    #[test]
    fn hosts() {
        assert_eq!(norm("http://Bücher.DE/x"), "http://xn--bcher-kva.de/x");
        assert_eq!(norm("http://ex%41mple.com/"), "http://example.com/");
        assert_eq!(norm("http://a.com./"), "http://a.com./");
        let u = UpstreamUrl::parse("http://0x7f.1/").unwrap();
        assert_eq!((u.as_str(), u.host()), ("http://127.0.0.1/", "127.0.0.1"));
        assert_eq!(u.ip_literal(), Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        let u = UpstreamUrl::parse("http://2130706433:8080/").unwrap();
        assert_eq!((u.as_str(), u.port()), ("http://127.0.0.1:8080/", 8080));
        let u = UpstreamUrl::parse("http://[::ffff:127.0.0.1]/").unwrap();
        assert_eq!(
            (u.as_str(), u.host()),
            ("http://[::ffff:7f00:1]/", "::ffff:7f00:1")
        );
        assert_eq!(u.ip_literal(), Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        let u = UpstreamUrl::parse("https://[0:0::1]:8443/x").unwrap();
        assert_eq!((u.host(), u.port()), ("::1", 8443));
        assert_eq!(u.ip_literal(), Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        assert_eq!(
            UpstreamUrl::parse("http://example.com/")
                .unwrap()
                .ip_literal(),
            None
        );
        assert_eq!(reason("http://a..b/"), "empty label in host");
        assert_eq!(reason("http://../"), "empty label in host");
        assert_eq!(reason("http://1.2.3.4.5/"), "invalid IPv4 address");
        assert_eq!(
            reason("http://a.com%2Fb.com/"),
            "invalid international domain name"
        );
    }

    #[test]
    fn userinfo_is_kept_and_normalized() {
        let u = UpstreamUrl::parse("ftp://us%65r:p%7e%2f@FTP.example.org:21/pub/f.tgz").unwrap();
        assert_eq!(u.as_str(), "ftp://user:p~%2F@ftp.example.org/pub/f.tgz");
        assert_eq!((u.host(), u.port()), ("ftp.example.org", 21));
        assert_eq!(u.mirror_path(), "/ftp/ftp.example.org/pub/f.tgz");
        assert_eq!(norm("http://:@a/"), "http://a/");
        assert_eq!(norm("http://a@b@c/"), "http://a%40b@c/");
    }

    #[test]
    fn ftp_urls_cannot_smuggle_commands() {
        for bad in [
            "ftp://h/x%0d%0aDELE%20y.tar.gz",
            "ftp://h/dir%0A/x.tgz",
            "ftp://h/x%00.tgz",
            "ftp://u%0d%0aDELE%20y:p@h/x.tgz",
            "ftp://u:p%0a@h/x.tgz",
        ] {
            assert!(
                reason(bad).contains("cannot contain CR, LF or NUL"),
                "{bad}: {}",
                reason(bad)
            );
        }
        // Harmless in HTTP, where the path stays encoded on the wire.
        assert_eq!(norm("http://h/x%0d%0a.tgz"), "http://h/x%0D%0A.tgz");
        assert_eq!(norm("ftp://h/x%0b.tgz"), "ftp://h/x%0B.tgz");
    }

    #[test]
    fn passwords_are_never_shown() {
        let u = UpstreamUrl::parse("ftp://alice:s3cret@h/pub/f.tgz").unwrap();
        assert_eq!(u.to_string(), "ftp://alice:***@h/pub/f.tgz");
        assert_eq!(
            u.as_str(),
            "ftp://alice:s3cret@h/pub/f.tgz",
            "the key keeps it"
        );
        assert_eq!(norm("ftp://alice@h/f"), "ftp://alice@h/f");
        assert_eq!(redact_str("ftp://a:b@h/x"), "ftp://a:***@h/x");
        assert_eq!(redact_str("ftp://a:b:c@h:21/x@y"), "ftp://a:***@h:21/x@y");
        assert_eq!(redact_str("ftp://a@h/x:y"), "ftp://a@h/x:y");
        assert_eq!(redact_str("http://h:80/x"), "http://h:80/x");
        match UpstreamUrl::parse("ftp://alice:s3cret@h:99999/x") {
            Err(e) => assert!(!e.to_string().contains("s3cret"), "{e}"),
            Ok(u) => panic!("{u} accepted"),
        }
    }

    #[test]
    fn rejects() {
        let long = format!("http://a/{}", "x".repeat(MAX_URL_LEN));
        let cases = [
            ("", "not an absolute url"),
            ("/relative/path", "not an absolute url"),
            ("example.com/a.tgz", "not an absolute url"),
            ("http://", "empty host"),
            ("http:///example.com/x", "empty host"),
            ("http:example.com", "expected \"//\" after the scheme"),
            ("http:/example.com", "expected \"//\" after the scheme"),
            (
                "http:\\\\example.com\\a",
                "expected \"//\" after the scheme",
            ),
            ("http://evil.com\\@good.com/", "backslash before the query"),
            ("http://a/b\\..\\c", "backslash before the query"),
            ("http://a/b c", "contains whitespace or a control character"),
            (
                "http://a/b\tc",
                "contains whitespace or a control character",
            ),
            (
                "http://a/b\nc",
                "contains whitespace or a control character",
            ),
            ("http://a/b\0", "contains whitespace or a control character"),
            ("\0http://a/b", "not an absolute url"),
            (
                "http://a/\u{85}b",
                "contains whitespace or a control character",
            ),
            ("http://a:0/", "port 0"),
            ("http://a:65536/", "invalid port number"),
            ("http://a:x/", "invalid port number"),
            (long.as_str(), "longer than 8192 bytes"),
        ];
        for (input, want) in cases {
            assert_eq!(reason(input), want, "{input:?}");
        }
        // Within the limit as written, over it once non-ASCII is escaped.
        let grows = format!("http://a/{}", "ü".repeat(MAX_URL_LEN / 4));
        assert_eq!(reason(&grows), "longer than 8192 bytes once normalized");
    }

    #[test]
    fn rejects_other_schemes() {
        for (input, scheme) in [
            ("file:///etc/passwd", "file"),
            ("data:text/plain,hello world", "data"),
            ("gopher://a/", "gopher"),
            ("JavaScript:alert(1)", "javascript"),
            ("ws://a/", "ws"),
            ("localhost:8080", "localhost"),
        ] {
            let err = UpstreamUrl::parse(input).unwrap_err();
            assert_eq!(
                err,
                UrlError::UnsupportedScheme {
                    scheme: scheme.into()
                },
                "{input}"
            );
        }
    }

    #[test]
    fn errors_name_a_bounded_excerpt_of_the_input() {
        let err = UpstreamUrl::parse("http://a/b\nc").unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"invalid url "http://a/b\nc": contains whitespace or a control character"#
        );
        let long = format!("http://a/{}", "é".repeat(MAX_URL_LEN));
        let UrlError::Invalid { url, .. } = UpstreamUrl::parse(&long).unwrap_err() else {
            panic!("expected invalid")
        };
        assert!(url.len() <= MAX_ERROR_INPUT + 3 && url.ends_with("..."));
    }

    #[test]
    fn file_name_and_extension() {
        let u = |s| UpstreamUrl::parse(s).unwrap();
        let a = u("https://h/pub/git-2.39.1.TAR.XZ?x=1");
        assert_eq!(
            (a.file_name().as_str(), a.extension()),
            ("git-2.39.1.TAR.XZ", Some("xz".into()))
        );
        assert_eq!(u("https://h/a%20b%C3%BC%2F.mp%33").file_name(), "a bü/.mp3");
        assert_eq!(u("https://h/a.mp%33").extension(), Some("mp3".into()));
        assert_eq!(u("https://h/a%2EZIP").extension(), Some("zip".into()));
        assert_eq!(u("https://h/dir/").file_name(), "");
        assert_eq!(u("https://h").extension(), None);
        assert_eq!(u("https://h/.bashrc").extension(), None);
        let deny = ["mp3".to_owned(), "zip".to_owned()];
        for (url, found) in [
            ("https://h/a.MP3", Some("mp3")),
            ("https://h/a.mp%33", Some("mp3")),
            ("https://h/a%2EZIP?x=.mp3", Some("zip")),
            ("https://h/a.mp4", None),
            ("https://h/.mp3", None),
            ("https://h/mp3", None),
            ("https://h/a.mp3/", None),
        ] {
            let url = u(url);
            assert_eq!(url.extension_in(&deny), found, "{url}");
            assert_eq!(
                url.extension_in(&deny),
                url.extension().filter(|e| deny.contains(e)).as_deref(),
                "{url}"
            );
        }
        assert_eq!(u("https://h/README").extension(), None);
        assert_eq!(u("https://h/a.").extension(), None);
        assert_eq!(u("https://h/%FF.zip").file_name(), "\u{FFFD}.zip");
    }

    #[test]
    fn mirror_path_round_trips() {
        let cases = [
            (
                "https://www.kernel.org/pub/a.tar.xz",
                "/https/www.kernel.org/pub/a.tar.xz",
            ),
            ("http://127.0.0.1:8000/x", "/http/127.0.0.1:8000/x"),
            ("https://[::1]:8443/x?q=%41&", "/https/[::1]:8443/x?q=%41&"),
            ("https://u:p@h/x", "/https/h/x"),
            ("http://h", "/http/h/"),
            ("http://h/?", "/http/h/?"),
        ];
        for (url, path) in cases {
            let u = UpstreamUrl::parse(url).unwrap();
            assert_eq!(u.mirror_path(), path);
            if !url.contains('@') {
                assert_eq!(from_mirror_path(path).unwrap(), u, "{path}");
            }
        }
    }

    #[test]
    fn request_targets_in_the_three_forms() {
        let want = UpstreamUrl::parse("https://example.org/a/b.tgz?x=1").unwrap();
        for (target, form) in [
            (
                "/fetch?url=https%3A%2F%2Fexample.org%2Fa%2Fb.tgz%3Fx%3D1",
                RequestForm::Fetch,
            ),
            (
                "/fetch?md5=00&url=https://example.org/a/b.tgz?x=1",
                RequestForm::Fetch,
            ),
            ("/https/example.org/a/b.tgz?x=1", RequestForm::Mirror),
            ("https://example.org/a/./b.tgz?x=1", RequestForm::Proxy),
        ] {
            assert_eq!(
                parse_request_target(target),
                Some((form, Ok(want.clone()))),
                "{target}"
            );
        }
        for other in ["/", "/api/v1/stats", "/by-md5/00", "/https", "*", ""] {
            assert_eq!(parse_request_target(other), None, "{other}");
        }
        assert!(matches!(
            parse_request_target("/fetch?md5=00"),
            Some((RequestForm::Fetch, Err(UrlError::Invalid { .. })))
        ));
        assert_eq!(
            query_pairs("a=1&&b=%2B+&c"),
            [("a", "1"), ("b", "++"), ("c", "")].map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
    }

    #[test]
    fn from_mirror_path_forms() {
        let m = |s| from_mirror_path(s).map(|u| u.to_string());
        assert_eq!(
            m("/https/www.kernel.org/pub/a.tar.xz?x=1").unwrap(),
            "https://www.kernel.org/pub/a.tar.xz?x=1"
        );
        assert_eq!(m("/https/host").unwrap(), "https://host/");
        assert_eq!(m("/https/host?x").unwrap(), "https://host/?x");
        assert_eq!(
            m("/HTTP/Host:80/a%2fb/%7E/c%20d").unwrap(),
            "http://host/a%2Fb/~/c%20d"
        );
        assert_eq!(
            m("/ftp/ftp.gnu.org/gnu/../../x").unwrap(),
            "ftp://ftp.gnu.org/x"
        );
        assert_eq!(
            m("/https/b%C3%BCcher.de/x").unwrap(),
            "https://xn--bcher-kva.de/x"
        );
        assert_eq!(m("/https/h/a?b?c/../d").unwrap(), "https://h/a?b?c/../d");
        for scheme in ["file", "gopher", "api", "favicon.ico"] {
            assert_eq!(
                from_mirror_path(&format!("/{scheme}/x")).unwrap_err(),
                UrlError::UnsupportedScheme {
                    scheme: scheme.into()
                }
            );
        }
        for bad in [
            "",
            "https/h/x",
            "/",
            "//h/x",
            "/https",
            "/https/",
            "/https//x",
            "/https/?x",
        ] {
            assert!(
                matches!(m(bad), Err(UrlError::Invalid { .. })),
                "{bad:?}: {:?}",
                m(bad)
            );
        }
    }

    #[test]
    fn from_mirror_path_cannot_smuggle_an_authority() {
        for bad in [
            "/https/evil.com@good.com/x",
            "/https/a.com%2F@b.com/x",
            "/https/user:pw@h/x",
            "/https/a.com%40b.com/x",
            "/https/a.com%2Fb.com/x",
            "/https/a.com%3Fb.com/x",
            "/https/a.com%23@b.com/x",
            "/https/a.com\\@b.com/x",
            "/https/a.com#@b.com/x",
            "/https/a.com:443:80/x",
            "/https/[::1]@b.com/x",
        ] {
            assert!(
                matches!(from_mirror_path(bad), Err(UrlError::Invalid { .. })),
                "{bad}: {:?}",
                from_mirror_path(bad)
            );
        }
        // The path cannot climb into the authority either.
        assert_eq!(
            from_mirror_path("/https/h/..%2f..%2f/../@evil/x")
                .unwrap()
                .host(),
            "h"
        );
    }

    #[test]
    fn content_disposition_sanitizes() {
        let cases = [
            (
                "git-2.39.1.tar.xz",
                r#"attachment; filename="git-2.39.1.tar.xz""#,
            ),
            ("../../etc/passwd", r#"attachment; filename="passwd""#),
            ("C:\\evil\\a.exe", r#"attachment; filename="a.exe""#),
            (
                "a\r\nSet-Cookie: x=1",
                r#"attachment; filename="aSet-Cookie: x=1""#,
            ),
            ("say \"hi\".txt", r#"attachment; filename="say \"hi\".txt""#),
            ("", r#"attachment; filename="download""#),
            ("dir/", r#"attachment; filename="download""#),
            ("..", r#"attachment; filename="download""#),
            ("\u{7}\u{9b}", r#"attachment; filename="download""#),
            (
                "bü cher.tgz",
                r#"attachment; filename="b_ cher.tgz"; filename*=UTF-8''b%C3%BC%20cher.tgz"#,
            ),
            // Bidi controls and line separators are dropped (issue 11, item 8).
            (
                "evil\u{202E}zg.rat.exe",
                r#"attachment; filename="evilzg.rat.exe""#,
            ),
            (
                "\u{202A}a\u{202B}b\u{202C}c\u{202D}d\u{2066}e\u{2067}f\u{2068}g\u{2069}.tgz",
                r#"attachment; filename="abcdefg.tgz""#,
            ),
            (
                "x\u{2028}y\u{2029}z\u{200E}\u{200F}\u{061C}.zip",
                r#"attachment; filename="xyz.zip""#,
            ),
            (
                "ü\u{202E}.tgz",
                r#"attachment; filename="_.tgz"; filename*=UTF-8''%C3%BC.tgz"#,
            ),
            ("\u{202E}\u{2028}", r#"attachment; filename="download""#),
            (
                "日本\"'.zip",
                r#"attachment; filename="__\"'.zip"; filename*=UTF-8''%E6%97%A5%E6%9C%AC%22%27.zip"#,
            ),
        ];
        for (name, want) in cases {
            assert_eq!(content_disposition(name), want, "{name:?}");
        }
    }

    /// Found by the `content_disposition` fuzz target (fuzz/corpus/content_disposition/
    /// seed-bidi): bidi controls survived into `filename*`, so `invoice\u{202e}gpj.exe`
    /// displayed as `invoiceexe.jpg` (SPEC 10).
    #[test]
    fn content_disposition_drops_bidi_controls_and_separators() {
        assert_eq!(
            content_disposition("invoice\u{202e}gpj.exe"),
            r#"attachment; filename="invoicegpj.exe""#
        );
        for c in ('\u{202a}'..='\u{202e}').chain('\u{2066}'..='\u{2069}') {
            assert_eq!(
                content_disposition(&format!("a{c}b.tgz")),
                r#"attachment; filename="ab.tgz""#,
                "U+{:04X}",
                c as u32
            );
        }
        assert_eq!(
            content_disposition("a\u{2028}b\u{2029}ü"),
            r#"attachment; filename="ab_"; filename*=UTF-8''ab%C3%BC"#
        );
        assert_eq!(
            content_disposition("\u{2066}..\u{2069}"),
            r#"attachment; filename="download""#
        );
    }

    /// URLs built from parts that exercise the normalizer: case, ports, IP forms, escapes,
    /// dot segments, userinfo, queries and fragments.
    fn url_strategy() -> impl Strategy<Value = String> {
        let scheme = prop::sample::select(vec!["http", "https", "ftp", "HTTP", "Https"]);
        let userinfo = prop::option::of("[a-zA-Z0-9%~:.!$&'()*+,;=-]{0,8}@");
        let host = prop_oneof![
            "[a-zA-Z0-9-]{1,10}(\\.[a-zA-Z0-9-]{1,10}){0,3}",
            "[a-z]{1,5}\\.(ü|ß|é|中)[a-z]{0,3}",
            Just("0x7f.1".to_owned()),
            Just("127.1".to_owned()),
            Just("[::ffff:10.0.0.1]".to_owned()),
            Just("[2001:DB8::1]".to_owned()),
        ];
        let port = prop::option::of(prop_oneof![Just(80u16), Just(443), Just(21), 1..=65535u16]);
        let segment = prop_oneof![
            "[a-zA-Z0-9._~!$&'()*+,;=:@-]{0,6}",
            Just(".".to_owned()),
            Just("..".to_owned()),
            "(%[0-9a-fA-F]{2}|%|\\.|%2[eE]){1,4}",
            "[\"<>{}|^`ü€]{1,3}",
        ];
        let path = prop::collection::vec(segment, 0..6).prop_map(|s| s.join("/"));
        let query = prop::option::of("[a-zA-Z0-9%=&/?:@'\"<>\\\\ü.-]{0,12}");
        let fragment = prop::option::of("[a-z#?]{0,4}");
        (scheme, userinfo, host, port, path, query, fragment).prop_map(
            |(scheme, userinfo, host, port, path, query, fragment)| {
                let mut s = format!("{scheme}://{}{host}", userinfo.unwrap_or_default());
                if let Some(port) = port {
                    s += &format!(":{port}");
                }
                s += &format!("/{path}");
                if let Some(q) = query {
                    s += &format!("?{q}");
                }
                if let Some(f) = fragment {
                    s += &format!("#{f}");
                }
                s
            },
        )
    }

    proptest! {
        #[test]
        fn normalization_is_idempotent(s in prop_oneof![url_strategy(), "(https?|ftp)://\\PC{0,40}"]) {
            if let Ok(u) = UpstreamUrl::parse(&s) {
                prop_assert_eq!(UpstreamUrl::parse(u.as_str()), Ok(u.clone()));
                prop_assert!(u.as_url().fragment().is_none());
            }
        }

        #[test]
        fn mirror_path_inverts(s in url_strategy()) {
            if let Ok(u) = UpstreamUrl::parse(&s) {
                if u.as_url().username().is_empty() && u.as_url().password().is_none() {
                    prop_assert_eq!(from_mirror_path(&u.mirror_path()), Ok(u));
                }
            }
        }

        #[test]
        fn mirror_path_host_is_the_literal_segment(host in "[a-z0-9.%@:\\[\\]]{1,12}") {
            if let Ok(u) = from_mirror_path(&format!("/https/{host}/x")) {
                prop_assert!(!host.contains('@'));
                prop_assert!(u.as_url().username().is_empty() && u.as_url().password().is_none());
                prop_assert_eq!(u.as_url().path(), "/x");
            }
        }

        #[test]
        fn content_disposition_is_a_safe_header(name in "\\PC*|[\\x00-\\x7f\"\\\\/]*") {
            let h = content_disposition(&name);
            prop_assert!(h.starts_with("attachment; filename=\""));
            prop_assert!(h.is_ascii() && !h.chars().any(|c| c.is_ascii_control()));
            // The quoted string ends at the first unescaped quote, and that must be its last char.
            let quoted = &h["attachment; filename=\"".len()..];
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => { chars.next(); }
                    '"' => { end = Some(i); break; }
                    _ => {}
                }
            }
            let end = end.expect("closing quote");
            let after = &quoted[end + 1..];
            prop_assert!(after.is_empty() || after.starts_with("; filename*=UTF-8''"), "{}", h);
            prop_assert!(!after.contains('"'));
            // No bidi control or line separator survives, encoded or not.
            for hidden in [
                "%E2%80%A8", "%E2%80%A9", "%E2%80%AA", "%E2%80%AB", "%E2%80%AC", "%E2%80%AD",
                "%E2%80%AE", "%E2%81%A6", "%E2%81%A7", "%E2%81%A8", "%E2%81%A9", "%E2%80%8E",
                "%E2%80%8F", "%D8%9C",
            ] {
                prop_assert!(!after.contains(hidden), "{}", h);
            }
        }
    }
}
