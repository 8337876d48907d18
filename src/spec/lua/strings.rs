//! Lua's `string` library, the functions specs use to shape names (ASCII strings only).

use super::pattern::{self, Capture};
use super::{MAX_STRING, Result, Value, refuse};
use crate::spec::printf::{self, Piece};

/// The `string` functions the interpreter has.
pub(super) const FUNCTIONS: &[&str] = &[
    "sub", "upper", "lower", "len", "rep", "reverse", "format", "find", "match", "gsub",
];

/// `tonumber` on a string: a decimal or hexadecimal integer, or a float; `None` otherwise.
pub(super) fn to_number(s: &str) -> Option<Value> {
    let t = s.trim();
    let (neg, body) = match t.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, t),
    };
    if let Some(hex) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        if hex.is_empty() || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        // Lua wraps hexadecimal integers around.
        let v = hex.bytes().fold(0i64, |acc, c| {
            acc.wrapping_mul(16)
                .wrapping_add((c as char).to_digit(16).unwrap_or(0) as i64)
        });
        return Some(Value::Int(if neg { v.wrapping_neg() } else { v }));
    }
    if !body.is_empty() && body.bytes().all(|c| c.is_ascii_digit()) {
        return match t.parse::<i64>() {
            Ok(v) => Some(Value::Int(v)),
            Err(_) => t.parse::<f64>().ok().map(Value::Float),
        };
    }
    let plain = body
        .bytes()
        .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'+' | b'-'));
    if !plain || !body.bytes().any(|c| c.is_ascii_digit()) {
        return None;
    }
    t.parse::<f64>().ok().map(Value::Float)
}

/// Lua's string positions: 1-based, negative from the end, clamped.
fn range(len: usize, i: i64, j: i64) -> (usize, usize) {
    let len = len as i64;
    let norm = |p: i64| if p < 0 { (len + p + 1).max(0) } else { p };
    let start = norm(i).max(1);
    let end = norm(j).min(len);
    if start > end {
        (0, 0)
    } else {
        ((start - 1) as usize, end as usize)
    }
}

pub(super) fn call(func: &str, args: &[Value], steps: &mut usize) -> Result<Vec<Value>> {
    let arg = |i: usize| args.get(i).cloned().unwrap_or(Value::Nil);
    let string = |i: usize| arg(i).as_str(&format!("string.{func}"));
    let int = |i: usize, default: i64| match arg(i) {
        Value::Nil => Ok(default),
        v => v.as_int(&format!("string.{func}")),
    };
    let s = string(0)?;
    let one = |v: Value| Ok(vec![v]);
    match func {
        "sub" => {
            let (a, b) = range(s.len(), int(1, 1)?, int(2, -1)?);
            one(Value::Str(s[a..b].to_owned()))
        }
        "upper" => one(Value::Str(s.to_ascii_uppercase())),
        "lower" => one(Value::Str(s.to_ascii_lowercase())),
        "len" => one(Value::Int(s.len() as i64)),
        "reverse" => one(Value::Str(s.chars().rev().collect())),
        "rep" => {
            let n = int(1, 1)?.max(0) as usize;
            let sep = match arg(2) {
                Value::Nil => String::new(),
                v => v.as_str("string.rep")?,
            };
            let total = (s.len() + sep.len()).saturating_mul(n);
            if total > MAX_STRING {
                return refuse(format!("string.rep of more than {MAX_STRING} bytes"));
            }
            one(Value::Str(vec![s.as_str(); n].join(&sep)))
        }
        "format" => one(Value::Str(format(&s, &args[1..])?)),
        "find" | "match" => {
            let init = int(2, 1)?;
            let (start, _) = range(s.len(), init, -1);
            let start = if init > s.len() as i64 + 1 {
                return one(Value::Nil);
            } else if init > s.len() as i64 {
                s.len()
            } else {
                start
            };
            let pat = string(1)?;
            if func == "find" && (arg(3).truthy() || !pat.bytes().any(is_special)) {
                return Ok(match s[start..].find(&pat) {
                    Some(k) => vec![
                        Value::Int((start + k + 1) as i64),
                        Value::Int((start + k + pat.len()) as i64),
                    ],
                    None => vec![Value::Nil],
                });
            }
            let Some((a, b, caps)) = pattern::find(&s, &pat, start, steps)? else {
                return one(Value::Nil);
            };
            let mut out = Vec::new();
            if func == "find" {
                out.push(Value::Int(a as i64 + 1));
                out.push(Value::Int(b as i64));
                if matches!(caps.as_slice(), [Capture::Text(x, y)] if (*x, *y) == (a, b)) {
                    return Ok(out);
                }
            }
            out.extend(caps.iter().map(|c| capture(&s, c)));
            Ok(out)
        }
        "gsub" => gsub(&s, &string(1)?, &arg(2), &arg(3), steps),
        _ => refuse(format!("string.{func} is not available")),
    }
}

