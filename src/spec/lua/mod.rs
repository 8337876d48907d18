//! `%{lua:...}` without Lua: a small interpreter for the pure subset specs use to compute
//! names (`print(string.sub(rpm.expand("%{commit}"), 1, 7))`,
//! `print((macros.version:gsub("~", "-")))`).
//!
//! Lua 5.3 semantics for what it accepts: `print` (into the expansion, as rpm's print buffer
//! does), `local` and global variables, `if`/`elseif`/`else`, string literals and numbers,
//! `..` and arithmetic, comparisons and `and`/`or`/`not`, `rpm.expand`, `macros.name`, and the
//! `string` functions `sub`, `upper`, `lower`, `len`, `rep`, `reverse`, `format`, `find`,
//! `match` and `gsub` (also as methods, `s:gsub(...)`), with Lua patterns. Anything else
//! (loops, functions, tables, other libraries, `rpm.define` and other side effects) is refused
//! with the reason and the caller leaves the macro unexpanded.

mod parse;
mod pattern;
mod strings;

use std::collections::HashMap;

pub(crate) use crate::spec::shell::Refused;
use parse::{Binary, Expr, Stmt, Unary};

type Result<T> = std::result::Result<T, Refused>;

fn refuse<T>(why: impl Into<String>) -> Result<T> {
    Err(Refused(why.into()))
}

/// Longest string a script may build or print.
const MAX_STRING: usize = 64 * 1024;
/// Evaluation steps (expressions, statements, pattern-matching steps) one script may take:
/// far below the work budget of a whole spec, so one runaway script does not spend it all.
pub(crate) const MAX_STEPS: usize = 50_000;

/// What a script may ask of rpm.
pub(crate) trait Host {
    /// Expand macro text, as `rpm.expand` does.
    fn expand(&mut self, text: &str) -> String;
    /// Whether a macro is defined (`macros.name` is nil otherwise).
    fn is_defined(&self, name: &str) -> bool;
}

/// Run `code` within `budget` steps (what is left is written back); what it printed.
pub(crate) fn run(code: &str, host: &mut dyn Host, budget: &mut usize) -> Result<String> {
    if !code.is_ascii() {
        return refuse("non-ASCII text");
    }
    let program = parse::parse(code)?;
    let mut vm = Vm {
        host,
        globals: HashMap::new(),
        scopes: vec![HashMap::new()],
        out: String::new(),
        steps: *budget,
    };
    let result = vm.block(&program);
    *budget = vm.steps;
    result.map(|()| vm.out)
}

/// A Lua value, as far as the subset has them.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    /// A library table (`string`, `rpm`, `macros`).
    Lib(&'static str),
    /// A library function, by its full name (`string.sub`).
    Func(String),
}

impl Value {
    fn truthy(&self) -> bool {
        !matches!(self, Value::Nil | Value::Bool(false))
    }

    fn type_name(&self) -> &'static str {
        match self {
            Value::Nil => "nil",
            Value::Bool(_) => "boolean",
            Value::Int(_) | Value::Float(_) => "number",
            Value::Str(_) => "string",
            Value::Lib(_) => "table",
            Value::Func(_) => "function",
        }
    }

    /// `tostring`, as Lua 5.3 prints values.
    fn show(&self) -> String {
        match self {
            Value::Nil => "nil".into(),
            Value::Bool(b) => b.to_string(),
            Value::Int(n) => n.to_string(),
            Value::Float(f) => format_float(*f),
            Value::Str(s) => s.clone(),
            Value::Lib(name) => format!("table: {name}"),
            Value::Func(name) => format!("function: {name}"),
        }
    }

    /// The string a `..` or a string function sees: strings and numbers.
    fn as_str(&self, what: &str) -> Result<String> {
        match self {
            Value::Str(s) => Ok(s.clone()),
            Value::Int(_) | Value::Float(_) => Ok(self.show()),
            other => refuse(format!("{what} of a {} value", other.type_name())),
        }
    }

    /// A number for arithmetic: numbers, and strings that read as numbers.
    fn as_number(&self, what: &str) -> Result<Value> {
        match self {
            Value::Int(_) | Value::Float(_) => Ok(self.clone()),
            // rpm's Lua converts strings to floats in arithmetic (`"10" + 1` is 11.0).
            Value::Str(s) => match strings::to_number(s) {
                Some(Value::Int(n)) => Ok(Value::Float(n as f64)),
                Some(n) => Ok(n),
                None => refuse(format!("{what} on the string {s:?}")),
            },
            other => refuse(format!("{what} on a {} value", other.type_name())),
        }
    }

    fn as_int(&self, what: &str) -> Result<i64> {
        match self.as_number(what)? {
            Value::Int(n) => Ok(n),
            Value::Float(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => Ok(f as i64),
            _ => refuse(format!(
                "{what}: a number without an integer representation"
            )),
        }
    }
}

