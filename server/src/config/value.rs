//! Value conversion, identical for command-line text and YAML nodes
//! (spec/control-work-config.md §3.1 "Value conversion").

use std::collections::BTreeMap;
use std::time::Duration;

use super::schema::Kind;
use super::yaml::{Node, NodeKind};

/// A converted param value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    List(Vec<String>),
    Map(BTreeMap<String, f64>),
    Duration(Duration),
    Json(serde_json::Value),
    Rules(Vec<BTreeMap<String, String>>),
}

/// Converts command-line text (also used for schema defaults).
pub(crate) fn from_text(kind: Kind, text: &str) -> Result<Value, String> {
    match kind {
        Kind::Str => Ok(Value::Str(text.to_owned())),
        Kind::Int => int_value(text),
        Kind::Float => float_value(text),
        Kind::Bool => bool_value(text),
        Kind::Duration => duration_value(text),
        Kind::StrList => {
            if text.starts_with('[') {
                json_string_list(text)
            } else {
                Ok(Value::List(vec![text.to_owned()]))
            }
        }
        Kind::FloatMap => json_float_map(text),
        Kind::Json => serde_json::from_str(text)
            .map(Value::Json)
            .map_err(|e| format!("invalid JSON: {e}")),
        Kind::RuleList => json_rules(text),
    }
}

/// Converts a YAML node (never `Null`: callers treat a null param as absent).
pub(crate) fn from_yaml(kind: Kind, node: &Node) -> Result<Value, String> {
    match kind {
        Kind::Str => yaml_string(node).map(Value::Str),
        Kind::Int => int_value(yaml_raw_scalar(node, "an integer")?),
        Kind::Float => float_value(yaml_raw_scalar(node, "a number")?),
        Kind::Bool => bool_value(yaml_raw_scalar(node, "a boolean")?),
        Kind::Duration => duration_value(&yaml_string(node)?),
        Kind::StrList => match &node.kind {
            NodeKind::Seq(items) => items
                .iter()
                .map(yaml_string)
                .collect::<Result<Vec<_>, _>>()
                .map(Value::List)
                .map_err(|e| format!("list item: {e}")),
            NodeKind::Scalar { .. } => from_text(Kind::StrList, &yaml_string(node)?),
            _ => Err(format!("expected a list, got a {}", node.type_name())),
        },
        Kind::FloatMap => match &node.kind {
            NodeKind::Map(entries) => {
                let mut map = BTreeMap::new();
                for (k, v) in entries {
                    let key = yaml_string(k).map_err(|e| format!("map key: {e}"))?;
                    let text = yaml_raw_scalar(v, "a number")?;
                    let f = parse_float(text)
                        .ok_or_else(|| format!("value of {key:?}: {text:?} is not a number"))?;
                    map.insert(key, f);
                }
                Ok(Value::Map(map))
            }
            NodeKind::Scalar { text, .. } => json_float_map(text),
            _ => Err(format!("expected a mapping, got a {}", node.type_name())),
        },
        Kind::Json => match &node.kind {
            NodeKind::Scalar { text, plain: false } => serde_json::from_str(text)
                .map(Value::Json)
                .map_err(|e| format!("invalid JSON: {e}")),
            _ => Ok(Value::Json(yaml_to_json(node))),
        },
        Kind::RuleList => match &node.kind {
            NodeKind::Seq(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| yaml_rule(item).map_err(|e| format!("rule {}: {e}", i + 1)))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Rules),
            NodeKind::Scalar { text, .. } if text.starts_with('[') => json_rules(text),
            _ => Err(format!(
                "expected a list of mappings, got a {}",
                node.type_name()
            )),
        },
    }
}

// === scalar parsing (Go strconv semantics) ===

