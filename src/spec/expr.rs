//! rpm expressions (`%if`, `%{expr:...}`, `%[...]`) and rpm's version comparison.
//!
//! The grammar and typing follow rpm 4.18: integers, `"strings"` and `v"versions"`; `!` and
//! unary `-`; `* /`; `+ -`; the six comparisons at one level, left-associative; `&&` and `||`
//! returning the deciding operand (as in Lua); `?:`. Operand types must match. Bare words are
//! errors, as in rpm. Terms that are macros (`%[...]` only) are expanded when they are
//! evaluated, so `&&`, `||` and `?:` short-circuit their expansion as rpm does.

use std::cmp::Ordering;

/// The value of an expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    Int(i64),
    Str(String),
    /// A `v"..."` term, compared with rpm's version ordering.
    Ver(String),
}

impl Value {
    fn truthy(&self) -> bool {
        match self {
            Value::Int(n) => *n != 0,
            Value::Str(s) | Value::Ver(s) => !s.is_empty(),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Value::Int(_) => "number",
            Value::Str(_) => "string",
            Value::Ver(_) => "version",
        }
    }

    fn same_kind(&self, other: &Value) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
    }
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Int(n) => write!(f, "{n}"),
            Value::Str(s) | Value::Ver(s) => f.write_str(s),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Not,
    Neg,
    Mul,
    Div,
    Add,
    Sub,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    And,
    Or,
}

#[derive(Debug)]
enum Node {
    Int(i64),
    /// String contents as written (expanded at evaluation time when macros are allowed).
    Str(String),
    Ver(String),
    /// A macro reference as written, e.g. `%{?fedora}`.
    Macro(String),
    Unary(Op, Box<Node>),
    Binary(Op, Box<Node>, Box<Node>),
    Ternary(Box<Node>, Box<Node>, Box<Node>),
}

/// Evaluate `text`. With `expand`, `%` terms and string contents are macro-expanded lazily
/// (the `%[...]` form); without it, `text` must already be expanded (`%if`, `%{expr:...}`).
pub(crate) fn eval(
    text: &str,
    expand: Option<&mut dyn FnMut(&str) -> String>,
) -> Result<Value, String> {
    let mut p = Parser {
        s: text,
        pos: 0,
        macros: expand.is_some(),
        nodes: 0,
        depth: 0,
    };
    let node = p.ternary()?;
    p.skip_ws();
    if p.pos < p.s.len() {
        return Err(p.error("syntax error"));
    }
    let mut noop = |t: &str| t.to_owned();
    let expand: &mut dyn FnMut(&str) -> String = match expand {
        Some(f) => f,
        None => &mut noop,
    };
    evaluate(&node, expand)
}

/// Terms and operators one expression may hold, and how deeply parentheses and unary
/// operators may nest: real conditions have a few dozen, and the parser and the evaluator
/// recurse over the tree, so a hostile one must not overflow the stack.
const MAX_NODES: usize = 1000;
const MAX_NESTING: usize = 200;

struct Parser<'a> {
    s: &'a str,
    pos: usize,
    macros: bool,
    nodes: usize,
    depth: usize,
}

