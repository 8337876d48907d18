//! rpm's macro language, as far as `Source`/`Patch` lines need it, without running anything.
//!
//! The semantics follow rpm 4.18's `rpmio/macro.c`: every name has a stack of definitions
//! (`%define` pushes, `%undefine` pops); `%define` bodies are expanded on every use, `%global`
//! bodies once at definition; the result of an expansion is not rescanned; undefined macros are
//! left as written. Parametric macros get GNU-getopt option processing and their arguments as
//! `%1`, `%*`, `%#`, `%{-f}`, ... which disappear when the call returns, together with every
//! `%define` made inside it. `%(...)` and `%{lua:...}` go to small built-in evaluators of the
//! pure shell and Lua idioms specs use (`shell`, `lua`); what they refuse, and constructs that
//! need the file system or the environment, are left as written and reported
//! ([`Issue::NotEvaluated`], [`Issue::Unsupported`]). Nothing is ever run.

use std::collections::HashMap;

mod builtins;
mod syntax;

use super::{expr, shell};
use builtins::{SHELL, is_builtin};
pub(crate) use syntax::find_close;
use syntax::{define_body, getopt, looks_percent_encoded, scan_name, split_args};

/// Deepest nesting of macro expansions; beyond it a definition is taken to be recursive. rpm
/// gives up at the same depth.
const MAX_DEPTH: usize = 64;

/// Work one spec may cost: macro expansions, plus the steps of the shell and Lua evaluators.
/// The 3,797 specs of the rpmsphere corpus need at most 3,853; a definition that doubles at
/// each level (or a recursion that branches) would need billions, so expansion stops there
/// with an error, and reading a spec takes bounded time whatever it holds. 200,000 (50 times
/// the corpus's need) keeps the worst case, a doubling definition, under a second of a
/// sanitized fuzz build on a busy machine (1,000,000 took 11 s there: a fuzz smoke timeout).
const MAX_WORK: usize = 200_000;

/// Longest text one expansion may produce, so reading a spec takes bounded memory.
pub(crate) const MAX_EXPANSION: usize = 1 << 20;

/// Brackets a `%{quote:...}` argument so that argument splitting keeps it in one piece; removed
/// from the final output (rpm uses the same control character).
const QUOTE: char = '\u{1f}';

/// Something an expansion could not do as rpm would.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Issue {
    /// A macro that is not defined, left as written (the text, e.g. `%{foo}`).
    Undefined(String),
    /// A construct this engine does not evaluate, left as written.
    Unsupported { text: String, what: &'static str },
    /// An error rpm reports too (bad syntax, recursion, `%{error:...}`, bad options).
    Error(String),
    /// A `%{warn:...}` message from the spec.
    Warn(String),
    /// A `%(...)` or `%{lua:...}` the built-in evaluators refused, left as written.
    NotEvaluated {
        what: &'static str,
        text: String,
        why: String,
    },
}

impl std::fmt::Display for Issue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Issue::Undefined(text) => write!(f, "macro {text} is not defined; left unexpanded"),
            Issue::Unsupported { text, what } => {
                write!(
                    f,
                    "{what} {} is not supported; left unexpanded",
                    shorten(text)
                )
            }
            Issue::Error(msg) => f.write_str(msg),
            Issue::Warn(msg) => write!(f, "the spec warns: {msg}"),
            Issue::NotEvaluated { what, text, why } => {
                let runs = if *what == SHELL { "a shell" } else { "Lua" };
                write!(
                    f,
                    "{what} {} is left unexpanded: {why} (upcache never runs {runs})",
                    shorten(text)
                )
            }
        }
    }
}

/// Long constructs (Lua blocks) are cut in messages.
fn shorten(text: &str) -> String {
    const MAX: usize = 60;
    let one_line = text.replace('\n', " ");
    match one_line.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}...", &one_line[..i]),
        None => one_line,
    }
}

#[derive(Debug, Clone)]
struct Def {
    body: String,
    /// `Some(opts)` for a parametric macro (`%define name(opts) body`).
    opts: Option<String>,
    /// Call depth the definition was made at; it is dropped when a call at that depth returns.
    level: usize,
    /// Automatic macros (arguments) are not expanded again when used.
    literal: bool,
}

