//! GNU `sed` with `s` commands only: `sed [-e] 's/RE/REPL/[g][N][i]'`, `-E`/`-r` for
//! extended expressions. Expressions are translated to the `regex` crate; what it would match
//! differently from POSIX (alternation, repeated groups, back-references) is refused.

use regex::{Regex, RegexBuilder};

use super::{MAX_OUTPUT, Result, refuse};

/// Compiled-expression size limit: generous for real scripts, small for hostile ones.
const MAX_REGEX_SIZE: usize = 1 << 20;

/// One `s` command.
struct Subst {
    re: Regex,
    replacement: Vec<Piece>,
    global: bool,
    /// Replace only from the Nth match (1-based).
    nth: usize,
}

enum Piece {
    Text(String),
    /// `&` (0) or `\1`..`\9`.
    Group(usize),
}

pub(super) fn run(args: &[String], stdin: &str) -> Result<String> {
    let mut scripts = Vec::new();
    let mut extended = false;
    let mut i = 0;
    while let Some(a) = args.get(i) {
        match a.as_str() {
            "-e" | "--expression" => {
                let Some(s) = args.get(i + 1) else {
                    return refuse("sed -e without a script");
                };
                scripts.push(s.clone());
                i += 2;
            }
            "-E" | "-r" | "--regexp-extended" => {
                extended = true;
                i += 1;
            }
            "--" => {
                i += 1;
                break;
            }
            opt if opt.starts_with("-e") => {
                scripts.push(opt[2..].to_owned());
                i += 1;
            }
            opt if opt.starts_with('-') && opt != "-" => return refuse(format!("sed {opt}")),
            _ => break,
        }
    }
    let mut operands = &args[i..];
    if scripts.is_empty() {
        let Some((s, rest)) = operands.split_first() else {
            return refuse("sed without a script");
        };
        scripts.push(s.clone());
        operands = rest;
    }
    match operands {
        [] => {}
        [dash] if dash == "-" => {}
        [file, ..] => return refuse(format!("sed {file} (reading files)")),
    }
    let mut commands = Vec::new();
    for s in &scripts {
        parse_script(s, extended, &mut commands)?;
    }
    let mut out = String::new();
    let terminated = stdin.ends_with('\n');
    let body = stdin.strip_suffix('\n').unwrap_or(stdin);
    let lines: Vec<&str> = if stdin.is_empty() {
        Vec::new()
    } else {
        body.split('\n').collect()
    };
    let count = lines.len();
    for (k, line) in lines.into_iter().enumerate() {
        let mut space = line.to_owned();
        for c in &commands {
            space = c.apply(&space);
            if space.len() > MAX_OUTPUT {
                return refuse(format!("the output exceeds {MAX_OUTPUT} bytes"));
            }
        }
        out.push_str(&space);
        // GNU sed keeps a missing final newline missing.
        if k + 1 < count || terminated {
            out.push('\n');
        }
    }
    Ok(out)
}

impl Subst {
    fn apply(&self, s: &str) -> String {
        let mut out = String::new();
        let mut last = 0;
        for (n, caps) in self.re.captures_iter(s).enumerate() {
            if n + 1 < self.nth {
                continue;
            }
            let m = caps.get(0).expect("group 0 always matches");
            out.push_str(&s[last..m.start()]);
            for p in &self.replacement {
                match p {
                    Piece::Text(t) => out.push_str(t),
                    Piece::Group(g) => out.push_str(caps.get(*g).map_or("", |m| m.as_str())),
                }
            }
            last = m.end();
            if !self.global {
                break;
            }
        }
        out.push_str(&s[last..]);
        out
    }
}

