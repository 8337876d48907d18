//! Lexer and parser of the Lua subset, to a small syntax tree.

use super::{Result, refuse};

/// Deepest nesting of expressions and blocks.
const MAX_NESTING: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Unary {
    Not,
    Neg,
    Len,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Binary {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Concat,
    Add,
    Sub,
    Mul,
    Div,
    IDiv,
    Mod,
    Pow,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Expr {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Name(String),
    Index(Box<Expr>, Box<Expr>),
    Call(Box<Expr>, Vec<Expr>),
    Method(Box<Expr>, String, Vec<Expr>),
    Unary(Unary, Box<Expr>),
    /// `(e)`: only the first value of a call.
    Paren(Box<Expr>),
    Binary(Binary, Box<Expr>, Box<Expr>),
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Stmt {
    Local(Vec<String>, Vec<Expr>),
    Assign(Vec<String>, Vec<Expr>),
    Call(Expr),
    If(Vec<(Expr, Vec<Stmt>)>, Option<Vec<Stmt>>),
    Do(Vec<Stmt>),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Name(String),
    Str(String),
    Int(i64),
    Float(f64),
    /// Operators and punctuation.
    Op(&'static str),
}

const OPS: &[&str] = &[
    "...", "..", "==", "~=", "<=", ">=", "//", "::", "<<", ">>", "+", "-", "*", "/", "%", "^", "#",
    "<", ">", "=", "(", ")", "{", "}", "[", "]", ";", ":", ",", ".", "&", "|", "~",
];

const KEYWORDS: &[&str] = &[
    "and", "break", "do", "else", "elseif", "end", "false", "for", "function", "goto", "if", "in",
    "local", "nil", "not", "or", "repeat", "return", "then", "true", "until", "while",
];

fn lex(src: &str) -> Result<Vec<Tok>> {
    let b = src.as_bytes();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if src[i..].starts_with("--") {
            i += 2;
            match long_bracket(src, i)? {
                Some((_, end)) => i = end,
                None => i = src[i..].find('\n').map_or(b.len(), |n| i + n),
            }
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            let n = src[i..]
                .bytes()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == b'_')
                .count();
            toks.push(Tok::Name(src[i..i + n].to_owned()));
            i += n;
            continue;
        }
        if c.is_ascii_digit() || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit)) {
            let n = src[i..]
                .bytes()
                .enumerate()
                .take_while(|&(k, c)| {
                    c.is_ascii_alphanumeric()
                        || c == b'.'
                        || (matches!(c, b'+' | b'-')
                            && k > 0
                            && matches!(src.as_bytes()[i + k - 1], b'e' | b'E')
                            && !src[i..].starts_with("0x"))
                })
                .count();
            let text = &src[i..i + n];
            match super::strings::to_number(text) {
                Some(super::Value::Int(v)) => toks.push(Tok::Int(v)),
                Some(super::Value::Float(v)) => toks.push(Tok::Float(v)),
                _ => return refuse(format!("malformed number {text:?}")),
            }
            i += n;
            continue;
        }
        if c == b'"' || c == b'\'' {
            let (s, end) = short_string(src, i)?;
            toks.push(Tok::Str(s));
            i = end;
            continue;
        }
        if c == b'[' {
            if let Some((s, end)) = long_bracket(src, i)? {
                toks.push(Tok::Str(s.strip_prefix('\n').unwrap_or(&s).to_owned()));
                i = end;
                continue;
            }
        }
        match OPS.iter().find(|op| src[i..].starts_with(**op)) {
            Some(op) => {
                toks.push(Tok::Op(op));
                i += op.len();
            }
            None => return refuse(format!("unexpected character {:?}", c as char)),
        }
    }
    Ok(toks)
}

