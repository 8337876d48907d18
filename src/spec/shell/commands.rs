//! The commands the evaluator knows, with GNU coreutils and bash builtin semantics for the
//! options specs use; any other option or a file operand is refused.

use super::{MAX_OUTPUT, Result, refuse, sed};
use crate::spec::printf::{self, Piece};

/// Run `name args` with `stdin`; its standard output.
pub(super) fn run(name: &str, args: &[String], stdin: &str) -> Result<String> {
    match name {
        "echo" => Ok(echo(args)),
        "printf" => printf(args),
        "cut" => cut(args, stdin),
        "tr" => tr(args, stdin),
        "sed" => sed::run(args, stdin),
        "head" => head(args, stdin),
        "basename" => basename(args),
        "dirname" => dirname(args),
        "true" | ":" => Ok(String::new()),
        _ => refuse(format!("{name:?} is not a command upcache evaluates")),
    }
}

/// bash's builtin `echo`: `-n`, `-e`, `-E` (and combinations) as leading arguments.
fn echo(args: &[String]) -> String {
    let (mut newline, mut escapes) = (true, false);
    let mut rest = args;
    while let Some((first, tail)) = rest.split_first() {
        let Some(flags) = first.strip_prefix('-') else {
            break;
        };
        if flags.is_empty() || !flags.chars().all(|c| matches!(c, 'n' | 'e' | 'E')) {
            break;
        }
        for c in flags.chars() {
            match c {
                'n' => newline = false,
                'e' => escapes = true,
                _ => escapes = false,
            }
        }
        rest = tail;
    }
    let mut out = rest.join(" ");
    if escapes {
        let (text, stop) = backslash_escapes(&out, true);
        out = text;
        if stop {
            return out;
        }
    }
    if newline {
        out.push('\n');
    }
    out
}

/// Backslash escapes of `echo -e` and printf formats; `\c` (echo only) ends the output,
/// reported by the flag.
fn backslash_escapes(s: &str, echo: bool) -> (String, bool) {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let Some(e) = chars.next() else {
            out.push('\\');
            break;
        };
        match e {
            'n' => out.push('\n'),
            't' => out.push('\t'),
            'r' => out.push('\r'),
            'a' => out.push('\x07'),
            'b' => out.push('\x08'),
            'f' => out.push('\x0c'),
            'v' => out.push('\x0b'),
            'e' | 'E' => out.push('\x1b'),
            '\\' => out.push('\\'),
            '"' if !echo => out.push('"'),
            '\'' if !echo => out.push('\''),
            'c' if echo => return (out, true),
            _ => {
                out.push('\\');
                out.push(e);
            }
        }
    }
    (out, false)
}

/// bash's builtin `printf`: `%s %d %i %u %x %X %o %c %%` with flags, width and precision;
/// the format is reused while arguments remain.
fn printf(args: &[String]) -> Result<String> {
    let args = match args.split_first() {
        Some((dashes, rest)) if dashes == "--" => rest,
        _ => args,
    };
    let Some((format, mut rest)) = args.split_first() else {
        return refuse("printf without a format");
    };
    if format.starts_with('-') {
        return refuse(format!("printf {format}"));
    }
    let (format, _) = backslash_escapes(format, false);
    let pieces = printf::parse(&format, 4096).or_else(|e| refuse(format!("printf: {e}")))?;
    let mut out = String::new();
    loop {
        let before = rest.len();
        for piece in &pieces {
            let c = match piece {
                Piece::Text(t) => {
                    out.push_str(t);
                    continue;
                }
                Piece::Conv(c) => c,
            };
            let arg = match rest.split_first() {
                Some((a, r)) => {
                    rest = r;
                    Some(a.as_str())
                }
                None => None,
            };
            let body = match c.conv {
                's' => {
                    let s = arg.unwrap_or("");
                    match c.precision {
                        Some(p) => s.chars().take(p).collect(),
                        None => s.to_owned(),
                    }
                }
                'c' => arg
                    .and_then(|a| a.chars().next())
                    .map_or(String::new(), String::from),
                'd' | 'i' | 'u' | 'x' | 'X' | 'o' => {
                    let a = arg.unwrap_or("0").trim();
                    let n = a.parse::<i64>().ok();
                    match n.and_then(|n| c.integer(n)) {
                        Some(body) if !c.flags.contains(['+', ' ', '#']) => body,
                        _ => return refuse(format!("printf %{}{} of {a:?}", c.flags, c.conv)),
                    }
                }
                'b' => backslash_escapes(arg.unwrap_or(""), true).0,
                other => return refuse(format!("printf %{other}")),
            };
            out.push_str(&c.pad(&body));
            if out.len() > MAX_OUTPUT {
                return refuse(format!("the output exceeds {MAX_OUTPUT} bytes"));
            }
        }
        // Reused only if it consumed arguments, and only while some remain.
        if rest.is_empty() || rest.len() == before {
            break;
        }
    }
    Ok(out)
}