impl Parser<'_> {
    fn error(&self, what: &str) -> String {
        // A hostile expression can be long; the message quotes its start.
        const SHOWN: usize = 100;
        match self.s.char_indices().nth(SHOWN) {
            Some((end, _)) => format!("{what} at offset {} in {:?}...", self.pos, &self.s[..end]),
            None => format!("{what} at offset {} in {:?}", self.pos, self.s),
        }
    }

    /// Count one more node of the tree.
    fn node(&mut self) -> Result<(), String> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(self.error(&format!("more than {MAX_NODES} terms and operators")));
        }
        Ok(())
    }

    /// Enter one more level of nesting (`(`, `!`, `-`).
    fn nest(&mut self) -> Result<(), String> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(self.error(&format!("nested more than {MAX_NESTING} levels deep")));
        }
        Ok(())
    }

    fn skip_ws(&mut self) {
        let rest = &self.s[self.pos..];
        self.pos += rest.len() - rest.trim_start().len();
    }

    fn peek_op(&mut self, ops: &[(&str, Op)]) -> Option<Op> {
        self.skip_ws();
        let rest = &self.s[self.pos..];
        for (text, op) in ops {
            if rest.starts_with(text) {
                self.pos += text.len();
                return Some(*op);
            }
        }
        None
    }

    fn ternary(&mut self) -> Result<Node, String> {
        let cond = self.binary(0)?;
        self.skip_ws();
        if self.s[self.pos..].starts_with('?') {
            self.pos += 1;
            self.node()?;
            self.nest()?;
            let yes = self.ternary()?;
            self.skip_ws();
            if !self.s[self.pos..].starts_with(':') {
                return Err(self.error("expected ':' in ?: expression"));
            }
            self.pos += 1;
            let no = self.ternary()?;
            self.depth -= 1;
            return Ok(Node::Ternary(Box::new(cond), Box::new(yes), Box::new(no)));
        }
        Ok(cond)
    }

    /// Binary operators by precedence level, loosest first; all left-associative.
    fn binary(&mut self, level: usize) -> Result<Node, String> {
        const LEVELS: &[&[(&str, Op)]] = &[
            &[("||", Op::Or)],
            &[("&&", Op::And)],
            &[
                ("==", Op::Eq),
                ("!=", Op::Ne),
                ("<=", Op::Le),
                (">=", Op::Ge),
                ("<", Op::Lt),
                (">", Op::Gt),
            ],
            &[("+", Op::Add), ("-", Op::Sub)],
            &[("*", Op::Mul), ("/", Op::Div)],
        ];
        if level == LEVELS.len() {
            return self.unary();
        }
        let mut left = self.binary(level + 1)?;
        while let Some(op) = self.peek_op(LEVELS[level]) {
            self.node()?;
            let right = self.binary(level + 1)?;
            left = Node::Binary(op, Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Node, String> {
        self.skip_ws();
        let rest = &self.s[self.pos..];
        // `!=` is never unary; `!` followed by `=` cannot start a term anyway.
        let op = match rest.chars().next() {
            Some('!') => Op::Not,
            Some('-') => Op::Neg,
            _ => return self.primary(),
        };
        self.pos += 1;
        self.node()?;
        self.nest()?;
        let operand = self.unary()?;
        self.depth -= 1;
        Ok(Node::Unary(op, Box::new(operand)))
    }

    fn primary(&mut self) -> Result<Node, String> {
        self.node()?;
        self.skip_ws();
        let rest = &self.s[self.pos..];
        let Some(c) = rest.chars().next() else {
            return Err(self.error("unexpected end of expression"));
        };
        match c {
            '(' => {
                self.pos += 1;
                self.nest()?;
                let inner = self.ternary()?;
                self.depth -= 1;
                self.skip_ws();
                if !self.s[self.pos..].starts_with(')') {
                    return Err(self.error("unmatched ("));
                }
                self.pos += 1;
                Ok(inner)
            }
            '0'..='9' => {
                let len = rest.bytes().take_while(u8::is_ascii_digit).count();
                let digits = &rest[..len];
                let n = digits
                    .parse::<i64>()
                    .map_err(|_| self.error("number out of range"))?;
                self.pos += len;
                Ok(Node::Int(n))
            }
            '"' => Ok(Node::Str(self.string()?)),
            'v' if rest[1..].starts_with('"') => {
                self.pos += 1;
                Ok(Node::Ver(self.string()?))
            }
            '%' if self.macros => {
                let len = macro_extent(rest).ok_or_else(|| self.error("unterminated macro"))?;
                self.pos += len;
                Ok(Node::Macro(rest[..len].to_owned()))
            }
            '%' => Err(self.error("unexpanded macro")),
            _ => Err(self.error("bare words are not supported (quote strings with \"...\")")),
        }
    }

    /// A `"..."` term without its quotes. rpm has no escapes inside strings.
    fn string(&mut self) -> Result<String, String> {
        let rest = &self.s[self.pos + 1..];
        let end = rest
            .find('"')
            .ok_or_else(|| self.error("unterminated string"))?;
        let content = rest[..end].to_owned();
        self.pos += end + 2;
        Ok(content)
    }
}

/// Length of the macro reference at the start of `s` (which starts with `%`).
fn macro_extent(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    match b.get(1) {
        Some(b'{') => super::macros::find_close(s, 1, b'{', b'}').map(|i| i + 1),
        Some(b'(') => super::macros::find_close(s, 1, b'(', b')').map(|i| i + 1),
        Some(b'[') => super::macros::find_close(s, 1, b'[', b']').map(|i| i + 1),
        _ => {
            let mut i = 1;
            while i < b.len() && (b[i] == b'?' || b[i] == b'!') {
                i += 1;
            }
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            (i > start).then_some(i)
        }
    }
}

fn evaluate(node: &Node, expand: &mut dyn FnMut(&str) -> String) -> Result<Value, String> {
    Ok(match node {
        Node::Int(n) => Value::Int(*n),
        Node::Str(s) => Value::Str(expand(s)),
        Node::Ver(s) => Value::Ver(expand(s)),
        Node::Macro(m) => {
            let text = expand(m);
            let t = text.trim();
            if t.is_empty() {
                // rpm reads an empty expansion as 0: `%[ %{?undefined} ]` is 0.
                Value::Int(0)
            } else if let Ok(n) = t.parse::<i64>() {
                Value::Int(n)
            } else {
                return Err(format!(
                    "macro {m} expanded to the bare word {t:?} (quote it: \"{m}\")"
                ));
            }
        }
        Node::Unary(op, inner) => {
            let v = evaluate(inner, expand)?;
            match (op, v) {
                (Op::Not, Value::Int(n)) => Value::Int((n == 0).into()),
                (Op::Not, Value::Str(s)) => Value::Int(s.is_empty().into()),
                (Op::Neg, Value::Int(n)) => Value::Int(n.wrapping_neg()),
                (op, v) => return Err(format!("{op:?} does not apply to a {}", v.kind())),
            }
        }
        Node::Ternary(cond, yes, no) => {
            if evaluate(cond, expand)?.truthy() {
                evaluate(yes, expand)?
            } else {
                evaluate(no, expand)?
            }
        }
        Node::Binary(op @ (Op::And | Op::Or), left, right) => {
            let l = evaluate(left, expand)?;
            // Like rpm (and Lua), the deciding operand is the result.
            if (*op == Op::And) != l.truthy() {
                return Ok(l);
            }
            let r = evaluate(right, expand)?;
            if !l.same_kind(&r) {
                return Err(format!(
                    "types must match: {} {op:?} {}",
                    l.kind(),
                    r.kind()
                ));
            }
            r
        }
        Node::Binary(op, left, right) => {
            let l = evaluate(left, expand)?;
            let r = evaluate(right, expand)?;
            if !l.same_kind(&r) {
                return Err(format!(
                    "types must match: {} {op:?} {}",
                    l.kind(),
                    r.kind()
                ));
            }
            binary(*op, l, r)?
        }
    })
}

fn binary(op: Op, l: Value, r: Value) -> Result<Value, String> {
    let ord = match (&l, &r) {
        (Value::Int(a), Value::Int(b)) => a.cmp(b),
        (Value::Str(a), Value::Str(b)) => a.cmp(b),
        (Value::Ver(a), Value::Ver(b)) => evr_cmp(a, b),
        _ => unreachable!("kinds checked by the caller"),
    };
    let truth = |b: bool| Ok(Value::Int(b.into()));
    match op {
        Op::Eq => truth(ord == Ordering::Equal),
        Op::Ne => truth(ord != Ordering::Equal),
        Op::Lt => truth(ord == Ordering::Less),
        Op::Le => truth(ord != Ordering::Greater),
        Op::Gt => truth(ord == Ordering::Greater),
        Op::Ge => truth(ord != Ordering::Less),
        Op::Add => match (l, r) {
            (Value::Int(a), Value::Int(b)) => Ok(Value::Int(a.wrapping_add(b))),
            (Value::Str(a), Value::Str(b)) => Ok(Value::Str(a + &b)),
            (l, _) => Err(format!("+ does not apply to a {}", l.kind())),
        },
        Op::Sub | Op::Mul | Op::Div => match (l, r) {
            (Value::Int(a), Value::Int(b)) => match op {
                Op::Sub => Ok(Value::Int(a.wrapping_sub(b))),
                Op::Mul => Ok(Value::Int(a.wrapping_mul(b))),
                _ if b == 0 => Err("division by zero".into()),
                _ => Ok(Value::Int(a.wrapping_div(b))),
            },
            (l, _) => Err(format!(
                "{op:?} only applies to numbers, not a {}",
                l.kind()
            )),
        },
        Op::Not | Op::Neg | Op::And | Op::Or => unreachable!("handled by the caller"),
    }
}

/// Compare `[epoch:]version[-release]` strings as rpm does (a missing epoch is 0; a release is
/// compared only when both sides have one).
pub(crate) fn evr_cmp(a: &str, b: &str) -> Ordering {
    fn split(s: &str) -> (u64, &str, Option<&str>) {
        let (epoch, rest) = match s.split_once(':') {
            Some((e, rest)) if !e.is_empty() && e.bytes().all(|c| c.is_ascii_digit()) => {
                (e.parse().unwrap_or(u64::MAX), rest)
            }
            _ => (0, s),
        };
        match rest.rsplit_once('-') {
            Some((v, r)) => (epoch, v, Some(r)),
            None => (epoch, rest, None),
        }
    }
    let (ea, va, ra) = split(a);
    let (eb, vb, rb) = split(b);
    ea.cmp(&eb)
        .then_with(|| rpmvercmp(va, vb))
        .then_with(|| match (ra, rb) {
            (Some(x), Some(y)) => rpmvercmp(x, y),
            _ => Ordering::Equal,
        })
}

/// rpm's segment-wise version comparison, with `~` (sorts before anything, even the end) and
/// `^` (sorts after the end, before anything else).
pub(crate) fn rpmvercmp(a: &str, b: &str) -> Ordering {
    if a == b {
        return Ordering::Equal;
    }
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    let sep = |c: &u8| !c.is_ascii_alphanumeric() && *c != b'~' && *c != b'^';
    loop {
        while a.first().is_some_and(sep) {
            a = &a[1..];
        }
        while b.first().is_some_and(sep) {
            b = &b[1..];
        }
        if a.first() == Some(&b'~') || b.first() == Some(&b'~') {
            if a.first() != Some(&b'~') {
                return Ordering::Greater;
            }
            if b.first() != Some(&b'~') {
                return Ordering::Less;
            }
            a = &a[1..];
            b = &b[1..];
            continue;
        }
        if a.first() == Some(&b'^') || b.first() == Some(&b'^') {
            if a.is_empty() {
                return Ordering::Less;
            }
            if b.is_empty() {
                return Ordering::Greater;
            }
            if a.first() != Some(&b'^') {
                return Ordering::Greater;
            }
            if b.first() != Some(&b'^') {
                return Ordering::Less;
            }
            a = &a[1..];
            b = &b[1..];
            continue;
        }
        if a.is_empty() || b.is_empty() {
            break;
        }
        let numeric = a[0].is_ascii_digit();
        let take = |s: &[u8]| {
            s.iter()
                .take_while(|c| {
                    if numeric {
                        c.is_ascii_digit()
                    } else {
                        c.is_ascii_alphabetic()
                    }
                })
                .count()
        };
        let (la, lb) = (take(a), take(b));
        let (sa, sb) = (&a[..la], &b[..lb]);
        if sb.is_empty() {
            // Segments of different types: numeric is newer.
            return if numeric {
                Ordering::Greater
            } else {
                Ordering::Less
            };
        }
        let ord = if numeric {
            let trim = |s: &[u8]| {
                let z = s.iter().take_while(|c| **c == b'0').count();
                s[z..].to_vec()
            };
            let (ta, tb) = (trim(sa), trim(sb));
            ta.len().cmp(&tb.len()).then_with(|| ta.cmp(&tb))
        } else {
            sa.cmp(sb)
        };
        if ord != Ordering::Equal {
            return ord;
        }
        a = &a[la..];
        b = &b[lb..];
    }
    match (a.is_empty(), b.is_empty()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        _ => Ordering::Greater,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(s: &str) -> Result<String, String> {
        eval(s, None).map(|v| v.to_string())
    }

    #[test]
    fn arithmetic_and_precedence() {
        assert_eq!(ev("1").unwrap(), "1");
        assert_eq!(ev("2 * 3 + 1").unwrap(), "7");
        assert_eq!(ev("3 - 1 - 1").unwrap(), "1");
        assert_eq!(ev("10 / 3").unwrap(), "3");
        assert_eq!(ev("-5 / 2").unwrap(), "-2");
        assert_eq!(ev("!1 + 1").unwrap(), "1");
        assert_eq!(ev("!(1 + 1)").unwrap(), "0");
        assert_eq!(ev("(1 && 0) || 1").unwrap(), "1");
        assert_eq!(ev("010 == 10").unwrap(), "1");
        assert_eq!(ev("1 < 2 == 1").unwrap(), "1");
    }

    #[test]
    fn comparisons_and_logic_like_rpm() {
        assert_eq!(ev("038 >= 38").unwrap(), "1");
        assert_eq!(ev("0 || 0").unwrap(), "0");
        assert_eq!(
            ev("2 && 3").unwrap(),
            "3",
            "&& returns the deciding operand"
        );
        assert_eq!(ev("0 || 5").unwrap(), "5");
        assert_eq!(ev("\"a\" && \"b\"").unwrap(), "b");
        assert_eq!(ev("\"foo\" == \"foo\"").unwrap(), "1");
        assert_eq!(ev("\"a\" < \"b\"").unwrap(), "1");
        assert_eq!(
            ev("\"1.2\" > \"1.10\"").unwrap(),
            "1",
            "strings compare bytewise"
        );
        assert_eq!(ev("v\"1.2\" > v\"1.10\"").unwrap(), "0", "versions do not");
        assert_eq!(ev("\"a\" + \"b\"").unwrap(), "ab");
        assert_eq!(ev("!\"\"").unwrap(), "1");
        assert_eq!(ev("0 ? 1 : 2").unwrap(), "2");
        assert_eq!(ev("\"x\" ? 1 : 2").unwrap(), "1");
    }

    /// Found probing what the `spec_list` fuzz target reaches: 100,000 nested parentheses
    /// (or `!`, or a chain of that many terms) overflowed the stack of the recursive parser
    /// and evaluator (fuzz/corpus/spec_list/finding-deep-expression).
    #[test]
    fn deep_or_long_expressions_are_refused_not_a_stack_overflow() {
        let n = 100_000;
        let deep = format!("{}1{}", "(".repeat(n), ")".repeat(n));
        assert!(
            ev(&deep)
                .unwrap_err()
                .starts_with("nested more than 200 levels deep")
        );
        assert!(
            ev(&format!("{}1", "!".repeat(n)))
                .unwrap_err()
                .contains("nested more than")
        );
        let long = vec!["1"; n].join(" + ");
        let err = ev(&long).unwrap_err();
        assert!(
            err.starts_with("more than 1000 terms and operators"),
            "{err}"
        );
        assert!(err.len() < 200, "the message quotes only the start: {err}");
        assert_eq!(
            ev(&format!("{}1{}", "(".repeat(150), ")".repeat(150))).unwrap(),
            "1"
        );
    }

    #[test]
    fn errors_name_the_problem() {
        assert!(ev("").unwrap_err().contains("unexpected end"));
        assert!(ev("1 &&").unwrap_err().contains("unexpected end"));
        assert!(ev("foo == foo").unwrap_err().contains("bare words"));
        assert!(ev("0x10").unwrap_err().contains("syntax error"));
        assert!(ev("1 / 0").unwrap_err().contains("division by zero"));
        assert!(ev("\"a\" == 1").unwrap_err().contains("types must match"));
        assert!(ev("(1").unwrap_err().contains("unmatched"));
        assert!(ev("\"abc").unwrap_err().contains("unterminated string"));
        assert!(ev("-\"a\"").is_err());
        assert!(ev("%{foo} == 1").unwrap_err().contains("unexpanded macro"));
        assert!(ev("1 ? 2").unwrap_err().contains("expected ':'"));
        assert!(
            ev("99999999999999999999")
                .unwrap_err()
                .contains("out of range")
        );
    }

    #[test]
    fn macro_terms_expand_lazily() {
        let seen = std::cell::RefCell::new(Vec::new());
        let mut f = |t: &str| {
            seen.borrow_mut().push(t.to_owned());
            match t {
                "%{num}" => "42".to_owned(),
                "%{?none}" => String::new(),
                "%word" => "FOO".to_owned(),
                other => other.replace("%{n}", "foo"),
            }
        };
        assert_eq!(eval("%{num} + 1", Some(&mut f)).unwrap(), Value::Int(43));
        assert_eq!(eval("%{?none}", Some(&mut f)).unwrap(), Value::Int(0));
        assert_eq!(
            eval("\"%{n}\" == \"foo\"", Some(&mut f)).unwrap(),
            Value::Int(1)
        );
        assert!(
            eval("%word", Some(&mut f))
                .unwrap_err()
                .contains("bare word")
        );
        seen.borrow_mut().clear();
        assert_eq!(eval("0 && %{num}", Some(&mut f)).unwrap(), Value::Int(0));
        assert_eq!(eval("1 ? 7 : %{num}", Some(&mut f)).unwrap(), Value::Int(7));
        let seen = seen.borrow();
        assert!(
            seen.is_empty(),
            "short-circuited terms are not expanded: {seen:?}"
        );
    }

    #[test]
    fn version_comparison_follows_rpmvercmp() {
        use Ordering::*;
        let cases = [
            ("1.0", "1.0", Equal),
            ("1.0", "2.0", Less),
            ("2.0.1", "2.0", Greater),
            ("1.10", "1.9", Greater),
            ("1.001", "1.1", Equal),
            ("1.0a", "1.0", Greater),
            ("1a", "1.1", Less),
            ("5.5p1", "5.5p10", Less),
            ("1.0~rc1", "1.0", Less),
            ("1.0~rc1", "1.0~rc2", Less),
            ("1.0~rc1~git1", "1.0~rc1", Less),
            ("1.0^", "1.0", Greater),
            ("1.0^git1", "1.0.1", Less),
            ("1.0^git1", "1.0^git2", Less),
            ("1.0^20160101", "1.0~rc1", Greater),
            ("a", "1", Less),
            ("1.0", "1_0", Equal),
        ];
        for (a, b, want) in cases {
            assert_eq!(rpmvercmp(a, b), want, "{a} vs {b}");
            assert_eq!(rpmvercmp(b, a), want.reverse(), "{b} vs {a}");
        }
        assert_eq!(evr_cmp("1:1.0-1", "2.0-1"), Greater);
        assert_eq!(evr_cmp("1.0-2", "1.0-10"), Less);
        assert_eq!(
            evr_cmp("1.0", "1.0-10"),
            Equal,
            "release only when both have one"
        );
        assert_eq!(ev("v\"1.0~rc1\" < v\"1.0\"").unwrap(), "1");
        assert_eq!(ev("v\"1:0.1\" > v\"2.0\"").unwrap(), "1");
    }
}