/// `strconv.ParseInt(s, 0, 64)`: optional sign, `0x`/`0o`/`0b` prefixes, a leading `0` means
/// octal, underscores between digits.
pub(crate) fn parse_int(s: &str) -> Option<i64> {
    let (neg, body) = match s.as_bytes().first()? {
        b'+' => (false, &s[1..]),
        b'-' => (true, &s[1..]),
        _ => (false, s),
    };
    let lower = body.to_ascii_lowercase();
    let (radix, digits, prefixed) = if let Some(rest) = lower.strip_prefix("0x") {
        (16, rest, true)
    } else if let Some(rest) = lower.strip_prefix("0o") {
        (8, rest, true)
    } else if let Some(rest) = lower.strip_prefix("0b") {
        (2, rest, true)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, &lower[1..], true)
    } else {
        (10, lower.as_str(), false)
    };
    if !underscores_ok(digits, prefixed) {
        return None;
    }
    let digits: String = digits.chars().filter(|&c| c != '_').collect();
    if digits.is_empty() {
        return None;
    }
    let magnitude = u64::from_str_radix(&digits, radix).ok()?;
    if neg {
        if magnitude == 1u64 << 63 {
            Some(i64::MIN)
        } else {
            i64::try_from(magnitude).ok().map(|m| -m)
        }
    } else {
        i64::try_from(magnitude).ok()
    }
}

/// Go's rule: underscores only separate digits (or follow a base prefix).
fn underscores_ok(digits: &str, prefixed: bool) -> bool {
    let mut prev_digit = prefixed;
    let mut prev_underscore = false;
    for c in digits.chars() {
        if c == '_' {
            if !prev_digit {
                return false;
            }
            prev_underscore = true;
            prev_digit = false;
        } else {
            prev_underscore = false;
            prev_digit = true;
        }
    }
    !prev_underscore
}

/// Go's `strconv.ParseFloat` for the forms people write: decimal, exponent, inf, nan.
pub(crate) fn parse_float(s: &str) -> Option<f64> {
    let t = s.trim_start_matches(['+', '-']);
    let ok_chars = t.eq_ignore_ascii_case("inf")
        || t.eq_ignore_ascii_case("infinity")
        || t.eq_ignore_ascii_case("nan")
        || (!t.is_empty()
            && t.chars()
                .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-')));
    if !ok_chars || s.len() - t.len() > 1 {
        return None;
    }
    s.parse::<f64>().ok()
}

/// The boolean spellings of `ghjm/cmdline` (Go `strconv.ParseBool` plus yes/no/Y/N).
pub(crate) fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "Y" | "true" | "TRUE" | "True" | "yes" | "Yes" | "YES" => Some(true),
        "0" | "f" | "F" | "N" | "false" | "FALSE" | "False" | "no" | "No" | "NO" => Some(false),
        _ => None,
    }
}

/// Go's `time.ParseDuration`, restricted to non-negative values: `300ms`, `1.5h`, `2h45m`.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    receptor_proto::go_duration::parse(s)
}

fn int_value(text: &str) -> Result<Value, String> {
    parse_int(text)
        .map(Value::Int)
        .ok_or_else(|| format!("{text:?} is not an integer"))
}

fn float_value(text: &str) -> Result<Value, String> {
    parse_float(text)
        .map(Value::Float)
        .ok_or_else(|| format!("{text:?} is not a number"))
}

fn bool_value(text: &str) -> Result<Value, String> {
    parse_bool(text)
        .map(Value::Bool)
        .ok_or_else(|| format!("{text:?} is not a boolean"))
}

fn duration_value(text: &str) -> Result<Value, String> {
    parse_duration(text).map(Value::Duration)
}

// === JSON on the command line ===

fn json_scalar_to_string(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn json_string_list(text: &str) -> Result<Value, String> {
    let parsed: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("invalid JSON list: {e}"))?;
    let serde_json::Value::Array(items) = parsed else {
        return Err("expected a JSON list".to_owned());
    };
    items
        .iter()
        .map(|v| json_scalar_to_string(v).ok_or_else(|| format!("list item {v} is not a string")))
        .collect::<Result<Vec<_>, _>>()
        .map(Value::List)
}

