//! Output formats of the Python receptorctl: `json.dumps(indent=4, sort_keys=True)`, the
//! `status` tables, and the Rust-only mesh graph.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::IsTerminal;

use receptor_client::{Status, WorkUnit};
use serde_json::{Map, Value, json};

/// Prints like Python's `json.dumps(value, indent=4, sort_keys=True)` (ASCII only, as
/// `ensure_ascii` does).
pub(crate) fn python_json(value: &Value) -> String {
    let mut out = String::new();
    write_json(&mut out, value, 0);
    out
}

fn write_json(out: &mut String, value: &Value, depth: usize) {
    let pad = |out: &mut String, depth: usize| {
        out.push('\n');
        out.push_str(&" ".repeat(4 * depth));
    };
    match value {
        Value::Object(map) if !map.is_empty() => {
            out.push('{');
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            for (i, key) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                pad(out, depth + 1);
                write_string(out, key);
                out.push_str(": ");
                if let Some(v) = map.get(*key) {
                    write_json(out, v, depth + 1);
                }
            }
            pad(out, depth);
            out.push('}');
        }
        Value::Array(items) if !items.is_empty() => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                pad(out, depth + 1);
                write_json(out, item, depth + 1);
            }
            pad(out, depth);
            out.push(']');
        }
        Value::Object(_) => out.push_str("{}"),
        Value::Array(_) => out.push_str("[]"),
        Value::String(s) => write_string(out, s),
        Value::Number(n) => out.push_str(&python_number(n)),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Null => out.push_str("null"),
    }
}

/// Python prints a JSON float with `repr`: `1.5`, `1.0`.
fn python_number(n: &serde_json::Number) -> String {
    match n.as_f64() {
        Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 1e16 => format!("{f:.1}"),
        _ => n.to_string(),
    }
}

fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A cost as Go marshals a float64 (`1`, not `1.0`) and so as Python reads it back.
pub(crate) fn go_float(f: f64) -> Value {
    if f.fract() == 0.0 && f.abs() < 1e15 {
        json!(f as i64)
    } else {
        json!(f)
    }
}

/// Text of a number as Python prints the parsed JSON value.
pub(crate) fn go_float_text(f: f64) -> String {
    match go_float(f) {
        Value::Number(n) => python_number(&n),
        other => other.to_string(),
    }
}

/// The classic `status` JSON object.
pub(crate) fn status_json(status: &Status) -> Value {
    let ads: Vec<Value> = status
        .advertisements
        .iter()
        .map(|ad| {
            json!({
                "NodeID": ad.node_id,
                "Service": ad.service,
                "Time": ad.time,
                "ConnType": ad.conn_type.number(),
                "Tags": if ad.tags.is_empty() { Value::Null } else { json!(ad.tags) },
                "WorkCommands": if ad.work_commands.is_empty() {
                    Value::Null
                } else {
                    Value::Array(ad.work_commands.iter().map(|c| json!({
                        "WorkType": c.work_type,
                        "Secure": c.secure,
                    })).collect())
                },
            })
        })
        .collect();
    let connections: Vec<Value> = status
        .connections
        .iter()
        .map(|c| json!({"NodeID": c.node_id, "Cost": go_float(c.cost)}))
        .collect();
    let costs: Map<String, Value> = status
        .known_costs
        .iter()
        .map(|(node, row)| {
            let row: Map<String, Value> = row
                .iter()
                .map(|(peer, cost)| (peer.clone(), go_float(*cost)))
                .collect();
            (node.clone(), Value::Object(row))
        })
        .collect();
    json!({
        "Advertisements": ads,
        "Connections": connections,
        "KnownConnectionCosts": costs,
        "NodeID": status.node_id,
        "RoutingTable": status.routes,
        "SystemCPUCount": status.cpu_count,
        "SystemMemoryMiB": status.memory_mib,
        "Version": status.version,
    })
}

/// The classic `work status` object of one unit.
pub(crate) fn unit_json(unit: &WorkUnit) -> Value {
    let extra = unit
        .extra_data_json
        .as_deref()
        .and_then(|raw| serde_json::from_str(raw).ok())
        .unwrap_or(Value::Null);
    json!({
        "Detail": unit.detail,
        "ExtraData": extra,
        "State": unit.state_number,
        "StateName": unit.state_name(),
        "StdoutSize": unit.stdout_size,
        "WorkType": unit.work_type,
    })
}

