//! Values as people write them: durations (`"90s"`) and sizes (`"20GiB"`), parsed with
//! messages that say what is expected, and "did you mean" for mistyped keys.

use std::fmt;
use std::time::Duration;

/// Appended to every duration error: what a valid one looks like.
const DURATION_EXAMPLES: &str =
    "expected a number and a unit, such as \"500ms\", \"90s\", \"15m\", \"1h\" or \"30d\"";
/// Appended to every size error.
const SIZE_EXAMPLES: &str =
    "expected a number of bytes, or a number and a unit, such as \"512MiB\" or \"20GiB\"";

/// Parses a duration such as `"90s"`, `"15m"`, `"1h 30m"` or `"0"`. The error says what is
/// wrong in the user's terms and gives examples (it does not repeat the value).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    use humantime::DurationError as E;
    let s = s.trim();
    humantime::parse_duration(s).map_err(|e| {
        let what = match e {
            E::Empty => "empty".to_owned(),
            E::UnknownUnit { unit, value, .. } if unit.is_empty() => {
                return format!("a unit is needed, such as \"{value}s\" or \"{value}m\"");
            }
            E::UnknownUnit { unit, .. } => format!("unknown unit {unit:?}"),
            E::NumberExpected(_) => "a number is missing".to_owned(),
            E::InvalidCharacter(at) => match s.get(at..).and_then(|rest| rest.chars().next()) {
                Some(c) => format!("unexpected {c:?}"),
                None => "unexpected end".to_owned(),
            },
            E::NumberOverflow => "too large, or finer than a nanosecond".to_owned(),
        };
        format!("{what}; {DURATION_EXAMPLES}")
    })
}

/// Parses a size: a number of bytes (`"1000"`), or a number and a unit (`"512MiB"`,
/// `"1.5 GB"`). Units are case-insensitive: `B`, decimal `K`/`KB` .. `E`/`EB`, binary
/// `Ki`/`KiB` .. `Ei`/`EiB`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = (&s[..split], s[split..].trim_start());
    let fail = |what: String| Err(format!("{what}; {SIZE_EXAMPLES}"));
    if s.is_empty() {
        return fail("empty".into());
    }
    if number.is_empty() {
        return fail(match s.starts_with('-') {
            true => "negative".into(),
            false => "it does not start with a number".into(),
        });
    }
    let Some(factor) = unit_factor(unit) else {
        return fail(format!("unknown unit {unit:?}"));
    };
    let too_large = || fail("too large (at most 16EiB)".into());
    if let Ok(n) = number.parse::<u64>() {
        return n.checked_mul(factor).map_or_else(too_large, Ok);
    }
    let Ok(n) = number.parse::<f64>() else {
        return fail(format!("{number:?} is not a number"));
    };
    let bytes = n * factor as f64;
    // u64::MAX as f64 rounds up to 2^64, which does not fit.
    if bytes >= u64::MAX as f64 {
        return too_large();
    }
    Ok(bytes as u64)
}

/// Bytes per `unit`, the units `bytesize` accepts; `None` for an unknown one.
fn unit_factor(unit: &str) -> Option<u64> {
    let unit = unit.to_ascii_lowercase();
    let (prefix, binary) = match unit.strip_suffix('b').unwrap_or(&unit) {
        "" => return Some(1),
        p => match p.strip_suffix('i') {
            Some(p) => (p, true),
            None => (p, false),
        },
    };
    let power = ["k", "m", "g", "t", "p", "e"]
        .iter()
        .position(|p| *p == prefix)? as u32
        + 1;
    Some(match binary {
        true => 1024u64.pow(power),
        false => 1000u64.pow(power),
    })
}

/// The candidate closest to a mistyped `word`, if one is close enough to be what was meant.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// Accepts a human string (`"15m"`, `"20GiB"`) or, from TOML, a bare integer.
struct HumanVisitor<T> {
    /// What the value is, for messages: "duration", "size".
    what: &'static str,
    parse: fn(&str) -> Result<T, String>,
    from_int: fn(u64) -> Result<T, String>,
}

impl<T> serde::de::Visitor<'_> for HumanVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a {} string", self.what)
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<T, E> {
        (self.parse)(v).map_err(|e| E::custom(format!("invalid {} {v:?}: {e}", self.what)))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<T, E> {
        (self.from_int)(v).map_err(|e| E::custom(format!("invalid {} {v}: {e}", self.what)))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<T, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => Err(E::custom(format!("invalid {} {v}: negative", self.what))),
        }
    }
}

