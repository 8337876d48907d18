//! Reading a spec the way rpm's `readLine` does: physical lines joined into buffers, each
//! expanded and split back into lines that are checked for conditionals, section markers and
//! preamble tags.

use super::macros::{Engine, Issue};
use super::{Entry, Spec, SpecError, Tag, Warning, is_url, rpm_file_name};

/// Read every buffer of `text` with `engine` (which holds the `--define`s). `verbatim` text
/// is already expanded (`rpmspec -P` output): read line by line, with no macro expansion.
pub(super) fn read(engine: Engine, text: &str, verbatim: bool) -> Result<Spec, SpecError> {
    let mut reader = Reader {
        engine,
        verbatim,
        lines: text.lines().collect(),
        next: 0,
        conds: Vec::new(),
        section: Section::Preamble { main: true },
        autonum: [None, None],
        spec: Spec::default(),
    };
    while let Some((line, buffer)) = reader.next_buffer()? {
        reader.buffer(line, &buffer)?;
    }
    if let Some(c) = reader.conds.last() {
        return Err(SpecError::UnclosedIf { line: c.line });
    }
    Ok(reader.spec)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    Preamble {
        main: bool,
    },
    SourceList,
    PatchList,
    /// Scripts, descriptions, file lists, changelog: expanded for their side effects only.
    Other,
}

/// One level of `%if` nesting.
struct Cond {
    line: usize,
    /// Whether the enclosing level is being read.
    parent: bool,
    /// Whether the current branch is being read.
    active: bool,
    /// Whether some branch was taken already (later `%elif`/`%else` are skipped).
    taken: bool,
    seen_else: bool,
}

#[derive(Debug, Clone, Copy)]
enum Test {
    Expr,
    Arch { negate: bool },
    Os { negate: bool },
}

#[derive(Debug, Clone, Copy)]
enum Directive {
    If(Test),
    Elif(Test),
    Else,
    Endif,
    Include,
}

/// Tags that define a macro of their lowercase name (rpm's preamble table).
const MACRO_TAGS: &[&str] = &[
    "name",
    "version",
    "release",
    "epoch",
    "summary",
    "license",
    "sourcelicense",
    "distribution",
    "disturl",
    "vendor",
    "group",
    "packager",
    "url",
    "vcs",
    "prefixes",
    "prefix",
    "disttag",
    "bugurl",
    "translationurl",
    "upstreamreleases",
    "modularitylabel",
    "removepathpostfixes",
];

/// Section markers (rpm's `partList`); matched case-insensitively at the start of a line.
const SECTIONS: &[&str] = &[
    "package",
    "prep",
    "generate_buildrequires",
    "conf",
    "build",
    "install",
    "check",
    "clean",
    "preun",
    "postun",
    "pretrans",
    "posttrans",
    "preuntrans",
    "postuntrans",
    "pre",
    "post",
    "files",
    "changelog",
    "description",
    "triggerpostun",
    "triggerprein",
    "triggerun",
    "triggerin",
    "trigger",
    "verifyscript",
    "sepolicy",
    "filetriggerin",
    "filetrigger",
    "filetriggerun",
    "filetriggerpostun",
    "transfiletriggerin",
    "transfiletrigger",
    "transfiletriggerun",
    "transfiletriggerpostun",
    "end",
    "patchlist",
    "sourcelist",
];

struct Reader<'a> {
    engine: Engine,
    verbatim: bool,
    lines: Vec<&'a str>,
    next: usize,
    conds: Vec<Cond>,
    section: Section,
    /// Highest number seen per tag, for unnumbered entries.
    autonum: [Option<u32>; 2],
    spec: Spec,
}