/// Options with a value, GNU style: `-d.`, `-d .`, `--delimiter=.` is refused.
struct Opts<'a> {
    args: &'a [String],
    i: usize,
}

impl<'a> Opts<'a> {
    fn new(args: &'a [String]) -> Self {
        Opts { args, i: 0 }
    }

    /// The next option letter and, for letters in `with_value`, its value; `None` at the
    /// first operand.
    fn next(&mut self, with_value: &str, cmd: &str) -> Result<Option<(char, Option<String>)>> {
        let Some(a) = self.args.get(self.i) else {
            return Ok(None);
        };
        if a == "--" {
            self.i += 1;
            return Ok(None);
        }
        let Some(body) = a.strip_prefix('-').filter(|b| !b.is_empty()) else {
            return Ok(None);
        };
        if body.starts_with('-') {
            return refuse(format!("{cmd} {a}"));
        }
        let c = body.chars().next().expect("not empty");
        self.i += 1;
        if !with_value.contains(c) {
            if body.len() > 1 {
                return refuse(format!("{cmd} {a} (combined options)"));
            }
            return Ok(Some((c, None)));
        }
        let value = if body.len() > 1 {
            body[1..].to_owned()
        } else {
            let Some(v) = self.args.get(self.i) else {
                return refuse(format!("{cmd} -{c} without a value"));
            };
            self.i += 1;
            v.clone()
        };
        Ok(Some((c, Some(value))))
    }

    fn operands(&self) -> &'a [String] {
        &self.args[self.i..]
    }
}

/// Only standard input: a file operand would read the file system.
fn stdin_only(cmd: &str, operands: &[String]) -> Result<()> {
    match operands {
        [] => Ok(()),
        [dash] if dash == "-" => Ok(()),
        [file, ..] => refuse(format!("{cmd} {file} (reading files)")),
    }
}

/// Lines of `text` without their newline; the flag says whether the last one had one.
fn lines(text: &str) -> (Vec<&str>, bool) {
    if text.is_empty() {
        return (Vec::new(), true);
    }
    let terminated = text.ends_with('\n');
    let body = text.strip_suffix('\n').unwrap_or(text);
    (body.split('\n').collect(), terminated)
}

/// A `cut` list (`1,3-4,6-`) as 1-based inclusive ranges.
fn cut_list(list: &str) -> Result<Vec<(usize, usize)>> {
    let mut ranges = Vec::new();
    for item in list.split([',', ' ']).filter(|s| !s.is_empty()) {
        let num = |s: &str| -> Result<usize> {
            match s.parse::<usize>() {
                Ok(n) if n >= 1 => Ok(n),
                _ => refuse(format!("cut list {list:?}")),
            }
        };
        let range = match item.split_once('-') {
            Some(("", "")) => return refuse(format!("cut list {list:?}")),
            Some(("", hi)) => (1, num(hi)?),
            Some((lo, "")) => (num(lo)?, usize::MAX),
            Some((lo, hi)) => (num(lo)?, num(hi)?),
            None => (num(item)?, num(item)?),
        };
        if range.0 > range.1 {
            return refuse(format!("cut list {list:?} (decreasing range)"));
        }
        ranges.push(range);
    }
    if ranges.is_empty() {
        return refuse(format!("cut list {list:?}"));
    }
    Ok(ranges)
}

