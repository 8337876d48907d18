//! The shell's lexer, for the subset the evaluator accepts: words with their quoting and
//! expansions, `;`, `|`, `<<<` and redirections.

use super::{Result, refuse};

/// A piece of a word, before expansion.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Part {
    /// Literal text; `quoted` text is not field-split or globbed.
    Lit { text: String, quoted: bool },
    /// `$name` or `${...}` (the text between the braces).
    Param { expr: String, quoted: bool },
    /// `$(...)` or a backquoted command.
    Sub { cmd: String, quoted: bool },
}

pub(super) type Word = Vec<Part>;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Token {
    Word(Word),
    /// `;` or a newline.
    Separator {
        newline: bool,
    },
    Pipe,
    /// `<<<`
    HereString,
    /// `>`, `1>`, `2>` (the file descriptor), or `2>&1` (`dup` set).
    Redirect {
        fd: u8,
        dup: bool,
    },
}

/// Split a command line into tokens, as bash's lexer does for the subset we accept.
pub(super) fn lex(s: &str) -> Result<Vec<Token>> {
    let b = s.as_bytes();
    let mut tokens = Vec::new();
    let mut word: Word = Vec::new();
    let mut in_word = false;
    let mut i = 0;
    let lit = |word: &mut Word, c: char, quoted: bool| match word.last_mut() {
        Some(Part::Lit { text, quoted: q }) if *q == quoted => text.push(c),
        _ => word.push(Part::Lit {
            text: c.to_string(),
            quoted,
        }),
    };
    macro_rules! end_word {
        () => {
            if std::mem::take(&mut in_word) {
                tokens.push(Token::Word(std::mem::take(&mut word)));
            }
        };
    }
    while i < b.len() {
        let c = b[i] as char;
        match c {
            ' ' | '\t' => {
                end_word!();
                i += 1;
            }
            '\n' | ';' => {
                end_word!();
                if b.get(i + 1) == Some(&b';') && c == ';' {
                    return refuse("\";;\" (case statements)");
                }
                tokens.push(Token::Separator { newline: c == '\n' });
                i += 1;
            }
            '|' => {
                end_word!();
                if matches!(b.get(i + 1), Some(b'|' | b'&')) {
                    return refuse(format!("{:?} lists", &s[i..i + 2]));
                }
                tokens.push(Token::Pipe);
                i += 1;
            }
            '&' if b.get(i + 1) == Some(&b'&') => return refuse("\"&&\" lists"),
            '&' => return refuse("background jobs (\"&\")"),
            '(' | ')' => return refuse("subshells"),
            '<' => {
                end_word!();
                if !s[i..].starts_with("<<<") {
                    return refuse("input redirections other than <<<");
                }
                tokens.push(Token::HereString);
                i += 3;
            }
            '>' => {
                // `2>`: the digits just before belong to the redirection.
                let fd = match word.as_slice() {
                    [
                        Part::Lit {
                            text,
                            quoted: false,
                        },
                    ] if in_word && text.len() == 1 => match text.as_str() {
                        "1" => 1,
                        "2" => 2,
                        _ => return refuse("redirections other than to /dev/null"),
                    },
                    _ => {
                        end_word!();
                        1
                    }
                };
                word.clear();
                in_word = false;
                i += 1;
                let dup = s[i..].starts_with("&1");
                if dup {
                    if fd != 2 {
                        return refuse("redirections other than to /dev/null");
                    }
                    i += 2;
                } else if b.get(i) == Some(&b'>') {
                    return refuse("appending redirections");
                }
                tokens.push(Token::Redirect { fd, dup });
            }
            '#' if !in_word => {
                i = s[i..].find('\n').map_or(b.len(), |n| i + n);
            }
            '\'' => {
                let Some(n) = s[i + 1..].find('\'') else {
                    return refuse("an unterminated quote");
                };
                word.push(Part::Lit {
                    text: s[i + 1..i + 1 + n].to_owned(),
                    quoted: true,
                });
                in_word = true;
                i += n + 2;
            }
            '"' => {
                in_word = true;
                i += 1;
                loop {
                    let Some(&d) = b.get(i) else {
                        return refuse("an unterminated quote");
                    };
                    match d {
                        b'"' => {
                            i += 1;
                            break;
                        }
                        b'\\' if matches!(b.get(i + 1), Some(b'$' | b'`' | b'"' | b'\\')) => {
                            lit(&mut word, b[i + 1] as char, true);
                            i += 2;
                        }
                        b'\\' if b.get(i + 1) == Some(&b'\n') => i += 2,
                        b'$' | b'`' => {
                            let (part, next) = dollar(s, i, true)?;
                            match part {
                                Some(p) => word.push(p),
                                None => lit(&mut word, '$', true),
                            }
                            i = next;
                        }
                        _ => {
                            lit(&mut word, d as char, true);
                            // All ASCII (checked by the caller), so bytes are characters.
                            i += 1;
                        }
                    }
                }
                // `""` is an empty field, not nothing.
                if !matches!(word.last(), Some(Part::Lit { quoted: true, .. })) {
                    word.push(Part::Lit {
                        text: String::new(),
                        quoted: true,
                    });
                }
            }
            '\\' => {
                match b.get(i + 1) {
                    Some(b'\n') => {}
                    Some(&n) => {
                        lit(&mut word, n as char, true);
                        in_word = true;
                    }
                    None => {
                        lit(&mut word, '\\', true);
                        in_word = true;
                    }
                }
                i += 2;
            }
            '$' | '`' => {
                let (part, next) = dollar(s, i, false)?;
                match part {
                    Some(p) => word.push(p),
                    None => lit(&mut word, '$', false),
                }
                in_word = true;
                i = next;
            }
            _ => {
                lit(&mut word, c, false);
                in_word = true;
                i += 1;
            }
        }
    }
    end_word!();
    Ok(tokens)
}