/// `s` commands separated by `;` or newlines.
fn parse_script(script: &str, extended: bool, commands: &mut Vec<Subst>) -> Result<()> {
    let chars: Vec<char> = script.chars().collect();
    let mut i = 0;
    loop {
        while i < chars.len() && matches!(chars[i], ' ' | '\t' | '\n' | ';') {
            i += 1;
        }
        if i >= chars.len() {
            return Ok(());
        }
        if chars[i] != 's' {
            return refuse(format!(
                "sed command {:?} (only s/// is evaluated)",
                chars[i]
            ));
        }
        let Some(&delim) = chars.get(i + 1) else {
            return refuse("sed: unterminated s command");
        };
        if delim == '\\' || delim == '\n' {
            return refuse("sed: that s delimiter");
        }
        i += 2;
        let (re, next) = part(&chars, i, delim)?;
        let (rep, next) = part(&chars, next, delim)?;
        i = next;
        let (mut global, mut nth, mut icase) = (false, 1usize, false);
        while let Some(&f) = chars.get(i) {
            match f {
                'g' => global = true,
                'i' | 'I' => icase = true,
                d if d.is_ascii_digit() => {
                    let digits: String = chars[i..]
                        .iter()
                        .take_while(|c| c.is_ascii_digit())
                        .collect();
                    nth = match digits.parse::<usize>() {
                        Ok(n) if (1..=512).contains(&n) => n,
                        _ => return refuse(format!("sed s flag {digits}")),
                    };
                    i += digits.len();
                    continue;
                }
                ';' | '\n' | ' ' | '\t' => break,
                other => return refuse(format!("sed s flag {other:?}")),
            }
            i += 1;
        }
        if re.is_empty() {
            return refuse("sed: an empty regular expression (repeats the last one)");
        }
        let translated = translate(&re, extended, delim)?;
        let compiled = RegexBuilder::new(&translated)
            .case_insensitive(icase)
            .size_limit(MAX_REGEX_SIZE)
            .build()
            .or_else(|e| refuse(format!("sed expression {re:?}: {e}")))?;
        let replacement = replacement(&rep, delim, compiled.captures_len())?;
        commands.push(Subst {
            re: compiled,
            replacement,
            global,
            nth,
        });
    }
}

/// The text up to the next unescaped `delim` (escapes kept, `\delim` unescaped), and the
/// index after the delimiter.
fn part(chars: &[char], mut i: usize, delim: char) -> Result<(String, usize)> {
    let mut s = String::new();
    while let Some(&c) = chars.get(i) {
        if c == delim {
            return Ok((s, i + 1));
        }
        if c == '\\' {
            let Some(&n) = chars.get(i + 1) else {
                break;
            };
            if n == delim {
                s.push(n);
            } else if n == '\n' {
                s.push('\n');
            } else {
                s.push('\\');
                s.push(n);
            }
            i += 2;
            continue;
        }
        s.push(c);
        i += 1;
    }
    refuse("sed: unterminated s command")
}

/// A POSIX basic (or, with `extended`, extended) expression in `regex` syntax.
fn translate(re: &str, extended: bool, delim: char) -> Result<String> {
    let chars: Vec<char> = re.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    // `^` anchors at the start of the expression or of a group (anywhere in an ERE); `*` is
    // literal there and just after such an anchor.
    let mut at_start = true;
    let mut star_literal = true;
    let lit = |out: &mut String, c: char| out.push_str(&regex::escape(&c.to_string()));
    while i < chars.len() {
        let c = chars[i];
        let (was_start, was_star_literal) = (at_start, star_literal);
        at_start = false;
        star_literal = false;
        match c {
            '\\' => {
                let Some(&n) = chars.get(i + 1) else {
                    return refuse("sed: a trailing backslash");
                };
                i += 2;
                match n {
                    '(' | ')' | '{' | '}' | '+' | '?' if !extended => {
                        if n == ')' && out.ends_with('(') {
                            return refuse("sed: an empty group");
                        }
                        out.push(n);
                        at_start = n == '(';
                        star_literal = at_start;
                        if n == ')' && quantifier_follows(&chars, i, extended) {
                            return refuse("sed: a repeated group (POSIX matches it differently)");
                        }
                    }
                    '|' => return refuse("sed: alternation (POSIX matches it differently)"),
                    '1'..='9' => return refuse("sed: back-references in the expression"),
                    'n' => out.push_str("\\n"),
                    't' => out.push_str("\\t"),
                    'w' | 'W' | 's' | 'S' => {
                        out.push('\\');
                        out.push(n);
                    }
                    '<' | '>' | 'b' | 'B' | '`' | '\'' => {
                        return refuse(format!("sed: \\{n}"));
                    }
                    other if other.is_ascii_alphanumeric() && other != delim => {
                        return refuse(format!("sed: \\{other}"));
                    }
                    other => lit(&mut out, other),
                }
                continue;
            }
            '[' => {
                let (class, next) = bracket(&chars, i)?;
                out.push_str(&class);
                i = next;
                continue;
            }
            '*' if was_star_literal => lit(&mut out, '*'),
            '*' => out.push('*'),
            '^' if was_start || extended => {
                out.push('^');
                star_literal = true;
            }
            '^' => lit(&mut out, '^'),
            '$' if i + 1 == chars.len()
                || (!extended && chars[i + 1..].starts_with(&['\\', ')'])) =>
            {
                out.push('$')
            }
            '$' if extended && chars.get(i + 1) == Some(&')') => out.push('$'),
            '$' => lit(&mut out, '$'),
            '.' => out.push('.'),
            '(' | ')' | '{' | '}' | '+' | '?' if extended => {
                if c == ')' && quantifier_follows(&chars, i + 1, extended) {
                    return refuse("sed: a repeated group (POSIX matches it differently)");
                }
                out.push(c);
                at_start = c == '(';
                star_literal = at_start;
            }
            '|' if extended => return refuse("sed: alternation (POSIX matches it differently)"),
            other => lit(&mut out, other),
        }
        i += 1;
    }
    Ok(out)
}

