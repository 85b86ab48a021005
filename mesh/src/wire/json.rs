//! Go `encoding/json` compatibility: an encoder that reproduces Go's bytes exactly and a decoder
//! that accepts what Go's `json.Unmarshal` accepts for the netceptor structs.
//!
//! serde's derive is not used on purpose: Go matches keys case-insensitively, treats `null` as
//! "leave the field alone", lets later duplicate keys win and merges duplicate map objects. A
//! document model that keeps every key in order ([`Json`]) makes those rules easy to follow.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, MapAccess, SeqAccess, Visitor};

use super::DecodeError;

// === encoding ===

/// Appends `s` as a JSON string the way Go's encoder writes it (with HTML escaping, Go ≥ 1.22).
pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let mut start = 0;
    for (i, c) in s.char_indices() {
        let escape: Option<&[u8]> = match c {
            '"' => Some(b"\\\""),
            '\\' => Some(b"\\\\"),
            // Go 1.22 added the short forms for \b and \f; the captured nodes run Go 1.27.
            '\u{8}' => Some(b"\\b"),
            '\u{c}' => Some(b"\\f"),
            '\n' => Some(b"\\n"),
            '\r' => Some(b"\\r"),
            '\t' => Some(b"\\t"),
            '\u{2028}' => Some(b"\\u2028"),
            '\u{2029}' => Some(b"\\u2029"),
            _ => None,
        };
        let needs_hex = c < ' ' || matches!(c, '<' | '>' | '&');
        if escape.is_none() && !needs_hex {
            continue;
        }
        out.extend_from_slice(&s.as_bytes()[start..i]);
        start = i + c.len_utf8();
        match escape {
            Some(e) => out.extend_from_slice(e),
            None => {
                // Only ASCII reaches here (control characters and `<>&`).
                let b = c as u32;
                out.extend_from_slice(b"\\u00");
                out.push(HEX[((b >> 4) & 0xf) as usize]);
                out.push(HEX[(b & 0xf) as usize]);
            }
        }
    }
    out.extend_from_slice(&s.as_bytes()[start..]);
    out.push(b'"');
}

/// Appends an unsigned integer in decimal.
pub(crate) fn write_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Formats a float64 exactly like Go's `encoding/json`.
///
/// Go writes the shortest decimal that parses back to the same value, in plain notation, except
/// when the magnitude is below 1e-6 or at least 1e21 where it switches to exponent notation and
/// then strips the leading zero of a two-digit negative exponent (`1e-07` becomes `1e-7`).
///
/// Non-finite values have no JSON form (Go refuses to marshal them). They never come out of
/// [`super::decode`]; a caller that builds one anyway gets `null`, which Go decodes as 0.
pub(crate) fn format_f64(f: f64) -> String {
    if !f.is_finite() {
        return "null".to_owned();
    }
    let (negative, digits, exp) = shortest_digits(f);
    let mut out = String::with_capacity(digits.len() + 8);
    if negative {
        out.push('-');
    }
    let abs = f.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if exp < 0 { '-' } else { '+' });
        out.push_str(&exp.unsigned_abs().to_string());
    } else {
        // Plain notation: the decimal point sits `point` digits into `digits`.
        let point = exp + 1;
        let n = digits.len() as i32;
        if point <= 0 {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', point.unsigned_abs() as usize));
            out.push_str(&digits);
        } else if point >= n {
            out.push_str(&digits);
            out.extend(std::iter::repeat_n('0', (point - n) as usize));
        } else {
            let (int, frac) = digits.split_at(point as usize);
            out.push_str(int);
            out.push('.');
            out.push_str(frac);
        }
    }
    out
}

