//! JSON as Go's `encoding/json` writes it: compact, with `<`, `>`, `&`, U+2028 and U+2029
//! escaped. Control replies and work-unit status files are compared byte for byte with Go's, so
//! every JSON text we emit goes through here.

use serde::Serialize;

/// Serialises `value` compactly with Go's escaping.
pub(crate) fn to_go_json<T: Serialize>(value: &T) -> String {
    let text =
        serde_json::to_string(value).unwrap_or_else(|error| format!("{{\"Error\":\"{error}\"}}"));
    escape(&text)
}

/// A JSON string literal (with quotes) for `text`, escaped as Go does.
pub(crate) fn go_string(text: &str) -> String {
    to_go_json(&text)
}

/// Applies Go's extra escapes to serialised JSON. The characters concerned can only occur
/// inside JSON strings, so replacing them in the whole text is exact.
pub(crate) fn escape(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// Removes insignificant whitespace from a JSON text (one written by a foreign tool, say),
/// leaving strings untouched, so it renders as Go's compact encoder would.
pub(crate) fn compact(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in json.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_go() {
        assert_eq!(go_string("a<b>&c"), r#""a\u003cb\u003e\u0026c""#);
        assert_eq!(
            to_go_json(&serde_json::json!({"b": 1, "a": "x"})),
            r#"{"a":"x","b":1}"#
        );
    }

    #[test]
    fn compacts_outside_strings_only() {
        assert_eq!(
            compact("{ \"Pid\" : 1,\n \"Params\": \"a  \\\" b\" }"),
            r#"{"Pid":1,"Params":"a  \" b"}"#
        );
    }
}
