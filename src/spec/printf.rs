//! printf-style formats (`%-8s`, `%05.2f`, `%x`), as C reads them: the parsing and padding
//! shared by the shell's `printf` and Lua's `string.format`.

/// One `%[flags][width][.precision]conversion`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Conversion {
    /// Any of `-+ 0#`.
    pub(crate) flags: String,
    pub(crate) width: usize,
    pub(crate) precision: Option<usize>,
    pub(crate) conv: char,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece {
    /// Literal text (`%%` already made a `%`).
    Text(String),
    Conv(Conversion),
}

/// Split a format into text and conversions; widths and precisions above `max` are refused.
pub(crate) fn parse(format: &str, max: usize) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            text.push(c);
            continue;
        }
        if chars.peek() == Some(&'%') {
            chars.next();
            text.push('%');
            continue;
        }
        let mut flags = String::new();
        while let Some(&f) = chars.peek().filter(|f| "-+ 0#".contains(**f)) {
            flags.push(f);
            chars.next();
        }
        let number = |chars: &mut std::iter::Peekable<std::str::Chars>| -> Result<usize, String> {
            let mut n = String::new();
            while let Some(&d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                n.push(d);
                chars.next();
            }
            match n.parse::<usize>() {
                Ok(v) if v > max => Err(format!("a width or precision above {max}")),
                Ok(v) => Ok(v),
                Err(_) if n.is_empty() => Ok(0),
                Err(_) => Err(format!("a width or precision above {max}")),
            }
        };
        let width = number(&mut chars)?;
        let precision = if chars.peek() == Some(&'.') {
            chars.next();
            Some(number(&mut chars)?)
        } else {
            None
        };
        let Some(conv) = chars.next() else {
            return Err("a format ending in %".into());
        };
        if !text.is_empty() {
            pieces.push(Piece::Text(std::mem::take(&mut text)));
        }
        pieces.push(Piece::Conv(Conversion {
            flags,
            width,
            precision,
            conv,
        }));
    }
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    Ok(pieces)
}

impl Conversion {
    /// `%d %i %u %x %X %o` of `n`: digits (at least `precision` of them) and sign; `None` for
    /// an unsigned conversion of a negative number.
    pub(crate) fn integer(&self, n: i64) -> Option<String> {
        let digits = match self.conv {
            'x' => format!("{n:x}"),
            'X' => format!("{n:X}"),
            'o' => format!("{n:o}"),
            _ => n.unsigned_abs().to_string(),
        };
        let signed = matches!(self.conv, 'd' | 'i');
        if n < 0 && !signed {
            return None;
        }
        let digits = match self.precision {
            Some(p) if digits.len() < p => "0".repeat(p - digits.len()) + &digits,
            _ => digits,
        };
        Some(if n < 0 { format!("-{digits}") } else { digits })
    }

    /// `body` padded to the width: on the right with `-`; with zeros after the sign with `0`
    /// for numbers (not integers with a precision); else with spaces on the left.
    pub(crate) fn pad(&self, body: &str) -> String {
        let fill = self.width.saturating_sub(body.chars().count());
        let integer = matches!(self.conv, 'd' | 'i' | 'u' | 'x' | 'X' | 'o');
        let numeric = integer || matches!(self.conv, 'f' | 'e' | 'g');
        if self.flags.contains('-') {
            format!("{body}{}", " ".repeat(fill))
        } else if self.flags.contains('0') && numeric && !(integer && self.precision.is_some()) {
            let (sign, digits) = body.strip_prefix('-').map_or(("", body), |d| ("-", d));
            format!("{sign}{}{digits}", "0".repeat(fill))
        } else {
            format!("{}{body}", " ".repeat(fill))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(f: &str) -> Conversion {
        match parse(f, 99).unwrap().pop() {
            Some(Piece::Conv(c)) => c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn formats() {
        assert_eq!(
            parse("a%%b%-5sc", 99).unwrap(),
            vec![
                Piece::Text("a%b".into()),
                Piece::Conv(Conversion {
                    flags: "-".into(),
                    width: 5,
                    precision: None,
                    conv: 's'
                }),
                Piece::Text("c".into()),
            ]
        );
        assert!(parse("%100d", 99).is_err());
        assert!(parse("x%", 99).is_err());
        assert_eq!(
            conv("%05d").pad(&conv("%05d").integer(-42).unwrap()),
            "-0042"
        );
        assert_eq!(conv("%.3x").integer(10).unwrap(), "00a");
        assert_eq!(conv("%u").integer(-1), None);
        assert_eq!(conv("%-4s").pad("ab"), "ab  ");
        assert_eq!(conv("%06.1f").pad("-1.5"), "-001.5");
        assert_eq!(conv("%05s").pad("ab"), "   ab");
    }
}
