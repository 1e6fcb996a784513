//! JSON re-encoding as proxies that parse and re-serialize `json`-format values do it: member
//! order is kept, numbers go through the parser's number types (integers that fit 64 bits stay
//! exact, anything else becomes a double), strings come out as UTF-8 with only the escapes JSON
//! requires. Pure functions.
//!
//! - [`NumberStyle::Python`]: Karapace parses the request with its `json_decode` and writes the
//!   value with `json_encode(obj, binary=True, compact=True)` (karapace
//!   `src/karapace/kafka_rest_apis/__init__.py` `serialize`, `src/karapace/core/utils.py`).
//!   Doubles are printed as Python's `float.__repr__`: `100.0`, `1e-05`, `1.2345678901234568e+22`.
//!   Observed against Karapace: `12345678901234567890123` → `1.2345678901234568e+22`,
//!   `1E+2` → `100.0`, `"\u00e9"` → `"é"` (/work/shared/research/third-party-behaviour-2026-12.md).
//! - [`NumberStyle::RapidJson`]: pandaproxy feeds the value's parse events straight into a
//!   rapidjson `Writer` (redpanda `src/v/pandaproxy/json/requests/produce.h`, `maybe_json`), whose
//!   `Double` prints the shortest digits with rapidjson's `Prettify` rules: `100.0`,
//!   `1.2345678901234568e22`, `1e-7`. (A repeated object member is merged here, first position
//!   and last value; rapidjson's streaming writer would write both. Not modelled.)

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// How doubles are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumberStyle {
    /// Python's `repr(float)`.
    Python,
    /// rapidjson's `Writer::Double`.
    RapidJson,
}

/// A parsed JSON value that keeps member order; a repeated member keeps its first position and
/// its last value, as a Python `dict` built from the members in turn does.
#[derive(Debug, Clone, PartialEq)]
pub enum OrderedJson {
    /// `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer that fits `i64`.
    Int(i64),
    /// An integer above `i64::MAX` that fits `u64`.
    UInt(u64),
    /// Any other number.
    Double(f64),
    /// A string.
    String(String),
    /// An array.
    Array(Vec<OrderedJson>),
    /// An object, members in the order first seen.
    Object(Vec<(String, OrderedJson)>),
}

struct OrderedVisitor;