fn json_float_map(text: &str) -> Result<Value, String> {
    let parsed: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("invalid JSON object: {e}"))?;
    let serde_json::Value::Object(obj) = parsed else {
        return Err("expected a JSON object".to_owned());
    };
    let mut map = BTreeMap::new();
    for (k, v) in obj {
        let f = match &v {
            serde_json::Value::Number(n) => n.as_f64(),
            serde_json::Value::String(s) => parse_float(s),
            _ => None,
        }
        .ok_or_else(|| format!("value of {k:?} is not a number"))?;
        map.insert(k, f);
    }
    Ok(Value::Map(map))
}

fn json_rules(text: &str) -> Result<Value, String> {
    let parsed: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("invalid JSON list: {e}"))?;
    let serde_json::Value::Array(items) = parsed else {
        return Err("expected a JSON list of objects".to_owned());
    };
    let mut rules = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let serde_json::Value::Object(obj) = item else {
            return Err(format!("rule {}: expected an object", i + 1));
        };
        let mut rule = BTreeMap::new();
        for (k, v) in obj {
            let serde_json::Value::String(s) = v else {
                return Err(format!("rule {}: value of {k:?} is not a string", i + 1));
            };
            rule.insert(k.clone(), s.clone());
        }
        rules.push(rule);
    }
    Ok(Value::Rules(rules))
}

// === YAML ===

/// What a plain scalar resolves to under the YAML core schema as Go's decoder sees it.
enum Resolved {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str,
}

fn resolve_plain(text: &str) -> Resolved {
    match text {
        "true" | "True" | "TRUE" => return Resolved::Bool(true),
        "false" | "False" | "FALSE" => return Resolved::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Resolved::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Resolved::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Resolved::Float(f64::NAN),
        _ => {}
    }
    if let Some(i) = parse_int(text) {
        return Resolved::Int(i);
    }
    let body = text.trim_start_matches(['+', '-']);
    let looks_float = text.len() - body.len() <= 1
        && body.chars().any(|c| c.is_ascii_digit())
        && body.contains(['.', 'e', 'E'])
        && body
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'));
    if looks_float && let Ok(f) = text.parse::<f64>() {
        return Resolved::Float(f);
    }
    Resolved::Str
}

/// A scalar as a string field sees it: a plain int becomes its decimal text, a plain float
/// six decimals (Go `%f`), a plain bool `true`/`false`; quoted text stays as written.
pub(crate) fn yaml_string(node: &Node) -> Result<String, String> {
    match &node.kind {
        NodeKind::Scalar { text, plain: true } => Ok(match resolve_plain(text) {
            Resolved::Int(i) => i.to_string(),
            Resolved::Float(f) => format!("{f:.6}"),
            Resolved::Bool(b) => b.to_string(),
            Resolved::Str => text.clone(),
        }),
        NodeKind::Scalar { text, plain: false } => Ok(text.clone()),
        NodeKind::Null => Ok(String::new()),
        _ => Err(format!("expected a string, got a {}", node.type_name())),
    }
}

/// The raw text of a scalar, for fields that parse it themselves (int, float, bool).
fn yaml_raw_scalar<'a>(node: &'a Node, what: &str) -> Result<&'a str, String> {
    match &node.kind {
        NodeKind::Scalar { text, .. } => Ok(text),
        _ => Err(format!("expected {what}, got a {}", node.type_name())),
    }
}

/// One firewall rule: a mapping whose values are strings (not plain ints, floats or bools).
fn yaml_rule(node: &Node) -> Result<BTreeMap<String, String>, String> {
    let NodeKind::Map(entries) = &node.kind else {
        return Err(format!("expected a mapping, got a {}", node.type_name()));
    };
    let mut rule = BTreeMap::new();
    for (k, v) in entries {
        let key = yaml_string(k)?;
        let value = match &v.kind {
            NodeKind::Scalar { text, plain: false } => text.clone(),
            NodeKind::Scalar { text, plain: true }
                if matches!(resolve_plain(text), Resolved::Str) =>
            {
                text.clone()
            }
            _ => return Err(format!("value of {key:?} is not a string")),
        };
        rule.insert(key, value);
    }
    Ok(rule)
}

