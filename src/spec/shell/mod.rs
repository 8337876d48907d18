//! `%(...)` without a shell: a small, pure evaluator for the idioms real specs use to compute
//! file names (`echo %{version} | tr . _`, `c=%{commit}; echo ${c:0:7}`, `sed 's/^v//'`,
//! `cut -d. -f1,2`, `tr . - <<<%{version}`).
//!
//! It follows bash, the `/bin/sh` of the distributions that build RPMs, and evaluates only
//! what it can evaluate exactly: sequences (`;`) of pipelines (`|`) of the commands in
//! [`commands`], variables assigned earlier in the same command, quoting, parameter
//! expansion (`${c:0:7}`, `${v%%.*}`, `${v//./_}`, ...), command substitution, here-strings
//! and redirections to `/dev/null`. Anything else (another program, the environment, files,
//! pathname expansion, `&&`, control flow, non-ASCII text whose meaning depends on the
//! locale) is refused with the reason, and the caller leaves the `%(...)` unexpanded. Nothing
//! is ever run.

mod commands;
mod glob;
mod lex;
mod sed;

use std::collections::HashMap;

use lex::{Part, Token, Word, lex};

/// Longest output (and longest variable) the evaluator produces; beyond it the expansion is
/// refused, so a hostile spec cannot make a small input grow without bound.
const MAX_OUTPUT: usize = 64 * 1024;
/// Deepest nesting of command substitutions.
const MAX_NESTING: usize = 8;
/// Work one command may cost (bytes through commands, pattern-matching steps): far below the
/// work budget of a whole spec, so one runaway command does not spend it all.
pub(crate) const MAX_STEPS: usize = 50_000;

/// Why a command was not evaluated, for the warning that names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refused(pub(crate) String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

type Result<T> = std::result::Result<T, Refused>;

fn refuse<T>(why: impl Into<String>) -> Result<T> {
    Err(Refused(why.into()))
}

/// The standard output of `cmd`, as bash would produce it, or why it cannot be known; at
/// most `budget` steps of work (what is left is written back).
pub(crate) fn eval(cmd: &str, budget: &mut usize) -> Result<String> {
    let mut shell = Shell {
        vars: HashMap::new(),
        steps: std::cell::Cell::new(*budget),
    };
    let result = shell.run(cmd, 0);
    *budget = shell.steps.get();
    result
}

/// One command of a pipeline.
#[derive(Debug, Default)]
struct Simple {
    words: Vec<Word>,
    here: Option<Word>,
    /// `>/dev/null`: the output is dropped.
    quiet: bool,
}

struct Shell {
    vars: HashMap<String, String>,
    /// Work left; a cell so that expansions (`&self`) can spend it.
    steps: std::cell::Cell<usize>,
}

impl Shell {
    fn charge(&self, units: usize) -> Result<()> {
        match self.steps.get().checked_sub(units) {
            Some(left) => {
                self.steps.set(left);
                Ok(())
            }
            None => {
                self.steps.set(0);
                refuse("the command takes too long to evaluate")
            }
        }
    }

    fn run(&mut self, cmd: &str, depth: usize) -> Result<String> {
        self.charge(cmd.len() + 1)?;
        if depth > MAX_NESTING {
            return refuse("command substitutions nested too deeply");
        }
        if !cmd.is_ascii() {
            return refuse("non-ASCII text (its meaning depends on the locale)");
        }
        let tokens = lex(cmd)?;
        let mut out = String::new();
        for pipeline in parse(tokens)? {
            let mut input = String::new();
            for c in &pipeline {
                input = self.simple(c, input, depth)?;
            }
            out.push_str(&input);
            limit(&out)?;
        }
        Ok(out)
    }

