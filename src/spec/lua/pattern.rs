//! Lua 5.3 patterns (`lstrlib.c`'s matcher) over ASCII strings, with a step budget so a
//! hostile pattern cannot backtrack forever.

use super::{Result, refuse};

/// Captures beyond this are an error in Lua too.
const MAX_CAPTURES: usize = 32;
/// Nesting of the matcher's recursion (Lua's `MAXCCALLS`).
const MAX_DEPTH: usize = 200;

/// A capture: a substring, or a position (`()`).
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Capture {
    Text(usize, usize),
    Position(usize),
}

struct State<'a> {
    src: &'a [u8],
    pat: &'a [u8],
    depth: usize,
    /// Steps left before the match is given up as too expensive.
    budget: &'a mut usize,
    /// Start and length (`None` while open, `Some(usize::MAX)` for a position capture).
    captures: Vec<(usize, Option<usize>)>,
}

/// Find `pat` in `src` from byte `init`: the match's `(start, end)` and its captures.
pub(super) fn find(
    src: &str,
    pat: &str,
    init: usize,
    budget: &mut usize,
) -> Result<Option<(usize, usize, Vec<Capture>)>> {
    let (pat, anchored) = match pat.strip_prefix('^') {
        Some(p) => (p.as_bytes(), true),
        None => (pat.as_bytes(), false),
    };
    let mut s = init;
    loop {
        let mut st = State {
            src: src.as_bytes(),
            pat,
            depth: 0,
            budget,
            captures: Vec::new(),
        };
        if let Some(end) = st.do_match(s, 0)? {
            let caps = st.collect(s, end)?;
            return Ok(Some((s, end, caps)));
        }
        s += 1;
        if anchored || s > src.len() {
            return Ok(None);
        }
    }
}