/// The expansion starting at `s[i]` (`$` or a backquote) and where the text continues;
/// `None` for a `$` that starts nothing (it stands for itself).
fn dollar(s: &str, i: usize, quoted: bool) -> Result<(Option<Part>, usize)> {
    let b = s.as_bytes();
    if b[i] == b'`' {
        let Some(n) = s[i + 1..].find('`') else {
            return refuse("an unterminated backquote");
        };
        let cmd = &s[i + 1..i + 1 + n];
        if cmd.contains('\\') {
            return refuse("backslashes inside backquotes");
        }
        let part = Part::Sub {
            cmd: cmd.to_owned(),
            quoted,
        };
        return Ok((Some(part), i + n + 2));
    }
    match b.get(i + 1) {
        Some(b'{') => {
            let Some(n) = s[i + 2..].find('}') else {
                return refuse("an unterminated ${");
            };
            let expr = &s[i + 2..i + 2 + n];
            if expr.contains('{') {
                return refuse(format!("nested braces in ${{{expr}}}"));
            }
            let part = Part::Param {
                expr: expr.to_owned(),
                quoted,
            };
            Ok((Some(part), i + n + 3))
        }
        Some(b'(') => {
            if b.get(i + 2) == Some(&b'(') {
                return refuse("arithmetic expansion");
            }
            let end = close_paren(s, i + 2)?;
            let part = Part::Sub {
                cmd: s[i + 2..end].to_owned(),
                quoted,
            };
            Ok((Some(part), end + 1))
        }
        Some(&c) if c.is_ascii_alphabetic() || c == b'_' => {
            let n = s[i + 1..]
                .bytes()
                .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
                .count();
            let part = Part::Param {
                expr: s[i + 1..i + 1 + n].to_owned(),
                quoted,
            };
            Ok((Some(part), i + 1 + n))
        }
        Some(&c) if c.is_ascii_digit() || b"@*#?$!-".contains(&c) => refuse(format!(
            "${} (positional and special parameters)",
            c as char
        )),
        Some(b'\'') => refuse("$'...' quoting"),
        // `$"..."` (a translated string) is the string itself.
        Some(b'"') if !quoted => {
            let empty = Part::Lit {
                text: String::new(),
                quoted: false,
            };
            Ok((Some(empty), i + 1))
        }
        _ => Ok((None, i + 1)),
    }
}

/// The `)` closing a `$(` whose contents start at `from`, skipping quoted text.
fn close_paren(s: &str, from: usize) -> Result<usize> {
    let b = s.as_bytes();
    let mut depth = 1usize;
    let mut i = from;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 1,
            b'\'' => match s[i + 1..].find('\'') {
                Some(n) => i += n + 1,
                None => break,
            },
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth == 0 {
                    return Ok(i);
                }
            }
            _ => {}
        }
        i += 1;
    }
    refuse("an unterminated $(")
}