impl Reader<'_> {
    fn reading(&self) -> bool {
        self.conds.last().is_none_or(|c| c.parent && c.active)
    }

    fn warn(&mut self, line: usize, message: String) {
        let w = Warning { line, message };
        if !self.spec.warnings.contains(&w) {
            self.spec.warnings.push(w);
        }
    }

    /// The next logical buffer and its first line number: physical lines joined while a
    /// macro bracket is open or a line ends in a backslash (rpm's `copyNextLineFromOFI`).
    fn next_buffer(&mut self) -> Result<Option<(usize, String)>, SpecError> {
        if self.next >= self.lines.len() {
            return Ok(None);
        }
        let first = self.next + 1;
        let mut buf = String::new();
        let (mut braces, mut parens, mut brackets) = (0usize, 0usize, 0usize);
        loop {
            let line = self.lines[self.next]
                .strip_suffix('\r')
                .unwrap_or(self.lines[self.next]);
            self.next += 1;
            if !buf.is_empty() {
                buf.push('\n');
            }
            let scan_from = buf.len();
            buf.push_str(line);
            let b = buf.as_bytes();
            let mut continued = false;
            let mut i = scan_from;
            while i < b.len() {
                match b[i] {
                    b'\\' if i + 1 == b.len() => continued = true,
                    b'\\' => i += 1,
                    b'%' => match b.get(i + 1) {
                        Some(b'{') => {
                            braces += 1;
                            i += 1;
                        }
                        Some(b'(') => {
                            parens += 1;
                            i += 1;
                        }
                        Some(b'[') => {
                            brackets += 1;
                            i += 1;
                        }
                        Some(b'%') => i += 1,
                        _ => {}
                    },
                    b'{' if braces > 0 => braces += 1,
                    b'}' if braces > 0 => braces -= 1,
                    b'(' if parens > 0 => parens += 1,
                    b')' if parens > 0 => parens -= 1,
                    b'[' if brackets > 0 => brackets += 1,
                    b']' if brackets > 0 => brackets -= 1,
                    _ => {}
                }
                i += 1;
            }
            let open = braces + parens + brackets > 0;
            if self.next >= self.lines.len() {
                if open {
                    let what = if braces > 0 {
                        "%{"
                    } else if parens > 0 {
                        "%("
                    } else {
                        "%["
                    };
                    return Err(SpecError::Unterminated { line: first, what });
                }
                break;
            }
            if self.verbatim || (!open && !continued) {
                break;
            }
        }
        Ok(Some((first, buf)))
    }

    fn buffer(&mut self, line: usize, raw: &str) -> Result<(), SpecError> {
        if self.verbatim {
            let mut issues = None;
            return self.line(line, raw, &mut issues);
        }
        let trimmed = raw.trim_start();
        if let Some((d, rest)) = directive(trimmed) {
            return self.directive(line, d, rest, true);
        }
        if !self.reading() {
            // rpm does not expand a buffer in a false branch, but still splits it into lines
            // and checks each for conditionals: an `%else` or `%endif` after a line ending in
            // a backslash (a `./configure \` option list) closes the branch.
            for l in raw.split('\n').skip(1) {
                if let Some((d, rest)) = directive(l.trim_start()) {
                    self.directive(line, d, rest, false)?;
                }
            }
            return Ok(());
        }
        let before = self.engine.definitions;
        let expanded = self.engine.expand(raw);
        let mut issues = Some(std::mem::take(&mut self.engine.issues));
        if trimmed.starts_with('#') {
            // rpm expands comments too, so a %global in a comment takes effect. Say so. The
            // comment's own problems concern nobody; lines continued after it are read.
            issues = None;
            if self.engine.definitions != before {
                self.warn(
                    line,
                    format!(
                        "a macro definition in a comment takes effect (rpm expands comments): {}",
                        trimmed.lines().next().unwrap_or_default()
                    ),
                );
            }
        }
        for l in expanded.split('\n') {
            self.line(line, l, &mut issues)?;
        }
        Ok(())
    }

    /// One line of an expanded buffer (from spec line `line`): a conditional, a section
    /// marker, a preamble tag, or an entry of `%sourcelist`/`%patchlist`.
    fn line(
        &mut self,
        line: usize,
        l: &str,
        issues: &mut Option<Vec<Issue>>,
    ) -> Result<(), SpecError> {
        let t = l.trim_start();
        if !self.verbatim {
            if let Some((d, rest)) = directive(t) {
                return self.directive(line, d, rest, false);
            }
        }
        if !self.reading() || t.is_empty() || t.starts_with('#') {
            return Ok(());
        }
        if let Some(name) = section(l) {
            self.section = match name.as_str() {
                "package" => Section::Preamble { main: false },
                "sourcelist" => Section::SourceList,
                "patchlist" => Section::PatchList,
                _ => Section::Other,
            };
            return Ok(());
        }
        match self.section {
            Section::Preamble { main } => self.tag_line(line, t, main, issues),
            Section::SourceList => self.add(line, Tag::Source, None, t.trim_end(), issues),
            Section::PatchList => self.add(line, Tag::Patch, None, t.trim_end(), issues),
            Section::Other => Ok(()),
        }
    }

    fn directive(
        &mut self,
        line: usize,
        d: Directive,
        rest: &str,
        expand: bool,
    ) -> Result<(), SpecError> {
        let err = |directive: &str, reason| SpecError::Conditional {
            line,
            directive: directive.to_owned(),
            reason,
        };
        match d {
            Directive::If(test) => {
                let parent = self.reading();
                let value = parent && self.condition(line, test, rest, expand);
                self.conds.push(Cond {
                    line,
                    parent,
                    active: value,
                    taken: value,
                    seen_else: false,
                });
            }
            Directive::Elif(test) => {
                let Some(c) = self.conds.last() else {
                    return Err(err("%elif", "without %if"));
                };
                if c.seen_else {
                    return Err(err("%elif", "after %else"));
                }
                let (parent, taken) = (c.parent, c.taken);
                let value = parent && !taken && self.condition(line, test, rest, expand);
                let c = self.conds.last_mut().expect("checked above");
                c.active = value;
                c.taken |= value;
            }
            Directive::Else => {
                let Some(c) = self.conds.last_mut() else {
                    return Err(err("%else", "without %if"));
                };
                if c.seen_else {
                    return Err(err("%else", "after %else"));
                }
                c.active = !c.taken;
                c.taken = true;
                c.seen_else = true;
            }
            Directive::Endif => {
                if self.conds.pop().is_none() {
                    return Err(err("%endif", "without %if"));
                }
            }
            Directive::Include => {
                if self.reading() {
                    self.warn(
                        line,
                        format!(
                            "%include {} is not supported; entries in that file are not listed",
                            rest.trim()
                        ),
                    );
                }
            }
        }
        Ok(())
    }

    /// Evaluate an `%if`/`%elif`/`%ifarch`... condition; what cannot be evaluated is false.
    fn condition(&mut self, line: usize, test: Test, rest: &str, expand: bool) -> bool {
        let text = if expand {
            let t = self.engine.expand(rest);
            for issue in std::mem::take(&mut self.engine.issues) {
                self.warn(line, format!("in a condition: {issue}"));
            }
            t
        } else {
            rest.to_owned()
        };
        match test {
            Test::Expr => match self.engine.eval_condition(text.trim()) {
                Ok(v) => v,
                Err(e) => {
                    self.warn(
                        line,
                        format!(
                            "cannot evaluate %if {:?} (expanded: {:?}): {e}; treated as false",
                            rest.trim(),
                            text.trim()
                        ),
                    );
                    false
                }
            },
            Test::Arch { negate } | Test::Os { negate } => {
                let target = if matches!(test, Test::Arch { .. }) {
                    self.engine.expand("%{_target_cpu}")
                } else {
                    self.engine.expand("%{_target_os}")
                };
                let listed = text
                    .split(|c: char| c.is_whitespace() || c == ',')
                    .any(|a| a.eq_ignore_ascii_case(&target));
                listed != negate
            }
        }
    }

    /// A preamble line: a `Source`/`Patch` entry, or a tag that defines a macro.
    fn tag_line(
        &mut self,
        line: usize,
        t: &str,
        main: bool,
        issues: &mut Option<Vec<Issue>>,
    ) -> Result<(), SpecError> {
        let name_len = t.bytes().take_while(u8::is_ascii_alphabetic).count();
        let name = t[..name_len].to_ascii_lowercase();
        let after = &t[name_len..];
        if name == "source" || name == "patch" {
            let tag = if name == "source" {
                Tag::Source
            } else {
                Tag::Patch
            };
            let Some(colon) = after.find(':') else {
                return Ok(());
            };
            // rpm reads the number up to the first ':', space or tab.
            let num_text = after[..colon].split([' ', '\t']).next().unwrap_or_default();
            let number = if num_text.is_empty() {
                None
            } else {
                Some(num_text.parse::<u32>().map_err(|_| SpecError::BadNumber {
                    line,
                    tag,
                    text: t[..name_len + colon].to_owned(),
                })?)
            };
            return self.add(line, tag, number, after[colon + 1..].trim(), issues);
        }
        if !MACRO_TAGS.contains(&name.as_str()) {
            return Ok(());
        }
        let mut rest = after.trim_start();
        if rest.starts_with('(') {
            // Summary(de): a language or qualifier; rpm still defines the macro.
            let Some(close) = rest.find(')') else {
                return Ok(());
            };
            rest = rest[close + 1..].trim_start();
        }
        let Some(value) = rest.strip_prefix(':') else {
            return Ok(());
        };
        let value = value.trim();
        if value.is_empty() {
            return Ok(());
        }
        self.engine.push(&name, value, None, false);
        if main {
            self.engine
                .push(&name.to_ascii_uppercase(), value, None, false);
        }
        Ok(())
    }

    fn add(
        &mut self,
        line: usize,
        tag: Tag,
        number: Option<u32>,
        value: &str,
        issues: &mut Option<Vec<Issue>>,
    ) -> Result<(), SpecError> {
        let auto = &mut self.autonum[tag.index()];
        let number = match number {
            Some(n) => {
                *auto = Some(auto.map_or(n, |a| a.max(n)));
                n
            }
            None => {
                let n = auto.map_or(0, |a| a + 1);
                *auto = Some(n);
                n
            }
        };
        let label = format!("{tag}{number}");
        // The buffer's expansion problems belong to the entry it produced.
        for issue in issues.take().unwrap_or_default() {
            self.warn(line, format!("{label}: {issue}"));
        }
        if value.is_empty() {
            self.warn(
                line,
                format!("{label} is empty after expansion; rpm would refuse the spec"),
            );
            return Ok(());
        }
        if self
            .spec
            .entries
            .iter()
            .any(|e| e.tag == tag && e.number == number)
        {
            return Err(SpecError::Duplicate { line, tag, number });
        }
        let file = rpm_file_name(value).to_owned();
        if file.is_empty() {
            self.warn(line, format!("{label} {value:?} has no file name"));
        }
        let url = is_url(value).then(|| value.split('#').next().unwrap_or(value).to_owned());
        let prefix = tag.macro_prefix();
        self.engine.push(
            &format!("{prefix}{number}"),
            &format!("%{{_sourcedir}}/{file}"),
            None,
            false,
        );
        self.engine
            .push(&format!("{prefix}URL{number}"), value, None, true);
        self.spec.entries.push(Entry {
            tag,
            number,
            value: value.to_owned(),
            url,
            file,
            line,
        });
        Ok(())
    }
}