impl State<'_> {
    fn tick(&mut self) -> Result<()> {
        if *self.budget == 0 {
            return refuse("a Lua pattern match takes too long");
        }
        *self.budget -= 1;
        Ok(())
    }

    fn collect(&self, s: usize, e: usize) -> Result<Vec<Capture>> {
        if self.captures.is_empty() {
            return Ok(vec![Capture::Text(s, e)]);
        }
        self.captures
            .iter()
            .map(|&(start, len)| match len {
                Some(usize::MAX) => Ok(Capture::Position(start + 1)),
                Some(l) => Ok(Capture::Text(start, start + l)),
                None => refuse("an unfinished capture in a Lua pattern"),
            })
            .collect()
    }

    /// Index after the single-character class at `p`.
    fn class_end(&self, p: usize) -> Result<usize> {
        let pat = self.pat;
        let Some(&c) = pat.get(p) else {
            return refuse("a malformed Lua pattern");
        };
        match c {
            b'%' => {
                if p + 1 >= pat.len() {
                    return refuse("a Lua pattern ends with '%'");
                }
                Ok(p + 2)
            }
            b'[' => {
                let mut q = p + 1;
                if pat.get(q) == Some(&b'^') {
                    q += 1;
                }
                // The first character of a set is literal, even `]`.
                loop {
                    let Some(&x) = pat.get(q) else {
                        return refuse("a Lua pattern has a missing ']'");
                    };
                    q += 1;
                    if x == b'%' {
                        if q >= pat.len() {
                            return refuse("a Lua pattern has a missing ']'");
                        }
                        q += 1;
                    }
                    if pat.get(q) == Some(&b']') {
                        return Ok(q + 1);
                    }
                }
            }
            _ => Ok(p + 1),
        }
    }

    fn single(&self, s: usize, p: usize, ep: usize) -> bool {
        let Some(&c) = self.src.get(s) else {
            return false;
        };
        match self.pat[p] {
            b'.' => true,
            b'%' => class(c, self.pat[p + 1]),
            b'[' => set(c, &self.pat[p..ep]),
            x => x == c,
        }
    }

    fn do_match(&mut self, mut s: usize, mut p: usize) -> Result<Option<usize>> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return refuse("a Lua pattern is too complex");
        }
        let result = loop {
            self.tick()?;
            if p == self.pat.len() {
                break Some(s);
            }
            match self.pat[p] {
                b'(' => {
                    break if self.pat.get(p + 1) == Some(&b')') {
                        self.start_capture(s, p + 2, Some(usize::MAX))?
                    } else {
                        self.start_capture(s, p + 1, None)?
                    };
                }
                b')' => break self.end_capture(s, p + 1)?,
                b'$' if p + 1 == self.pat.len() => {
                    break (s == self.src.len()).then_some(s);
                }
                b'%' if self.pat.get(p + 1) == Some(&b'b') => {
                    let (Some(&open), Some(&close)) = (self.pat.get(p + 2), self.pat.get(p + 3))
                    else {
                        return refuse("a Lua pattern has a malformed %b");
                    };
                    match self.balance(s, open, close)? {
                        Some(e) => {
                            s = e;
                            p += 4;
                            continue;
                        }
                        None => break None,
                    }
                }
                b'%' if self.pat.get(p + 1) == Some(&b'f') => {
                    p += 2;
                    if self.pat.get(p) != Some(&b'[') {
                        return refuse("a Lua pattern has a %f without a set");
                    }
                    let ep = self.class_end(p)?;
                    let prev = if s == 0 { 0 } else { self.src[s - 1] };
                    let cur = self.src.get(s).copied().unwrap_or(0);
                    let set_pat = &self.pat[p..ep];
                    if !set(prev, set_pat) && set(cur, set_pat) {
                        p = ep;
                        continue;
                    }
                    break None;
                }
                b'%' if self.pat.get(p + 1).is_some_and(u8::is_ascii_digit) => {
                    let l = (self.pat[p + 1] - b'1') as usize;
                    let Some(&(start, Some(len))) = self.captures.get(l) else {
                        return refuse("a Lua pattern refers to an invalid capture");
                    };
                    if len == usize::MAX {
                        return refuse("a Lua pattern refers to a position capture");
                    }
                    let cap = &self.src[start..start + len];
                    if self.src[s..].starts_with(cap) {
                        s += len;
                        p += 2;
                        continue;
                    }
                    break None;
                }
                _ => {}
            }
            let ep = self.class_end(p)?;
            let m = self.single(s, p, ep);
            match self.pat.get(ep) {
                Some(b'?') => {
                    if m {
                        if let Some(r) = self.do_match(s + 1, ep + 1)? {
                            break Some(r);
                        }
                    }
                    p = ep + 1;
                }
                Some(b'+') => {
                    break if m {
                        self.max_expand(s + 1, p, ep)?
                    } else {
                        None
                    };
                }
                Some(b'*') => break self.max_expand(s, p, ep)?,
                Some(b'-') => break self.min_expand(s, p, ep)?,
                _ => {
                    if !m {
                        break None;
                    }
                    s += 1;
                    p = ep;
                }
            }
        };
        self.depth -= 1;
        Ok(result)
    }

    fn max_expand(&mut self, s: usize, p: usize, ep: usize) -> Result<Option<usize>> {
        let mut i = 0;
        while self.single(s + i, p, ep) {
            self.tick()?;
            i += 1;
        }
        loop {
            if let Some(r) = self.do_match(s + i, ep + 1)? {
                return Ok(Some(r));
            }
            if i == 0 {
                return Ok(None);
            }
            i -= 1;
        }
    }

    fn min_expand(&mut self, mut s: usize, p: usize, ep: usize) -> Result<Option<usize>> {
        loop {
            if let Some(r) = self.do_match(s, ep + 1)? {
                return Ok(Some(r));
            }
            if self.single(s, p, ep) {
                s += 1;
            } else {
                return Ok(None);
            }
        }
    }

    fn start_capture(&mut self, s: usize, p: usize, what: Option<usize>) -> Result<Option<usize>> {
        if self.captures.len() >= MAX_CAPTURES {
            return refuse("a Lua pattern has too many captures");
        }
        self.captures.push((s, what));
        let r = self.do_match(s, p)?;
        if r.is_none() {
            self.captures.pop();
        }
        Ok(r)
    }

    fn end_capture(&mut self, s: usize, p: usize) -> Result<Option<usize>> {
        let Some(l) = self.captures.iter().rposition(|c| c.1.is_none()) else {
            return refuse("a Lua pattern has an unmatched ')'");
        };
        self.captures[l].1 = Some(s - self.captures[l].0);
        let r = self.do_match(s, p)?;
        if r.is_none() {
            self.captures[l].1 = None;
        }
        Ok(r)
    }

    fn balance(&mut self, s: usize, open: u8, close: u8) -> Result<Option<usize>> {
        if self.src.get(s) != Some(&open) {
            return Ok(None);
        }
        let mut level = 1;
        let mut i = s + 1;
        while let Some(&c) = self.src.get(i) {
            self.tick()?;
            if c == close {
                level -= 1;
                if level == 0 {
                    return Ok(Some(i + 1));
                }
            } else if c == open {
                level += 1;
            }
            i += 1;
        }
        Ok(None)
    }
}

