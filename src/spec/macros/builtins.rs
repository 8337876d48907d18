//! The builtin macros: `%{expand:...}`, `%{basename:...}`, `%bcond`, the string builtins of
//! newer rpm, and `%{lua:...}` through the Lua subset.

use super::{Args, Def, Engine, Issue, QUOTE, split_args};
use crate::spec::{expr, lua};

/// What `%(...)` is called in messages.
pub(super) const SHELL: &str = "shell expansion";

/// What a `%{lua:...}` script may ask of the engine.
struct LuaHost<'a>(&'a mut Engine);

impl lua::Host for LuaHost<'_> {
    fn expand(&mut self, text: &str) -> String {
        let mut s = self.0.expand_string(text);
        s.retain(|c| c != QUOTE);
        s
    }

    fn is_defined(&self, name: &str) -> bool {
        self.0.is_defined(name)
    }
}

/// Builtins that need something we do not have (Lua, a shell, files, the environment).
pub(super) const UNSUPPORTED_BUILTINS: &[(&str, &str)] = &[
    ("load", "macro file loading"),
    ("getenv", "environment lookup"),
    ("exists", "file test"),
    ("uncompress", "file inspection"),
    ("getncpus", "CPU count"),
    ("getconfdir", "rpm configuration lookup"),
    ("rpmversion", "rpm version lookup"),
    ("gsub", "Lua pattern substitution"),
    ("match", "Lua pattern matching"),
    ("find", "Lua pattern search"),
    ("format", "Lua string formatting"),
];

/// Builtins we evaluate.
pub(super) const BUILTINS: &[&str] = &[
    "lua",
    "define",
    "global",
    "undefine",
    "dnl",
    "nil",
    "expand",
    "expr",
    "basename",
    "dirname",
    "suffix",
    "url2path",
    "u2p",
    "shrink",
    "quote",
    "shescape",
    "S",
    "P",
    "macrobody",
    "echo",
    "warn",
    "error",
    "verbose",
    "trace",
    "dump",
    "defined",
    "undefined",
    "with",
    "without",
    "bcond",
    "bcond_with",
    "bcond_without",
    "upper",
    "lower",
    "len",
    "sub",
    "rep",
    "reverse",
];

impl Engine {
    pub(super) fn builtin(&mut self, name: &str, whole: &str, args: Args, out: &mut String) {
        if let Some((_, what)) = UNSUPPORTED_BUILTINS.iter().find(|(n, _)| *n == name) {
            self.issue(Issue::Unsupported {
                text: whole.to_owned(),
                what,
            });
            out.push_str(whole);
            return;
        }
        let raw = match args {
            Args::None => None,
            Args::Colon(a) | Args::Words(a) => Some(a),
        };
        let arg = || raw.unwrap_or("");
        match name {
            "nil" | "trace" | "dump" | "dnl" => {}
            "lua" => {
                // rpm hands the code to Lua as written (no macro expansion).
                let allowed = self.allowance(lua::MAX_STEPS);
                let mut left = allowed;
                let result = lua::run(arg(), &mut LuaHost(self), &mut left);
                self.charge(allowed - left);
                match result {
                    Ok(printed) => out.push_str(&printed),
                    Err(why) => {
                        self.issue(Issue::NotEvaluated {
                            what: "Lua macro",
                            text: whole.to_owned(),
                            why: why.to_string(),
                        });
                        out.push_str(whole);
                    }
                }
            }
            "echo" => {
                // rpm prints to stdout and expands to nothing; only the side effects matter.
                self.expand_string(arg());
            }
            "warn" => {
                let msg = self.expand_string(arg());
                self.issue(Issue::Warn(msg));
            }
            "error" => {
                let msg = self.expand_string(arg());
                self.issue(Issue::Error(format!("the spec raises an error: {msg}")));
            }
            "verbose" => {
                if raw.is_none() {
                    out.push('0');
                }
            }
            "define" | "global" => {
                // `%{define:name body}`: the same as the line form.
                let text = arg().to_owned();
                self.define(&text, 0, name == "global", false);
            }
            "undefine" => {
                let text = self.expand_string(arg());
                self.undefine(&text, 0);
            }
            "expand" => {
                let once = self.expand_string(arg());
                self.expand_into(&once, out);
            }
            "expr" => {
                let text = self.expand_string(arg());
                match expr::eval(&text, None) {
                    Ok(v) => out.push_str(&v.to_string()),
                    Err(e) => self.issue(Issue::Error(format!("cannot evaluate {whole}: {e}"))),
                }
            }
            "quote" => {
                let a = self.expand_string(arg());
                out.push(QUOTE);
                out.push_str(&a);
                out.push(QUOTE);
            }
            "S" | "P" => {
                let n = self.expand_string(arg());
                let kind = if name == "S" { "SOURCE" } else { "PATCH" };
                let reference = format!("%{kind}{}", n.trim());
                self.expand_into(&reference, out);
            }
            "macrobody" => {
                let n = self.expand_string(arg());
                match self.top(n.trim()) {
                    Some(d) => out.push_str(&d.body.clone()),
                    None => self.issue(Issue::Error(format!(
                        "{whole}: no such macro {:?}",
                        n.trim()
                    ))),
                }
            }
            "defined" | "undefined" => {
                let n = self.expand_string(arg());
                let defined = self.is_defined(n.trim());
                out.push(if defined == (name == "defined") {
                    '1'
                } else {
                    '0'
                });
            }
            "with" | "without" => {
                let n = self.expand_string(arg());
                let on = self.is_defined(&format!("with_{}", n.trim()));
                out.push(if on == (name == "with") { '1' } else { '0' });
            }
            "bcond" | "bcond_with" | "bcond_without" => self.bcond(name, whole, arg()),
            _ => {
                let a = self.expand_string(arg());
                match string_builtin(name, &a, matches!(args, Args::Words(_))) {
                    Ok(v) => out.push_str(&v),
                    Err(e) => {
                        self.issue(Issue::Error(format!("{whole}: {e}")));
                        out.push_str(whole);
                    }
                }
            }
        }
    }