impl<'de> Visitor<'de> for OrderedVisitor {
    type Value = OrderedJson;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<OrderedJson, E> {
        Ok(OrderedJson::Null)
    }
    fn visit_none<E>(self) -> Result<OrderedJson, E> {
        Ok(OrderedJson::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<OrderedJson, E> {
        Ok(OrderedJson::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<OrderedJson, E> {
        Ok(OrderedJson::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<OrderedJson, E> {
        Ok(match i64::try_from(v) {
            Ok(i) => OrderedJson::Int(i),
            Err(_) => OrderedJson::UInt(v),
        })
    }
    // serde_json hands integers beyond 64 bits, and every number with a fraction or exponent,
    // over as f64.
    fn visit_f64<E>(self, v: f64) -> Result<OrderedJson, E> {
        Ok(OrderedJson::Double(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<OrderedJson, E> {
        Ok(OrderedJson::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<OrderedJson, E> {
        Ok(OrderedJson::String(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OrderedJson, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<OrderedJson>()? {
            items.push(item);
        }
        Ok(OrderedJson::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OrderedJson, A::Error> {
        let mut members: Vec<(String, OrderedJson)> = Vec::new();
        while let Some((key, value)) = map.next_entry::<String, OrderedJson>()? {
            match members.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = value,
                None => members.push((key, value)),
            }
        }
        Ok(OrderedJson::Object(members))
    }
}

impl<'de> Deserialize<'de> for OrderedJson {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(OrderedVisitor)
    }
}

impl OrderedJson {
    /// Parses JSON text.
    pub fn parse(text: &str) -> Result<OrderedJson, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// Python's truth value: `None`, `False`, zero, and empty strings, lists and dicts are false.
    pub fn is_falsy(&self) -> bool {
        match self {
            OrderedJson::Null => true,
            OrderedJson::Bool(b) => !b,
            OrderedJson::Int(i) => *i == 0,
            OrderedJson::UInt(u) => *u == 0,
            OrderedJson::Double(d) => *d == 0.0,
            OrderedJson::String(s) => s.is_empty(),
            OrderedJson::Array(a) => a.is_empty(),
            OrderedJson::Object(o) => o.is_empty(),
        }
    }

    /// Compact JSON text with doubles printed in `style`.
    pub fn encode(&self, style: NumberStyle) -> String {
        let mut out = String::new();
        self.write(style, &mut out);
        out
    }

    fn write(&self, style: NumberStyle, out: &mut String) {
        match self {
            OrderedJson::Null => out.push_str("null"),
            OrderedJson::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            OrderedJson::Int(i) => out.push_str(&i.to_string()),
            OrderedJson::UInt(u) => out.push_str(&u.to_string()),
            OrderedJson::Double(d) => out.push_str(&format_double(*d, style)),
            OrderedJson::String(s) => write_string(s, out),
            OrderedJson::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write(style, out);
                }
                out.push(']');
            }
            OrderedJson::Object(members) => {
                out.push('{');
                for (i, (k, v)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_string(k, out);
                    out.push(':');
                    v.write(style, out);
                }
                out.push('}');
            }
        }
    }
}

fn write_string(s: &str, out: &mut String) {
    // serde_json escapes only `"`, `\` and control characters, and writes other text as UTF-8.
    out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string()));
}

/// The shortest round-trip digits of a finite, non-zero `|d|` and its decimal exponent: `d` is
/// `0.DIGITS × 10^point` (so 100.0 is ("1", 3), 0.001 is ("1", -2)).
fn shortest_digits(d: f64) -> (String, i32) {
    // `{:e}` prints the shortest round-trip representation as `D.DDDDeX`.
    let sci = format!("{:e}", d.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let digits = digits.trim_end_matches('0');
    let digits = if digits.is_empty() { "0" } else { digits };
    let exp: i32 = exp.parse().unwrap_or(0);
    (digits.to_string(), exp + 1)
}

/// Prints a double as `style` does.
pub fn format_double(d: f64, style: NumberStyle) -> String {
    if !d.is_finite() {
        // Neither parser yields these from JSON text; print what each writer would.
        return match style {
            NumberStyle::Python if d.is_nan() => "NaN".into(),
            NumberStyle::Python if d > 0.0 => "Infinity".into(),
            NumberStyle::Python => "-Infinity".into(),
            NumberStyle::RapidJson => "null".into(),
        };
    }
    let sign = if d.is_sign_negative() { "-" } else { "" };
    if d == 0.0 {
        return format!("{sign}0.0");
    }
    let (digits, point) = shortest_digits(d);
    let n = digits.len() as i32;
    let body = match style {
        // CPython `float_repr_style` 'short': fixed notation when -4 <= exponent < 16, where the
        // exponent is that of the first digit (point - 1); else `D.DDDe±XX` (two exponent digits
        // at least).
        NumberStyle::Python => {
            let exp = point - 1;
            if (-4..16).contains(&exp) {
                fixed(&digits, point, true)
            } else {
                let mut m = digits[..1].to_string();
                if n > 1 {
                    m.push('.');
                    m.push_str(&digits[1..]);
                }
                let esign = if exp < 0 { '-' } else { '+' };
                format!("{m}e{esign}{:02}", exp.abs())
            }
        }
        // rapidjson `internal/dtoa.h` Prettify, with kk = point: fixed for 1e-6 < |d| < 1e21
        // (always with a fraction, `100.0`), else `De±X` / `D.DDDeX` without a `+`.
        NumberStyle::RapidJson => {
            if (-5..=21).contains(&point) {
                fixed(&digits, point, true)
            } else {
                let exp = point - 1;
                let mut m = digits[..1].to_string();
                if n > 1 {
                    m.push('.');
                    m.push_str(&digits[1..]);
                }
                format!("{m}e{exp}")
            }
        }
    };
    format!("{sign}{body}")
}

/// `0.DIGITS × 10^point` in fixed notation, with `.0` when there is no fraction and
/// `force_fraction`.
fn fixed(digits: &str, point: i32, force_fraction: bool) -> String {
    let n = digits.len() as i32;
    if point <= 0 {
        format!("0.{}{digits}", "0".repeat(point.unsigned_abs() as usize))
    } else if point >= n {
        let zeros = "0".repeat((point - n) as usize);
        if force_fraction {
            format!("{digits}{zeros}.0")
        } else {
            format!("{digits}{zeros}")
        }
    } else {
        let (int, frac) = digits.split_at(point as usize);
        format!("{int}.{frac}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn python(text: &str) -> String {
        OrderedJson::parse(text)
            .map(|v| v.encode(NumberStyle::Python))
            .unwrap_or_default()
    }

    fn rapid(text: &str) -> String {
        OrderedJson::parse(text)
            .map(|v| v.encode(NumberStyle::RapidJson))
            .unwrap_or_default()
    }

    #[test]
    fn python_matches_observed_karapace() {
        assert_eq!(python("12345678901234567890123"), "1.2345678901234568e+22");
        assert_eq!(python("1E+2"), "100.0");
        assert_eq!(python(r#""\u00e9""#), "\"é\"");
        assert_eq!(
            python(r#"{ "b" : 1, "a" : [ 1.5, -0.001, 1e-5, 1e16, 18446744073709551615 ] }"#),
            r#"{"b":1,"a":[1.5,-0.001,1e-05,1e+16,18446744073709551615]}"#
        );
        assert_eq!(python("123456789012345.6"), "123456789012345.6");
        assert_eq!(python(r#"{"a":1,"b":2,"a":3}"#), r#"{"a":3,"b":2}"#);
        assert_eq!(python(r#""tab\tquote\"""#), r#""tab\tquote\"""#);
    }

    #[test]
    fn rapidjson_prettify() {
        assert_eq!(rapid("12345678901234567890123"), "1.2345678901234568e22");
        assert_eq!(rapid("1E+2"), "100.0");
        assert_eq!(rapid("1e20"), "100000000000000000000.0");
        assert_eq!(rapid("1e21"), "1e21");
        assert_eq!(rapid("1e22"), "1e22");
        assert_eq!(rapid("0.001"), "0.001");
        assert_eq!(rapid("1e-7"), "1e-7");
        assert_eq!(rapid("-2.5"), "-2.5");
        assert_eq!(rapid(r#"{"x":"é"}"#), r#"{"x":"é"}"#);
    }

    #[test]
    fn python_truth_values() {
        for falsy in ["0", "0.0", "\"\"", "[]", "{}", "false", "null"] {
            assert!(OrderedJson::parse(falsy).is_ok_and(|v| v.is_falsy()), "{falsy}");
        }
        for truthy in ["1", "\"0\"", "[0]", "{\"a\":null}", "true", "-0.5"] {
            assert!(OrderedJson::parse(truthy).is_ok_and(|v| !v.is_falsy()), "{truthy}");
        }
    }
}