/// `[[...]]` or `[==[...]==]` at `i`: its contents and the index after it.
fn long_bracket(src: &str, i: usize) -> Result<Option<(String, usize)>> {
    let rest = &src[i..];
    let Some(after) = rest.strip_prefix('[') else {
        return Ok(None);
    };
    let level = after.bytes().take_while(|&c| c == b'=').count();
    if after.as_bytes().get(level) != Some(&b'[') {
        return Ok(None);
    }
    let close = format!("]{}]", "=".repeat(level));
    let body_start = i + 2 + level;
    match src[body_start..].find(&close) {
        Some(n) => Ok(Some((
            src[body_start..body_start + n].to_owned(),
            body_start + n + close.len(),
        ))),
        None => refuse("an unfinished long string or comment"),
    }
}

/// A quoted string at `i`: its value and the index after it.
fn short_string(src: &str, i: usize) -> Result<(String, usize)> {
    let b = src.as_bytes();
    let quote = b[i];
    let mut s = String::new();
    let mut k = i + 1;
    while let Some(&c) = b.get(k) {
        match c {
            _ if c == quote => return Ok((s, k + 1)),
            b'\n' => break,
            b'\\' => {
                let Some(&e) = b.get(k + 1) else { break };
                k += 2;
                match e {
                    b'n' => s.push('\n'),
                    b't' => s.push('\t'),
                    b'r' => s.push('\r'),
                    b'a' => s.push('\x07'),
                    b'b' => s.push('\x08'),
                    b'f' => s.push('\x0c'),
                    b'v' => s.push('\x0b'),
                    b'\\' | b'"' | b'\'' | b'\n' => s.push(e as char),
                    b'0'..=b'9' => {
                        let digits: String = src[k - 1..]
                            .chars()
                            .take(3)
                            .take_while(char::is_ascii_digit)
                            .collect();
                        match digits.parse::<u8>() {
                            Ok(v) if v.is_ascii() => s.push(v as char),
                            _ => return refuse(format!("the escape \\{digits}")),
                        }
                        k += digits.len() - 1;
                    }
                    other => return refuse(format!("the escape \\{}", other as char)),
                }
            }
            _ => {
                s.push(c as char);
                k += 1;
            }
        }
    }
    refuse("an unfinished string")
}

struct Parser {
    toks: Vec<Tok>,
    i: usize,
    depth: usize,
}

pub(super) fn parse(src: &str) -> Result<Vec<Stmt>> {
    let mut p = Parser {
        toks: lex(src)?,
        i: 0,
        depth: 0,
    };
    let body = p.block()?;
    match p.peek() {
        None => Ok(body),
        Some(t) => refuse(format!("unexpected {}", show(t))),
    }
}

