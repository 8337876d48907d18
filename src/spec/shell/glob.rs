//! bash patterns (`*`, `?`, `[...]`, `\x`) for `${v#pat}`, `${v%pat}` and `${v/pat/rep}`.

use super::{Result, refuse};

/// Work allowed for one pattern operation, in character comparisons (roughly).
const MAX_COST: usize = 20_000_000;

/// What comparing `pattern` at `positions` text positions costs; refused when it would cost
/// too much (a long variable and a long pattern).
pub(super) fn check_cost(pattern: &[char], positions: usize) -> Result<usize> {
    let cost = positions
        .saturating_mul(pattern.len().max(1))
        .saturating_mul(positions.max(1));
    if cost > MAX_COST {
        return refuse("a pattern operation on too long a text");
    }
    Ok(cost)
}

/// Whether `pat` matches the whole of `s`. Backtracks only to the last `*`, so the cost is
/// at most `pat.len() * s.len()` steps.
pub(super) fn matches(pat: &[char], s: &[char]) -> bool {
    let (mut p, mut i) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if p < pat.len() {
            match pat[p] {
                '*' => {
                    star = Some((p, i));
                    p += 1;
                    continue;
                }
                '?' => {
                    p += 1;
                    i += 1;
                    continue;
                }
                '[' => {
                    if let Some((hit, next)) = bracket(pat, p, s[i]) {
                        if hit {
                            p = next;
                            i += 1;
                            continue;
                        }
                    } else if s[i] == '[' {
                        // An unclosed `[` is an ordinary character.
                        p += 1;
                        i += 1;
                        continue;
                    }
                }
                '\\' if p + 1 < pat.len() && pat[p + 1] == s[i] => {
                    p += 2;
                    i += 1;
                    continue;
                }
                '\\' if p + 1 < pat.len() => {}
                c if c == s[i] => {
                    p += 1;
                    i += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, si)) => {
                star = Some((sp, si + 1));
                p = sp + 1;
                i = si + 1;
            }
            None => return false,
        }
    }
    pat[p..].iter().all(|&c| c == '*')
}

/// A `[...]` expression at `pat[p]` tested against `c`: whether it matches, and the index
/// after it; `None` if it is not closed.
fn bracket(pat: &[char], p: usize, c: char) -> Option<(bool, usize)> {
    let mut i = p + 1;
    let negate = matches!(pat.get(i), Some('!' | '^'));
    if negate {
        i += 1;
    }
    let mut hit = false;
    let mut first = true;
    loop {
        let &x = pat.get(i)?;
        if x == ']' && !first {
            return Some((hit != negate, i + 1));
        }
        first = false;
        if x == '[' && pat.get(i + 1) == Some(&':') {
            let rest: String = pat[i + 2..].iter().collect();
            if let Some(end) = rest.find(":]") {
                hit |= class(&rest[..end], c);
                i += 2 + end + 2;
                continue;
            }
        }
        let lo = if x == '\\' {
            i += 1;
            *pat.get(i)?
        } else {
            x
        };
        if pat.get(i + 1) == Some(&'-') && pat.get(i + 2).is_some_and(|&h| h != ']') {
            let hi = pat[i + 2];
            hit |= lo <= c && c <= hi;
            i += 3;
        } else {
            hit |= lo == c;
            i += 1;
        }
    }
}

/// POSIX character classes (ASCII).
fn class(name: &str, c: char) -> bool {
    match name {
        "alpha" => c.is_ascii_alphabetic(),
        "digit" => c.is_ascii_digit(),
        "alnum" => c.is_ascii_alphanumeric(),
        "upper" => c.is_ascii_uppercase(),
        "lower" => c.is_ascii_lowercase(),
        "space" => matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c'),
        "blank" => matches!(c, ' ' | '\t'),
        "punct" => c.is_ascii_punctuation(),
        "xdigit" => c.is_ascii_hexdigit(),
        "cntrl" => c.is_ascii_control(),
        "print" => c.is_ascii_graphic() || c == ' ',
        "graph" => c.is_ascii_graphic(),
        _ => false,
    }
}

/// `${v/pat/rep}` (first match), `${v//pat/rep}` (`all`), `${v/#pat/rep}` (`anchor` at the
/// start), `${v/%pat/rep}` (at the end). Matches are the longest at the leftmost position.
pub(super) fn replace(
    v: &[char],
    pat: &[char],
    rep: &str,
    all: bool,
    anchor: Option<bool>,
) -> String {
    let n = v.len();
    let whole = |a: &[char]| a.iter().collect::<String>();
    match anchor {
        Some(true) => {
            return match (0..=n).rev().find(|&k| matches(pat, &v[..k])) {
                Some(k) => format!("{rep}{}", whole(&v[k..])),
                None => whole(v),
            };
        }
        Some(false) => {
            return match (0..=n).find(|&k| matches(pat, &v[k..])) {
                Some(k) => format!("{}{rep}", whole(&v[..k])),
                None => whole(v),
            };
        }
        None => {}
    }
    if pat.is_empty() {
        return whole(v);
    }
    let mut out = String::new();
    let mut i = 0;
    let mut replaced = false;
    while i < n {
        let end = if replaced && !all {
            None
        } else {
            (i..=n).rev().find(|&e| matches(pat, &v[i..e]))
        };
        match end {
            Some(e) if e > i => {
                out.push_str(rep);
                replaced = true;
                i = e;
            }
            _ => {
                out.push(v[i]);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, s: &str) -> bool {
        matches(
            &p.chars().collect::<Vec<_>>(),
            &s.chars().collect::<Vec<_>>(),
        )
    }

    #[test]
    fn patterns() {
        assert!(m("*", ""));
        assert!(m("a*c", "abbbc"));
        assert!(!m("a*c", "abbb"));
        assert!(m("?.?", "1.2"));
        assert!(m("[0-9]*", "7up"));
        assert!(!m("[!0-9]*", "7up"));
        assert!(m("[[:alpha:]]x", "bx"));
        assert!(m("\\*", "*"));
        assert!(!m("\\*", "a"));
        assert!(m("[]a]", "]"));
        assert!(m("a[", "a["));
        assert!(m("*.*.*", "1.2.3"));
    }

    #[test]
    fn replacing() {
        let r = |v: &str, p: &str, rep: &str, all, anchor| {
            let v: Vec<char> = v.chars().collect();
            let p: Vec<char> = p.chars().collect();
            replace(&v, &p, rep, all, anchor)
        };
        assert_eq!(r("1.2.3", ".", "_", false, None), "1_2.3");
        assert_eq!(r("1.2.3", ".", "_", true, None), "1_2_3");
        assert_eq!(r("v1.2", "v", "", false, Some(true)), "1.2");
        assert_eq!(r("1.2~rc1", "~*", "", false, Some(false)), "1.2");
        assert_eq!(r("abc", "", "x", true, None), "abc");
        assert_eq!(r("aXbXc", "X*", "-", false, None), "a-");
    }
}