/// How a macro was invoked: what follows its name decides where its arguments come from.
enum Args<'a> {
    /// `%{name}`, or a bare `%name` of a simple macro.
    None,
    /// `%{name:arg}`: one argument.
    Colon(&'a str),
    /// `%{name arg arg}`: split on whitespace.
    Words(&'a str),
}

/// A macro table and the expansion engine.
pub(crate) struct Engine {
    table: HashMap<String, Vec<Def>>,
    /// Depth of parametric calls in progress.
    level: usize,
    /// Depth of nested expansions, against runaway recursion.
    depth: usize,
    /// Work left (see [`MAX_WORK`]).
    work: usize,
    /// Set when the current top-level expansion must stop: too deep a recursion (as rpm
    /// stops), the work budget or the size limit exhausted.
    stopped: bool,
    /// What went wrong since the caller last took them.
    pub(crate) issues: Vec<Issue>,
    /// Count of `%define`/`%global`/`%undefine` executed, so a caller can tell whether an
    /// expansion changed the table.
    pub(crate) definitions: usize,
}

impl Engine {
    /// An engine with the few macros every rpm installation defines that specs use in
    /// conditions (the target architecture and OS, the architecture families).
    pub(crate) fn new() -> Engine {
        let mut e = Engine {
            table: HashMap::new(),
            level: 0,
            depth: 0,
            work: MAX_WORK,
            stopped: false,
            issues: Vec::new(),
            definitions: 0,
        };
        let arch = host_arch();
        for name in ["_arch", "_target_cpu", "_host_cpu", "_build_cpu"] {
            e.push(name, arch, None, false);
        }
        for name in ["_os", "_target_os", "_host_os", "_build_os"] {
            e.push(name, "linux", None, false);
        }
        // Architecture families from rpm's default macros, for `%ifarch %{ix86}` and friends.
        let families = [
            ("ix86", "i386 i486 i586 i686 pentium3 pentium4 athlon geode"),
            ("x86_64", "x86_64 amd64 em64t"),
            (
                "arm32",
                "armv3l armv4b armv4l armv4tl armv5tl armv5tel armv5tejl armv6l armv6hl armv7l armv7hl armv7hnl armv8l armv8hl armv8hnl armv8hcnl",
            ),
            ("arm", "%{arm32}"),
            ("arm64", "aarch64"),
            ("power64", "ppc64 ppc64p7 ppc64le"),
            ("riscv64", "riscv64"),
            ("loongarch64", "loongarch64"),
            ("mips64", "mips64 mips64el mips64r6 mips64r6el"),
        ];
        for (name, body) in families {
            e.push(name, body, None, false);
        }
        e
    }

    /// Push a definition made outside any expansion (command line, preamble tags).
    pub(crate) fn push(&mut self, name: &str, body: &str, opts: Option<&str>, literal: bool) {
        self.table.entry(name.to_owned()).or_default().push(Def {
            body: body.to_owned(),
            opts: opts.map(str::to_owned),
            level: self.level,
            literal,
        });
    }

    /// Whether `name` is a defined macro or a builtin (rpm ≥ 4.17 treats both as defined).
    pub(crate) fn is_defined(&self, name: &str) -> bool {
        self.table.get(name).is_some_and(|s| !s.is_empty()) || is_builtin(name)
    }

    /// Expand `text` completely, as rpm expands a spec line.
    pub(crate) fn expand(&mut self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        // A recursion error stops one expansion (the rest of it stays as written); the next
        // line starts afresh, unless the work budget of the whole spec is spent.
        self.stopped = false;
        if self.work == 0 {
            self.issue(Self::out_of_work());
            self.stopped = true;
        }
        self.expand_into(text, &mut out);
        if out.len() > MAX_EXPANSION {
            // The limit is checked between constructs; the last one may have gone beyond it.
            let mut end = MAX_EXPANSION;
            while !out.is_char_boundary(end) {
                end -= 1;
            }
            out.truncate(end);
        }
        out.retain(|c| c != QUOTE);
        out
    }

    /// Evaluate an already expanded `%if` expression.
    pub(crate) fn eval_condition(&self, text: &str) -> Result<bool, String> {
        let v = expr::eval(text, None)?;
        Ok(match v {
            expr::Value::Int(n) => n != 0,
            expr::Value::Str(s) | expr::Value::Ver(s) => !s.is_empty(),
        })
    }

    fn top(&self, name: &str) -> Option<&Def> {
        self.table.get(name).and_then(|s| s.last())
    }

    fn issue(&mut self, issue: Issue) {
        if !self.issues.contains(&issue) {
            self.issues.push(issue);
        }
    }

    fn expand_into(&mut self, s: &str, out: &mut String) {
        if self.depth >= MAX_DEPTH {
            self.issue(Issue::Error(
                "too many levels of recursion in macro expansion (a macro defined in terms of itself?)"
                    .into(),
            ));
            self.stopped = true;
        }
        self.depth += 1;
        let mut i = 0;
        while i < s.len() {
            let Some(off) = s[i..].find('%') else {
                out.push_str(&s[i..]);
                break;
            };
            out.push_str(&s[i..i + off]);
            if !self.stopped {
                self.charge(1);
                if out.len() > MAX_EXPANSION {
                    self.issue(Issue::Error(format!(
                        "the expansion exceeds {MAX_EXPANSION} bytes; stopped"
                    )));
                    self.stopped = true;
                }
            }
            if self.stopped {
                out.push_str(&s[i + off..]);
                break;
            }
            i = self.expand_at(s, i + off, out);
        }
        self.depth -= 1;
    }

    /// Spend `units` of the spec's work budget; stops expanding when it is gone.
    fn charge(&mut self, units: usize) {
        self.work = self.work.saturating_sub(units);
        if self.work == 0 && !self.stopped {
            self.issue(Self::out_of_work());
            self.stopped = true;
        }
    }

    fn out_of_work() -> Issue {
        Issue::Error(format!(
            "macro expansion stopped after {MAX_WORK} steps (a definition that grows exponentially?)"
        ))
    }

    /// The budget an evaluator (shell, Lua) may use now, at most `cap` steps.
    fn allowance(&self, cap: usize) -> usize {
        self.work.min(cap)
    }

    fn expand_string(&mut self, s: &str) -> String {
        let mut out = String::new();
        self.expand_into(s, &mut out);
        out
    }

    /// Expand the macro construct starting at the `%` at `p`; returns where scanning resumes.
    fn expand_at(&mut self, s: &str, p: usize, out: &mut String) -> usize {
        let b = s.as_bytes();
        let Some(&next) = b.get(p + 1) else {
            out.push('%');
            return s.len();
        };
        match next {
            b'%' => {
                out.push('%');
                p + 2
            }
            b'{' | b'(' | b'[' => {
                let close_char = match next {
                    b'{' => b'}',
                    b'(' => b')',
                    _ => b']',
                };
                let Some(close) = find_close(s, p + 1, next, close_char) else {
                    self.issue(Issue::Error(format!(
                        "unterminated {} in {:?}",
                        &s[p..p + 2],
                        shorten(&s[p..])
                    )));
                    out.push_str(&s[p..]);
                    return s.len();
                };
                let whole = &s[p..=close];
                let inner = &s[p + 2..close];
                match next {
                    b'{' => self.braced(inner, whole, out),
                    b'(' => self.shell(inner, whole, out),
                    _ => self.expression(inner, whole, out),
                }
                close + 1
            }
            _ => self.bare(s, p, out),
        }
    }

    /// `%(command)`: the command is expanded, then evaluated by the built-in evaluator of
    /// pure shell idioms (never by a shell); its output without trailing newlines, as rpm
    /// takes it. What the evaluator refuses is left as written and reported with the reason.
    fn shell(&mut self, inner: &str, whole: &str, out: &mut String) {
        let command = self.expand_string(inner);
        let allowed = self.allowance(shell::MAX_STEPS);
        let mut left = allowed;
        let result = shell::eval(&command, &mut left);
        self.charge(allowed - left);
        match result {
            Ok(stdout) => out.push_str(stdout.trim_end_matches(['\n', '\r'])),
            Err(why) => {
                self.issue(Issue::NotEvaluated {
                    what: SHELL,
                    text: whole.to_owned(),
                    why: why.to_string(),
                });
                out.push_str(whole);
            }
        }
    }

    /// `%[expression]`: terms are expanded as they are evaluated.
    fn expression(&mut self, inner: &str, whole: &str, out: &mut String) {
        let mut f = |t: &str| self.expand_string(t);
        match expr::eval(inner, Some(&mut f)) {
            Ok(v) => out.push_str(&v.to_string()),
            Err(e) => {
                self.issue(Issue::Error(format!("cannot evaluate {whole}: {e}")));
                out.push_str(whole);
            }
        }
    }

    /// `%name`, `%?name`, `%!?name`, `%1`, `%*`, `%#`, `%-f`, ...
    fn bare(&mut self, s: &str, p: usize, out: &mut String) -> usize {
        let b = s.as_bytes();
        let mut j = p + 1;
        let (mut negate, mut test) = (false, false);
        while j < b.len() && (b[j] == b'!' || b[j] == b'?') {
            if b[j] == b'!' {
                negate = !negate;
            } else {
                test = true;
            }
            j += 1;
        }
        let name_start = j;
        let name_end = scan_name(s, j);
        if name_end == name_start {
            // Not a macro ("100%", "% "): the percent sign stands for itself.
            out.push_str(&s[p..j]);
            return j;
        }
        let name = &s[name_start..name_end];
        let whole = &s[p..name_end];
        if name.starts_with('-') {
            // `%-f`: an option flag of a parametric macro, empty when not given.
            if !negate && self.is_defined(name) {
                self.invoke(name, whole, Args::None, out);
            }
            return name_end;
        }
        if test {
            if !negate && self.is_defined(name) {
                self.invoke(name, whole, Args::None, out);
            }
            return name_end;
        }
        match name {
            "define" | "global" => return self.define(s, name_end, name == "global", true),
            "undefine" => return self.undefine(s, name_end),
            "dnl" => {
                return s[name_end..]
                    .find('\n')
                    .map_or(s.len(), |n| name_end + n + 1);
            }
            _ => {}
        }
        let parametric = self.top(name).is_some_and(|d| d.opts.is_some())
            || matches!(
                name,
                "bcond" | "bcond_with" | "bcond_without" | "with" | "without" | "defined"
            ) && !self.table.contains_key(name);
        if parametric {
            // A parametric macro used as `%name` takes the rest of the line as arguments.
            let eol = s[name_end..].find('\n').map_or(s.len(), |n| name_end + n);
            let args = s[name_end..eol].trim();
            self.invoke(name, whole, Args::Words(args), out);
            return eol;
        }
        if !self.is_defined(name) && looks_percent_encoded(name) {
            // `%2B` in a URL: percent-encoding, not a macro (rpm leaves it alone too).
            out.push_str(whole);
            return name_end;
        }
        self.invoke(name, whole, Args::None, out);
        name_end
    }

    /// The inside of `%{...}`.
    fn braced(&mut self, inner: &str, whole: &str, out: &mut String) {
        let b = inner.as_bytes();
        let mut j = 0;
        let (mut negate, mut test) = (false, false);
        while j < b.len() && (b[j] == b'!' || b[j] == b'?') {
            if b[j] == b'!' {
                negate = !negate;
            } else {
                test = true;
            }
            j += 1;
        }
        let name_start = j;
        // rpm's name in braces runs to the first space or colon, whatever it holds.
        let name_end = inner[j..].find([' ', ':']).map_or(inner.len(), |k| j + k);
        let name = &inner[name_start..name_end];
        let rest = &inner[name_end..];
        let args = match rest.strip_prefix(':') {
            Some(arg) => Args::Colon(arg),
            None if rest.is_empty() => Args::None,
            None => Args::Words(rest.trim()),
        };
        if name.is_empty() {
            self.issue(Issue::Error(format!("invalid macro syntax {whole}")));
            out.push_str(whole);
            return;
        }
        // `%{?name}`, `%{?name:value}`, `%{!?name:value}`, and option flags (`%{-f}`,
        // `%{-f:value}`, `%{!-f:value}`), which are never left unexpanded.
        if test || name.starts_with('-') {
            let defined = self.is_defined(name);
            if let Args::Colon(value) = args {
                if defined != negate {
                    self.expand_into(value, out);
                }
            } else if defined && !negate {
                self.invoke(name, whole, Args::None, out);
            }
            return;
        }
        if !matches!(args, Args::None) && !self.is_defined(name) {
            // rpm keeps an undefined macro but expands its arguments: `%{pypi_source %{name}}`.
            self.issue(Issue::Undefined(whole.to_owned()));
            out.push_str("%{");
            out.push_str(&inner[..name_end]);
            self.expand_into(rest, out);
            out.push('}');
            return;
        }
        self.invoke(name, whole, args, out);
    }

    /// Expand a named macro or builtin with its arguments.
    fn invoke(&mut self, name: &str, whole: &str, args: Args, out: &mut String) {
        if let Some(def) = self.top(name).cloned() {
            match (&def.opts, args) {
                (Some(opts), args) => {
                    let words = match args {
                        Args::None => Vec::new(),
                        Args::Colon(a) => vec![self.expand_string(a)],
                        Args::Words(a) => {
                            let expanded = self.expand_string(a);
                            split_args(&expanded)
                        }
                    };
                    self.call(name, opts, &def.body, words, out);
                }
                (None, _) if def.literal => out.push_str(&def.body),
                (None, _) => self.expand_into(&def.body, out),
            }
            return;
        }
        if is_builtin(name) {
            self.builtin(name, whole, args, out);
            return;
        }
        self.issue(Issue::Undefined(whole.to_owned()));
        out.push_str(whole);
    }

    /// Run a parametric macro: option processing, automatic macros, body, cleanup.
    fn call(&mut self, name: &str, opts: &str, body: &str, words: Vec<String>, out: &mut String) {
        let (flags, positional) = match getopt(opts, &words) {
            Ok(parsed) => parsed,
            Err(e) => {
                self.issue(Issue::Error(format!("{e} in %{name}({opts})")));
                return;
            }
        };
        self.level += 1;
        let auto = |body: String| (body, true);
        let mut autos: Vec<(String, (String, bool))> = vec![
            ("0".into(), auto(name.to_owned())),
            ("**".into(), auto(words.join(" "))),
            ("*".into(), auto(positional.join(" "))),
            ("#".into(), auto(positional.len().to_string())),
        ];
        for (i, a) in positional.iter().enumerate() {
            autos.push(((i + 1).to_string(), auto(a.clone())));
        }
        for (flag, value) in flags {
            match value {
                Some(v) => {
                    autos.push((format!("-{flag}"), auto(format!("-{flag} {v}"))));
                    autos.push((format!("-{flag}*"), auto(v)));
                }
                None => autos.push((format!("-{flag}"), auto(format!("-{flag}")))),
            }
        }
        for (n, (b, literal)) in autos {
            self.push(&n, &b, None, literal);
        }
        self.expand_into(body, out);
        // Arguments and every %define made during the call go out of scope.
        let level = self.level;
        for stack in self.table.values_mut() {
            while stack.last().is_some_and(|d| d.level >= level) {
                stack.pop();
            }
        }
        self.table.retain(|_, s| !s.is_empty());
        self.level -= 1;
    }

    /// `%define`/`%global` at `start` (just after the keyword) up to the end of its line;
    /// returns where scanning resumes.
    /// `line` is the `%define name body` form, whose body ends with the line; the
    /// `%{define:name body}` form takes the whole text as it is.
    fn define(&mut self, s: &str, start: usize, global: bool, line: bool) -> usize {
        let keyword = if global { "%global" } else { "%define" };
        let b = s.as_bytes();
        let mut i = start;
        while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
            i += 1;
        }
        let name_start = i;
        while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
            i += 1;
        }
        let name = &s[name_start..i];
        let mut opts = None;
        if b.get(i) == Some(&b'(') {
            match s[i..].find(')') {
                Some(close) => {
                    opts = Some(s[i + 1..i + close].to_owned());
                    i += close + 1;
                }
                None => {
                    let end = s[i..].find('\n').map_or(s.len(), |n| i + n + 1);
                    self.issue(Issue::Error(format!(
                        "{keyword} {name}: unterminated option list"
                    )));
                    return end;
                }
            }
        }
        while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
            i += 1;
        }
        let (body, end) = if !line {
            (s[i..].to_owned(), s.len())
        } else if s[i..].starts_with('{') {
            // rpm's "silent {...} grouping": the body is what the braces hold, and the line
            // goes on after them.
            match find_close(s, i, b'{', b'}') {
                Some(close) => {
                    let after = &s[close + 1..];
                    let skip = after.len() - after.trim_start_matches(['\n', '\r']).len();
                    (s[i + 1..close].to_owned(), close + 1 + skip)
                }
                None => {
                    self.issue(Issue::Error(format!("{keyword} {name}: unterminated body")));
                    return s.len();
                }
            }
        } else {
            define_body(s, i)
        };
        self.definitions += 1;
        let valid = name
            .bytes()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_');
        if !valid {
            self.issue(Issue::Error(format!(
                "{keyword}: macro %{name} has an illegal name"
            )));
            return end;
        }
        let body = body.trim();
        if body.is_empty() {
            self.issue(Issue::Error(format!(
                "{keyword}: macro %{name} has an empty body"
            )));
            return end;
        }
        let (body, level) = if global {
            (self.expand_string(body), 0)
        } else {
            (body.to_owned(), self.level)
        };
        self.table.entry(name.to_owned()).or_default().push(Def {
            body,
            opts,
            level,
            literal: false,
        });
        end
    }

    /// `%undefine name`: pops one definition; the rest of the line stays.
    fn undefine(&mut self, s: &str, start: usize) -> usize {
        let b = s.as_bytes();
        let mut i = start;
        while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
            i += 1;
        }
        let name_start = i;
        while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
            i += 1;
        }
        let name = &s[name_start..i];
        self.definitions += 1;
        if let Some(stack) = self.table.get_mut(name) {
            stack.pop();
            if stack.is_empty() {
                self.table.remove(name);
            }
        }
        i
    }
}