fn show(t: &Tok) -> String {
    match t {
        Tok::Name(n) => format!("'{n}'"),
        Tok::Op(o) => format!("'{o}'"),
        Tok::Str(_) => "a string".into(),
        Tok::Int(_) | Tok::Float(_) => "a number".into(),
    }
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.i)
    }

    fn is_op(&self, op: &str) -> bool {
        matches!(self.peek(), Some(Tok::Op(o)) if *o == op)
    }

    fn is_name(&self, name: &str) -> bool {
        matches!(self.peek(), Some(Tok::Name(n)) if n == name)
    }

    fn expect_op(&mut self, op: &str) -> Result<()> {
        if self.is_op(op) {
            self.i += 1;
            return Ok(());
        }
        self.unexpected(&format!("'{op}'"))
    }

    fn expect_name(&mut self, name: &str) -> Result<()> {
        if self.is_name(name) {
            self.i += 1;
            return Ok(());
        }
        self.unexpected(&format!("'{name}'"))
    }

    fn unexpected<T>(&self, wanted: &str) -> Result<T> {
        match self.peek() {
            Some(t) => refuse(format!("expected {wanted}, found {}", show(t))),
            None => refuse(format!("expected {wanted} at the end")),
        }
    }

    fn identifier(&mut self) -> Result<String> {
        match self.peek() {
            Some(Tok::Name(n)) if !KEYWORDS.contains(&n.as_str()) => {
                let n = n.clone();
                self.i += 1;
                Ok(n)
            }
            _ => self.unexpected("a name"),
        }
    }

    fn nest(&mut self) -> Result<()> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return refuse("the script is nested too deeply");
        }
        Ok(())
    }

    fn block(&mut self) -> Result<Vec<Stmt>> {
        self.nest()?;
        let mut stmts = Vec::new();
        loop {
            if self.is_op(";") {
                self.i += 1;
                continue;
            }
            match self.peek() {
                None => break,
                Some(Tok::Name(n)) if matches!(n.as_str(), "end" | "else" | "elseif") => break,
                _ => stmts.push(self.statement()?),
            }
        }
        self.depth -= 1;
        Ok(stmts)
    }

    fn statement(&mut self) -> Result<Stmt> {
        if let Some(Tok::Name(n)) = self.peek() {
            match n.as_str() {
                "local" => {
                    self.i += 1;
                    if self.is_name("function") {
                        return refuse("function definitions");
                    }
                    let mut names = vec![self.identifier()?];
                    while self.is_op(",") {
                        self.i += 1;
                        names.push(self.identifier()?);
                    }
                    let exprs = if self.is_op("=") {
                        self.i += 1;
                        self.expr_list()?
                    } else {
                        Vec::new()
                    };
                    return Ok(Stmt::Local(names, exprs));
                }
                "if" => {
                    self.i += 1;
                    let mut branches = Vec::new();
                    let cond = self.expr()?;
                    self.expect_name("then")?;
                    branches.push((cond, self.block()?));
                    let mut otherwise = None;
                    loop {
                        if self.is_name("elseif") {
                            self.i += 1;
                            let cond = self.expr()?;
                            self.expect_name("then")?;
                            branches.push((cond, self.block()?));
                        } else if self.is_name("else") {
                            self.i += 1;
                            otherwise = Some(self.block()?);
                        } else {
                            self.expect_name("end")?;
                            break;
                        }
                    }
                    return Ok(Stmt::If(branches, otherwise));
                }
                "do" => {
                    self.i += 1;
                    let body = self.block()?;
                    self.expect_name("end")?;
                    return Ok(Stmt::Do(body));
                }
                kw @ ("for" | "while" | "repeat" | "function" | "return" | "goto" | "break") => {
                    return refuse(format!("'{kw}' statements"));
                }
                _ => {}
            }
        }
        let e = self.suffixed()?;
        match e {
            Expr::Call(..) | Expr::Method(..) => Ok(Stmt::Call(e)),
            Expr::Name(first) => {
                let mut names = vec![first];
                while self.is_op(",") {
                    self.i += 1;
                    names.push(self.identifier()?);
                }
                self.expect_op("=")?;
                Ok(Stmt::Assign(names, self.expr_list()?))
            }
            Expr::Index(..) => refuse("assignments to table fields"),
            _ => self.unexpected("a statement"),
        }
    }

    fn expr_list(&mut self) -> Result<Vec<Expr>> {
        let mut list = vec![self.expr()?];
        while self.is_op(",") {
            self.i += 1;
            list.push(self.expr()?);
        }
        Ok(list)
    }

    /// Name or parenthesized expression, then `.name`, `[key]`, `:m(args)`, `(args)`.
    fn suffixed(&mut self) -> Result<Expr> {
        self.nest()?;
        let mut e = match self.peek().cloned() {
            Some(Tok::Op("(")) => {
                self.i += 1;
                let inner = self.expr()?;
                self.expect_op(")")?;
                Expr::Paren(Box::new(inner))
            }
            Some(Tok::Name(_)) => Expr::Name(self.identifier()?),
            _ => return self.unexpected("an expression"),
        };
        loop {
            match self.peek().cloned() {
                Some(Tok::Op(".")) => {
                    self.i += 1;
                    let key = self.identifier()?;
                    e = Expr::Index(Box::new(e), Box::new(Expr::Str(key)));
                }
                Some(Tok::Op("[")) => {
                    self.i += 1;
                    let key = self.expr()?;
                    self.expect_op("]")?;
                    e = Expr::Index(Box::new(e), Box::new(key));
                }
                Some(Tok::Op(":")) => {
                    self.i += 1;
                    let name = self.identifier()?;
                    let args = self.call_args()?;
                    e = Expr::Method(Box::new(e), name, args);
                }
                Some(Tok::Op("(") | Tok::Str(_)) => {
                    let args = self.call_args()?;
                    e = Expr::Call(Box::new(e), args);
                }
                Some(Tok::Op("{")) => return refuse("tables"),
                _ => break,
            }
        }
        self.depth -= 1;
        Ok(e)
    }

    fn call_args(&mut self) -> Result<Vec<Expr>> {
        match self.peek().cloned() {
            Some(Tok::Str(s)) => {
                self.i += 1;
                Ok(vec![Expr::Str(s)])
            }
            Some(Tok::Op("(")) => {
                self.i += 1;
                if self.is_op(")") {
                    self.i += 1;
                    return Ok(Vec::new());
                }
                let args = self.expr_list()?;
                self.expect_op(")")?;
                Ok(args)
            }
            _ => self.unexpected("arguments"),
        }
    }

    fn expr(&mut self) -> Result<Expr> {
        self.nest()?;
        let e = self.binary(0)?;
        self.depth -= 1;
        Ok(e)
    }

    /// Precedence climbing over Lua's binary operators (`..` and `^` are right-associative).
    fn binary(&mut self, min: u8) -> Result<Expr> {
        let mut left = self.unary()?;
        while let Some((op, prec, right_assoc)) = self.binary_op() {
            if prec < min {
                break;
            }
            self.i += 1;
            let right = self.binary(if right_assoc { prec } else { prec + 1 })?;
            left = Expr::Binary(op, Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn binary_op(&self) -> Option<(Binary, u8, bool)> {
        use Binary::*;
        let op = match self.peek()? {
            Tok::Name(n) if n == "or" => return Some((Or, 1, false)),
            Tok::Name(n) if n == "and" => return Some((And, 2, false)),
            Tok::Op(o) => *o,
            _ => return None,
        };
        Some(match op {
            "==" => (Eq, 3, false),
            "~=" => (Ne, 3, false),
            "<" => (Lt, 3, false),
            "<=" => (Le, 3, false),
            ">" => (Gt, 3, false),
            ">=" => (Ge, 3, false),
            ".." => (Concat, 9, true),
            "+" => (Add, 10, false),
            "-" => (Sub, 10, false),
            "*" => (Mul, 11, false),
            "/" => (Div, 11, false),
            "//" => (IDiv, 11, false),
            "%" => (Mod, 11, false),
            "^" => (Pow, 14, true),
            _ => return None,
        })
    }

    fn unary(&mut self) -> Result<Expr> {
        self.nest()?;
        let op = match self.peek() {
            Some(Tok::Name(n)) if n == "not" => Some(Unary::Not),
            Some(Tok::Op("-")) => Some(Unary::Neg),
            Some(Tok::Op("#")) => Some(Unary::Len),
            _ => None,
        };
        let e = match op {
            Some(op) => {
                self.i += 1;
                // Unary operators bind tighter than everything but `^`.
                let operand = self.binary(12)?;
                Expr::Unary(op, Box::new(operand))
            }
            None => self.simple()?,
        };
        self.depth -= 1;
        Ok(e)
    }

    fn simple(&mut self) -> Result<Expr> {
        let e = match self.peek().cloned() {
            Some(Tok::Int(n)) => Expr::Int(n),
            Some(Tok::Float(f)) => Expr::Float(f),
            Some(Tok::Str(s)) => Expr::Str(s),
            Some(Tok::Name(n)) if n == "nil" => Expr::Nil,
            Some(Tok::Name(n)) if n == "true" => Expr::Bool(true),
            Some(Tok::Name(n)) if n == "false" => Expr::Bool(false),
            Some(Tok::Name(n)) if n == "function" => return refuse("function definitions"),
            Some(Tok::Op("{")) => return refuse("tables"),
            Some(Tok::Op("...")) => return refuse("'...'"),
            _ => return self.suffixed(),
        };
        self.i += 1;
        Ok(e)
    }
}
