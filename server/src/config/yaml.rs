//! A small YAML document tree with line numbers, built from `saphyr-parser` events.
//!
//! Only what the configuration reader needs: scalars keep their raw text and whether they were
//! plain (unquoted), so the Go-compatible conversion rules (`0600` is octal, a quoted string
//! stays a string) are applied by [`super::value`], not by YAML 1.2 resolution. Aliases are
//! expanded, with a budget, so a "billion laughs" document fails instead of exhausting memory.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle};

use super::Problem;
use super::raw::{RawEntity, Source};
use super::schema;

/// Most nodes a document may expand to (aliases included).
const MAX_NODES: usize = 100_000;
/// Deepest nesting of sequences and mappings.
const MAX_DEPTH: usize = 64;

/// One YAML node and the (1-based) line it starts on.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub(crate) line: usize,
    pub(crate) kind: NodeKind,
}

/// The shape of a node.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum NodeKind {
    /// `~`, `null`, or nothing at all.
    Null,
    /// A scalar: its text, and whether it was written plain (unquoted, untagged, not a block).
    Scalar { text: String, plain: bool },
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in document order (duplicates are kept; the reader reports them).
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// Number of nodes in this subtree.
    fn size(&self) -> usize {
        match &self.kind {
            NodeKind::Null | NodeKind::Scalar { .. } => 1,
            NodeKind::Seq(items) => 1 + items.iter().map(Node::size).sum::<usize>(),
            NodeKind::Map(entries) => {
                1 + entries
                    .iter()
                    .map(|(k, v)| k.size() + v.size())
                    .sum::<usize>()
            }
        }
    }

    /// A short name of the node's type, for error messages.
    pub(crate) fn type_name(&self) -> &'static str {
        match self.kind {
            NodeKind::Null => "null",
            NodeKind::Scalar { .. } => "scalar",
            NodeKind::Seq(_) => "list",
            NodeKind::Map(_) => "mapping",
        }
    }
}

/// A YAML syntax error (or a document beyond the size limits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    pub(crate) line: usize,
    pub(crate) message: String,
}

/// A container being filled.
enum Frame {
    Seq {
        line: usize,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        line: usize,
        anchor: usize,
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
    },
}

/// Parses the first document of `text`. `Ok(None)` means the stream holds no document.
pub(crate) fn parse(text: &str) -> Result<Option<Node>, SyntaxError> {
    let mut parser = Parser::new_from_str(text);
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: HashMap<usize, Node> = HashMap::new();
    let mut nodes = 0usize;

    loop {
        let (event, span) = match parser.next_event() {
            None => return Ok(None),
            Some(Ok(ev)) => ev,
            Some(Err(e)) => {
                return Err(SyntaxError {
                    line: e.marker().line().max(1),
                    message: e.info().to_owned(),
                });
            }
        };
        let line = span.start.line().max(1);
        let too_big = |line| SyntaxError {
            line,
            message: format!("document too large (more than {MAX_NODES} nodes)"),
        };
        let complete: Option<(Node, usize)> = match event {
            Event::StreamEnd => return Ok(None),
            Event::Nothing | Event::StreamStart | Event::DocumentStart(_) | Event::DocumentEnd => {
                None
            }
            Event::Alias(id) => match anchors.get(&id) {
                Some(node) => {
                    let mut node = node.clone();
                    nodes += node.size();
                    if nodes > MAX_NODES {
                        return Err(too_big(line));
                    }
                    node.line = line;
                    Some((node, 0))
                }
                None => {
                    return Err(SyntaxError {
                        line,
                        message: "unknown anchor".to_owned(),
                    });
                }
            },
            Event::Scalar(text, style, anchor, tag) => {
                nodes += 1;
                if nodes > MAX_NODES {
                    return Err(too_big(line));
                }
                let plain = style == ScalarStyle::Plain && tag.is_none();
                let kind = if plain && matches!(&*text, "" | "~" | "null" | "Null" | "NULL") {
                    NodeKind::Null
                } else {
                    NodeKind::Scalar {
                        text: text.into_owned(),
                        plain,
                    }
                };
                Some((Node { line, kind }, anchor))
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                nodes += 1;
                if nodes > MAX_NODES {
                    return Err(too_big(line));
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(SyntaxError {
                        line,
                        message: format!("nesting deeper than {MAX_DEPTH} levels"),
                    });
                }
                if matches!(event, Event::SequenceStart(..)) {
                    stack.push(Frame::Seq {
                        line,
                        anchor,
                        items: Vec::new(),
                    });
                } else {
                    stack.push(Frame::Map {
                        line,
                        anchor,
                        entries: Vec::new(),
                        key: None,
                    });
                }
                None
            }
            Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                Some(Frame::Seq {
                    line,
                    anchor,
                    items,
                }) => Some((
                    Node {
                        line,
                        kind: NodeKind::Seq(items),
                    },
                    anchor,
                )),
                Some(Frame::Map {
                    line,
                    anchor,
                    entries,
                    key,
                }) => {
                    // A dangling key cannot happen with a well-formed event stream; keep it
                    // as a key with a null value rather than trusting that.
                    let mut entries = entries;
                    if let Some(k) = key {
                        let line = k.line;
                        entries.push((
                            k,
                            Node {
                                line,
                                kind: NodeKind::Null,
                            },
                        ));
                    }
                    // In block style the mapping "starts" where its first key does.
                    let line = entries.first().map_or(line, |(k, _)| k.line);
                    Some((
                        Node {
                            line,
                            kind: NodeKind::Map(entries),
                        },
                        anchor,
                    ))
                }
                None => {
                    return Err(SyntaxError {
                        line,
                        message: "unbalanced collection end".to_owned(),
                    });
                }
            },
        };

        let Some((node, anchor)) = complete else {
            continue;
        };
        if anchor != 0 {
            anchors.insert(anchor, node.clone());
        }
        match stack.last_mut() {
            None => return Ok(Some(node)),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                None => *key = Some(node),
                Some(k) => entries.push((k, node)),
            },
        }
    }
}