/// The host's architecture as rpm names it; `%ifarch` compares against `%{_target_cpu}`,
/// which defaults to this (as `rpmspec` on the same machine does).
fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86" => "i686",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "powerpc64" => "ppc64",
        "arm" => "armv7hl",
        "mips64" if cfg!(target_endian = "little") => "mips64el",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::builtins::lua_sub;
    use super::*;

    fn engine(defs: &[(&str, &str)]) -> Engine {
        let mut e = Engine::new();
        for (n, b) in defs {
            match n.split_once('(') {
                Some((name, opts)) => e.push(name, b, Some(opts.trim_end_matches(')')), false),
                None => e.push(n, b, None, false),
            }
        }
        e
    }

    fn x(e: &mut Engine, s: &str) -> String {
        e.expand(s)
    }

    #[test]
    fn plain_and_nested_macros() {
        let mut e = engine(&[
            ("name", "git"),
            ("version", "2.43.0"),
            ("base", "https://www.kernel.org/pub/software/scm/%{name}"),
            ("tarball", "%{name}-%{version}.tar.xz"),
            ("src", "%{base}/%{tarball}"),
        ]);
        assert_eq!(
            x(&mut e, "%{src}"),
            "https://www.kernel.org/pub/software/scm/git/git-2.43.0.tar.xz"
        );
        assert_eq!(x(&mut e, "%name-%version.tar.gz"), "git-2.43.0.tar.gz");
        assert_eq!(x(&mut e, "%{name}x"), "gitx");
        assert!(e.issues.is_empty(), "{:?}", e.issues);
    }

    #[test]
    fn undefined_macros_stay_and_are_reported() {
        let mut e = engine(&[]);
        assert_eq!(x(&mut e, "a-%{nope}-%nope2"), "a-%{nope}-%nope2");
        assert_eq!(
            e.issues,
            vec![
                Issue::Undefined("%{nope}".into()),
                Issue::Undefined("%nope2".into())
            ]
        );
        assert_eq!(
            e.issues[0].to_string(),
            "macro %{nope} is not defined; left unexpanded"
        );
    }

    #[test]
    fn percent_escapes_and_literal_percent_signs() {
        let mut e = engine(&[("foo", "FOO")]);
        assert_eq!(x(&mut e, "%%foo"), "%foo");
        assert_eq!(x(&mut e, "%%%foo"), "%FOO");
        assert_eq!(x(&mut e, "100%"), "100%");
        assert_eq!(x(&mut e, "50% off"), "50% off");
        assert_eq!(x(&mut e, "a%/b"), "a%/b");
        assert_eq!(
            x(&mut e, "https://x/a%2Bb%E5%A4.tgz"),
            "https://x/a%2Bb%E5%A4.tgz"
        );
        assert!(
            e.issues.is_empty(),
            "percent-encoding is not a macro: {:?}",
            e.issues
        );
        assert_eq!(x(&mut e, "https://x/%dev_url"), "https://x/%dev_url");
        assert_eq!(e.issues, vec![Issue::Undefined("%dev_url".into())]);
    }

    #[test]
    fn conditional_forms() {
        let mut e = engine(&[("foo", "FOO"), ("empty", "%{nil}")]);
        for (input, want) in [
            ("%{?foo}", "FOO"),
            ("%{?bar}", ""),
            ("%{!?foo}", ""),
            ("%{!?bar}", ""),
            ("%{?foo:x}", "x"),
            ("%{?bar:x}", ""),
            ("%{!?foo:x}", ""),
            ("%{!?bar:x}", "x"),
            ("%{?!bar:y}", "y"),
            ("%{!!?foo:x}", "x"),
            ("%?foo", "FOO"),
            ("%?bar", ""),
            ("%!?foo", ""),
            ("%{?empty:E}", "E"),
            ("%{?foo:%{foo}-%{foo}}", "FOO-FOO"),
            ("%{?foo:a:b}", "a:b"),
            ("0%{?fedora}", "0"),
            ("%{?nil}", ""),
            ("%{!?nil:N}", ""),
        ] {
            assert_eq!(x(&mut e, input), want, "{input}");
        }
        assert!(e.issues.is_empty(), "{:?}", e.issues);
    }

    #[test]
    fn define_is_lazy_global_is_eager() {
        let mut e = engine(&[]);
        x(
            &mut e,
            "%global base https://example.com\n\
             %define lazy %{base}/lazy\n\
             %global eager %{base}/eager\n\
             %global base https://changed.example.com\n",
        );
        assert_eq!(
            x(&mut e, "%{lazy} %{eager}"),
            "https://changed.example.com/lazy https://example.com/eager"
        );
        assert_eq!(e.definitions, 4);
    }

    #[test]
    fn define_line_details() {
        let mut e = engine(&[("foo", "FOO")]);
        assert_eq!(x(&mut e, "%define abc  x  y  \n[%abc]"), "[x  y]");
        assert_eq!(
            x(&mut e, "%define ml first \\\n  second\n[%ml]"),
            "[first \n  second]"
        );
        assert_eq!(
            x(&mut e, "%define br %{foo\nbar}\n%{macrobody:br}"),
            "%{foo\nbar}"
        );
        assert_eq!(
            x(&mut e, "%global pct %%{foo}\n%{macrobody:pct}|%pct"),
            "%{foo}|FOO"
        );
        assert_eq!(x(&mut e, "x %global late 5\n[%late]"), "x [5]");
        assert_eq!(x(&mut e, "%{!?zzz: %global zzz 7}[%zzz]"), " [7]");
        assert_eq!(x(&mut e, "%{expand:%%global yyy 8}[%yyy]"), "[8]");
        assert_eq!(
            x(&mut e, "%define abc x %define def y\n[%abc][%def]"),
            "[x ][y]"
        );
        assert!(e.issues.is_empty(), "{:?}", e.issues);
        x(&mut e, "%define 1a x\n");
        x(&mut e, "%define empty\n");
        assert!(
            e.issues
                .iter()
                .any(|i| i.to_string().contains("%1a has an illegal name"))
        );
        assert!(
            e.issues
                .iter()
                .any(|i| i.to_string().contains("%empty has an empty body"))
        );
    }

    #[test]
    fn undefine_pops_one_definition() {
        let mut e = engine(&[]);
        assert_eq!(
            x(&mut e, "%define s one\n%define s two\n%undefine s\n%s"),
            "\none"
        );
        assert_eq!(x(&mut e, "%undefine s\n%{?s:yes}"), "\n");
        assert_eq!(
            x(&mut e, "%undefine never\nok"),
            "\nok",
            "undefining nothing is fine"
        );
    }

    #[test]
    fn parametric_macros_with_options_and_arguments() {
        let p = "<%0|%1|%2|%#|%*|%**|%{-a}|%{-a*}|%{-b}|%{?-b:B}|%{!-b:nB}|%{-a:A}>";
        let mut e = engine(&[
            ("p(a:b)", p),
            ("foo", "FOO"),
            ("q()", "[%*]"),
            ("r(-)", "<%1|%2|%#>"),
        ]);
        for (input, want) in [
            ("%p x y", "<p|x|y|2|x y|x y|||||nB|>"),
            (
                "%p -a 1 -b x y z",
                "<p|x|y|3|x y z|-a 1 -b x y z|-a 1|1|-b|B||A>",
            ),
            ("%{p x y}", "<p|x|y|2|x y|x y|||||nB|>"),
            ("%{p:x y}", "<p|x y|%2|1|x y|x y|||||nB|>"),
            ("%{p -a 9 q}", "<p|q|%2|1|q|-a 9 q|-a 9|9|||nB|A>"),
            ("%p", "<p|%1|%2|0|||||||nB|>"),
            ("%p x -a 1", "<p|x|%2|1|x|x -a 1|-a 1|1|||nB|A>"),
            ("%p -- -a 1", "<p|-a|1|2|-a 1|-- -a 1|||||nB|>"),
            ("%p -ab", "<p|%1|%2|0||-ab|-a b|b|||nB|A>"),
            ("%p -ba 5 x", "<p|x|%2|1|x|-ba 5 x|-a 5|5|-b|B||A>"),
            ("%{p %{foo} two}", "<p|FOO|two|2|FOO two|FOO two|||||nB|>"),
            ("%{p %{quote:a b} c}", "<p|a b|c|2|a b c|a b c|||||nB|>"),
            ("a %q one two\nb", "a [one two]\nb"),
            ("%r -a b", "<-a|b|2>"),
            ("%{?p:yes}", "yes"),
        ] {
            assert_eq!(x(&mut e, input), want, "{input}");
        }
        // Outside a call, the automatic macros do not exist.
        assert_eq!(x(&mut e, "%1 %* %# %{-a}|100%-3"), "%1 %* %# |100");
        e.issues.clear();
        assert_eq!(x(&mut e, "%p -c"), "");
        assert_eq!(
            e.issues,
            vec![Issue::Error("unknown option -c in %p(a:b)".into())]
        );
        e.issues.clear();
        x(&mut e, "%p -a");
        assert!(
            e.issues[0]
                .to_string()
                .contains("option -a requires a value")
        );
    }

    #[test]
    fn defines_inside_a_call_are_scoped_to_it() {
        let mut e = engine(&[("mk()", "%{expand:%%define inner %1\n%%global outer %1}")]);
        x(&mut e, "%mk val\n");
        assert!(
            !e.is_defined("inner"),
            "local %define is dropped at the end of the call"
        );
        assert_eq!(x(&mut e, "%outer"), "val", "%global survives");
    }

    #[test]
    fn builtins() {
        let mut e = engine(&[("foo", "FOO"), ("SOURCE1", "/x/y"), ("pct", "%%{foo}")]);
        for (input, want) in [
            ("%{basename:/a/b/c.tgz}", "c.tgz"),
            ("%{basename:abc/}", ""),
            ("%{basename:%pct}", "%{foo}"),
            ("%{dirname:/a/b/c}", "/a/b"),
            ("%{dirname:abc}", "abc"),
            ("%{dirname:/abc}", ""),
            ("%{suffix:a.tar.gz}", "gz"),
            ("%{suffix:abc}", ""),
            ("%{url2path:https://x/y/z}", "/y/z"),
            ("%{u2p:foo}", "foo"),
            ("%{shrink:  a   b  }", "a b"),
            ("%{quote:a b}", "a b"),
            ("%{shescape:a'b}", "'a'\\''b'"),
            ("%{expand:%%{foo}}", "FOO"),
            ("%{expand:%%%%foo}", "%foo"),
            ("%{expr:1+2}", "3"),
            ("%{expr:\"%{foo}\" == \"FOO\"}", "1"),
            ("%[2 * 3]", "6"),
            ("%[1 ? \"x\" : \"y\"]", "x"),
            ("%[\"%{foo}\" == \"FOO\"]", "1"),
            ("%[ %{?nope} ]", "0"),
            ("%{defined foo}", "1"),
            ("%{defined:foo}", "1"),
            ("%{defined bar}", "0"),
            ("%{undefined bar}", "1"),
            ("%{S:1}", "/x/y"),
            ("%{macrobody:pct}", "%%{foo}"),
            ("a%{echo:x}b", "ab"),
            ("%{verbose}", "0"),
            ("%{verbose:x}", ""),
            ("%{nil}", ""),
            ("%{foo:ignored}", "FOO"),
            ("%{foo ignored}", "FOO"),
            ("%{upper:abc}", "ABC"),
            ("%{lower:ABC}", "abc"),
            ("%{len:abcd}", "4"),
            ("%{sub abcdef 2 4}", "bcd"),
            ("%{sub abcdef -3}", "def"),
            ("%{sub:abcdef}", "abcdef"),
            ("%{rep ab 3 -}", "ab-ab-ab"),
            ("%{reverse:abc}", "cba"),
            ("x%dnl drop this\ny", "xy"),
        ] {
            assert_eq!(x(&mut e, input), want, "{input}");
        }
        assert!(e.issues.is_empty(), "{:?}", e.issues);
    }

    #[test]
    fn with_without_and_bcond() {
        let mut e = engine(&[("_without_docs", "--without-docs"), ("_with_tests", "1")]);
        x(
            &mut e,
            "%bcond_without docs\n%bcond_without gui\n%bcond_with tests\n%bcond_with lto\n%bcond zstd 1\n%bcond big 0\n",
        );
        assert_eq!(
            x(
                &mut e,
                "%{with docs}%{with gui}%{with tests}%{with lto}%{with zstd}%{with big}"
            ),
            "011010"
        );
        assert_eq!(x(&mut e, "%{without docs}%{without gui}"), "10");
        assert_eq!(x(&mut e, "%{?with_gui:yes}"), "yes");
        assert!(e.issues.is_empty(), "{:?}", e.issues);
    }

    #[test]
    fn unsupported_constructs_are_reported_and_kept() {
        let mut e = engine(&[]);
        assert_eq!(x(&mut e, "a%(uname -r)b"), "a%(uname -r)b");
        assert_eq!(x(&mut e, "%{lua: os.exit(1)}"), "%{lua: os.exit(1)}");
        assert_eq!(x(&mut e, "%{getenv:HOME}"), "%{getenv:HOME}");
        assert_eq!(x(&mut e, "%{gsub abc b X}"), "%{gsub abc b X}");
        let msgs: Vec<String> = e.issues.iter().map(|i| i.to_string()).collect();
        assert_eq!(
            msgs,
            vec![
                "shell expansion %(uname -r) is left unexpanded: \"uname\" is not a command upcache evaluates (upcache never runs a shell)",
                "Lua macro %{lua: os.exit(1)} is left unexpanded: \"os\" is not available (upcache never runs Lua)",
                "environment lookup %{getenv:HOME} is not supported; left unexpanded",
                "Lua pattern substitution %{gsub abc b X} is not supported; left unexpanded",
            ]
        );
        // Conditionals on unsupported builtins only test that they exist.
        e.issues.clear();
        assert_eq!(x(&mut e, "%{?lua:yes}"), "yes");
        assert!(e.issues.is_empty());
    }

    #[test]
    fn errors_are_reported() {
        let mut e = engine(&[("loop", "x%{loop}"), ("foo", "FOO")]);
        x(&mut e, "%{loop}");
        assert!(
            e.issues[0]
                .to_string()
                .contains("too many levels of recursion")
        );
        e.issues.clear();
        assert_eq!(x(&mut e, "%{foo"), "%{foo");
        assert!(e.issues[0].to_string().contains("unterminated %{"));
        e.issues.clear();
        assert_eq!(x(&mut e, "%{}"), "%{}");
        assert!(e.issues[0].to_string().contains("invalid macro syntax"));
        e.issues.clear();
        // rpm takes everything up to a space or colon as the name.
        assert_eq!(x(&mut e, "%{foo'}"), "%{foo'}");
        assert_eq!(e.issues, vec![Issue::Undefined("%{foo'}".into())]);
        e.issues.clear();
        x(&mut e, "%{error:boom}%{warn:careful}");
        assert_eq!(
            e.issues,
            vec![
                Issue::Error("the spec raises an error: boom".into()),
                Issue::Warn("careful".into())
            ]
        );
        e.issues.clear();
        assert_eq!(x(&mut e, "%[foo]"), "%[foo]");
        assert!(
            e.issues[0]
                .to_string()
                .starts_with("cannot evaluate %[foo]: bare words")
        );
        e.issues.clear();
        x(&mut e, "%{macrobody:nope}");
        assert!(e.issues[0].to_string().contains("no such macro"));
    }

    #[test]
    fn architecture_defaults() {
        let mut e = engine(&[]);
        assert_eq!(x(&mut e, "%{_target_cpu}"), host_arch());
        assert_eq!(x(&mut e, "%{_target_os}"), "linux");
        assert!(x(&mut e, "%{arm}").contains("armv7hl"));
    }

    #[test]
    fn helpers() {
        assert_eq!(split_args("  a  b\tc "), vec!["a", "b", "c"]);
        assert_eq!(split_args("\u{1f}\u{1f} x"), vec!["", "x"]);
        assert_eq!(lua_sub("abcdef", 2, 4), "bcd");
        assert_eq!(lua_sub("abcdef", 5, 2), "");
        assert_eq!(lua_sub("abcdef", -100, 2), "ab");
        assert_eq!(find_close("%{a{b}c}d", 1, b'{', b'}'), Some(7));
        assert_eq!(find_close("%{a\\}b}", 1, b'{', b'}'), Some(6));
        assert_eq!(find_close("%{a", 1, b'{', b'}'), None);
        assert_eq!(shorten(&"x".repeat(100)).len(), 63);
    }
}
