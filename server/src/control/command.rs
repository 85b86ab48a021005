//! Parsing one control line into a command (pure; table-tested).
//!
//! A line starting with `{` is a JSON object whose `command` names the command; anything else
//! is `<command> <params>` split at the first space, the command lower-cased.

use serde_json::{Map, Value};

use crate::work::SubmitRequest;

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
    /// `work <subcommand> ...`.
    Work(WorkCommand),
    /// `reload` (any parameter text is ignored, as in Go).
    Reload,
    /// `grpc` (Rust only): the rest of the connection speaks gRPC (HTTP/2) after the reply
    /// `grpc ok`.
    Grpc,
    /// `connect <node> <service> [<tlsclient>]`: bridge the session to a mesh stream.
    Connect {
        node: String,
        service: String,
        /// A `tls-client` name; empty means the insecure mode.
        tls: String,
    },
}

/// A `work` subcommand (spec §1.3.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WorkCommand {
    /// `work list [<unitid>]`.
    List { unit_id: Option<String> },
    /// `work status <unitid>` (a JSON `signature` is accepted and ignored, as in Go).
    Status { unit_id: String },
    /// `work watch <unitid>`: a Rust extension (Go answers `ERROR: bad command`, which is
    /// how a submitting node tells the two apart): the status line now and after every
    /// change, until the unit is released. Unsigned, like `status`.
    Watch { unit_id: String },
    /// `work submit <node> <worktype> [<params>...]`; the payload follows.
    Submit(SubmitRequest),
    /// `work results <unitid> [<startpos>]`.
    Results {
        unit_id: String,
        start_pos: i64,
        signature: String,
    },
    /// `work cancel <unitid>`.
    Cancel { unit_id: String, signature: String },
    /// `work release <unitid>` or `work force-release <unitid>`.
    Release {
        unit_id: String,
        signature: String,
        force: bool,
    },
}

/// Keys of a JSON submit that are not work parameters.
const SUBMIT_RESERVED: &[&str] = &[
    "command",
    "subcommand",
    "node",
    "worktype",
    "tlsclient",
    "ttl",
    "signwork",
    "signature",
    // Rust extension: the submitting node's trace context (telemetry), not a parameter.
    "traceparent",
];

/// The outcome of parsing a line: a command, or the `ERROR:` lines to answer with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Parsed {
    Command(Command),
    Errors(Vec<String>),
}

impl Parsed {
    /// The command's name for spans (`control.command`) and the `command` label of
    /// `receptor_control_requests_total`: `status`, `work_submit`, ...; `invalid` for lines
    /// that did not parse. A fixed set whatever a client sends, named like the gRPC methods'
    /// labels so both front-ends count alike.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Parsed::Errors(_) => "invalid",
            Parsed::Command(command) => match command {
                Command::Status { .. } => "status",
                Command::Ping { .. } => "ping",
                Command::Traceroute { .. } => "traceroute",
                Command::Reload => "reload",
                Command::Grpc => "grpc",
                Command::Connect { .. } => "connect",
                Command::Work(work) => match work {
                    WorkCommand::List { .. } => "work_list",
                    WorkCommand::Status { .. } => "work_status",
                    WorkCommand::Watch { .. } => "work_watch",
                    WorkCommand::Submit(_) => "work_submit",
                    WorkCommand::Results { .. } => "work_results",
                    WorkCommand::Cancel { .. } => "work_cancel",
                    WorkCommand::Release { force: false, .. } => "work_release",
                    WorkCommand::Release { force: true, .. } => "work_force_release",
                },
            },
        }
    }
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
        "work" => work_plain(params).map(Command::Work),
        "connect" => connect_plain(params),
        "reload" => Ok(Command::Reload),
        "grpc" if params.is_empty() => Ok(Command::Grpc),
        "grpc" => Err("grpc command does not take parameters".to_owned()),
        _ => Err(UNKNOWN.to_owned()),
    };
    match result {
        Ok(command) => Parsed::Command(command),
        Err(error) => Parsed::Errors(vec![error]),
    }
}