/// Serde for durations as humantime strings: `"90s"`, `"15m"`, `"1h"`, `"30d"`, `"500ms"`, `"0"`.
pub(super) mod duration_serde {
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*value))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_any(super::HumanVisitor {
            what: "duration",
            parse: super::parse_duration,
            // A bare number has no obvious unit; only zero means the same in all of them.
            from_int: |n| match n {
                0 => Ok(Duration::ZERO),
                _ => Err(format!("a unit is needed, such as \"{n}s\"")),
            },
        })
    }
}

/// Serde for byte sizes: `"512MiB"`, `"20GiB"`, `"0"` or an integer number of bytes.
pub(super) mod size_serde {
    use serde::{Deserializer, Serializer};

    /// Largest binary unit that divides the size exactly, so the string parses back
    /// to the same number: `"20GiB"`, `"1536KiB"`, `"1000"`.
    pub fn serialize<S: Serializer>(value: &u64, s: S) -> Result<S::Ok, S::Error> {
        let (mut n, mut unit) = (*value, "");
        for next in ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"] {
            if n == 0 || n % 1024 != 0 {
                break;
            }
            (n, unit) = (n / 1024, next);
        }
        s.collect_str(&format_args!("{n}{unit}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        d.deserialize_any(super::HumanVisitor {
            what: "size",
            parse: super::parse_size,
            from_int: Ok,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_like_before() {
        for (text, bytes) in [
            ("0", 0),
            ("1000", 1000),
            ("512MiB", 512 << 20),
            ("20GiB", 20 << 30),
            ("20 gib", 20 << 30),
            ("1.5GiB", 3 << 29),
            ("10k", 10_000),
            ("10KB", 10_000),
            ("3Ki", 3072),
            ("7b", 7),
            ("15EiB", 15 << 60),
        ] {
            assert_eq!(parse_size(text), Ok(bytes), "{text}");
            // What the config accepted before (through bytesize) still means the same.
            let before = text.parse::<bytesize::ByteSize>().unwrap().as_u64();
            assert_eq!(bytes, before, "{text}");
        }
    }

    #[test]
    fn size_errors_say_what_is_expected() {
        for (text, want) in [
            (
                "",
                "empty; expected a number of bytes, or a number and a unit, such as \"512MiB\"",
            ),
            ("MiB", "it does not start with a number; expected"),
            ("-5MiB", "negative; expected"),
            ("12 parsecs", "unknown unit \"parsecs\"; expected"),
            ("1.2.3GiB", "\"1.2.3\" is not a number; expected"),
            ("17EiB", "too large (at most 16EiB); expected"),
            ("99999999999999999999999", "too large"),
        ] {
            assert_error(parse_size(text), text, want);
        }
    }

    /// `result` is an error starting with `want`, in words rather than parser jargon.
    fn assert_error<T: std::fmt::Debug>(result: Result<T, String>, text: &str, want: &str) {
        let got = result.unwrap_err();
        assert!(got.starts_with(want), "{text:?}: {got}");
        assert!(!got.contains("float"), "{text:?}: {got}");
    }

    #[test]
    fn duration_errors_say_what_is_expected() {
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration(" 0 ").unwrap(), Duration::ZERO);
        for (text, want) in [
            (
                "",
                "empty; expected a number and a unit, such as \"500ms\", \"90s\"",
            ),
            ("90", "a unit is needed, such as \"90s\" or \"90m\""),
            ("5x", "unknown unit \"x\"; expected"),
            ("m", "a number is missing; expected"),
            ("5m!", "unexpected '!'; expected"),
            ("99999999999999999999y", "too large"),
        ] {
            assert_error(parse_duration(text), text, want);
        }
    }

    #[test]
    fn suggestions_are_close_or_absent() {
        let keys = ["listen", "public_url", "trusted_proxies", "instance"];
        assert_eq!(did_you_mean("listn", keys), Some("listen"));
        assert_eq!(did_you_mean("trusted_proxy", keys), Some("trusted_proxies"));
        assert_eq!(did_you_mean("publicurl", keys), Some("public_url"));
        assert_eq!(did_you_mean("bucket", keys), None);
        assert_eq!(did_you_mean("x", keys), None);
    }
}