/// GNU `cut -f LIST [-d C] [-s]` and `cut -c LIST` / `-b LIST`.
fn cut(args: &[String], stdin: &str) -> Result<String> {
    let mut opts = Opts::new(args);
    let (mut delim, mut fields, mut chars, mut only_delimited) = ('\t', None, None, false);
    while let Some((c, v)) = opts.next("dfcb", "cut")? {
        match (c, v) {
            ('d', Some(d)) => {
                let mut it = d.chars();
                match (it.next(), it.next()) {
                    (Some(c), None) => delim = c,
                    _ => return refuse(format!("cut -d {d:?} (one character expected)")),
                }
            }
            ('f', Some(l)) => fields = Some(cut_list(&l)?),
            ('c' | 'b', Some(l)) => chars = Some(cut_list(&l)?),
            ('s', None) => only_delimited = true,
            (c, _) => return refuse(format!("cut -{c}")),
        }
    }
    stdin_only("cut", opts.operands())?;
    let selected =
        |ranges: &[(usize, usize)], i: usize| ranges.iter().any(|&(lo, hi)| lo <= i + 1 && i < hi);
    let mut out = String::new();
    let (input, _) = lines(stdin);
    match (fields, chars) {
        (Some(ranges), None) => {
            for line in input {
                if !line.contains(delim) {
                    if !only_delimited {
                        out.push_str(line);
                        out.push('\n');
                    }
                    continue;
                }
                let kept: Vec<&str> = line
                    .split(delim)
                    .enumerate()
                    .filter(|(i, _)| selected(&ranges, *i))
                    .map(|(_, f)| f)
                    .collect();
                out.push_str(&kept.join(&delim.to_string()));
                out.push('\n');
            }
        }
        (None, Some(ranges)) => {
            for line in input {
                out.extend(
                    line.chars()
                        .enumerate()
                        .filter(|(i, _)| selected(&ranges, *i))
                        .map(|(_, c)| c),
                );
                out.push('\n');
            }
        }
        _ => return refuse("cut needs exactly one of -f, -c and -b"),
    }
    Ok(out)
}

/// A `tr` set: characters, `a-z` ranges, backslash escapes and `[:class:]` names.
fn tr_set(s: &str) -> Result<Vec<char>> {
    const MAX_SET: usize = 256;
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let unescape = |i: &mut usize| -> char {
        let c = chars[*i];
        *i += 1;
        if c != '\\' || *i >= chars.len() {
            return c;
        }
        let e = chars[*i];
        *i += 1;
        match e {
            'n' => '\n',
            't' => '\t',
            'r' => '\r',
            other => other,
        }
    };
    while i < chars.len() {
        if chars[i] == '[' {
            let rest: String = chars[i..].iter().collect();
            if let Some(name) = rest.strip_prefix("[:").and_then(|r| r.split(":]").next()) {
                if rest.starts_with(&format!("[:{name}:]")) {
                    let class: Vec<char> = match name {
                        "upper" => ('A'..='Z').collect(),
                        "lower" => ('a'..='z').collect(),
                        "digit" => ('0'..='9').collect(),
                        "space" => vec!['\t', '\n', '\x0b', '\x0c', '\r', ' '],
                        "blank" => vec!['\t', ' '],
                        "alpha" => ('A'..='Z').chain('a'..='z').collect(),
                        "alnum" => ('0'..='9').chain('A'..='Z').chain('a'..='z').collect(),
                        "punct" => (0u8..128)
                            .map(char::from)
                            .filter(char::is_ascii_punctuation)
                            .collect(),
                        _ => return refuse(format!("tr class [:{name}:]")),
                    };
                    out.extend(class);
                    i += name.len() + 4;
                    continue;
                }
            }
            if rest.starts_with("[=") || rest.contains("*]") {
                return refuse(format!("tr set {s:?}"));
            }
        }
        let lo = unescape(&mut i);
        if i + 1 < chars.len() && chars[i] == '-' {
            i += 1;
            let hi = unescape(&mut i);
            if lo > hi {
                return refuse(format!("tr range {lo}-{hi} is in reverse order"));
            }
            out.extend(lo..=hi);
        } else {
            out.push(lo);
        }
        if out.len() > MAX_SET {
            return refuse(format!("tr set {s:?} (too large)"));
        }
    }
    Ok(out)
}