fn quantifier_follows(chars: &[char], i: usize, extended: bool) -> bool {
    match chars.get(i) {
        Some('*') => true,
        Some('+' | '?' | '{') => extended,
        Some('\\') => !extended && matches!(chars.get(i + 1), Some('+' | '?' | '{')),
        _ => false,
    }
}

/// A bracket expression at `chars[i]` in `regex` syntax (backslashes are literal in POSIX
/// brackets, and `regex` gives `&&`, `--`, `~~` and nested `[` meanings they must not have).
fn bracket(chars: &[char], mut i: usize) -> Result<(String, usize)> {
    let mut out = String::from("[");
    i += 1;
    if chars.get(i) == Some(&'^') {
        out.push('^');
        i += 1;
    }
    let mut first = true;
    loop {
        let Some(&c) = chars.get(i) else {
            return refuse("sed: an unterminated [");
        };
        if c == ']' && !first {
            out.push(']');
            return Ok((out, i + 1));
        }
        first = false;
        if c == '[' && matches!(chars.get(i + 1), Some(':' | '.' | '=')) {
            let kind = chars[i + 1];
            let rest: String = chars[i + 2..].iter().collect();
            let Some(end) = rest.find(&format!("{kind}]")) else {
                return refuse("sed: an unterminated [: in a bracket");
            };
            if kind != ':' {
                return refuse(format!("sed: [{kind} in a bracket"));
            }
            let name = &rest[..end];
            if !matches!(
                name,
                "alpha"
                    | "digit"
                    | "alnum"
                    | "upper"
                    | "lower"
                    | "space"
                    | "blank"
                    | "punct"
                    | "xdigit"
                    | "cntrl"
                    | "print"
                    | "graph"
            ) {
                return refuse(format!("sed: [:{name}:]"));
            }
            out.push_str(&format!("[:{name}:]"));
            i += 2 + end + 2;
            continue;
        }
        if c == '-' && !matches!(chars.get(i + 1), Some(']')) && !out.ends_with('[') {
            // A range: the previous character and the next one.
            out.push('-');
            i += 1;
            continue;
        }
        out.push_str(&regex::escape(&c.to_string()).replace('-', "\\-"));
        if matches!(c, '&' | '~' | '-') {
            // `regex::escape` leaves these alone; inside a class they can form operators.
            out.truncate(out.len() - c.len_utf8());
            out.push('\\');
            out.push(c);
        }
        i += 1;
    }
}

/// The replacement: `&`, `\1`..`\9`, `\n`, `\&`, `\\`; case conversions are refused.
fn replacement(rep: &str, delim: char, groups: usize) -> Result<Vec<Piece>> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut chars = rep.chars();
    while let Some(c) = chars.next() {
        match c {
            '&' => {
                pieces.push(Piece::Text(std::mem::take(&mut text)));
                pieces.push(Piece::Group(0));
            }
            '\\' => match chars.next() {
                Some(d @ '0'..='9') => {
                    let g = d.to_digit(10).expect("a digit") as usize;
                    if g >= groups {
                        return refuse(format!("sed: invalid reference \\{g} on s command's RHS"));
                    }
                    pieces.push(Piece::Text(std::mem::take(&mut text)));
                    pieces.push(Piece::Group(g));
                }
                Some('n') => text.push('\n'),
                Some('t') => text.push('\t'),
                Some(c @ ('L' | 'U' | 'l' | 'u' | 'E')) => {
                    return refuse(format!("sed: case conversion \\{c}"));
                }
                Some(other) if other == delim => text.push(other),
                Some(other) => text.push(other),
                None => text.push('\\'),
            },
            other => text.push(other),
        }
    }
    pieces.push(Piece::Text(text));
    Ok(pieces)
}