    fn simple(&mut self, c: &Simple, stdin: String, depth: usize) -> Result<String> {
        let assignments = c.words.iter().take_while(|w| assignment(w).is_some());
        let n_assign = assignments.clone().count();
        if n_assign == c.words.len() {
            if c.here.is_some() {
                return refuse("a here-string without a command");
            }
            for w in assignments {
                let (name, value) = assignment(w).expect("counted above");
                let value = self.joined(&value, depth)?;
                self.vars.insert(name, value);
            }
            return Ok(String::new());
        }
        if n_assign > 0 {
            return refuse("variable assignments before a command");
        }
        let mut args = Vec::new();
        for w in &c.words {
            args.extend(self.fields(w, depth)?);
        }
        let stdin = match &c.here {
            Some(w) => self.joined(w, depth)? + "\n",
            None => stdin,
        };
        let Some((name, args)) = args.split_first() else {
            return Ok(String::new());
        };
        let out = commands::run(name, args, &stdin)?;
        limit(&out)?;
        self.charge(stdin.len() + out.len() + 1)?;
        Ok(if c.quiet { String::new() } else { out })
    }

    /// Expand a word into fields (bash: expansion, field splitting of unquoted expansions;
    /// pathname expansion is refused).
    fn fields(&self, w: &Word, depth: usize) -> Result<Vec<String>> {
        let mut fields = Vec::new();
        let mut cur = String::new();
        let mut has = false;
        if let Some(Part::Lit {
            text,
            quoted: false,
        }) = w.first()
        {
            if text.starts_with('~') {
                return refuse(format!("unquoted {text:?} (tilde expansion)"));
            }
        }
        for p in w {
            match p {
                Part::Lit { text, quoted } => {
                    if !quoted && text.contains(['*', '?', '[']) {
                        return refuse(format!(
                            "unquoted {text:?} (pathname expansion reads the file system)"
                        ));
                    }
                    if !quoted && brace_expansion(text) {
                        return refuse(format!("unquoted {text:?} (brace expansion)"));
                    }
                    cur.push_str(text);
                    has |= *quoted || !text.is_empty();
                }
                Part::Param { quoted: true, .. } | Part::Sub { quoted: true, .. } => {
                    cur.push_str(&self.part(p, depth)?);
                    has = true;
                }
                Part::Param { .. } | Part::Sub { .. } => {
                    let value = self.part(p, depth)?;
                    if value.contains(['*', '?', '[']) {
                        return refuse(format!(
                            "unquoted expansion {value:?} (pathname expansion reads the file system)"
                        ));
                    }
                    for c in value.chars() {
                        if matches!(c, ' ' | '\t' | '\n') {
                            if has {
                                fields.push(std::mem::take(&mut cur));
                                has = false;
                            }
                        } else {
                            cur.push(c);
                            has = true;
                        }
                    }
                }
            }
        }
        if has {
            fields.push(cur);
        }
        Ok(fields)
    }

    /// Expand a word without field splitting (assignments, here-strings).
    fn joined(&self, w: &Word, depth: usize) -> Result<String> {
        let mut s = String::new();
        for p in w {
            match p {
                Part::Lit { text, quoted } => {
                    // In an assignment, `~` expands at the start and after a colon.
                    if !quoted && (text.starts_with('~') || text.contains(":~")) {
                        return refuse(format!("unquoted {text:?} (tilde expansion)"));
                    }
                    s.push_str(text)
                }
                _ => s.push_str(&self.part(p, depth)?),
            }
        }
        Ok(s)
    }

    fn part(&self, p: &Part, depth: usize) -> Result<String> {
        let s = match p {
            Part::Lit { text, .. } => text.clone(),
            Part::Param { expr, .. } => self.param(expr)?,
            Part::Sub { cmd, .. } => {
                // A command substitution runs in a subshell: it sees the variables, and what
                // it assigns is lost.
                let mut sub = Shell {
                    vars: self.vars.clone(),
                    steps: std::cell::Cell::new(self.steps.get()),
                };
                let result = sub.run(cmd, depth + 1);
                self.steps.set(sub.steps.get());
                let mut out = result?;
                while out.ends_with('\n') {
                    out.pop();
                }
                out
            }
        };
        limit(&s)?;
        Ok(s)
    }

    fn var(&self, name: &str) -> Result<&str> {
        if !is_name(name) {
            return refuse(format!("${name} is not a plain variable"));
        }
        match self.vars.get(name) {
            Some(v) => Ok(v),
            None => refuse(format!(
                "${name} is not set by the command (the environment is not read)"
            )),
        }
    }