    /// `%bcond NAME DEFAULT`, `%bcond_with NAME`, `%bcond_without NAME`: define `with_NAME`
    /// unless `--with`/`--without` (`_with_NAME`/`_without_NAME`) says otherwise.
    fn bcond(&mut self, name: &str, whole: &str, raw: &str) {
        let words = split_args(&self.expand_string(raw));
        let Some(option) = words.first() else {
            self.issue(Issue::Error(format!("{whole}: missing the option name")));
            return;
        };
        let default_on = match name {
            "bcond_with" => false,
            "bcond_without" => true,
            _ => match words.get(1).map(|d| expr::eval(d, None)) {
                Some(Ok(v)) => v.to_string() != "0" && !v.to_string().is_empty(),
                Some(Err(e)) => {
                    self.issue(Issue::Error(format!("{whole}: bad default: {e}")));
                    return;
                }
                None => {
                    self.issue(Issue::Error(format!("{whole}: missing the default")));
                    return;
                }
            },
        };
        let on = if default_on {
            !self.is_defined(&format!("_without_{option}"))
        } else {
            self.is_defined(&format!("_with_{option}"))
        };
        if on {
            self.definitions += 1;
            self.table
                .entry(format!("with_{option}"))
                .or_default()
                .push(Def {
                    body: "1".into(),
                    opts: None,
                    level: 0,
                    literal: false,
                });
        }
    }
}

pub(super) fn is_builtin(name: &str) -> bool {
    BUILTINS.contains(&name) || UNSUPPORTED_BUILTINS.iter().any(|(n, _)| *n == name)
}

/// The string builtins of newer rpm (`%{upper:...}`, `%{sub s i j}`, ...), Lua semantics.
fn string_builtin(name: &str, arg: &str, words: bool) -> Result<String, String> {
    let chars: Vec<char> = arg.chars().collect();
    Ok(match name {
        "basename" => arg.rsplit('/').next().unwrap_or("").to_owned(),
        "dirname" => match arg.rfind('/') {
            Some(i) => arg[..i].to_owned(),
            None => arg.to_owned(),
        },
        "suffix" => match arg.rfind('.') {
            Some(i) => arg[i + 1..].to_owned(),
            None => String::new(),
        },
        "url2path" | "u2p" => match arg.find("://") {
            Some(i) => {
                let after = &arg[i + 3..];
                after
                    .find('/')
                    .map_or(String::new(), |j| after[j..].to_owned())
            }
            None => arg.to_owned(),
        },
        "shrink" => arg.split_whitespace().collect::<Vec<_>>().join(" "),
        "shescape" => format!("'{}'", arg.replace('\'', "'\\''")),
        "upper" => arg.to_ascii_uppercase(),
        "lower" => arg.to_ascii_lowercase(),
        "len" => arg.len().to_string(),
        "reverse" => chars.iter().rev().collect(),
        "sub" | "rep" => {
            let parts: Vec<&str> = if words {
                arg.split_whitespace().collect()
            } else {
                vec![arg]
            };
            let num = |i: usize| -> Result<Option<i64>, String> {
                parts
                    .get(i)
                    .map(|p| {
                        p.parse::<i64>()
                            .map_err(|_| format!("{p:?} is not a number"))
                    })
                    .transpose()
            };
            let Some(s) = parts.first() else {
                return Err("missing the string".into());
            };
            if name == "rep" {
                let n = num(1)?.ok_or("missing the count")?.max(0) as usize;
                let sep = parts.get(2).copied().unwrap_or("");
                if (s.len() + sep.len()).saturating_mul(n) > super::MAX_EXPANSION {
                    return Err(format!("more than {} bytes", super::MAX_EXPANSION));
                }
                return Ok(vec![*s; n].join(sep));
            }
            lua_sub(s, num(1)?.unwrap_or(1), num(2)?.unwrap_or(-1))
        }
        _ => unreachable!("{name} is not a string builtin"),
    })
}

/// Lua's `string.sub`: 1-based, inclusive, negative positions count from the end.
pub(super) fn lua_sub(s: &str, i: i64, j: i64) -> String {
    let len = s.chars().count() as i64;
    let norm = |p: i64| if p < 0 { (len + p + 1).max(0) } else { p };
    let (start, end) = (norm(i).max(1), norm(j).min(len));
    if start > end {
        return String::new();
    }
    s.chars()
        .skip((start - 1) as usize)
        .take((end - start + 1) as usize)
        .collect()
}