/// The shortest decimal digits that round-trip to `f` (finite), choosing like Go's Ryū: among
/// the candidates of that length the closest to `f`, ties to even. Returns the sign, the digits
/// without leading or trailing zeros (`"0"` for zero) and the decimal exponent of the first digit.
///
/// Rust's `{:e}` finds the shortest length but breaks exact ties away from even (it prints
/// 1690060720831323.25 as `…23.3`, Go as `…23.2`), so the value is re-rounded at that length
/// with the exact formatter, which rounds ties to even, and kept if it still round-trips.
fn shortest_digits(f: f64) -> (bool, String, i32) {
    let split = |s: &str| -> (bool, String, i32) {
        let (mantissa, exp) = s.split_once('e').unwrap_or((s, "0"));
        let negative = mantissa.starts_with('-');
        let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
        (negative, digits, exp.parse().unwrap_or(0))
    };
    let shortest = split(&format!("{f:e}"));
    if shortest.1.len() > 1 {
        let rounded = format!("{f:.prec$e}", prec = shortest.1.len() - 1);
        if rounded.parse::<f64>() == Ok(f) {
            return split(&rounded);
        }
    }
    shortest
}

/// Appends a float64 as Go would (see [`format_f64`]).
pub(crate) fn write_f64(out: &mut Vec<u8>, f: f64) {
    out.extend_from_slice(format_f64(f).as_bytes());
}

/// Appends `true` or `false`.
pub(crate) fn write_bool(out: &mut Vec<u8>, b: bool) {
    out.extend_from_slice(if b { b"true" } else { b"false" });
}

/// Appends `"key":` for a field whose name needs no escaping.
pub(crate) fn write_key(out: &mut Vec<u8>, key: &str) {
    out.push(b'"');
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
}

// === decoding ===

/// A JSON number as serde_json reports it: integers that fit keep their exact value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Number {
    /// A non-negative integer that fits u64.
    U(u64),
    /// A negative integer that fits i64.
    I(i64),
    /// Anything else: fractions, exponents, integers out of range.
    F(f64),
}

impl Number {
    fn as_f64(self) -> f64 {
        match self {
            // `as` rounds to nearest, which is what Go's ParseFloat does for integer literals.
            Number::U(u) => u as f64,
            Number::I(i) => i as f64,
            Number::F(f) => f,
        }
    }
}