    /// `${expr}`: `name`, `#name`, `name:off[:len]`, `name#pat`, `name%%pat`,
    /// `name/pat/rep`, `name^^`, `name:-word`, ...
    fn param(&self, expr: &str) -> Result<String> {
        if let Some(name) = expr.strip_prefix('#') {
            return Ok(self.var(name)?.len().to_string());
        }
        let name_len = expr
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
            .count();
        let (name, op) = expr.split_at(name_len);
        if op.is_empty() {
            return Ok(self.var(name)?.to_owned());
        }
        let word = |w: &str| -> Result<String> {
            if w.contains(['$', '`', '\\', '\'', '"']) {
                return refuse(format!("${{{expr}}}: expansions inside an expansion"));
            }
            Ok(w.to_owned())
        };
        for (op_str, colon, set_means) in [(":-", true, false), ("-", false, false)]
            .into_iter()
            .chain([(":+", true, true), ("+", false, true)])
        {
            if let Some(w) = op.strip_prefix(op_str) {
                let value = self.vars.get(name).filter(|v| !colon || !v.is_empty());
                if !is_name(name) {
                    return refuse(format!("${{{expr}}} is not a plain variable"));
                }
                return match (value, set_means) {
                    (Some(v), false) => Ok(v.clone()),
                    (None, false) => word(w),
                    (Some(_), true) => word(w),
                    (None, true) => Ok(String::new()),
                };
            }
        }
        let value = self.var(name)?;
        if let Some(range) = op.strip_prefix(':') {
            return substring(value, range, expr);
        }
        let pattern = |p: &str| -> Result<Vec<char>> { word(p).map(|p| p.chars().collect()) };
        let v: Vec<char> = value.chars().collect();
        let cut = |from_start: bool, longest: bool, p: &str| -> Result<String> {
            let pat = pattern(p)?;
            self.charge(glob::check_cost(&pat, v.len())?)?;
            let n = v.len();
            let mut lens: Vec<usize> = (0..=n).collect();
            if longest {
                lens.reverse();
            }
            for k in lens {
                let (keep, test) = if from_start {
                    (&v[k..], &v[..k])
                } else {
                    (&v[..n - k], &v[n - k..])
                };
                if glob::matches(&pat, test) {
                    return Ok(keep.iter().collect());
                }
            }
            Ok(value.to_owned())
        };
        if let Some(p) = op.strip_prefix("##") {
            return cut(true, true, p);
        }
        if let Some(p) = op.strip_prefix('#') {
            return cut(true, false, p);
        }
        if let Some(p) = op.strip_prefix("%%") {
            return cut(false, true, p);
        }
        if let Some(p) = op.strip_prefix('%') {
            return cut(false, false, p);
        }
        if let Some(spec) = op.strip_prefix('/') {
            let (all, anchor, spec) = match spec.as_bytes().first() {
                Some(b'/') => (true, None, &spec[1..]),
                Some(b'#') => (false, Some(true), &spec[1..]),
                Some(b'%') => (false, Some(false), &spec[1..]),
                _ => (false, None, spec),
            };
            let (pat, rep) = spec.split_once('/').unwrap_or((spec, ""));
            let (pat, rep) = (pattern(pat)?, word(rep)?);
            self.charge(glob::check_cost(&pat, v.len() * v.len())?)?;
            return Ok(glob::replace(&v, &pat, &rep, all, anchor));
        }
        match op {
            "^^" => Ok(value.to_ascii_uppercase()),
            ",," => Ok(value.to_ascii_lowercase()),
            "^" | "," => {
                let mut c = value.chars();
                Ok(match c.next() {
                    Some(f) if op == "^" => f.to_ascii_uppercase().to_string() + c.as_str(),
                    Some(f) => f.to_ascii_lowercase().to_string() + c.as_str(),
                    None => String::new(),
                })
            }
            _ => refuse(format!("${{{expr}}} is not a supported expansion")),
        }
    }
}