// === reading configuration items ===

/// One configuration item split into its entity name and value.
struct Item<'a> {
    name: &'a str,
    name_line: usize,
    /// `None` for a bare `- name` item.
    value: Option<&'a Node>,
}

/// The items of a configuration document (spec §3.2): a sequence whose items are a bare entity
/// name or a one-key mapping. Malformed items are reported and skipped.
fn items<'a>(root: &'a Node, file: &str, problems: &mut Vec<Problem>) -> Vec<Item<'a>> {
    let at = |line: usize| Some(format!("{file}:{line}"));
    let mut out = Vec::new();
    let list = match &root.kind {
        NodeKind::Seq(list) => list,
        NodeKind::Null => return out,
        NodeKind::Map(entries) => return v2_items(entries, file, problems),
        NodeKind::Scalar { .. } => {
            problems.push(Problem {
                location: at(root.line),
                entity: None,
                message: format!(
                    "config format invalid: expected a list of entities (or the version 2 mapping), got a {}",
                    root.type_name()
                ),
            });
            return out;
        }
    };
    for item in list {
        let (name_node, value) = match &item.kind {
            NodeKind::Scalar { .. } => (item, None),
            NodeKind::Map(entries) if entries.len() == 1 => (&entries[0].0, Some(&entries[0].1)),
            NodeKind::Map(entries) if entries.len() > 1 => {
                problems.push(Problem {
                    location: at(item.line),
                    entity: None,
                    message: "config format invalid: item has multiple names".to_owned(),
                });
                continue;
            }
            _ => {
                problems.push(Problem {
                    location: at(item.line),
                    entity: None,
                    message: format!(
                        "config format invalid: an item must be an entity name or a one-key mapping, got a {}",
                        item.type_name()
                    ),
                });
                continue;
            }
        };
        let NodeKind::Scalar { text: name, .. } = &name_node.kind else {
            problems.push(Problem {
                location: at(name_node.line),
                entity: None,
                message: format!(
                    "config format invalid: an entity name must be a string, got a {}",
                    name_node.type_name()
                ),
            });
            continue;
        };
        out.push(Item {
            name,
            name_line: name_node.line,
            value,
        });
    }
    out
}

/// The list keys of Go's version 2 layout and the entity each element is (spec §3.7).
const V2_LISTS: &[(&str, &str)] = &[
    ("control-services", "control-service"),
    ("tls-clients", "tls-client"),
    ("tls-servers", "tls-server"),
    ("work-commands", "work-command"),
    ("work-kubernetes", "work-kubernetes"),
    ("tcp-clients", "tcp-client"),
    ("tcp-servers", "tcp-server"),
    ("udp-clients", "udp-client"),
    ("udp-servers", "udp-server"),
    ("unix-socket-clients", "unix-socket-client"),
    ("unix-socket-servers", "unix-socket-server"),
    ("cert-makereqs", "cert-makereq"),
    ("cert-signreqs", "cert-signreq"),
    ("tcp-listeners", "tcp-listener"),
    ("udp-listeners", "udp-listener"),
    ("ws-listeners", "ws-listener"),
    ("tcp-peers", "tcp-peer"),
    ("udp-peers", "udp-peer"),
    ("ws-peers", "ws-peer"),
    ("iprouters", "ip-router"),
    // Ours, in the same style.
    ("grpc-services", "grpc-service"),
    ("command-services", "command-service"),
];