/// A YAML node as JSON (for "JSON data" fields).
fn yaml_to_json(node: &Node) -> serde_json::Value {
    use serde_json::Value as J;
    match &node.kind {
        NodeKind::Null => J::Null,
        NodeKind::Scalar { text, plain: false } => J::String(text.clone()),
        NodeKind::Scalar { text, plain: true } => match resolve_plain(text) {
            Resolved::Int(i) => J::from(i),
            Resolved::Float(f) => serde_json::Number::from_f64(f).map_or(J::Null, J::Number),
            Resolved::Bool(b) => J::Bool(b),
            Resolved::Str => J::String(text.clone()),
        },
        NodeKind::Seq(items) => J::Array(items.iter().map(yaml_to_json).collect()),
        NodeKind::Map(entries) => J::Object(
            entries
                .iter()
                .map(|(k, v)| {
                    (
                        yaml_string(k).unwrap_or_else(|_| format!("{:?}", k.kind)),
                        yaml_to_json(v),
                    )
                })
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(text: &str) -> Node {
        Node {
            line: 1,
            kind: NodeKind::Scalar {
                text: text.to_owned(),
                plain: true,
            },
        }
    }

    fn quoted(text: &str) -> Node {
        Node {
            line: 1,
            kind: NodeKind::Scalar {
                text: text.to_owned(),
                plain: false,
            },
        }
    }

    #[test]
    fn ints_use_automatic_base() {
        for (text, want) in [
            ("0600", 0o600),
            ("0x1F", 31),
            ("0X1f", 31),
            ("0o17", 15),
            ("0b101", 5),
            ("42", 42),
            ("-42", -42),
            ("+7", 7),
            ("0", 0),
            ("1_000", 1000),
            ("0x_1F", 31),
            ("-9223372036854775808", i64::MIN),
        ] {
            assert_eq!(parse_int(text), Some(want), "{text}");
        }
        for text in [
            "",
            "-",
            "08",
            "0x",
            "1__0",
            "_1",
            "1_",
            "abc",
            "1.0",
            "9223372036854775808",
            " 1",
        ] {
            assert_eq!(parse_int(text), None, "{text}");
        }
    }

    #[test]
    fn bools_accept_go_and_cmdline_spellings() {
        for t in [
            "1", "t", "T", "Y", "true", "TRUE", "True", "yes", "Yes", "YES",
        ] {
            assert_eq!(parse_bool(t), Some(true), "{t}");
        }
        for f in [
            "0", "f", "F", "N", "false", "FALSE", "False", "no", "No", "NO",
        ] {
            assert_eq!(parse_bool(f), Some(false), "{f}");
        }
        for bad in ["", "y", "n", "tRUE", "on", "off", "2"] {
            assert_eq!(parse_bool(bad), None, "{bad}");
        }
    }

    #[test]
    fn floats() {
        assert_eq!(parse_float("1.5"), Some(1.5));
        assert_eq!(parse_float("52"), Some(52.0));
        assert_eq!(parse_float("-1"), Some(-1.0));
        assert_eq!(parse_float(".5"), Some(0.5));
        assert_eq!(parse_float("1e3"), Some(1000.0));
        assert_eq!(parse_float("inf"), Some(f64::INFINITY));
        assert_eq!(parse_float("abc"), None);
        assert_eq!(parse_float("1.5x"), None);
        assert_eq!(parse_float("--1"), None);
        assert_eq!(parse_float(""), None);
    }

    #[test]
    fn durations_follow_go() {
        let d = |s| parse_duration(s).expect(s);
        assert_eq!(d("30s"), Duration::from_secs(30));
        assert_eq!(d("1m30s"), Duration::from_secs(90));
        assert_eq!(d("10h30m"), Duration::from_secs(10 * 3600 + 1800));
        assert_eq!(d("1.5h"), Duration::from_secs(5400));
        assert_eq!(d("300ms"), Duration::from_millis(300));
        assert_eq!(d("2us"), Duration::from_micros(2));
        assert_eq!(d("2\u{b5}s"), Duration::from_micros(2));
        assert_eq!(d("0"), Duration::ZERO);
        assert_eq!(d(".5s"), Duration::from_millis(500));
        for bad in [
            "",
            "30",
            "s",
            "1x",
            "-5s",
            "1.s.",
            "9999999999999h",
            "1h-1m",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn yaml_strings_resolve_like_go() {
        assert_eq!(yaml_string(&plain("0600")).expect("ok"), "384");
        assert_eq!(yaml_string(&quoted("0600")).expect("ok"), "0600");
        assert_eq!(yaml_string(&plain("11113")).expect("ok"), "11113");
        assert_eq!(yaml_string(&plain("1.5")).expect("ok"), "1.500000");
        assert_eq!(yaml_string(&plain("True")).expect("ok"), "true");
        assert_eq!(yaml_string(&plain("yes")).expect("ok"), "yes");
        assert_eq!(yaml_string(&plain("host:2222")).expect("ok"), "host:2222");
    }

    #[test]
    fn yaml_typed_fields_parse_raw_text() {
        assert_eq!(from_yaml(Kind::Int, &plain("0600")), Ok(Value::Int(384)));
        assert_eq!(from_yaml(Kind::Int, &quoted("0x10")), Ok(Value::Int(16)));
        assert_eq!(
            from_yaml(Kind::Float, &plain("0.1234567")),
            Ok(Value::Float(0.1234567))
        );
        assert_eq!(from_yaml(Kind::Bool, &plain("Y")), Ok(Value::Bool(true)));
        assert!(from_yaml(Kind::Int, &plain("abc")).is_err());
    }

    #[test]
    fn command_line_lists_and_maps() {
        assert_eq!(
            from_text(Kind::StrList, r#"["a","b"]"#),
            Ok(Value::List(vec!["a".into(), "b".into()]))
        );
        assert_eq!(
            from_text(Kind::StrList, "a"),
            Ok(Value::List(vec!["a".into()]))
        );
        assert_eq!(from_text(Kind::StrList, "[]"), Ok(Value::List(vec![])));
        assert!(from_text(Kind::StrList, "[1").is_err());
        assert!(from_text(Kind::StrList, "[{}]").is_err());
        let Ok(Value::Map(m)) = from_text(Kind::FloatMap, r#"{"a": 1.3, "b": 5}"#) else {
            panic!("map")
        };
        assert_eq!(m.get("a"), Some(&1.3));
        assert_eq!(m.get("b"), Some(&5.0));
        assert!(from_text(Kind::FloatMap, r#"{"a": "x"}"#).is_err());
        assert!(from_text(Kind::FloatMap, "[1]").is_err());
    }

    #[test]
    fn rule_lists_reject_non_maps_and_non_strings() {
        // Only shape checks here: Rule::parse itself belongs to receptor-mesh.
        assert!(from_text(Kind::RuleList, r#"["accept"]"#).is_err());
        assert!(from_text(Kind::RuleList, r#"[{"action": 1}]"#).is_err());
        assert!(from_text(Kind::RuleList, r#"{"action": "drop"}"#).is_err());
        assert_eq!(
            from_text(Kind::RuleList, r#"[{"action": "drop"}]"#),
            Ok(Value::Rules(vec![BTreeMap::from([(
                "action".to_owned(),
                "drop".to_owned()
            )])]))
        );
        let seq = |items| Node {
            line: 1,
            kind: NodeKind::Seq(items),
        };
        let map = |k: &str, v: Node| Node {
            line: 1,
            kind: NodeKind::Map(vec![(plain(k), v)]),
        };
        assert!(from_yaml(Kind::RuleList, &seq(vec![plain("drop")])).is_err());
        assert!(from_yaml(Kind::RuleList, &seq(vec![map("action", plain("1"))])).is_err());
        assert!(from_yaml(Kind::RuleList, &seq(vec![map("action", plain("true"))])).is_err());
        assert!(from_yaml(Kind::RuleList, &plain("drop")).is_err());
        assert!(from_yaml(Kind::RuleList, &seq(vec![map("action", quoted("1"))])).is_ok());
    }
}