/// bash's `${v:offset}` and `${v:offset:length}`: negative offsets count from the end, a
/// negative length is an end position counted from the end.
fn substring(value: &str, range: &str, expr: &str) -> Result<String> {
    let number = |s: &str| -> Result<i64> {
        let t = s.trim();
        let t = t
            .strip_prefix('(')
            .and_then(|t| t.strip_suffix(')'))
            .unwrap_or(t)
            .trim();
        match t.parse::<i64>() {
            Ok(n) => Ok(n),
            Err(_) if t.is_empty() => Ok(0),
            Err(_) => refuse(format!("${{{expr}}}: {s:?} is not a plain number")),
        }
    };
    let (off, len) = match range.split_once(':') {
        Some((o, l)) => (number(o)?, Some(number(l)?)),
        None => (number(range)?, None),
    };
    let n = value.len() as i64;
    let start = if off < 0 { n + off } else { off };
    if start < 0 || start > n {
        return Ok(String::new());
    }
    let end = match len {
        None => n,
        Some(l) if l < 0 => n + l,
        Some(l) => start.saturating_add(l).min(n),
    };
    if end < start {
        return refuse(format!("${{{expr}}}: substring expression < 0"));
    }
    Ok(value[start as usize..end as usize].to_owned())
}

/// Whether unquoted text holds a bash brace expansion (`{a,b}`, `{1..3}`); a lone `{...}`
/// such as an unexpanded `%{macro}` is literal.
fn brace_expansion(text: &str) -> bool {
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            return false;
        };
        let inner = &after[..close];
        if inner.contains(',') || inner.contains("..") {
            return true;
        }
        rest = after;
    }
    false
}

fn is_name(s: &str) -> bool {
    s.bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn limit(s: &str) -> Result<()> {
    if s.len() > MAX_OUTPUT {
        return refuse(format!("the output exceeds {MAX_OUTPUT} bytes"));
    }
    Ok(())
}

/// `NAME=value` at the start of a word: the name and the value's parts.
fn assignment(w: &Word) -> Option<(String, Word)> {
    let Some(Part::Lit {
        text,
        quoted: false,
    }) = w.first()
    else {
        return None;
    };
    let (name, first) = text.split_once('=')?;
    if !is_name(name) {
        return None;
    }
    let mut value = vec![Part::Lit {
        text: first.to_owned(),
        quoted: false,
    }];
    value.extend(w[1..].iter().cloned());
    Some((name.to_owned(), value))
}

/// Group tokens into a sequence of pipelines.
fn parse(tokens: Vec<Token>) -> Result<Vec<Vec<Simple>>> {
    let mut seq = Vec::new();
    let mut pipeline: Vec<Simple> = Vec::new();
    let mut cur = Simple::default();
    let mut tokens = tokens.into_iter().peekable();
    let empty = |c: &Simple| c.words.is_empty() && c.here.is_none() && !c.quiet;
    while let Some(t) = tokens.next() {
        match t {
            Token::Word(w) => cur.words.push(w),
            Token::HereString => match tokens.next() {
                Some(Token::Word(w)) => cur.here = Some(w),
                _ => return refuse("<<< without a word"),
            },
            Token::Redirect { dup: true, .. } => {}
            Token::Redirect { fd, dup: false } => match tokens.next() {
                Some(Token::Word(w))
                    if w.len() == 1
                        && matches!(&w[0], Part::Lit { text, .. } if text == "/dev/null") =>
                {
                    cur.quiet |= fd == 1;
                }
                _ => return refuse("redirections other than to /dev/null"),
            },
            Token::Pipe => {
                if empty(&cur) {
                    return refuse("a pipe without a command");
                }
                pipeline.push(std::mem::take(&mut cur));
            }
            Token::Separator { newline } => {
                if !empty(&cur) {
                    pipeline.push(std::mem::take(&mut cur));
                } else if !pipeline.is_empty() {
                    return refuse("a pipe without a command");
                } else if !newline {
                    // bash: "syntax error near unexpected token `;'", and no output at all.
                    return refuse("\";\" without a command");
                }
                if !pipeline.is_empty() {
                    seq.push(std::mem::take(&mut pipeline));
                }
            }
        }
    }
    if !empty(&cur) {
        pipeline.push(cur);
    } else if !pipeline.is_empty() {
        return refuse("a pipe without a command");
    }
    if !pipeline.is_empty() {
        seq.push(pipeline);
    }
    Ok(seq)
}

#[cfg(test)]
mod tests;