/// Plain-text `connect`: tokens split on single spaces; receptorctl always sends three, the
/// last possibly empty.
fn connect_plain(params: &str) -> Result<Command, String> {
    let tokens: Vec<&str> = if params.is_empty() {
        Vec::new()
    } else {
        params.split(' ').collect()
    };
    match tokens.as_slice() {
        [node, service] => Ok(Command::Connect {
            node: (*node).to_owned(),
            service: (*service).to_owned(),
            tls: String::new(),
        }),
        [node, service, tls] => Ok(Command::Connect {
            node: (*node).to_owned(),
            service: (*service).to_owned(),
            tls: (*tls).to_owned(),
        }),
        [] | [_] => Err("no connect target".to_owned()),
        _ => Err("too many parameters".to_owned()),
    }
}

fn connect_json(object: &Map<String, Value>) -> Result<Command, String> {
    let field = |key: &str, missing: &str, wrong: &str| match object.get(key) {
        None => Err(missing.to_owned()),
        Some(Value::String(value)) => Ok(value.clone()),
        Some(_) => Err(wrong.to_owned()),
    };
    let node = field(
        "node",
        "no connect target node",
        "connect target node must be string",
    )?;
    let service = field(
        "service",
        "no connect target service",
        "connect target service must be string",
    )?;
    let tls = match object.get("tls") {
        None => String::new(),
        Some(Value::String(tls)) => tls.clone(),
        Some(_) => return Err("connect tls name must be string".to_owned()),
    };
    Ok(Command::Connect { node, service, tls })
}

/// Plain-text `work`: tokens split on single spaces, as Go does (so empty tokens count).
fn work_plain(params: &str) -> Result<WorkCommand, String> {
    let tokens: Vec<&str> = params.split(' ').collect();
    let sub = tokens[0].to_lowercase();
    let unit = |i: usize| tokens[i].to_owned();
    match sub.as_str() {
        "submit" => {
            if tokens.len() < 3 {
                return Err("work submit requires a target node and work type".to_owned());
            }
            let mut request = SubmitRequest {
                node: unit(1),
                work_type: unit(2),
                ..SubmitRequest::default()
            };
            if tokens.len() > 3 {
                request
                    .params
                    .insert("params".to_owned(), tokens[3..].join(" "));
            }
            Ok(WorkCommand::Submit(request))
        }
        "list" => Ok(WorkCommand::List {
            unit_id: tokens.get(1).map(|t| (*t).to_owned()),
        }),
        "status" | "watch" | "cancel" | "release" | "force-release" => {
            if tokens.len() < 2 {
                return Err(format!("work {sub} requires a unit ID"));
            }
            if tokens.len() > 2 {
                return Err(format!(
                    "work {sub} does not take parameters after the unit ID"
                ));
            }
            Ok(unit_command(&sub, unit(1), String::new()))
        }
        "results" => {
            if tokens.len() < 2 {
                return Err("work results requires a unit ID".to_owned());
            }
            if tokens.len() > 3 {
                return Err(
                    "work results only takes a unit ID and optional start position".to_owned(),
                );
            }
            let start_pos = match tokens.get(2) {
                Some(text) => go_parse_int(text)
                    .map_err(|e| format!("error converting start position to integer: {e}"))?,
                None => 0,
            };
            Ok(WorkCommand::Results {
                unit_id: unit(1),
                start_pos,
                signature: String::new(),
            })
        }
        _ => Err("bad command".to_owned()),
    }
}

fn unit_command(sub: &str, unit_id: String, signature: String) -> WorkCommand {
    match sub {
        "status" => WorkCommand::Status { unit_id },
        "watch" => WorkCommand::Watch { unit_id },
        "cancel" => WorkCommand::Cancel { unit_id, signature },
        force => WorkCommand::Release {
            unit_id,
            signature,
            force: force == "force-release",
        },
    }
}