/// A parsed JSON document that keeps every object member in order, duplicates included.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Json {
    Null,
    Bool(bool),
    Number(Number),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    fn type_name(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "bool",
            Json::Number(_) => "number",
            Json::String(_) => "string",
            Json::Array(_) => "array",
            Json::Object(_) => "object",
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_none<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
        Ok(Json::Number(Number::U(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
        Ok(Json::Number(Number::I(v)))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Json, E> {
        Ok(Json::Number(Number::F(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut members = Vec::new();
        while let Some((k, v)) = map.next_entry::<String, Json>()? {
            members.push((k, v));
        }
        Ok(Json::Object(members))
    }
}

/// Parses a complete JSON document (surrounding whitespace allowed, nothing else after it).
///
/// serde_json bounds nesting at 128 levels, so hostile input cannot exhaust the stack.
pub(crate) fn parse(body: &[u8], kind: &'static str) -> Result<Json, DecodeError> {
    serde_json::from_slice(body).map_err(|source| DecodeError::Json { kind, source })
}

/// Whether a JSON object key selects the struct field `field` (an ASCII name) under Go's rules.
///
/// Go prefers an exact match, then compares under its name folding, which maps every rune to
/// `ToUpper(ToLower(r))` with Unicode's simple mappings. For an ASCII field name only four
/// non-ASCII runes fold onto ASCII letters, so they are listed here instead of a case table.
pub(crate) fn key_matches(key: &str, field: &str) -> bool {
    if key == field {
        return true;
    }
    let mut want = field.bytes();
    for c in key.chars() {
        let folded = match c {
            'a'..='z' => c.to_ascii_uppercase(),
            '\u{130}' | '\u{131}' => 'I', // İ and dotless ı
            '\u{17f}' => 'S',             // long s
            '\u{212a}' => 'K',            // Kelvin sign
            _ => c,
        };
        match want.next() {
            Some(w) if char::from(w.to_ascii_uppercase()) == folded => {}
            _ => return false,
        }
    }
    want.next().is_none()
}

/// Turns type mismatches into [`DecodeError::Invalid`] for one message kind.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fields {
    pub(crate) kind: &'static str,
}

impl Fields {
    pub(crate) fn invalid(self, reason: impl Into<String>) -> DecodeError {
        DecodeError::Invalid {
            kind: self.kind,
            reason: reason.into(),
        }
    }

    fn mismatch(self, field: &str, want: &str, got: &Json) -> DecodeError {
        self.invalid(format!(
            "field {field}: cannot decode {} into {want}",
            got.type_name()
        ))
    }

    /// The members of a top-level struct. Go leaves the struct zeroed for a literal `null`.
    pub(crate) fn top_object(self, doc: Json) -> Result<Vec<(String, Json)>, DecodeError> {
        match doc {
            Json::Object(members) => Ok(members),
            Json::Null => Ok(Vec::new()),
            other => Err(self.mismatch("(top level)", "object", &other)),
        }
    }

    /// A Go `string` field: `null` leaves the previous value.
    pub(crate) fn string(self, field: &str, v: Json, slot: &mut String) -> Result<(), DecodeError> {
        match v {
            Json::String(s) => *slot = s,
            Json::Null => {}
            other => return Err(self.mismatch(field, "string", &other)),
        }
        Ok(())
    }

    /// A Go `bool` field: `null` leaves the previous value.
    pub(crate) fn bool(self, field: &str, v: Json, slot: &mut bool) -> Result<(), DecodeError> {
        match v {
            Json::Bool(b) => *slot = b,
            Json::Null => {}
            other => return Err(self.mismatch(field, "bool", &other)),
        }
        Ok(())
    }

    /// A Go unsigned integer field of at most `max`: only plain non-negative integer literals are
    /// accepted (Go's decoder uses ParseUint, which refuses fractions, exponents and signs).
    pub(crate) fn uint(
        self,
        field: &str,
        v: Json,
        max: u64,
        slot: &mut u64,
    ) -> Result<(), DecodeError> {
        match v {
            Json::Number(Number::U(u)) if u <= max => *slot = u,
            Json::Null => {}
            Json::Number(n) => {
                return Err(self.invalid(format!(
                    "field {field}: {} is not an unsigned integer up to {max}",
                    format_number(n)
                )));
            }
            other => return Err(self.mismatch(field, "unsigned integer", &other)),
        }
        Ok(())
    }

    /// A Go `map[string]float64`: `null` sets nil, an object is merged into the existing map
    /// (a nil map is allocated first), values that are `null` store 0.
    pub(crate) fn float_map(
        self,
        field: &str,
        v: Json,
        max_len: usize,
        slot: &mut Option<BTreeMap<String, f64>>,
    ) -> Result<(), DecodeError> {
        match v {
            Json::Null => *slot = None,
            Json::Object(members) => {
                let map = slot.get_or_insert_with(BTreeMap::new);
                for (k, v) in members {
                    let cost = match v {
                        Json::Number(n) => n.as_f64(),
                        Json::Null => 0.0,
                        other => return Err(self.mismatch(field, "number", &other)),
                    };
                    map.insert(k, cost);
                    if map.len() > max_len {
                        return Err(
                            self.invalid(format!("field {field}: more than {max_len} entries"))
                        );
                    }
                }
            }
            other => return Err(self.mismatch(field, "object", &other)),
        }
        Ok(())
    }

    /// A Go `map[string]string`, with the same rules as [`Fields::float_map`].
    pub(crate) fn string_map(
        self,
        field: &str,
        v: Json,
        slot: &mut Option<BTreeMap<String, String>>,
    ) -> Result<(), DecodeError> {
        match v {
            Json::Null => *slot = None,
            Json::Object(members) => {
                let map = slot.get_or_insert_with(BTreeMap::new);
                for (k, v) in members {
                    let value = match v {
                        Json::String(s) => s,
                        Json::Null => String::new(),
                        other => return Err(self.mismatch(field, "string", &other)),
                    };
                    map.insert(k, value);
                }
            }
            other => return Err(self.mismatch(field, "object", &other)),
        }
        Ok(())
    }
}

fn format_number(n: Number) -> String {
    match n {
        Number::U(u) => u.to_string(),
        Number::I(i) => i.to_string(),
        Number::F(f) => format_f64(f),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(s: &str) -> String {
        let mut out = Vec::new();
        write_str(&mut out, s);
        String::from_utf8(out).expect("encoder writes UTF-8")
    }

    #[test]
    fn go_float_format_table() {
        let table: &[(f64, &str)] = &[
            (1.0, "1"),
            (2.5, "2.5"),
            (1.6, "1.6"),
            (0.1, "0.1"),
            (100.0, "100"),
            (0.0, "0"),
            (-0.0, "-0"),
            (-2.5, "-2.5"),
            (1e20, "100000000000000000000"),
            (1e21, "1e+21"),
            (1.5e21, "1.5e+21"),
            (1e-6, "0.000001"),
            (1e-7, "1e-7"),
            (1.5e-10, "1.5e-10"),
            (1e-100, "1e-100"),
            (1e300, "1e+300"),
            (-1e-7, "-1e-7"),
            (123456789.125, "123456789.125"),
            (0.30000000000000004, "0.30000000000000004"),
            (f64::MAX, "1.7976931348623157e+308"),
            (f64::MIN_POSITIVE, "2.2250738585072014e-308"),
            (5e-324, "5e-324"),
            (9007199254740993.0, "9007199254740992"),
            // An exact tie at the shortest length: Go rounds it to even.
            // 1690060720831323.25 and -163559682789802.625, written as bits because the
            // literals carry more digits than clippy likes.
            (f64::from_bits(0x4318_0467_b3a7_ed6d), "1690060720831323.2"),
            (f64::from_bits(0xc2e2_9836_995a_3554), "-163559682789802.62"),
            (1e23, "1e+23"),
            (123e-20, "1.23e-18"),
            (0.000001234, "0.000001234"),
            (5e-7, "5e-7"),
        ];
        for &(f, want) in table {
            assert_eq!(format_f64(f), want, "formatting {f:?}");
        }
    }

    #[test]
    fn go_string_escapes() {
        assert_eq!(enc("plain"), r#""plain""#);
        assert_eq!(enc("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(enc("<a>&"), r#""\u003ca\u003e\u0026""#);
        assert_eq!(enc("\n\r\t\u{8}\u{c}"), r#""\n\r\t\b\f""#);
        assert_eq!(enc("\u{0}\u{1f}\u{7f}"), "\"\\u0000\\u001f\u{7f}\"");
        assert_eq!(enc("\u{2028}x\u{2029}"), r#""\u2028x\u2029""#);
        assert_eq!(enc("é€😀"), "\"é€😀\"");
    }

    #[test]
    fn key_folding_follows_go() {
        assert!(key_matches("NodeID", "NodeID"));
        assert!(key_matches("nodeid", "NodeID"));
        assert!(key_matches("NODEID", "NodeID"));
        assert!(key_matches("nodeıd", "NodeID"));
        assert!(key_matches("ſervice", "Service"));
        assert!(key_matches("\u{212a}", "K"));
        assert!(!key_matches("NodeI", "NodeID"));
        assert!(!key_matches("NodeIDs", "NodeID"));
        assert!(!key_matches("Node_ID", "NodeID"));
        assert!(!key_matches("", "NodeID"));
    }

    #[test]
    fn integers_stay_exact() {
        let mut out = Vec::new();
        write_u64(&mut out, 0);
        out.push(b' ');
        write_u64(&mut out, u64::MAX);
        assert_eq!(out, b"0 18446744073709551615");
        let doc = parse(
            b"[30124362043090275, -1, 1.0, 1e3, 18446744073709551616]",
            "t",
        )
        .expect("valid JSON");
        assert_eq!(
            doc,
            Json::Array(vec![
                Json::Number(Number::U(30_124_362_043_090_275)),
                Json::Number(Number::I(-1)),
                Json::Number(Number::F(1.0)),
                Json::Number(Number::F(1000.0)),
                Json::Number(Number::F(18446744073709551616.0)),
            ])
        );
    }
}
