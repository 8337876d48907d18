//! Properties shared by several fuzz targets.

/// Unicode bidi controls and line/paragraph separators (SPEC 10): they can make a file name
/// display as something else.
pub fn is_bidi_or_separator(c: char) -> bool {
    matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{2028}' | '\u{2029}')
}

/// A `Content-Disposition` value must name a file whose name, in both the quoted `filename`
/// and the RFC 6266 `filename*`, holds no path separator, control or bidi character.
pub fn check_disposition(header: &str) {
    let rest = header
        .strip_prefix("attachment; filename=\"")
        .unwrap_or_else(|| panic!("not an attachment: {header:?}"));
    // The quoted name runs to the first `"` not escaped by a backslash.
    let mut name = String::new();
    let mut chars = rest.chars();
    loop {
        match chars.next() {
            Some('\\') => name.push(chars.next().expect("an escape is complete")),
            Some('"') => break,
            Some(c) => name.push(c),
            None => panic!("unterminated filename in {header:?}"),
        }
    }
    assert!(header.is_ascii(), "non-ASCII header {header:?}");
    check_name(&name, header);
    let after: String = chars.collect();
    if !after.is_empty() {
        let encoded = after
            .strip_prefix("; filename*=UTF-8''")
            .unwrap_or_else(|| panic!("unexpected parameters in {header:?}"));
        let decoded = percent_decode(encoded);
        check_name(&decoded, header);
    }
}

fn check_name(name: &str, header: &str) {
    assert!(!name.is_empty(), "empty name in {header:?}");
    assert!(
        !name.contains(['/', '\\']),
        "separator in {name:?} of {header:?}"
    );
    assert!(
        !name
            .chars()
            .any(|c| c.is_control() || is_bidi_or_separator(c)),
        "control or bidi character in {name:?} of {header:?}"
    );
    assert!(name != "." && name != "..", "{name:?} in {header:?}");
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3).expect("a complete escape");
            out.push(u8::from_str_radix(hex, 16).expect("hex digits"));
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).expect("filename* is UTF-8")
}