/// The items of Go's version 2 layout (the docs' `version: 2` files, Go's `--config-v2`): a
/// mapping whose list keys (`tcp-peers`, ...) hold one entity per element and whose other
/// keys (`node`, `log-level`, ...) are one entity each; a flag entity (`local-only`,
/// `trace`) may be written `true` (or `false`, which leaves it out). The entities that result
/// are the same as in the list layout, so the same checks and defaults apply.
fn v2_items<'a>(
    entries: &'a [(Node, Node)],
    file: &str,
    problems: &mut Vec<Problem>,
) -> Vec<Item<'a>> {
    let at = |line: usize| Some(format!("{file}:{line}"));
    let mut out = Vec::new();
    for (key, value) in entries {
        let NodeKind::Scalar { text: name, .. } = &key.kind else {
            problems.push(Problem {
                location: at(key.line),
                entity: None,
                message: format!(
                    "config format invalid: a key must be a string, got a {}",
                    key.type_name()
                ),
            });
            continue;
        };
        if name == "version" {
            if !matches!(&value.kind, NodeKind::Scalar { text, .. } if text == "2") {
                problems.push(Problem {
                    location: at(key.line),
                    entity: None,
                    message: "config format invalid: a mapping is the version 2 layout; version must be 2".to_owned(),
                });
            }
            continue;
        }
        if let Some((_, entity)) = V2_LISTS.iter().find(|(list, _)| list == name) {
            match &value.kind {
                NodeKind::Seq(elements) => out.extend(elements.iter().map(|element| Item {
                    name: entity,
                    name_line: element.line,
                    value: Some(element),
                })),
                NodeKind::Null => {}
                _ => problems.push(Problem {
                    location: at(key.line),
                    entity: Some((*entity).to_owned()),
                    message: format!(
                        "config format invalid: {name} must be a list, got a {}",
                        value.type_name()
                    ),
                }),
            }
            continue;
        }
        let value = match &value.kind {
            NodeKind::Scalar { text, plain: true } if text == "false" => continue,
            NodeKind::Scalar { text, plain: true } if text == "true" => None,
            _ => Some(value),
        };
        out.push(Item {
            name,
            name_line: key.line,
            value,
        });
    }
    out
}

/// Parses `text`, reporting a syntax error as a problem.
fn parse_reporting(text: &str, file: &str, problems: &mut Vec<Problem>) -> Option<Node> {
    match parse(text) {
        Ok(root) => root,
        Err(e) => {
            problems.push(Problem {
                location: Some(format!("{file}:{}", e.line)),
                entity: None,
                message: format!("yaml syntax error: {}", e.message),
            });
            None
        }
    }
}

/// Reads the entities of a configuration document. `file` names the text in locations
/// (`file:line`). Every problem found is appended to `problems`.
pub(crate) fn read_entities(text: &str, file: &str, problems: &mut Vec<Problem>) -> Vec<RawEntity> {
    let Some(root) = parse_reporting(text, file, problems) else {
        return Vec::new();
    };
    let mut entities = Vec::new();
    for item in items(&root, file, problems) {
        // Matched against the lower-case names without lower-casing the key (spec §3.2).
        let Some(spec) = schema::entity(item.name) else {
            problems.push(Problem {
                location: Some(format!("{file}:{}", item.name_line)),
                entity: None,
                message: format!("unknown config type {}", item.name),
            });
            continue;
        };
        let mut entity = RawEntity::new(
            spec,
            Source::Yaml,
            Some(format!("{file}:{}", item.name_line)),
        );
        match item.value {
            None => {}
            Some(v) => match &v.kind {
                NodeKind::Null => {}
                NodeKind::Scalar { .. } => entity.set_bare_yaml(v, file, problems),
                NodeKind::Map(params) => {
                    for (k, v) in params {
                        entity.set_yaml(k, v, file, problems);
                    }
                }
                NodeKind::Seq(_) => problems.push(entity.problem(
                    None,
                    "config format invalid: params must be a mapping, a single value or empty",
                )),
            },
        }
        entity.finish(problems);
        entities.push(entity);
    }
    entities
}

