//! Lexical helpers of the macro language: names, brackets, `%define` bodies, arguments and
//! option parsing, as rpm's `macro.c` scans them.

use super::QUOTE;

/// End of a macro name starting at `j`: `[-]name`, `-f*`, or the specials `*`, `**`, `#`.
pub(super) fn scan_name(s: &str, j: usize) -> usize {
    let b = s.as_bytes();
    let mut i = j;
    match b.get(i) {
        Some(b'*') => {
            i += 1;
            if b.get(i) == Some(&b'*') {
                i += 1;
            }
            return i;
        }
        Some(b'#') => return i + 1,
        Some(b'-') => i += 1,
        _ => {}
    }
    let flag = i > j;
    let start = i;
    while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
        i += 1;
    }
    if flag && i > start && b.get(i) == Some(&b'*') {
        i += 1;
    }
    if flag && i == start {
        return j;
    }
    // rpm reads `%name*`, `%name**` and `%name#` as one (undefined) name: `v%version#/x`
    // stays as written.
    if !flag && i > start {
        match b.get(i) {
            Some(b'*') => i += 1 + usize::from(b.get(i + 1) == Some(&b'*')),
            Some(b'#') => i += 1,
            _ => {}
        }
    }
    i
}

/// `%2B`, `%E5`: two uppercase hex digits after `%` that are not a defined macro are
/// percent-encoding. Lowercase ones are not assumed, so an undefined `%dev_url` is reported.
pub(super) fn looks_percent_encoded(name: &str) -> bool {
    let hex = |c: &u8| c.is_ascii_digit() || (b'A'..=b'F').contains(c);
    let b = name.as_bytes();
    b.len() >= 2 && hex(&b[0]) && hex(&b[1])
}

/// Index of the bracket closing the one at `open` (rpm's `matchchar`: nesting counts every
/// `pl`, a backslash escapes the next character).
pub(crate) fn find_close(s: &str, open: usize, pl: u8, pr: u8) -> Option<usize> {
    let b = s.as_bytes();
    let mut level = 0usize;
    let mut i = open;
    while i < b.len() {
        let c = b[i];
        if c == b'\\' {
            i += 2;
            continue;
        }
        if c == pr {
            level -= 1;
            if level == 0 {
                return Some(i);
            }
        } else if c == pl {
            level += 1;
        }
        i += 1;
    }
    None
}

/// The body of a `%define` starting at `i`: to the end of the line, continued over
/// backslash-newlines and over newlines inside `%{...}`, `%(...)` or `%[...]`. As in rpm, a
/// backslash is dropped and the character after it kept as it is (`\\.` becomes `\.`, a
/// backslash-newline a newline). Returns the body and the index after its terminating newline.
pub(super) fn define_body(s: &str, start: usize) -> (String, usize) {
    let mut body = String::new();
    let (mut braces, mut parens, mut brackets) = (0usize, 0usize, 0usize);
    let mut chars = s[start..].char_indices().peekable();
    while let Some((k, c)) = chars.next() {
        match c {
            '\\' => {
                if let Some((_, escaped)) = chars.next() {
                    body.push(escaped);
                    continue;
                }
            }
            '%' => {
                if let Some(n @ ('{' | '(' | '[' | '%')) = chars.peek().map(|&(_, n)| n) {
                    chars.next();
                    body.push('%');
                    body.push(n);
                    match n {
                        '{' => braces += 1,
                        '(' => parens += 1,
                        '[' => brackets += 1,
                        _ => {}
                    }
                    continue;
                }
            }
            '{' if braces > 0 => braces += 1,
            '}' if braces > 0 => braces -= 1,
            '(' if parens > 0 => parens += 1,
            ')' if parens > 0 => parens -= 1,
            '[' if brackets > 0 => brackets += 1,
            ']' if brackets > 0 => brackets -= 1,
            '\n' if braces == 0 && parens == 0 && brackets == 0 => {
                return (body, start + k + 1);
            }
            _ => {}
        }
        body.push(c);
    }
    (body, s.len())
}

/// Split macro arguments on whitespace, keeping `%{quote:...}` regions whole.
pub(super) fn split_args(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let (mut in_word, mut quoted) = (false, false);
    for c in s.chars() {
        if c == QUOTE {
            quoted = !quoted;
            in_word = true;
        } else if c.is_whitespace() && !quoted {
            if in_word {
                words.push(std::mem::take(&mut cur));
                in_word = false;
            }
        } else {
            cur.push(c);
            in_word = true;
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

/// GNU getopt with permutation, as rpm uses for parametric macros: `opts` is `"-"` (no option
/// processing) or option letters, each followed by `:` when it takes a value.
pub(super) type Parsed = (Vec<(char, Option<String>)>, Vec<String>);
pub(super) fn getopt(opts: &str, args: &[String]) -> Result<Parsed, String> {
    let mut flags = Vec::new();
    let mut positional = Vec::new();
    if opts == "-" {
        return Ok((flags, args.to_vec()));
    }
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if a == "--" {
            positional.extend(args[i + 1..].iter().cloned());
            break;
        }
        match a.strip_prefix('-') {
            Some(letters) if !letters.is_empty() => {
                for (k, c) in letters.char_indices() {
                    let Some(pos) = opts.find(c).filter(|_| c != ':') else {
                        return Err(format!("unknown option -{c}"));
                    };
                    if opts[pos + c.len_utf8()..].starts_with(':') {
                        let attached = &letters[k + c.len_utf8()..];
                        let value = if !attached.is_empty() {
                            attached.to_owned()
                        } else {
                            i += 1;
                            args.get(i)
                                .cloned()
                                .ok_or_else(|| format!("option -{c} requires a value"))?
                        };
                        flags.push((c, Some(value)));
                        break;
                    }
                    flags.push((c, None));
                }
            }
            _ => positional.push(a.clone()),
        }
        i += 1;
    }
    Ok((flags, positional))
}