/// A conditional directive at the start of `t`, and the text after its keyword.
fn directive(t: &str) -> Option<(Directive, &str)> {
    const DIRECTIVES: &[(&str, Directive)] = &[
        ("%if", Directive::If(Test::Expr)),
        ("%ifarch", Directive::If(Test::Arch { negate: false })),
        ("%ifnarch", Directive::If(Test::Arch { negate: true })),
        ("%ifos", Directive::If(Test::Os { negate: false })),
        ("%ifnos", Directive::If(Test::Os { negate: true })),
        ("%elif", Directive::Elif(Test::Expr)),
        ("%elifarch", Directive::Elif(Test::Arch { negate: false })),
        ("%elifnarch", Directive::Elif(Test::Arch { negate: true })),
        ("%elifos", Directive::Elif(Test::Os { negate: false })),
        ("%elifnos", Directive::Elif(Test::Os { negate: true })),
        ("%else", Directive::Else),
        ("%endif", Directive::Endif),
        ("%include", Directive::Include),
    ];
    DIRECTIVES.iter().find_map(|(kw, d)| {
        let rest = t.strip_prefix(kw)?;
        (rest.is_empty() || rest.starts_with(char::is_whitespace)).then_some((*d, rest))
    })
}

/// The section a line starts, if it is a section marker (rpm's `isPart`: no leading space,
/// case-insensitive, followed by whitespace or the end of the line).
fn section(line: &str) -> Option<String> {
    let word = line.strip_prefix('%')?;
    let word = word.split(char::is_whitespace).next()?.to_ascii_lowercase();
    SECTIONS.contains(&word.as_str()).then_some(word)
}