/// JSON `work`: Go's `strFromMap` / `intFromMap` rules and texts.
fn work_json(object: &Map<String, Value>) -> Result<WorkCommand, String> {
    let sub = str_field(object, "subcommand")?.to_lowercase();
    let optional = |name: &str| str_field(object, name).ok();
    match sub.as_str() {
        "submit" => {
            if let Some((key, _)) = object.iter().find(|(_, v)| !v.is_string()) {
                return Err(format!(
                    "submit parameters must all be strings and {key} is not"
                ));
            }
            let node = str_field(object, "node")?;
            let work_type = str_field(object, "worktype")?;
            let params = object
                .iter()
                .filter(|(k, _)| !SUBMIT_RESERVED.contains(&k.as_str()))
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect();
            Ok(WorkCommand::Submit(SubmitRequest {
                node,
                work_type,
                params,
                tls_client: optional("tlsclient").unwrap_or_default(),
                ttl: optional("ttl").unwrap_or_default(),
                sign_work: optional("signwork").as_deref() == Some("true"),
                signature: optional("signature").unwrap_or_default(),
                trace_parent: optional("traceparent"),
            }))
        }
        "status" | "watch" | "cancel" | "release" | "force-release" => {
            let unit_id = str_field(object, "unitid")?;
            Ok(unit_command(
                &sub,
                unit_id,
                optional("signature").unwrap_or_default(),
            ))
        }
        "list" => Ok(WorkCommand::List {
            unit_id: optional("unitid"),
        }),
        "results" => {
            let unit_id = str_field(object, "unitid")?;
            let start_pos = int_field(object, "startpos")?;
            Ok(WorkCommand::Results {
                unit_id,
                start_pos,
                signature: optional("signature").unwrap_or_default(),
            })
        }
        _ => Err("bad command".to_owned()),
    }
}

/// Go's `strFromMap`.
fn str_field(object: &Map<String, Value>, name: &str) -> Result<String, String> {
    match object.get(name) {
        None => Err(format!("field {name} missing")),
        Some(Value::String(value)) => Ok(value.clone()),
        Some(_) => Err(format!("field {name} must be a string")),
    }
}

/// Go's `intFromMap`: a JSON number (truncated); a string is refused even when numeric.
fn int_field(object: &Map<String, Value>, name: &str) -> Result<i64, String> {
    match object.get(name) {
        None => Err(format!("field {name} missing")),
        Some(Value::Number(n)) => Ok(n
            .as_i64()
            .unwrap_or_else(|| n.as_f64().map_or(0, |f| f as i64))),
        Some(Value::String(text)) => match go_parse_int(text) {
            Err(error) => Err(error),
            Ok(_) => Err(format!(
                "field {name} value {text} is not convertible to an int"
            )),
        },
        Some(other) => Err(format!(
            "field {name} value {} is not convertible to an int",
            go_fmt_s(other)
        )),
    }
}

/// Go's `strconv.ParseInt(text, 10, 64)`, with its error texts.
fn go_parse_int(text: &str) -> Result<i64, String> {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "strconv.ParseInt: parsing {}: invalid syntax",
            go_quote(text)
        ));
    }
    text.parse::<i64>().map_err(|_| {
        format!(
            "strconv.ParseInt: parsing {}: value out of range",
            go_quote(text)
        )
    })
}

