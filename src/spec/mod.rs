//! RPM spec files: the `Source`/`Patch` entries a spec declares, with macros expanded as
//! `rpmspec -P` (rpm 4.18) expands them, and dist-git `sources` files. Pure: no network, no
//! file access, no shell and no Lua (`%(...)` and `%{lua:...}` are evaluated by built-in
//! evaluators of their pure idioms, or reported); callers pass the text in.
//!
//! Reading follows rpm's `readLine`: physical lines are joined while a `%{`, `%(` or `%[` is
//! open or a line ends in a backslash, each such buffer is macro-expanded (comments too, as rpm
//! does, unless it is in a false `%if` branch), then split back into lines that are checked for
//! conditionals, section markers and preamble tags. Tags define macros of their lowercase name
//! (and, in the main package, the uppercase one), so `%{url}` or `%{summary}` work as in rpm.
//! Unnumbered `Source:`/`Patch:` lines are numbered like rpm ≥ 4.15 numbers them: one more than
//! the highest number seen so far for that tag, starting at 0.

mod expr;
mod lua;
mod macros;
mod printf;
mod reader;
mod shell;
mod sources;

use std::str::FromStr;

use serde::Serialize;

use macros::Engine;
pub use sources::{SourcesLine, parse_sources};

/// Why a spec (or a `sources` file, or a `--define`) cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// A `%{`, `%(` or `%[` is still open at the end of the file.
    #[error("line {line}: {what} is never closed (the rest of the file is inside it)")]
    Unterminated { line: usize, what: &'static str },
    /// `%elif`, `%else` or `%endif` without a matching `%if`, or in the wrong order.
    #[error("line {line}: {directive} {reason}")]
    Conditional {
        line: usize,
        directive: String,
        reason: &'static str,
    },
    /// An `%if` still open at the end of the file.
    #[error("line {line}: %if has no %endif")]
    UnclosedIf { line: usize },
    /// Two entries with the same number (rpm refuses such a spec too).
    #[error("line {line}: {tag} {number} is defined twice")]
    Duplicate { line: usize, tag: Tag, number: u32 },
    /// A `SourceN:` whose `N` is not a number.
    #[error("line {line}: bad {tag} number {text:?}")]
    BadNumber { line: usize, tag: Tag, text: String },
    /// A `--define` that is not `NAME VALUE`.
    #[error("bad definition {define:?}: {reason}")]
    BadDefine {
        define: String,
        reason: &'static str,
    },
    /// A line of a dist-git `sources` file in neither known format.
    #[error("sources line {line}: {reason}: {text:?}")]
    SourcesLine {
        line: usize,
        text: String,
        reason: String,
    },
}

/// `Source` or `Patch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Tag {
    Source,
    Patch,
}

impl Tag {
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    pub(crate) fn macro_prefix(self) -> &'static str {
        match self {
            Tag::Source => "SOURCE",
            Tag::Patch => "PATCH",
        }
    }
}

impl std::fmt::Display for Tag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Tag::Source => "Source",
            Tag::Patch => "Patch",
        })
    }
}

/// One `SourceN:`/`PatchN:` entry (or a line of `%sourcelist`/`%patchlist`), expanded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub tag: Tag,
    /// `N` of `SourceN`, or the number rpm gives an unnumbered entry.
    pub number: u32,
    /// The expanded value, as `rpmspec -P` prints it.
    pub value: String,
    /// The URL to download, when the value is one (`scheme://...`), without its `#fragment`
    /// (a fragment is never sent to a server; `#/name` only renames the file).
    pub url: Option<String>,
    /// The file name rpm stores the entry under in `%{_sourcedir}`: what follows the last
    /// `/` (so the `#/name` fragment trick works), or the last `=` after it.
    pub file: String,
    /// The spec line the entry came from.
    #[serde(skip)]
    pub line: usize,
}

impl Entry {
    /// `Source0`, `Patch12`.
    pub fn label(&self) -> String {
        format!("{}{}", self.tag, self.number)
    }
}

/// Something that does not stop the spec from being read but makes an entry doubtful: a
/// macro left unexpanded, an unsupported construct, a condition that could not be evaluated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// The spec line (1-based) the warning is about.
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// What a spec declares.
#[derive(Debug, Clone, Default)]
pub struct Spec {
    /// In the order the spec declares them.
    pub entries: Vec<Entry>,
    /// In the order they were found.
    pub warnings: Vec<Warning>,
}

/// A macro definition given from outside, like `rpm --define 'NAME VALUE'`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Define {
    /// The macro name, without `%`.
    pub name: String,
    /// Options of a parametric macro (`NAME(OPTS) VALUE`).
    pub opts: Option<String>,
    /// The unexpanded body, expanded when used (like `%define`).
    pub body: String,
}

impl FromStr for Define {
    type Err = SpecError;

    /// `NAME VALUE`, `%NAME VALUE` or `NAME(OPTS) VALUE`.
    fn from_str(s: &str) -> Result<Define, SpecError> {
        let bad = |reason| SpecError::BadDefine {
            define: s.to_owned(),
            reason,
        };
        let t = s.trim();
        let t = t.strip_prefix('%').unwrap_or(t);
        let (head, body) = t
            .split_once(char::is_whitespace)
            .ok_or_else(|| bad("expected NAME VALUE"))?;
        let body = body.trim();
        if body.is_empty() {
            return Err(bad("the value is empty"));
        }
        let (name, opts) = match head.split_once('(') {
            Some((name, rest)) => {
                let opts = rest
                    .strip_suffix(')')
                    .ok_or_else(|| bad("unterminated option list"))?;
                (name, Some(opts.to_owned()))
            }
            None => (head, None),
        };
        let valid = name
            .bytes()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
            && name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_');
        if !valid {
            return Err(bad("the name must be letters, digits and _"));
        }
        Ok(Define {
            name: name.to_owned(),
            opts,
            body: body.to_owned(),
        })
    }
}

/// Read a spec's `Source`/`Patch` entries. `defines` come first, so the spec's own
/// definitions win over them, as with `rpmspec --define`.
pub fn parse(text: &str, defines: &[Define]) -> Result<Spec, SpecError> {
    let mut engine = Engine::new();
    for d in defines {
        engine.push(&d.name, &d.body, d.opts.as_deref(), false);
    }
    reader::read(engine, text, false)
}

/// Read the entries of a spec that rpm already expanded: the output of `rpmspec -P`, which
/// keeps the sections and preamble lines and drops what conditionals exclude.
pub fn parse_expanded(text: &str) -> Result<Spec, SpecError> {
    reader::read(Engine::new(), text, true)
}

/// `scheme://...`
pub(crate) fn is_url(value: &str) -> bool {
    match value.split_once("://") {
        Some((scheme, _)) => {
            scheme
                .bytes()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic())
                && scheme
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'))
        }
        None => false,
    }
}

/// The file name rpm derives from a Source value (`newSource` in rpm's `parsePreamble.c`):
/// after the last `/`, and after the last `=` in that part; the whole value without a `/`.
pub(crate) fn rpm_file_name(value: &str) -> &str {
    match value.rfind('/') {
        Some(i) => {
            let tail = &value[i + 1..];
            tail.rfind('=').map_or(tail, |j| &tail[j + 1..])
        }
        None => value,
    }
}

#[cfg(test)]
mod tests;