/// `(entity name, canonical text)` of every item, for `reload`'s change detection (spec §3.6):
/// key order, whitespace, comments and quoting of plain strings do not matter.
pub(crate) fn canonical_items(
    text: &str,
    file: &str,
    problems: &mut Vec<Problem>,
) -> Vec<(String, String)> {
    let Some(root) = parse_reporting(text, file, problems) else {
        return Vec::new();
    };
    items(&root, file, problems)
        .into_iter()
        .map(|item| {
            let value = item.value.map_or_else(|| "null".to_owned(), canonical);
            (
                item.name.to_owned(),
                format!("{{{}:{value}}}", json_string(item.name)),
            )
        })
        .collect()
}

fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// A node as compact JSON with mapping keys sorted; plain scalars are resolved the way a
/// string field sees them, so `port: 1` and `port: "1"` are the same item.
fn canonical(node: &Node) -> String {
    match &node.kind {
        NodeKind::Null => "null".to_owned(),
        NodeKind::Scalar { .. } => {
            json_string(&super::value::yaml_string(node).unwrap_or_default())
        }
        NodeKind::Seq(items) => {
            format!(
                "[{}]",
                items.iter().map(canonical).collect::<Vec<_>>().join(",")
            )
        }
        NodeKind::Map(entries) => {
            let mut pairs: Vec<(String, String)> = entries
                .iter()
                .map(|(k, v)| (canonical(k), canonical(v)))
                .collect();
            pairs.sort();
            let body: Vec<String> = pairs.into_iter().map(|(k, v)| format!("{k}:{v}")).collect();
            format!("{{{}}}", body.join(","))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(node: &Node) -> (&str, bool) {
        match &node.kind {
            NodeKind::Scalar { text, plain } => (text, *plain),
            other => panic!("not a scalar: {other:?}"),
        }
    }

    #[test]
    fn lines_and_styles() {
        let doc = "---\n- local-only\n- node:\n    id: 'n1'\n    port: 0600\n- log-level:\n";
        let root = parse(doc).expect("parses").expect("a document");
        let NodeKind::Seq(items) = &root.kind else {
            panic!("not a sequence")
        };
        assert_eq!(items.len(), 3);
        assert_eq!(items[0].line, 2);
        assert_eq!(scalar(&items[0]), ("local-only", true));
        assert_eq!(items[1].line, 3);
        let NodeKind::Map(entries) = &items[1].kind else {
            panic!("not a map")
        };
        let NodeKind::Map(params) = &entries[0].1.kind else {
            panic!("not a map")
        };
        assert_eq!(params[0].0.line, 4);
        assert_eq!(scalar(&params[0].1), ("n1", false));
        assert_eq!(params[1].0.line, 5);
        assert_eq!(scalar(&params[1].1), ("0600", true));
        let NodeKind::Map(entries) = &items[2].kind else {
            panic!("not a map")
        };
        assert_eq!(entries[0].1.kind, NodeKind::Null);
    }

    #[test]
    fn empty_stream_has_no_document() {
        assert_eq!(parse("").expect("parses"), None);
        assert_eq!(parse("# only a comment\n").expect("parses"), None);
    }

    #[test]
    fn syntax_error_has_line() {
        let err = parse("- a\n- b: [1, 2\n- c\n").expect_err("unterminated flow");
        assert!(err.line >= 2, "{err:?}");
    }

    #[test]
    fn alias_bomb_is_refused() {
        let mut doc = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let p = i - 1;
            doc.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let err = parse(&doc).expect_err("too large");
        assert!(err.message.contains("too large"), "{err:?}");
    }

    #[test]
    fn canonical_items_ignore_layout() {
        let mut problems = Vec::new();
        let a = canonical_items(
            "- tcp-peer: {address: 'h:1', cost: 2}\n- local-only\n- control-service:\n    service: control  # comment\n    filename: /s\n",
            "a.yaml",
            &mut problems,
        );
        let b = canonical_items(
            "---\n- tcp-peer:\n    cost: '2'\n    address: h:1\n- local-only:\n- control-service: {filename: \"/s\", service: control}\n",
            "b.yaml",
            &mut problems,
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(a, b);
        assert_eq!(a[0].0, "tcp-peer");
        assert_eq!(
            a[1],
            ("local-only".to_owned(), "{\"local-only\":null}".to_owned())
        );
        let c = canonical_items(
            "- control-service: {filename: /t}\n",
            "c.yaml",
            &mut problems,
        );
        assert_ne!(a[2], c[0]);
    }

    #[test]
    fn deep_nesting_is_refused() {
        let doc = "[".repeat(1000);
        assert!(parse(&doc).is_err());
    }
}