/// The human `status` layout of the Python receptorctl, line for line.
pub(crate) fn status_text(status: &Status) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Node ID: {}", status.node_id);
    let _ = writeln!(out, "Version: {}", status.version);
    let _ = writeln!(out, "System CPU Count: {}", status.cpu_count);
    let _ = writeln!(out, "System Memory MiB: {}", status.memory_mib);
    let width = status
        .connections
        .iter()
        .map(|c| c.node_id.chars().count())
        .chain(status.known_costs.keys().map(|n| n.chars().count()))
        .fold(12, usize::max);
    if !status.connections.is_empty() {
        let _ = writeln!(out, "\n{:<width$} Cost", "Connection");
        for c in &status.connections {
            let _ = writeln!(out, "{:<width$} {}", c.node_id, go_float_text(c.cost));
        }
    }
    if !status.known_costs.is_empty() {
        let _ = writeln!(out, "\n{:<width$} Known Connections", "Known Node");
        for (node, row) in &status.known_costs {
            let _ = write!(out, "{node:<width$} ");
            for (peer, cost) in row {
                let _ = write!(out, "{peer}: {} ", go_float_text(*cost));
            }
            out.push('\n');
        }
    }
    if !status.routes.is_empty() {
        let _ = writeln!(out, "\n{:<width$} Via", "Route");
        for (node, via) in &status.routes {
            let _ = writeln!(out, "{node:<width$} {via}");
        }
    }
    let ads = &status.advertisements;
    if !ads.is_empty() {
        let _ = writeln!(
            out,
            "\n{:<width$} Service   Type       Last Seen             Tags",
            "Node"
        );
        for ad in ads {
            let tags = if ad.tags.is_empty() {
                "-".to_owned()
            } else {
                python_dict_repr(&ad.tags)
            };
            let _ = writeln!(
                out,
                "{:<width$} {:<9} {:<10} {:<21} {:<16}",
                ad.node_id,
                ad.service,
                ad.conn_type.name(),
                last_seen(&ad.time),
                tags
            );
        }
        for (header, secure) in [("Work Types", false), ("Secure Work Types", true)] {
            let mut printed_header = false;
            let mut seen = BTreeSet::new();
            for ad in ads {
                let types: Vec<&str> = ad
                    .work_commands
                    .iter()
                    .filter(|c| c.secure == secure)
                    .map(|c| c.work_type.as_str())
                    .collect();
                if types.is_empty() || !seen.insert(ad.node_id.as_str()) {
                    continue;
                }
                if !printed_header {
                    let _ = writeln!(out, "\n{:<width$} {header}", "Node");
                    printed_header = true;
                }
                let _ = writeln!(out, "{:<width$} {}", ad.node_id, types.join(", "));
            }
        }
    }
    out
}

/// `2024-05-06T07:08:09.123+02:00` -> `2024-05-06 07:08:09` (the time in its own offset,
/// as dateutil and strftime print it).
fn last_seen(time: &str) -> String {
    match (time.get(..10), time.get(11..19)) {
        (Some(date), Some(clock)) if time.as_bytes().get(10) == Some(&b'T') => {
            format!("{date} {clock}")
        }
        _ => time.to_owned(),
    }
}

/// Python's `str(dict)` of string pairs: `{'a': 'b'}`.
fn python_dict_repr(map: &BTreeMap<String, String>) -> String {
    let items: Vec<String> = map
        .iter()
        .map(|(k, v)| format!("{}: {}", python_str_repr(k), python_str_repr(v)))
        .collect();
    format!("{{{}}}", items.join(", "))
}