fn is_special(c: u8) -> bool {
    b"^$*+?.([%-".contains(&c)
}

fn capture(s: &str, c: &Capture) -> Value {
    match c {
        Capture::Text(a, b) => Value::Str(s[*a..*b].to_owned()),
        Capture::Position(p) => Value::Int(*p as i64),
    }
}

/// `string.gsub(s, pattern, replacement [, n])` with a string replacement (`%0`..`%9`, `%%`).
fn gsub(s: &str, pat: &str, rep: &Value, max: &Value, steps: &mut usize) -> Result<Vec<Value>> {
    let rep = match rep {
        Value::Str(_) | Value::Int(_) | Value::Float(_) => rep.as_str("string.gsub")?,
        other => {
            return refuse(format!(
                "string.gsub with a {} replacement",
                other.type_name()
            ));
        }
    };
    let max = match max {
        Value::Nil => usize::MAX,
        v => v.as_int("string.gsub")?.max(0) as usize,
    };
    let anchored = pat.starts_with('^');
    let mut out = String::new();
    let mut pos = 0;
    let mut count = 0;
    while count < max {
        let Some((a, b, caps)) = pattern::find(s, pat, pos, steps)? else {
            break;
        };
        out.push_str(&s[pos..a]);
        let mut r = rep.bytes();
        while let Some(c) = r.next() {
            if c != b'%' {
                out.push(c as char);
                continue;
            }
            match r.next() {
                Some(b'0') => out.push_str(&s[a..b]),
                Some(d @ b'1'..=b'9') => {
                    let k = (d - b'1') as usize;
                    match caps.get(k) {
                        Some(c) => out.push_str(&capture(s, c).show()),
                        None if k == 0 => out.push_str(&s[a..b]),
                        None => return refuse(format!("invalid capture index %{}", d as char)),
                    }
                }
                Some(b'%') => out.push('%'),
                _ => return refuse("invalid use of '%' in a replacement string"),
            }
        }
        if out.len() > MAX_STRING {
            return refuse(format!("a string longer than {MAX_STRING} bytes"));
        }
        count += 1;
        if b > a {
            pos = b;
        } else {
            if a < s.len() {
                out.push_str(&s[a..a + 1]);
            }
            pos = a + 1;
        }
        if anchored || pos > s.len() {
            break;
        }
    }
    if pos < s.len() {
        out.push_str(&s[pos..]);
    }
    Ok(vec![Value::Str(out), Value::Int(count as i64)])
}

/// `string.format` with `%s %d %i %x %X %o %c %f %%`, flags, width and precision.
fn format(fmt: &str, args: &[Value]) -> Result<String> {
    let pieces = printf::parse(fmt, 99).or_else(|e| refuse(format!("string.format: {e}")))?;
    let mut out = String::new();
    let mut next = args.iter();
    for piece in pieces {
        let c = match piece {
            Piece::Text(t) => {
                out.push_str(&t);
                continue;
            }
            Piece::Conv(c) => c,
        };
        if c.flags.contains(['+', ' ', '#']) {
            return refuse(format!("string.format: %{}{}", c.flags, c.conv));
        }
        let Some(v) = next.next() else {
            return refuse(format!("string.format: no value for %{}", c.conv));
        };
        let body = match c.conv {
            's' => {
                let s = v.show();
                match c.precision {
                    Some(p) => s.chars().take(p).collect(),
                    None => s,
                }
            }
            'd' | 'i' | 'x' | 'X' | 'o' => match c.integer(v.as_int("string.format")?) {
                Some(body) => body,
                None => return refuse(format!("string.format: %{} of a negative number", c.conv)),
            },
            'c' => {
                let n = v.as_int("string.format")?;
                match u8::try_from(n) {
                    Ok(b) if b.is_ascii() => (b as char).to_string(),
                    _ => return refuse("string.format: %c of a non-ASCII code"),
                }
            }
            'f' => {
                let f = match v.as_number("string.format")? {
                    Value::Int(n) => n as f64,
                    Value::Float(f) => f,
                    _ => unreachable!("as_number gives numbers"),
                };
                format!("{:.*}", c.precision.unwrap_or(6), f)
            }
            other => return refuse(format!("string.format: %{other}")),
        };
        out.push_str(&c.pad(&body));
        if out.len() > MAX_STRING {
            return refuse(format!("a string longer than {MAX_STRING} bytes"));
        }
    }
    Ok(out)
}