/// `%a`, `%d`, ... (uppercase: the complement); any other letter stands for itself.
fn class(c: u8, cl: u8) -> bool {
    let m = match cl.to_ascii_lowercase() {
        b'a' => c.is_ascii_alphabetic(),
        b'c' => c.is_ascii_control(),
        b'd' => c.is_ascii_digit(),
        b'g' => c.is_ascii_graphic(),
        b'l' => c.is_ascii_lowercase(),
        b'p' => c.is_ascii_punctuation(),
        b's' => matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c),
        b'u' => c.is_ascii_uppercase(),
        b'w' => c.is_ascii_alphanumeric(),
        b'x' => c.is_ascii_hexdigit(),
        _ => return cl == c,
    };
    if cl.is_ascii_uppercase() { !m } else { m }
}

/// `[...]` (the whole set, brackets included) against `c`.
fn set(c: u8, set: &[u8]) -> bool {
    let mut p = 1;
    let end = set.len() - 1;
    let negate = set.get(1) == Some(&b'^');
    if negate {
        p += 1;
    }
    while p < end {
        if set[p] == b'%' && p + 1 < end {
            p += 1;
            if class(c, set[p]) {
                return !negate;
            }
            p += 1;
        } else if set.get(p + 1) == Some(&b'-') && p + 2 < end {
            if set[p] <= c && c <= set[p + 2] {
                return !negate;
            }
            p += 3;
        } else {
            if set[p] == c {
                return !negate;
            }
            p += 1;
        }
    }
    negate
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(s: &str, p: &str) -> Option<(usize, usize)> {
        let mut budget = 100_000;
        find(s, p, 0, &mut budget).unwrap().map(|(a, b, _)| (a, b))
    }

    #[test]
    fn matching() {
        assert_eq!(f("a.b", "%."), Some((1, 2)));
        assert_eq!(f("v1.2.3", "^v"), Some((0, 1)));
        assert_eq!(f("xv1", "^v"), None);
        assert_eq!(f("1.2~rc1", "~.*$"), Some((3, 7)));
        assert_eq!(f("abc123", "%d+"), Some((3, 6)));
        assert_eq!(f("abc", "[^a]+"), Some((1, 3)));
        assert_eq!(f("f(a(b))c", "%b()"), Some((1, 7)));
        assert_eq!(f("THE (quick) fox", "%f[%a]%a+"), Some((0, 3)));
        assert_eq!(f("aaa", "a-"), Some((0, 0)));
        assert_eq!(f("abab", "(ab)%1"), Some((0, 4)));
        let mut budget = 1_000;
        assert!(find(&"a".repeat(500), "a*a*a*a*b", 0, &mut budget).is_err());
    }
}