fn python_str_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::from(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// The link-state graph as Graphviz DOT (undirected, the local node in bold).
pub(crate) fn graph_dot(status: &Status) -> String {
    let mut out = String::from("graph mesh {\n");
    for node in graph_nodes(status) {
        let style = if node == status.node_id {
            " [style=bold]"
        } else {
            ""
        };
        let _ = writeln!(out, "  {}{style};", dot_id(node));
    }
    for (a, b, cost) in graph_edges(status) {
        let _ = writeln!(
            out,
            "  {} -- {} [label={}];",
            dot_id(a),
            dot_id(b),
            dot_id(&go_float_text(cost))
        );
    }
    out.push_str("}\n");
    out
}

/// The link-state graph as text: each node and its neighbours.
pub(crate) fn graph_text(status: &Status) -> String {
    let mut out = String::new();
    for node in graph_nodes(status) {
        let mark = if node == status.node_id {
            " (this node)"
        } else {
            ""
        };
        let via = status
            .routes
            .get(node)
            .map(|v| format!(" via {v}"))
            .unwrap_or_default();
        let _ = writeln!(out, "{node}{mark}{via}");
        if let Some(row) = status.known_costs.get(node) {
            for (peer, cost) in row {
                let _ = writeln!(out, "  -- {peer} (cost {})", go_float_text(*cost));
            }
        }
    }
    out
}

/// The graph as JSON: nodes and undirected edges.
pub(crate) fn graph_json(status: &Status) -> Value {
    let edges: Vec<Value> = graph_edges(status)
        .into_iter()
        .map(|(a, b, cost)| json!({"From": a, "To": b, "Cost": go_float(cost)}))
        .collect();
    json!({"NodeID": status.node_id, "Nodes": graph_nodes(status), "Edges": edges})
}

fn graph_nodes(status: &Status) -> BTreeSet<&str> {
    let mut nodes: BTreeSet<&str> = BTreeSet::new();
    nodes.insert(&status.node_id);
    for (node, row) in &status.known_costs {
        nodes.insert(node);
        nodes.extend(row.keys().map(String::as_str));
    }
    nodes
}

fn graph_edges(status: &Status) -> Vec<(&str, &str, f64)> {
    let mut edges: BTreeMap<(&str, &str), f64> = BTreeMap::new();
    for (node, row) in &status.known_costs {
        for (peer, cost) in row {
            let key = if node.as_str() <= peer.as_str() {
                (node.as_str(), peer.as_str())
            } else {
                (peer.as_str(), node.as_str())
            };
            // Both ends report the link; keep the larger cost, as routing does.
            let entry = edges.entry(key).or_insert(*cost);
            *entry = entry.max(*cost);
        }
    }
    edges.into_iter().map(|((a, b), c)| (a, b, c)).collect()
}

fn dot_id(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// `ERROR: ...` on stderr, red on a terminal (click strips the colour otherwise).
pub(crate) fn print_error(message: &str) {
    print_styled("ERROR: ", message, "31");
}

/// `Warning: ...` on stderr, magenta on a terminal.
pub(crate) fn print_warning(message: &str) {
    print_styled("Warning: ", message, "35");
}

fn print_styled(prefix: &str, message: &str, colour: &str) {
    if std::io::stderr().is_terminal() {
        eprintln!("\x1b[{colour}m{prefix}{message}\x1b[0m");
    } else {
        eprintln!("{prefix}{message}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use receptor_client::{Advertisement, ConnType, Connection, WorkCommand};

    fn sample() -> Status {
        Status {
            node_id: "node1".into(),
            version: "0.1.0".into(),
            cpu_count: 2,
            memory_mib: 1024,
            connections: vec![Connection {
                node_id: "node2".into(),
                cost: 1.0,
            }],
            routes: [("node2".to_owned(), "node2".to_owned())].into(),
            advertisements: vec![Advertisement {
                node_id: "node1".into(),
                service: "control".into(),
                time: "2025-01-02T03:04:05.678901234+01:00".into(),
                conn_type: ConnType::StreamTls,
                tags: [("k".to_owned(), "it's".to_owned())].into(),
                work_commands: vec![
                    WorkCommand {
                        work_type: "cat".into(),
                        secure: false,
                    },
                    WorkCommand {
                        work_type: "sec".into(),
                        secure: true,
                    },
                ],
            }],
            known_costs: [
                ("node1".to_owned(), [("node2".to_owned(), 1.0)].into()),
                ("node2".to_owned(), [("node1".to_owned(), 1.5)].into()),
            ]
            .into(),
        }
    }

    #[test]
    fn status_text_matches_python_layout() {
        let want = "Node ID: node1\nVersion: 0.1.0\nSystem CPU Count: 2\nSystem Memory MiB: 1024\n\
\nConnection   Cost\nnode2        1\n\
\nKnown Node   Known Connections\nnode1        node2: 1 \nnode2        node1: 1.5 \n\
\nRoute        Via\nnode2        node2\n\
\nNode         Service   Type       Last Seen             Tags\n\
node1        control   StreamTLS  2025-01-02 03:04:05   {'k': \"it's\"}   \n\
\nNode         Work Types\nnode1        cat\n\
\nNode         Secure Work Types\nnode1        sec\n";
        assert_eq!(status_text(&sample()), want);
    }

    #[test]
    fn json_prints_like_python_dumps() {
        let v = json!({"b": [1, 1.5, 2.0], "a": {}, "c": "é\"", "d": [], "e": null});
        assert_eq!(
            python_json(&v),
            "{\n    \"a\": {},\n    \"b\": [\n        1,\n        1.5,\n        2.0\n    ],\n    \"c\": \"\\u00e9\\\"\",\n    \"d\": [],\n    \"e\": null\n}"
        );
        let status = status_json(&sample());
        assert_eq!(status["Connections"][0]["Cost"], json!(1));
        assert_eq!(status["KnownConnectionCosts"]["node2"]["node1"], json!(1.5));
        assert_eq!(status["Advertisements"][0]["ConnType"], json!(2));
    }

    #[test]
    fn graph_formats() {
        let s = sample();
        assert_eq!(
            graph_dot(&s),
            "graph mesh {\n  \"node1\" [style=bold];\n  \"node2\";\n  \"node1\" -- \"node2\" [label=\"1.5\"];\n}\n"
        );
        assert_eq!(
            graph_text(&s),
            "node1 (this node)\n  -- node2 (cost 1)\nnode2 via node2\n  -- node1 (cost 1.5)\n"
        );
        assert_eq!(graph_json(&s)["Edges"][0]["Cost"], json!(1.5));
    }
}
