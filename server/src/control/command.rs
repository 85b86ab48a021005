//! Parsing one control line into a command (pure; table-tested).
//!
//! A line starting with `{` is a JSON object whose `command` names the command; anything else
//! is `<command> <params>` split at the first space, the command lower-cased.

use serde_json::{Map, Value};

/// A parsed control command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    /// `status`, optionally limited to some top-level fields.
    Status {
        requested_fields: Option<Vec<String>>,
    },
    /// `ping <target>`.
    Ping { target: String },
    /// `traceroute <target>`.
    Traceroute { target: String },
}

/// The outcome of parsing a line: a command, or the `ERROR:` lines to answer with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Parsed {
    Command(Command),
    Errors(Vec<String>),
}

const UNKNOWN: &str = "Unknown command";

/// Parses one line (without its LF; CRs already removed).
pub(crate) fn parse(line: &str) -> Parsed {
    if line.starts_with('{') {
        return parse_json(line);
    }
    let (name, params) = line.split_once(' ').unwrap_or((line, ""));
    let result = match name.to_lowercase().as_str() {
        "status" if params.is_empty() => Ok(Command::Status {
            requested_fields: None,
        }),
        "status" => Err("status command does not take parameters".to_owned()),
        "ping" => target(params, "ping").map(|target| Command::Ping { target }),
        "traceroute" => target(params, "traceroute").map(|target| Command::Traceroute { target }),
        _ => Err(UNKNOWN.to_owned()),
    };
    match result {
        Ok(command) => Parsed::Command(command),
        Err(error) => Parsed::Errors(vec![error]),
    }
}

fn target(params: &str, verb: &str) -> Result<String, String> {
    if params.is_empty() {
        Err(format!("no {verb} target"))
    } else {
        Ok(params.to_owned())
    }
}

fn parse_json(line: &str) -> Parsed {
    let object: Map<String, Value> = match serde_json::from_str::<Value>(line) {
        Ok(Value::Object(object)) => object,
        Ok(_) => {
            return Parsed::Errors(vec![
                "json: cannot unmarshal into Go value of type map[string]interface {}".to_owned(),
                UNKNOWN.to_owned(),
            ]);
        }
        // Go reports the decode error and then, having no command name, "Unknown command".
        Err(error) => return Parsed::Errors(vec![go_json_error(&error, line), UNKNOWN.to_owned()]),
    };
    let name = match object.get("command") {
        None => {
            return Parsed::Errors(vec![
                "JSON did not contain a command".to_owned(),
                UNKNOWN.to_owned(),
            ]);
        }
        Some(Value::String(name)) => name.as_str(),
        Some(_) => {
            return Parsed::Errors(vec![
                "command must be a string".to_owned(),
                UNKNOWN.to_owned(),
            ]);
        }
    };
    let result = match name {
        "status" => {
            requested_fields(&object).map(|requested_fields| Command::Status { requested_fields })
        }
        "ping" => json_target(&object, "ping").map(|target| Command::Ping { target }),
        "traceroute" => {
            json_target(&object, "traceroute").map(|target| Command::Traceroute { target })
        }
        _ => Err(UNKNOWN.to_owned()),
    };
    match result {
        Ok(command) => Parsed::Command(command),
        Err(error) => Parsed::Errors(vec![error]),
    }
}

fn requested_fields(object: &Map<String, Value>) -> Result<Option<Vec<String>>, String> {
    match object.get("requested_fields") {
        None => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| "each element of requested_fields must be a string".to_owned())
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err("requested_fields must be a list of strings".to_owned()),
    }
}

fn json_target(object: &Map<String, Value>, verb: &str) -> Result<String, String> {
    match object.get("target") {
        None => Err(format!("no {verb} target")),
        Some(Value::String(target)) => Ok(target.clone()),
        Some(_) => Err(format!("{verb} target must be string")),
    }
}

/// Renders a JSON syntax error the way Go's `encoding/json` words it, since clients and
/// transcripts compare the text.
fn go_json_error(error: &serde_json::Error, line: &str) -> String {
    if error.is_eof() {
        return "unexpected end of JSON input".to_owned();
    }
    let offending = line
        .lines()
        .nth(error.line().saturating_sub(1))
        .and_then(|l| l.chars().nth(error.column().saturating_sub(1)))
        .unwrap_or(' ');
    let message = error.to_string();
    let context = if message.starts_with("key must be a string") {
        "looking for beginning of object key string"
    } else if message.starts_with("expected `:`") {
        "after object key"
    } else if message.starts_with("expected `,` or `}`") {
        "after object key:value pair"
    } else if message.starts_with("expected `,` or `]`") {
        "after array element"
    } else if message.starts_with("trailing characters") {
        "after top-level value"
    } else {
        "looking for beginning of value"
    };
    format!("invalid character {} {context}", go_quote_char(offending))
}

fn go_quote_char(c: char) -> String {
    match c {
        '\'' => r"'\''".to_owned(),
        '"' => r#"'"'"#.to_owned(),
        c if c.is_control() => format!("'\\x{:02x}'", u32::from(c)),
        c => format!("'{c}'"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(line: &str) -> Vec<String> {
        match parse(line) {
            Parsed::Errors(e) => e,
            Parsed::Command(c) => panic!("expected errors for {line:?}, got {c:?}"),
        }
    }

    #[test]
    fn plain_commands() {
        assert_eq!(
            parse("status"),
            Parsed::Command(Command::Status {
                requested_fields: None
            })
        );
        assert_eq!(
            parse("PING node-b"),
            Parsed::Command(Command::Ping {
                target: "node-b".into()
            })
        );
        assert_eq!(
            parse("traceroute a b"),
            Parsed::Command(Command::Traceroute {
                target: "a b".into()
            })
        );
        assert_eq!(
            errors("status extra"),
            ["status command does not take parameters"]
        );
        assert_eq!(errors("ping"), ["no ping target"]);
        assert_eq!(errors("version"), ["Unknown command"]);
        assert_eq!(errors("foo bar baz"), ["Unknown command"]);
    }

    #[test]
    fn json_commands_and_errors_match_go() {
        assert_eq!(
            parse(r#"{"command":"status","requested_fields":["NodeID","Version"]}"#),
            Parsed::Command(Command::Status {
                requested_fields: Some(vec!["NodeID".into(), "Version".into()])
            })
        );
        assert_eq!(
            parse(r#"{"command":"ping","target":"node-b"}"#),
            Parsed::Command(Command::Ping {
                target: "node-b".into()
            })
        );
        assert_eq!(errors(r#"{"command":"foo"}"#), ["Unknown command"]);
        assert_eq!(
            errors(r#"{"command": "status""#),
            ["unexpected end of JSON input", "Unknown command"]
        );
        assert_eq!(
            errors("{bad json}"),
            [
                "invalid character 'b' looking for beginning of object key string",
                "Unknown command"
            ]
        );
        assert_eq!(
            errors(r#"{"foo":"bar"}"#),
            ["JSON did not contain a command", "Unknown command"]
        );
        assert_eq!(
            errors(r#"{"command":5}"#),
            ["command must be a string", "Unknown command"]
        );
        assert_eq!(
            errors(r#"{"command":"status","requested_fields":[1]}"#),
            ["each element of requested_fields must be a string"]
        );
        assert_eq!(
            errors(r#"{"command":"ping","target":3}"#),
            ["ping target must be string"]
        );
    }
}