/// Lua 5.3's `%.14g`, with `.0` added to integral values.
fn format_float(f: f64) -> String {
    if f.is_nan() {
        return if f.is_sign_negative() { "-nan" } else { "nan" }.into();
    }
    if f.is_infinite() {
        return if f < 0.0 { "-inf" } else { "inf" }.into();
    }
    let sci = format!("{f:.13e}");
    let (mantissa, exp) = sci.split_once('e').expect("exponent format");
    let exp: i32 = exp.parse().expect("exponent digits");
    let trim = |s: &str| -> String {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_owned()
        } else {
            s.to_owned()
        }
    };
    let s = if !(-4..14).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{}e{sign}{:02}", trim(mantissa), exp.abs())
    } else {
        trim(&format!("{f:.prec$}", prec = (13 - exp).max(0) as usize))
    };
    if s.contains(['.', 'e', 'n', 'i']) {
        s
    } else {
        format!("{s}.0")
    }
}

struct Vm<'h> {
    host: &'h mut dyn Host,
    globals: HashMap<String, Value>,
    scopes: Vec<HashMap<String, Value>>,
    out: String,
    steps: usize,
}

impl Vm<'_> {
    fn tick(&mut self) -> Result<()> {
        if self.steps == 0 {
            return refuse("the script takes too long");
        }
        self.steps -= 1;
        Ok(())
    }

    fn block(&mut self, stmts: &[Stmt]) -> Result<()> {
        self.scopes.push(HashMap::new());
        for s in stmts {
            self.stmt(s)?;
        }
        self.scopes.pop();
        Ok(())
    }

    fn stmt(&mut self, s: &Stmt) -> Result<()> {
        self.tick()?;
        match s {
            Stmt::Local(names, exprs) => {
                let values = self.exprs(exprs)?;
                for (i, n) in names.iter().enumerate() {
                    let v = values.get(i).cloned().unwrap_or(Value::Nil);
                    self.scopes
                        .last_mut()
                        .expect("a scope is open")
                        .insert(n.clone(), v);
                }
            }
            Stmt::Assign(names, exprs) => {
                let values = self.exprs(exprs)?;
                for (i, n) in names.iter().enumerate() {
                    let v = values.get(i).cloned().unwrap_or(Value::Nil);
                    match self.scopes.iter_mut().rev().find(|s| s.contains_key(n)) {
                        Some(scope) => {
                            scope.insert(n.clone(), v);
                        }
                        None => {
                            self.globals.insert(n.clone(), v);
                        }
                    }
                }
            }
            Stmt::Call(e) => {
                self.multi(e)?;
            }
            Stmt::If(branches, otherwise) => {
                for (cond, body) in branches {
                    if self.expr(cond)?.truthy() {
                        return self.block(body);
                    }
                }
                if let Some(body) = otherwise {
                    self.block(body)?;
                }
            }
            Stmt::Do(body) => self.block(body)?,
        }
        Ok(())
    }

    /// An expression list: every value of the last expression, the first of the others.
    fn exprs(&mut self, exprs: &[Expr]) -> Result<Vec<Value>> {
        let mut values = Vec::new();
        for (i, e) in exprs.iter().enumerate() {
            if i + 1 == exprs.len() {
                values.extend(self.multi(e)?);
            } else {
                values.push(self.expr(e)?);
            }
        }
        Ok(values)
    }

    /// All the values of an expression (calls can return several).
    fn multi(&mut self, e: &Expr) -> Result<Vec<Value>> {
        match e {
            Expr::Call(callee, args) => {
                let f = self.expr(callee)?;
                let args = self.exprs(args)?;
                self.call(&f, args)
            }
            Expr::Method(obj, name, args) => {
                let obj = self.expr(obj)?;
                if !matches!(obj, Value::Str(_)) {
                    return refuse(format!("method {name} of a {} value", obj.type_name()));
                }
                let mut all = vec![obj];
                all.extend(self.exprs(args)?);
                self.call(&Value::Func(format!("string.{name}")), all)
            }
            other => Ok(vec![self.expr(other)?]),
        }
    }

    fn expr(&mut self, e: &Expr) -> Result<Value> {
        self.tick()?;
        let v = match e {
            Expr::Nil => Value::Nil,
            Expr::Bool(b) => Value::Bool(*b),
            Expr::Int(n) => Value::Int(*n),
            Expr::Float(f) => Value::Float(*f),
            Expr::Str(s) => Value::Str(s.clone()),
            Expr::Name(n) => self.lookup(n),
            Expr::Index(obj_expr, key) => {
                let obj = self.expr(obj_expr)?;
                if let (Value::Nil, Expr::Name(n)) = (&obj, obj_expr.as_ref()) {
                    return refuse(format!("{n:?} is not available"));
                }
                let key = self.expr(key)?;
                self.index(&obj, &key)?
            }
            Expr::Call(..) | Expr::Method(..) => {
                self.multi(e)?.into_iter().next().unwrap_or(Value::Nil)
            }
            Expr::Paren(inner) => self.expr(inner)?,
            Expr::Unary(op, a) => {
                let a = self.expr(a)?;
                match op {
                    Unary::Not => Value::Bool(!a.truthy()),
                    Unary::Len => match a {
                        Value::Str(s) => Value::Int(s.len() as i64),
                        other => return refuse(format!("# of a {} value", other.type_name())),
                    },
                    Unary::Neg => match a.as_number("unary minus")? {
                        Value::Int(n) => Value::Int(n.wrapping_neg()),
                        Value::Float(f) => Value::Float(-f),
                        _ => unreachable!("as_number gives numbers"),
                    },
                }
            }
            Expr::Binary(Binary::And, a, b) => {
                let a = self.expr(a)?;
                if a.truthy() { self.expr(b)? } else { a }
            }
            Expr::Binary(Binary::Or, a, b) => {
                let a = self.expr(a)?;
                if a.truthy() { a } else { self.expr(b)? }
            }
            Expr::Binary(op, a, b) => {
                let a = self.expr(a)?;
                let b = self.expr(b)?;
                binary(*op, &a, &b)?
            }
        };
        if let Value::Str(s) = &v {
            if s.len() > MAX_STRING {
                return refuse(format!("a string longer than {MAX_STRING} bytes"));
            }
        }
        Ok(v)
    }

    fn lookup(&self, name: &str) -> Value {
        if let Some(v) = self.scopes.iter().rev().find_map(|s| s.get(name)) {
            return v.clone();
        }
        if let Some(v) = self.globals.get(name) {
            return v.clone();
        }
        match name {
            "string" => Value::Lib("string"),
            "rpm" => Value::Lib("rpm"),
            "macros" => Value::Lib("macros"),
            "print" | "tostring" | "tonumber" | "type" => Value::Func(name.to_owned()),
            _ => Value::Nil,
        }
    }

    fn index(&mut self, obj: &Value, key: &Value) -> Result<Value> {
        let Value::Str(key) = key else {
            return refuse(format!("indexing with a {} key", key.type_name()));
        };
        match obj {
            Value::Lib("macros") => {
                if !self.host.is_defined(key) {
                    return Ok(Value::Nil);
                }
                let v = self.host.expand(&format!("%{{{key}}}"));
                if !v.is_ascii() {
                    return refuse("non-ASCII text");
                }
                Ok(Value::Str(v))
            }
            Value::Lib(lib) => {
                let known = match *lib {
                    "string" => strings::FUNCTIONS.contains(&key.as_str()),
                    _ => key == "expand",
                };
                if known {
                    Ok(Value::Func(format!("{lib}.{key}")))
                } else {
                    refuse(format!("{lib}.{key} is not available"))
                }
            }
            other => refuse(format!("indexing a {} value", other.type_name())),
        }
    }

    fn call(&mut self, f: &Value, args: Vec<Value>) -> Result<Vec<Value>> {
        self.tick()?;
        let Value::Func(name) = f else {
            return refuse(format!("calling a {} value", f.type_name()));
        };
        let arg = |i: usize| args.get(i).cloned().unwrap_or(Value::Nil);
        match name.as_str() {
            "print" => {
                let shown: Vec<String> = args.iter().map(Value::show).collect();
                self.out.push_str(&shown.join("\t"));
                if self.out.len() > MAX_STRING {
                    return refuse(format!("printing more than {MAX_STRING} bytes"));
                }
                Ok(Vec::new())
            }
            "tostring" => Ok(vec![Value::Str(arg(0).show())]),
            "tonumber" => Ok(vec![match arg(0) {
                Value::Int(_) | Value::Float(_) => arg(0),
                Value::Str(s) => strings::to_number(&s).unwrap_or(Value::Nil),
                _ => Value::Nil,
            }]),
            "type" => Ok(vec![Value::Str(arg(0).type_name().into())]),
            "rpm.expand" => {
                let text = arg(0).as_str("rpm.expand")?;
                let v = self.host.expand(&text);
                if !v.is_ascii() {
                    return refuse("non-ASCII text");
                }
                Ok(vec![Value::Str(v)])
            }
            other => match other.strip_prefix("string.") {
                Some(func) => strings::call(func, &args, &mut self.steps),
                None => refuse(format!("{other} is not available")),
            },
        }
    }
}