/// GNU `tr SET1 SET2`, `tr -d SET1`, `tr -s SET1 [SET2]`, `tr -ds SET1 SET2`.
fn tr(args: &[String], stdin: &str) -> Result<String> {
    let (mut delete, mut squeeze) = (false, false);
    let mut rest = args;
    while let Some((a, tail)) = rest.split_first() {
        let Some(flags) = a.strip_prefix('-').filter(|f| !f.is_empty()) else {
            break;
        };
        for f in flags.chars() {
            match f {
                'd' => delete = true,
                's' => squeeze = true,
                _ => return refuse(format!("tr -{f}")),
            }
        }
        rest = tail;
    }
    let sets: Vec<Vec<char>> = rest.iter().map(|s| tr_set(s)).collect::<Result<_>>()?;
    let (set1, set2) = match (sets.as_slice(), delete, squeeze) {
        ([s1], true, false) | ([s1], false, true) => (s1.clone(), None),
        ([s1, s2], false, _) | ([s1, s2], true, true) => (s1.clone(), Some(s2.clone())),
        _ => return refuse("tr with that number of sets"),
    };
    let map = |c: char| -> Option<char> {
        if delete {
            return (!set1.contains(&c)).then_some(c);
        }
        match (&set2, set1.iter().rposition(|&x| x == c)) {
            (Some(s2), Some(i)) if !s2.is_empty() => Some(s2[i.min(s2.len() - 1)]),
            _ => Some(c),
        }
    };
    if !delete && set2.as_ref().is_some_and(Vec::is_empty) {
        return refuse("tr with an empty second set");
    }
    let squeeze_set = match (&set2, delete) {
        (Some(s2), _) => s2.clone(),
        (None, _) => set1.clone(),
    };
    let mut out = String::new();
    for c in stdin.chars().filter_map(map) {
        if squeeze && squeeze_set.contains(&c) && out.ends_with(c) {
            continue;
        }
        out.push(c);
    }
    Ok(out)
}

/// GNU `head -c N`, `head -n N`, `head -N`.
fn head(args: &[String], stdin: &str) -> Result<String> {
    let mut opts = Opts::new(args);
    let mut count = (false, 10usize);
    while let Some((c, v)) = opts.next("cn", "head")? {
        let n = |v: Option<String>| -> Result<usize> {
            match v.as_deref().map(str::parse::<usize>) {
                Some(Ok(n)) => Ok(n),
                _ => refuse(format!("head -{c} {v:?}")),
            }
        };
        count = match c {
            'c' => (true, n(v)?),
            'n' => (false, n(v)?),
            d if d.is_ascii_digit() => {
                return refuse("head -N (use head -n N)");
            }
            _ => return refuse(format!("head -{c}")),
        };
    }
    stdin_only("head", opts.operands())?;
    Ok(match count {
        (true, n) => stdin.chars().take(n).collect(),
        (false, n) => stdin.split_inclusive('\n').take(n).collect(),
    })
}

/// GNU `basename NAME [SUFFIX]`.
fn basename(args: &[String]) -> Result<String> {
    let (name, suffix) = match args {
        [n] if !n.starts_with('-') => (n, None),
        [n, s] if !n.starts_with('-') => (n, Some(s)),
        _ => return refuse("basename with options or several names"),
    };
    let trimmed = name.trim_end_matches('/');
    if trimmed.is_empty() {
        return Ok(if name.is_empty() { "\n" } else { "/\n" }.to_owned());
    }
    let base = trimmed.rsplit('/').next().unwrap_or(trimmed);
    let base = match suffix {
        Some(s) if base != s.as_str() => base.strip_suffix(s.as_str()).unwrap_or(base),
        _ => base,
    };
    Ok(format!("{base}\n"))
}

/// GNU `dirname NAME`.
fn dirname(args: &[String]) -> Result<String> {
    let [name] = args else {
        return refuse("dirname with options or several names");
    };
    if name.starts_with('-') {
        return refuse(format!("dirname {name}"));
    }
    let trimmed = name.trim_end_matches('/');
    let dir = match trimmed.rfind('/') {
        None if name.starts_with('/') => "/",
        None => ".",
        Some(i) => {
            let d = trimmed[..i].trim_end_matches('/');
            if d.is_empty() { "/" } else { d }
        }
    };
    Ok(format!("{dir}\n"))
}