/// Go's `strconv.Quote`, for the texts that end up in error messages.
fn go_quote(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Go's `fmt.Sprintf("%s", v)` of a decoded JSON value that is not a string or number.
fn go_fmt_s(value: &Value) -> String {
    match value {
        Value::Null => "%!s(<nil>)".to_owned(),
        Value::Bool(b) => format!("%!s(bool={b})"),
        Value::Number(n) => format!("%!s(float64={n})"),
        Value::String(s) => s.clone(),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(go_fmt_s).collect::<Vec<_>>().join(" ")
        ),
        Value::Object(map) => format!(
            "map[{}]",
            map.iter()
                .map(|(k, v)| format!("{k}:{}", go_fmt_s(v)))
                .collect::<Vec<_>>()
                .join(" ")
        ),
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
        "work" => work_json(&object).map(Command::Work),
        "connect" => connect_json(&object),
        "reload" => Ok(Command::Reload),
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
    fn connect_commands() {
        let connect = |node: &str, service: &str, tls: &str| {
            Parsed::Command(Command::Connect {
                node: node.into(),
                service: service.into(),
                tls: tls.into(),
            })
        };
        assert_eq!(
            parse("connect node-b control "),
            connect("node-b", "control", "")
        );
        assert_eq!(
            parse("connect node-b control"),
            connect("node-b", "control", "")
        );
        assert_eq!(
            parse("connect node-b control tlsc"),
            connect("node-b", "control", "tlsc")
        );
        assert_eq!(errors("connect node-b"), ["no connect target"]);
        assert_eq!(errors("connect"), ["no connect target"]);
        assert_eq!(errors("connect a b c d"), ["too many parameters"]);
        assert_eq!(parse("reload "), Parsed::Command(Command::Reload));
        assert_eq!(
            parse(r#"{"command":"reload"}"#),
            Parsed::Command(Command::Reload)
        );
        assert_eq!(
            parse(r#"{"command":"connect","node":"x","service":"control"}"#),
            connect("x", "control", "")
        );
        assert_eq!(
            errors(r#"{"command":"connect","service":"control"}"#),
            ["no connect target node"]
        );
        assert_eq!(
            errors(r#"{"command":"connect","node":"x","service":1}"#),
            ["connect target service must be string"]
        );
        assert_eq!(
            errors(r#"{"command":"connect","node":"x","service":"s","tls":2}"#),
            ["connect tls name must be string"]
        );
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

    fn work(line: &str) -> WorkCommand {
        match parse(line) {
            Parsed::Command(Command::Work(w)) => w,
            other => panic!("expected a work command for {line:?}, got {other:?}"),
        }
    }

    fn submit(node: &str, work_type: &str, params: &[(&str, &str)]) -> WorkCommand {
        WorkCommand::Submit(SubmitRequest {
            node: node.into(),
            work_type: work_type.into(),
            params: params
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..SubmitRequest::default()
        })
    }

    #[test]
    fn work_plain_text_subcommands() {
        let cases: Vec<(&str, WorkCommand)> = vec![
            ("work list", WorkCommand::List { unit_id: None }),
            (
                "work list gYqB5Vru",
                WorkCommand::List {
                    unit_id: Some("gYqB5Vru".into()),
                },
            ),
            (
                "work list a extra ignored",
                WorkCommand::List {
                    unit_id: Some("a".into()),
                },
            ),
            ("WORK LIST", WorkCommand::List { unit_id: None }),
            (
                "work status xk07MWEr",
                WorkCommand::Status {
                    unit_id: "xk07MWEr".into(),
                },
            ),
            (
                "work watch xk07MWEr",
                WorkCommand::Watch {
                    unit_id: "xk07MWEr".into(),
                },
            ),
            (
                "work cancel u1",
                WorkCommand::Cancel {
                    unit_id: "u1".into(),
                    signature: String::new(),
                },
            ),
            (
                "work release u1",
                WorkCommand::Release {
                    unit_id: "u1".into(),
                    signature: String::new(),
                    force: false,
                },
            ),
            (
                "work force-release u1",
                WorkCommand::Release {
                    unit_id: "u1".into(),
                    signature: String::new(),
                    force: true,
                },
            ),
            (
                "work results u1",
                WorkCommand::Results {
                    unit_id: "u1".into(),
                    start_pos: 0,
                    signature: String::new(),
                },
            ),
            (
                "work results u1 -5",
                WorkCommand::Results {
                    unit_id: "u1".into(),
                    start_pos: -5,
                    signature: String::new(),
                },
            ),
            ("work submit node-a cat", submit("node-a", "cat", &[])),
            (
                "work submit localhost echo -c  'a b'",
                submit("localhost", "echo", &[("params", "-c  'a b'")]),
            ),
        ];
        for (line, want) in cases {
            assert_eq!(work(line), want, "{line}");
        }
    }

    #[test]
    fn work_plain_text_errors_match_go() {
        let cases = [
            ("work", "bad command"),
            ("work bogus", "bad command"),
            ("work status", "work status requires a unit ID"),
            ("work cancel", "work cancel requires a unit ID"),
            ("work release", "work release requires a unit ID"),
            (
                "work force-release",
                "work force-release requires a unit ID",
            ),
            (
                "work status a b",
                "work status does not take parameters after the unit ID",
            ),
            ("work results", "work results requires a unit ID"),
            (
                "work results a 1 2",
                "work results only takes a unit ID and optional start position",
            ),
            (
                "work results NoSuchU1 x",
                "error converting start position to integer: strconv.ParseInt: parsing \"x\": invalid syntax",
            ),
            (
                "work results a 99999999999999999999",
                "error converting start position to integer: strconv.ParseInt: parsing \"99999999999999999999\": value out of range",
            ),
            (
                "work submit node-a",
                "work submit requires a target node and work type",
            ),
            (
                "work submit",
                "work submit requires a target node and work type",
            ),
        ];
        for (line, want) in cases {
            assert_eq!(errors(line), [want], "{line}");
        }
    }

    #[test]
    fn work_json_subcommands() {
        assert_eq!(
            work(
                r#"{"command": "work", "subcommand": "submit", "node": "localhost", "worktype": "cat"}"#
            ),
            submit("localhost", "cat", &[])
        );
        assert_eq!(
            work(
                r#"{"command":"work","subcommand":"Submit","node":"n","worktype":"t","params":"-x","secret_a":"s","tlsclient":"c","ttl":"1m","signwork":"true","signature":"sig","traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}"#
            ),
            WorkCommand::Submit(SubmitRequest {
                node: "n".into(),
                work_type: "t".into(),
                params: [
                    ("params".to_owned(), "-x".to_owned()),
                    ("secret_a".to_owned(), "s".to_owned())
                ]
                .into(),
                tls_client: "c".into(),
                ttl: "1m".into(),
                sign_work: true,
                signature: "sig".into(),
                // Reserved: the trace context, never a work parameter.
                trace_parent: Some(
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()
                ),
            })
        );
        let maybe = work(
            r#"{"command":"work","subcommand":"submit","node":"n","worktype":"t","signwork":"yes"}"#,
        );
        assert_eq!(maybe, submit("n", "t", &[]));
        assert_eq!(
            work(r#"{"command":"work","subcommand":"list"}"#),
            WorkCommand::List { unit_id: None }
        );
        assert_eq!(
            work(r#"{"command":"work","subcommand":"list","unitid":5}"#),
            WorkCommand::List { unit_id: None }
        );
        assert_eq!(
            work(r#"{"command":"work","subcommand":"status","unitid":"gYqB5Vru","signature":"x"}"#),
            WorkCommand::Status {
                unit_id: "gYqB5Vru".into()
            }
        );
        assert_eq!(
            work(
                r#"{"command":"work","subcommand":"results","unitid":"u","startpos":12.9,"signature":"s"}"#
            ),
            WorkCommand::Results {
                unit_id: "u".into(),
                start_pos: 12,
                signature: "s".into()
            }
        );
        assert_eq!(
            work(r#"{"command":"work","subcommand":"force-release","unitid":"u","signature":7}"#),
            WorkCommand::Release {
                unit_id: "u".into(),
                signature: String::new(),
                force: true
            }
        );
    }

    #[test]
    fn work_json_errors_match_go() {
        let cases = [
            (r#"{"command":"work"}"#, "field subcommand missing"),
            (
                r#"{"command":"work","subcommand":1}"#,
                "field subcommand must be a string",
            ),
            (r#"{"command":"work","subcommand":"nope"}"#, "bad command"),
            (
                r#"{"command":"work","subcommand":"status"}"#,
                "field unitid missing",
            ),
            (
                r#"{"command":"work","subcommand":"cancel","unitid":3}"#,
                "field unitid must be a string",
            ),
            (
                r#"{"command":"work","subcommand":"submit","worktype":"t"}"#,
                "field node missing",
            ),
            (
                r#"{"command":"work","subcommand":"submit","node":"n"}"#,
                "field worktype missing",
            ),
            (
                r#"{"command":"work","subcommand":"submit","node":"n","worktype":"t","signwork":true}"#,
                "submit parameters must all be strings and signwork is not",
            ),
            (
                r#"{"command":"work","subcommand":"results","unitid":"u"}"#,
                "field startpos missing",
            ),
            (
                r#"{"command":"work","subcommand":"results","unitid":"u","startpos":"5"}"#,
                "field startpos value 5 is not convertible to an int",
            ),
            (
                r#"{"command":"work","subcommand":"results","unitid":"u","startpos":"x"}"#,
                "strconv.ParseInt: parsing \"x\": invalid syntax",
            ),
            (
                r#"{"command":"work","subcommand":"results","unitid":"u","startpos":true}"#,
                "field startpos value %!s(bool=true) is not convertible to an int",
            ),
            (
                r#"{"command":"work","subcommand":"results","unitid":"u","startpos":null}"#,
                "field startpos value %!s(<nil>) is not convertible to an int",
            ),
        ];
        for (line, want) in cases {
            assert_eq!(errors(line), [want], "{line}");
        }
    }
}