/// Arithmetic, comparison and concatenation, Lua 5.3 style.
fn binary(op: Binary, a: &Value, b: &Value) -> Result<Value> {
    use Binary::*;
    Ok(match op {
        Concat => {
            let s = a.as_str("concatenation")? + &b.as_str("concatenation")?;
            if s.len() > MAX_STRING {
                return refuse(format!("a string longer than {MAX_STRING} bytes"));
            }
            Value::Str(s)
        }
        Eq => Value::Bool(equal(a, b)),
        Ne => Value::Bool(!equal(a, b)),
        Lt | Le | Gt | Ge => {
            let ord = match (a, b) {
                (Value::Str(x), Value::Str(y)) => x.partial_cmp(y),
                _ => {
                    let (x, y) = (num(a, "comparison")?, num(b, "comparison")?);
                    x.partial_cmp(&y)
                }
            };
            let Some(ord) = ord else {
                return Ok(Value::Bool(false));
            };
            Value::Bool(match op {
                Lt => ord.is_lt(),
                Le => ord.is_le(),
                Gt => ord.is_gt(),
                _ => ord.is_ge(),
            })
        }
        Add | Sub | Mul | IDiv | Mod => {
            let (x, y) = (a.as_number("arithmetic")?, b.as_number("arithmetic")?);
            match (x, y) {
                (Value::Int(x), Value::Int(y)) => match op {
                    Add => Value::Int(x.wrapping_add(y)),
                    Sub => Value::Int(x.wrapping_sub(y)),
                    Mul => Value::Int(x.wrapping_mul(y)),
                    _ if y == 0 => return refuse("integer division by zero"),
                    // Lua rounds quotients down, and a remainder has the divisor's sign.
                    IDiv => {
                        let (q, r) = (x.wrapping_div(y), x.wrapping_rem(y));
                        Value::Int(q - i64::from(r != 0 && (r < 0) != (y < 0)))
                    }
                    _ => {
                        let r = x.wrapping_rem(y);
                        Value::Int(if r != 0 && (r < 0) != (y < 0) {
                            r + y
                        } else {
                            r
                        })
                    }
                },
                (x, y) => {
                    let (x, y) = (num(&x, "arithmetic")?, num(&y, "arithmetic")?);
                    Value::Float(match op {
                        Add => x + y,
                        Sub => x - y,
                        Mul => x * y,
                        IDiv => (x / y).floor(),
                        _ => x - (x / y).floor() * y,
                    })
                }
            }
        }
        Div | Pow => {
            let (x, y) = (num(a, "arithmetic")?, num(b, "arithmetic")?);
            Value::Float(if op == Div { x / y } else { x.powf(y) })
        }
        And | Or => unreachable!("short-circuit operators are evaluated by the caller"),
    })
}

fn num(v: &Value, what: &str) -> Result<f64> {
    Ok(match v.as_number(what)? {
        Value::Int(n) => n as f64,
        Value::Float(f) => f,
        _ => unreachable!("as_number gives numbers"),
    })
}

fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Int(x), Value::Float(y)) | (Value::Float(y), Value::Int(x)) => *x as f64 == *y,
        _ => a == b,
    }
}

#[cfg(test)]
mod tests;
